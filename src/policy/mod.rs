//! The policy step: what runs between *route* and *limit*, per route and in order.
//! Each route's [`Policies`] are compiled once per configuration (into the proxy's
//! snapshot) and run on every request it routes, before a permit of its upstream is
//! taken, so a request a policy refuses never holds upstream capacity.
//!
//! [`Policies::admit`] runs the route's policies on the request's headers (on their way
//! upstream). Each policy does one of three things:
//! - lets the request go on, perhaps changing its headers (forwarding headers, header
//!   transforms) or noting headers for the answer in the [`Admission`] (CORS, rate-limit
//!   state);
//! - refuses it: a [`PolicyError`], which the proxy turns into the answer in its one
//!   error mapping (`proxy::respond`), counted in `portcullis_policy_rejections_total`;
//! - answers it itself ([`Verdict::Answer`], e.g. a CORS preflight): nothing is sent
//!   upstream.
//!
//! Whatever then answers the request (the upstream's response, a refusal, the
//! policy's own answer) passes through [`Policies::finish`], which adds the headers the
//! admission noted.
//!
//! # Order
//! The order is fixed by kind, not by how a file lists them, so that nobody has to
//! memorise ordering rules: first the route's CORS policy ([`cors`]: a preflight is
//! answered before anything else runs, so an IP list or a rate limit never refuses
//! one), then every IP access list of the policies a route names (in the order the
//! route names them), then their `auth` (same order), then their rate limits (all of them, as one step:
//! [`rate_limit::RouteLimits`]; a request an IP list refuses never counts against a
//! limit), then the gateway's own header rules (`X-Forwarded-*`, `X-Request-Id`), then
//! the header transforms ([`transform`], in the order the route names their policies).
//! The `auth` of each policy the route names ([`auth`]) runs between the IP lists and the
//! rate limits, so that limits can be keyed by the consumer it finds (and a request an IP
//! list refuses never costs a password check).
//!
//! [`Policies::finish`] adds, in order: the headers the admission noted, the CORS
//! policy's, then the header transforms' answer edits.

pub mod auth;
pub mod client_ip;
pub mod cors;
mod error;
pub mod forwarded;
mod ip_list;
pub mod rate_limit;
pub mod transform;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use prometheus::IntCounter;

use crate::metrics::{AuthCounters, AuthResult};

pub use error::PolicyError;

use crate::config::{IpListConfig, PolicyConfig, RouteConfig};
use crate::metrics::Metrics;
use crate::request_id::X_REQUEST_ID;
use rate_limit::key::KeySource;
use rate_limit::{RateLimits, RouteLimits};

/// One policy of a route, compiled.
#[derive(Debug, Clone)]
pub enum Policy {
    /// The client's address against a named policy's `ip` allow and deny ranges (403).
    IpList {
        policy: Arc<str>,
        list: Arc<IpListConfig>,
        rejected: IntCounter,
    },
    /// A named policy's `auth` (401, 403 or 503 when it refuses).
    Auth {
        auth: Arc<auth::Authenticator>,
        counters: AuthCounters,
    },
    /// The rate limits of every policy the route names (429 when one is exhausted).
    RateLimit(Box<RouteLimits>),
    /// `X-Forwarded-For` (the client's address appended), `X-Forwarded-Proto` (the
    /// listener's scheme) and `X-Forwarded-Host` (the host the client asked for).
    Forwarded,
    /// `X-Request-Id`: the client's own when usable, else a new one.
    RequestId,
    /// A named policy's `cors`: preflights answered, answers made readable.
    Cors(cors::Cors),
    /// A named policy's `headers`: fields removed, set and added.
    HeaderTransform(transform::Transform),
}

