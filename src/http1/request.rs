//! The request head (RFC 9112 §3): parsed from a client's bytes by the gateway's
//! server (the target and header values share those bytes), its body's framing told
//! strictly, `Host` settled, what it asks of the connection; and written to an upstream
//! by the gateway's client, with one `Content-Length` or `Transfer-Encoding` the
//! gateway computed, never the client's own.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use super::fields::{self, put_header, Codings, LengthError};

/// Headers the proxy adds to a forwarded request.
const ADDED_BY_PROXY: usize = 5;
/// Header slots parsed on the stack; a listener allowing more uses the heap.
const STACK_HEADER_SLOTS: usize = 128;

/// Why a request head was refused. Each is answered, then the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("the request target is too long")]
    UriTooLong,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("transfer coding not supported: only `chunked` is accepted")]
    UnsupportedCoding,
    #[error("the request expects something other than `100-continue`")]
    UnsupportedExpectation,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

/// Parses a request head from the start of `buf`, within `max_size` bytes and
/// `max_headers` fields. On success its bytes are taken off `buf` (what follows stays:
/// the body, or a pipelined request), and the target and header values share them.
/// `Ok(None)`: not complete yet.
pub fn parse_request_head(
    buf: &mut BytesMut,
    max_size: usize,
    max_headers: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let scanned = if max_headers <= STACK_HEADER_SLOTS {
        let mut slots =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADER_SLOTS];
        scan(&buf[..], max_size, max_headers, &mut slots[..max_headers])?
    } else {
        let mut slots = Vec::with_capacity(max_headers);
        slots.resize_with(max_headers, MaybeUninit::uninit);
        scan(&buf[..], max_size, max_headers, &mut slots)?
    };
    let Some(scanned) = scanned else {
        return Ok(None);
    };
    let head = buf.split_to(scanned.length).freeze();
    let (start, len) = scanned.target;
    let uri = parse_target(&scanned.method, head.slice(start..start + len))?;
    // Room for what the proxy adds (X-Forwarded-*, the request id), so that adding
    // them does not grow and rehash the map.
    let mut headers = HeaderMap::with_capacity(scanned.fields.len() + ADDED_BY_PROXY);
    for (name, start, len) in scanned.fields {
        let value = HeaderValue::from_maybe_shared(head.slice(start..start + len))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(Some(RequestHead {
        method: scanned.method,
        uri,
        version: scanned.version,
        headers,
    }))
}

/// A complete head found in the buffer: its length, and where its target and values lie.
struct Scanned {
    length: usize,
    method: Method,
    version: Version,
    target: (usize, usize),
    fields: Vec<(HeaderName, usize, usize)>,
}

fn scan<'b>(
    bytes: &'b [u8],
    max_size: usize,
    max_headers: usize,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<Scanned>, HeadError> {
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        bytes,
        slots,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) if length > max_size => {
            return Err(HeadError::TooLarge { limit: max_size })
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if bytes.len() >= max_size => {
            return Err(HeadError::TooLarge { limit: max_size })
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders { limit: max_headers })
        }
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed("unsupported HTTP version"))
        }
        Err(_) => return Err(HeadError::Malformed("invalid request line or header field")),
    };
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Offsets of the target and of each value, so that they can share the head's bytes
    // once it is split off the buffer; names are built now.
    let base = bytes.as_ptr() as usize;
    let offset = |slice: &[u8]| slice.as_ptr() as usize - base;
    let target = request.path.unwrap_or_default().as_bytes();
    let target = (offset(target), target.len());
    let mut fields = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        fields.push((name, offset(header.value), header.value.len()));
    }
    Ok(Some(Scanned {
        length,
        method,
        version,
        target,
        fields,
    }))
}

/// The request target as a URI: origin form (`/path?q`), absolute form, or `*`
/// (OPTIONS). `CONNECT` is refused in any form: the gateway does not tunnel it. An
/// absolute target with userinfo (`http://user:pw@host/`) is refused (RFC 9110 §4.2.4).
fn parse_target(method: &Method, target: Bytes) -> Result<Uri, HeadError> {
    if *method == Method::CONNECT {
        return Err(HeadError::Malformed("CONNECT is not supported"));
    }
    if target.is_empty() {
        return Err(HeadError::Malformed("empty request target"));
    }
    if target[0] != b'/' && target.as_ref() != b"*" {
        // Anything else must be absolute: `http://host/path`.
        if !target.windows(3).any(|w| w == b"://") {
            return Err(HeadError::Malformed("invalid request target"));
        }
    }
    let uri = Uri::from_maybe_shared(target).map_err(|error| {
        if error.to_string().contains("too long") {
            HeadError::UriTooLong
        } else {
            HeadError::Malformed("invalid request target")
        }
    })?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(HeadError::Malformed("userinfo in the request target"));
    }
    Ok(uri)
}

