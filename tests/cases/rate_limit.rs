//! Rate limits of named policies (`rate_limit`), end to end over real sockets: a burst
//! is admitted exactly, then `429 rate_limited` with `Retry-After` and the
//! `RateLimit-Policy` / `RateLimit` fields; shadow limits; keys by header, query
//! parameter and route; several limits; per-core workers sharing one store; a reload
//! that keeps the buckets; `check` errors.
//!
//! Periods are long (`/h`) so that nothing refills while a test runs: the tests count,
//! they do not time.

use http::{Method, StatusCode};
use portcullis::{Config, RunningGateway};

use crate::support::client::Reply;
use crate::support::redis::RedisServer;
use crate::support::{
    metric, metrics_text, replace_file, url, within, Backend, Client, Gateway, Route, WorkerModel,
};

/// A gateway with policy `limited` (`policies` is its YAML), route `limited` on `/x`
/// listing it, and the admin listener.
fn limited(backend: &Backend, policies: &str) -> Gateway {
    Gateway::new()
        .admin()
        .raw("policies", policies)
        .upstream("app", backend)
        .route_with(
            Route::prefix("/x")
                .named("limited")
                .policies(&["limited"])
                .to("app"),
        )
}

async fn get(gw: &RunningGateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::new();
    within(
        "the answer",
        client.send(Method::GET, &url(gw, path), headers, ""),
    )
    .await
}

/// The statuses of `n` requests to `path`.
async fn statuses(gw: &RunningGateway, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(get(gw, path, headers).await.status.as_u16());
    }
    statuses
}

