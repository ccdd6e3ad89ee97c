//! HTTP/1.1 on the wire, as the gateway's upstream client speaks it (RFC 9112): the
//! request head written, the response head parsed, and the response body's framing
//! (length, chunked, until close) decoded from the bytes read. Pure functions over
//! buffers; the I/O is in [`super`].

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// The most header lines a response (or a chunked body's trailers) may carry.
pub const MAX_HEADERS: usize = 100;
/// The largest response head accepted, in bytes.
pub const MAX_HEAD_SIZE: usize = 64 * 1024;
/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes accepted at the end of a chunked body.
const MAX_TRAILERS_SIZE: usize = 16 * 1024;

/// A response that breaks the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed response head: {0}")]
    Head(&'static str),
    #[error("response head larger than {MAX_HEAD_SIZE} bytes")]
    HeadTooLarge,
    #[error("conflicting or invalid Content-Length")]
    ContentLength,
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("the upstream closed the connection before the body ended")]
    Truncated,
}

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Chooses the request body's framing: the `Content-Length` the request carries, the
/// body's exact size when known, chunked otherwise.
pub fn request_framing(
    method: &Method,
    headers: &HeaderMap,
    ends_now: bool,
    exact_size: Option<u64>,
) -> RequestFraming {
    if let Some(length) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
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
/// (with `Host` when the request has none, and the framing header `framing` needs;
/// any `Transfer-Encoding` the request carries is replaced), and the blank line.
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
        put_header(out, HOST.as_str(), default_host.as_bytes());
    }
    let has_length = headers.contains_key(CONTENT_LENGTH);
    for (name, value) in headers {
        if name == TRANSFER_ENCODING {
            continue;
        }
        put_header(out, name.as_str(), value.as_bytes());
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(_) if has_length => {}
        RequestFraming::Length(length) => {
            let mut digits = [0; 20];
            put_header(
                out,
                CONTENT_LENGTH.as_str(),
                format_u64(length, &mut digits),
            );
        }
        RequestFraming::Chunked => put_header(out, TRANSFER_ENCODING.as_str(), b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
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
    // Room for the request id the proxy adds, so that adding it does not rehash.
    let mut headers = HeaderMap::with_capacity(fields.len() + 1);
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

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// The framing of the response to a `method` request with `head`.
pub fn response_framing(
    method: &Method,
    head: &ResponseHead,
) -> Result<ResponseFraming, WireError> {
    if *method == Method::HEAD
        || head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok(ResponseFraming::Empty);
    }
    if head.headers.contains_key(TRANSFER_ENCODING) {
        let last_coding = head
            .headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last_coding {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => ResponseFraming::Chunked,
            _ => ResponseFraming::UntilClose,
        });
    }
    let mut length = None;
    for value in head.headers.get_all(CONTENT_LENGTH) {
        let value = value.to_str().map_err(|_| WireError::ContentLength)?;
        for item in value.split(',') {
            let parsed: u64 = item.trim().parse().map_err(|_| WireError::ContentLength)?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(WireError::ContentLength);
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => ResponseFraming::Empty,
        Some(length) => ResponseFraming::Length(length),
        None => ResponseFraming::UntilClose,
    })
}

/// Whether the connection may carry another request after this response.
pub fn keeps_alive(head: &ResponseHead, framing: ResponseFraming) -> bool {
    if framing == ResponseFraming::UntilClose
        || (head.headers.contains_key(TRANSFER_ENCODING)
            && head.headers.contains_key(CONTENT_LENGTH))
    {
        return false;
    }
    let mut close = head.version == Version::HTTP_10;
    for value in head.headers.get_all(CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            if token.eq_ignore_ascii_case("close") {
                return false;
            }
            if token.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        }
    }
    !close
}

/// What the decoder made of the bytes buffered so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
}

/// Decodes a response body from the bytes read, as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where a chunked decoder is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// After a chunk's data, expecting its CRLF.
    DataEnd,
    /// After the last chunk, reading trailer lines.
    Trailers,
}

