//! The policy step: what runs between *route* and *limit*, per route and in order.
//! Each route's [`Policies`] are compiled once per configuration (in the snapshot) and
//! applied to every request it routes, before a permit of its upstream is taken, so a
//! request a policy refuses never holds upstream capacity.
//!
//! A policy either refuses the request (an admission check: its [`ProxyError`] becomes
//! the answer, through [`super::respond`], and is counted in
//! `portcullis_policy_rejections_total`) or changes the request's headers on their way
//! upstream. A route runs the admission checks of the named policies it lists
//! (`policies: [..]`: IP access lists), in its order, then the gateway's own header
//! rules. Rate limits, authentication, CORS and configured header transforms join the
//! same list.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use prometheus::IntCounter;

use super::client_ip::canonical;
use super::headers::set_forwarded;
use super::ProxyError;
use crate::config::{IpListConfig, PolicyConfig, RouteConfig};
use crate::metrics::Metrics;
use crate::request_id::X_REQUEST_ID;

/// One policy of a route.
#[derive(Debug, Clone)]
pub enum Policy {
    /// The client's address against a named policy's `ip` allow and deny ranges (403).
    IpList {
        policy: Arc<str>,
        list: Arc<IpListConfig>,
        rejected: IntCounter,
    },
    /// `X-Forwarded-For` (the client's address appended), `X-Forwarded-Proto` (the
    /// listener's scheme) and `X-Forwarded-Host` (the host the client asked for).
    Forwarded,
    /// `X-Request-Id`: the client's own when usable, else a new one.
    RequestId,
}

/// What the policies know of the request besides its headers.
pub struct Facts<'a> {
    /// The client's address (see [`super::client_ip`]).
    pub client_ip: IpAddr,
    /// The client's IP address, as `X-Forwarded-For` carries it.
    pub peer_ip: &'a HeaderValue,
    /// `http` or `https`, as the listener serves.
    pub forwarded_proto: &'a HeaderValue,
    /// The host the client asked for (HTTP/2 `:authority`, else `Host`).
    pub client_host: Option<HeaderValue>,
    pub request_id: &'a HeaderValue,
}

/// A route's policies, in the order they run.
#[derive(Debug, Clone)]
pub struct Policies {
    list: Box<[Policy]>,
}

impl Policies {
    /// `route`'s policies: the checks of the named `policies` it lists, in its order,
    /// then the forwarding headers and the request id. Built once per configuration.
    pub fn for_route(route: &RouteConfig, policies: &[PolicyConfig], metrics: &Metrics) -> Self {
        let mut list = Vec::with_capacity(route.policies.len() + 2);
        for policy in route.policies.iter().filter_map(|&i| policies.get(i)) {
            if let Some(ip) = &policy.ip {
                list.push(Policy::IpList {
                    policy: policy.name.as_str().into(),
                    list: Arc::new(ip.clone()),
                    rejected: metrics.policy_rejections(&route.name, &policy.name, "ip_denied"),
                });
            }
        }
        list.push(Policy::Forwarded);
        list.push(Policy::RequestId);
        Policies {
            list: list.into_boxed_slice(),
        }
    }

    /// Only the gateway's own header rules (for tests and benchmarks).
    pub fn header_rules() -> Self {
        Policies {
            list: Box::new([Policy::Forwarded, Policy::RequestId]),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Policy> + '_ {
        self.list.iter()
    }

    /// Runs each policy in order on `headers` (the request's, on their way upstream);
    /// the first refusal ends the step.
    pub fn apply(&self, headers: &mut HeaderMap, facts: Facts<'_>) -> Result<(), ProxyError> {
        let mut client_host = facts.client_host;
        for policy in self.iter() {
            match policy {
                Policy::IpList {
                    policy,
                    list,
                    rejected,
                } => {
                    if !permits(list, facts.client_ip) {
                        rejected.inc();
                        tracing::debug!(
                            policy = &**policy,
                            client_ip = %facts.client_ip,
                            "refused by the policy's ip list"
                        );
                        return Err(ProxyError::IpDenied {
                            policy: policy.to_string(),
                        });
                    }
                }
                Policy::Forwarded => {
                    set_forwarded(
                        headers,
                        facts.peer_ip,
                        facts.forwarded_proto,
                        client_host.take(),
                    );
                }
                Policy::RequestId => {
                    headers.insert(X_REQUEST_ID, facts.request_id.clone());
                }
            }
        }
        Ok(())
    }
}

/// Whether `list` lets `address` in: not denied, and allowed when there is an allow list.
fn permits(list: &IpListConfig, address: IpAddr) -> bool {
    let address = canonical(address);
    if list.deny.iter().any(|range| range.contains(&address)) {
        return false;
    }
    list.allow.is_empty() || list.allow.iter().any(|range| range.contains(&address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], deny: &[&str]) -> IpListConfig {
        let ranges = |r: &[&str]| r.iter().map(|t| t.parse().expect("range")).collect();
        IpListConfig {
            allow: ranges(allow),
            deny: ranges(deny),
        }
    }

    #[test]
    fn deny_wins_and_an_allow_list_shuts_out_the_rest() {
        let ip = |t: &str| t.parse::<IpAddr>().expect("address");
        let deny_only = list(&[], &["203.0.113.0/24"]);
        assert!(!permits(&deny_only, ip("203.0.113.9")));
        assert!(permits(&deny_only, ip("198.51.100.1")));
        let both = list(&["10.0.0.0/8", "2001:db8::/32"], &["10.0.9.0/24"]);
        assert!(permits(&both, ip("10.1.2.3")));
        assert!(!permits(&both, ip("10.0.9.1")));
        assert!(!permits(&both, ip("192.0.2.1")));
        assert!(permits(&both, ip("2001:db8::1")));
        assert!(
            permits(&both, ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
    }

    #[test]
    fn forwarding_headers_and_the_request_id_are_set_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("spoofed"));
        let facts = Facts {
            client_ip: IpAddr::from([192, 0, 2, 7]),
            peer_ip: &HeaderValue::from_static("192.0.2.7"),
            forwarded_proto: &HeaderValue::from_static("https"),
            client_host: Some(HeaderValue::from_static("api.example.com")),
            request_id: &HeaderValue::from_static("abc"),
        };
        Policies::header_rules()
            .apply(&mut headers, facts)
            .expect("no policy refuses");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "api.example.com");
        assert_eq!(headers[X_REQUEST_ID], "abc");
    }
}