/// How a request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// The request body's framing. Requests whose length cannot be told reliably (both
/// `Content-Length` and `Transfer-Encoding`, conflicting lengths, a coding other than
/// `chunked` last) are refused: accepting them is how request smuggling starts.
pub fn body_framing(version: Version, headers: &HeaderMap) -> Result<BodyFraming, HeadError> {
    let codings = fields::transfer_codings(headers);
    if codings != Codings::Absent {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        // RFC 9112 §6.3: without `chunked` last, or with it twice, the length cannot be
        // told (400); with other codings before it, the body would reach the upstream
        // still encoded (501).
        return match codings {
            Codings::Chunked => Ok(BodyFraming::Chunked),
            Codings::ChunkedAfterOthers => Err(HeadError::UnsupportedCoding),
            Codings::Absent | Codings::NotChunkedLast | Codings::Invalid => Err(
                HeadError::Malformed("`chunked` is not the final transfer coding"),
            ),
        };
    }
    match fields::content_length(headers) {
        Ok(None | Some(0)) => Ok(BodyFraming::None),
        Ok(Some(length)) => Ok(BodyFraming::Length(length)),
        Err(LengthError::Invalid) => Err(HeadError::Malformed("invalid Content-Length")),
        Err(LengthError::Conflicting) => {
            Err(HeadError::Malformed("conflicting Content-Length values"))
        }
    }
}

/// Replaces the client's `Content-Length` line(s) with the one value the gateway read
/// (`005`, `5, 5` or two `5` lines all become `5`), so that nothing downstream sees
/// a spelling the gateway did not check.
pub fn normalise_length(headers: &mut HeaderMap, framing: BodyFraming) {
    let length = match framing {
        BodyFraming::Length(length) => length,
        BodyFraming::None | BodyFraming::Chunked => 0,
    };
    let mut digits = [0; 20];
    let canonical = fields::format_u64(length, &mut digits);
    let mut lines = headers.get_all(CONTENT_LENGTH).iter();
    match (lines.next(), lines.next()) {
        (None, _) => return,
        // Already spelled as the gateway would (nearly every client): nothing to do.
        (Some(only), None) if only.as_bytes() == canonical => return,
        _ => {}
    }
    if let Ok(value) = HeaderValue::from_bytes(canonical) {
        headers.insert(CONTENT_LENGTH, value);
    }
}

/// Removes header fields whose names a server behind the gateway might fold into
/// others (`Transfer_Encoding`); returns how many were dropped.
pub fn drop_foldable_names(headers: &mut HeaderMap) -> usize {
    fields::remove_names_where(headers, fields::may_be_folded)
}

/// Checks the request's `Host` (RFC 9112 §3.2): exactly one on HTTP/1.1 (at most one on
/// HTTP/1.0). With an absolute-form target, the target's authority is the host, and
/// `Host` is set to it so that routing and the upstream see the same one.
pub fn settle_host(version: Version, uri: &Uri, headers: &mut HeaderMap) -> Result<(), HeadError> {
    let mut hosts = headers.get_all(HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    if let Some(authority) = uri.authority() {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| HeadError::Malformed("invalid request target"))?;
        headers.insert(HOST, host);
        return Ok(());
    }
    match first {
        None if version == Version::HTTP_11 => Err(HeadError::Malformed("missing Host header")),
        Some(host) if host.is_empty() && version == Version::HTTP_11 => {
            Err(HeadError::Malformed("empty Host header"))
        }
        _ => Ok(()),
    }
}

/// What the request's `Connection`, `Upgrade` and `Expect` headers ask of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionWishes {
    /// The client will send another request on this connection.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` header (HTTP/1.1 only).
    pub upgrade: bool,
    /// `Expect: 100-continue`: the client waits for `100 Continue` before its body.
    pub expects_continue: bool,
}

