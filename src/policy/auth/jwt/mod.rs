//! The `jwt` authentication method: a bearer token verified against its issuer's keys.
//!
//! Per request ([`JwtVerifier::verify`]): the token is taken from the first place of
//! `from` that has one; a token in the verified-token cache ([`token_cache`]) is
//! admitted without a signature check; otherwise its issuer is found (by `iss` when the
//! policy has several), its `alg` must be one the issuer is configured with **and** one
//! its key's type verifies (an HMAC token is never checked against an RSA key, `none`
//! is no algorithm at all), the key is found by `kid` in the issuer's key set
//! ([`jwks`]; an unknown `kid` asks for one rate-limited refetch), and the signature,
//! `exp`/`nbf` (with the leeway), `iss` and `aud` are verified by the `jsonwebtoken`
//! crate. Then `require` decides between admitting and 403.
//!
//! [`JwtKeySets`] builds every policy's verifier once per configuration, with the key
//! sets and their tasks, seeded from the configuration it replaces.

mod fetch;
pub mod jwks;
pub mod keys;
pub mod token_cache;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::jwt::{IssuerKeys, JwtConfig, TokenSource};
use crate::metrics::{JwtMetrics, JwtRejection, Metrics};
use crate::upstream::Upstream;
use jwks::{KeySet, KeySetHandle, Refetch};
use token_cache::TokenCache;

/// The longest token looked at; longer ones are refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The longest claim value copied into a header.
const MAX_CLAIM_HEADER_LEN: usize = 4 * 1024;

/// A verified token.
#[derive(Debug)]
pub struct Verified {
    /// Which of the policy's issuers signed it.
    pub issuer: usize,
    /// Its `sub`, when it is a string.
    pub subject: Option<String>,
    pub claims: Map<String, Value>,
}

impl Verified {
    /// Claim `name` as text: a string as it is, a number or boolean written out, an
    /// array of those joined with `,`; objects and nulls have none.
    pub fn claim_text(&self, name: &str) -> Option<String> {
        claim_text(self.claims.get(name)?)
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// None of the `from` places has a token (another method may still admit).
    #[error("no bearer token")]
    NoToken,
    /// 401 `Bearer error="invalid_token"`.
    #[error("invalid token: {}", .0.label())]
    Invalid(JwtRejection),
    /// 403: a valid token without a `require`d claim value.
    #[error("the token lacks a required claim")]
    Forbidden,
    /// 503: the token's issuer has no keys yet (its JWKS could never be fetched).
    #[error("the issuer's keys are unavailable")]
    Unavailable,
}

/// One issuer, ready to verify.
struct Issuer {
    name: String,
    /// One validation per configured algorithm: the crate wants every algorithm of a
    /// validation to be of the key's family, and the token's is the one that counts.
    validations: Vec<(Algorithm, Validation)>,
    keys: IssuerKeyRuntime,
}

impl Issuer {
    /// The validation for tokens signed with `alg`; `None`: not an algorithm of this
    /// issuer.
    fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find_map(|(a, validation)| (*a == alg).then_some(validation))
    }
}

enum IssuerKeyRuntime {
    Secret(Option<DecodingKey>),
    Jwks(Arc<KeySet>),
}

