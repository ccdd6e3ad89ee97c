//! Keep-alive HTTP/1.1 connections to one endpoint (`protocol: http1`, the default),
//! pooled by the gateway itself: connect (TCP, then TLS for `https://`), hand out an idle
//! connection or open one, and take it back when its exchange ends.
//!
//! Each connection is a hyper `http1` client connection driven by its own task. A
//! checkout is a short, uncontended lock and a pop; a return is a push, done when the
//! exchange's guard drops (the response body finished or was abandoned). hyper-util's
//! general-purpose pool did more per request: a pool-key hash, a lazily built connect
//! future raced against the checkout, and an extra spawned task per response to put
//! the connection back once it was ready again.
//!
//! A connection that is not ready yet when it is taken (its task has not seen the end
//! of the previous response) is waited for; one that closed meanwhile is dropped and
//! another taken. A request that could not be written because its connection had just
//! closed is sent again once, on a new connection. Idle connections older than the
//! pool's idle timeout are closed by a periodic sweep.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntGauge};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::body::{BoxError, UpstreamBody};
use crate::config::EndpointAddress;

/// How to reach the endpoint, and how many idle connections to keep for how long.
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// For `https://` endpoints: the client configuration (ALPN `http/1.1`) and the
    /// name to send and verify (`None`: the host is not a valid name).
    pub tls: Option<(TlsConnector, Option<ServerName<'static>>)>,
}

/// The pool's metric handles.
pub struct PoolMetrics {
    pub opened: IntCounter,
    pub idle: IntGauge,
}

type Sender = http1::SendRequest<UpstreamBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The pooled connections of one endpoint.
pub struct Http1Pool {
    host: String,
    port: u16,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    metrics: PoolMetrics,
}

/// Why no response came back.
#[derive(Debug)]
pub enum SendError {
    ConnectTimeout,
    Connect(BoxError),
    /// From hyper, with the request's body error, if any, in its source chain.
    Exchange(hyper::Error),
}

/// A connection lent to one exchange; given back to its pool when dropped.
pub struct Lent {
    pool: Weak<Http1Pool>,
    sender: Option<Sender>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(pool), Some(sender)) = (self.pool.upgrade(), self.sender.take()) {
            pool.give_back(sender);
        }
    }
}

impl Http1Pool {
    pub fn new(address: &EndpointAddress, settings: PoolSettings, metrics: PoolMetrics) -> Self {
        let authority = &address.authority;
        let default_port = if settings.tls.is_some() { 443 } else { 80 };
        Http1Pool {
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority.port_u16().unwrap_or(default_port),
            settings,
            idle: Mutex::new(Vec::new()),
            metrics,
        }
    }

    /// Sends `request` (its URI in origin form, see [`super::Endpoint::uri`]) over an
    /// idle connection, or a new one; with the endpoint's `Host` if it has none.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
        endpoint_host: &HeaderValue,
    ) -> Result<(Response<Incoming>, Lent), SendError> {
        if !request.headers().contains_key(http::header::HOST) {
            request
                .headers_mut()
                .insert(http::header::HOST, endpoint_host.clone());
        }
        let mut reused = true;
        let mut sender = match self.checkout().await {
            Some(sender) => sender,
            None => {
                reused = false;
                self.connect().await?
            }
        };
        loop {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lent = Lent {
                        pool: Arc::downgrade(self),
                        sender: Some(sender),
                    };
                    return Ok((response, lent));
                }
                Err(mut error) => match error.take_message() {
                    // The connection closed before the request was written: a pooled
                    // connection the endpoint had just closed. Once more, on a new one.
                    Some(unsent) if reused => {
                        tracing::debug!(
                            endpoint = %self.host,
                            "pooled connection closed before the request was sent; reconnecting"
                        );
                        request = unsent;
                        reused = false;
                        sender = self.connect().await?;
                    }
                    _ => return Err(SendError::Exchange(error.into_error())),
                },
            }
        }
    }

    /// An idle connection ready for a request, if one is open.
    async fn checkout(&self) -> Option<Sender> {
        loop {
            let mut candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                // Prefer one whose task has already finished its last exchange.
                let ready = idle
                    .iter()
                    .rev()
                    .take(4)
                    .position(|entry| entry.sender.is_ready())
                    .map(|from_back| idle.len() - 1 - from_back);
                let entry = match ready {
                    Some(index) => idle.swap_remove(index),
                    None => idle.pop()?,
                };
                self.metrics.idle.set(gauge_value(idle.len()));
                entry
            };
            if candidate.since.elapsed() > self.settings.idle_timeout {
                continue;
            }
            if candidate.sender.is_ready() {
                return Some(candidate.sender);
            }
            if candidate.sender.is_closed() {
                continue;
            }
            // Its task has yet to see the end of the previous response (usually it is
            // already scheduled); closed meanwhile means: take another.
            if candidate.sender.ready().await.is_ok() {
                return Some(candidate.sender);
            }
        }
    }

    fn give_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
            self.metrics.idle.set(gauge_value(idle.len()));
        }
    }

    /// Closes idle connections past the idle timeout, and forgets closed ones.
    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = self.settings.idle_timeout;
        idle.retain(|entry| !entry.sender.is_closed() && entry.since.elapsed() <= timeout);
        self.metrics.idle.set(gauge_value(idle.len()));
    }

    /// Opens a connection: TCP (every address of the host in turn) within the connect
    /// timeout, then TLS for `https://`, then the HTTP/1.1 handshake; its task is
    /// spawned.
    async fn connect(&self) -> Result<Sender, SendError> {
        let tcp = tokio::time::timeout(self.settings.connect_timeout, self.connect_tcp())
            .await
            .map_err(|_| SendError::ConnectTimeout)?
            .map_err(|error| SendError::Connect(error.into()))?;
        let io = match &self.settings.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                let Some(name) = name else {
                    return Err(SendError::Connect(
                        format!("{} is not a valid TLS server name", self.host).into(),
                    ));
                };
                let handshake = connector.connect(name.clone(), tcp);
                let tls = tokio::time::timeout(self.settings.connect_timeout, handshake)
                    .await
                    .map_err(|_| SendError::ConnectTimeout)?
                    .map_err(|error| SendError::Connect(error.into()))?;
                Stream::Tls(Box::new(tls))
            }
        };
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|error| SendError::Connect(error.into()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!("upstream connection ended with an error: {error}");
            }
        });
        self.metrics.opened.inc();
        Ok(sender)
    }

    async fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        let stream = match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => TcpStream::connect(SocketAddr::new(ip, self.port)).await?,
            Err(_) => TcpStream::connect((self.host.as_str(), self.port)).await?,
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Sweeps `pools` every `interval` until they are gone (the upstream was removed or
/// rebuilt by a reload).
pub fn spawn_sweeper(pools: Vec<Weak<Http1Pool>>, interval: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let mut alive = false;
            for pool in pools.iter().filter_map(Weak::upgrade) {
                pool.sweep();
                alive = true;
            }
            if !alive {
                return;
            }
        }
    });
}

/// A connection to an endpoint: plain TCP, or TLS (boxed: it is large, and rare).
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
