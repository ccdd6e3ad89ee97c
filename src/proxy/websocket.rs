//! WebSocket through the proxy: an HTTP/1.1 request with `Connection: upgrade` and
//! `Upgrade: websocket` is forwarded with those two headers kept (they are hop-by-hop
//! and stripped from every other request). Only when the upstream answers
//! `101 Switching Protocols` are the two connections joined, and bytes copied both ways
//! until either side closes, the connection has been idle for the route's
//! `idle_timeout`, or the gateway drains: both sides then get a Close frame with status
//! 1001 (Going Away) at a frame boundary (see [`pump`]).
//!
//! Any other answer is an ordinary response: the client's connection stays HTTP, and
//! whatever it sent after the request is parsed as the next request (hyper's server
//! only hands a connection over after it has written a 101).
//!
//! Upgraded connections hold a slot of their route's own cap (`max_connections`), not
//! the upstream's request permits: the exchange (permit, endpoint load) is released as
//! soon as the 101 arrives.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::BoxError;
use crate::config::WebSocketConfig;
use crate::io::{ClientUpgrade, TunnelIo};
use crate::metrics::{CloseReason, UpgradeOutcome, WebSocketMetrics};
use crate::shutdown::signalled;
use crate::upstream::UpstreamUpgrade;

/// The `Upgrade` value of a request that asks to switch to WebSocket, when it does:
/// HTTP/1.1, `upgrade` among the `Connection` tokens, `websocket` in `Upgrade`.
pub fn requested<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    let connection_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = headers.get(UPGRADE)?;
    let websocket = upgrade
        .to_str()
        .ok()?
        .split(',')
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("websocket"));
    (connection_upgrade && websocket).then(|| upgrade.clone())
}

/// Puts back the two headers that ask the upstream to switch protocols.
pub fn keep_upgrade_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// One route's WebSocket limits and counters. Kept across reloads while the route keeps
/// its name and limits, so that connections already open stay counted against the cap.
pub struct WebSockets {
    pub route: Arc<str>,
    pub config: WebSocketConfig,
    slots: Arc<Semaphore>,
    metrics: WebSocketMetrics,
}

impl WebSockets {
    /// The state for `route`: `previous`'s when its limits are the same.
    pub fn carry_over(
        route: &str,
        config: WebSocketConfig,
        previous: Option<&Arc<WebSockets>>,
        metrics: WebSocketMetrics,
    ) -> Arc<WebSockets> {
        match previous {
            Some(previous) if previous.config == config => previous.clone(),
            _ => Arc::new(WebSockets {
                route: route.into(),
                config,
                slots: Arc::new(Semaphore::new(config.max_connections)),
                metrics,
            }),
        }
    }

    /// Upgraded connections (and upgrades under way) holding a slot now.
    pub fn open(&self) -> usize {
        self.config
            .max_connections
            .saturating_sub(self.slots.available_permits())
    }

    /// A slot for one more upgraded connection, or `None` (counted) at the cap.
    pub fn admit(self: &Arc<Self>) -> Option<Upgrading> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Some(Upgrading {
                websockets: self.clone(),
                slot,
            }),
            Err(_) => {
                self.metrics.upgrade(UpgradeOutcome::Rejected);
                // Counted; at debug level so that a flood of upgrades cannot flood the log.
                tracing::debug!(
                    route = %self.route,
                    max_connections = self.config.max_connections,
                    "WebSocket connection limit reached; refusing an upgrade with 503"
                );
                None
            }
        }
    }
}

/// The client's side of a switch: its connection once the `101` has been written, from
/// the gateway's HTTP/1.1 server or from hyper's (connections whose protocol hyper
/// detected).
pub enum ClientSwitch {
    Http1(ClientUpgrade),
    Hyper(OnUpgrade),
}

impl ClientSwitch {
    /// Takes the switch out of an upgrade request.
    pub fn take<B>(request: &mut Request<B>) -> Self {
        match request.extensions_mut().remove::<ClientUpgrade>() {
            Some(upgrade) => ClientSwitch::Http1(upgrade),
            None => ClientSwitch::Hyper(hyper::upgrade::on(request)),
        }
    }

