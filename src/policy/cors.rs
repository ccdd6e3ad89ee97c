//! CORS, the first policy of the step: a browser's preflight (`OPTIONS` with `Origin`
//! and `Access-Control-Request-Method`) is answered here with `204` and nothing is sent
//! upstream; any other request with an `Origin` goes on, and its answer, whoever gives
//! it (the upstream, a refusal such as a 403 or 429, a policy), gets the headers that
//! let the page read it when the origin is allowed ([`Cors::finish`]).
//!
//! What is allowed is compiled once per configuration (`config::cors`, where the origin
//! rules are documented); per request this reads two or three request headers and
//! copies the request's `Origin` value (a reference count) into the answer.
//!
//! A request from an origin the policy does not allow is not refused: it goes on, and
//! its answer carries no `Access-Control-Allow-Origin`, so the browser keeps it from
//! the page. A preflight that is not allowed (origin, method or a requested header) is
//! still answered here, `204` without the allowing headers, which the browser reads as
//! a refusal; it never reaches the upstream, whose own CORS answer could otherwise
//! allow more than the policy does. On a route with a `cors` policy the upstream's own
//! `Access-Control-*` answer headers are replaced by the policy's.

use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};

use crate::config::cors::{CorsConfig, Origins};
use crate::http1::fields::trim_ows;
use crate::metrics::CorsCounters;

const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const VARY_PREFLIGHT: HeaderValue =
    HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers");
const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// The answer headers a policy may send, removed from the upstream's answer first.
const ANSWER_FIELDS: [http::HeaderName; 6] = [
    ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_MAX_AGE,
];

/// A named policy's `cors` on one route.
#[derive(Debug, Clone)]
pub struct Cors {
    pub(super) policy: Arc<str>,
    config: Arc<CorsConfig>,
    counters: CorsCounters,
}

/// What the policy made of a request with an `Origin`, noted for its answer.
#[derive(Debug)]
pub enum Seen {
    /// A preflight it allows; the value is `Access-Control-Allow-Origin`'s.
    Preflight(HeaderValue),
    /// A preflight it does not allow: answered without the allowing headers.
    PreflightRefused,
    /// Any other request from an allowed origin; the value as for `Preflight`.
    Allowed(HeaderValue),
    /// Any other request from an origin it does not allow.
    Refused,
}

impl Seen {
    pub fn is_preflight(&self) -> bool {
        matches!(self, Seen::Preflight(_) | Seen::PreflightRefused)
    }
}

/// Whether the request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. The method it asks for, when it is one.
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
        return None;
    }
    let requested = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(requested.as_bytes()).ok()
}

impl Cors {
    pub fn new(policy: &str, config: &CorsConfig, counters: CorsCounters) -> Self {
        Cors {
            policy: policy.into(),
            config: Arc::new(config.clone()),
            counters,
        }
    }

    /// What the policy makes of a request with `headers` (the client's); `None` when it
    /// has no `Origin` (not a cross-origin request).
    pub fn admit(&self, method: &Method, headers: &HeaderMap) -> Option<Seen> {
        let origin = headers.get(ORIGIN)?;
        let allowed = self.config.origins.allow(origin.as_bytes());
        let seen = if let Some(requested) = preflight_method(method, headers) {
            if allowed && self.allows_preflight(&requested, headers) {
                self.counters.preflight.inc();
                Seen::Preflight(self.allow_origin(origin))
            } else {
                self.counters.preflight_refused.inc();
                tracing::debug!(policy = &*self.policy, "CORS preflight not allowed");
                Seen::PreflightRefused
            }
        } else if allowed {
            self.counters.allowed.inc();
            Seen::Allowed(self.allow_origin(origin))
        } else {
            self.counters.origin_refused.inc();
            Seen::Refused
        };
        Some(seen)
    }

