//! Field rules shared by requests and responses, and by the head and the trailer
//! section: the one strict `Content-Length` parse, the `Transfer-Encoding` and
//! `Connection` lists, the names that may not travel in trailers, the names some
//! servers fold into others, and the small writers (a field line, a decimal, a chunk
//! size) every encoder uses.

use http::header::{
    CONNECTION, CONTENT_LENGTH, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName};

/// Why a message's `Content-Length` cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LengthError {
    #[error("invalid Content-Length")]
    Invalid,
    #[error("conflicting Content-Length values")]
    Conflicting,
}

/// The message's `Content-Length`, parsed strictly (RFC 9110 §8.6): every value of
/// every line a list of decimal digits only (no sign, no spaces inside, no empty
/// items), all of them equal. `Ok(None)`: no `Content-Length`.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, LengthError> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let parsed = parse_decimal(trim_ows(item)).ok_or(LengthError::Invalid)?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(LengthError::Conflicting);
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// A non-empty run of ASCII digits as a `u64`; `None` for anything else or overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// `bytes` without leading and trailing optional whitespace (SP and HTAB only).
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |last| last + 1);
    &bytes[start..end]
}

/// What a message's `Transfer-Encoding` says about its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codings {
    /// No `Transfer-Encoding`.
    Absent,
    /// `chunked`, alone.
    Chunked,
    /// `chunked` last, after other codings (the body stays encoded below chunked).
    ChunkedAfterOthers,
    /// Another coding last: the length of a request cannot be told; a response runs
    /// until the connection closes.
    NotChunkedLast,
    /// `chunked` twice, the second time last (RFC 9112 §6.1 forbids applying it more
    /// than once), or no coding at all: no message can be framed by it.
    Invalid,
}

/// Reads every `Transfer-Encoding` line as one list (RFC 9112 §6.1).
pub fn transfer_codings(headers: &HeaderMap) -> Codings {
    if !headers.contains_key(TRANSFER_ENCODING) {
        return Codings::Absent;
    }
    let is_chunked = |coding: &[u8]| coding.eq_ignore_ascii_case(b"chunked");
    let (mut last, mut earlier_chunked, mut earlier_other) = (None, false, false);
    let codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|coding| !coding.is_empty());
    for coding in codings {
        if let Some(previous) = last.replace(coding) {
            if is_chunked(previous) {
                earlier_chunked = true;
            } else {
                earlier_other = true;
            }
        }
    }
    match last {
        None => Codings::Invalid,
        Some(last) if is_chunked(last) && earlier_chunked => Codings::Invalid,
        Some(last) if is_chunked(last) && earlier_other => Codings::ChunkedAfterOthers,
        Some(last) if is_chunked(last) => Codings::Chunked,
        Some(_) => Codings::NotChunkedLast,
    }
}

/// The tokens of every `Connection` line, trimmed, empty ones skipped.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|token| !token.is_empty())
}

/// Whether `name` may not arrive in a trailer section to be passed on (RFC 9110 §6.5.1):
/// framing (`Content-Length`, `Transfer-Encoding`, `Trailer`), the connection's own
/// fields, routing (`Host`), request modifiers and credentials, and the content's
/// description. Dropped from every trailer section, both ways.
pub fn is_forbidden_in_trailers(name: &HeaderName) -> bool {
    const FORBIDDEN: &[&str] = &[
        "content-length",
        "transfer-encoding",
        "trailer",
        "te",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "host",
        "authorization",
        "proxy-authorization",
        "proxy-authenticate",
        "www-authenticate",
        "cookie",
        "set-cookie",
        "expect",
        "max-forwards",
        "range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "cache-control",
        "pragma",
        "age",
        "expires",
        "date",
        "location",
        "retry-after",
        "vary",
        "warning",
        "content-encoding",
        "content-type",
        "content-range",
        "content-location",
    ];
    FORBIDDEN.contains(&name.as_str())
}

/// Removes from `trailers` every field [`is_forbidden_in_trailers`] names.
pub fn remove_forbidden_trailers(trailers: &mut HeaderMap) {
    remove_names_where(trailers, is_forbidden_in_trailers);
}