fn decisions(text: &str, route: &str, limit: &str, decision: &str) -> f64 {
    metric(
        text,
        &format!(
            "portcullis_rate_limit_decisions_total{{decision=\"{decision}\",limit=\"{limit}\",policy=\"limited\",route=\"{route}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

/// `r=` of the item called `name` in a `RateLimit` field.
fn remaining(field: &str, name: &str) -> u64 {
    let item = field
        .split(", ")
        .find(|item| item.starts_with(&format!("\"{name}\";")))
        .unwrap_or_else(|| panic!("no item {name:?} in {field:?}"));
    let r = item
        .split(';')
        .find_map(|p| p.strip_prefix("r="))
        .unwrap_or_else(|| panic!("no r in {item:?}"));
    r.parse().expect("a number")
}

#[tokio::test]
async fn a_burst_is_admitted_exactly_then_429_with_retry_after_and_ratelimit_fields() {
    let backend = Backend::echo().await;
    let gw = limited(
        &backend,
        "{ limited: { rate_limit: [ { key: client_ip, rate: 60/h, burst: 3 } ] } }",
    )
    .start()
    .await;

    for left in [2, 1, 0] {
        let reply = get(&gw, "/x/a", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some(r#""limited";q=60;w=3600"#)
        );
        let field = reply
            .header("ratelimit")
            .expect("RateLimit on allowed answers");
        assert_eq!(remaining(field, "limited"), left, "{field}");
    }
    for _ in 0..2 {
        let refused = get(&gw, "/x/a", &[]).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        let body = refused.json();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["request_id"].as_str(), refused.header("x-request-id"));
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        // TAT 180 s ahead, tolerance 120 s: the next request fits in 60 s, less the
        // little time the test has taken, rounded up.
        let retry_after: u64 = refused
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        assert!(
            (50..=60).contains(&retry_after),
            "Retry-After {retry_after}"
        );
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some(r#""limited";q=60;w=3600"#)
        );
        let field = refused.header("ratelimit").expect("RateLimit on refusals");
        assert_eq!(remaining(field, "limited"), 0);
    }
    assert_eq!(
        backend.state.arrived(),
        3,
        "the upstream saw exactly the burst"
    );

    let text = metrics_text(&gw).await;
    assert_eq!(decisions(&text, "limited", "0", "allowed"), 3.0, "{text}");
    assert_eq!(decisions(&text, "limited", "0", "limited"), 2.0, "{text}");
    assert_eq!(
        metric(
            &text,
            r#"portcullis_policy_rejections_total{policy="limited",reason="rate_limited",route="limited"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"portcullis_rate_limit_keys{limit="0",policy="limited"}"#
        ),
        Some(1.0),
        "{text}"
    );
    crate::cases::metrics::promtool_accepts(&text);
}

#[tokio::test]
async fn the_gateway_s_items_join_those_the_upstream_sends() {
    let backend = Backend::start(|_, _| async move {
        let mut reply = crate::support::Reply::ok("own limits");
        let headers = reply.headers_mut();
        headers.insert(
            "ratelimit-policy",
            "\"app\";q=5;w=1".parse().expect("a value"),
        );
        headers.insert("ratelimit", "\"app\";r=4;t=1".parse().expect("a value"));
        reply
    })
    .await;
    let gw = limited(
        &backend,
        "{ limited: { rate_limit: [ { key: client_ip, rate: 60/h, burst: 3 } ] } }",
    )
    .start()
    .await;
    let reply = get(&gw, "/x", &[]).await;
    let all = |name: &str| -> Vec<String> {
        let values = reply.headers.get_all(name).iter();
        values
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    };
    assert_eq!(
        all("ratelimit-policy"),
        [r#""app";q=5;w=1"#, r#""limited";q=60;w=3600"#]
    );
    let items = all("ratelimit");
    assert_eq!(items[0], r#""app";r=4;t=1"#);
    assert_eq!(remaining(&items[1], "limited"), 2);
}

#[tokio::test]
async fn a_shadow_limit_counts_but_never_refuses() {
    let backend = Backend::echo().await;
    let gw = limited(
        &backend,
        "{ limited: { rate_limit: [ { key: client_ip, rate: 60/h, burst: 2, shadow: true } ] } }",
    )
    .start()
    .await;
    assert_eq!(statuses(&gw, "/x", &[], 5).await, [200; 5]);
    assert_eq!(backend.state.arrived(), 5);
    let reply = get(&gw, "/x", &[]).await;
    assert_eq!(
        reply.header("ratelimit"),
        None,
        "a shadow limit is not advertised"
    );
    let text = metrics_text(&gw).await;
    assert_eq!(decisions(&text, "limited", "0", "allowed"), 2.0, "{text}");
    assert_eq!(
        decisions(&text, "limited", "0", "shadow_limited"),
        4.0,
        "{text}"
    );
    assert_eq!(decisions(&text, "limited", "0", "limited"), 0.0, "{text}");
}

#[tokio::test]
async fn a_limit_not_advertised_refuses_with_retry_after_but_no_ratelimit_fields() {
    let backend = Backend::echo().await;
    let gw = limited(
        &backend,
        "{ limited: { rate_limit: [ { key: client_ip, rate: 60/h, burst: 2, advertise: false } ] } }",
    )
    .start()
    .await;
    for _ in 0..2 {
        let reply = get(&gw, "/x", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("ratelimit"), None);
        assert_eq!(reply.header("ratelimit-policy"), None);
    }
    let refused = get(&gw, "/x", &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert_eq!(refused.header("ratelimit"), None);
    assert_eq!(refused.header("ratelimit-policy"), None);
    assert_eq!(backend.state.arrived(), 2);
}

#[tokio::test]
async fn keys_by_header_have_independent_buckets_and_keyless_requests_share_one() {
    let backend = Backend::echo().await;
    let gw = limited(
        &backend,
        "{ limited: { rate_limit: [ { key: header.x-api-key, rate: 60/h, burst: 2 } ] } }",
    )
    .start()
    .await;
    let alpha = [("x-api-key", "alpha")];
    let beta = [("x-api-key", "beta")];
    assert_eq!(statuses(&gw, "/x", &alpha, 3).await, [200, 200, 429]);
    assert_eq!(statuses(&gw, "/x", &beta, 3).await, [200, 200, 429]);
    // Without the header: one bucket for every such request.
    assert_eq!(statuses(&gw, "/x", &[], 3).await, [200, 200, 429]);
    assert_eq!(backend.state.arrived(), 6);
}

#[tokio::test]
async fn query_parameters_key_by_their_decoded_value() {
    let backend = Backend::echo().await;
    let gw = limited(
        &backend,
        "{ limited: { rate_limit: [ { key: query.api_key, rate: 60/h, burst: 2 } ] } }",
    )
    .start()
    .await;
    assert_eq!(get(&gw, "/x?api_key=abc", &[]).await.status, StatusCode::OK);
    // The same key spelled otherwise is the same bucket, not a fresh one.
    assert_eq!(
        get(&gw, "/x?api_key=%61bc", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/x?other=1&api_key=%61%62%63", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(get(&gw, "/x?api_key=abd", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn path_parameters_key_by_their_decoded_value() {
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .raw(
            "policies",
            "{ per-user: { rate_limit: [ { key: param.id, rate: 60/h, burst: 1 } ] } }",
        )
        .upstream("app", &backend)
        .route_with(
            Route::path("/users/{id}")
                .named("users")
                .policies(&["per-user"])
                .to("app"),
        )
        .start()
        .await;
    assert_eq!(statuses(&gw, "/users/ada", &[], 2).await, [200, 429]);
    assert_eq!(
        statuses(&gw, "/users/%61da", &[], 1).await,
        [429],
        "the same user"
    );
    assert_eq!(statuses(&gw, "/users/bob", &[], 2).await, [200, 429]);
}

/// Routes `/a` and `/b` both listing policy `limited`, whose one limit is keyed by `key`.
async fn two_routes(backend: &Backend, key: &str) -> RunningGateway {
    Gateway::new()
        .raw(
            "policies",
            &format!("{{ limited: {{ rate_limit: [ {{ key: {key}, rate: 60/h, burst: 2 }} ] }} }}"),
        )
        .upstream("app", backend)
        .route_with(
            Route::prefix("/a")
                .named("a")
                .policies(&["limited"])
                .to("app"),
        )
        .route_with(
            Route::prefix("/b")
                .named("b")
                .policies(&["limited"])
                .to("app"),
        )
        .start()
        .await
}

#[tokio::test]
async fn routes_sharing_a_policy_share_buckets_unless_the_key_has_route() {
    let backend = Backend::echo().await;
    let shared = two_routes(&backend, "client_ip").await;
    assert_eq!(statuses(&shared, "/a", &[], 2).await, [200, 200]);
    assert_eq!(statuses(&shared, "/b", &[], 1).await, [429], "one bucket");

    let per_route = two_routes(&backend, "[route, client_ip]").await;
    assert_eq!(statuses(&per_route, "/a", &[], 3).await, [200, 200, 429]);
    assert_eq!(statuses(&per_route, "/b", &[], 3).await, [200, 200, 429]);
}

#[tokio::test]
async fn of_several_limits_the_most_restrictive_wins() {
    let backend = Backend::echo().await;
    let gw = limited(
        &backend,
        "{ limited: { rate_limit: [
            { name: wide, key: client_ip, rate: 600/h, burst: 5 },
            { name: narrow, key: [route, client_ip], rate: 60/h, burst: 2 } ] } }",
    )
    .start()
    .await;
    let first = get(&gw, "/x", &[]).await;
    assert_eq!(
        first.header("ratelimit-policy"),
        Some(r#""wide";q=600;w=3600, "narrow";q=60;w=3600"#)
    );
    let field = first.header("ratelimit").expect("RateLimit");
    assert_eq!(
        (remaining(field, "wide"), remaining(field, "narrow")),
        (4, 1)
    );
    assert_eq!(statuses(&gw, "/x", &[], 2).await, [200, 429]);
    assert_eq!(backend.state.arrived(), 2);
    let text = metrics_text(&gw).await;
    assert_eq!(
        decisions(&text, "limited", "narrow", "limited"),
        1.0,
        "{text}"
    );
    // Every limit is decided: the wide one counted the refused request too.
    assert_eq!(
        decisions(&text, "limited", "wide", "allowed"),
        3.0,
        "{text}"
    );
}

#[tokio::test]
async fn per_core_workers_share_one_store_and_admit_exactly_the_burst() {
    const REQUESTS: usize = 24;
    const BURST: usize = 5;
    let backend = Backend::echo().await;
    let gw = limited(
        &backend,
        "{ limited: { rate_limit: [ { key: client_ip, rate: 60/h, burst: 5 } ] } }",
    )
    .workers(2)
    .worker_model(WorkerModel::PerCore)
    .start()
    .await;
    // A connection per request, so that both workers take some.
    let statuses = statuses(&gw, "/x", &[("connection", "close")], REQUESTS).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), BURST);
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        REQUESTS - BURST
    );
    assert_eq!(backend.state.arrived(), BURST);
    let text = metrics_text(&gw).await;
    let accepted = |worker: usize| {
        metric(
            &text,
            &format!("portcullis_worker_connections_total{{worker=\"{worker}\"}}"),
        )
        .unwrap_or(0.0)
    };
    // The kernel spreads connections by a hash of their addresses: all 24 (plus the
    // metrics request) on one worker would happen about once in 2^24 runs.
    assert!(accepted(0) > 0.0 && accepted(1) > 0.0, "{text}");
}

#[tokio::test]
async fn a_reload_that_keeps_the_limit_keeps_the_buckets() {
    let backend = Backend::echo().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    let policy = |rate: &str| {
        format!("{{ limited: {{ rate_limit: [ {{ key: client_ip, rate: {rate}, burst: 2 }} ] }} }}")
    };
    let config = |rate: &str| limited(&backend, &policy(rate)).watch_config(false);
    let gw = config("60/h").start_reloadable(&path).await;
    assert_eq!(statuses(&gw, "/x", &[], 3).await, [200, 200, 429]);

    let client = Client::new();
    let admin = format!("http://{}/reload", gw.admin_addr().expect("admin"));
    let reload = async |yaml: String| {
        replace_file(&path, &yaml);
        let reply = client.send(Method::POST, &admin, &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    };
    // Another route added, the limit unchanged: still exhausted.
    reload(
        config("60/h")
            .route_with(Route::prefix("/other").named("other").to("app"))
            .yaml(),
    )
    .await;
    assert_eq!(get(&gw, "/other", &[]).await.status, StatusCode::OK);
    assert_eq!(
        statuses(&gw, "/x", &[], 1).await,
        [429],
        "the bucket was kept"
    );

    // A new rate is a new limit, with fresh buckets.
    reload(config("120/h").yaml()).await;
    assert_eq!(statuses(&gw, "/x", &[], 3).await, [200, 200, 429]);
}

/// Two gateways with route `/x` limited by `limit` (YAML of one entry) on the shared
/// store `shared` of `redis` (its `on_error` as given).
async fn sharing(
    backend: &Backend,
    redis: &RedisServer,
    limit: &str,
    on_error: &str,
) -> RunningGateway {
    Gateway::new()
        .admin()
        .raw(
            "rate_limit_stores",
            &format!(
                "{{ shared: {{ redis: {{ url: \"{}\", timeout: 500ms }}, on_error: {on_error} }} }}",
                redis.url()
            ),
        )
        .raw("policies", &format!("{{ limited: {{ rate_limit: [ {limit} ] }} }}"))
        .upstream("app", backend)
        .route_with(
            Route::prefix("/x")
                .named("limited")
                .policies(&["limited"])
                .to("app"),
        )
        .start()
        .await
}

#[tokio::test]
async fn gateways_on_one_shared_store_share_one_burst() {
    let redis = RedisServer::start();
    let backend = Backend::echo().await;
    let limit = "{ key: client_ip, rate: 60/h, burst: 3, store: shared }";
    let first = sharing(&backend, &redis, limit, "allow").await;
    let second = sharing(&backend, &redis, limit, "allow").await;
    let mut statuses_seen = statuses(&first, "/x", &[], 2).await;
    statuses_seen.extend(statuses(&second, "/x", &[], 2).await);
    statuses_seen.extend(statuses(&first, "/x", &[], 1).await);
    assert_eq!(statuses_seen, [200, 200, 200, 429, 429]);
    assert_eq!(backend.state.arrived(), 3);
    let refused = get(&second, "/x", &[]).await;
    assert_eq!(refused.json()["error"], "rate_limited");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        remaining(refused.header("ratelimit").expect("RateLimit"), "limited"),
        0
    );
    // One key in Redis, named by the policy and the limit (`*1`: one match).
    let keys = redis.command("KEYS portcullis:rl:limited:0:*");
    assert!(keys.starts_with("*1"), "{keys:?}");
}

#[tokio::test]
async fn a_failing_shared_store_follows_on_error() {
    let mut redis = RedisServer::start();
    let backend = Backend::echo().await;
    let limit = "{ key: client_ip, rate: 60/h, burst: 1, store: shared }";
    let open = sharing(&backend, &redis, limit, "allow").await;
    let closed = sharing(&backend, &redis, limit, "deny").await;
    redis.stop();
    assert_eq!(statuses(&open, "/x", &[], 3).await, [200; 3], "fail open");
    let refused = get(&closed, "/x", &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "fail closed"
    );
    let body = refused.json();
    assert_eq!(body["error"], "rate_limit_store_unavailable");
    assert!(
        !body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "the store's address stays in the log: {body}"
    );
    let text = metrics_text(&open).await;
    assert!(
        decisions(&text, "limited", "0", "store_error") >= 3.0,
        "{text}"
    );
}

#[test]
fn a_store_name_must_be_a_rate_limit_stores_entry() {
    let text = |store: &str, extra: &str| {
        format!(
            r#"
listeners: [ {{ name: public, address: "127.0.0.1:0" }} ]
rate_limit_stores:
  shared: {{ redis: {{ url: "redis://127.0.0.1:6379" }} }}
policies:
  api: {{ rate_limit: [ {{ key: client_ip, rate: 10/s, store: {store}{extra} }} ] }}
upstreams:
  app: {{ endpoints: ["http://127.0.0.1:9"] }}
routes:
  - {{ name: r, match: {{ path_prefix: / }}, upstream: app, policies: [api] }}
"#
        )
    };
    assert!(Config::from_yaml(&text("shared", ""), "g.yaml").is_ok());
    assert!(Config::from_yaml(&text("local", ""), "g.yaml").is_ok());
    let errors = |text: String| match Config::from_yaml(&text, "g.yaml") {
        Ok(_) => panic!("the configuration should be rejected"),
        Err(error) => error.to_string(),
    };
    let typo = errors(text("sahred", ""));
    assert!(typo.contains("g.yaml:6:"), "{typo}");
    assert!(typo.contains("did you mean \"shared\""), "{typo}");
    let max_keys = errors(text("shared", ", max_keys: 10"));
    assert!(max_keys.contains("max_keys"), "{max_keys}");
}

#[test]
fn a_path_parameter_the_route_does_not_bind_is_warned_about() {
    let text = r#"
listeners: [ { name: public, address: "127.0.0.1:0" } ]
policies:
  per-user: { rate_limit: [ { key: param.id, rate: 10/s } ] }
upstreams:
  app: { endpoints: ["http://127.0.0.1:9"] }
routes:
  - { name: users, match: { path: "/users/{id}" }, upstream: app, policies: [per-user] }
  - { name: all, match: { path_prefix: / }, upstream: app, policies: [per-user] }
"#;
    let config = Config::from_yaml(text, "gateway.yaml").expect("valid, with a warning");
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let warning = config.warnings[0].to_string();
    assert!(warning.contains("routes[1].policies[0]"), "{warning}");
    assert!(warning.contains("share one bucket"), "{warning}");
}

#[test]
fn rate_limit_problems_are_located_config_errors() {
    let text = r#"
listeners:
  - name: public
    address: 127.0.0.1:0
policies:
  api:
    rate_limit:
      - { key: client_ip, rate: 100/fortnight }
      - { key: client-ip, rate: 0/s, burst: 0 }
      - { key: [], rate: 10/s }
      - { key: [route, header.x-api-key], rate: 1000/min, store: shared }
upstreams:
  app: { endpoints: ["http://127.0.0.1:9"] }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: app
    policies: [api]
"#;
    let errors = match Config::from_yaml(text, "gateway.yaml") {
        Ok(_) => panic!("the configuration should be rejected"),
        Err(error) => error.to_string(),
    };
    for expected in [
        "gateway.yaml:8:33: policies.api.rate_limit[0].rate",
        "unknown rate unit \"fortnight\"",
        "policies.api.rate_limit[1].key",
        "did you mean \"client_ip\"",
        "policies.api.rate_limit[1].rate",
        "at least 1",
        "policies.api.rate_limit[1].burst",
        "policies.api.rate_limit[2].key",
        "list at least one key part",
        "policies.api.rate_limit[3].store",
        "unknown rate-limit store \"shared\"",
    ] {
        assert!(
            errors.contains(expected),
            "{expected:?} missing from:\n{errors}"
        );
    }
}
