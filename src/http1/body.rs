//! A message body's framing decoded from the bytes read, as they arrive: a
//! `Content-Length`, chunked (RFC 9112 §7.1), or everything until the peer closes. The
//! same decoder reads request bodies from clients and response bodies from upstreams.
//!
//! Chunked framing is read strictly, so that no peer in front of or behind the gateway
//! can frame the same bytes differently: every line ends in CRLF (a bare LF is an
//! error), the size is 1 to 16 hex digits with nothing around it, extensions follow the
//! grammar (token, or token `=` token / quoted-string, no whitespace, no control bytes),
//! the whole chunk-size line is bounded however it arrives, and the trailer section is
//! read line by line from where it starts, never past its blank line. After an error
//! the decoder stays failed: nothing after a framing error is ever decoded.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::fields::is_forbidden_in_trailers;
use super::WireError;

/// The longest chunk-size line (size and extensions, without its CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes a trailer section may take, blank line included.
pub const MAX_TRAILERS_SIZE: usize = 16 * 1024;
/// The most fields a trailer section may carry.
pub const MAX_TRAILER_FIELDS: usize = 100;
/// The most hex digits in a chunk size: 16 make any `u64`.
const MAX_SIZE_DIGITS: usize = 16;

/// What the decoder made of the bytes buffered so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
}

