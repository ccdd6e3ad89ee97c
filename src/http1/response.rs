//! The response head (RFC 9112 §4): parsed from an upstream's bytes by the gateway's
//! client (header values share those bytes), its body's framing told, whether the
//! connection may carry another request; and written to a client by the gateway's
//! server, with the framing and `Connection` header the connection needs and a cached
//! `Date`. One [`ResponseFraming`] serves both directions.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use super::fields::{self, put_header, Codings};
use super::{Decoder, WireError};

/// Headers the proxy adds to a forwarded response.
const ADDED_BY_PROXY: usize = 3;

/// The most header lines a response may carry.
pub const MAX_HEADERS: usize = 100;
/// The largest response head accepted, in bytes.
pub const MAX_HEAD_SIZE: usize = 64 * 1024;

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

/// Parses a response head from the start of `buf`. On success the head's bytes are
/// taken off `buf` (what follows stays: the start of the body) and the header values
/// share them without copying. `Ok(None)`: the head is not complete yet.
pub fn parse_response_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, WireError> {
    // Slots left uninitialised: zeroing a hundred of them for every response costs
    // more than parsing a small head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        &buf[..],
        &mut slots,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) if length > MAX_HEAD_SIZE => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD_SIZE {
                Err(WireError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::Head("too many headers")),
        Err(_) => return Err(WireError::Head("not an HTTP/1.x response")),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(WireError::Head("invalid status code"))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Names are built now; where each value lies is kept, so that the values can share
    // the head's bytes once it is split off the buffer.
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| WireError::Head("invalid header name"))?;
        fields.push((
            name,
            header.value.as_ptr() as usize - base,
            header.value.len(),
        ));
    }
    let head = buf.split_to(length).freeze();
    // Room for what the proxy adds (the request id, a rate limit's `RateLimit-Policy`
    // and `RateLimit`), so that adding them does not grow and rehash the map.
    let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_BY_PROXY);
    for (name, start, len) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(start..start + len))
            .map_err(|_| WireError::Head("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
    }))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body bytes follow (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the connection closes (an upstream's unframed body; to an
    /// HTTP/1.0 client, a body of unknown length).
    UntilClose,
}

impl ResponseFraming {
    /// The decoder that reads a body with this framing.
    pub fn decoder(self) -> Decoder {
        match self {
            ResponseFraming::Empty => Decoder::Done,
            ResponseFraming::Length(length) => Decoder::length(length),
            ResponseFraming::Chunked => Decoder::chunked(),
            ResponseFraming::UntilClose => Decoder::UntilClose,
        }
    }
}

/// Whether a response with `status` never has a body, whatever its headers say.
pub fn is_bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// The framing of the response to a `method` request with `head`, as the gateway's
/// client reads it. `Content-Length` is parsed as strictly as a request's.
pub fn response_framing(
    method: &Method,
    head: &ResponseHead,
) -> Result<ResponseFraming, WireError> {
    if *method == Method::HEAD || is_bodiless(head.status) {
        return Ok(ResponseFraming::Empty);
    }
    let codings = fields::transfer_codings(&head.headers);
    if codings != Codings::Absent && head.version == Version::HTTP_10 {
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        return Err(WireError::Head("Transfer-Encoding in an HTTP/1.0 response"));
    }
    match codings {
        Codings::Chunked | Codings::ChunkedAfterOthers => return Ok(ResponseFraming::Chunked),
        Codings::NotChunkedLast => return Ok(ResponseFraming::UntilClose),
        Codings::Invalid => return Err(WireError::Head("`chunked` more than once, or no coding")),
        Codings::Absent => {}
    }
    Ok(
        match fields::content_length(&head.headers).map_err(|_| WireError::ContentLength)? {
            Some(0) => ResponseFraming::Empty,
            Some(length) => ResponseFraming::Length(length),
            None => ResponseFraming::UntilClose,
        },
    )
}

/// Whether the upstream connection may carry another request after this response.
pub fn keeps_alive(head: &ResponseHead, framing: ResponseFraming) -> bool {
    if framing == ResponseFraming::UntilClose
        || (head.headers.contains_key(TRANSFER_ENCODING)
            && head.headers.contains_key(CONTENT_LENGTH))
    {
        return false;
    }
    let mut close = head.version == Version::HTTP_10;
    for token in fields::connection_tokens(&head.headers) {
        if token.eq_ignore_ascii_case(b"close") {
            return false;
        }
        if token.eq_ignore_ascii_case(b"keep-alive") {
            close = false;
        }
    }
    !close
}

impl ResponseFraming {
    /// The framing the gateway's server writes for a response with `status` to a
    /// request of `version` (`is_head`: a HEAD request), whose body's exact size is
    /// `exact_size` when known.
    pub fn choose(
        is_head: bool,
        status: StatusCode,
        version: Version,
        exact_size: Option<u64>,
    ) -> Self {
        if is_head || is_bodiless(status) {
            return ResponseFraming::Empty;
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
/// framing and `Connection` headers replaced by `framing` and `connection`; a
/// `Content-Length` kept only on a HEAD answer, never on 1xx, 204 or 304: RFC 9110
/// §8.6), `Date` when missing, blank line.
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
    let keep_length = framing == ResponseFraming::Empty && !is_bodiless(status);
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
            put_header(
                out,
                b"content-length",
                fields::format_u64(length, &mut digits),
            );
        }
        ResponseFraming::Chunked => put_header(out, b"transfer-encoding", b"chunked"),
        ResponseFraming::Empty | ResponseFraming::UntilClose => {}
    }
    match connection {
        ConnectionHeader::Omitted => {}
        ConnectionHeader::KeepAlive => put_header(out, b"connection", b"keep-alive"),
        ConnectionHeader::Close => put_header(out, b"connection", b"close"),
        ConnectionHeader::Upgrade => put_header(out, b"connection", b"upgrade"),
    }
    out.extend_from_slice(b"\r\n");
}

/// A `103 Early Hints` response: its fields, without those that describe a
/// connection or a body (the upstream's `Connection`, `Content-Length`, ...).
pub fn encode_early_hints(out: &mut Vec<u8>, fields: &HeaderMap) {
    out.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\n");
    for (name, value) in fields {
        if !fields::is_hop_by_hop(name) && name != CONTENT_LENGTH {
            put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body: the last chunk, the trailers (without the fields a
/// trailer section may not carry), the blank line.
pub fn encode_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        if !fields::is_forbidden_in_trailers(name) {
            put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
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
    use crate::http1::headers;

    fn head(bytes: &[u8]) -> (ResponseHead, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let head = parse_response_head(&mut buf)
            .expect("parses")
            .expect("complete");
        (head, buf)
    }

    #[test]
    fn a_response_head_is_parsed_and_the_body_left_in_the_buffer() {
        let (head, rest) =
            head(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello");
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&rest[..], b"hello");
        assert_eq!(
            response_framing(&Method::GET, &head),
            Ok(ResponseFraming::Length(5))
        );
        assert!(keeps_alive(&head, ResponseFraming::Length(5)));
        assert_eq!(
            response_framing(&Method::HEAD, &head),
            Ok(ResponseFraming::Empty)
        );
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_garbage_is_an_error() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert_eq!(parse_response_head(&mut buf).map(|h| h.is_none()), Ok(true));
        let mut buf = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert!(parse_response_head(&mut buf).is_err());
        let mut buf = BytesMut::from(vec![b'a'; MAX_HEAD_SIZE].as_slice());
        buf[..17].copy_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            parse_response_head(&mut buf).err(),
            Some(WireError::HeadTooLarge)
        );
        // The same limit when the whole head is already buffered.
        let mut whole = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        whole.extend(std::iter::repeat_n(b'v', MAX_HEAD_SIZE));
        whole.extend_from_slice(b"\r\n\r\n");
        let mut buf = BytesMut::from(whole.as_slice());
        assert_eq!(
            parse_response_head(&mut buf).err(),
            Some(WireError::HeadTooLarge)
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |raw: &[u8]| response_framing(&Method::GET, &head(raw).0);
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"),
            Ok(ResponseFraming::Empty)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Ok(ResponseFraming::Chunked)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Ok(ResponseFraming::UntilClose)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n"),
            Ok(ResponseFraming::UntilClose)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n"),
            Ok(ResponseFraming::Length(3))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(WireError::ContentLength)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(WireError::ContentLength)
        );
        for faulty in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(framing(faulty).is_err(), "{faulty:?}");
        }
        let (close, _) = head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!keeps_alive(&close, ResponseFraming::Empty));
        let (old, _) = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!keeps_alive(&old, ResponseFraming::Empty));
        let (old_kept, _) =
            head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(keeps_alive(&old_kept, ResponseFraming::Empty));
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
            ResponseFraming::Empty,
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
            ResponseFraming::Empty
        );
        assert_eq!(
            choose(false, StatusCode::NO_CONTENT, v11, None),
            ResponseFraming::Empty
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
