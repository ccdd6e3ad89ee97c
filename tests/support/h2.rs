//! A client for HTTP/2 with prior knowledge (h2c) that writes its frames itself, for
//! what a well-behaved client (the `h2` crate) refuses to send or would normalise:
//! connection-specific fields, uppercase names, any `:path` or `:authority`, pseudo-header
//! fields out of place. Header blocks are HPACK literals without indexing, so every name
//! and value goes out exactly as given.
//!
//! It keeps to the server's flow control when it sends DATA (connection and stream
//! windows, from SETTINGS and WINDOW_UPDATE), grants the server the largest windows at
//! once so that it never has to send WINDOW_UPDATE itself, and records per stream what
//! came back: the first outcome (response head, reset), the response body, whether it
//! ended.

use std::collections::{HashMap, HashSet};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
/// The default of both windows and of the frame size (RFC 9113, 6.5.2 and 6.9.2).
const DEFAULT_WINDOW: i64 = 65_535;
const DEFAULT_MAX_FRAME: usize = 16_384;
/// The largest flow-control window (2^31 - 1).
const MAX_WINDOW: u32 = 0x7fff_ffff;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;

/// How one stream ended, as the client saw it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers; the status when it is one HPACK's static table indexes
    /// (200, 204, 206, 304, 400, 404, 500), else `None`.
    Response(Option<u16>),
    Reset(u32),
    /// The connection closed after a GOAWAY with this error code, before the stream
    /// had an outcome.
    GoAway(u32),
    /// The connection closed without a GOAWAY.
    Closed,
}

