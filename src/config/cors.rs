//! A policy's `cors`, compiled: which origins may read the route's answers from a
//! browser, and the preflight answer's lists, joined into header values once per
//! configuration. The origin patterns and their matching live here (a leaf, tested on
//! their own); what happens per request is `policy::cors`.
//!
//! # Origins
//! An origin is written `scheme://host[:port]`, with no path, and compared the way
//! browsers serialise the `Origin` header: the scheme and the host case-insensitively,
//! the port exactly (a scheme's default port, `:443` for `https`, `:80` for `http`,
//! counts as no port, on either side).
//!
//! `https://*.example.com` matches any host that ends in `.example.com` with one or
//! more labels before it (`a.example.com`, `a.b.example.com`), with the same scheme and
//! port; never `example.com` itself, nor `evilexample.com` or `evil-example.com`, nor
//! `example.com.evil.com`. The `*.` may only be the first label, and at least two
//! labels must follow it (`https://*.com` is refused).
//!
//! `*` alone allows every origin: the answer carries `Access-Control-Allow-Origin: *`,
//! which browsers refuse for credentialed requests, so `*` is never combined with
//! `credentials: true`. `null` (what sandboxed documents, `file:` pages and some
//! redirects send) cannot be listed: allowing it would allow every such page.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

/// The origins a `cors` policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `*`: every origin; answered with `Access-Control-Allow-Origin: *`.
    Any,
    /// Exact origins and `*.` wildcards; the request's `Origin` is echoed back.
    List(Vec<OriginPattern>),
}

impl Origins {
    /// Whether `origin` (an `Origin` header's bytes) is allowed.
    pub fn allow(&self, origin: &[u8]) -> bool {
        match self {
            Origins::Any => true,
            Origins::List(patterns) => {
                let Some(origin) = ParsedOrigin::parse(origin) else {
                    return false;
                };
                patterns.iter().any(|pattern| pattern.matches(&origin))
            }
        }
    }
}

/// One allowed origin: exact, or every subdomain of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// Lower case.
    scheme: String,
    /// Lower case; for a wildcard, the part after `*` (starting with `.`).
    host: String,
    wildcard: bool,
    /// `None`: the scheme's default port (or none).
    port: Option<u16>,
}

impl OriginPattern {
    /// Parses `https://app.example.com`, `http://localhost:3000` or
    /// `https://*.example.com`; the message says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("null") {
            return Err(
                "`null` cannot be allowed: sandboxed documents, `file:` pages and \
                 redirected requests all send it, so allowing it allows every such page"
                    .into(),
            );
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "{text:?} is not an origin; write `scheme://host[:port]`, e.g. \
                 https://app.example.com, or `*`"
            ));
        };
        if !is_scheme(scheme) {
            return Err(format!("{text:?} has an invalid scheme {scheme:?}"));
        }
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "{text:?} has a path; an origin is only `scheme://host[:port]` (no trailing `/`)"
            ));
        }
        if rest.contains('@') {
            return Err(format!("{text:?} has user information; an origin has none"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_port(rest)
            .ok_or_else(|| format!("{text:?} has an invalid port; write e.g. :8443"))?;
        let port = port.filter(|&p| Some(p) != default_port(&scheme));
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, host),
        };
        if host.contains('*') {
            return Err(format!(
                "{text:?}: `*` may only stand for whole labels at the start of the host, \
                 as in https://*.example.com"
            ));
        }
        if !is_host(host) {
            return Err(format!("{text:?} has an invalid host {host:?}"));
        }
        if wildcard && !host.contains('.') {
            return Err(format!(
                "{text:?} would allow every site under a top-level domain; name the site, \
                 as in https://*.example.com"
            ));
        }
        let host = host.to_ascii_lowercase();
        Ok(OriginPattern {
            scheme,
            host: if wildcard { format!(".{host}") } else { host },
            wildcard,
            port,
        })
    }

    fn matches(&self, origin: &ParsedOrigin<'_>) -> bool {
        if !origin.scheme.eq_ignore_ascii_case(&self.scheme) || origin.port != self.port {
            return false;
        }
        if !self.wildcard {
            return origin.host.eq_ignore_ascii_case(&self.host);
        }
        // `.example.com` must end the host, after at least one whole label.
        let (host, suffix) = (origin.host.as_bytes(), self.host.as_bytes());
        host.len() > suffix.len()
            && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            && !host[..host.len() - suffix.len()].ends_with(b".")
    }
}

/// An `Origin` header taken apart (nothing copied); `None` when it is not
/// `scheme://host[:port]` (e.g. `null`).
struct ParsedOrigin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> ParsedOrigin<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (scheme, rest) = text.split_once("://")?;
        if !is_scheme(scheme) {
            return None;
        }
        let (host, port) = split_port(rest)?;
        if !is_host(host) {
            return None;
        }
        let port = port.filter(|&p| Some(p) != default_port_ignoring_case(scheme));
        Some(ParsedOrigin { scheme, host, port })
    }
}

/// `host[:port]` → host and port; `None` when the port is not a number. An IPv6
/// literal keeps its brackets.
fn split_port(text: &str) -> Option<(&str, Option<u16>)> {
    let colon = if text.starts_with('[') {
        let end = text.find(']')?;
        match &text[end + 1..] {
            "" => return Some((text, None)),
            rest if rest.starts_with(':') => end + 1,
            _ => return None,
        }
    } else {
        match text.rfind(':') {
            Some(colon) => colon,
            None => return Some((text, None)),
        }
    };
    let port = &text[colon + 1..];
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((&text[..colon], Some(port.parse().ok()?)))
}

