//! HTTPS end to end: HTTP/1.1 and HTTP/2 (by ALPN) to HTTP/1.1 backends, the gauge of
//! open TLS connections, and plain listeners that redirect to HTTPS.

use http::{StatusCode, Version};
use rustls::ClientConfig;

use super::{public, tls_gateway};
use crate::support::client::{get_http1, get_http2};
use crate::support::pki::{provider, Pki};
use crate::support::tls::{client_config, connect};
use crate::support::{
    metric, metric_reaches, metrics_text, Backend, Client, Gateway, Listener, Tls,
};

#[tokio::test]
async fn https_request_reaches_an_http1_backend_with_forwarded_proto_https() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(Tls::certificate(&cert, &key), &backend).await;

    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[b"http/1.1"]),
    )
    .await
    .expect("the client trusts the gateway's certificate");
    let (version, status, body) = get_http1(stream, "api.example.com", "/orders/7").await;
    assert_eq!((version, status), (Version::HTTP_11, StatusCode::OK));
    let echoed: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echoed["uri"], "/orders/7");
    let seen = backend.state.last_seen();
    assert_eq!(
        seen.headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("https")
    );
    assert_eq!(
        seen.headers
            .get("x-forwarded-host")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("api.example.com")
    );
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            "portcullis_tls_handshakes_total{alpn=\"http/1.1\",listener=\"public\",version=\"1.3\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn http2_over_tls_is_negotiated_by_alpn_and_reaches_an_http1_backend() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo_version().await;
    let gw = tls_gateway(Tls::certificate(&cert, &key), &backend).await;

    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[b"h2", b"http/1.1"]),
    )
    .await
    .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, status, body) = get_http2(stream, "https", "api.example.com", "/x").await;
    assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));
    assert_eq!(body, "HTTP/1.1", "the upstream side stays HTTP/1.1");
    assert_eq!(
        backend
            .state
            .last_seen()
            .headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("https")
    );
}

#[tokio::test]
async fn the_active_gauge_counts_open_tls_connections_by_version_and_alpn() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo_version().await;
    let gw = tls_gateway(Tls::certificate(&cert, &key), &backend).await;
    let h2 = "portcullis_tls_connections_active{alpn=\"h2\",listener=\"public\",version=\"1.3\"}";
    let tls12 =
        "portcullis_tls_connections_active{alpn=\"http/1.1\",listener=\"public\",version=\"1.2\"}";

    let first = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[b"h2"]),
    )
    .await
    .expect("handshake");
    let tls12_only = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    let mut tls12_config = tls12_only;
    tls12_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let second = connect(public(&gw), "api.example.com", tls12_config)
        .await
        .expect("TLS 1.2 is accepted");
    assert_eq!(
        second.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    metric_reaches(&gw, h2, 1.0).await;
    metric_reaches(&gw, tls12, 1.0).await;

    let (version, _, _) = get_http1(second, "api.example.com", "/").await;
    assert_eq!(version, Version::HTTP_11);
    drop(first);
    metric_reaches(&gw, h2, 0.0).await;
}

#[tokio::test]
async fn a_plain_listener_can_redirect_to_https() {
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .listener(Listener::public().redirect_to_https_port(8443))
        .listener(Listener::named("standard").redirect_to_https())
        .upstream("app", &backend)
        .route("/", "app")
        .start()
        .await;
    let client = Client::new();
    let on = |listener: &str, path: &str| {
        format!(
            "http://{}{path}",
            gw.listener_addr(listener).expect("listener")
        )
    };
    let reply = client
        .send(
            http::Method::GET,
            &on("public", "/a/b?c=1"),
            &[("host", "api.example.com:8080")],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.header("location"),
        Some("https://api.example.com:8443/a/b?c=1")
    );
    let reply = client
        .send(
            http::Method::POST,
            &on("standard", "/submit"),
            &[("host", "api.example.com")],
            "x",
        )
        .await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.header("location"),
        Some("https://api.example.com/submit")
    );
    assert_eq!(backend.state.arrived(), 0);
}