/// A policy's `jwt` method, compiled for one configuration.
pub struct JwtVerifier {
    policy: String,
    config: JwtConfig,
    issuers: Vec<Issuer>,
    cache: Option<TokenCache>,
    metrics: JwtMetrics,
    /// The key sets' tasks run while the verifier lives (see [`JwtKeySets`]).
    handles: Vec<KeySetHandle>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// The verifier of `config` in `policy`; JWKS issuers fetch through the upstream of
    /// that name in `upstreams` (an issuer whose upstream is missing has no keys), each
    /// seeded from the same issuer of `previous`.
    fn new(
        policy: &str,
        config: &JwtConfig,
        upstreams: &[Arc<Upstream>],
        metrics: &Metrics,
        previous: Option<&JwtVerifier>,
    ) -> Self {
        let mut handles = Vec::new();
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| {
                let algorithms: Vec<Algorithm> = issuer
                    .algorithms
                    .iter()
                    .map(|a| keys::algorithm(*a))
                    .collect();
                let validations = algorithms
                    .iter()
                    .map(|&alg| {
                        let mut validation = Validation::new(alg);
                        validation.leeway = config.leeway.as_secs();
                        validation.validate_nbf = true;
                        validation.set_issuer(&[&issuer.issuer]);
                        let mut required = vec!["exp", "iss"];
                        if issuer.audiences.is_empty() {
                            validation.validate_aud = false;
                        } else {
                            validation.set_audience(&issuer.audiences);
                            required.push("aud");
                        }
                        validation.set_required_spec_claims(&required);
                        (alg, validation)
                    })
                    .collect();
                let keys = match &issuer.keys {
                    IssuerKeys::Secret(secret) => {
                        IssuerKeyRuntime::Secret(DecodingKey::from_secret(secret.bytes()).ok())
                    }
                    IssuerKeys::Jwks(jwks) => {
                        let before = previous.and_then(|p| p.key_set_of(&issuer.issuer, jwks));
                        let set_metrics = metrics.jwks(policy, &issuer.issuer);
                        let handle = match upstreams.iter().find(|u| u.name == jwks.upstream) {
                            Some(upstream) => {
                                let fetcher = fetch::UpstreamFetch {
                                    upstream: upstream.clone(),
                                    path: jwks.path.clone(),
                                    max_size: jwks.max_size,
                                };
                                KeySet::start(
                                    &issuer.issuer,
                                    jwks,
                                    fetcher.timeout(),
                                    fetcher,
                                    set_metrics,
                                    before,
                                )
                            }
                            None => KeySet::start(
                                &issuer.issuer,
                                jwks,
                                std::time::Duration::from_secs(1),
                                fetch::Unreachable(jwks.upstream.clone()),
                                set_metrics,
                                before,
                            ),
                        };
                        let set = handle.set().clone();
                        handles.push(handle);
                        IssuerKeyRuntime::Jwks(set)
                    }
                };
                Issuer {
                    name: issuer.issuer.clone(),
                    validations,
                    keys,
                }
            })
            .collect();
        JwtVerifier {
            policy: policy.to_owned(),
            config: config.clone(),
            issuers,
            cache: config.token_cache.map(TokenCache::new),
            metrics: metrics.jwt(policy),
            handles,
        }
    }

    fn key_set_of(&self, issuer: &str, jwks: &crate::config::jwt::JwksConfig) -> Option<&KeySet> {
        self.config
            .issuers
            .iter()
            .zip(&self.issuers)
            .find_map(|(config, runtime)| match (&config.keys, &runtime.keys) {
                (IssuerKeys::Jwks(old), IssuerKeyRuntime::Jwks(set))
                    if config.issuer == issuer
                        && old.upstream == jwks.upstream
                        && old.path == jwks.path =>
                {
                    Some(&**set)
                }
                _ => None,
            })
    }

    fn stop(&self) {
        for handle in &self.handles {
            handle.stop();
        }
    }

    /// The policy's name.
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// Issuers whose key set is empty (never fetched successfully).
    pub fn issuers_without_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.issuers.iter().filter_map(|issuer| match &issuer.keys {
            IssuerKeyRuntime::Jwks(set) if set.is_empty() => Some(issuer.name.as_str()),
            IssuerKeyRuntime::Secret(None) => Some(issuer.name.as_str()),
            _ => None,
        })
    }

    /// Verifies the request's token (see the module) and checks `require`.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<Arc<Verified>, JwtError> {
        let result = self.verify_token(headers).await.and_then(|verified| {
            if self.meets_requirements(&verified) {
                Ok(verified)
            } else {
                Err(JwtError::Forbidden)
            }
        });
        match result {
            Err(JwtError::Invalid(reason)) => self.rejected(reason),
            Err(JwtError::Forbidden) => self.rejected(JwtRejection::Require),
            Err(JwtError::Unavailable) => self.rejected(JwtRejection::NoKeys),
            _ => {}
        }
        result
    }

    fn rejected(&self, reason: JwtRejection) {
        self.metrics.rejected(reason);
        tracing::debug!(policy = %self.policy, reason = reason.label(), "token refused");
    }

    async fn verify_token(&self, headers: &HeaderMap) -> Result<Arc<Verified>, JwtError> {
        let token = find_token(&self.config.from, headers).ok_or(JwtError::NoToken)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Invalid(JwtRejection::Malformed));
        }
        let now = unix_now();
        let cache_key = self.cache.as_ref().map(|cache| {
            let key = token_cache::hash(token.as_bytes());
            (cache, key)
        });
        if let Some((cache, key)) = &cache_key {
            if let Some(verified) = cache.get(key, now, |issuer| self.generation(issuer)) {
                self.metrics.cache_hits.inc();
                return Ok(verified);
            }
            self.metrics.cache_misses.inc();
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| JwtError::Invalid(JwtRejection::Malformed))?;
        let index = self.issuer_of(token)?;
        let issuer = &self.issuers[index];
        let validation = issuer
            .validation(header.alg)
            .ok_or(JwtError::Invalid(JwtRejection::Algorithm))?;
        let (claims, generation) = match &issuer.keys {
            IssuerKeyRuntime::Secret(Some(key)) => (decode(token, key, validation)?, 0),
            IssuerKeyRuntime::Secret(None) => return Err(JwtError::Unavailable),
            IssuerKeyRuntime::Jwks(set) => {
                self.verify_with_set(token, &header, validation, set)
                    .await?
            }
        };
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map_or(0, |exp| exp.saturating_add(self.config.leeway.as_secs()));
        let verified = Arc::new(Verified {
            issuer: index,
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            claims,
        });
        if let Some((cache, key)) = cache_key {
            cache.insert(key, verified.clone(), expires, generation, now);
        }
        Ok(verified)
    }

    /// The claims of `token`, verified with a key of `set`; and the set's generation.
    async fn verify_with_set(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        validation: &Validation,
        set: &KeySet,
    ) -> Result<Checked, JwtError> {
        let mut refetched = false;
        loop {
            if let Some(result) = try_keys(token, header, validation, &set.keys()) {
                return result;
            }
            if refetched {
                return Err(if set.is_empty() {
                    JwtError::Unavailable
                } else {
                    JwtError::Invalid(JwtRejection::UnknownKey)
                });
            }
            // `TooSoon` and `GaveUp` still look again: a fetch may have just ended.
            let _: Refetch = set.refetch().await;
            refetched = true;
        }
    }

    /// Which issuer signed `token`: the only one, or the one its `iss` names.
    fn issuer_of(&self, token: &str) -> Result<usize, JwtError> {
        if self.issuers.len() == 1 {
            return Ok(0);
        }
        #[derive(serde::Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        let claims: Iss = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| JwtError::Invalid(JwtRejection::Malformed))?;
        let iss = claims.iss.ok_or(JwtError::Invalid(JwtRejection::Issuer))?;
        self.issuers
            .iter()
            .position(|issuer| issuer.name == iss)
            .ok_or(JwtError::Invalid(JwtRejection::Issuer))
    }

    fn generation(&self, issuer: usize) -> u64 {
        match self.issuers.get(issuer).map(|i| &i.keys) {
            Some(IssuerKeyRuntime::Jwks(set)) => set.keys().generation,
            _ => 0,
        }
    }

    fn meets_requirements(&self, verified: &Verified) -> bool {
        self.config.require.iter().all(|(claim, values)| {
            let Some(claim) = verified.claims.get(claim) else {
                return false;
            };
            values.iter().all(|value| claim_has(claim, value))
        })
    }

    /// Removes the headers `claims_to_headers` sets from the client's request: only the
    /// gateway sets them, whichever method admitted the request.
    pub fn strip_claim_headers(&self, headers: &mut HeaderMap) {
        for (_, header) in &self.config.claims_to_headers {
            headers.remove(header);
        }
    }

    /// Sets the `claims_to_headers` headers from `verified` (after
    /// [`JwtVerifier::strip_claim_headers`]); a claim the token lacks, or whose value
    /// cannot be a header value, sets nothing.
    pub fn copy_claims(&self, verified: &Verified, headers: &mut HeaderMap) {
        for (claim, header) in &self.config.claims_to_headers {
            headers.remove(header);
            let Some(text) = verified.claim_text(claim) else {
                continue;
            };
            if text.len() > MAX_CLAIM_HEADER_LEN {
                continue;
            }
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(header.clone(), value);
            }
        }
    }

    /// The `claims_to_headers` fields of `verified`: a claim the token lacks, or whose
    /// value cannot be a header value, sets nothing.
    pub fn claim_fields(&self, verified: &Verified) -> Vec<(HeaderName, HeaderValue)> {
        self.config
            .claims_to_headers
            .iter()
            .filter_map(|(claim, header)| {
                let text = verified.claim_text(claim)?;
                if text.len() > MAX_CLAIM_HEADER_LEN {
                    return None;
                }
                let value = HeaderValue::from_str(&text).ok()?;
                Some((header.clone(), value))
            })
            .collect()
    }

    /// The headers `claims_to_headers` sets.
    pub fn claim_headers(&self) -> impl Iterator<Item = &HeaderName> + '_ {
        self.config.claims_to_headers.iter().map(|(_, h)| h)
    }
}

