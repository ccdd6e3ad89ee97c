//! Authentication, the policy step's third stage (after CORS preflights and IP lists,
//! before rate limits): a named policy's `auth` decides who a request is ([`Identity`])
//! or refuses it ([`Failure`], answered through `proxy::respond`).
//!
//! - [`Authenticators`]: every policy's `auth`, compiled once per configuration and
//!   shared by the routes that name the policy (caches and the bound on password
//!   verifications are the policy's, not a route's);
//! - [`Method`]: one method ([`api_key`], [`basic`], [`jwt`], `any_of`, `all_of`) and its async
//!   [`Method::authenticate`];
//! - [`credentials`]: where credentials sit in a request, and how they are removed
//!   before the request goes upstream.
//!
//! # Outcomes
//! - admitted: an [`Identity`] (the consumer's name and/or a subject), kept for the
//!   request so that the rate limits (`key: consumer`) and header transforms
//!   (`{consumer}`) that follow can read it; the credentials the policy read are
//!   removed from the request unless the method says `keep_credentials: true`;
//! - `401` with `WWW-Authenticate` (one challenge per method that wanted credentials):
//!   no credentials, or wrong ones — the client is not told which;
//! - `403`: a valid identity this policy does not admit;
//! - `503`: the method could not decide (a dependency down or too slow): fail closed.
//!
//! `any_of` admits with the first method that admits (in order); when none does, it
//! answers with the refusal that got furthest (forbidden over invalid over missing; a
//! method that could not decide makes it `503`). `all_of` needs every method, in order,
//! and its identity is theirs combined: two methods naming different consumers is a
//! `401`.

pub mod api_key;
pub mod basic;
pub mod credentials;
pub mod jwt;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method as HttpMethod};

use crate::config::auth::{AuthConfig, CredentialSource};
use crate::config::jwt::{JwtConfig, TokenSource};
use crate::config::Config;
use crate::metrics::{AuthResult, Metrics};
use credentials::Strip;

/// Who a request is, as an auth policy found it.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The consumer (`consumers.<name>`) its credentials belong to.
    pub consumer: Option<Arc<str>>,
    /// A subject without a consumer (a forward-auth service's user, a token's `sub`).
    pub subject: Option<Arc<str>>,
    /// Header fields the method sets on the upstream request (forward auth's
    /// `copy_headers`, a token's `claims_to_headers`), after the credentials are removed.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// The verified token of a `jwt` method: its claims, for `jwt.CLAIM` keys.
    pub token: Option<Arc<jwt::Verified>>,
}

impl Identity {
    /// An identity that is `consumer` (or nobody in particular).
    pub fn consumer(consumer: Option<Arc<str>>) -> Self {
        Identity {
            consumer,
            ..Identity::default()
        }
    }

    /// The consumer's name, else the subject: what `key: consumer` and `{consumer}` read.
    pub fn name(&self) -> Option<&str> {
        self.consumer.as_deref().or(self.subject.as_deref())
    }

    /// `other`'s findings added to this identity's (`all_of`, or several auth policies on
    /// one route); `None` when they name different consumers.
    pub(super) fn join(mut self, other: Identity) -> Option<Identity> {
        match (&self.consumer, other.consumer) {
            (Some(mine), Some(theirs)) if *mine != theirs => return None,
            (None, theirs) => self.consumer = theirs,
            _ => {}
        }
        if self.subject.is_none() {
            self.subject = other.subject;
        }
        self.upstream_headers.extend(other.upstream_headers);
        if self.token.is_none() {
            self.token = other.token;
        }
        Some(self)
    }
}

/// Why a method refused a request.
#[derive(Debug, Clone)]
pub enum Failure {
    /// `401`: no credentials (`missing`) or wrong ones; `challenge` goes in
    /// `WWW-Authenticate`.
    Unauthorized {
        challenges: Vec<HeaderValue>,
        missing: bool,
    },
    /// `403`: a valid identity this policy does not admit.
    Forbidden,
    /// `503`: the method could not decide; `reason` is for the log.
    Unavailable { reason: Arc<str> },
}

impl Failure {
    pub fn unauthorized(challenge: HeaderValue, missing: bool) -> Failure {
        Failure::Unauthorized {
            challenges: vec![challenge],
            missing,
        }
    }

    pub fn result(&self) -> AuthResult {
        match self {
            Failure::Unauthorized { missing: true, .. } => AuthResult::Missing,
            Failure::Unauthorized { missing: false, .. } => AuthResult::Invalid,
            Failure::Forbidden => AuthResult::Forbidden,
            Failure::Unavailable { .. } => AuthResult::Unavailable,
        }
    }

    /// How far the request got: `any_of` answers with the furthest refusal.
    fn rank(&self) -> u8 {
        match self {
            Failure::Unauthorized { missing: true, .. } => 0,
            Failure::Unauthorized { missing: false, .. } => 1,
            Failure::Forbidden => 2,
            Failure::Unavailable { .. } => 3,
        }
    }
}

