//! Generated inputs for the differential test: valid seed requests and responses, each
//! mutated one to three times (bytes flipped, inserted, deleted; header lines
//! duplicated, swapped, re-cased, rewritten, added; line ends changed; chunk-size lines
//! rewritten; truncated; another message appended). Input `n` of seed `s` is always the
//! same bytes, so a failure replays from the two numbers alone.

use fastrand::Rng;

/// Valid requests the mutations start from.
const REQUEST_SEEDS: &[&[u8]] = &[
    b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /old2 HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
    b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-a\r\n\r\na;n=\"v\"\r\n0123456789\r\n1\r\n!\r\n0\r\nx-a: 1\r\nx-b: two words\r\n\r\nPOST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok",
    b"DELETE /d HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\nX-Other: 2\r\nConnection: close\r\n\r\n",
    b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\n",
];

/// Valid responses the mutations start from.
const RESPONSE_SEEDS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the connection closes",
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nclose-delimited",
    b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 4\r\n\r\noops",
];

/// Bytes that break framing when they land in the wrong place.
const SPECIAL: &[u8] = b"\r\n \t\0:;,=\"\\0aF_-\x01\x0b\x7f\x80\xff";

/// Header lines worth adding anywhere.
const LINES: &[&[u8]] = &[
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: identity",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: chunked,",
    b"Content-Length: 3",
    b"Content-Length: 0",
    b"Content-Length: 5, 5",
    b"Content-Length: 005",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: close, keep-alive",
    b"Connection: upgrade",
    b"Upgrade: h2c",
    b"Expect: 100-continue",
    b"Expect: 200-ok",
    b"Host: b",
    b"Host:",
    b"Transfer_Encoding: chunked",
    b"Content_Length: 3",
    b"Trailer: x-t",
    b"X-Empty:",
];

/// Values worth putting in place of a field's value.
const VALUES: &[&[u8]] = &[
    b"chunked",
    b"Chunked",
    b"CHUNKED",
    b"chunked, chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b" chunked ",
    b"chunked,",
    b",chunked",
    b"5",
    b"05",
    b"+5",
    b"0x5",
    b"5 5",
    b"5,5",
    b"-1",
    b"18446744073709551615",
    b"",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"100-continue",
    b"100-Continue",
    b"a\x00b",
    b"a\x01b",
    b"\x80\xff",
];

pub fn request(seed: u64, index: u64) -> Vec<u8> {
    generate(seed, index, REQUEST_SEEDS)
}

pub fn response(seed: u64, index: u64) -> Vec<u8> {
    generate(seed, index, RESPONSE_SEEDS)
}

/// The rng for input `index` of `seed`.
pub fn rng(seed: u64, index: u64) -> Rng {
    Rng::with_seed(seed ^ index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn generate(seed: u64, index: u64, seeds: &[&[u8]]) -> Vec<u8> {
    let mut rng = rng(seed, index);
    let mut bytes = seeds[rng.usize(..seeds.len())].to_vec();
    for _ in 0..rng.usize(1..=3) {
        mutate(&mut rng, &mut bytes, seeds);
    }
    bytes
}

/// Where the head ends (after its blank line), or the whole input.
fn head_end(bytes: &[u8]) -> usize {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |at| at + 4)
}

/// The header lines of the first head: (start, end without CRLF).
fn header_lines(bytes: &[u8]) -> Vec<(usize, usize)> {
    let end = head_end(bytes);
    let mut lines = Vec::new();
    let mut start = match bytes.windows(2).position(|w| w == b"\r\n") {
        Some(at) => at + 2,
        None => return lines,
    };
    while start < end {
        match bytes[start..end].windows(2).position(|w| w == b"\r\n") {
            Some(0) | None => break,
            Some(len) => {
                lines.push((start, start + len));
                start += len + 2;
            }
        }
    }
    lines
}

/// A position: anywhere, or next to a byte that matters to framing.
fn position(rng: &mut Rng, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        return 0;
    }
    if rng.bool() {
        return rng.usize(..=bytes.len());
    }
    let marks: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| b"\r\n:; ,".contains(b))
        .map(|(at, _)| at)
        .collect();
    if marks.is_empty() {
        return rng.usize(..=bytes.len());
    }
    (marks[rng.usize(..marks.len())] + rng.usize(..=1)).min(bytes.len())
}