/// An h2c connection written frame by frame.
pub struct Raw {
    tcp: TcpStream,
    read: BytesMut,
    outcomes: HashMap<u32, Outcome>,
    /// DATA received, by stream.
    bodies: HashMap<u32, BytesMut>,
    /// Streams whose response has ended (END_STREAM) or that were reset.
    finished: HashSet<u32>,
    /// The error code of the GOAWAY received, if any.
    go_away: Option<u32>,
    /// Set once the connection is closed: every stream without an outcome gets this.
    ended: Option<Outcome>,
    /// The server's SETTINGS_INITIAL_WINDOW_SIZE.
    initial_window: i64,
    /// The server's SETTINGS_MAX_FRAME_SIZE.
    max_frame: usize,
    /// What the connection's window allows to send now.
    connection_window: i64,
    /// Per stream: WINDOW_UPDATE increments received minus DATA bytes sent.
    stream_credit: HashMap<u32, i64>,
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr) -> Raw {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        // Frames go out as small writes in a row: without this, Nagle's algorithm holds
        // each until the one before is acknowledged.
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let mut hello = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
        let mut settings = BytesMut::new();
        settings.put_u16(SETTINGS_INITIAL_WINDOW_SIZE);
        settings.put_u32(MAX_WINDOW);
        put_frame(&mut hello, SETTINGS, 0, 0, &settings);
        let grant = MAX_WINDOW - u32::try_from(DEFAULT_WINDOW).expect("small");
        put_frame(&mut hello, WINDOW_UPDATE, 0, 0, &grant.to_be_bytes());
        tcp.write_all(&hello).await.expect("preface");
        Raw {
            tcp,
            read: BytesMut::new(),
            outcomes: HashMap::new(),
            bodies: HashMap::new(),
            finished: HashSet::new(),
            go_away: None,
            ended: None,
            initial_window: DEFAULT_WINDOW,
            max_frame: DEFAULT_MAX_FRAME,
            connection_window: DEFAULT_WINDOW,
            stream_credit: HashMap::new(),
        }
    }

    /// Sends one HEADERS frame with `fields` (pseudo-fields first, as given), each a
    /// literal without indexing, so any name or value goes out exactly as written.
    pub async fn request<N, V>(&mut self, stream: u32, fields: &[(N, V)], end_stream: bool)
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut block = BytesMut::new();
        for (name, value) in fields {
            block.put_u8(0);
            put_string(&mut block, name.as_ref());
            put_string(&mut block, value.as_ref());
        }
        assert!(
            block.len() <= DEFAULT_MAX_FRAME,
            "a header block that fits one frame"
        );
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        let mut frame = BytesMut::new();
        put_frame(&mut frame, HEADERS, flags, stream, &block);
        self.tcp.write_all(&frame).await.expect("HEADERS");
    }

    /// A GET of `path` with `:authority` and `host` as given (absent when `None`).
    pub async fn get(
        &mut self,
        stream: u32,
        path: &str,
        authority: Option<&str>,
        host: Option<&str>,
    ) {
        let mut fields = vec![(":method", "GET"), (":scheme", "http"), (":path", path)];
        if let Some(authority) = authority {
            fields.push((":authority", authority));
        }
        if let Some(host) = host {
            fields.push(("host", host));
        }
        self.request(stream, &fields, true).await;
    }

    /// Sends `bytes` on `stream` as DATA frames of at most the server's frame size,
    /// waiting (reading frames) while the flow-control windows are too small. Sends
    /// nothing on a stream that was reset or a connection that ended: the server would
    /// only discard it.
    pub async fn data(&mut self, stream: u32, bytes: &[u8], end_stream: bool) {
        let mut rest = bytes;
        loop {
            let len = rest.len().min(self.max_frame);
            let last = len == rest.len();
            let needed = i64::try_from(len).expect("a frame's length");
            within("flow-control window to send DATA", async {
                while !self.gone(stream)
                    && (self.connection_window < needed || self.stream_window(stream) < needed)
                {
                    self.read_frame().await;
                }
            })
            .await;
            if self.gone(stream) {
                return;
            }
            let (chunk, tail) = rest.split_at(len);
            let flags = if last && end_stream { END_STREAM } else { 0 };
            let mut frame = BytesMut::new();
            put_frame(&mut frame, DATA, flags, stream, chunk);
            self.tcp.write_all(&frame).await.expect("DATA");
            self.connection_window -= needed;
            *self.stream_credit.entry(stream).or_default() -= needed;
            if last {
                return;
            }
            rest = tail;
        }
    }

    /// Reads frames until `stream` has an outcome (or the connection ends).
    pub async fn outcome(&mut self, stream: u32) -> Outcome {
        within("an outcome for the stream", async {
            loop {
                if let Some(outcome) = self.outcomes.get(&stream) {
                    return *outcome;
                }
                if let Some(ended) = self.ended {
                    return ended;
                }
                self.read_frame().await;
            }
        })
        .await
    }

    /// Reads frames until every one of `streams` has ended (END_STREAM or a reset), or
    /// the connection has.
    pub async fn settle(&mut self, streams: &[u32]) {
        within("every stream ends", async {
            while self.ended.is_none() && !streams.iter().all(|s| self.finished.contains(s)) {
                self.read_frame().await;
            }
        })
        .await;
    }

    /// What `stream` got first, once [`Raw::settle`] says it ended; `None` before.
    pub fn outcome_now(&self, stream: u32) -> Option<Outcome> {
        self.outcomes.get(&stream).copied().or(self.ended)
    }

    /// The response body received on `stream` so far.
    pub fn body(&self, stream: u32) -> &[u8] {
        self.bodies.get(&stream).map_or(&[], |body| &body[..])
    }

    /// The `error` field of the JSON body the gateway answered `stream` with.
    pub async fn error_code(&mut self, stream: u32) -> String {
        self.settle(&[stream]).await;
        let json: serde_json::Value = serde_json::from_slice(self.body(stream)).unwrap_or_default();
        json["error"].as_str().unwrap_or_default().to_owned()
    }

    /// Whether nothing more can be sent on `stream`.
    fn gone(&self, stream: u32) -> bool {
        self.ended.is_some() || matches!(self.outcomes.get(&stream), Some(Outcome::Reset(_)))
    }

    fn stream_window(&self, stream: u32) -> i64 {
        self.initial_window + self.stream_credit.get(&stream).copied().unwrap_or(0)
    }

    async fn read_frame(&mut self) {
        while self.read.len() < 9 || self.read.len() < 9 + frame_len(&self.read) {
            let n = self.tcp.read_buf(&mut self.read).await.unwrap_or(0);
            if n == 0 {
                let ended = self.go_away.map_or(Outcome::Closed, Outcome::GoAway);
                self.ended.get_or_insert(ended);
                return;
            }
        }
        let len = frame_len(&self.read);
        let head = self.read.split_to(9);
        let payload = self.read.split_to(len);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let word = |at: usize| {
            u32::from_be_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ])
        };
        if flags & END_STREAM != 0 && matches!(kind, DATA | HEADERS) {
            self.finished.insert(stream);
        }
        match kind {
            DATA => {
                self.bodies
                    .entry(stream)
                    .or_default()
                    .extend_from_slice(&payload);
            }
            HEADERS => {
                let status = match payload.first() {
                    Some(0x88) => Some(200),
                    Some(0x89) => Some(204),
                    Some(0x8a) => Some(206),
                    Some(0x8b) => Some(304),
                    Some(0x8c) => Some(400),
                    Some(0x8d) => Some(404),
                    Some(0x8e) => Some(500),
                    _ => None,
                };
                self.outcomes
                    .entry(stream)
                    .or_insert(Outcome::Response(status));
            }
            RST_STREAM => {
                self.outcomes
                    .entry(stream)
                    .or_insert(Outcome::Reset(word(0)));
                self.finished.insert(stream);
            }
            GOAWAY => {
                self.go_away.get_or_insert(word(4));
            }
            WINDOW_UPDATE => {
                let increment = i64::from(word(0) & 0x7fff_ffff);
                if stream == 0 {
                    self.connection_window += increment;
                } else {
                    *self.stream_credit.entry(stream).or_default() += increment;
                }
            }
            SETTINGS if flags & ACK == 0 => {
                for setting in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    let value =
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    match id {
                        SETTINGS_INITIAL_WINDOW_SIZE => self.initial_window = i64::from(value),
                        SETTINGS_MAX_FRAME_SIZE => {
                            self.max_frame = usize::try_from(value).expect("a frame size");
                        }
                        _ => {}
                    }
                }
                let mut ack = BytesMut::new();
                put_frame(&mut ack, SETTINGS, ACK, 0, &[]);
                let _ = self.tcp.write_all(&ack).await;
            }
            PING if flags & ACK == 0 => {
                let mut pong = BytesMut::new();
                put_frame(&mut pong, PING, ACK, 0, &payload);
                let _ = self.tcp.write_all(&pong).await;
            }
            _ => {}
        }
    }
}

fn frame_len(buffer: &[u8]) -> usize {
    usize::from(buffer[0]) << 16 | usize::from(buffer[1]) << 8 | usize::from(buffer[2])
}

fn put_frame(buffer: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a small frame");
    buffer.put_slice(&len.to_be_bytes()[1..]);
    buffer.put_u8(kind);
    buffer.put_u8(flags);
    buffer.put_u32(stream);
    buffer.put_slice(payload);
}

/// An HPACK string literal, not Huffman-coded (RFC 7541, 5.2).
fn put_string(buffer: &mut BytesMut, bytes: &[u8]) {
    let mut len = bytes.len();
    if len < 127 {
        buffer.put_u8(u8::try_from(len).expect("below 127"));
    } else {
        buffer.put_u8(127);
        len -= 127;
        while len >= 128 {
            buffer.put_u8(u8::try_from(len % 128).expect("below 128") | 0x80);
            len /= 128;
        }
        buffer.put_u8(u8::try_from(len).expect("below 128"));
    }
    buffer.put_slice(bytes);
}
