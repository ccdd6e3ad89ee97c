//! Where credentials sit in a request, read and removed: a header's value, a query
//! parameter (percent-decoded), a cookie of the `Cookie` header(s).
//!
//! Removal runs once a request is admitted, so that what an auth policy read (the API
//! key, `Authorization`, a session cookie) does not travel upstream unless the policy
//! keeps it: a header is removed whole, a cookie is cut out of the `Cookie` field (the
//! others kept), a query parameter is cut out of the target by the proxy (see
//! [`strip_query`]).

use std::borrow::Cow;

use bytes::BytesMut;
use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::auth::CredentialSource;

/// A credential value longer than this is refused without being looked at.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// The value `source` names in a request, if present.
pub fn read<'a>(
    source: &CredentialSource,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<Cow<'a, [u8]>> {
    match source {
        CredentialSource::Header(name) => headers.get(name).map(|v| Cow::Borrowed(v.as_bytes())),
        CredentialSource::Query(name) => {
            let query = query?;
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == name.as_str())
                .map(|(_, value)| match value {
                    Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
                    Cow::Owned(text) => Cow::Owned(text.into_bytes()),
                })
        }
        CredentialSource::Cookie(name) => headers
            .get_all(COOKIE)
            .iter()
            .flat_map(|field| cookie_pairs(field.as_bytes()))
            .find(|(key, _)| *key == name.as_bytes())
            .map(|(_, value)| Cow::Borrowed(value)),
    }
}

/// `name=value` pairs of one `Cookie` field (RFC 6265 §5.4: joined with `; `).
fn cookie_pairs(field: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    field.split(|&b| b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let at = pair.iter().position(|&b| b == b'=')?;
        Some((pair[..at].trim_ascii(), pair[at + 1..].trim_ascii()))
    })
}

/// What an admitted request loses before it goes upstream, compiled per policy.
#[derive(Debug, Default, Clone)]
pub struct Strip {
    pub headers: Vec<HeaderName>,
    pub cookies: Vec<Box<str>>,
    /// Query parameters: cut out of the target by the proxy ([`strip_query`]).
    pub query: Vec<Box<str>>,
}

impl Strip {
    /// Adds what `source` names (once).
    pub fn add(&mut self, source: &CredentialSource) {
        match source {
            CredentialSource::Header(name) => {
                if !self.headers.contains(name) {
                    self.headers.push(name.clone());
                }
            }
            CredentialSource::Query(name) => {
                if !self.query.iter().any(|q| **q == **name) {
                    self.query.push(name.as_str().into());
                }
            }
            CredentialSource::Cookie(name) => {
                if !self.cookies.iter().any(|c| **c == **name) {
                    self.cookies.push(name.as_str().into());
                }
            }
        }
    }

    /// Removes the headers and cookies from `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.headers {
            headers.remove(name);
        }
        if !self.cookies.is_empty() && headers.contains_key(COOKIE) {
            strip_cookies(headers, &self.cookies);
        }
    }
}

/// Every `Cookie` field without the cookies named `names`; a field left empty goes.
fn strip_cookies(headers: &mut HeaderMap, names: &[Box<str>]) {
    let fields: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    headers.remove(COOKIE);
    for field in fields {
        let mut kept = BytesMut::with_capacity(field.len());
        for pair in field.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let name = pair
                .iter()
                .position(|&b| b == b'=')
                .map_or(pair, |at| pair[..at].trim_ascii());
            if pair.is_empty() || names.iter().any(|n| n.as_bytes() == name) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
        if let Ok(value) = HeaderValue::from_maybe_shared(kept.freeze()) {
            if !value.is_empty() {
                headers.append(COOKIE, value);
            }
        }
    }
}

/// `query` without the parameters named `names` (compared after percent-decoding);
/// `None` when none of them is there (the target is kept as it is).
pub fn strip_query(query: &str, names: &[Box<str>]) -> Option<String> {
    let named = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        let decoded: String = url::form_urlencoded::parse(key.as_bytes())
            .next()
            .map(|(key, _)| key.into_owned())
            .unwrap_or_default();
        names.iter().any(|n| **n == *decoded)
    };
    if !query.split('&').any(named) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !named(pair))
        .collect();
    Some(kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn credentials_are_read_from_headers_queries_and_cookies() {
        let map = headers(&[
            ("x-api-key", "k1"),
            ("cookie", "a=1; session=s%20x"),
            ("cookie", "b=2"),
        ]);
        let header = CredentialSource::Header(HeaderName::from_static("x-api-key"));
        assert_eq!(read(&header, &map, None).as_deref(), Some(&b"k1"[..]));
        let query = CredentialSource::Query("api_key".into());
        assert_eq!(
            read(&query, &map, Some("x=1&api_key=a%2Bb+c")).as_deref(),
            Some(&b"a+b c"[..])
        );
        assert_eq!(read(&query, &map, Some("x=1")), None);
        let cookie = CredentialSource::Cookie("session".into());
        assert_eq!(read(&cookie, &map, None).as_deref(), Some(&b"s%20x"[..]));
        let other = CredentialSource::Cookie("b".into());
        assert_eq!(read(&other, &map, None).as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn stripping_removes_only_what_was_named() {
        let mut strip = Strip::default();
        strip.add(&CredentialSource::Header(HeaderName::from_static(
            "authorization",
        )));
        strip.add(&CredentialSource::Cookie("session".into()));
        let mut map = headers(&[
            ("authorization", "Basic eA=="),
            ("cookie", "a=1; session=secret; c=3"),
            ("cookie", "session=again"),
            ("x-other", "kept"),
        ]);
        strip.apply(&mut map);
        assert!(!map.contains_key("authorization"));
        let cookies: Vec<_> = map.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; c=3"]);
        assert_eq!(map["x-other"], "kept");
    }

    #[test]
    fn query_parameters_are_cut_out_of_the_target() {
        let names: Vec<Box<str>> = vec!["api_key".into()];
        assert_eq!(strip_query("a=1&b=2", &names), None);
        assert_eq!(
            strip_query("a=1&api_key=x&b=2", &names).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(strip_query("api%5Fkey=x", &names).as_deref(), Some(""));
        assert_eq!(
            strip_query("api_key=x&api_key=y&z", &names).as_deref(),
            Some("z")
        );
    }
}