/// A token's verified claims and the key-set generation that verified them.
type Checked = (Map<String, Value>, u64);

/// The claims of `token` verified with the key of `keys` that its `kid` names (each
/// that fits its algorithm, without a `kid`); `None` when the set has no such key.
fn try_keys(
    token: &str,
    header: &jsonwebtoken::Header,
    validation: &Validation,
    keys: &jwks::KeyList,
) -> Option<Result<Checked, JwtError>> {
    let mut candidates = keys
        .keys
        .iter()
        .filter(|key| header.kid.is_none() || key.kid == header.kid)
        .peekable();
    candidates.peek()?;
    let mut last = JwtError::Invalid(JwtRejection::Algorithm);
    for key in candidates.filter(|key| key.verifies(header.alg)) {
        match decode(token, &key.key, validation) {
            Ok(claims) => return Some(Ok((claims, keys.generation))),
            Err(error) => last = error,
        }
    }
    Some(Err(last))
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, JwtError> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|error| JwtError::Invalid(rejection_of(error.kind())))
}

fn rejection_of(kind: &ErrorKind) -> JwtRejection {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => JwtRejection::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => JwtRejection::Algorithm,
        ErrorKind::ExpiredSignature => JwtRejection::Expired,
        ErrorKind::ImmatureSignature => JwtRejection::NotYetValid,
        ErrorKind::InvalidIssuer => JwtRejection::Issuer,
        ErrorKind::InvalidAudience => JwtRejection::Audience,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidSubject => JwtRejection::Claims,
        _ => JwtRejection::Malformed,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token in the first of `from` that has one.
fn find_token<'h>(from: &[TokenSource], headers: &'h HeaderMap) -> Option<&'h str> {
    from.iter().find_map(|source| match source {
        TokenSource::Bearer => headers
            .get(AUTHORIZATION)
            .and_then(|value| bearer_token(value.as_bytes())),
        TokenSource::Header(name) => headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|token| !token.is_empty()),
        TokenSource::Cookie(name) => cookie(headers, name),
    })
}

