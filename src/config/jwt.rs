//! A policy's `auth: { jwt: ... }`: the raw keys as the file writes them and the
//! compiled form the runtime verifier (`policy::auth::jwt`) is built from.
//!
//! Which tokens are accepted is decided here, once per configuration: each issuer has
//! its algorithms and its keys (a JWKS document fetched through a named upstream, or an
//! HMAC secret read at load), and an algorithm is only accepted with the kind of key it
//! belongs to (never `none`, never an HMAC algorithm with a JWKS, whose keys are public).
//! Compiling (`compile::jwt`) checks every value and reference with its location.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::HeaderName;
use serde::Deserialize;

use super::units::{ByteSize, HumanDuration, ScalarString};

/// `jwt:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// Who may sign tokens, each with its keys, audiences and algorithms.
    pub issuers: Vec<RawJwtIssuer>,
    /// Where the token is looked for, in order; default `header.authorization`.
    pub from: Option<RawOneOrMany<String>>,
    /// Clock skew allowed on `exp` and `nbf`; default 30s.
    pub leeway: Option<HumanDuration>,
    /// Claim name → request header set from it (the client's own is always removed).
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Claim name → value (or values) the token must carry, else 403.
    #[serde(default)]
    pub require: BTreeMap<String, RawOneOrMany<ScalarString>>,
    /// The verified-token cache; on by default.
    pub token_cache: Option<RawTokenCache>,
    /// Forward the token upstream instead of removing it from where it was read.
    #[serde(default)]
    pub keep_credentials: bool,
}

/// One value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawOneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> RawOneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            RawOneOrMany::One(one) => std::slice::from_ref(one),
            RawOneOrMany::Many(many) => many,
        }
    }
}

/// One entry of `issuers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtIssuer {
    /// The `iss` claim, compared exactly.
    pub issuer: String,
    /// The public keys: a JWKS document fetched through an upstream.
    pub jwks: Option<RawJwks>,
    /// An HMAC secret (HS256/384/512), read once at load.
    pub secret: Option<RawSecret>,
    /// Accepted `aud` values (any one of them); empty: `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Vec<JwtAlgorithm>,
}

/// `jwks:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    /// The upstream that serves the document (its TLS settings, timeout, limits and
    /// metrics apply to the fetch).
    pub upstream: String,
    /// The document's path, e.g. `/.well-known/jwks.json`.
    pub path: String,
    pub min_age: Option<HumanDuration>,
    pub max_age: Option<HumanDuration>,
    pub refetch_interval: Option<HumanDuration>,
    pub max_size: Option<ByteSize>,
}

/// Where a secret comes from: an environment variable or a file, read at load.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub env: Option<String>,
    pub file: Option<String>,
}

/// `token_cache:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenCache {
    #[serde(default = "enabled")]
    pub enabled: bool,
    pub max_entries: Option<usize>,
}

fn enabled() -> bool {
    true
}

/// The signature algorithms an issuer may use. `none` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    /// Whether it is verified with a shared secret (and so never with a JWKS key).
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }

    /// The shortest secret it is used with: its hash's output (RFC 7518, 3.2).
    pub fn min_secret_len(self) -> usize {
        match self {
            JwtAlgorithm::HS384 => 48,
            JwtAlgorithm::HS512 => 64,
            _ => 32,
        }
    }
}

/// Default bounds of a JWKS document's cache lifetime and refetches.
pub mod defaults {
    use std::time::Duration;

    pub const LEEWAY: Duration = Duration::from_secs(30);
    pub const JWKS_MIN_AGE: Duration = Duration::from_secs(5 * 60);
    pub const JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
    pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
    pub const JWKS_MAX_SIZE: u64 = 256 * 1024;
    pub const TOKEN_CACHE_ENTRIES: usize = 10_000;
}

/// A policy's `jwt`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub issuers: Vec<JwtIssuerConfig>,
    /// Where the token is looked for, in order; the first place that has one is used.
    pub from: Vec<TokenSource>,
    pub leeway: Duration,
    pub claims_to_headers: Vec<(String, HeaderName)>,
    /// Each claim must match every value listed for it.
    pub require: Vec<(String, Vec<String>)>,
    /// Verified tokens cached at most (`None`: no cache).
    pub token_cache: Option<usize>,
    /// The token stays where it was read when the request goes upstream.
    pub keep_credentials: bool,
}

/// Where a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `header.authorization`: `Authorization: Bearer <token>`.
    Bearer,
    /// `header.NAME`: the whole value of another header.
    Header(HeaderName),
    /// `cookie.NAME`: a cookie's value.
    Cookie(String),
}

/// One issuer, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<JwtAlgorithm>,
    pub keys: IssuerKeys,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKeys {
    Jwks(JwksConfig),
    Secret(JwtSecret),
}

/// A JWKS document's source and cache bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    /// The upstream's name (in `Config::upstreams`).
    pub upstream: String,
    pub path: PathAndQuery,
    /// `Cache-Control: max-age` is raised to at least this…
    pub min_age: Duration,
    /// …and lowered to at most this (also the lifetime without a max-age).
    pub max_age: Duration,
    /// Refetches for a token whose `kid` the set lacks start at most once per this;
    /// a failed fetch is tried again after it too.
    pub refetch_interval: Duration,
    /// The largest document read, in bytes.
    pub max_size: u64,
}

/// An HMAC secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    pub fn new(bytes: Vec<u8>) -> Self {
        JwtSecret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(***)")
    }
}
