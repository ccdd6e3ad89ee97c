//! Authentication in the configuration: the top-level `consumers` (named identities
//! and their credentials) and a policy's `auth` (how a request proves who it is).
//!
//! The raw serde types (`Raw*`, as written in the file) and the compiled ones sit here
//! side by side; `compile/auth.rs` turns one into the other (hashes parsed, keys read
//! from the environment or a file and hashed at load, consumers and upstreams
//! resolved). What happens per request is `policy::auth`.
//!
//! No compiled type holds a secret in clear: an API key is kept as its SHA-256 digest,
//! a password as its argon2 or bcrypt hash; their `Debug` prints neither.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::units::{ByteSize, HumanDuration};

/// The SHA-256 digest of `bytes` (an API key at load and per request).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

// ---------------------------------------------------------------------------------
// As written.

/// A named identity: `consumers: { mobile-app: { api_keys: [...], basic: {...} } }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    pub basic: Option<RawBasicCredential>,
}

/// One API key of a consumer: its SHA-256 digest in hex, or where to read the key at
/// load (it is hashed then and never kept in clear). Written as a one-key map.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawApiKeyMap")]
pub enum RawApiKey {
    /// 64 hex digits, optionally prefixed `sha256:`.
    Sha256(String),
    /// The name of an environment variable holding the key.
    Env(String),
    /// A file holding the key (surrounding whitespace trimmed); relative to the
    /// configuration file.
    File(PathBuf),
}

/// [`RawApiKey`] as serde reads it: serde_yaml reads enums from YAML tags only, and the
/// file writes one-key maps.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKeyMap {
    sha256: Option<String>,
    env: Option<String>,
    file: Option<PathBuf>,
}

impl TryFrom<RawApiKeyMap> for RawApiKey {
    type Error = &'static str;

    fn try_from(map: RawApiKeyMap) -> Result<Self, Self::Error> {
        match (map.sha256, map.env, map.file) {
            (Some(hex), None, None) => Ok(RawApiKey::Sha256(hex)),
            (None, Some(name), None) => Ok(RawApiKey::Env(name)),
            (None, None, Some(path)) => Ok(RawApiKey::File(path)),
            _ => Err("write exactly one of `sha256`, `env` or `file`"),
        }
    }
}

/// A consumer's basic-auth user and password hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicCredential {
    pub user: String,
    /// `$argon2id$...` (PHC string) or `$2b$...` (bcrypt).
    pub password_hash: String,
}

/// A policy's `auth`: one method, written as a one-key map. A new method adds its
/// variant here and its key to [`RawAuthMap`].
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawAuthMap")]
pub enum RawAuth {
    ApiKey(RawApiKeyAuth),
    Basic(RawBasicAuth),
    Forward(RawForwardAuth),
    /// A bearer token (JWT) verified against its issuer's keys.
    Jwt(super::jwt::RawJwt),
    /// The first method that admits the request decides.
    AnyOf(Vec<RawAuth>),
    /// Every method must admit the request.
    AllOf(Vec<RawAuth>),
}

/// [`RawAuth`] as serde reads it (see [`RawApiKeyMap`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthMap {
    api_key: Option<RawApiKeyAuth>,
    basic: Option<RawBasicAuth>,
    jwt: Option<super::jwt::RawJwt>,
    forward: Option<RawForwardAuth>,
    any_of: Option<Vec<RawAuth>>,
    all_of: Option<Vec<RawAuth>>,
}

impl TryFrom<RawAuthMap> for RawAuth {
    type Error = &'static str;

    fn try_from(map: RawAuthMap) -> Result<Self, Self::Error> {
        let methods = [
            map.api_key.map(RawAuth::ApiKey),
            map.basic.map(RawAuth::Basic),
            map.forward.map(RawAuth::Forward),
            map.jwt.map(RawAuth::Jwt),
            map.any_of.map(RawAuth::AnyOf),
            map.all_of.map(RawAuth::AllOf),
        ];
        let mut set = methods.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(method), None) => Ok(method),
            _ => Err("write exactly one method: `api_key`, `basic`, `jwt`, `forward`, `any_of` or `all_of` (combine several with `any_of` or `all_of`)"),
        }
    }
}

/// `api_key: { from: header.x-api-key }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyAuth {
    /// Where the key is read: `header.NAME`, `query.NAME` or `cookie.NAME`; one or a
    /// list (the first present is used). Default `header.x-api-key`.
    pub from: Option<RawSources>,
    /// Only these consumers are admitted (others get 403); default every consumer.
    pub consumers: Option<Vec<String>>,
    /// Forward the key upstream instead of removing it.
    #[serde(default)]
    pub keep_credentials: bool,
}