impl ConnectionWishes {
    /// What `headers` ask; an `Expect` other than exactly `100-continue` is refused
    /// (417): the gateway cannot meet any other expectation.
    pub fn of(version: Version, headers: &HeaderMap) -> Result<Self, HeadError> {
        // `close` wins wherever it appears (RFC 9112 §9.3); an HTTP/1.0 client keeps
        // the connection only when it asks and never also says `close`.
        let (mut close, mut keep_alive, mut upgrade) = (false, false, false);
        for token in fields::connection_tokens(headers) {
            if token.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            }
        }
        let close = close || (version == Version::HTTP_10 && !keep_alive);
        let mut expects_continue = false;
        let mut expectations = headers.get_all(EXPECT).iter();
        if let Some(expect) = expectations.next() {
            if expectations.next().is_some()
                || !expect.as_bytes().eq_ignore_ascii_case(b"100-continue")
            {
                return Err(HeadError::UnsupportedExpectation);
            }
            // RFC 9110 §10.1.1: an HTTP/1.0 client's `100-continue` is ignored.
            expects_continue = version == Version::HTTP_11;
        }
        Ok(ConnectionWishes {
            keep_alive: !close,
            upgrade: upgrade && version == Version::HTTP_11 && headers.contains_key(UPGRADE),
            expects_continue,
        })
    }
}

/// A request head that passed [`check_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub wishes: ConnectionWishes,
    pub framing: BodyFraming,
    /// Header fields removed for names with `_`.
    pub dropped_fields: usize,
}

/// What a listener does with request header fields whose names contain `_`, which some
/// servers behind it read as `-` (`Transfer_Encoding` as `Transfer-Encoding`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Removed before the request is routed or forwarded, and counted.
    #[default]
    Drop,
    /// Passed on like any other field.
    Allow,
    /// The request is refused with 400.
    Reject,
}

/// The checks a parsed head must pass before it is routed, in the order the gateway's
/// server runs them: `Expect` (removed: the server answers `100-continue` itself),
/// names with `_` (as `underscores` says), `Host`, the body's framing. The one
/// `Content-Length` the gateway read replaces the client's spelling of it.
pub fn check_head(
    head: &mut RequestHead,
    underscores: UnderscoreHeaders,
) -> Result<Checked, HeadError> {
    let wishes = ConnectionWishes::of(head.version, &head.headers)?;
    if wishes.expects_continue || head.version == Version::HTTP_10 {
        head.headers.remove(EXPECT);
    }
    let mut dropped_fields = 0;
    match underscores {
        UnderscoreHeaders::Allow => {}
        UnderscoreHeaders::Drop => dropped_fields = drop_foldable_names(&mut head.headers),
        UnderscoreHeaders::Reject => {
            if head.headers.keys().any(fields::may_be_folded) {
                return Err(HeadError::Malformed("a header field name contains `_`"));
            }
        }
    }
    settle_host(head.version, &head.uri, &mut head.headers)?;
    let framing = body_framing(head.version, &head.headers)?;
    normalise_length(&mut head.headers, framing);
    Ok(Checked {
        wishes,
        framing,
        dropped_fields,
    })
}

/// How the request body is delimited on the way to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Chooses the request body's framing: the `Content-Length` the request carries (which
/// the gateway's server has checked and normalised), the body's exact size when known,
/// chunked otherwise.
pub fn request_framing(
    method: &Method,
    headers: &HeaderMap,
    ends_now: bool,
    exact_size: Option<u64>,
) -> RequestFraming {
    if let Ok(Some(length)) = fields::content_length(headers) {
        return RequestFraming::Length(length);
    }
    if ends_now {
        // Methods defined with a body say "empty" explicitly; others send nothing.
        return if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            RequestFraming::Length(0)
        } else {
            RequestFraming::Empty
        };
    }
    match exact_size {
        Some(length) => RequestFraming::Length(length),
        None => RequestFraming::Chunked,
    }
}