    async fn connected(self) -> Result<Box<dyn TunnelIo>, BoxError> {
        match self {
            ClientSwitch::Http1(upgrade) => Ok(upgrade.connected().await?),
            ClientSwitch::Hyper(upgrade) => Ok(Box::new(TokioIo::new(upgrade.await?))),
        }
    }
}

/// An upgrade request holding its route's slot until the upstream answers.
pub struct Upgrading {
    websockets: Arc<WebSockets>,
    slot: OwnedSemaphorePermit,
}

impl Upgrading {
    /// The upstream answered something other than 101: the slot is given back.
    pub fn refused(self) {
        self.websockets.metrics.upgrade(UpgradeOutcome::Refused);
    }

    /// The upstream answered 101: joins the client's connection (once hyper has written
    /// the 101 to it) with the upstream's, in a task of its own.
    pub fn join(
        self,
        client: ClientSwitch,
        upstream: UpstreamUpgrade,
        close: watch::Receiver<bool>,
        drain: watch::Receiver<bool>,
    ) {
        self.websockets.metrics.upgrade(UpgradeOutcome::Upgraded);
        tokio::spawn(self.tunnel(client, upstream, close, drain));
    }

    async fn tunnel(
        self,
        client: ClientSwitch,
        upstream: UpstreamUpgrade,
        mut close: watch::Receiver<bool>,
        mut drain: watch::Receiver<bool>,
    ) {
        let websockets = &self.websockets;
        let metrics = &websockets.metrics;
        let joined = tokio::select! {
            joined = async {
                tokio::try_join!(
                    client.connected(),
                    upstream.connected()
                )
            } => joined,
            _ = signalled(&mut close) => {
                metrics.closed(CloseReason::Shutdown);
                return;
            }
        };
        let (client, upstream) = match joined {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(route = %websockets.route, "WebSocket upgrade failed: {error}");
                metrics.closed(CloseReason::Error);
                return;
            }
        };
        metrics.active.inc();
        let reason = pump(
            client,
            upstream,
            websockets.config.idle_timeout,
            &mut close,
            &mut drain,
        )
        .await;
        metrics.active.dec();
        metrics.closed(reason);
        tracing::debug!(route = %websockets.route, reason = reason.label(), "WebSocket connection closed");
        drop(self.slot);
    }
}

/// Copies bytes both ways until either side closes (its end of file is passed on to the
/// other side, and the tunnel ends), an error, `idle_timeout` without a byte either way,
/// or `close`.
///
/// When the gateway starts draining (`drain`), the tunnel says goodbye the way a
/// WebSocket endpoint going down does: each side gets a Close frame with status 1001
/// (Going Away) at the next frame boundary of the bytes flowing to it (a frame being
/// copied is finished first, so no frame is ever cut), masked towards the upstream as a
/// client's frames must be. What either side sends after that (its own Close in answer)
/// is read and dropped; the tunnel ends once both have answered, or after
/// [`GOING_AWAY_GRACE`].
async fn pump<A, B>(
    client: A,
    upstream: B,
    idle_timeout: Duration,
    close: &mut watch::Receiver<bool>,
    drain: &mut watch::Receiver<bool>,
) -> CloseReason
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut to_upstream = Direction::new(CLOSE_GOING_AWAY_MASKED);
    let mut to_client = Direction::new(CLOSE_GOING_AWAY);
    let mut from_client = vec![0u8; TUNNEL_BUFFER];
    let mut from_upstream = vec![0u8; TUNNEL_BUFFER];
    let mut last_activity = Instant::now();
    let mut going_away: Option<Instant> = None;
    loop {
        if let Some(since) = going_away {
            if to_upstream.answered && to_client.answered {
                return CloseReason::Shutdown;
            }
            if since.elapsed() >= GOING_AWAY_GRACE {
                return CloseReason::Shutdown;
            }
        }
        let idle_deadline = last_activity + idle_timeout;
        let grace_deadline = going_away.map_or(idle_deadline, |since| since + GOING_AWAY_GRACE);
        tokio::select! {
            read = client_read.read(&mut from_client) => {
                let passed = to_upstream.pass_on(read, &from_client, going_away.is_some(), &mut upstream_write);
                if let Err(reason) = passed.await {
                    return reason;
                }
                last_activity = Instant::now();
            }
            read = upstream_read.read(&mut from_upstream) => {
                let passed = to_client.pass_on(read, &from_upstream, going_away.is_some(), &mut client_write);
                if let Err(reason) = passed.await {
                    return reason;
                }
                last_activity = Instant::now();
            }
            () = tokio::time::sleep_until(idle_deadline.min(grace_deadline)) => {
                if going_away.is_none() && last_activity + idle_timeout <= Instant::now() {
                    return CloseReason::IdleTimeout;
                }
            }
            () = signalled(drain), if going_away.is_none() => {
                going_away = Some(Instant::now());
                // Each side between frames gets its goodbye now; a side inside one, once
                // the frame has passed.
                if to_upstream.relay(&[], true, &mut upstream_write).await.is_err()
                    || to_client.relay(&[], true, &mut client_write).await.is_err()
                {
                    return CloseReason::Error;
                }
            }
            () = signalled(close) => {
                // The end of a drain can come at once after its start (the tunnels do
                // not hold it up): a goodbye not said yet is said now, at boundaries.
                if going_away.is_none() && *drain.borrow() {
                    let _ = to_upstream.relay(&[], true, &mut upstream_write).await;
                    let _ = to_client.relay(&[], true, &mut client_write).await;
                }
                return CloseReason::Shutdown;
            }
        }
    }
}