/// One credential source or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSources {
    One(String),
    Many(Vec<String>),
}

/// `basic: { realm: api }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// The `realm` of the `WWW-Authenticate: Basic` challenge; default the policy's name.
    pub realm: Option<String>,
    pub consumers: Option<Vec<String>>,
    #[serde(default)]
    pub keep_credentials: bool,
    pub cache: Option<RawCredentialCache>,
}

/// A bounded cache of credentials verified recently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredentialCache {
    pub max_entries: Option<usize>,
    /// How long an entry is believed (forward auth: at most; the auth service's
    /// `Cache-Control` decides below that).
    pub ttl: Option<HumanDuration>,
}

/// `forward: { upstream: authsvc, path: /verify, copy_headers: [x-user-id] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    pub upstream: String,
    pub path: String,
    /// Client headers sent to the auth service; default `authorization` and `cookie`.
    pub headers: Option<Vec<String>>,
    /// Headers of the auth service's 2xx answer set on the upstream request.
    #[serde(default)]
    pub copy_headers: Vec<String>,
    /// For the whole sub-request; default the upstream's `timeout`.
    pub timeout: Option<HumanDuration>,
    /// Largest body of a refusal relayed to the client (default 64 KiB).
    pub max_body_size: Option<ByteSize>,
    pub cache: Option<RawCredentialCache>,
    /// Forward `Authorization` upstream instead of removing it.
    #[serde(default)]
    pub keep_credentials: bool,
}

/// The top-level `consumers`, by name.
pub type RawConsumers = BTreeMap<String, RawConsumer>;

// ---------------------------------------------------------------------------------
// Compiled.

/// A consumer, compiled: its API keys' digests and its basic credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub name: String,
    pub api_keys: Vec<KeyDigest>,
    pub basic: Option<BasicCredential>,
}

/// The SHA-256 digest of an API key. Its `Debug` does not print it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

/// A basic-auth user and the hash its password must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredential {
    pub user: String,
    pub password_hash: PasswordHash,
}

/// A password hash, checked at load.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    Argon2(String),
    /// A bcrypt hash (`$2b$12$...`, 60 characters).
    Bcrypt(String),
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Argon2(_) => f.write_str("Argon2(..)"),
            PasswordHash::Bcrypt(_) => f.write_str("Bcrypt(..)"),
        }
    }
}

/// A policy's `auth`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    ApiKey(ApiKeyConfig),
    Basic(BasicConfig),
    Forward(ForwardAuthConfig),
    Jwt(super::jwt::JwtConfig),
    AnyOf(Vec<AuthConfig>),
    AllOf(Vec<AuthConfig>),
}

impl AuthConfig {
    /// The method's name as written (`api_key`, `basic`, ...): the `method` label.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthConfig::ApiKey(_) => "api_key",
            AuthConfig::Basic(_) => "basic",
            AuthConfig::Forward(_) => "forward",
            AuthConfig::Jwt(_) => "jwt",
            AuthConfig::AnyOf(_) => "any_of",
            AuthConfig::AllOf(_) => "all_of",
        }
    }
}

/// Where a credential is read from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Header(HeaderName),
    /// A query parameter, percent-decoded.
    Query(String),
    Cookie(String),
}

/// `api_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// Tried in order; the first present is the key.
    pub from: Vec<CredentialSource>,
    /// Indices into `Config::consumers` of those admitted; `None`: every consumer.
    pub consumers: Option<Vec<usize>>,
    pub keep_credentials: bool,
    /// The `WWW-Authenticate` challenge of a refusal.
    pub challenge: HeaderValue,
}

/// `basic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicConfig {
    /// `Basic realm="...", charset="UTF-8"`.
    pub challenge: HeaderValue,
    pub consumers: Option<Vec<usize>>,
    pub keep_credentials: bool,
    pub cache: CacheConfig,
}

/// A bounded cache of verified credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub ttl: Duration,
}

/// `forward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub path: PathAndQuery,
    pub headers: Vec<HeaderName>,
    pub copy_headers: Vec<HeaderName>,
    pub timeout: Duration,
    pub max_body_size: u64,
    /// `None`: every request asks the auth service.
    pub cache: Option<CacheConfig>,
    pub keep_credentials: bool,
}