/// What the policies know of the request besides its headers.
pub struct Facts<'a> {
    /// The client's address (see [`client_ip`]).
    pub client_ip: IpAddr,
    /// The connection's peer address, as `X-Forwarded-For` carries it.
    pub peer_ip: &'a HeaderValue,
    /// `http` or `https`, as the listener serves.
    pub forwarded_proto: &'a HeaderValue,
    /// The host the client asked for (HTTP/2 `:authority`, else `Host`).
    pub client_host: Option<HeaderValue>,
    pub request_id: &'a HeaderValue,
    pub method: &'a Method,
    /// The path the client asked for, before any rewrite.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The route's path parameters; empty unless [`Policies::needs_params`].
    pub params: &'a [(String, String)],
    /// The client's headers when they are not the ones being admitted (an aggregate
    /// route admits the headers its calls start from).
    pub client_headers: Option<&'a HeaderMap>,
}

/// What a policy decided when it did not refuse the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on to the upstream (or the aggregate calls).
    Forward,
    /// The policy answers the request itself with this status and no body; the headers
    /// it noted in the [`Admission`] are added by [`Policies::finish`].
    Answer(StatusCode),
}

/// What the policy step noted for the answer, whatever answers the request. Empty (and
/// allocation-free) unless a policy notes something.
#[derive(Debug, Default)]
pub struct Admission {
    response_headers: Vec<ResponseHeader>,
    /// What the route's CORS policy made of the request.
    cors: Option<cors::Seen>,
    /// Who the route's auth policies found the request to be.
    identity: Option<auth::Identity>,
    /// Query parameters an auth policy read, to be cut out of the upstream target.
    strip_query: Option<Arc<[Box<str>]>>,
}

#[derive(Debug)]
enum ResponseHeader {
    /// Replaces any field of that name.
    Set(HeaderName, HeaderValue),
    /// Adds a field, keeping those of that name (`Vary`).
    Append(HeaderName, HeaderValue),
}

impl Admission {
    /// Who the route's auth policies found the request to be (for the log).
    pub fn identity(&self) -> Option<&auth::Identity> {
        self.identity.as_ref()
    }

    /// Query parameters an auth policy read (credentials), which the upstream target
    /// must not carry: see [`auth::credentials::strip_query`].
    pub fn strip_query(&self) -> Option<&[Box<str>]> {
        self.strip_query.as_deref()
    }

    /// The answer gets `name: value`, replacing a field of that name it may have.
    pub fn set_response_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.response_headers.push(ResponseHeader::Set(name, value));
    }

    /// The answer gets `name: value` besides the fields of that name it may have.
    pub fn append_response_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.response_headers
            .push(ResponseHeader::Append(name, value));
    }
}

/// A route's policies, in the order they run.
#[derive(Debug, Clone)]
pub struct Policies {
    list: Box<[Policy]>,
    /// A policy reads the route's path parameters.
    needs_params: bool,
    /// A policy changes every answer (CORS, header transforms).
    finishes: bool,
}

impl Policies {
    /// `route`'s policies (see the module's "Order"), built once per configuration;
    /// their rate limits are those of `rate_limits`, which every route shares.
    pub fn for_route(
        route: &RouteConfig,
        policies: &[PolicyConfig],
        rate_limits: &RateLimits,
        authenticators: &auth::Authenticators,
        metrics: &Metrics,
    ) -> Self {
        let named: Vec<&PolicyConfig> = route
            .policies
            .iter()
            .filter_map(|&i| policies.get(i))
            .collect();
        let mut list = Vec::with_capacity(named.len() + 3);
        if let Some(policy) = named.iter().find(|p| p.cors.is_some()) {
            if let Some(config) = &policy.cors {
                let counters = metrics.cors_requests(&route.name, &policy.name);
                list.push(Policy::Cors(cors::Cors::new(
                    &policy.name,
                    config,
                    counters,
                )));
            }
        }
        for policy in &named {
            if let Some(ip) = &policy.ip {
                list.push(Policy::IpList {
                    policy: policy.name.as_str().into(),
                    list: Arc::new(ip.clone()),
                    rejected: metrics.policy_rejections(&route.name, &policy.name, "ip_denied"),
                });
            }
        }
        for &index in &route.policies {
            if let Some(auth) = authenticators.of_policy(index) {
                let counters = metrics.auth_decisions(&route.name, &auth.policy, auth.kind);
                list.push(Policy::Auth {
                    auth: auth.clone(),
                    counters,
                });
            }
        }
        let limits = route
            .policies
            .iter()
            .flat_map(|&i| rate_limits.of_policy(i));
        let limits = RouteLimits::for_route(&route.name, limits, metrics);
        let limits_need_params = limits.as_ref().is_some_and(RouteLimits::needs_params);
        if let Some(limits) = limits {
            list.push(Policy::RateLimit(Box::new(limits)));
        }
        list.push(Policy::Forwarded);
        list.push(Policy::RequestId);
        for policy in &named {
            if let Some(headers) = &policy.headers {
                let skipped = metrics.header_transform_skipped(&route.name, &policy.name);
                list.push(Policy::HeaderTransform(transform::Transform::new(
                    &policy.name,
                    &route.name,
                    headers,
                    skipped,
                )));
            }
        }
        let needs_params = limits_need_params
            || list
                .iter()
                .any(|p| matches!(p, Policy::HeaderTransform(t) if t.uses_params()));
        let finishes = list
            .iter()
            .any(|p| matches!(p, Policy::Cors(_) | Policy::HeaderTransform(_)));
        Policies {
            list: list.into_boxed_slice(),
            needs_params,
            finishes,
        }
    }