/// Bytes read at once from either side of a tunnel.
const TUNNEL_BUFFER: usize = 16 * 1024;

/// How long a tunnel waits, once it has said Going Away, for both sides to answer.
pub const GOING_AWAY_GRACE: Duration = Duration::from_secs(1);

/// A Close frame with status 1001 (Going Away), as a server sends it (unmasked).
const CLOSE_GOING_AWAY: &[u8] = &[0x88, 0x02, 0x03, 0xE9];
/// The same as a client sends it: masked (RFC 6455 § 5.3; any key will do, the mask
/// protects intermediaries of a browser's connection, not this one).
const CLOSE_GOING_AWAY_MASKED: &[u8] =
    &[0x88, 0x82, 0x5A, 0x5A, 0x5A, 0x5A, 0x03 ^ 0x5A, 0xE9 ^ 0x5A];

/// One direction of a tunnel: where its byte stream is in WebSocket framing, and
/// whether the gateway has closed it.
struct Direction {
    frames: Frames,
    /// The Close frame this direction's receiver gets when the gateway goes away.
    goodbye: &'static [u8],
    /// The goodbye was sent: what follows from the sender is dropped.
    said_goodbye: bool,
    /// The sender's own Close frame came after the goodbye.
    answered: bool,
}

impl Direction {
    fn new(goodbye: &'static [u8]) -> Self {
        Direction {
            frames: Frames::default(),
            goodbye,
            said_goodbye: false,
            answered: false,
        }
    }

    /// What one read from this direction's sender brought (`read` of `buffer`), passed
    /// on to `write`; `Err` ends the tunnel: the sender closed (its end of file passed
    /// on) or a side failed.
    async fn pass_on<W: AsyncWrite + Unpin>(
        &mut self,
        read: std::io::Result<usize>,
        buffer: &[u8],
        going_away: bool,
        write: &mut W,
    ) -> Result<(), CloseReason> {
        match read {
            Ok(0) => {
                let _ = write.shutdown().await;
                Err(CloseReason::Closed)
            }
            Ok(n) => self
                .relay(&buffer[..n], going_away, write)
                .await
                .map_err(|_| CloseReason::Error),
            Err(_) => Err(CloseReason::Error),
        }
    }