impl Decoder {
    pub fn new(framing: ResponseFraming) -> Self {
        match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => Decoder::Done,
            ResponseFraming::Length(length) => Decoder::Length(length),
            ResponseFraming::Chunked => Decoder::Chunked(Chunk::Size),
            ResponseFraming::UntilClose => Decoder::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Bytes still expected, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(left) => Some(*left),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body from `buf`, taking what it uses; `Ok(None)`: more
    /// bytes are needed. The end of a body delimited by close is [`Decoder::closed`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, WireError> {
        loop {
            match self {
                Decoder::Done => return Ok(Some(Decoded::End)),
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Some(Decoded::Data(buf.split_to(take).freeze())));
                }
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(Decoded::Data(buf.split().freeze())));
                }
                Decoder::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)
                        .map_err(|()| WireError::Chunked("chunk-size line too long"))?
                    else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size(&line)?;
                    *self = Decoder::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Decoder::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= take as u64;
                    let data = buf.split_to(take).freeze();
                    if *left == 0 {
                        *self = Decoder::Chunked(Chunk::DataEnd);
                        self.take_buffered_end(buf);
                    }
                    return Ok(Some(Decoded::Data(data)));
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    match buf.first() {
                        None => return Ok(None),
                        Some(b'\n') => buf.advance(1),
                        Some(b'\r') => match buf.get(1) {
                            None => return Ok(None),
                            Some(b'\n') => buf.advance(2),
                            Some(_) => return Err(WireError::Chunked("no CRLF after chunk data")),
                        },
                        Some(_) => return Err(WireError::Chunked("no CRLF after chunk data")),
                    }
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Trailers) => {
                    return match parse_trailers(buf)? {
                        None => Ok(None),
                        Some(trailers) => {
                            *self = Decoder::Done;
                            Ok(Some(if trailers.is_empty() {
                                Decoded::End
                            } else {
                                Decoded::Trailers(trailers)
                            }))
                        }
                    };
                }
            }
        }
    }

    /// After a chunk's data: when what follows in `buf` is the last chunk without
    /// trailers (as nearly every server sends it), takes it now. The body then reports
    /// its end together with its last data: the proxy writes the end of its response in
    /// the same write as that data, and the connection goes back to its pool at once.
    /// Anything else is left for [`Decoder::decode`].
    fn take_buffered_end(&mut self, buf: &mut BytesMut) {
        const LAST_CHUNK_AFTER_DATA: &[u8] = b"\r\n0\r\n\r\n";
        if buf.starts_with(LAST_CHUNK_AFTER_DATA) {
            buf.advance(LAST_CHUNK_AFTER_DATA.len());
            *self = Decoder::Done;
        }
    }

    /// The upstream closed the connection: the end of a body delimited by close, an
    /// error for any other framing still expecting bytes.
    pub fn closed(&mut self) -> Result<(), WireError> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(WireError::Truncated),
        }
    }
}

/// Takes one line (without its line ending) off `buf`. `Ok(None)`: no full line yet;
/// `Err`: no line ending within `limit` bytes.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, ()> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > limit => Err(()),
        None => Ok(None),
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits_end == 0 {
        return Err(WireError::Chunked("missing chunk size"));
    }
    let rest = &line[digits_end..];
    let rest_ok = rest.is_empty()
        || rest
            .iter()
            .find(|b| **b != b' ' && **b != b'\t')
            .is_none_or(|b| *b == b';');
    if !rest_ok {
        return Err(WireError::Chunked("invalid chunk size"));
    }
    let mut size: u64 = 0;
    for &digit in &line[..digits_end] {
        let value = (digit as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(value)))
            .ok_or(WireError::Chunked("chunk size overflows"))?;
    }
    Ok(size)
}