    /// Only the gateway's own header rules (for tests and benchmarks).
    pub fn header_rules() -> Self {
        Policies {
            list: Box::new([Policy::Forwarded, Policy::RequestId]),
            needs_params: false,
            finishes: false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Policy> + '_ {
        self.list.iter()
    }

    /// Whether a policy reads the route's path parameters (so the proxy keeps them).
    pub fn needs_params(&self) -> bool {
        self.needs_params
    }

    /// Whether the route has a CORS policy, which answers its preflights (the proxy
    /// routes a preflight by the method it asks for, when that route has one).
    pub fn answers_preflights(&self) -> bool {
        self.list.iter().any(|p| matches!(p, Policy::Cors(_)))
    }

    /// Runs each policy in order on `headers` (the request's, on their way upstream);
    /// the first refusal or answer ends the step.
    pub async fn admit(
        &self,
        headers: &mut HeaderMap,
        facts: Facts<'_>,
        admission: &mut Admission,
    ) -> Result<Verdict, PolicyError> {
        let mut client_host = facts.client_host;
        let mut identity: Option<auth::Identity> = None;
        for policy in self.iter() {
            match policy {
                Policy::Auth { auth, counters } => {
                    let request = auth::AuthRequest {
                        headers: facts.client_headers.unwrap_or(headers),
                        method: facts.method,
                        path: facts.path,
                        query: facts.query,
                    };
                    match auth.method.authenticate(&request).await {
                        Ok(found) => {
                            let joined = match identity.take() {
                                None => Some(found),
                                Some(before) => before.join(found),
                            };
                            let Some(joined) = joined else {
                                counters.inc(AuthResult::Invalid);
                                return Err(PolicyError::Unauthorized {
                                    policy: auth.policy.clone(),
                                    challenges: Vec::new(),
                                });
                            };
                            counters.inc(AuthResult::Allowed);
                            auth.admitted(headers, &joined);
                            if let Some(names) = &auth.strip_query {
                                admission.strip_query = Some(match admission.strip_query.take() {
                                    None => names.clone(),
                                    Some(before) => {
                                        before.iter().chain(names.iter()).cloned().collect()
                                    }
                                });
                            }
                            identity = Some(joined);
                        }
                        Err(failure) => {
                            counters.inc(failure.result());
                            tracing::debug!(
                                policy = &*auth.policy,
                                result = failure.result().label(),
                                "refused by the policy's auth"
                            );
                            return Err(PolicyError::from_auth(&auth.policy, failure));
                        }
                    }
                }
                Policy::IpList {
                    policy,
                    list,
                    rejected,
                } => {
                    if !ip_list::permits(list, facts.client_ip) {
                        rejected.inc();
                        tracing::debug!(
                            policy = &**policy,
                            client_ip = %facts.client_ip,
                            "refused by the policy's ip list"
                        );
                        return Err(PolicyError::IpDenied {
                            policy: policy.clone(),
                        });
                    }
                }
                Policy::RateLimit(limits) => {
                    let source = KeySource {
                        client_ip: facts.client_ip,
                        headers,
                        query: facts.query,
                        params: facts.params,
                        consumer: identity.as_ref().and_then(auth::Identity::name),
                        claims: identity
                            .as_ref()
                            .and_then(|i| i.token.as_deref())
                            .map(|token| &token.claims),
                    };
                    limits.admit(source, admission).await?;
                }
                Policy::Forwarded => {
                    forwarded::set_forwarded(
                        headers,
                        facts.peer_ip,
                        facts.forwarded_proto,
                        client_host.take(),
                    );
                }
                Policy::RequestId => {
                    headers.insert(X_REQUEST_ID, facts.request_id.clone());
                }
                Policy::Cors(cors) => {
                    let client_headers = facts.client_headers.unwrap_or(headers);
                    let seen = cors.admit(facts.method, client_headers);
                    let preflight = seen.as_ref().is_some_and(cors::Seen::is_preflight);
                    admission.cors = seen;
                    if preflight {
                        return Ok(Verdict::Answer(StatusCode::NO_CONTENT));
                    }
                }
                Policy::HeaderTransform(transform) => {
                    let inputs = transform::Inputs {
                        client_ip: facts.client_ip,
                        request_id: facts.request_id,
                        params: facts.params,
                        consumer: identity.as_ref().and_then(auth::Identity::name),
                        claims: identity
                            .as_ref()
                            .and_then(|i| i.token.as_deref())
                            .map(|token| &token.claims),
                    };
                    transform.apply_to_request(headers, &inputs);
                }
            }
        }
        admission.identity = identity;
        Ok(Verdict::Forward)
    }

    /// Adds to `headers` (the answer's, whoever gave it) what the admission noted,
    /// then the CORS policy's headers and the header transforms' answer edits.
    pub fn finish(&self, admission: Admission, headers: &mut HeaderMap) {
        for header in admission.response_headers {
            match header {
                ResponseHeader::Set(name, value) => {
                    headers.insert(name, value);
                }
                ResponseHeader::Append(name, value) => {
                    headers.append(name, value);
                }
            }
        }
        if !self.finishes {
            return;
        }
        for policy in self.iter() {
            match policy {
                Policy::Cors(cors) => cors.finish(admission.cors.as_ref(), headers),
                Policy::HeaderTransform(transform) => transform.finish(headers),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        peer_ip: &'a HeaderValue,
        proto: &'a HeaderValue,
        request_id: &'a HeaderValue,
    ) -> Facts<'a> {
        Facts {
            client_ip: IpAddr::from([192, 0, 2, 7]),
            peer_ip,
            forwarded_proto: proto,
            client_host: Some(HeaderValue::from_static("api.example.com")),
            request_id,
            method: &Method::GET,
            path: "/",
            query: None,
            params: &[],
            client_headers: None,
        }
    }

    #[tokio::test]
    async fn forwarding_headers_and_the_request_id_are_set_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("spoofed"));
        let (peer, proto, id) = (
            HeaderValue::from_static("192.0.2.7"),
            HeaderValue::from_static("https"),
            HeaderValue::from_static("abc"),
        );
        let mut admission = Admission::default();
        let verdict = Policies::header_rules()
            .admit(&mut headers, facts(&peer, &proto, &id), &mut admission)
            .await
            .expect("no policy refuses");
        assert_eq!(verdict, Verdict::Forward);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "api.example.com");
        assert_eq!(headers[X_REQUEST_ID], "abc");
    }

    #[test]
    fn the_answer_gets_what_the_admission_noted() {
        let mut admission = Admission::default();
        admission.set_response_header(http::header::RETRY_AFTER, HeaderValue::from_static("3"));
        admission.append_response_header(http::header::VARY, HeaderValue::from_static("Origin"));
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert(http::header::VARY, HeaderValue::from_static("Accept"));
        Policies::header_rules().finish(admission, &mut headers);
        assert_eq!(headers[http::header::RETRY_AFTER], "3");
        let vary: Vec<_> = headers.get_all(http::header::VARY).iter().collect();
        assert_eq!(vary, ["Accept", "Origin"]);
    }
}
