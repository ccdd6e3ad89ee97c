//! The policy step: what runs between *route* and *limit*, per route and in order.
//! Each route's [`Policies`] are compiled once per configuration (in the snapshot) and
//! applied to every request it routes, before a permit of its upstream is taken, so a
//! request a policy refuses never holds upstream capacity.
//!
//! A policy either refuses the request (an admission check: its [`ProxyError`] becomes
//! the answer, through [`super::respond`]) or changes the request's headers on their
//! way upstream. Today's policies are the gateway's own header rules; admission checks
//! (rate limits, authentication, IP lists, CORS) and configured header transforms join
//! the same list.

use http::{HeaderMap, HeaderValue};

use super::headers::set_forwarded;
use super::ProxyError;
use crate::request_id::X_REQUEST_ID;

/// One policy of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `X-Forwarded-For` (the client's address appended), `X-Forwarded-Proto` (the
    /// listener's scheme) and `X-Forwarded-Host` (the host the client asked for).
    Forwarded,
    /// `X-Request-Id`: the client's own when usable, else a new one.
    RequestId,
}

/// What the policies know of the request besides its headers.
pub struct Facts<'a> {
    /// The client's IP address, as `X-Forwarded-For` carries it.
    pub peer_ip: &'a HeaderValue,
    /// `http` or `https`, as the listener serves.
    pub forwarded_proto: &'a HeaderValue,
    /// The host the client asked for (HTTP/2 `:authority`, else `Host`).
    pub client_host: Option<HeaderValue>,
    pub request_id: &'a HeaderValue,
}

/// A route's policies, in the order they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    list: Box<[Policy]>,
}

impl Policies {
    /// The policies every route runs today: the forwarding headers, then the request id.
    pub fn for_route() -> Policies {
        Policies {
            list: Box::new([Policy::Forwarded, Policy::RequestId]),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Policy> + '_ {
        self.list.iter().copied()
    }

    /// Runs each policy in order on `headers` (the request's, on their way upstream);
    /// the first refusal ends the step.
    pub fn apply(&self, headers: &mut HeaderMap, facts: Facts<'_>) -> Result<(), ProxyError> {
        let mut client_host = facts.client_host;
        for policy in self.iter() {
            match policy {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_and_the_request_id_are_set_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("spoofed"));
        let facts = Facts {
            peer_ip: &HeaderValue::from_static("192.0.2.7"),
            forwarded_proto: &HeaderValue::from_static("https"),
            client_host: Some(HeaderValue::from_static("api.example.com")),
            request_id: &HeaderValue::from_static("abc"),
        };
        Policies::for_route()
            .apply(&mut headers, facts)
            .expect("no policy refuses");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "api.example.com");
        assert_eq!(headers[X_REQUEST_ID], "abc");
    }
}
