//! Header transforms over real sockets: what the upstream sees (fields set, added and
//! removed, placeholders filled) and what the client gets, from the upstream or from
//! the gateway itself.

use http::{Method, StatusCode};
use portcullis::Config;

use crate::support::client::Reply;
use crate::support::{closed_port, url, within, Backend, Client, Gateway, Route, Upstream};

const TRANSFORMS: &str = r#"{
  edge: {
    headers: {
      request: {
        set: { x-client-ip: "{client_ip}", x-trace: "{route}:{id}:{request_id}", x-version: 2 },
        add: { x-tag: gateway },
        remove: [x-internal, x-forwarded-host]
      },
      response: { set: { x-served-by: "{route}" }, add: { cache-control: no-store }, remove: [server] }
    }
  },
  answers: {
    headers: {
      response: { set: { x-served-by: "{route}" }, add: { cache-control: no-store }, remove: [server] }
    }
  },
  office: { ip: { deny: [127.0.0.0/8] } }
}"#;

async fn send(gw: &portcullis::RunningGateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    within(
        "the answer",
        Client::new().send(Method::GET, &url(gw, path), headers, ""),
    )
    .await
}

#[tokio::test]
async fn the_upstream_sees_the_request_transformed_with_placeholders_filled() {
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .raw("policies", TRANSFORMS)
        .upstream("app", &backend)
        .route_with(
            Route::path("/users/{id}")
                .named("users")
                .policies(&["edge"])
                .to("app"),
        )
        .start()
        .await;
    let reply = send(
        &gw,
        "/users/42",
        &[
            ("x-internal", "secret"),
            ("x-client-ip", "10.9.9.9"),
            ("x-tag", "client"),
            ("x-request-id", "req-7"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &reply.json()["headers"];
    assert_eq!(
        seen["x-client-ip"][0], "127.0.0.1",
        "set replaces the client's"
    );
    assert_eq!(seen["x-trace"][0], "users:42:req-7");
    assert_eq!(seen["x-version"][0], "2");
    assert_eq!(seen["x-tag"], serde_json::json!(["client", "gateway"]));
    assert!(seen.get("x-internal").is_none(), "{seen}");
    assert!(
        seen.get("x-forwarded-host").is_none(),
        "transforms run after the forwarding headers: {seen}"
    );
    assert!(seen.get("x-forwarded-for").is_some());
}

#[tokio::test]
async fn every_answer_of_the_route_gets_the_answer_edits() {
    let backend = Backend::start(|_request, _state| async {
        let mut response = crate::support::Reply::ok("hi");
        let headers = response.headers_mut();
        headers.insert("server", "upstream/1.0".parse().expect("value"));
        headers.insert("x-served-by", "the upstream".parse().expect("value"));
        response
    })
    .await;
    let gw = Gateway::new()
        .raw("policies", TRANSFORMS)
        .upstream("app", &backend)
        .upstream("gone", Upstream::new(closed_port()))
        .route_with(
            Route::prefix("/app")
                .named("app")
                .policies(&["answers"])
                .to("app"),
        )
        .route_with(
            Route::prefix("/guarded")
                .named("guarded")
                .policies(&["office", "answers"])
                .to("app"),
        )
        .route_with(
            Route::prefix("/gone")
                .named("gone")
                .policies(&["answers"])
                .to("gone"),
        )
        .start()
        .await;

    let reply = send(&gw, "/app/x", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("server"),
        None,
        "the upstream's server is removed"
    );
    assert_eq!(reply.header("x-served-by"), Some("app"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    // A policy's refusal and an upstream that cannot be reached: the gateway's own
    // answers get the same edits.
    let reply = send(&gw, "/guarded/x", &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("x-served-by"), Some("guarded"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let reply = send(&gw, "/gone/x", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("x-served-by"), Some("gone"));
    assert_eq!(backend.state.arrived(), 1);
}

#[test]
fn transform_problems_are_located_config_errors() {
    let text = r#"
listeners:
  - name: public
    address: 127.0.0.1:0
policies:
  edge:
    headers:
      request:
        set: { x-user: "{idd}", content-length: "0", x-bad: "{client_ip" }
        remove: [transfer-encoding, "bad name", x-user]
      response:
        set: { x-ip: "{client_ip}" }
        add: { connection: close }
upstreams:
  app: { endpoints: ["http://127.0.0.1:9"] }
routes:
  - name: users
    match: { path: "/users/{id}" }
    upstream: app
    policies: [edge]
"#;
    let errors = match Config::from_yaml(text, "gateway.yaml") {
        Ok(_) => panic!("the configuration should be rejected"),
        Err(error) => error.to_string(),
    };
    for expected in [
        "gateway.yaml:9:24: policies.edge.headers.request.set.x-user",
        "unknown placeholder \"idd\" (did you mean \"id\"?) (on route \"users\"",
        "policies.edge.headers.request.set.content-length",
        "cannot be changed by a transform",
        "policies.edge.headers.request.set.x-bad",
        "unclosed `{`",
        "policies.edge.headers.request.remove[0]",
        "policies.edge.headers.request.remove[1]",
        "not a valid header name",
        "`x-user` is also under `remove`",
        "policies.edge.headers.response.set.x-ip",
        "only `{route}`",
        "policies.edge.headers.response.add.connection",
    ] {
        assert!(
            errors.contains(expected),
            "{expected:?} missing from:\n{errors}"
        );
    }
}
