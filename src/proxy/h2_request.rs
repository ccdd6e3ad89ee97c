//! HTTP/2 requests made fit for HTTP/1.1 upstreams (RFC 9113, 8.2 and 8.3). Phase 1
//! (admit) runs [`check`] on requests that arrived over HTTP/2, and phase 4 (send)
//! rewrites with [`forwarded_host`] and [`join_cookies`]; HTTP/1.1 requests skip both.
//!
//! hyper's HTTP/2 server (h2) has already refused connection-specific fields, `TE` other
//! than `trailers`, invalid names and values, and a malformed `:authority`, `:scheme` or
//! `:path`. What it lets through and an HTTP/1.1 upstream could read otherwise than the
//! gateway routed it is refused here with 400:
//!
//! - `:authority` and `Host` naming different hosts or ports (compared after
//!   scheme-based normalisation: case, an empty or default port). The `Host` sent
//!   upstream is the `:authority`; a lone `Host` is used for routing and forwarding.
//! - Userinfo (`user@host`) in either, or more than one `Host` field.
//! - A field value starting or ending with a space or a tab (8.2.1).
//! - A `:path` that does not start with `/`, such as one that is only a query (`?x`).

use bytes::Bytes;
use http::header::{COOKIE, HOST};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Request};

use super::ProxyError;

/// Refuses what an HTTP/1.1 upstream could read differently from the gateway's routing.
pub fn check<B>(request: &Request<B>) -> Result<(), ProxyError> {
    let uri = request.uri();
    if uri
        .path_and_query()
        .is_some_and(|pq| !pq.as_str().starts_with('/'))
    {
        return Err(ProxyError::BadRequest(
            "the request target must be a path starting with `/`",
        ));
    }
    let headers = request.headers();
    if headers.values().any(padded) {
        return Err(ProxyError::BadRequest(
            "a header field value starts or ends with whitespace",
        ));
    }
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest(
            "the request has more than one `Host`",
        ));
    }
    match (uri.authority(), host) {
        (Some(authority), host) => {
            if authority.as_str().contains('@') {
                return Err(USERINFO);
            }
            if !valid_port(authority.as_str().as_bytes()) {
                return Err(PORT);
            }
            let default_port = match uri.scheme_str() {
                Some("http") => Some(&b"80"[..]),
                Some("https") => Some(&b"443"[..]),
                _ => None,
            };
            if host.is_some_and(|host| {
                !same_authority(authority.as_str().as_bytes(), host.as_bytes(), default_port)
            }) {
                return Err(ProxyError::BadRequest(
                    "`:authority` and `Host` name different hosts",
                ));
            }
        }
        (None, Some(host)) => {
            // Rare (clients send `:authority`): the parse may copy.
            if host.as_bytes().contains(&b'@') {
                return Err(USERINFO);
            }
            if !valid_port(host.as_bytes()) {
                return Err(PORT);
            }
            if Authority::try_from(host.as_bytes()).is_err() {
                return Err(ProxyError::BadRequest(
                    "the `Host` is not a valid authority",
                ));
            }
        }
        // RFC 9113 §8.3.1: an `http`/`https` request must name its host one way or the
        // other; without, the upstream would get the endpoint's own address as `Host`.
        (None, None) => {
            return Err(ProxyError::BadRequest(
                "an HTTP/2 request needs `:authority` or `Host`",
            ))
        }
    }
    Ok(())
}

const USERINFO: ProxyError =
    ProxyError::BadRequest("the authority must not carry userinfo (`user@`)");

const PORT: ProxyError = ProxyError::BadRequest("the authority's port is not a number");

/// The `Host` to send upstream: the `:authority`, else the client's `Host`.
pub fn forwarded_host(authority: Option<&Authority>, headers: &HeaderMap) -> Option<HeaderValue> {
    match authority {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(HOST).cloned(),
    }
}

/// Joins several `cookie` fields into one, separated by `; `, as HTTP/1.1 needs (RFC
/// 9113, 8.2.3). One field (the usual case) is left as it is, without copying.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let all = headers.get_all(COOKIE);
    let len = all.iter().map(|v| v.len() + 2).sum::<usize>();
    let mut joined = Vec::with_capacity(len);
    for (index, value) in all.iter().enumerate() {
        // Every field joins, empty ones too: one `; ` between each two.
        if index > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    // Valid values joined by `; ` make a valid value.
    if let Ok(joined) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(COOKIE, joined);
    }
}