/// What a method reads of the request.
pub struct AuthRequest<'a> {
    /// The client's headers (before any policy changed them).
    pub headers: &'a HeaderMap,
    pub method: &'a HttpMethod,
    /// The path the client asked for, before any rewrite.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// One method of a policy's `auth`, compiled.
#[derive(Debug)]
pub enum Method {
    ApiKey(api_key::ApiKey),
    Basic(basic::Basic),
    Jwt(Arc<jwt::JwtVerifier>),
    AnyOf(Box<[Method]>),
    AllOf(Box<[Method]>),
}

type Authenticating<'a> = Pin<Box<dyn Future<Output = Result<Identity, Failure>> + Send + 'a>>;

impl Method {
    fn new(config: &AuthConfig, shared: &Shared, strip: &mut Strip) -> Method {
        match config {
            AuthConfig::ApiKey(api_key) => {
                let method = api_key::ApiKey::new(api_key, shared.consumers, shared.names.clone());
                if !api_key.keep_credentials {
                    for source in method.sources() {
                        strip.add(source);
                    }
                }
                Method::ApiKey(method)
            }
            AuthConfig::AnyOf(list) => {
                Method::AnyOf(list.iter().map(|m| Method::new(m, shared, strip)).collect())
            }
            AuthConfig::AllOf(list) => {
                Method::AllOf(list.iter().map(|m| Method::new(m, shared, strip)).collect())
            }
            AuthConfig::Basic(config) => {
                if !config.keep_credentials {
                    strip.add(&CredentialSource::Header(http::header::AUTHORIZATION));
                }
                Method::Basic(basic::Basic::new(
                    config,
                    shared.consumers,
                    shared.names.clone(),
                    shared.verifying.clone(),
                    shared.metrics.auth_cache(shared.policy, "basic"),
                ))
            }
            AuthConfig::Jwt(config) => {
                // The claim headers are the gateway's to set: a client's own never pass,
                // whatever `keep_credentials` says.
                for (_, header) in &config.claims_to_headers {
                    strip.add(&CredentialSource::Header(header.clone()));
                }
                if !config.keep_credentials {
                    for source in &config.from {
                        strip.add(&match source {
                            TokenSource::Bearer => {
                                CredentialSource::Header(http::header::AUTHORIZATION)
                            }
                            TokenSource::Header(name) => CredentialSource::Header(name.clone()),
                            TokenSource::Cookie(name) => CredentialSource::Cookie(name.clone()),
                        });
                    }
                }
                match shared.jwt.get(shared.policy, config) {
                    Some(verifier) => Method::Jwt(verifier),
                    // Every `jwt` of the configuration has a verifier (`Snapshot::build`
                    // builds them from the same tree); one missing admits nobody.
                    None => Method::AnyOf(Box::new([])),
                }
            }
            // Forward auth is refused by the configuration until it is built
            // (config::compile::auth).
            AuthConfig::Forward(_) => Method::AnyOf(Box::new([])),
        }
    }

    /// Who `request` is, or why it is refused.
    pub async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, Failure> {
        match self {
            Method::ApiKey(api_key) => api_key.authenticate(request),
            Method::Basic(basic) => basic.authenticate(request).await,
            Method::Jwt(verifier) => jwt_identity(verifier, request).await,
            Method::AnyOf(list) => any_of(list, request).await,
            Method::AllOf(list) => all_of(list, request).await,
        }
    }
}

/// The challenge of a request without a token.
const BEARER: HeaderValue = HeaderValue::from_static("Bearer");
/// The challenge of a request with a token that is not valid (RFC 6750 section 3.1).
const BEARER_INVALID: HeaderValue = HeaderValue::from_static("Bearer error=\"invalid_token\"");

/// A `jwt` method's verdict as an identity (subject `sub`, the claims, the
/// `claims_to_headers` fields) or a refusal.
async fn jwt_identity(
    verifier: &jwt::JwtVerifier,
    request: &AuthRequest<'_>,
) -> Result<Identity, Failure> {
    match verifier.verify(request.headers).await {
        Ok(verified) => Ok(Identity {
            consumer: None,
            subject: verified.subject.as_deref().map(Arc::from),
            upstream_headers: verifier.claim_fields(&verified),
            token: Some(verified),
        }),
        Err(jwt::JwtError::NoToken) => Err(Failure::unauthorized(BEARER, true)),
        Err(jwt::JwtError::Invalid(_)) => Err(Failure::unauthorized(BEARER_INVALID, false)),
        Err(jwt::JwtError::Forbidden) => Err(Failure::Forbidden),
        Err(error @ jwt::JwtError::Unavailable) => Err(Failure::Unavailable {
            reason: error.to_string().into(),
        }),
    }
}