/// RFC 3986 `scheme`: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// A DNS name of non-empty labels (letters, digits, `-`, `_`), or a bracketed IPv6
/// literal.
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" | "wss" => Some(443),
        "http" | "ws" => Some(80),
        _ => None,
    }
}

fn default_port_ignoring_case(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        default_port(scheme)
    }
}

/// A policy's `cors`, with every answer header it sends built once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    pub origins: Origins,
    /// Methods a preflight may ask for (`Access-Control-Request-Method`).
    pub methods: Vec<Method>,
    /// Request headers a preflight may ask for (`Access-Control-Request-Headers`).
    pub headers: Vec<HeaderName>,
    pub credentials: bool,
    pub max_age: Option<Duration>,
    /// `Access-Control-Allow-Methods`: `methods`, joined.
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers`: `headers`, joined; `None` when there are none.
    pub allow_headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`: `expose_headers`, joined; `None` when there are
    /// none.
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age`, whole seconds.
    pub max_age_value: Option<HeaderValue>,
}

/// `items` joined with `, ` as one header value.
pub fn join_value<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        return None;
    }
    HeaderValue::try_from(joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[&str], origin: &str) -> bool {
        let list = patterns
            .iter()
            .map(|p| OriginPattern::parse(p).expect("pattern"))
            .collect();
        Origins::List(list).allow(origin.as_bytes())
    }

    #[test]
    fn exact_origins_compare_scheme_and_host_without_case_and_the_port_exactly() {
        let app = ["https://app.example.com"];
        assert!(allows(&app, "https://app.example.com"));
        assert!(allows(&app, "https://APP.Example.COM"));
        assert!(allows(&app, "HTTPS://app.example.com"));
        assert!(allows(&app, "https://app.example.com:443"), "default port");
        assert!(!allows(&app, "http://app.example.com"), "scheme");
        assert!(!allows(&app, "https://app.example.com:8443"), "port");
        assert!(!allows(&app, "https://app.example.com/"), "a path");
        assert!(!allows(&app, "https://app.example.com.evil.com"));
        assert!(!allows(&app, "https://evilapp.example.com"));
        assert!(!allows(&app, "https://app.example.co"));
        assert!(!allows(&app, "null"));
        assert!(!allows(&app, ""));
        let local = ["http://localhost:3000", "https://[::1]:8443"];
        assert!(allows(&local, "http://localhost:3000"));
        assert!(!allows(&local, "http://localhost"));
        assert!(!allows(&local, "http://localhost:30000"));
        assert!(allows(&local, "https://[::1]:8443"));
        assert!(!allows(&local, "https://[::1]"));
    }

    #[test]
    fn a_wildcard_matches_one_or_more_labels_and_nothing_else() {
        let any_sub = ["https://*.example.com"];
        assert!(allows(&any_sub, "https://a.example.com"));
        assert!(allows(&any_sub, "https://a.b.example.com"));
        assert!(allows(&any_sub, "https://A.EXAMPLE.com"));
        assert!(!allows(&any_sub, "https://example.com"), "the apex");
        assert!(!allows(&any_sub, "https://evilexample.com"));
        assert!(!allows(&any_sub, "https://evil-example.com"));
        assert!(!allows(&any_sub, "https://example.com.evil.com"));
        assert!(!allows(&any_sub, "https://a.example.com.evil.com"));
        assert!(!allows(&any_sub, "https://.example.com"), "an empty label");
        assert!(!allows(&any_sub, "https://a..example.com"));
        assert!(!allows(&any_sub, "http://a.example.com"), "scheme");
        assert!(!allows(&any_sub, "https://a.example.com:8443"), "port");
        assert!(!allows(&any_sub, "null"));
        let with_port = ["https://*.example.com:8443"];
        assert!(allows(&with_port, "https://a.example.com:8443"));
        assert!(!allows(&with_port, "https://a.example.com"));
    }

    #[test]
    fn any_origin_allows_null_too() {
        assert!(Origins::Any.allow(b"null"));
        assert!(Origins::Any.allow(b"https://x.example"));
    }

    #[test]
    fn patterns_that_are_not_origins_are_refused_with_a_reason() {
        for (bad, says) in [
            ("null", "sandboxed"),
            ("app.example.com", "scheme://host"),
            ("https://app.example.com/", "path"),
            ("https://app.example.com/api", "path"),
            ("https://user@app.example.com", "user"),
            ("https://app.example.com:https", "port"),
            ("https://app.example.com:99999", "port"),
            ("https://*.com", "top-level"),
            ("https://*", "whole labels"),
            ("https://a.*.example.com", "whole labels"),
            ("https://*example.com", "whole labels"),
            ("https://exa mple.com", "invalid host"),
            ("1https://example.com", "scheme"),
        ] {
            let message = OriginPattern::parse(bad).expect_err(bad);
            assert!(message.contains(says), "{bad}: {message}");
        }
    }

    #[test]
    fn default_ports_are_no_port() {
        assert_eq!(
            OriginPattern::parse("https://a.example:443"),
            OriginPattern::parse("https://a.example")
        );
        assert!(allows(&["http://a.example:80"], "http://a.example"));
    }
}
