//! JWT authentication end to end over real sockets: an identity provider serving its
//! JWKS over HTTPS (the test CA), rotating keys, going down; tokens valid and not
//! (expired, not yet valid, wrong audience or issuer, tampered, `alg: none`, HS256
//! signed with the RSA public key); claims copied to headers as the backend sees them;
//! `require` (403); a rate limit keyed by `jwt.sub`; `/ready` naming an issuer without
//! keys; `check` errors with their location.
//!
//! Keys are the test-only PEMs under `tests/fixtures/jwt/`.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::RunningGateway;
use serde_json::json;

use crate::support::backend::echo_json;
use crate::support::client::Reply as ClientReply;
use crate::support::idp::{base64url, claims, now, pem, Idp, Signer, ISSUER};
use crate::support::{
    eventually, metric, metrics_text, url, within, Backend, Client, Gateway, Reply, Route,
    Upstream, UpstreamTls,
};

/// Policy `users` (JWT from the IdP, `extra` added to its `jwt` mapping) on `/api`, and
/// `admins` (the same, requiring scope `admin`) on `/admin`, both to an echo backend.
fn gateway(idp: &Idp, app: &Backend, refetch_interval: &str, extra: &str) -> Gateway {
    let jwt = |more: &str| {
        format!(
            "{{ issuers: [{{ issuer: \"{ISSUER}\", jwks: {{ upstream: idp, path: /jwks.json, \
             refetch_interval: {refetch_interval} }}, audiences: [api], algorithms: [RS256, ES256] }}], \
             claims_to_headers: {{ sub: x-user-id, scope: x-user-scope }} {more} }}"
        )
    };
    let policies = format!(
        "{{ users: {{ auth: {{ jwt: {} }} }}, admins: {{ auth: {{ jwt: {} }} }} }}",
        jwt(extra),
        jwt(", require: { scope: admin }"),
    );
    Gateway::new()
        .admin()
        .raw("policies", &policies)
        .upstream(
            "idp",
            Upstream::new(idp.backend.https_url())
                .tls(UpstreamTls::ca(&idp.ca))
                .timeout(Duration::from_secs(2)),
        )
        .upstream("app", app)
        .route_with(
            Route::prefix("/api")
                .named("api")
                .policies(&["users"])
                .to("app"),
        )
        .route_with(
            Route::prefix("/admin")
                .named("admin")
                .policies(&["admins"])
                .to("app"),
        )
}

async fn echo_app() -> Backend {
    Backend::start(|request, _| async move { Reply::ok(echo_json(&request)) }).await
}

async fn get(gw: &RunningGateway, path: &str, token: &str) -> ClientReply {
    let bearer = format!("Bearer {token}");
    within(
        "the answer",
        Client::new().send(
            Method::GET,
            &url(gw, path),
            &[("authorization", &bearer), ("x-user-id", "spoofed")],
            "",
        ),
    )
    .await
}

/// Waits until every policy of the gateway (`users`, and `admins` where it has a `jwt`
/// method) has the IdP's first key set: each policy keeps its own, fetched once.
async fn until_keys(gw: &RunningGateway) {
    eventually("the first key sets are loaded", async || {
        let text = metrics_text(gw).await;
        let keys = |policy: &str| {
            metric(
                &text,
                &format!("portcullis_jwks_keys{{issuer=\"{ISSUER}\",policy=\"{policy}\"}}"),
            )
        };
        keys("users").is_some_and(|keys| keys > 0.0) && keys("admins").is_none_or(|keys| keys > 0.0)
    })
    .await;
}

/// Fetches at start: one per policy with the IdP as issuer (`users`, `admins`).
const START_FETCHES: usize = 2;

