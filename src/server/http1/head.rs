//! The two heads of an HTTP/1.1 exchange as the gateway's server sees them (RFC 9112):
//! the request head parsed from the bytes read (header values share those bytes), the
//! request body's framing, and the response head written back, with the framing and
//! `Connection` header the connection needs and a cached `Date`.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use crate::upstream::http1::wire::format_u64;

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

/// The request target as a URI: origin form (`/path?q`), absolute form, authority form
/// (CONNECT) or `*` (OPTIONS).
fn parse_target(method: &Method, target: Bytes) -> Result<Uri, HeadError> {
    if target.is_empty() {
        return Err(HeadError::Malformed("empty request target"));
    }
    if target[0] != b'/' && target.as_ref() != b"*" && *method != Method::CONNECT {
        // Anything else must be absolute: `http://host/path`.
        if !target.windows(3).any(|w| w == b"://") {
            return Err(HeadError::Malformed("invalid request target"));
        }
    }
    Uri::from_maybe_shared(target).map_err(|error| {
        if error.to_string().contains("too long") {
            HeadError::UriTooLong
        } else {
            HeadError::Malformed("invalid request target")
        }
    })
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
/// `chunked`) are refused: accepting them is how request smuggling starts.
pub fn body_framing(version: Version, headers: &HeaderMap) -> Result<BodyFraming, HeadError> {
    if headers.contains_key(TRANSFER_ENCODING) {
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
        let codings = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|coding| !coding.is_empty());
        let is_chunked = |coding: &[u8]| coding.eq_ignore_ascii_case(b"chunked");
        // What came before the last coding: any `chunked`, any other coding.
        let (mut last, mut earlier_chunked, mut earlier_other) = (None, false, false);
        for coding in codings {
            if let Some(previous) = last.replace(coding) {
                if is_chunked(previous) {
                    earlier_chunked = true;
                } else {
                    earlier_other = true;
                }
            }
        }
        // RFC 9112 §6.3: without `chunked` last, or with it twice, the length cannot be
        // told (400); with other codings before it, the body would reach the upstream
        // still encoded (501).
        return match last {
            Some(last) if is_chunked(last) && !earlier_chunked && !earlier_other => {
                Ok(BodyFraming::Chunked)
            }
            Some(last) if is_chunked(last) && !earlier_chunked => Err(HeadError::UnsupportedCoding),
            _ => Err(HeadError::Malformed(
                "`chunked` is not the final transfer coding",
            )),
        };
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Malformed("invalid Content-Length"));
            }
            let parsed = std::str::from_utf8(item)
                .ok()
                .and_then(|digits| digits.parse::<u64>().ok())
                .ok_or(HeadError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(HeadError::Malformed("conflicting Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        None | Some(0) => BodyFraming::None,
        Some(length) => BodyFraming::Length(length),
    })
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
    pub fn of(version: Version, headers: &HeaderMap) -> Self {
        let mut close = version == Version::HTTP_10;
        let mut upgrade = false;
        for value in headers.get_all(CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    close = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade = true;
                }
            }
        }
        let expects_continue = version == Version::HTTP_11
            && headers
                .get(EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        ConnectionWishes {
            keep_alive: !close,
            upgrade: upgrade && version == Version::HTTP_11 && headers.contains_key(UPGRADE),
            expects_continue,
        }
    }
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body bytes follow (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 clients, unknown length).
    UntilClose,
}

impl ResponseFraming {
    /// The framing for a response with `status` to a request of `version` (`is_head`: a
    /// HEAD request), whose body's exact size is `exact_size` when known.
    pub fn choose(
        is_head: bool,
        status: StatusCode,
        version: Version,
        exact_size: Option<u64>,
    ) -> Self {
        if is_head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return ResponseFraming::None;
        }
        match exact_size {
            Some(length) => ResponseFraming::Length(length),
            None if version == Version::HTTP_11 => ResponseFraming::Chunked,
            None => ResponseFraming::UntilClose,
        }
    }
}

/// What the response's `Connection` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// Nothing: HTTP/1.1 keeps the connection by default.
    Omitted,
    /// `keep-alive`: an HTTP/1.0 client asked for it.
    KeepAlive,
    Close,
    /// `upgrade`, for `101 Switching Protocols`.
    Upgrade,
}