    /// Passes `bytes` on to `write`; when `going_away`, only up to the next frame
    /// boundary, then the goodbye, and nothing after it.
    async fn relay<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        bytes: &[u8],
        going_away: bool,
        write: &mut W,
    ) -> std::io::Result<()> {
        if self.said_goodbye {
            if self.frames.feed(bytes).closes > 0 {
                self.answered = true;
            }
            return Ok(());
        }
        if !going_away {
            self.frames.feed(bytes);
            return write.write_all(bytes).await;
        }
        let passed = match self.frames.until_boundary(bytes) {
            Some(at) => at,
            None => {
                // Still inside a frame: pass it on, say goodbye once it has ended.
                return write.write_all(bytes).await;
            }
        };
        write.write_all(&bytes[..passed]).await?;
        write.write_all(self.goodbye).await?;
        write.flush().await?;
        self.said_goodbye = true;
        if self.frames.feed(&bytes[passed..]).closes > 0 {
            self.answered = true;
        }
        Ok(())
    }
}

/// Where a WebSocket byte stream is: inside a frame's header, its payload, or between
/// frames. Reads only the headers (opcode, lengths, mask bit), never the payloads.
#[derive(Debug, Default)]
struct Frames {
    /// The header bytes of the frame being read, while it is incomplete.
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The current frame's opcode.
    opcode: u8,
}

/// What [`Frames::feed`] saw.
struct Fed {
    /// Close frames (opcode 8) that ended within the bytes.
    closes: usize,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// Follows `bytes` through the framing.
    fn feed(&mut self, mut bytes: &[u8]) -> Fed {
        let mut closes = 0;
        while !bytes.is_empty() {
            let used = self.step(bytes);
            bytes = &bytes[used..];
            if self.at_boundary() && self.opcode == 0x8 {
                closes += 1;
                self.opcode = 0;
            }
        }
        Fed { closes }
    }

    /// Follows `bytes` until the stream is between frames, and returns how many that
    /// took (0 when it already is); `None` when it is still inside a frame after all of
    /// them.
    fn until_boundary(&mut self, mut bytes: &[u8]) -> Option<usize> {
        let mut used = 0;
        while !self.at_boundary() {
            if bytes.is_empty() {
                return None;
            }
            let step = self.step(bytes);
            used += step;
            bytes = &bytes[step..];
        }
        self.opcode = 0;
        Some(used)
    }