fn special(rng: &mut Rng) -> u8 {
    if rng.u8(..4) == 0 {
        rng.u8(..)
    } else {
        SPECIAL[rng.usize(..SPECIAL.len())]
    }
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, seeds: &[&[u8]]) {
    match rng.u8(..14) {
        0 if !bytes.is_empty() => {
            let at = rng.usize(..bytes.len());
            bytes[at] = special(rng);
        }
        1 => {
            let at = position(rng, bytes);
            let byte = special(rng);
            bytes.insert(at, byte);
        }
        2 if !bytes.is_empty() => {
            let at = position(rng, bytes).min(bytes.len() - 1);
            let len = rng.usize(1..=3).min(bytes.len() - at);
            bytes.drain(at..at + len);
        }
        3 => {
            // Duplicated `Host` lines are refused at once; a quarter of the time is
            // enough of that, the framing behind them is what needs the inputs.
            let lines: Vec<(usize, usize)> = header_lines(bytes)
                .into_iter()
                .filter(|&(start, _)| {
                    !bytes[start..]
                        .get(..5)
                        .is_some_and(|name| name.eq_ignore_ascii_case(b"host:"))
                        || rng.u8(..4) == 0
                })
                .collect();
            if !lines.is_empty() {
                let (start, end) = lines[rng.usize(..lines.len())];
                let mut line = bytes[start..end].to_vec();
                line.extend_from_slice(b"\r\n");
                let at = lines[rng.usize(..lines.len())].0;
                bytes.splice(at..at, line);
            }
        }
        4 => {
            let lines = header_lines(bytes);
            if lines.len() >= 2 {
                let a = rng.usize(..lines.len());
                let b = rng.usize(..lines.len());
                let (a, b) = (lines[a.min(b)], lines[a.max(b)]);
                if a != b {
                    let first = bytes[a.0..a.1].to_vec();
                    let second = bytes[b.0..b.1].to_vec();
                    bytes.splice(b.0..b.1, first);
                    bytes.splice(a.0..a.1, second);
                }
            }
        }
        5 => {
            // Case changes: in a name, or in `chunked`.
            let lines = header_lines(bytes);
            if rng.bool() && !lines.is_empty() {
                let (start, end) = lines[rng.usize(..lines.len())];
                let colon = bytes[start..end]
                    .iter()
                    .position(|&b| b == b':')
                    .unwrap_or(end - start);
                for byte in &mut bytes[start..start + colon] {
                    if rng.bool() {
                        *byte = if byte.is_ascii_lowercase() {
                            byte.to_ascii_uppercase()
                        } else {
                            byte.to_ascii_lowercase()
                        };
                    }
                }
            } else if let Some(at) = find(bytes, b"chunked") {
                for byte in &mut bytes[at..at + 7] {
                    if rng.bool() {
                        *byte = byte.to_ascii_uppercase();
                    }
                }
            }
        }
        6 => {
            let lines = header_lines(bytes);
            if !lines.is_empty() {
                let (start, end) = lines[rng.usize(..lines.len())];
                if let Some(colon) = bytes[start..end].iter().position(|&b| b == b':') {
                    let value = VALUES[rng.usize(..VALUES.len())];
                    let space: &[u8] = if rng.bool() { b" " } else { b"" };
                    let new: Vec<u8> = [space, value].concat();
                    bytes.splice(start + colon + 1..end, new);
                }
            }
        }
        7 => {
            let lines = header_lines(bytes);
            let at = if lines.is_empty() {
                head_end(bytes).saturating_sub(2)
            } else {
                lines[rng.usize(..lines.len())].0
            };
            let mut line = LINES[rng.usize(..LINES.len())].to_vec();
            line.extend_from_slice(b"\r\n");
            bytes.splice(at..at, line);
        }
        8 => {
            // A line end changed: bare LF, bare CR, an extra CR, a fold.
            let ends: Vec<usize> = bytes
                .windows(2)
                .enumerate()
                .filter(|(_, w)| *w == b"\r\n")
                .map(|(at, _)| at)
                .collect();
            if !ends.is_empty() {
                let at = ends[rng.usize(..ends.len())];
                let new: &[u8] = match rng.u8(..7) {
                    0 => b"\n",
                    1 => b"\r",
                    2 => b"\r\r\n",
                    3 => b"\n\r",
                    4 => b" \r\n",
                    5 => b"\r\n ",
                    _ => b"\r\n\t",
                };
                bytes.splice(at..at + 2, new.iter().copied());
            }
        }
        9 => rewrite_chunk_line(rng, bytes),
        10 if !bytes.is_empty() => {
            let at = rng.usize(..bytes.len());
            bytes.truncate(at);
        }
        11 => {
            let next = seeds[rng.usize(..seeds.len())];
            bytes.extend_from_slice(next);
        }
        12 => {
            // A run of one byte: long lines near the limits.
            let at = position(rng, bytes);
            let len = match rng.u8(..4) {
                0 => 4096,
                1 => 16 * 1024,
                _ => rng.usize(1..64),
            };
            let byte = if rng.bool() { b'a' } else { special(rng) };
            bytes.splice(at..at, std::iter::repeat_n(byte, len));
        }
        _ => rewrite_chunk_line(rng, bytes),
    }
}

