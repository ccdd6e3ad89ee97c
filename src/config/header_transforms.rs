//! A policy's `headers`, compiled: fields set, added and removed on the request (on its
//! way upstream) and on the answer (on its way to the client), with values that may
//! hold placeholders. What happens per request is `policy::transform`.
//!
//! Placeholders are read with the tokenizer rewrites and aggregate calls share
//! (`crate::template`): `{client_ip}`, `{request_id}`, `{route}`, or a path parameter
//! of the route (`{id}` for `/users/{id}`), `{consumer}` (the consumer an auth policy
//! identified), checked against every route that names the
//! policy. Answer (`response`) values are fixed per route: only `{route}` may appear.
//!
//! Fields that frame the message or describe one connection can be neither set, added
//! nor removed ([`is_untouchable`]).

use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderName, HeaderValue};

use crate::http1::fields::is_hop_by_hop;
use crate::template::{tokenize, Token};

/// The placeholders every request has.
pub const BUILT_IN_PLACEHOLDERS: [&str; 4] = ["client_ip", "request_id", "route", "consumer"];

/// A policy's `headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderTransformsConfig {
    /// On the request, after the gateway's own forwarding headers.
    pub request: HeaderEdits,
    /// On every answer of the route (the upstream's, a gateway error, a policy's own).
    pub response: HeaderEdits,
}

/// What one direction changes, applied in this order: `remove`, `set`, `add`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub remove: Vec<HeaderName>,
    /// Replaces every field of that name.
    pub set: Vec<(HeaderName, ValueTemplate)>,
    /// Adds a field, keeping those of that name.
    pub add: Vec<(HeaderName, ValueTemplate)>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// A field value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueTemplate {
    /// No placeholder: the value as it is sent.
    Static(HeaderValue),
    /// Literal text and placeholders, in order.
    Pieces(Vec<Piece>),
}

/// One part of a value with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Valid header-value text.
    Literal(String),
    ClientIp,
    RequestId,
    Route,
    /// The consumer an auth policy identified (the field is left out when none did).
    Consumer,
    /// `{jwt.CLAIM}`: a claim of the token a `jwt` auth method verified.
    JwtClaim(String),
    /// A path parameter of the route, by name.
    Param(String),
}