/// Starts or ends with SP or HTAB (field values cannot hold CR, LF or NUL at all).
fn padded(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    matches!(bytes.first(), Some(b' ' | b'\t')) || matches!(bytes.last(), Some(b' ' | b'\t'))
}

/// No port, an empty one, or digits: `a.example:b.test` would be routed by `a.example`
/// (hyper's URI parser takes the text after the last colon as the port) yet read
/// otherwise by an upstream.
fn valid_port(authority: &[u8]) -> bool {
    split_port(authority)
        .1
        .is_none_or(|port| port.iter().all(u8::is_ascii_digit))
}

/// Whether two authorities name the same host and port: the host compared without
/// case, an empty or missing port taken as the scheme's default.
fn same_authority<'a>(a: &'a [u8], b: &'a [u8], default_port: Option<&'a [u8]>) -> bool {
    let (a_host, a_port) = split_port(a);
    let (b_host, b_port) = split_port(b);
    let normal = |port: Option<&'a [u8]>| match port {
        None | Some([]) => default_port,
        port => port,
    };
    a_host.eq_ignore_ascii_case(b_host) && normal(a_port) == normal(b_port)
}

/// `host:port` → (`host`, `port`); `[::1]:8080` → (`[::1]`, `8080`); no port: `None`.
fn split_port(authority: &[u8]) -> (&[u8], Option<&[u8]>) {
    if authority.first() == Some(&b'[') {
        let Some(end) = authority.iter().position(|&b| b == b']') else {
            return (authority, None);
        };
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => (authority, None),
        };
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("a request")
    }

    #[test]
    fn authority_and_host_are_compared_after_normalisation() {
        let same = |a: &str, b: &str| same_authority(a.as_bytes(), b.as_bytes(), Some(b"80"));
        assert!(same("a.example", "A.EXAMPLE"));
        assert!(same("a.example", "a.example:80"));
        assert!(same("a.example:", "a.example"));
        assert!(same("[::1]", "[::1]:80"));
        assert!(!same("a.example", "a.example:8080"));
        assert!(!same("a.example", "b.test"));
        assert!(!same("[::1]", "[::1]x"));
        assert!(!same("a.example", ""));
    }

    #[test]
    fn hostile_requests_are_refused() {
        for (uri, headers) in [
            ("http://a.example/x", &[("host", "b.test")][..]),
            ("http://a.example/x", &[("host", "a.example:8080")]),
            (
                "http://a.example/x",
                &[("host", "a.example"), ("host", "a.example")],
            ),
            ("http://u@a.example/x", &[]),
            ("/x", &[("host", "u@b.test")]),
            ("/x", &[("host", "b.test/x")]),
            ("/x", &[("host", "b.test:a.example")]),
            ("http://a.example:b.test/x", &[]),
            ("http://a.example/x", &[("x-note", "v ")]),
            ("http://a.example/x", &[("x-note", "\tv")]),
            ("http://a.example?x", &[]),
            // Neither `:authority` nor `Host` (RFC 9113 §8.3.1).
            ("/x", &[]),
        ] {
            assert!(check(&request(uri, headers)).is_err(), "{uri} {headers:?}");
        }
    }

    #[test]
    fn well_formed_requests_pass() {
        for (uri, headers) in [
            ("http://a.example/x", &[][..]),
            ("http://a.example/x", &[("host", "a.example:80")]),
            ("https://a.example/x?y", &[("host", "a.example:443")]),
            ("/x", &[("host", "b.test:8080")]),
            (
                "http://a.example/x",
                &[("x-note", "two words"), ("x-empty", "")],
            ),
        ] {
            assert!(check(&request(uri, headers)).is_ok(), "{uri} {headers:?}");
        }
    }

    #[test]
    fn cookies_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut headers);
        assert_eq!(headers[COOKIE], "a=1");
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        headers.append(COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut headers);
        let all: Vec<_> = headers.get_all(COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        // Empty fields join too, first ones included (RFC 9113 §8.2.3).
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static(""));
        headers.append(COOKIE, HeaderValue::from_static("u=1"));
        join_cookies(&mut headers);
        assert_eq!(headers[COOKIE], "; u=1");
    }
}
