//! CORS policies over real sockets, judged the way a browser judges the answers
//! (`support::browser`): preflights answered by the gateway and never sent upstream,
//! actual requests' answers (the upstream's and the gateway's own errors) readable from
//! allowed origins only.

use http::{Method, StatusCode};
use portcullis::Config;

use crate::support::browser::{cors_check, preflight_check, Credentials};
use crate::support::client::Reply;
use crate::support::{metric, metrics_text, url, within, Backend, Client, Gateway, Route};

const APP: &str = "https://app.example.com";

/// Policy `api` (the issue's example) on `/api` (methods GET and POST only), policy
/// `api` plus an IP list on `/guarded`, and `/plain` with no policy; all to `backend`.
async fn gateway(backend: &Backend, cors: &str) -> portcullis::RunningGateway {
    Gateway::new()
        .admin()
        .raw(
            "policies",
            &format!("{{ api: {{ cors: {cors} }}, office: {{ ip: {{ deny: [127.0.0.0/8] }} }} }}"),
        )
        .upstream("app", backend)
        .route_with(
            Route::prefix("/api")
                .named("api")
                .methods(&[Method::GET, Method::POST])
                .policies(&["api"])
                .to("app"),
        )
        .route_with(
            Route::prefix("/guarded")
                .named("guarded")
                .policies(&["office", "api"])
                .to("app"),
        )
        .route_with(
            Route::prefix("/plain")
                .named("plain")
                .methods(&[Method::GET])
                .to("app"),
        )
        .start()
        .await
}

const ISSUE_CORS: &str = r#"{ origins: ["https://app.example.com", "https://*.example.com"], methods: [GET, POST], headers: [authorization, content-type], credentials: true, max_age: 10m, expose_headers: [x-request-id] }"#;

async fn send(
    gw: &portcullis::RunningGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    within(
        "the answer",
        Client::new().send(method, &url(gw, path), headers, ""),
    )
    .await
}

async fn preflight(
    gw: &portcullis::RunningGateway,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> Reply {
    let mut asked = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if !headers.is_empty() {
        asked.push(("access-control-request-headers", headers));
    }
    send(gw, Method::OPTIONS, path, &asked).await
}

fn vary(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn an_allowed_preflight_is_answered_by_the_gateway_and_the_browser_goes_on() {
    let backend = Backend::echo().await;
    let gw = gateway(&backend, ISSUE_CORS).await;

    // `/api` allows GET and POST only: the preflight (OPTIONS) is routed by the method
    // it asks for, not answered 405.
    let reply = preflight(&gw, "/api/items", APP, "POST", "content-type,authorization").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(backend.state.arrived(), 0, "nothing reached the upstream");
    let verdict = preflight_check(
        &reply,
        APP,
        Credentials::Include,
        "POST",
        &["content-type", "authorization"],
    );
    assert_eq!(verdict, Ok(()), "{:?}", reply.headers);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        reply.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    assert!(reply.header("x-request-id").is_some());
    let vary = vary(&reply);
    for field in [
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
    ] {
        assert!(vary.iter().any(|v| v == field), "{field} in {vary:?}");
    }

    // A wildcard origin, one label or more.
    let deep = "https://a.b.example.com";
    let reply = preflight(&gw, "/api/items", deep, "GET", "").await;
    assert_eq!(
        preflight_check(&reply, deep, Credentials::Include, "GET", &[]),
        Ok(())
    );
    assert_eq!(backend.state.arrived(), 0);

    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            r#"portcullis_cors_requests_total{policy="api",result="preflight",route="api"}"#
        ),
        Some(2.0),
        "{text}"
    );
    crate::cases::metrics::promtool_accepts(&text);
}