impl ValueTemplate {
    /// Parses `text`; the message says what is wrong. Names that are not built in are
    /// taken for path parameters (checked per route, [`ValueTemplate::params`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        let tokens = tokenize(text).map_err(|unbalanced| format!("{unbalanced} in {text:?}"))?;
        let mut pieces = Vec::with_capacity(tokens.len());
        for token in tokens {
            pieces.push(match token {
                Token::Literal(literal) => {
                    // Non-ASCII bytes are obs-text (RFC 9110 §5.5): allowed, but read
                    // differently by different peers; refused here.
                    let ascii = Some(literal).filter(|l| l.is_ascii());
                    ascii.and_then(|l| HeaderValue::from_str(l).ok()).ok_or_else(|| {
                        format!("{text:?} is not a valid header value (control characters or non-ASCII text)")
                    })?;
                    Piece::Literal(literal.to_owned())
                }
                Token::Placeholder("client_ip") => Piece::ClientIp,
                Token::Placeholder("request_id") => Piece::RequestId,
                Token::Placeholder("route") => Piece::Route,
                Token::Placeholder("consumer") => Piece::Consumer,
                Token::Placeholder(name) if name.starts_with("jwt.") => {
                    let claim = &name["jwt.".len()..];
                    if claim.is_empty() {
                        return Err(format!("`{{{name}}}` in {text:?} needs a claim name after `jwt.`"));
                    }
                    Piece::JwtClaim(claim.to_owned())
                }
                Token::Placeholder(name) => {
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                    {
                        return Err(format!("`{{{name}}}` in {text:?} is not a placeholder"));
                    }
                    Piece::Param(name.to_owned())
                }
            });
        }
        match pieces.as_slice() {
            [] => Ok(ValueTemplate::Static(HeaderValue::from_static(""))),
            [Piece::Literal(literal)] => HeaderValue::from_str(literal)
                .map(ValueTemplate::Static)
                .map_err(|_| format!("{text:?} is not a valid header value")),
            _ => Ok(ValueTemplate::Pieces(pieces)),
        }
    }

    /// The path parameters the value names.
    pub fn params(&self) -> impl Iterator<Item = &str> + '_ {
        let pieces = match self {
            ValueTemplate::Static(_) => &[][..],
            ValueTemplate::Pieces(pieces) => pieces.as_slice(),
        };
        pieces.iter().filter_map(|piece| match piece {
            Piece::Param(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Whether the value depends on the request (anything but literal text and
    /// `{route}`).
    pub fn varies_per_request(&self) -> bool {
        match self {
            ValueTemplate::Static(_) => false,
            ValueTemplate::Pieces(pieces) => pieces
                .iter()
                .any(|p| !matches!(p, Piece::Literal(_) | Piece::Route)),
        }
    }
}

/// Why `name` may not be changed by a transform, if it may not: fields that frame the
/// message (`Content-Length`, `Transfer-Encoding`), the hop-by-hop fields of
/// `http1::fields::HOP_BY_HOP` (`Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Trailer`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`), `Host` (an
/// upstream's `host_header` decides it) and the gateway's `X-Request-Id`.
pub fn is_untouchable(name: &HeaderName) -> Option<&'static str> {
    if *name == CONTENT_LENGTH || is_hop_by_hop(name) {
        Some("it frames the message or describes one connection; the gateway sets it")
    } else if *name == HOST {
        Some("the upstream's `host_header` decides it")
    } else if name.as_str() == "x-request-id" {
        Some("it is the gateway's request id, which ties the logs of both sides together")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_without_placeholders_are_static() {
        assert_eq!(
            ValueTemplate::parse("gateway"),
            Ok(ValueTemplate::Static(HeaderValue::from_static("gateway")))
        );
        assert_eq!(
            ValueTemplate::parse(""),
            Ok(ValueTemplate::Static(HeaderValue::from_static("")))
        );
    }

    #[test]
    fn placeholders_are_built_in_or_path_parameters() {
        let value = ValueTemplate::parse("{client_ip}/{route}/{id}-{request_id}").expect("value");
        assert_eq!(
            value,
            ValueTemplate::Pieces(vec![
                Piece::ClientIp,
                Piece::Literal("/".into()),
                Piece::Route,
                Piece::Literal("/".into()),
                Piece::Param("id".into()),
                Piece::Literal("-".into()),
                Piece::RequestId,
            ])
        );
        assert_eq!(value.params().collect::<Vec<_>>(), ["id"]);
        assert!(value.varies_per_request());
        assert!(!ValueTemplate::parse("r={route}")
            .expect("value")
            .varies_per_request());
    }

    #[test]
    fn bad_values_are_refused() {
        for (bad, says) in [
            ("{client_ip", "unclosed"),
            ("a}", "unbalanced"),
            ("{}", "not a placeholder"),
            ("{a b}", "not a placeholder"),
            ("caf\u{e9}", "not a valid header value"),
            ("a\u{7f}", "not a valid header value"),
        ] {
            let message = ValueTemplate::parse(bad).expect_err(bad);
            assert!(message.contains(says), "{bad}: {message}");
        }
    }

    #[test]
    fn framing_and_connection_fields_are_untouchable() {
        for name in [
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "host",
            "x-request-id",
        ] {
            let name = HeaderName::from_static(name);
            assert!(is_untouchable(&name).is_some(), "{name}");
        }
        for name in ["server", "x-forwarded-host", "x-internal", "cache-control"] {
            assert!(is_untouchable(&HeaderName::from_static(name)).is_none());
        }
    }
}
