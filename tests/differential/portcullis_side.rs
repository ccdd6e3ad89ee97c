//! The Portcullis side of the differential test: the codec in `src/http1` driven over a
//! byte stream the way the gateway's server (`src/server/http1`, `next_head` and
//! `answer`) and its upstream client (`src/upstream/http1`, `exchange` and `read_head`)
//! drive it, with the bytes arriving whole or in pieces. Pure and synchronous: no I/O,
//! no runtime, so that the allocations measured around it are the codec's own.

use bytes::BytesMut;
use http::{HeaderMap, Method, StatusCode, Version};
use portcullis::config::UnderscoreHeaders;
use portcullis::http1::request::{self, BodyFraming};
use portcullis::http1::response::{self, ResponseFraming};
use portcullis::http1::{Decoded, Decoder, WireError};

/// The server's default head limits (`max_header_size`, `max_headers`).
pub const MAX_HEAD_SIZE: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 100;
/// The upstream client's cap on interim `1xx` responses before the final one.
pub const MAX_INTERIM_RESPONSES: usize = 8;

/// Header fields as lowercase name and value bytes, in `HeaderMap` order.
pub type Fields = Vec<(String, Vec<u8>)>;

pub fn fields(map: &HeaderMap) -> Fields {
    map.iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// The input as it arrives: one piece, or several.
pub struct Feed<'a> {
    pieces: Vec<&'a [u8]>,
    next: usize,
}

impl<'a> Feed<'a> {
    pub fn whole(input: &'a [u8]) -> Self {
        Feed {
            pieces: vec![input],
            next: 0,
        }
    }

    /// `input` cut at `points` (sorted, each within the input).
    pub fn split(input: &'a [u8], points: &[usize]) -> Self {
        let mut pieces = Vec::with_capacity(points.len() + 1);
        let mut start = 0;
        for &point in points {
            pieces.push(&input[start..point]);
            start = point;
        }
        pieces.push(&input[start..]);
        Feed { pieces, next: 0 }
    }

    /// How many bytes have been handed out so far.
    fn fed(&self) -> usize {
        self.pieces[..self.next]
            .iter()
            .map(|piece| piece.len())
            .sum()
    }

    /// Appends the next piece to `buf`; `false`: the input has ended (the peer closed).
    fn more(&mut self, buf: &mut BytesMut) -> bool {
        match self.pieces.get(self.next) {
            Some(piece) => {
                buf.extend_from_slice(piece);
                self.next += 1;
                true
            }
            None => false,
        }
    }
}

/// How the stream ended on the Portcullis side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte was read as whole messages, or the connection would close (or turn
    /// into a tunnel) after the last one.
    Complete,
    /// A message was refused: the reason, as the codec words it.
    Rejected(String),
    /// The input ended inside a message.
    Incomplete,
}

/// A request Portcullis accepted, as the server would hand it to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// The target's authority, for an absolute-form target.
    pub authority: Option<String>,
    pub version: Version,
    /// The fields as parsed, before `check_head`.
    pub raw_fields: Fields,
    /// The fields after `check_head` (what the proxy sees).
    pub fields: Fields,
    pub body: Vec<u8>,
    pub trailers: Fields,
    pub keep_alive: bool,
    pub upgrade: bool,
}

/// A request head that parsed, whose message then failed or did not end: kept so that a
/// difference can be told apart by what the head said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub version: Version,
    pub raw_fields: Fields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requests {
    pub messages: Vec<Request>,
    pub end: End,
    pub pending: Option<Pending>,
    /// Where each message started in the input, the refused or unfinished one included.
    pub starts: Vec<usize>,
}