fn find(bytes: &[u8], needle: &[u8]) -> Option<usize> {
    bytes.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites one chunk-size line of the first body (size and extensions).
fn rewrite_chunk_line(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let body = head_end(bytes);
    if body >= bytes.len() {
        return;
    }
    let mut starts = vec![body];
    starts.extend(
        bytes[body..]
            .windows(2)
            .enumerate()
            .filter(|(_, w)| *w == b"\r\n")
            .map(|(at, _)| body + at + 2),
    );
    starts.retain(|&at| bytes.get(at).is_some_and(u8::is_ascii_hexdigit));
    if starts.is_empty() {
        return;
    }
    let start = starts[rng.usize(..starts.len())];
    let end = bytes[start..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(bytes.len(), |len| start + len);
    let digits = bytes[start..end]
        .iter()
        .take_while(|b| b.is_ascii_hexdigit())
        .count()
        .min(16);
    let size = std::str::from_utf8(&bytes[start..start + digits])
        .ok()
        .and_then(|digits| u64::from_str_radix(digits, 16).ok())
        .unwrap_or(0);
    let line = match rng.u8(..26) {
        0 => format!("{size:X}"),
        1 => format!("0{size:x}"),
        2 => format!("0x{size:x}"),
        3 => format!("+{size:x}"),
        4 => format!(" {size:x}"),
        5 => format!("{size:x} "),
        6 => format!("{size:x}\t"),
        7 => format!("{size:x};a"),
        8 => format!("{size:x};a=b"),
        9 => format!("{size:x};a=\"q s\""),
        10 => format!("{size:x};a=\"\\\"\""),
        11 => format!("{size:x} ;a"),
        12 => format!("{size:x}; a"),
        13 => format!("{size:x};a =b"),
        14 => format!("{size:x};a= b"),
        15 => format!("{size:x};\x01"),
        16 => format!("0000000000000000{size:x}"),
        17 => format!("-{size:x}"),
        18 => format!("{:x}", size.wrapping_add(1)),
        19 => format!("{:x}", size.saturating_sub(1)),
        20 => "Z".to_owned(),
        21 => format!("{size:x};a=\"b"),
        22 => format!("{size:x};a;b=c;d=\"e\""),
        23 => format!("{size:x};a=\"\x7f\""),
        24 => "fffffffffffffffff".to_owned(),
        _ => format!("{size:x};"),
    };
    bytes.splice(start..end, line.into_bytes());
}