/// The trailer section and its closing blank line, once all of it is buffered.
fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, WireError> {
    // Common case: no trailers, just the blank line.
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Some(HeaderMap::new()));
    }
    if buf.starts_with(b"\n") {
        buf.advance(1);
        return Ok(Some(HeaderMap::new()));
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|at| at + 2));
    let Some(end) = end else {
        return if buf.len() > MAX_TRAILERS_SIZE {
            Err(WireError::Chunked("trailers too large"))
        } else {
            Ok(None)
        };
    };
    let section = buf.split_to(end);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = match httparse::parse_headers(&section, &mut slots) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(WireError::Chunked("malformed trailers")),
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for header in parsed {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| WireError::Chunked("invalid trailer name"))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| WireError::Chunked("invalid trailer value"))?;
        trailers.append(name, value);
    }
    Ok(Some(trailers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> (ResponseHead, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let head = parse_response_head(&mut buf)
            .expect("parses")
            .expect("complete");
        (head, buf)
    }

    fn decode_all(
        decoder: &mut Decoder,
        input: &[u8],
    ) -> Result<(Vec<u8>, Option<HeaderMap>), WireError> {
        // Fed one byte at a time: every state must cope with a split anywhere.
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        for &byte in input {
            buf.extend_from_slice(&[byte]);
            while let Some(decoded) = decoder.decode(&mut buf)? {
                match decoded {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::Trailers(map) => trailers = Some(map),
                    Decoded::End => return Ok((body, trailers)),
                }
                if decoder.is_done() {
                    return Ok((body, trailers));
                }
            }
        }
        Err(WireError::Chunked("input ended early"))
    }

    #[test]
    fn a_request_head_carries_host_and_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        let mut out = Vec::new();
        let host = HeaderValue::from_static("backend:8080");
        let framing = request_framing(&Method::POST, &headers, false, None);
        assert_eq!(framing, RequestFraming::Chunked);
        encode_request_head(&mut out, &Method::POST, "/a?b=1", &headers, &host, framing);
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf-8"),
            "POST /a?b=1 HTTP/1.1\r\nhost: backend:8080\r\nx-request-id: abc\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("client.example"));
        let framing = request_framing(&Method::PUT, &headers, false, Some(1234));
        encode_request_head(&mut out, &Method::PUT, "/", &headers, &host, framing);
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf-8"),
            "PUT / HTTP/1.1\r\nhost: client.example\r\ncontent-length: 1234\r\n\r\n"
        );
        let framing = request_framing(&Method::GET, &HeaderMap::new(), true, Some(0));
        assert_eq!(framing, RequestFraming::Empty);
        assert_eq!(
            request_framing(&Method::POST, &HeaderMap::new(), true, Some(0)),
            RequestFraming::Length(0)
        );
    }

    #[test]
    fn decimal_formatting_covers_the_range() {
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
        let (close, _) = head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!keeps_alive(&close, ResponseFraming::Empty));
        let (old, _) = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!keeps_alive(&old, ResponseFraming::Empty));
        let (old_kept, _) =
            head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(keeps_alive(&old_kept, ResponseFraming::Empty));
    }

    #[test]
    fn chunked_bodies_decode_byte_by_byte_with_trailers() {
        let mut decoder = Decoder::new(ResponseFraming::Chunked);
        let (body, trailers) = decode_all(
            &mut decoder,
            b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\ngrpc-status: 0\r\nx-b: c\r\n\r\n",
        )
        .expect("decodes");
        assert_eq!(body, b"hello, world!!!");
        let trailers = trailers.expect("trailers");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        let mut decoder = Decoder::new(ResponseFraming::Chunked);
        let (body, trailers) = decode_all(&mut decoder, b"3\r\nabc\r\n0\r\n\r\n").expect("decodes");
        assert_eq!((body.as_slice(), trailers), (&b"abc"[..], None));
    }

    #[test]
    fn a_buffered_last_chunk_ends_the_body_with_its_data() {
        let mut decoder = Decoder::new(ResponseFraming::Chunked);
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        let first = decoder.decode(&mut buf).expect("decodes");
        assert_eq!(first, Some(Decoded::Data(Bytes::from_static(b"hello"))));
        assert!(decoder.is_done() && buf.is_empty());

        // Not all of it buffered yet: the end comes with the next bytes.
        let mut decoder = Decoder::new(ResponseFraming::Chunked);
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n"[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(Decoded::Data(_)))
        ));
        assert!(!decoder.is_done());
        assert_eq!(decoder.decode(&mut buf).expect("decodes"), None);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            decoder.decode(&mut buf).expect("decodes"),
            Some(Decoded::End)
        );
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for input in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"2\r\nabX\r\n0\r\n\r\n",
            b"fffffffffffffffffff\r\n",
            b"2 junk\r\nab\r\n0\r\n\r\n",
        ] {
            let mut decoder = Decoder::new(ResponseFraming::Chunked);
            assert!(decode_all(&mut decoder, input).is_err(), "{input:?}");
        }
        let mut decoder = Decoder::new(ResponseFraming::Chunked);
        let mut buf = BytesMut::from(vec![b'1'; MAX_CHUNK_LINE + 2].as_slice());
        assert!(decoder.decode(&mut buf).is_err());
    }

    #[test]
    fn length_bodies_stop_at_their_length_and_close_delimited_ones_at_close() {
        let mut decoder = Decoder::new(ResponseFraming::Length(3));
        let mut buf = BytesMut::from(&b"abcHTTP/1.1"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Decoded::Data(Bytes::from_static(b"abc"))))
        );
        assert!(decoder.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1");
        let mut decoder = Decoder::new(ResponseFraming::Length(3));
        assert_eq!(decoder.closed(), Err(WireError::Truncated));
        let mut decoder = Decoder::new(ResponseFraming::UntilClose);
        let mut buf = BytesMut::from(&b"xyz"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Decoded::Data(Bytes::from_static(b"xyz"))))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(decoder.closed().is_ok());
        assert!(decoder.is_done());
    }
}