#[tokio::test]
async fn a_preflight_the_policy_does_not_allow_gets_no_cors_headers_and_the_browser_stops() {
    let backend = Backend::echo().await;
    let gw = gateway(&backend, ISSUE_CORS).await;
    for (origin, method, headers) in [
        ("https://evil.example.net", "POST", ""),
        ("https://example.com", "GET", ""),
        ("https://evilexample.com", "GET", ""),
        ("https://app.example.com.evil.com", "GET", ""),
        ("http://app.example.com", "GET", ""),
        ("https://app.example.com:8443", "GET", ""),
        ("null", "GET", ""),
        (APP, "POST", "x-secret"),
        (APP, "POST", "content-type, x-secret"),
    ] {
        let reply = preflight(&gw, "/api/items", origin, method, headers).await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{origin} {method} {headers}"
        );
        assert_eq!(reply.header("access-control-allow-origin"), None);
        assert_eq!(reply.header("access-control-allow-methods"), None);
        let asked: Vec<&str> = headers
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        assert!(
            preflight_check(&reply, origin, Credentials::Include, method, &asked).is_err(),
            "{origin} {method} {headers}: the browser must stop"
        );
        assert!(vary(&reply).iter().any(|v| v == "origin"));
    }
    assert_eq!(
        backend.state.arrived(),
        0,
        "refused preflights never go upstream"
    );
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            r#"portcullis_cors_requests_total{policy="api",result="preflight_refused",route="api"}"#
        ),
        Some(9.0),
        "{text}"
    );
    // A method no route takes gets the 405 the request itself would get.
    let reply = preflight(&gw, "/api/items", APP, "DELETE", "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(preflight_check(&reply, APP, Credentials::Include, "DELETE", &[]).is_err());
    assert!(!text.contains("evil"), "no client value becomes a label");
}

