//! WebSocket through the proxy: an HTTP/1.1 request with `Connection: upgrade` and
//! `Upgrade: websocket` is forwarded with those two headers kept (they are hop-by-hop
//! and stripped from every other request). Only when the upstream answers
//! `101 Switching Protocols` are the two connections joined, and bytes copied both ways
//! until either side closes, the connection has been idle for the route's
//! `idle_timeout`, or the gateway closes what is left after its shutdown drain.
//!
//! Any other answer is an ordinary response: the client's connection stays HTTP, and
//! whatever it sent after the request is parsed as the next request (hyper's server
//! only hands a connection over after it has written a 101).
//!
//! Upgraded connections hold a slot of their route's own cap (`max_connections`), not
//! the upstream's request permits: the exchange (permit, endpoint load) is released as
//! soon as the 101 arrives.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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
    ) {
        self.websockets.metrics.upgrade(UpgradeOutcome::Upgraded);
        tokio::spawn(self.tunnel(client, upstream, close));
    }

    async fn tunnel(
        self,
        client: ClientSwitch,
        upstream: UpstreamUpgrade,
        mut close: watch::Receiver<bool>,
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
        let reason = pump(client, upstream, websockets.config.idle_timeout, &mut close).await;
        metrics.active.dec();
        metrics.closed(reason);
        tracing::debug!(route = %websockets.route, reason = reason.label(), "WebSocket connection closed");
        drop(self.slot);
    }
}

/// Copies bytes both ways until either side closes (its end of file is passed on to the
/// other side, and the tunnel ends), an error, `idle_timeout` without a byte either way,
/// or `close`.
async fn pump<A, B>(
    client: A,
    upstream: B,
    idle_timeout: Duration,
    close: &mut watch::Receiver<bool>,
) -> CloseReason
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Arc::new(Activity::new());
    let (mut client_read, mut client_write) = tokio::io::split(Watched {
        io: client,
        clock: clock.clone(),
    });
    let (mut upstream_read, mut upstream_write) = tokio::io::split(Watched {
        io: upstream,
        clock: clock.clone(),
    });
    let to_upstream = async {
        let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
        copied
    };
    let to_client = async {
        let copied = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
        copied
    };
    tokio::pin!(to_upstream, to_client);
    loop {
        let deadline = clock.last() + idle_timeout;
        tokio::select! {
            copied = &mut to_upstream => return ended(copied),
            copied = &mut to_client => return ended(copied),
            () = tokio::time::sleep_until(deadline) => {
                if clock.last() + idle_timeout <= Instant::now() {
                    return CloseReason::IdleTimeout;
                }
            }
            () = signalled(close) => return CloseReason::Shutdown,
        }
    }
}

fn ended(copied: std::io::Result<u64>) -> CloseReason {
    match copied {
        Ok(_) => CloseReason::Closed,
        Err(_) => CloseReason::Error,
    }
}

/// When bytes last moved through a tunnel.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(elapsed, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// One side of a tunnel, noting every read that brings bytes (every byte written was
/// read from the other side first).
struct Watched<T> {
    io: T,
    clock: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.clock.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let (_close_tx, mut close) = watch::channel(false);
        let pumping = tokio::spawn(async move {
            pump(client, upstream, Duration::from_secs(60), &mut close).await
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