    /// Consumes the start of `bytes` (at least one byte) within the current frame.
    fn step(&mut self, bytes: &[u8]) -> usize {
        if self.payload_left > 0 {
            let take = usize::try_from(self.payload_left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            self.payload_left -= take as u64;
            return take;
        }
        self.header[self.have] = bytes[0];
        self.have += 1;
        if self.have >= 2 {
            let masked = self.header[1] & 0x80 != 0;
            let length_bytes = match self.header[1] & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let needed = 2 + length_bytes + if masked { 4 } else { 0 };
            if self.have == needed {
                self.payload_left = match length_bytes {
                    0 => u64::from(self.header[1] & 0x7F),
                    2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                    _ => self.header[2..10]
                        .iter()
                        .fold(0u64, |n, &b| (n << 8) | u64::from(b)),
                };
                self.opcode = self.header[0] & 0x0F;
                self.have = 0;
            }
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri("/ws");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid request")
    }

    #[test]
    fn only_http1_websocket_upgrades_are_recognised() {
        let upgrade = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert!(requested(&request(Version::HTTP_11, &upgrade)).is_some());
        assert!(requested(&request(Version::HTTP_2, &upgrade)).is_none());
        assert!(requested(&request(Version::HTTP_10, &upgrade)).is_none());
        let h2c = [("connection", "upgrade"), ("upgrade", "h2c")];
        assert!(requested(&request(Version::HTTP_11, &h2c)).is_none());
        let no_connection = [("upgrade", "websocket")];
        assert!(requested(&request(Version::HTTP_11, &no_connection)).is_none());
    }

    /// A frame: `opcode`, masked or not, with `len` payload bytes (of value 7).
    fn frame(opcode: u8, masked: bool, len: usize) -> Vec<u8> {
        let mask = if masked { 0x80 } else { 0 };
        let mut out = vec![0x80 | opcode];
        match len {
            0..=125 => out.push(mask | len as u8),
            126..=65535 => {
                out.push(mask | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(mask | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        out.extend(std::iter::repeat_n(7u8, len));
        out
    }

    #[test]
    fn frame_boundaries_are_found_whatever_the_split() {
        let mut stream = frame(0x1, true, 5);
        stream.extend(frame(0x2, false, 300));
        stream.extend(frame(0x2, true, 70_000));
        stream.extend(frame(0x8, true, 2));
        let ends = [11, 11 + 304, 11 + 304 + 70_014, stream.len()];
        for chunk in [1, 2, 3, 7, 100, 4096, stream.len()] {
            let mut frames = Frames::default();
            let mut at = 0;
            let mut boundaries = Vec::new();
            let mut closes = 0;
            for piece in stream.chunks(chunk) {
                for (i, &byte) in piece.iter().enumerate() {
                    closes += frames.feed(&[byte]).closes;
                    if frames.at_boundary() {
                        boundaries.push(at + i + 1);
                    }
                }
                at += piece.len();
            }
            assert_eq!(boundaries, ends, "chunks of {chunk}");
            assert_eq!(closes, 1);
            // until_boundary stops exactly at the end of the frame under way.
            let mut frames = Frames::default();
            frames.feed(&stream[..20]);
            assert_eq!(frames.until_boundary(&stream[20..]), Some(ends[1] - 20));
            assert_eq!(frames.until_boundary(&[]), Some(0));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_finishes_the_frame_under_way_then_says_going_away() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut client_peer) = tokio::io::duplex(1 << 20);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1 << 20);
        let (_close_tx, mut close) = watch::channel(false);
        let (drain_tx, mut drain) = watch::channel(false);
        let pumping = tokio::spawn(async move {
            pump(
                client,
                upstream,
                Duration::from_secs(60),
                &mut close,
                &mut drain,
            )
            .await
        });
        // Half of a server frame has passed when the drain starts.
        let big = frame(0x2, false, 1000);
        upstream_peer.write_all(&big[..500]).await.expect("writes");
        let mut received = vec![0u8; 500];
        client_peer.read_exact(&mut received).await.expect("reads");
        drain_tx.send(true).expect("drains");
        // The client gets a Close only after the rest of the frame.
        upstream_peer.write_all(&big[500..]).await.expect("writes");
        let mut rest = vec![0u8; big.len() - 500 + CLOSE_GOING_AWAY.len()];
        client_peer.read_exact(&mut rest).await.expect("reads");
        assert_eq!(&rest[..big.len() - 500], &big[500..]);
        assert_eq!(&rest[big.len() - 500..], CLOSE_GOING_AWAY);
        // The upstream, between frames, got its (masked) Close at once.
        let mut goodbye = vec![0u8; CLOSE_GOING_AWAY_MASKED.len()];
        upstream_peer.read_exact(&mut goodbye).await.expect("reads");
        assert_eq!(goodbye, CLOSE_GOING_AWAY_MASKED);
        // Data after the goodbye is dropped; each side's Close answers, and the tunnel
        // ends.
        upstream_peer
            .write_all(&frame(0x1, false, 3))
            .await
            .expect("writes");
        upstream_peer
            .write_all(&frame(0x8, false, 2))
            .await
            .expect("writes");
        client_peer
            .write_all(&frame(0x8, true, 2))
            .await
            .expect("writes");
        assert_eq!(pumping.await.expect("pump task"), CloseReason::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let (_close_tx, mut close) = watch::channel(false);
        let (_drain_tx, mut drain) = watch::channel(false);
        let pumping = tokio::spawn(async move {
            pump(
                client,
                upstream,
                Duration::from_secs(60),
                &mut close,
                &mut drain,
            )
            .await
        });
        // Traffic keeps it open past the first minute.
        tokio::time::sleep(Duration::from_secs(50)).await;
        client_peer.write_all(b"ping").await.expect("writes");
        let mut buffer = [0u8; 4];
        upstream_peer.read_exact(&mut buffer).await.expect("reads");
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert!(!pumping.is_finished());
        let reason = pumping.await.expect("pump task");
        assert_eq!(reason, CloseReason::IdleTimeout);
    }
}