/// Writes the request head into `out`: the request line (origin form), the headers
/// (with `Host` when the request has none), the one framing header `framing` needs
/// (the request's own `Content-Length` and `Transfer-Encoding` lines are never copied),
/// and the blank line.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    default_host: &HeaderValue,
    framing: RequestFraming,
) {
    out.clear();
    out.reserve(64 + path_and_query.len() + headers.len() * 32);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(HOST) {
        put_header(out, HOST.as_str().as_bytes(), default_host.as_bytes());
    }
    for (name, value) in headers {
        if name == TRANSFER_ENCODING || name == CONTENT_LENGTH {
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(length) => {
            let mut digits = [0; 20];
            put_header(
                out,
                CONTENT_LENGTH.as_str().as_bytes(),
                fields::format_u64(length, &mut digits),
            );
        }
        RequestFraming::Chunked => {
            put_header(out, TRANSFER_ENCODING.as_str().as_bytes(), b"chunked")
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::headers;

    fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        let mut buf = BytesMut::from(bytes);
        parse_request_head(&mut buf, 1024, 8)
    }

    #[test]
    fn a_request_head_is_parsed_and_what_follows_stays_buffered() {
        let mut buf = BytesMut::from(
            &b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nX-Two: 2\r\n\r\nGET /next"[..],
        );
        let head = parse_request_head(&mut buf, 1024, 8)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/a?b=1");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["host"], "x");
        assert_eq!(head.headers.get_all("x-two").iter().count(), 2);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn partial_oversized_and_malformed_heads() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost:")
            .expect("valid so far")
            .is_none());
        assert_eq!(
            parse(b"GET /\x01 HTTP/1.1\r\n\r\n").err(),
            Some(HeadError::Malformed("invalid request line or header field"))
        );
        let mut long = b"GET /".to_vec();
        long.extend_from_slice(&[b'a'; 2000]);
        assert_eq!(
            parse(&long).err(),
            Some(HeadError::TooLarge { limit: 1024 })
        );
        let many: String = (0..9).map(|i| format!("x-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse(many.as_bytes()).err(),
            Some(HeadError::TooManyHeaders { limit: 8 })
        );
        assert!(parse(b"GET / HTTP/2.0\r\n\r\n").is_err());
        assert!(parse(b"GET nopath HTTP/1.1\r\n\r\n").is_err());
        let absolute = parse(b"GET http://example.com/x HTTP/1.1\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(absolute.uri.host(), Some("example.com"));
        assert_eq!(absolute.uri.path(), "/x");
        for refused in [
            &b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"[..],
            b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://user:pw@example.com/x HTTP/1.1\r\n\r\n",
            b"GET http://user@example.com/x HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(refused), Err(HeadError::Malformed(_))),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn body_framing_refuses_what_could_be_smuggled() {
        let v11 = Version::HTTP_11;
        assert_eq!(body_framing(v11, &headers(&[])), Ok(BodyFraming::None));
        assert_eq!(
            body_framing(v11, &headers(&[("content-length", "12")])),
            Ok(BodyFraming::Length(12))
        );
        assert_eq!(
            body_framing(
                v11,
                &headers(&[("content-length", "5"), ("content-length", "5")])
            ),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            body_framing(v11, &headers(&[("transfer-encoding", "Chunked")])),
            Ok(BodyFraming::Chunked)
        );
        for bad in [
            vec![("content-length", "5"), ("content-length", "6")],
            vec![("content-length", "5, 6")],
            vec![("content-length", "+5")],
            vec![("content-length", "abc")],
            vec![("content-length", "")],
            vec![("content-length", "5"), ("transfer-encoding", "chunked")],
        ] {
            assert!(
                matches!(
                    body_framing(v11, &headers(&bad)),
                    Err(HeadError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        for not_chunked_last in ["gzip", "chunked, gzip", "chunked, chunked", "identity", ""] {
            assert!(
                matches!(
                    body_framing(v11, &headers(&[("transfer-encoding", not_chunked_last)])),
                    Err(HeadError::Malformed(_))
                ),
                "{not_chunked_last}"
            );
        }
        assert_eq!(
            body_framing(v11, &headers(&[("transfer-encoding", "gzip, chunked")])),
            Err(HeadError::UnsupportedCoding)
        );
        assert!(body_framing(
            Version::HTTP_10,
            &headers(&[("transfer-encoding", "chunked")])
        )
        .is_err());
    }

    #[test]
    fn host_is_required_once_and_follows_an_absolute_target() {
        let v11 = Version::HTTP_11;
        let origin: Uri = "/a".parse().expect("uri");
        assert!(settle_host(v11, &origin, &mut headers(&[("host", "a")])).is_ok());
        assert!(settle_host(v11, &origin, &mut headers(&[])).is_err());
        assert!(settle_host(Version::HTTP_10, &origin, &mut headers(&[])).is_ok());
        assert!(settle_host(v11, &origin, &mut headers(&[("host", "a"), ("host", "b")])).is_err());
        let absolute: Uri = "http://api.example:8080/a".parse().expect("uri");
        let mut spoofed = headers(&[("host", "other.example")]);
        assert!(settle_host(v11, &absolute, &mut spoofed).is_ok());
        assert_eq!(spoofed["host"], "api.example:8080");
    }

    #[test]
    fn connection_wishes_follow_the_version() {
        let wishes = |version, headers: &HeaderMap| {
            ConnectionWishes::of(version, headers).expect("acceptable")
        };
        let none = headers(&[]);
        assert!(wishes(Version::HTTP_11, &none).keep_alive);
        assert!(!wishes(Version::HTTP_10, &none).keep_alive);
        let keep = headers(&[("connection", "Keep-Alive")]);
        assert!(wishes(Version::HTTP_10, &keep).keep_alive);
        let close = headers(&[("connection", "foo, close")]);
        assert!(!wishes(Version::HTTP_11, &close).keep_alive);
        // `close` wins, whatever follows it (RFC 9112 §9.3).
        let close_then_keep = headers(&[("connection", "close"), ("connection", "keep-alive")]);
        assert!(!wishes(Version::HTTP_10, &close_then_keep).keep_alive);
        let upgrade = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wishes(Version::HTTP_11, &upgrade).upgrade);
        assert!(!wishes(Version::HTTP_10, &upgrade).upgrade);
        let expect = headers(&[("expect", "100-Continue")]);
        assert!(wishes(Version::HTTP_11, &expect).expects_continue);
        assert!(!wishes(Version::HTTP_10, &expect).expects_continue);
        for unmet in [
            headers(&[("expect", "100-continue, x")]),
            headers(&[("expect", "200-ok")]),
            headers(&[("expect", "100-continue"), ("expect", "100-continue")]),
        ] {
            assert_eq!(
                ConnectionWishes::of(Version::HTTP_11, &unmet),
                Err(HeadError::UnsupportedExpectation)
            );
        }
    }

    #[test]
    fn the_length_sent_on_is_the_one_the_gateway_read() {
        let mut spelled = headers(&[("content-length", "005"), ("content-length", "5, 5")]);
        let framing = body_framing(Version::HTTP_11, &spelled).expect("agreed");
        normalise_length(&mut spelled, framing);
        assert_eq!(spelled.get_all("content-length").iter().count(), 1);
        assert_eq!(spelled["content-length"], "5");
        let mut folded = headers(&[
            ("transfer_encoding", "chunked"),
            ("content_length", "1"),
            ("content_length", "2"),
            ("x-fine", "1"),
        ]);
        assert_eq!(drop_foldable_names(&mut folded), 3);
        assert_eq!(folded.len(), 1);
    }

    #[test]
    fn a_request_head_carries_host_and_one_framing_header() {
        let mut headers = headers(&[
            ("x-request-id", "abc"),
            ("transfer-encoding", "gzip, chunked"),
        ]);
        let mut out = Vec::new();
        let host = HeaderValue::from_static("backend:8080");
        let framing = request_framing(&Method::POST, &headers, false, None);
        assert_eq!(framing, RequestFraming::Chunked);
        encode_request_head(&mut out, &Method::POST, "/a?b=1", &headers, &host, framing);
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf-8"),
            "POST /a?b=1 HTTP/1.1\r\nhost: backend:8080\r\nx-request-id: abc\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        headers.clear();
        headers.insert(HOST, HeaderValue::from_static("client.example"));
        let framing = request_framing(&Method::PUT, &headers, false, Some(1234));
        encode_request_head(&mut out, &Method::PUT, "/", &headers, &host, framing);
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf-8"),
            "PUT / HTTP/1.1\r\nhost: client.example\r\ncontent-length: 1234\r\n\r\n"
        );
        // The client's own spellings never reach the upstream.
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("7"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("7"));
        let framing = request_framing(&Method::PUT, &headers, false, None);
        assert_eq!(framing, RequestFraming::Length(7));
        encode_request_head(&mut out, &Method::PUT, "/", &headers, &host, framing);
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf-8"),
            "PUT / HTTP/1.1\r\nhost: client.example\r\ncontent-length: 7\r\n\r\n"
        );
        let framing = request_framing(&Method::GET, &HeaderMap::new(), true, Some(0));
        assert_eq!(framing, RequestFraming::Empty);
        assert_eq!(
            request_framing(&Method::POST, &HeaderMap::new(), true, Some(0)),
            RequestFraming::Length(0)
        );
    }
}
