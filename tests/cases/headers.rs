//! Header rules: hop-by-hop removal both ways, X-Forwarded-*, request ids, Host.

use http::StatusCode;

use crate::support::client::raw_exchange;
use crate::support::{url, Backend, Client, Gateway, HostHeader, Reply, Route, Upstream};

async fn echo_gateway(backend: &Backend, host_header: HostHeader) -> portcullis::RunningGateway {
    Gateway::new()
        .upstream("echo", Upstream::new(backend).host_header(host_header))
        .route_with(Route::prefix("/").named("all").to("echo"))
        .start()
        .await
}

#[tokio::test]
async fn hop_by_hop_and_connection_nominated_headers_are_removed_both_ways() {
    let backend = Backend::start(|_, _| async move {
        let mut response = Reply::ok("ok");
        let headers = response.headers_mut();
        headers.insert("connection", "x-upstream-private".parse().expect("valid"));
        headers.insert("x-upstream-private", "secret".parse().expect("valid"));
        headers.insert("keep-alive", "timeout=5".parse().expect("valid"));
        headers.insert("proxy-authenticate", "Basic".parse().expect("valid"));
        headers.insert("x-upstream-public", "fine".parse().expect("valid"));
        response
    })
    .await;
    let gw = echo_gateway(&backend, HostHeader::Client).await;
    let raw = raw_exchange(
        gw.listener_addr("public").expect("listener"),
        b"GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Client-Private\r\n\
          X-Client-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\
          Proxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nUpgrade: h2c\r\nX-Client-Public: fine\r\n\r\n",
        "ok",
    )
    .await;
    let seen = backend.state.last_seen();
    for name in [
        "x-client-private",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-client-public"], "fine");
    assert_eq!(
        seen.headers["te"], "trailers",
        "TE is reduced to `trailers`"
    );

    let response = raw.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{raw}");
    for name in ["x-upstream-private", "keep-alive", "proxy-authenticate"] {
        assert!(
            !response.contains(&format!("\r\n{name}:")),
            "{name} reached the client: {raw}"
        );
    }
    assert!(response.contains("\r\nx-upstream-public: fine"), "{raw}");
}

#[tokio::test]
async fn forwarded_headers_and_host_are_set() {
    let backend = Backend::echo().await;
    let gw = echo_gateway(&backend, HostHeader::Client).await;
    let client = Client::new();
    let reply = client
        .send(
            http::Method::GET,
            &url(&gw, "/x"),
            &[
                ("host", "shop.example.com"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = backend.state.last_seen();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example.com");
    assert_eq!(
        seen.headers["host"], "shop.example.com",
        "the client's Host passes by default"
    );

    let endpoint_host = Backend::echo().await;
    let gw = echo_gateway(&endpoint_host, HostHeader::Endpoint).await;
    client
        .send(
            http::Method::GET,
            &url(&gw, "/x"),
            &[("host", "shop.example.com")],
            "",
        )
        .await;
    let seen = endpoint_host.state.last_seen();
    assert_eq!(
        seen.headers["host"],
        endpoint_host.addr.to_string().as_str()
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn request_ids_are_generated_or_passed_on_both_ways() {
    let backend = Backend::echo().await;
    let gw = echo_gateway(&backend, HostHeader::Client).await;
    let client = Client::new();

    let generated = client.get(&url(&gw, "/a")).await;
    let id = generated
        .header("x-request-id")
        .expect("response carries an id")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(
        backend.state.last_seen().headers["x-request-id"],
        id.as_str()
    );

    let other = client.get(&url(&gw, "/a")).await;
    assert_ne!(
        other.header("x-request-id"),
        Some(id.as_str()),
        "ids are unique"
    );

    let passed = client
        .send(
            http::Method::GET,
            &url(&gw, "/a"),
            &[("x-request-id", "client-chosen-42")],
            "",
        )
        .await;
    assert_eq!(passed.header("x-request-id"), Some("client-chosen-42"));
    assert_eq!(
        backend.state.last_seen().headers["x-request-id"],
        "client-chosen-42"
    );
}
