//! JWT verification against a real identity provider: the JWKS document is fetched over
//! HTTPS (the test CA) through the gateway's own upstream client, from a configuration
//! compiled as the gateway compiles it; the IdP rotates its keys and goes down.
//!
//! These tests drive the verifier of one configuration ([`JwtKeySets`]) directly: a
//! token signed with a rotated-in key is admitted after exactly one refetch; 1,000
//! concurrent tokens with an unknown `kid` cost at most one; a failed fetch keeps the
//! last good keys; an issuer that never got keys answers `Unavailable` and is named
//! for `/ready`; expired, not-yet-valid, wrong `aud`/`iss`, tampered, `alg: none` and
//! HS256-with-the-public-key tokens are refused.

use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::config::jwt::{
    IssuerKeys, JwksConfig, JwtAlgorithm, JwtConfig, JwtIssuerConfig, TokenSource,
};
use portcullis::metrics::{JwtRejection, Metrics};
use portcullis::policy::auth::jwt::{JwtError, JwtKeySets};
use portcullis::proxy::Snapshot;
use portcullis::Config;
use serde_json::json;

use crate::support::idp::{base64url, claims, now, pem, Idp, Signer, ISSUER};
use crate::support::pki::quoted;
use crate::support::{eventually, metric, within};

/// The verifiers of one configuration whose upstream `idp` is `idp`, with
/// `refetch_interval`; the snapshot owns the upstreams.
struct Verifying {
    sets: JwtKeySets,
    metrics: Metrics,
    _snapshot: Snapshot,
}

impl Verifying {
    fn new(idp: &Idp, refetch_interval: Duration) -> Verifying {
        let yaml = format!(
            r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams:
  idp: {{ endpoints: ["{}"], timeout: 2s, tls: {{ ca: {} }} }}
routes:
  - {{ name: idp, match: {{ path_prefix: / }}, upstream: idp }}
"#,
            idp.backend.https_url(),
            quoted(&idp.ca)
        );
        let config = Config::from_yaml(&yaml, "gateway.yaml").expect("valid");
        let metrics = Metrics::new();
        let snapshot = Snapshot::build(config, &metrics, None);
        let jwt = JwtConfig {
            issuers: vec![JwtIssuerConfig {
                issuer: ISSUER.into(),
                audiences: vec!["api".into()],
                algorithms: vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256],
                keys: IssuerKeys::Jwks(JwksConfig {
                    upstream: "idp".into(),
                    path: PathAndQuery::from_static("/jwks.json"),
                    min_age: Duration::from_secs(60),
                    max_age: Duration::from_secs(3600),
                    refetch_interval,
                    max_size: 64 * 1024,
                }),
            }],
            from: vec![TokenSource::Bearer],
            leeway: Duration::from_secs(5),
            claims_to_headers: Vec::new(),
            require: Vec::new(),
            token_cache: Some(1000),
            keep_credentials: false,
        };
        let sets = JwtKeySets::build([("users", &jwt)], &snapshot.upstreams, &metrics, None);
        Verifying {
            sets,
            metrics,
            _snapshot: snapshot,
        }
    }

    async fn verify(&self, token: &str) -> Result<(), JwtError> {
        let verifier = self.sets.verifiers().next().expect("one verifier");
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
        );
        within("the verification", verifier.verify(&headers))
            .await
            .map(|_| ())
    }

    fn metric(&self, series: &str) -> f64 {
        let text = String::from_utf8(self.metrics.encode()).expect("utf-8");
        metric(&text, series).unwrap_or(0.0)
    }

    async fn until_keys(&self) {
        eventually("the first key set is loaded", async || {
            self.sets.issuers_without_keys().is_empty()
        })
        .await;
    }
}

fn unknown_kid() -> Signer {
    Signer {
        kid: "unknown",
        ..Signer::rsa("rsa-new.pem", "unknown")
    }
}