#[tokio::test]
async fn a_valid_token_is_admitted_and_its_claims_reach_the_backend_as_headers() {
    let (rsa, ec) = (Signer::rsa("rsa-old.pem", "old"), Signer::ec("ec"));
    let idp = Idp::start(vec![rsa.jwk(), ec.jwk()]).await;
    let app = echo_app().await;
    let gw = gateway(&idp, &app, "1h", "").start().await;
    until_keys(&gw).await;

    for signer in [&rsa, &ec] {
        let reply = get(&gw, "/api/me", &signer.sign(&claims("alice", json!({})))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let seen = app.state.last_seen();
        assert_eq!(
            seen.headers["x-user-id"], "alice",
            "the client's value is replaced"
        );
        assert_eq!(seen.headers["x-user-scope"], "read:users");
        assert!(
            seen.headers.get("authorization").is_none(),
            "the bearer token is not forwarded"
        );
    }
    // The same token again comes from the verified-token cache.
    let token = rsa.sign(&claims("bob", json!({})));
    for _ in 0..3 {
        assert_eq!(get(&gw, "/api/me", &token).await.status, StatusCode::OK);
    }
    let text = metrics_text(&gw).await;
    let hits = metric(
        &text,
        "portcullis_jwt_token_cache_lookups_total{policy=\"users\",result=\"hit\"}",
    );
    assert_eq!(hits, Some(2.0), "{text}");
    assert_eq!(
        idp.fetches(),
        START_FETCHES,
        "one fetch per policy at start, none per request"
    );
}

#[tokio::test]
async fn invalid_tokens_are_refused_with_invalid_token() {
    let rsa = Signer::rsa("rsa-old.pem", "old");
    let idp = Idp::start(vec![rsa.jwk()]).await;
    let app = echo_app().await;
    let gw = gateway(&idp, &app, "1h", "").start().await;
    until_keys(&gw).await;

    let valid = rsa.sign(&claims("alice", json!({})));
    let mut tampered: Vec<&str> = valid.split('.').collect();
    let admin_payload = base64url(&claims("alice", json!({"scope": "admin"})).to_string());
    tampered[1] = &admin_payload;
    let tampered = tampered.join(".");
    let none = format!(
        "{}.{}.",
        base64url(r#"{"alg":"none","typ":"JWT"}"#),
        base64url(&claims("alice", json!({})).to_string())
    );
    // HS256 "signed" with the RSA public key, as if it were a shared secret.
    let public = pem("rsa-old.pub.pem");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("old".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("alice", json!({})),
        &EncodingKey::from_secret(&public).expect("a key"),
    )
    .expect("signs");
    let cases = [
        (
            "expired",
            rsa.sign(&claims("a", json!({"exp": now() - 3600}))),
        ),
        (
            "not yet valid",
            rsa.sign(&claims("a", json!({"nbf": now() + 3600}))),
        ),
        (
            "wrong audience",
            rsa.sign(&claims("a", json!({"aud": "other"}))),
        ),
        (
            "wrong issuer",
            rsa.sign(&claims("a", json!({"iss": "https://evil.test/"}))),
        ),
        ("no exp", {
            let mut c = claims("a", json!({}));
            c.as_object_mut().map(|c| c.remove("exp"));
            rsa.sign(&c)
        }),
        ("tampered", tampered),
        ("alg none", none),
        ("HS256 with the public key", confused),
        ("garbage", "not-a-token".to_owned()),
    ];
    for (what, token) in cases {
        let reply = get(&gw, "/api/me", &token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            reply.text()
        );
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(
            reply.text().contains("request_id"),
            "{what}: {}",
            reply.text()
        );
    }
    // No token at all: a challenge without an error code.
    let reply = within("the answer", Client::new().get(&url(&gw, "/api/me"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && !challenge.contains("error="),
        "{challenge}"
    );
    assert_eq!(app.state.arrived(), 0, "nothing reached the backend");
    assert_eq!(idp.fetches(), START_FETCHES, "no refetch for any of them");
}

#[tokio::test]
async fn a_token_without_the_required_claim_is_forbidden() {
    let rsa = Signer::rsa("rsa-old.pem", "old");
    let idp = Idp::start(vec![rsa.jwk()]).await;
    let app = echo_app().await;
    let gw = gateway(&idp, &app, "1h", "").start().await;
    until_keys(&gw).await;
    let reader = rsa.sign(&claims("alice", json!({})));
    assert_eq!(
        get(&gw, "/admin", &reader).await.status,
        StatusCode::FORBIDDEN
    );
    let admin = rsa.sign(&claims("root", json!({"scope": "read:users admin"})));
    assert_eq!(get(&gw, "/admin", &admin).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch_and_unknown_kids_cost_at_most_one() {
    let (old, new) = (
        Signer::rsa("rsa-old.pem", "old"),
        Signer::rsa("rsa-new.pem", "new"),
    );
    let idp = Idp::start(vec![old.jwk()]).await;
    let app = echo_app().await;
    let interval = Duration::from_millis(500);
    let gw = gateway(&idp, &app, "500ms", "").start().await;
    until_keys(&gw).await;
    assert_eq!(idp.fetches(), START_FETCHES);

    // Past the interval since the first fetch (an unknown kid refetches at most once
    // per interval, counted from the last fetch), the IdP rotates: a token signed with
    // the new key makes the gateway refetch once.
    tokio::time::sleep(interval).await;
    idp.serve(vec![old.jwk(), new.jwk()]);
    let reply = get(&gw, "/api/me", &new.sign(&claims("alice", json!({})))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(idp.fetches(), START_FETCHES + 1, "one refetch, by `users`");

    // 1,000 requests with a kid nobody has, 50 at a time: at most one refetch per
    // interval, whatever their number; every other one is refused without a fetch.
    let stranger = Signer {
        kid: "unknown",
        ..Signer::rsa("rsa-new.pem", "unknown")
    };
    let token = stranger.sign(&claims("mallory", json!({})));
    let gw = Arc::new(gw);
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (gw, token) = (gw.clone(), token.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    assert_eq!(
                        get(&gw, "/api/me", &token).await.status,
                        StatusCode::UNAUTHORIZED
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no panic");
    }
    let intervals = (started.elapsed().as_millis() / interval.as_millis() + 1) as usize;
    let refetches = idp.fetches() - (START_FETCHES + 1);
    assert!(
        refetches <= intervals,
        "{refetches} refetches in {intervals} intervals"
    );
    let text = metrics_text(&gw).await;
    let outcome = |outcome: &str| {
        metric(
            &text,
            &format!(
                "portcullis_jwks_unknown_key_total{{issuer=\"{ISSUER}\",outcome=\"{outcome}\",policy=\"users\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    // The rotated key's own refetch is counted too.
    let asked = outcome("rate_limited") + outcome("joined") + outcome("refetched");
    assert_eq!(asked, 1001.0, "{text}");
    assert!(
        outcome("rate_limited") >= 1000.0 - 50.0 * intervals as f64,
        "{text}"
    );
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval_and_a_down_idp_keeps_the_old_keys() {
    let old = Signer::rsa("rsa-old.pem", "old");
    let idp = Idp::start(vec![old.jwk()]).await;
    let app = echo_app().await;
    // A short interval, so that the test can let one pass.
    let gw = gateway(&idp, &app, "300ms", "").start().await;
    until_keys(&gw).await;
    let stranger = Signer {
        kid: "unknown",
        ..Signer::rsa("rsa-new.pem", "unknown")
    };
    let unknown = stranger.sign(&claims("mallory", json!({})));
    let valid = old.sign(&claims("alice", json!({})));

    idp.set_down(true);
    // Once the interval since the first fetch has passed, an unknown kid refetches (and
    // the fetch fails); 200 more within the next interval do not.
    eventually("an unknown kid causes a refetch", async || {
        get(&gw, "/api/me", &unknown).await;
        idp.fetches() > START_FETCHES
    })
    .await;
    let started = tokio::time::Instant::now();
    let fetched = idp.fetches();
    for _ in 0..200 {
        get(&gw, "/api/me", &unknown).await;
    }
    let intervals = started.elapsed().as_millis() / 300 + 1;
    let refetches = (idp.fetches() - fetched) as u128;
    assert!(
        refetches <= intervals,
        "{refetches} refetches in {intervals} intervals"
    );
    // The last good keys are still used.
    let reply = get(&gw, "/api/me", &valid).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let text = metrics_text(&gw).await;
    let failed = metric(
        &text,
        &format!("portcullis_jwks_fetches_total{{issuer=\"{ISSUER}\",policy=\"users\",result=\"error\"}}"),
    )
    .unwrap_or(0.0);
    assert!(failed >= 1.0, "{text}");
}

#[tokio::test]
async fn an_issuer_without_keys_answers_503_and_is_named_in_ready() {
    let old = Signer::rsa("rsa-old.pem", "old");
    let idp = Idp::start(vec![old.jwk()]).await;
    idp.set_down(true);
    let app = echo_app().await;
    let gw = gateway(&idp, &app, "1h", "").start().await;
    eventually("the first fetch failed", async || idp.fetches() >= 1).await;
    let reply = get(&gw, "/api/me", &old.sign(&claims("alice", json!({})))).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    let ready = within(
        "ready",
        Client::new().get(&format!("http://{}/ready", gw.admin_addr().expect("admin"))),
    )
    .await;
    assert!(ready.text().contains(ISSUER), "{}", ready.text());
    // Routes without JWT serve as ever: the gateway started with the keys it had.
    assert_eq!(app.state.arrived(), 0);
}

#[tokio::test]
async fn a_rate_limit_is_keyed_by_the_token_subject() {
    let rsa = Signer::rsa("rsa-old.pem", "old");
    let idp = Idp::start(vec![rsa.jwk()]).await;
    let app = echo_app().await;
    let gw = gateway(
        &idp,
        &app,
        "1h",
        "",
    )
    .raw(
        "policies",
        &format!(
            "{{ users: {{ auth: {{ jwt: {{ issuers: [{{ issuer: \"{ISSUER}\", jwks: {{ upstream: idp, path: /jwks.json }}, \
             audiences: [api], algorithms: [RS256] }}] }} }}, rate_limit: [{{ key: jwt.sub, rate: 2/h }}] }}, \
             admins: {{ ip: {{ allow: [127.0.0.1] }} }} }}"
        ),
    )
    .start()
    .await;
    until_keys(&gw).await;
    let alice = rsa.sign(&claims("alice", json!({})));
    let alice_again = rsa.sign(&claims("alice", json!({"jti": "2"})));
    let bob = rsa.sign(&claims("bob", json!({})));
    assert_eq!(get(&gw, "/api/x", &alice).await.status, StatusCode::OK);
    assert_eq!(
        get(&gw, "/api/x", &alice_again).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/api/x", &alice).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "alice's third request, whichever token"
    );
    assert_eq!(get(&gw, "/api/x", &bob).await.status, StatusCode::OK);
}