/// Removes every field whose name `matches`; returns how many field lines went. Looks
/// once without allocating: nearly always, nothing matches.
pub fn remove_names_where(headers: &mut HeaderMap, matches: fn(&HeaderName) -> bool) -> usize {
    if !headers.keys().any(matches) {
        return 0;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| matches(name))
        .cloned()
        .collect();
    let mut removed = 0;
    for name in names {
        removed += headers.get_all(&name).iter().count();
        headers.remove(&name);
    }
    removed
}

/// How many names [`HOP_BY_HOP`] holds.
pub const HOP_BY_HOP_COUNT: usize = 9;
/// Fields that describe one connection, never passed on (RFC 9110 §7.6.1);
/// `Connection` first.
pub const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Whether `name` is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Whether a server behind the gateway could read `name` as another field: some fold
/// `_` into `-` (`Content_Length` as `Content-Length`), as CGI-style environments do.
pub fn may_be_folded(name: &HeaderName) -> bool {
    name.as_str().as_bytes().contains(&b'_')
}

/// Writes one field line.
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `value` in decimal, written into the end of `digits`.
pub fn format_u64(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

/// The line that starts a chunk of `size` bytes (hex digits and CRLF), written into
/// the end of `line`.
pub fn chunk_size_line(size: usize, line: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = line.len() - 2;
    line[start..].copy_from_slice(b"\r\n");
    let mut left = size;
    loop {
        start -= 1;
        line[start] = HEX[left % 16];
        left /= 16;
        if left == 0 {
            return &line[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::headers;

    #[test]
    fn content_length_is_digits_only_and_agreed() {
        let length = |pairs: &[(&'static str, &'static str)]| content_length(&headers(pairs));
        assert_eq!(length(&[]), Ok(None));
        assert_eq!(length(&[("content-length", "005")]), Ok(Some(5)));
        assert_eq!(length(&[("content-length", "5, 5")]), Ok(Some(5)));
        assert_eq!(
            length(&[("content-length", "5"), ("content-length", " 5\t")]),
            Ok(Some(5))
        );
        for bad in [
            "+5",
            "-1",
            "5 5",
            "0x5",
            "",
            "5,",
            ",5",
            "5a",
            "18446744073709551616",
        ] {
            assert_eq!(
                length(&[("content-length", bad)]),
                Err(LengthError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(
            length(&[("content-length", "5"), ("content-length", "6")]),
            Err(LengthError::Conflicting)
        );
    }

    #[test]
    fn transfer_codings_are_one_list() {
        let codings =
            |value: &'static str| transfer_codings(&headers(&[("transfer-encoding", value)]));
        assert_eq!(transfer_codings(&HeaderMap::new()), Codings::Absent);
        assert_eq!(codings("Chunked"), Codings::Chunked);
        assert_eq!(codings("gzip, chunked"), Codings::ChunkedAfterOthers);
        for other_last in ["gzip", "identity", "gzip, br", "chunked, gzip"] {
            assert_eq!(
                codings(other_last),
                Codings::NotChunkedLast,
                "{other_last:?}"
            );
        }
        for invalid in ["chunked, chunked", "", " , "] {
            assert_eq!(codings(invalid), Codings::Invalid, "{invalid:?}");
        }
        let split = headers(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(transfer_codings(&split), Codings::Invalid);
    }

    #[test]
    fn writers_cover_the_range() {
        let mut digits = [0; 20];
        assert_eq!(format_u64(0, &mut digits), b"0");
        assert_eq!(
            format_u64(u64::MAX, &mut digits),
            u64::MAX.to_string().as_bytes()
        );
        let mut line = [0; 18];
        assert_eq!(chunk_size_line(0, &mut line), b"0\r\n");
        assert_eq!(chunk_size_line(0x1f2e, &mut line), b"1f2e\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut line),
            format!("{:x}\r\n", usize::MAX).as_bytes()
        );
    }

    #[test]
    fn trailers_and_folded_names() {
        for name in ["content-length", "transfer-encoding", "host", "connection"] {
            assert!(is_forbidden_in_trailers(&HeaderName::from_static(name)));
        }
        assert!(!is_forbidden_in_trailers(&HeaderName::from_static(
            "grpc-status"
        )));
        assert!(may_be_folded(&HeaderName::from_static("content_length")));
        assert!(!may_be_folded(&HeaderName::from_static("content-length")));
    }
}