/// Reads requests from `feed` as the server does: head, checks, body, and again while
/// the connection would be kept alive.
pub fn requests(mut feed: Feed<'_>, underscores: UnderscoreHeaders) -> Requests {
    let mut buf = BytesMut::new();
    feed.more(&mut buf);
    let mut messages = Vec::new();
    let mut starts = Vec::new();
    macro_rules! finish {
        ($end:expr, $pending:expr) => {
            return Requests {
                messages,
                end: $end,
                pending: $pending,
                starts,
            }
        };
    }
    loop {
        if buf.is_empty() && !feed.more(&mut buf) {
            finish!(End::Complete, None);
        }
        starts.push(feed.fed() - buf.len());
        let mut head = loop {
            match request::parse_request_head(&mut buf, MAX_HEAD_SIZE, MAX_HEADERS) {
                Err(error) => finish!(End::Rejected(error.to_string()), None),
                Ok(Some(head)) => break head,
                Ok(None) => {
                    if !feed.more(&mut buf) {
                        finish!(End::Incomplete, None);
                    }
                }
            }
        };
        let pending = Pending {
            version: head.version,
            raw_fields: fields(&head.headers),
        };
        let checked = match request::check_head(&mut head, underscores) {
            Ok(checked) => checked,
            Err(error) => finish!(End::Rejected(error.to_string()), Some(pending)),
        };
        let mut decoder = match checked.framing {
            BodyFraming::None => Decoder::Done,
            BodyFraming::Length(length) => Decoder::length(length),
            BodyFraming::Chunked => Decoder::chunked(),
        };
        let (mut body, mut trailers) = (Vec::new(), Vec::new());
        loop {
            match decoder.decode(&mut buf) {
                Err(error) => finish!(End::Rejected(error.to_string()), Some(pending)),
                Ok(Some(Decoded::Data(data))) => body.extend_from_slice(&data),
                Ok(Some(Decoded::Trailers(map))) => trailers = fields(&map),
                Ok(Some(Decoded::End)) => break,
                Ok(None) => {
                    if !feed.more(&mut buf) {
                        finish!(End::Incomplete, Some(pending));
                    }
                }
            }
        }
        let stop = !checked.wishes.keep_alive || checked.wishes.upgrade;
        messages.push(Request {
            method: head.method.as_str().to_owned(),
            target: head.uri.to_string(),
            authority: head.uri.authority().map(|a| a.as_str().to_owned()),
            version: head.version,
            raw_fields: pending.raw_fields,
            fields: fields(&head.headers),
            body,
            trailers,
            keep_alive: checked.wishes.keep_alive,
            upgrade: checked.wishes.upgrade,
        });
        if stop {
            finish!(End::Complete, None);
        }
    }
}

/// A response Portcullis accepted, as the upstream client would hand it to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub version: Version,
    pub fields: Fields,
    pub framing: ResponseFraming,
    /// Whether the client would put the connection back in its pool afterwards.
    pub keep_alive: bool,
    pub body: Vec<u8>,
    pub trailers: Fields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseOutcome {
    pub response: Option<Response>,
    pub end: End,
    /// The final head, when it parsed (also when its body then failed).
    pub head: Option<(Version, Fields)>,
}

/// Reads the response to a `method` request as the upstream client does: interim `1xx`
/// heads skipped (at most [`MAX_INTERIM_RESPONSES`]), a `101` refused unless the
/// request asked for an upgrade, the body read by its framing until the input ends
/// (the test's server closes after writing).
pub fn response(mut feed: Feed<'_>, method: &Method, asked_upgrade: bool) -> ResponseOutcome {
    let mut buf = BytesMut::new();
    feed.more(&mut buf);
    let refused = |error: WireError, head| ResponseOutcome {
        response: None,
        end: End::Rejected(error.to_string()),
        head,
    };
    let mut interim = 0;
    let head = loop {
        match response::parse_response_head(&mut buf) {
            Err(error) => return refused(error, None),
            Ok(None) => {
                if !feed.more(&mut buf) {
                    return ResponseOutcome {
                        response: None,
                        end: End::Incomplete,
                        head: None,
                    };
                }
            }
            Ok(Some(head)) => {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    interim += 1;
                    if interim > MAX_INTERIM_RESPONSES {
                        return refused(WireError::Head("too many interim 1xx responses"), None);
                    }
                    continue;
                }
                break head;
            }
        }
    };
    let head_fields = Some((head.version, fields(&head.headers)));
    if head.status == StatusCode::SWITCHING_PROTOCOLS && !asked_upgrade {
        return refused(
            WireError::Head("101 Switching Protocols to a request that asked for no upgrade"),
            head_fields,
        );
    }
    let framing = match response::response_framing(method, &head) {
        Ok(framing) => framing,
        Err(error) => return refused(error, head_fields),
    };
    let keep_alive =
        head.status != StatusCode::SWITCHING_PROTOCOLS && response::keeps_alive(&head, framing);
    let mut decoder = framing.decoder();
    let (mut body, mut trailers) = (Vec::new(), Vec::new());
    loop {
        match decoder.decode(&mut buf) {
            Err(error) => return refused(error, head_fields),
            Ok(Some(Decoded::Data(data))) => body.extend_from_slice(&data),
            Ok(Some(Decoded::Trailers(map))) => trailers = fields(&map),
            Ok(Some(Decoded::End)) => break,
            Ok(None) => {
                if !feed.more(&mut buf) {
                    if let Err(error) = decoder.closed() {
                        return refused(error, head_fields);
                    }
                    break;
                }
            }
        }
    }
    ResponseOutcome {
        response: Some(Response {
            status: head.status.as_u16(),
            version: head.version,
            fields: fields(&head.headers),
            framing,
            keep_alive,
            body,
            trailers,
        }),
        end: End::Complete,
        head: head_fields,
    }
}