/// Decodes a body from the bytes read, as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
    /// A framing error was found: the body's end cannot be told, and neither can where
    /// anything after it starts. Every further call fails.
    Failed,
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
    /// A decoder for `length` bytes (none: done at once).
    pub fn length(length: u64) -> Self {
        if length == 0 {
            Decoder::Done
        } else {
            Decoder::Length(length)
        }
    }

    pub fn chunked() -> Self {
        Decoder::Chunked(Chunk::Size)
    }

    /// Every byte of the body has been decoded.
    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// A framing error was found.
    pub fn is_failed(&self) -> bool {
        *self == Decoder::Failed
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
        let decoded = self.decode_next(buf);
        if decoded.is_err() {
            *self = Decoder::Failed;
        }
        decoded
    }

    fn decode_next(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, WireError> {
        loop {
            match self {
                Decoder::Done => return Ok(Some(Decoded::End)),
                Decoder::Failed => return Err(WireError::Chunked("the body's framing failed")),
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
                    let Some(line_end) =
                        find_line(buf, MAX_CHUNK_LINE, "chunk-size line too long")?
                    else {
                        return Ok(None);
                    };
                    let size = parse_chunk_size_line(&buf[..line_end])?;
                    buf.advance(line_end + 2);
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
                    match (buf.first(), buf.get(1)) {
                        (None, _) | (Some(b'\r'), None) => return Ok(None),
                        (Some(b'\r'), Some(b'\n')) => buf.advance(2),
                        _ => return Err(WireError::Chunked("no CRLF after chunk data")),
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

    /// The peer closed the connection: the end of a body delimited by close, an error
    /// for any other framing still expecting bytes.
    pub fn closed(&mut self) -> Result<(), WireError> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => {
                *self = Decoder::Failed;
                Err(WireError::Truncated)
            }
        }
    }
}

/// Where the line at the start of `buf` ends (the index of its CR, followed by LF).
/// `Ok(None)`: no full line yet. A bare LF, a CR not followed by LF, or no line end
/// within `limit` bytes is an error, however the bytes arrive.
fn find_line(buf: &[u8], limit: usize, too_long: &'static str) -> Result<Option<usize>, WireError> {
    let window = &buf[..buf.len().min(limit + 2)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(at) if window[at] == b'\n' => Err(WireError::Chunked("bare LF in chunked framing")),
        Some(at) if at > limit => Err(WireError::Chunked(too_long)),
        Some(at) => match buf.get(at + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(at)),
            Some(_) => Err(WireError::Chunked("bare CR in chunked framing")),
        },
        None if buf.len() > limit => Err(WireError::Chunked(too_long)),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]`, without whitespace anywhere outside quoted strings.
fn parse_chunk_size_line(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(WireError::Chunked("invalid chunk size"));
    }
    if digits > MAX_SIZE_DIGITS {
        return Err(WireError::Chunked("chunk size too long"));
    }
    let size = line[..digits].iter().fold(0u64, |size, &digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => digit - b'A' + 10,
        };
        (size << 4) | u64::from(value)
    });
    check_extensions(&line[digits..])?;
    Ok(size)
}

/// `*( ";" token [ "=" ( token / quoted-string ) ] )` (RFC 9112 §7.1.1, without the
/// optional whitespace, which the gateway refuses).
fn check_extensions(mut rest: &[u8]) -> Result<(), WireError> {
    const BAD: WireError = WireError::Chunked("invalid chunk extension");
    while let Some((&first, after)) = rest.split_first() {
        if first != b';' {
            return Err(BAD);
        }
        let name = after.iter().take_while(|b| is_tchar(**b)).count();
        if name == 0 {
            return Err(BAD);
        }
        rest = &after[name..];
        if let Some(after_equals) = rest.strip_prefix(b"=") {
            rest = match after_equals.first() {
                Some(b'"') => skip_quoted_string(after_equals).ok_or(BAD)?,
                _ => {
                    let value = after_equals.iter().take_while(|b| is_tchar(**b)).count();
                    if value == 0 {
                        return Err(BAD);
                    }
                    &after_equals[value..]
                }
            };
        }
    }
    Ok(())
}

/// What follows the quoted string at the start of `bytes` (RFC 9110 §5.6.4).
fn skip_quoted_string(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 1;
    loop {
        match *bytes.get(at)? {
            b'"' => return Some(&bytes[at + 1..]),
            b'\\' => {
                let escaped = *bytes.get(at + 1)?;
                if !(escaped == b'\t' || escaped == b' ' || escaped >= 0x21 && escaped != 0x7f) {
                    return None;
                }
                at += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => at += 1,
            _ => return None,
        }
    }
}

/// A byte of a token (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The trailer section and its closing blank line, once all of it is buffered: read
/// line by line from the start of `buf`, taking exactly the section's bytes and
/// leaving whatever follows it (a pipelined message) in `buf`. Fields the trailer
/// section may not carry ([`is_forbidden_in_trailers`]) are dropped.
fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, WireError> {
    // Common case: no trailers, just the blank line.
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Some(HeaderMap::new()));
    }
    let mut at = 0;
    let mut fields = 0;
    loop {
        // What the section has left, its blank line's 2 bytes kept back: each line is
        // counted with its CRLF.
        let left = MAX_TRAILERS_SIZE.saturating_sub(at + 2);
        let Some(line_end) = find_line(&buf[at..], left, "trailer section too large")? else {
            return Ok(None);
        };
        if line_end == 0 {
            break;
        }
        if line_end + 2 > left {
            return Err(WireError::Chunked("trailer section too large"));
        }
        fields += 1;
        if fields > MAX_TRAILER_FIELDS {
            return Err(WireError::Chunked("too many trailer fields"));
        }
        split_field(&buf[at..at + line_end])?;
        at += line_end + 2;
    }
    let section = buf.split_to(at + 2).freeze();
    let mut trailers = HeaderMap::with_capacity(fields);
    let mut at = 0;
    while section[at..].len() > 2 {
        let line_end = section[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(0);
        let (name, start, end) = split_field(&section[at..at + line_end])?;
        let name =
            HeaderName::from_bytes(name).map_err(|_| WireError::Chunked("invalid trailer name"))?;
        if !is_forbidden_in_trailers(&name) {
            let value = HeaderValue::from_maybe_shared(section.slice(at + start..at + end))
                .map_err(|_| WireError::Chunked("invalid trailer value"))?;
            trailers.append(name, value);
        }
        at += line_end + 2;
    }
    Ok(Some(trailers))
}

/// A trailer field line: its name, and where its value starts and ends in `line`
/// (without surrounding whitespace). No whitespace before the colon, no folding, no
/// control bytes but HTAB in the value.
fn split_field(line: &[u8]) -> Result<(&[u8], usize, usize), WireError> {
    const BAD: WireError = WireError::Chunked("malformed trailer field");
    let name_len = line.iter().take_while(|b| is_tchar(**b)).count();
    if name_len == 0 || line.get(name_len) != Some(&b':') {
        return Err(BAD);
    }
    let value = &line[name_len + 1..];
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(BAD);
    }
    let start = value
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |last| last + 1);
    Ok((&line[..name_len], name_len + 1 + start, name_len + 1 + end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded body: its bytes, its trailers, and what followed its end.
    type Outcome = Result<(Vec<u8>, Option<HeaderMap>, Vec<u8>), WireError>;

    /// Decodes `input` fed one byte at a time (every state must cope with a split
    /// anywhere); the body, its trailers and the bytes left after its end.
    fn decode_all(decoder: &mut Decoder, input: &[u8]) -> Outcome {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        for (at, &byte) in input.iter().enumerate() {
            buf.extend_from_slice(&[byte]);
            while let Some(decoded) = decoder.decode(&mut buf)? {
                let rest = || {
                    let mut rest = buf.to_vec();
                    rest.extend_from_slice(&input[at + 1..]);
                    rest
                };
                match decoded {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::Trailers(map) => trailers = Some(map),
                    Decoded::End => return Ok((body, trailers, rest())),
                }
                if decoder.is_done() {
                    return Ok((body, trailers, rest()));
                }
            }
        }
        Err(WireError::Chunked("input ended early"))
    }

    /// The same, with all of `input` buffered at once.
    fn decode_whole(input: &[u8]) -> Outcome {
        let mut decoder = Decoder::chunked();
        let mut buf = BytesMut::from(input);
        let mut body = Vec::new();
        let mut trailers = None;
        loop {
            match decoder.decode(&mut buf)? {
                None => return Err(WireError::Chunked("input ended early")),
                Some(Decoded::Data(data)) => body.extend_from_slice(&data),
                Some(Decoded::Trailers(map)) => trailers = Some(map),
                Some(Decoded::End) => return Ok((body, trailers, buf.to_vec())),
            }
            if decoder.is_done() {
                return Ok((body, trailers, buf.to_vec()));
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_byte_by_byte_with_trailers() {
        let mut decoder = Decoder::chunked();
        let (body, trailers, rest) = decode_all(
            &mut decoder,
            b"5;ext=1;q=\"a \\\"b\"\r\nhello\r\nA\r\n, world!!!\r\n0\r\ngrpc-status: 0\r\nx-b:c \r\n\r\nNEXT",
        )
        .expect("decodes");
        assert_eq!(body, b"hello, world!!!");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-b"], "c");
        assert_eq!(rest, b"NEXT");
        let mut decoder = Decoder::chunked();
        let (body, trailers, _) =
            decode_all(&mut decoder, b"3\r\nabc\r\n0\r\n\r\n").expect("decodes");
        assert_eq!((body.as_slice(), trailers), (&b"abc"[..], None));
    }

    #[test]
    fn the_trailer_section_never_takes_what_follows_it() {
        for input in [
            &b"1\r\na\r\n0\r\nx-t: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n"[..],
            b"1\r\na\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        ] {
            let (body, _, rest) = decode_whole(input).expect("decodes");
            assert_eq!(body, b"a");
            assert_eq!(rest, b"GET /next HTTP/1.1\r\n\r\n");
            let (_, _, rest) = decode_all(&mut Decoder::chunked(), input).expect("decodes");
            assert_eq!(rest, b"GET /next HTTP/1.1\r\n\r\n");
        }
        // A trailer section ending in bare LFs is an error, not a section that ends
        // wherever a blank line turns up later.
        assert!(decode_whole(b"1\r\na\r\n0\r\nx-t: 1\n\nGET / HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn framing_trailers_are_dropped() {
        let (_, trailers, _) = decode_whole(
            b"0\r\ncontent-length: 5\r\nTransfer-Encoding: chunked\r\nhost: x\r\nx-sum: 1\r\n\r\n",
        )
        .expect("decodes");
        let trailers = trailers.expect("one trailer left");
        assert_eq!(trailers.len(), 1);
        assert_eq!(trailers["x-sum"], "1");
    }

    #[test]
    fn a_buffered_last_chunk_ends_the_body_with_its_data() {
        let mut decoder = Decoder::chunked();
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        let first = decoder.decode(&mut buf).expect("decodes");
        assert_eq!(first, Some(Decoded::Data(Bytes::from_static(b"hello"))));
        assert!(decoder.is_done() && buf.is_empty());

        // Not all of it buffered yet: the end comes with the next bytes.
        let mut decoder = Decoder::chunked();
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
    fn malformed_chunked_bodies_are_errors_and_stay_failed() {
        for input in [
            &b"Z\r\nab\r\n0\r\n\r\n"[..],
            b"zz\r\nab\r\n0\r\n\r\n",
            b"0x2\r\nab\r\n0\r\n\r\n",
            b"+2\r\nab\r\n0\r\n\r\n",
            b" 2\r\nab\r\n0\r\n\r\n",
            b"2 \r\nab\r\n0\r\n\r\n",
            b"2 ;a\r\nab\r\n0\r\n\r\n",
            b"2; a\r\nab\r\n0\r\n\r\n",
            b"2;\r\nab\r\n0\r\n\r\n",
            b"2;a=\r\nab\r\n0\r\n\r\n",
            b"2;a=\"b\r\nab\r\n0\r\n\r\n",
            b"2;a=\"\x01\"\r\nab\r\n0\r\n\r\n",
            b"2;a\x00\r\nab\r\n0\r\n\r\n",
            b"00000000000000002\r\nab\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"2\nab\r\n0\r\n\r\n",
            b"2\r\nab\n0\r\n\r\n",
            b"2\r\nabX\r\n0\r\n\r\n",
            b"2\r\nab\r\r\n0\r\n\r\n",
            b"2\r\nab\r\n0\n\n",
            b"2\r\nab\r\n0\r\nx-t: 1\n\r\n",
            b"2\r\nab\r\n0\r\nno colon\r\n\r\n",
            b"2\r\nab\r\n0\r\nx-t : 1\r\n\r\n",
            b"2\r\nab\r\n0\r\nx-t: 1\r\n folded\r\n\r\n",
            b"2\r\nab\r\n0\r\nx-t: a\x00b\r\n\r\n",
        ] {
            let mut decoder = Decoder::chunked();
            assert!(decode_all(&mut decoder, input).is_err(), "{input:?}");
            assert!(decoder.is_failed(), "{input:?}");
            let mut buf = BytesMut::from(&b"0\r\n\r\n"[..]);
            assert!(decoder.decode(&mut buf).is_err(), "stays failed: {input:?}");
            assert!(decode_whole(input).is_err(), "{input:?}");
        }
        // 16 digits are fine; the line limit holds however the bytes arrive.
        assert!(decode_whole(b"000000000000000a\r\n0123456789\r\n0\r\n\r\n").is_ok());
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE));
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert!(decode_whole(&long).is_err());
        assert!(decode_all(&mut Decoder::chunked(), &long).is_err());
        let mut decoder = Decoder::chunked();
        let mut buf = BytesMut::from(vec![b'1'; MAX_CHUNK_LINE + 2].as_slice());
        assert!(decoder.decode(&mut buf).is_err());
    }

    #[test]
    fn trailer_sections_are_bounded() {
        let mut big = b"0\r\n".to_vec();
        for i in 0..MAX_TRAILER_FIELDS + 1 {
            big.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        assert!(decode_whole(&big).is_err());
        let mut long = b"0\r\nx-long: ".to_vec();
        long.extend(std::iter::repeat_n(b'v', MAX_TRAILERS_SIZE));
        assert!(decode_all(&mut Decoder::chunked(), &long).is_err());
        // Exactly the limit, each line with its CRLF and the blank line counted.
        let section = |total: usize| {
            let mut body = b"0\r\nx-long: ".to_vec();
            body.extend(std::iter::repeat_n(b'v', total - b"x-long: \r\n\r\n".len()));
            body.extend_from_slice(b"\r\n\r\n");
            body
        };
        assert!(decode_whole(&section(MAX_TRAILERS_SIZE)).is_ok());
        assert!(decode_whole(&section(MAX_TRAILERS_SIZE + 1)).is_err());
    }

    #[test]
    fn length_bodies_stop_at_their_length_and_close_delimited_ones_at_close() {
        let mut decoder = Decoder::length(3);
        let mut buf = BytesMut::from(&b"abcHTTP/1.1"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Decoded::Data(Bytes::from_static(b"abc"))))
        );
        assert!(decoder.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1");
        let mut decoder = Decoder::length(3);
        assert_eq!(decoder.closed(), Err(WireError::Truncated));
        assert!(decoder.is_failed());
        let mut decoder = Decoder::UntilClose;
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
