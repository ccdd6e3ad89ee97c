//! Named policies on routes: IP access lists, evaluated on the client's address, which
//! is the TCP peer unless the peer is a trusted proxy (`client_ip.trusted_proxies`).

use http::{Method, StatusCode};
use portcullis::Config;

use crate::support::{
    metric, metrics_text, url, within, Backend, Client, Gateway, Listener, Route,
};

/// A gateway with `/open` (no policy) and `/guarded` (policy `office`, whose `ip` list
/// is `ip_list`), both to `backend`.
async fn guarded(
    backend: &Backend,
    listener: Listener,
    ip_list: &str,
) -> portcullis::RunningGateway {
    Gateway::new()
        .listener(listener)
        .admin()
        .raw("policies", &format!("{{ office: {{ ip: {ip_list} }} }}"))
        .upstream("app", backend)
        .route_with(
            Route::prefix("/guarded")
                .named("guarded")
                .policies(&["office"])
                .to("app"),
        )
        .route_with(Route::prefix("/open").named("open").to("app"))
        .start()
        .await
}

async fn get(
    gw: &portcullis::RunningGateway,
    path: &str,
    forwarded_for: Option<&str>,
) -> crate::support::client::Reply {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|value| vec![("x-forwarded-for", value)])
        .unwrap_or_default();
    within(
        "the answer",
        Client::new().send(Method::GET, &url(gw, path), &headers, ""),
    )
    .await
}

#[tokio::test]
async fn a_denied_address_gets_403_and_never_reaches_the_upstream() {
    let backend = Backend::echo().await;
    let gw = guarded(&backend, Listener::public(), "{ deny: [127.0.0.0/8] }").await;

    let refused = get(&gw, "/guarded/x", None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let body = refused.json();
    assert_eq!(body["error"], "ip_denied");
    assert_eq!(body["request_id"].as_str(), refused.header("x-request-id"));
    assert_eq!(backend.state.arrived(), 0, "the upstream never saw it");

    assert_eq!(get(&gw, "/open/x", None).await.status, StatusCode::OK);
    assert_eq!(backend.state.arrived(), 1);

    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            r#"portcullis_policy_rejections_total{policy="office",reason="ip_denied",route="guarded"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn an_allow_list_shuts_out_every_other_address() {
    let backend = Backend::echo().await;
    let gw = guarded(
        &backend,
        Listener::public(),
        "{ allow: [10.0.0.0/8, \"::1\"] }",
    )
    .await;
    assert_eq!(
        get(&gw, "/guarded/x", None).await.status,
        StatusCode::FORBIDDEN
    );

    let backend = Backend::echo().await;
    let gw = guarded(&backend, Listener::public(), "{ allow: [127.0.0.1] }").await;
    assert_eq!(get(&gw, "/guarded/x", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn behind_trusted_proxies_the_client_is_the_first_untrusted_forwarded_address() {
    let backend = Backend::echo().await;
    let listener = Listener::public().trusted_proxies(&["127.0.0.0/8"]);
    let gw = guarded(&backend, listener, "{ deny: [203.0.113.0/24] }").await;

    let status = |reply: crate::support::client::Reply| reply.status;
    assert_eq!(
        status(get(&gw, "/guarded/x", Some("203.0.113.9")).await),
        StatusCode::FORBIDDEN
    );
    // The leftmost entry is the client's own writing: a denied client cannot hide
    // behind an address it puts there, nor frame another one.
    assert_eq!(
        status(get(&gw, "/guarded/x", Some("198.51.100.7, 203.0.113.9")).await),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(get(&gw, "/guarded/x", Some("203.0.113.9, 198.51.100.7")).await),
        StatusCode::OK
    );
    // Trusted hops are skipped, however many.
    assert_eq!(
        status(get(&gw, "/guarded/x", Some("203.0.113.9, 127.0.0.5, 127.0.0.6")).await),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_addresses_are_not_believed() {
    let backend = Backend::echo().await;
    let gw = guarded(&backend, Listener::public(), "{ deny: [203.0.113.0/24] }").await;
    assert_eq!(
        get(&gw, "/guarded/x", Some("203.0.113.9")).await.status,
        StatusCode::OK
    );
    let gw = guarded(&backend, Listener::public(), "{ deny: [127.0.0.1] }").await;
    assert_eq!(
        get(&gw, "/guarded/x", Some("198.51.100.7")).await.status,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn policy_problems_are_located_config_errors() {
    let text = r#"
listeners:
  - name: public
    address: 127.0.0.1:0
    client_ip: { trusted_proxies: [10.0.0.0/8, 10.0.0.1/8] }
policies:
  office:
    ip: { allow: [10.0.0.0/33], deny: [example.com] }
upstreams:
  app: { endpoints: ["http://127.0.0.1:9"] }
routes:
  - name: guarded
    match: { path_prefix: / }
    upstream: app
    policies: [ofice]
"#;
    let errors = match Config::from_yaml(text, "gateway.yaml") {
        Ok(_) => panic!("the configuration should be rejected"),
        Err(error) => error.to_string(),
    };
    for expected in [
        "gateway.yaml:5:48: listeners[0].client_ip.trusted_proxies[1]",
        "write 10.0.0.0/8",
        "policies.office.ip.allow[0]",
        "policies.office.ip.deny[0]",
        "not an IP address or a CIDR range",
        "routes[0].policies[0]",
        "unknown policy \"ofice\" (did you mean \"office\"?)",
    ] {
        assert!(
            errors.contains(expected),
            "{expected:?} missing from:\n{errors}"
        );
    }
}