#[tokio::test]
async fn tokens_signed_with_the_published_keys_are_admitted_and_bad_ones_refused() {
    let (rsa, ec) = (Signer::rsa("rsa-old.pem", "old"), Signer::ec("ec"));
    let idp = Idp::start(vec![rsa.jwk(), ec.jwk()]).await;
    let verifying = Verifying::new(&idp, Duration::from_secs(3600));
    verifying.until_keys().await;

    assert_eq!(
        verifying
            .verify(&rsa.sign(&claims("alice", json!({}))))
            .await,
        Ok(())
    );
    assert_eq!(
        verifying
            .verify(&ec.sign(&claims("alice", json!({}))))
            .await,
        Ok(())
    );

    let valid = rsa.sign(&claims("carol", json!({"jti": "cached"})));
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = base64url(&claims("alice", json!({"scope": "admin"})).to_string());
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        base64url(r#"{"alg":"none","typ":"JWT"}"#),
        base64url(&claims("alice", json!({})).to_string())
    );
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("old".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims("alice", json!({})),
        &EncodingKey::from_secret(&pem("rsa-old.pub.pem")).expect("a key"),
    )
    .expect("signs");
    let mut without_exp = claims("alice", json!({}));
    without_exp.as_object_mut().map(|c| c.remove("exp"));
    let invalid = |reason| Err(JwtError::Invalid(reason));
    let cases = [
        (
            "expired",
            rsa.sign(&claims("a", json!({"exp": now() - 3600}))),
            invalid(JwtRejection::Expired),
        ),
        (
            "not yet valid",
            rsa.sign(&claims("a", json!({"nbf": now() + 3600}))),
            invalid(JwtRejection::NotYetValid),
        ),
        (
            "wrong audience",
            rsa.sign(&claims("a", json!({"aud": "other"}))),
            invalid(JwtRejection::Audience),
        ),
        (
            "wrong issuer",
            rsa.sign(&claims("a", json!({"iss": "https://evil.test/"}))),
            invalid(JwtRejection::Issuer),
        ),
        (
            "no exp",
            rsa.sign(&without_exp),
            invalid(JwtRejection::Claims),
        ),
        ("tampered", tampered, invalid(JwtRejection::Signature)),
        ("alg none", none, invalid(JwtRejection::Malformed)),
        (
            "HS256 with the public key",
            confused,
            invalid(JwtRejection::Algorithm),
        ),
        (
            "garbage",
            "not-a-token".to_owned(),
            invalid(JwtRejection::Malformed),
        ),
    ];
    for (what, token, expected) in cases {
        assert_eq!(verifying.verify(&token).await, expected, "{what}");
    }
    assert_eq!(
        idp.fetches(),
        1,
        "one fetch at start, no refetch for any of them"
    );

    // A token verified once is not verified again.
    for _ in 0..3 {
        assert_eq!(verifying.verify(&valid).await, Ok(()));
    }
    assert_eq!(
        verifying
            .metric("portcullis_jwt_token_cache_lookups_total{policy=\"users\",result=\"hit\"}"),
        2.0
    );
}

#[tokio::test]
async fn a_rotated_key_is_admitted_after_one_refetch_and_unknown_kids_cost_at_most_one() {
    let (old, new) = (
        Signer::rsa("rsa-old.pem", "old"),
        Signer::rsa("rsa-new.pem", "new"),
    );
    let idp = Idp::start(vec![old.jwk()]).await;
    let verifying = Arc::new(Verifying::new(&idp, Duration::from_millis(400)));
    verifying.until_keys().await;
    assert_eq!(idp.fetches(), 1);
    // Past the interval since the first fetch, the IdP rotates: a token signed with the
    // new key makes the gateway refetch, once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    idp.serve(vec![old.jwk(), new.jwk()]);
    assert_eq!(
        verifying
            .verify(&new.sign(&claims("alice", json!({}))))
            .await,
        Ok(())
    );
    assert_eq!(idp.fetches(), 2);
    assert_eq!(
        verifying.verify(&old.sign(&claims("bob", json!({})))).await,
        Ok(())
    );

    // 1,000 tokens with a kid nobody publishes, all at once and again and again for a
    // while: at most one refetch per interval.
    let token = unknown_kid().sign(&claims("mallory", json!({})));
    let started = tokio::time::Instant::now();
    let before = idp.fetches();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (verifying, token) = (verifying.clone(), token.clone());
            tokio::spawn(async move { verifying.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(
            task.await.expect("no panic"),
            Err(JwtError::Invalid(JwtRejection::UnknownKey))
        );
    }
    let intervals = started.elapsed().as_millis() / 400 + 1;
    let refetches = (idp.fetches() - before) as u128;
    assert!(
        refetches <= intervals,
        "{refetches} refetches in {intervals} intervals"
    );
    assert!(
        refetches <= 1,
        "{refetches} refetches for 1,000 unknown kids"
    );
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_last_good_keys() {
    let old = Signer::rsa("rsa-old.pem", "old");
    let idp = Idp::start(vec![old.jwk()]).await;
    let verifying = Verifying::new(&idp, Duration::from_millis(200));
    verifying.until_keys().await;
    idp.set_down(true);
    let unknown = unknown_kid().sign(&claims("mallory", json!({})));
    eventually("an unknown kid causes a refetch, which fails", async || {
        let _ = verifying.verify(&unknown).await;
        idp.fetches() >= 2
    })
    .await;
    eventually("the failure is counted", async || {
        verifying.metric(&format!(
            "portcullis_jwks_fetches_total{{issuer=\"{ISSUER}\",policy=\"users\",result=\"error\"}}"
        )) >= 1.0
    })
    .await;
    assert_eq!(
        verifying
            .verify(&old.sign(&claims("alice", json!({}))))
            .await,
        Ok(())
    );
    assert!(verifying.sets.issuers_without_keys().is_empty());
}

#[tokio::test]
async fn an_issuer_that_never_got_keys_is_unavailable_and_named() {
    let old = Signer::rsa("rsa-old.pem", "old");
    let idp = Idp::start(vec![old.jwk()]).await;
    idp.set_down(true);
    let verifying = Verifying::new(&idp, Duration::from_secs(3600));
    eventually("the first fetch failed", async || idp.fetches() >= 1).await;
    assert_eq!(
        verifying
            .verify(&old.sign(&claims("alice", json!({}))))
            .await,
        Err(JwtError::Unavailable)
    );
    assert_eq!(
        verifying.sets.issuers_without_keys(),
        [("users".to_owned(), ISSUER.to_owned())]
    );
}