/// The token of `Bearer <token>` (the scheme in any case); other schemes have none.
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// Cookie `name`'s value, from any `Cookie` field.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
        .filter(|value| !value.is_empty())
}

fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|item| match item {
                    Value::Array(_) | Value::Object(_) | Value::Null => None,
                    scalar => claim_text(scalar),
                })
                .collect();
            Some(parts?.join(","))
        }
        Value::Object(_) | Value::Null => None,
    }
}

/// Whether `claim` carries `value`: equal to it, one of a space-separated string's
/// words (OAuth `scope`), or one of an array's items.
fn claim_has(claim: &Value, value: &str) -> bool {
    match claim {
        Value::String(text) => text == value || text.split(' ').any(|word| word == value),
        Value::Array(items) => items.iter().any(|item| match item {
            Value::String(text) => text == value,
            Value::Number(_) | Value::Bool(_) => claim_text(item).as_deref() == Some(value),
            _ => false,
        }),
        Value::Number(_) | Value::Bool(_) => claim_text(claim).as_deref() == Some(value),
        _ => false,
    }
}

/// Every `jwt` method of one configuration, built once and shared by the routes that
/// name its policy.
#[derive(Default)]
pub struct JwtKeySets {
    verifiers: Vec<Arc<JwtVerifier>>,
}