    /// The method is listed, and so is every header the preflight asks for.
    fn allows_preflight(&self, method: &Method, headers: &HeaderMap) -> bool {
        if !self.config.methods.contains(method) {
            return false;
        }
        headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(trim_ows)
            .filter(|name| !name.is_empty())
            .all(|name| {
                self.config
                    .headers
                    .iter()
                    .any(|allowed| allowed.as_str().as_bytes().eq_ignore_ascii_case(name))
            })
    }

    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        match self.config.origins {
            Origins::Any => ANY_ORIGIN,
            Origins::List(_) => origin.clone(),
        }
    }

    /// Writes the policy's headers into an answer of the route (`seen`: what
    /// [`Cors::admit`] made of its request): the upstream's `Access-Control-*` fields
    /// replaced, `Vary` extended, and the allowing fields when the request was allowed.
    pub fn finish(&self, seen: Option<&Seen>, headers: &mut HeaderMap) {
        for name in &ANSWER_FIELDS {
            if headers.contains_key(name) {
                headers.remove(name);
            }
        }
        headers.append(VARY, VARY_ORIGIN);
        let config = &*self.config;
        match seen {
            None | Some(Seen::Refused) => {}
            Some(Seen::PreflightRefused) => {
                headers.append(VARY, VARY_PREFLIGHT);
            }
            Some(Seen::Allowed(origin)) => {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                if config.credentials {
                    headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
                }
                if let Some(expose) = &config.expose_headers {
                    headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
                }
            }
            Some(Seen::Preflight(origin)) => {
                headers.append(VARY, VARY_PREFLIGHT);
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                if config.credentials {
                    headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
                }
                headers.insert(ACCESS_CONTROL_ALLOW_METHODS, config.allow_methods.clone());
                if let Some(allow) = &config.allow_headers {
                    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow.clone());
                }
                if let Some(max_age) = &config.max_age_value {
                    headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cors::OriginPattern;
    use crate::metrics::Metrics;

    fn cors(credentials: bool) -> Cors {
        let config = CorsConfig {
            origins: Origins::List(vec![
                OriginPattern::parse("https://app.example.com").expect("origin")
            ]),
            methods: vec![Method::GET, Method::POST],
            headers: vec![http::header::AUTHORIZATION, http::header::CONTENT_TYPE],
            credentials,
            max_age: None,
            allow_methods: HeaderValue::from_static("GET, POST"),
            allow_headers: Some(HeaderValue::from_static("authorization, content-type")),
            expose_headers: None,
            max_age_value: Some(HeaderValue::from_static("600")),
        };
        Cors::new("p", &config, Metrics::new().cors_requests("r", "p"))
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn a_preflight_is_allowed_only_for_listed_methods_and_headers() {
        let policy = cors(true);
        let ask = |method: &'static str, headers: &'static str| {
            policy.admit(
                &Method::OPTIONS,
                &request(&[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", headers),
                ]),
            )
        };
        assert!(matches!(
            ask("POST", "Content-Type,authorization"),
            Some(Seen::Preflight(_))
        ));
        assert!(matches!(ask("POST", ""), Some(Seen::Preflight(_))));
        assert!(matches!(ask("DELETE", ""), Some(Seen::PreflightRefused)));
        assert!(matches!(
            ask("GET", "x-secret"),
            Some(Seen::PreflightRefused)
        ));
        assert!(
            matches!(ask("get", ""), Some(Seen::PreflightRefused)),
            "methods are case-sensitive"
        );
    }

    #[test]
    fn the_answer_gets_the_allowing_headers_and_loses_the_upstreams() {
        let policy = cors(true);
        let seen = policy.admit(
            &Method::GET,
            &request(&[("origin", "https://app.example.com")]),
        );
        let mut answer = request(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "PUT"),
            ("vary", "Accept"),
        ]);
        policy.finish(seen.as_ref(), &mut answer);
        assert_eq!(
            answer["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(answer["access-control-allow-credentials"], "true");
        assert!(!answer.contains_key("access-control-allow-methods"));
        let vary: Vec<_> = answer.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept", "Origin"]);

        let seen = policy.admit(
            &Method::GET,
            &request(&[("origin", "https://evil.example")]),
        );
        let mut answer = HeaderMap::new();
        policy.finish(seen.as_ref(), &mut answer);
        assert!(!answer.contains_key("access-control-allow-origin"));
        assert_eq!(answer[VARY], "Origin");
    }

    #[test]
    fn a_preflight_is_recognised_by_its_three_parts() {
        let asks = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(preflight_method(&Method::OPTIONS, &asks), Some(Method::PUT));
        assert_eq!(preflight_method(&Method::GET, &asks), None);
        let no_origin = request(&[("access-control-request-method", "PUT")]);
        assert_eq!(preflight_method(&Method::OPTIONS, &no_origin), None);
        assert_eq!(preflight_method(&Method::OPTIONS, &HeaderMap::new()), None);
    }
}
