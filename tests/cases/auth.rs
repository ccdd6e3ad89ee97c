//! Auth policies with API keys, end to end over real sockets: missing, wrong and right
//! keys (401 with `WWW-Authenticate`, the JSON body with the request id, nothing said of
//! which check failed), 403 for a consumer the policy does not admit, credentials
//! removed before the request goes upstream (asserted at the backend) unless kept, a
//! rate limit keyed by the consumer, `{consumer}` in a header transform, the decision
//! metrics, and `check` errors.

use http::{Method, StatusCode};
use portcullis::config::auth::sha256;
use portcullis::RunningGateway;

use crate::support::client::Reply;
use crate::support::{metric, metrics_text, url, within, Backend, Client, Gateway, Route};

pub const MOBILE_KEY: &str = "mobile-secret-key-1";
pub const PARTNER_KEY: &str = "partner-secret-key-2";

fn hex(digest: [u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Consumers `mobile-app` and `partner-x`, each with one API key.
pub fn consumers() -> String {
    format!(
        "{{ mobile-app: {{ api_keys: [{{ sha256: \"sha256:{}\" }}] }}, partner-x: {{ api_keys: [{{ sha256: \"{}\" }}] }} }}",
        hex(sha256(MOBILE_KEY.as_bytes())),
        hex(sha256(PARTNER_KEY.as_bytes())),
    )
}

/// A gateway with the consumers, policy `keys` (`policy` is its YAML) on route `keyed`
/// (`/x`), and the admin listener.
fn keyed(backend: &Backend, policy: &str) -> Gateway {
    Gateway::new()
        .admin()
        .raw("consumers", &consumers())
        .raw("policies", &format!("{{ keys: {policy} }}"))
        .upstream("app", backend)
        .route_with(
            Route::prefix("/x")
                .named("keyed")
                .policies(&["keys"])
                .to("app"),
        )
}

async fn get(gw: &RunningGateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    within(
        "the answer",
        Client::new().send(Method::GET, &url(gw, path), headers, ""),
    )
    .await
}

fn decisions(text: &str, result: &str) -> f64 {
    metric(
        text,
        &format!(
            "portcullis_auth_decisions_total{{method=\"api_key\",policy=\"keys\",result=\"{result}\",route=\"keyed\"}}"
        ),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn missing_and_wrong_keys_get_401_and_the_right_key_is_forwarded_without_it() {
    let backend = Backend::echo().await;
    let gw = keyed(
        &backend,
        "{ auth: { api_key: { from: header.x-api-key } } }",
    )
    .start()
    .await;

    let missing = get(&gw, "/x/a", &[]).await;
    let wrong = get(&gw, "/x/a", &[("x-api-key", "not-a-key")]).await;
    for refused in [&missing, &wrong] {
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.header("www-authenticate"),
            Some("ApiKey realm=\"keys\"")
        );
        let body = refused.json();
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["request_id"].as_str(), refused.header("x-request-id"));
    }
    assert_eq!(
        missing.json()["message"],
        wrong.json()["message"],
        "a client is not told whether its key was missing or wrong"
    );
    assert_eq!(
        backend.state.arrived(),
        0,
        "refused requests never reach upstream"
    );

    let admitted = get(
        &gw,
        "/x/a",
        &[("x-api-key", MOBILE_KEY), ("x-other", "kept")],
    )
    .await;
    assert_eq!(admitted.status, StatusCode::OK);
    let seen = backend.state.last_seen();
    assert!(
        !seen.headers.contains_key("x-api-key"),
        "the key is removed"
    );
    assert_eq!(seen.headers["x-other"], "kept");

    let text = metrics_text(&gw).await;
    assert_eq!(decisions(&text, "missing"), 1.0, "{text}");
    assert_eq!(decisions(&text, "invalid"), 1.0);
    assert_eq!(decisions(&text, "allowed"), 1.0);
    crate::cases::metrics::promtool_accepts(&text);
}

#[tokio::test]
async fn keys_in_the_query_or_a_cookie_are_cut_out_and_keep_credentials_keeps_them() {
    let backend = Backend::echo().await;
    let gw = keyed(
        &backend,
        "{ auth: { api_key: { from: [query.api_key, cookie.key] } } }",
    )
    .start()
    .await;
    let by_query = get(&gw, &format!("/x/a?b=1&api_key={PARTNER_KEY}&c=2"), &[]).await;
    assert_eq!(by_query.status, StatusCode::OK);
    assert_eq!(backend.state.last_seen().uri, "/x/a?b=1&c=2");
    let cookie = format!("theme=dark; key={MOBILE_KEY}");
    let by_cookie = get(&gw, "/x/b", &[("cookie", &cookie)]).await;
    assert_eq!(by_cookie.status, StatusCode::OK);
    let seen = backend.state.last_seen();
    assert_eq!(seen.headers["cookie"], "theme=dark");

    let kept = Backend::echo().await;
    let gw = keyed(
        &kept,
        "{ auth: { api_key: { from: header.x-api-key, keep_credentials: true } } }",
    )
    .start()
    .await;
    assert_eq!(
        get(&gw, "/x/a", &[("x-api-key", MOBILE_KEY)]).await.status,
        StatusCode::OK
    );
    assert_eq!(kept.state.last_seen().headers["x-api-key"], MOBILE_KEY);
}

#[tokio::test]
async fn a_consumer_the_policy_does_not_admit_gets_403() {
    let backend = Backend::echo().await;
    let gw = keyed(
        &backend,
        "{ auth: { api_key: { consumers: [partner-x] } } }",
    )
    .start()
    .await;
    let refused = get(&gw, "/x/a", &[("x-api-key", MOBILE_KEY)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["error"], "forbidden");
    assert_eq!(refused.header("www-authenticate"), None);
    let admitted = get(&gw, "/x/a", &[("x-api-key", PARTNER_KEY)]).await;
    assert_eq!(admitted.status, StatusCode::OK);
    assert_eq!(decisions(&metrics_text(&gw).await, "forbidden"), 1.0);
}

#[tokio::test]
async fn a_rate_limit_keyed_by_consumer_and_the_consumer_placeholder() {
    let backend = Backend::echo().await;
    let gw = keyed(
        &backend,
        "{ auth: { api_key: {} }, rate_limit: [ { key: consumer, rate: 60/h, burst: 2 } ], \
           headers: { request: { set: { x-consumer: \"{consumer}\" } } } }",
    )
    .start()
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            get(&gw, "/x/a", &[("x-api-key", MOBILE_KEY)])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429], "mobile-app has its own bucket");
    assert_eq!(
        backend.state.last_seen().headers["x-consumer"],
        "mobile-app"
    );
    // Another consumer from the same address has a bucket of its own.
    let partner = get(
        &gw,
        "/x/a",
        &[("x-api-key", PARTNER_KEY), ("x-consumer", "spoofed")],
    )
    .await;
    assert_eq!(partner.status, StatusCode::OK);
    assert_eq!(backend.state.last_seen().headers["x-consumer"], "partner-x");
}

#[tokio::test]
async fn any_of_two_key_sources_and_all_of_needs_both() {
    let backend = Backend::echo().await;
    let gw = keyed(
        &backend,
        "{ auth: { any_of: [ { api_key: { from: header.x-api-key } }, { api_key: { from: query.key } } ] } }",
    )
    .start()
    .await;
    assert_eq!(
        get(&gw, &format!("/x?key={MOBILE_KEY}"), &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/x", &[("x-api-key", MOBILE_KEY)]).await.status,
        StatusCode::OK
    );
    let refused = get(&gw, "/x", &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers.get_all("www-authenticate").iter().count(),
        2
    );

    let gw = keyed(
        &backend,
        "{ auth: { all_of: [ { api_key: { from: header.x-api-key } }, { api_key: { from: header.x-second } } ] } }",
    )
    .start()
    .await;
    let one = get(&gw, "/x", &[("x-api-key", MOBILE_KEY)]).await;
    assert_eq!(one.status, StatusCode::UNAUTHORIZED);
    let two_consumers = get(
        &gw,
        "/x",
        &[("x-api-key", MOBILE_KEY), ("x-second", PARTNER_KEY)],
    )
    .await;
    assert_eq!(
        two_consumers.status,
        StatusCode::UNAUTHORIZED,
        "two identities"
    );
    let both = get(
        &gw,
        "/x",
        &[("x-api-key", MOBILE_KEY), ("x-second", MOBILE_KEY)],
    )
    .await;
    assert_eq!(both.status, StatusCode::OK);
    let seen = backend.state.last_seen();
    assert!(!seen.headers.contains_key("x-api-key") && !seen.headers.contains_key("x-second"));
}

#[tokio::test]
async fn keys_read_from_the_environment_and_a_file_at_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("key.txt"), "file-key-3\n").expect("writes");
    // The variable's name is this test's own: no other test reads or sets it.
    std::env::set_var("PORTCULLIS_TEST_AUTH_ENV_KEY", "env-key-4");
    let backend = Backend::echo().await;
    let file = dir.path().join("key.txt");
    let gw = Gateway::new()
        .raw(
            "consumers",
            &format!(
                "{{ a: {{ api_keys: [{{ env: PORTCULLIS_TEST_AUTH_ENV_KEY }}, {{ file: {:?} }}] }} }}",
                file.display().to_string()
            ),
        )
        .raw("policies", "{ keys: { auth: { api_key: {} } } }")
        .upstream("app", &backend)
        .route_with(Route::prefix("/x").named("keyed").policies(&["keys"]).to("app"))
        .start()
        .await;
    assert_eq!(
        get(&gw, "/x", &[("x-api-key", "env-key-4")]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/x", &[("x-api-key", "file-key-3")]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/x", &[("x-api-key", "file-key-33")]).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// An argon2 PHC string of `password` (a fixed salt: tests only).
fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").expect("salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("hashes")
        .to_string()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[tokio::test]
async fn basic_credentials_against_argon2_and_bcrypt_hashes_with_a_cache() {
    let backend = Backend::echo().await;
    let bcrypt = bcrypt::hash_with_salt("bcrypt-pw", 4, [7; 16])
        .expect("hashes")
        .format_for_version(bcrypt::Version::TwoB);
    let consumers = format!(
        "{{ partner-x: {{ basic: {{ user: partner, password_hash: {:?} }} }}, old: {{ basic: {{ user: old, password_hash: {:?} }} }} }}",
        argon2_hash("argon-pw"),
        bcrypt
    );
    let gw = Gateway::new()
        .admin()
        .raw("consumers", &consumers)
        .raw(
            "policies",
            "{ users: { auth: { basic: { realm: api } }, headers: { request: { set: { x-consumer: \"{consumer}\" } } } } }",
        )
        .upstream("app", &backend)
        .route_with(Route::prefix("/x").named("basic").policies(&["users"]).to("app"))
        .start()
        .await;

    let missing = get(&gw, "/x", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Basic realm=\"api\", charset=\"UTF-8\"")
    );
    for wrong in [
        basic("partner", "nope"),
        basic("nobody", "argon-pw"),
        "Basic %%%".to_owned(),
    ] {
        let refused = get(&gw, "/x", &[("authorization", &wrong)]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    for _ in 0..3 {
        let admitted = get(
            &gw,
            "/x",
            &[("authorization", &basic("partner", "argon-pw"))],
        )
        .await;
        assert_eq!(admitted.status, StatusCode::OK);
    }
    let seen = backend.state.last_seen();
    assert!(
        !seen.headers.contains_key("authorization"),
        "credentials removed"
    );
    assert_eq!(seen.headers["x-consumer"], "partner-x");
    let old = get(&gw, "/x", &[("authorization", &basic("old", "bcrypt-pw"))]).await;
    assert_eq!(old.status, StatusCode::OK);
    assert_eq!(backend.state.last_seen().headers["x-consumer"], "old");

    let text = metrics_text(&gw).await;
    let cache = |result: &str| {
        metric(
            &text,
            &format!("portcullis_auth_cache_lookups_total{{method=\"basic\",policy=\"users\",result=\"{result}\"}}"),
        )
    };
    // Two wrong passwords and the first of each right one missed; two repeats hit.
    assert_eq!(cache("hit"), Some(2.0), "{text}");
    assert_eq!(cache("miss"), Some(4.0), "{text}");
}