/// `any_of`, boxed: the methods it holds may hold combinations in turn.
fn any_of<'a>(list: &'a [Method], request: &'a AuthRequest<'a>) -> Authenticating<'a> {
    Box::pin(async move {
        let mut furthest: Option<Failure> = None;
        let mut challenges = Vec::new();
        for method in list {
            match method.authenticate(request).await {
                Ok(identity) => return Ok(identity),
                Err(failure) => {
                    if let Failure::Unauthorized { challenges: c, .. } = &failure {
                        challenges.extend(c.iter().cloned());
                    }
                    if furthest.as_ref().is_none_or(|f| failure.rank() > f.rank()) {
                        furthest = Some(failure);
                    }
                }
            }
        }
        Err(match furthest {
            Some(Failure::Unauthorized { missing, .. }) => Failure::Unauthorized {
                challenges,
                missing,
            },
            Some(other) => other,
            None => Failure::Unauthorized {
                challenges,
                missing: true,
            },
        })
    })
}

/// `all_of`, boxed like [`any_of`].
fn all_of<'a>(list: &'a [Method], request: &'a AuthRequest<'a>) -> Authenticating<'a> {
    Box::pin(async move {
        let mut identity = Identity::default();
        for method in list {
            let found = method.authenticate(request).await?;
            identity = identity.join(found).ok_or(Failure::Unauthorized {
                challenges: Vec::new(),
                missing: false,
            })?;
        }
        Ok(identity)
    })
}

/// A policy's `auth`, compiled, shared by every route that names the policy.
#[derive(Debug)]
pub struct Authenticator {
    pub policy: Arc<str>,
    /// The `method` label: `api_key`, `basic`, `forward`, `any_of`, `all_of`.
    pub kind: &'static str,
    pub method: Method,
    /// What an admitted request loses before it goes upstream.
    pub strip: Strip,
    /// The query parameters of `strip`, for the proxy to cut out of the target.
    pub strip_query: Option<Arc<[Box<str>]>>,
}

impl Authenticator {
    /// Removes the credentials the policy read from `headers` (those it keeps stay), then
    /// sets the identity's upstream fields.
    pub fn admitted(&self, headers: &mut HeaderMap, identity: &Identity) {
        self.strip.apply(headers);
        for (name, value) in &identity.upstream_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// What the methods of one configuration share.
struct Shared<'a> {
    consumers: &'a [crate::config::auth::ConsumerConfig],
    names: Arc<[Arc<str>]>,
    /// Password verifications in flight, for every `basic` method of the configuration.
    verifying: Arc<tokio::sync::Semaphore>,
    metrics: &'a Metrics,
    policy: &'a str,
    /// The configuration's JWT verifiers, built before the methods.
    jwt: &'a jwt::JwtKeySets,
}

/// Every policy's `auth`, indexed like `Config::policies` (`None` for a policy
/// without one).
#[derive(Debug, Default)]
pub struct Authenticators {
    by_policy: Vec<Option<Arc<Authenticator>>>,
}

impl Authenticators {
    /// Compiles every policy's `auth` of `config`; its `jwt` methods use the verifiers
    /// of `jwt` (built from [`jwt_methods`]).
    pub fn build(config: &Config, metrics: &Metrics, jwt: &jwt::JwtKeySets) -> Authenticators {
        let verifying = Arc::new(tokio::sync::Semaphore::new(basic::MAX_VERIFYING));
        let mut shared = Shared {
            verifying,
            metrics,
            jwt,
            policy: "",
            consumers: &config.consumers,
            names: config
                .consumers
                .iter()
                .map(|c| Arc::<str>::from(c.name.as_str()))
                .collect(),
        };
        let by_policy = config
            .policies
            .iter()
            .map(|policy| {
                let auth = policy.auth.as_ref()?;
                shared.policy = &policy.name;
                let mut strip = Strip::default();
                let method = Method::new(auth, &shared, &mut strip);
                let strip_query = (!strip.query.is_empty()).then(|| strip.query.clone().into());
                Some(Arc::new(Authenticator {
                    policy: policy.name.as_str().into(),
                    kind: auth.kind(),
                    method,
                    strip,
                    strip_query,
                }))
            })
            .collect();
        Authenticators { by_policy }
    }

    /// The `auth` of the policy at `index` in `Config::policies`.
    pub fn of_policy(&self, index: usize) -> Option<&Arc<Authenticator>> {
        self.by_policy.get(index).and_then(Option::as_ref)
    }
}

/// Every `jwt` method of `config`'s policies, with its policy's name, in a stable order
/// (the policies', then depth first): what [`jwt::JwtKeySets::build`] builds verifiers
/// for.
pub fn jwt_methods(config: &Config) -> Vec<(&str, &JwtConfig)> {
    fn walk<'a>(policy: &'a str, auth: &'a AuthConfig, out: &mut Vec<(&'a str, &'a JwtConfig)>) {
        match auth {
            AuthConfig::Jwt(jwt) => out.push((policy, jwt)),
            AuthConfig::AnyOf(list) | AuthConfig::AllOf(list) => {
                for method in list {
                    walk(policy, method, out);
                }
            }
            AuthConfig::ApiKey(_) | AuthConfig::Basic(_) | AuthConfig::Forward(_) => {}
        }
    }
    let mut out = Vec::new();
    for policy in &config.policies {
        if let Some(auth) = &policy.auth {
            walk(&policy.name, auth, &mut out);
        }
    }
    out
}