#[tokio::test]
async fn actual_requests_from_allowed_origins_are_readable_and_others_are_not() {
    let backend = Backend::echo().await;
    let gw = gateway(&backend, ISSUE_CORS).await;

    let reply = send(&gw, Method::GET, "/api/items", &[("origin", APP)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(cors_check(&reply, APP, Credentials::Include), Ok(()));
    assert_eq!(
        reply.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert!(vary(&reply).iter().any(|v| v == "origin"));
    assert_eq!(
        reply.json()["headers"]["origin"][0],
        APP,
        "the upstream sees the Origin"
    );

    let other = "https://evil.example.net";
    let reply = send(&gw, Method::POST, "/api/items", &[("origin", other)]).await;
    assert_eq!(reply.status, StatusCode::OK, "forwarded, not refused");
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert!(cors_check(&reply, other, Credentials::Omit).is_err());
    assert!(vary(&reply).iter().any(|v| v == "origin"));
    assert_eq!(backend.state.arrived(), 2);

    // Without an Origin: not a CORS request, but the answer still says it varies.
    let reply = send(&gw, Method::GET, "/api/items", &[]).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert!(vary(&reply).iter().any(|v| v == "origin"));

    let text = metrics_text(&gw).await;
    for (result, count) in [("allowed", 1.0), ("origin_refused", 1.0)] {
        let series = format!(
            r#"portcullis_cors_requests_total{{policy="api",result="{result}",route="api"}}"#
        );
        assert_eq!(metric(&text, &series), Some(count), "{series}\n{text}");
    }
}

#[tokio::test]
async fn a_gateway_refusal_is_readable_from_an_allowed_origin() {
    let backend = Backend::echo().await;
    let gw = gateway(&backend, ISSUE_CORS).await;
    let reply = send(&gw, Method::GET, "/guarded/x", &[("origin", APP)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(cors_check(&reply, APP, Credentials::Include), Ok(()));
    assert_eq!(reply.json()["error"], "ip_denied", "the page can read why");

    // The preflight comes before the IP list: it is answered, not refused.
    let reply = preflight(&gw, "/guarded/x", APP, "GET", "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight_check(&reply, APP, Credentials::Include, "GET", &[]),
        Ok(())
    );
    assert_eq!(backend.state.arrived(), 0);
}

#[tokio::test]
async fn the_upstreams_own_cors_headers_are_replaced() {
    let backend = Backend::start(|_request, _state| async {
        let mut response = crate::support::Reply::ok("hi");
        let headers = response.headers_mut();
        headers.insert("access-control-allow-origin", "*".parse().expect("value"));
        headers.insert(
            "access-control-allow-methods",
            "PUT, DELETE".parse().expect("value"),
        );
        response
    })
    .await;
    let gw = gateway(&backend, ISSUE_CORS).await;
    let other = "https://evil.example.net";
    let reply = send(&gw, Method::GET, "/api/x", &[("origin", other)]).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert!(cors_check(&reply, other, Credentials::Omit).is_err());
    let reply = send(&gw, Method::GET, "/api/x", &[("origin", APP)]).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert_eq!(reply.header("access-control-allow-methods"), None);
}

#[tokio::test]
async fn any_origin_is_answered_with_a_star_that_browsers_accept_without_credentials() {
    let backend = Backend::echo().await;
    let gw = gateway(&backend, "{ origins: [\"*\"], headers: [x-api-key] }").await;
    let origin = "https://anyone.example.org";
    let reply = preflight(&gw, "/api/x", origin, "GET", "x-api-key").await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        preflight_check(&reply, origin, Credentials::Omit, "GET", &["x-api-key"]),
        Ok(())
    );
    assert!(preflight_check(&reply, origin, Credentials::Include, "GET", &["x-api-key"]).is_err());
    let reply = send(&gw, Method::GET, "/api/x", &[("origin", "null")]).await;
    assert_eq!(cors_check(&reply, "null", Credentials::Omit), Ok(()));
}

#[tokio::test]
async fn a_route_without_cors_keeps_its_method_rules_for_preflights() {
    let backend = Backend::echo().await;
    let gw = gateway(&backend, ISSUE_CORS).await;
    let reply = preflight(&gw, "/plain/x", APP, "GET", "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    // An OPTIONS that is not a preflight (no Access-Control-Request-Method) on a CORS
    // route is routed as any other request: `/api` allows GET and POST only.
    let reply = send(&gw, Method::OPTIONS, "/api/x", &[("origin", APP)]).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(backend.state.arrived(), 0);
}

#[test]
fn cors_problems_are_located_config_errors() {
    let text = r#"
listeners:
  - name: public
    address: 127.0.0.1:0
policies:
  open:
    cors: { origins: ["*"], credentials: true }
  listed:
    cors:
      origins: ["https://app.example.com/", "app.example.com", "https://*.com", "null"]
      methods: []
      headers: ["bad header"]
      max_age: 1500ms
  second:
    cors: { origins: ["https://a.example"] }
upstreams:
  app: { endpoints: ["http://127.0.0.1:9"] }
routes:
  - name: both
    match: { path_prefix: / }
    upstream: app
    policies: [listed, second]
"#;
    let errors = match Config::from_yaml(text, "gateway.yaml") {
        Ok(_) => panic!("the configuration should be rejected"),
        Err(error) => error.to_string(),
    };
    for expected in [
        "gateway.yaml:7:22: policies.open.cors.origins",
        "never combined with `credentials: true`",
        "gateway.yaml:10:17: policies.listed.cors.origins[0]",
        "has a path",
        "policies.listed.cors.origins[1]",
        "scheme://host[:port]",
        "policies.listed.cors.origins[2]",
        "top-level domain",
        "policies.listed.cors.origins[3]",
        "sandboxed",
        "policies.listed.cors.methods",
        "policies.listed.cors.headers[0]",
        "not a valid header name",
        "policies.listed.cors.max_age",
        "whole seconds",
        "routes[0].policies[1]",
        "both set `cors`",
    ] {
        assert!(
            errors.contains(expected),
            "{expected:?} missing from:\n{errors}"
        );
    }
}

#[tokio::test]
async fn an_aggregate_route_answers_preflights_and_its_merged_answer_is_readable() {
    use crate::support::{Aggregate, Call};
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .raw(
            "policies",
            r#"{ api: { cors: { origins: ["https://app.example.com"] }, headers: { request: { set: { x-user: "{id}" } } } } }"#,
        )
        .upstream("app", &backend)
        .route_with(
            Route::path("/both/{id}")
                .named("both")
                .policies(&["api"])
                .aggregate(Aggregate::new().call("one", Call::new("app", "/one/{id}"))),
        )
        .start()
        .await;
    let reply = preflight(&gw, "/both/7", APP, "GET", "").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight_check(&reply, APP, Credentials::Omit, "GET", &[]),
        Ok(())
    );
    assert_eq!(backend.state.arrived(), 0);

    let reply = send(&gw, Method::GET, "/both/7", &[("origin", APP)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(cors_check(&reply, APP, Credentials::Omit), Ok(()));
    assert_eq!(
        reply.json()["one"]["headers"]["x-user"][0],
        "7",
        "{}",
        reply.text()
    );
}