/// Writes the response head into `out`: status line, the response's headers (its own
/// framing and `Connection` headers replaced by `framing` and `connection`, a
/// `Content-Length` kept on HEAD and 304 answers), `Date` when missing, blank line.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    connection: ConnectionHeader,
) {
    out.reserve(128 + headers.len() * 48);
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let keep_length = framing == ResponseFraming::None;
    for (name, value) in headers {
        if name == TRANSFER_ENCODING
            || name == CONNECTION
            || (name == CONTENT_LENGTH && !keep_length)
        {
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ResponseFraming::Length(length) => {
            let mut digits = [0; 20];
            put_header(out, b"content-length", format_u64(length, &mut digits));
        }
        ResponseFraming::Chunked => put_header(out, b"transfer-encoding", b"chunked"),
        ResponseFraming::None | ResponseFraming::UntilClose => {}
    }
    match connection {
        ConnectionHeader::Omitted => {}
        ConnectionHeader::KeepAlive => put_header(out, b"connection", b"keep-alive"),
        ConnectionHeader::Close => put_header(out, b"connection", b"close"),
        ConnectionHeader::Upgrade => put_header(out, b"connection", b"upgrade"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The trailer section that ends a chunked body: the last chunk, the trailers, the
/// blank line.
pub fn encode_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// An IMF-fixdate is 29 bytes: `Sun, 06 Nov 1994 08:49:37 GMT`.
const DATE_LEN: usize = 29;

thread_local! {
    /// The current second's `Date` value, formatted once per second per thread.
    static CURRENT_DATE: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Calls `use_date` with the current time as an HTTP date.
fn with_date(use_date: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CURRENT_DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == DATE_LEN {
                cached.1.copy_from_slice(formatted.as_bytes());
                cached.0 = second;
            }
        }
        use_date(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        let mut buf = BytesMut::from(bytes);
        parse_request_head(&mut buf, 1024, 8)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
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
        let connect = parse(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(
            connect.uri.authority().map(|a| a.as_str()),
            Some("example.com:443")
        );
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
        let none = headers(&[]);
        assert!(ConnectionWishes::of(Version::HTTP_11, &none).keep_alive);
        assert!(!ConnectionWishes::of(Version::HTTP_10, &none).keep_alive);
        let keep = headers(&[("connection", "Keep-Alive")]);
        assert!(ConnectionWishes::of(Version::HTTP_10, &keep).keep_alive);
        let close = headers(&[("connection", "foo, close")]);
        assert!(!ConnectionWishes::of(Version::HTTP_11, &close).keep_alive);
        let upgrade = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(ConnectionWishes::of(Version::HTTP_11, &upgrade).upgrade);
        assert!(!ConnectionWishes::of(Version::HTTP_10, &upgrade).upgrade);
        let expect = headers(&[("expect", "100-Continue")]);
        assert!(ConnectionWishes::of(Version::HTTP_11, &expect).expects_continue);
    }

    #[test]
    fn the_response_head_carries_its_framing_and_a_date() {
        let mut out = Vec::new();
        let upstream = headers(&[
            ("content-type", "text/plain"),
            ("transfer-encoding", "chunked"),
            ("content-length", "99"),
        ]);
        encode_response_head(
            &mut out,
            StatusCode::OK,
            &upstream,
            ResponseFraming::Length(5),
            ConnectionHeader::Close,
        );
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"));
        assert!(text.contains("\r\ndate: "));
        assert!(text.contains("\r\ncontent-length: 5\r\n"));
        assert!(!text.contains("99"));
        assert!(!text.contains("transfer-encoding"));
        assert!(text.ends_with("connection: close\r\n\r\n"));

        let mut out = Vec::new();
        encode_response_head(
            &mut out,
            StatusCode::NOT_FOUND,
            &headers(&[("content-length", "7"), ("date", "then")]),
            ResponseFraming::None,
            ConnectionHeader::Omitted,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\ndate: then\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_method_status_and_version() {
        let choose = ResponseFraming::choose;
        let v11 = Version::HTTP_11;
        assert_eq!(
            choose(true, StatusCode::OK, v11, Some(5)),
            ResponseFraming::None
        );
        assert_eq!(
            choose(false, StatusCode::NO_CONTENT, v11, None),
            ResponseFraming::None
        );
        assert_eq!(
            choose(false, StatusCode::OK, v11, Some(5)),
            ResponseFraming::Length(5)
        );
        assert_eq!(
            choose(false, StatusCode::OK, v11, None),
            ResponseFraming::Chunked
        );
        assert_eq!(
            choose(false, StatusCode::OK, Version::HTTP_10, None),
            ResponseFraming::UntilClose
        );
    }
}