impl JwtKeySets {
    /// Verifiers for `methods` (each a policy's name and a `jwt` method of it, in a
    /// stable order), fetching through `upstreams`. The key sets of `previous` (the
    /// configuration being replaced) seed the new ones and their tasks are stopped.
    pub fn build<'a>(
        methods: impl IntoIterator<Item = (&'a str, &'a JwtConfig)>,
        upstreams: &[Arc<Upstream>],
        metrics: &Metrics,
        previous: Option<&JwtKeySets>,
    ) -> Self {
        let verifiers = methods
            .into_iter()
            .map(|(policy, config)| {
                let before = previous.and_then(|p| {
                    p.verifiers
                        .iter()
                        .find(|v| v.policy == policy)
                        .map(|v| &**v)
                });
                Arc::new(JwtVerifier::new(policy, config, upstreams, metrics, before))
            })
            .collect();
        if let Some(previous) = previous {
            for verifier in &previous.verifiers {
                verifier.stop();
            }
        }
        JwtKeySets { verifiers }
    }

    /// Every verifier, in the order they were built.
    pub fn verifiers(&self) -> impl Iterator<Item = &Arc<JwtVerifier>> + '_ {
        self.verifiers.iter()
    }

    /// The verifier built for `config` in `policy`.
    pub fn get(&self, policy: &str, config: &JwtConfig) -> Option<Arc<JwtVerifier>> {
        self.verifiers
            .iter()
            .find(|v| v.policy == policy && v.config == *config)
            .cloned()
    }

    /// `(policy, issuer)` of every issuer with no keys, for `/ready`.
    pub fn issuers_without_keys(&self) -> Vec<(String, String)> {
        self.verifiers
            .iter()
            .flat_map(|v| {
                v.issuers_without_keys()
                    .map(|issuer| (v.policy.clone(), issuer.to_owned()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwdw=="),
        );
        headers.insert(
            COOKIE,
            HeaderValue::from_static("theme=dark; session=abc.def.ghi"),
        );
        let from = [TokenSource::Bearer, TokenSource::Cookie("session".into())];
        assert_eq!(find_token(&from, &headers), Some("abc.def.ghi"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer  x.y.z "));
        assert_eq!(find_token(&from, &headers), Some("x.y.z"));
        assert_eq!(find_token(&from[..1], &HeaderMap::new()), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(find_token(&from[..1], &headers), None);
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hmac_verifier(require: Vec<(String, Vec<String>)>) -> JwtVerifier {
        let config = JwtConfig {
            issuers: vec![crate::config::jwt::JwtIssuerConfig {
                issuer: "https://issuer/".into(),
                audiences: vec!["api".into()],
                algorithms: vec![crate::config::jwt::JwtAlgorithm::HS256],
                keys: IssuerKeys::Secret(crate::config::jwt::JwtSecret::new(SECRET.to_vec())),
            }],
            from: vec![TokenSource::Bearer],
            leeway: std::time::Duration::from_secs(5),
            claims_to_headers: vec![("sub".into(), HeaderName::from_static("x-user"))],
            require,
            token_cache: Some(100),
            keep_credentials: false,
        };
        JwtVerifier::new("p", &config, &[], &Metrics::new(), None)
    }

    fn bearer(alg: Algorithm, secret: &[u8], claims: Value) -> HeaderMap {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret).expect("a key"),
        )
        .expect("signs");
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
        );
        headers
    }

    fn claims(extra: Value) -> Value {
        let mut claims = serde_json::json!({
            "iss": "https://issuer/", "aud": "api", "sub": "alice",
            "exp": unix_now() + 60, "scope": "read write",
        });
        if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            claims.extend(extra);
        }
        claims
    }

    #[tokio::test]
    async fn hmac_tokens_are_verified_cached_and_checked() {
        let verifier = hmac_verifier(vec![("scope".into(), vec!["write".into()])]);
        let headers = bearer(Algorithm::HS256, SECRET, claims(serde_json::json!({})));
        let verified = verifier.verify(&headers).await.expect("valid");
        assert_eq!(verified.subject.as_deref(), Some("alice"));
        verifier.verify(&headers).await.expect("valid again");
        assert_eq!(verifier.metrics.cache_hits.get(), 1);
        let mut upstream = HeaderMap::new();
        upstream.insert("x-user", HeaderValue::from_static("spoofed"));
        verifier.copy_claims(&verified, &mut upstream);
        assert_eq!(upstream["x-user"], "alice");

        let refused = |extra: Value| bearer(Algorithm::HS256, SECRET, claims(extra));
        let cases = [
            (
                refused(serde_json::json!({"exp": unix_now() - 60})),
                JwtRejection::Expired,
            ),
            (
                refused(serde_json::json!({"nbf": unix_now() + 60})),
                JwtRejection::NotYetValid,
            ),
            (
                refused(serde_json::json!({"aud": "other"})),
                JwtRejection::Audience,
            ),
            (
                refused(serde_json::json!({"iss": "https://other/"})),
                JwtRejection::Issuer,
            ),
            (
                bearer(
                    Algorithm::HS256,
                    b"another secret, long enough to sign",
                    claims(serde_json::json!({})),
                ),
                JwtRejection::Signature,
            ),
            (
                bearer(Algorithm::HS512, SECRET, claims(serde_json::json!({}))),
                JwtRejection::Algorithm,
            ),
        ];
        for (headers, reason) in cases {
            assert_eq!(
                verifier.verify(&headers).await.map(|_| ()),
                Err(JwtError::Invalid(reason))
            );
        }
        let reader = bearer(
            Algorithm::HS256,
            SECRET,
            claims(serde_json::json!({"scope": "read"})),
        );
        assert_eq!(
            verifier.verify(&reader).await.map(|_| ()),
            Err(JwtError::Forbidden)
        );
        assert_eq!(
            verifier.verify(&HeaderMap::new()).await.map(|_| ()),
            Err(JwtError::NoToken)
        );
    }

    #[test]
    fn claims_match_values_words_and_items() {
        let scope = Value::from("read:users write:users");
        assert!(claim_has(&scope, "read:users"));
        assert!(!claim_has(&scope, "read"));
        let roles = serde_json::json!(["admin", 7]);
        assert!(claim_has(&roles, "admin"));
        assert!(claim_has(&roles, "7"));
        assert!(!claim_has(&roles, "user"));
        assert!(claim_has(&Value::from(true), "true"));
        assert_eq!(claim_text(&roles).as_deref(), Some("admin,7"));
        assert_eq!(claim_text(&serde_json::json!({"a": 1})), None);
    }
}
