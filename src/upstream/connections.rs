//! Keep-alive HTTP/1.1 connections to one endpoint (`protocol: http1`, the default),
//! pooled by the gateway itself: connect (TCP, then TLS for `https://`), hand out an idle
//! connection or open one, and take it back when its response body has been read.
//!
//! The exchange itself ([`super::http1`]) runs in the task that asked for it; the pool
//! only lends connections. A checkout is a short, uncontended lock and a pop (the most
//! recently used connection first, its socket likely still warm); a connection the
//! endpoint closed while it was idle is seen at checkout (from the runtime's readiness
//! record, and for one idle 100 ms or more from poll(2) on the socket) and dropped. A request the client abandons after it went out whole has the
//! rest of its response read in the background, within bounds, so that its connection
//! is kept ([`Http1Pool::salvage`]). A request that met a pooled connection
//! closed under it before any response arrived is sent again once, on a new
//! connection, when that is safe: an idempotent method and a body the gateway still
//! holds (`portcullis_upstream_redispatches_total{reason="reset_before_response"}`).
//! A request for which no connection could be opened comes back unsent, its body
//! unread ([`SendError::Connect`]), so that it can go to another endpoint. Idle
//! connections older than the pool's idle timeout are closed by a periodic sweep.
//!
//! With per-core workers the idle connections are kept apart by worker: a connection
//! is registered with the runtime of the worker that opened it, and is lent only to
//! requests on that worker, so its readiness events never cross threads.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::http1::{Connection, ExchangeFailure, PooledBody, Unfinished};
use super::UpstreamBody;
use crate::body::BoxError;
use crate::config::EndpointAddress;
use crate::metrics::PoolMetrics;

/// How long an abandoned response is read for, to keep its connection.
const SALVAGE_TIME: Duration = Duration::from_secs(2);
/// How many body bytes of an abandoned response are read at most, to keep its
/// connection; a longer body closes it.
const SALVAGE_BYTES: u64 = 64 * 1024;

/// An exchange dropped before its response arrived: its connection is salvaged when
/// the request had gone out whole.
struct Abandoned<'a> {
    connection: Option<Connection>,
    method: &'a Method,
    pool: &'a Arc<Http1Pool>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let rest = connection.unfinished(self.method);
            self.pool.salvage(connection, rest);
        }
    }
}

/// How to reach the endpoint, and how many idle connections to keep for how long.
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// Workers whose idle connections are kept apart; `max_idle` is split among them.
    pub worker_shards: usize,
    /// For `https://` endpoints: the client configuration (ALPN `http/1.1`) and the
    /// name to send and verify (`None`: the host is not a valid name).
    pub tls: Option<(TlsConnector, Option<ServerName<'static>>)>,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// One worker's idle connections, on a cache line of its own: workers take and give
/// back connections without touching each other's lines.
#[repr(align(128))]
struct IdleShard(Mutex<Vec<Idle>>);

impl IdleShard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pooled connections of one endpoint.
pub struct Http1Pool {
    host: String,
    port: u16,
    settings: PoolSettings,
    /// Idle connections by worker ([`crate::workers::current`]; a thread of no worker,
    /// or of another gateway's worker beyond these, uses the first).
    idle: Box<[IdleShard]>,
    /// Idle connections each shard keeps at most.
    max_idle_per_shard: usize,
    /// Abandoned exchanges being read to their end so that their connections can be
    /// reused ([`Http1Pool::salvage`]), at most `max_idle`.
    salvaging: AtomicUsize,
    metrics: PoolMetrics,
}

/// Why no response came back.
pub enum SendError {
    /// No connection could be had, so nothing of the request was sent: it comes back
    /// whole (its body unread), for another endpoint.
    Connect(ConnectError, Box<Request<UpstreamBody>>),
    Exchange(ExchangeFailure),
}

/// A request that went nowhere, given back whole.
#[cold]
fn unsent(error: ConnectError, parts: http::request::Parts, body: UpstreamBody) -> SendError {
    SendError::Connect(error, Box::new(Request::from_parts(parts, body)))
}

/// Why a connection to the endpoint could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP (or the TLS handshake) did not finish within the connect timeout.
    Timeout,
    /// The endpoint's certificate failed verification; the cause, in words.
    TlsVerify(String),
    /// The gateway had no file descriptor for a socket (`EMFILE`, `ENFILE`) for the
    /// whole connect timeout, and no pooled connection came free meanwhile: the
    /// gateway's own shortage, not the endpoint's.
    OutOfDescriptors,
    Failed(BoxError),
}

/// Whether `error` says the process (or system) has no file descriptor left.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    let code = error.raw_os_error();
    code == Some(rustix::io::Errno::MFILE.raw_os_error())
        || code == Some(rustix::io::Errno::NFILE.raw_os_error())
}

/// The first pause of a send waiting for a descriptor; it doubles up to the most.
const DESCRIPTOR_WAIT_FIRST: Duration = Duration::from_millis(1);
const DESCRIPTOR_WAIT_MOST: Duration = Duration::from_millis(50);

impl Http1Pool {
    pub fn new(address: &EndpointAddress, settings: PoolSettings, metrics: PoolMetrics) -> Self {
        let authority = &address.authority;
        let default_port = if settings.tls.is_some() { 443 } else { 80 };
        let shards = settings.worker_shards.max(1);
        Http1Pool {
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority.port_u16().unwrap_or(default_port),
            idle: (0..shards)
                .map(|_| IdleShard(Mutex::new(Vec::new())))
                .collect(),
            max_idle_per_shard: settings.max_idle.div_ceil(shards),
            salvaging: AtomicUsize::new(0),
            settings,
            metrics,
        }
    }

    /// Sends `request` (its URI in origin form, see [`super::Endpoint::uri`]) over an
    /// idle connection, or a new one; with the endpoint's `Host` if it has none. The
    /// response body reads from the connection and gives it back at its end.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
        endpoint_host: &HeaderValue,
    ) -> Result<Response<PooledBody>, SendError> {
        let (parts, mut body) = request.into_parts();
        let (connection, mut reused) = match self.checkout() {
            Some(connection) => (connection, true),
            None => match self.connect_or_wait().await {
                Ok(found) => found,
                Err(error) => return Err(unsent(error, parts, body)),
            },
        };
        // Only a reused connection is resent on (below).
        let mut replay = if reused && parts.method.is_idempotent() {
            body.replayable()
        } else {
            None
        };
        // Dropped with the request (the client went away) while the response is
        // awaited, the guard salvages the connection.
        let mut guard = Abandoned {
            connection: Some(connection),
            method: &parts.method,
            pool: self,
        };
        loop {
            let Some(connection) = guard.connection.as_mut() else {
                let lost = "the connection was lost".into();
                drop(guard);
                return Err(unsent(ConnectError::Failed(lost), parts, body));
            };
            match connection.exchange(&parts, body, endpoint_host).await {
                Ok(exchanged) => {
                    let Some(connection) = guard.connection.take() else {
                        let lost = ExchangeFailure::Closed {
                            response_started: false,
                        };
                        return Err(SendError::Exchange(lost));
                    };
                    return Ok(exchanged.into_response(connection, Arc::downgrade(self)));
                }
                Err(failure) if reused && failure.before_response() && replay.is_some() => {
                    // The endpoint closed the pooled connection as the request went out.
                    tracing::debug!(
                        endpoint = %self.host,
                        "pooled connection closed before a response: {failure}; resending on a new one"
                    );
                    self.metrics.resent.inc();
                    body = replay.take().unwrap_or(UpstreamBody::Empty);
                    reused = false;
                    guard.connection = None;
                    match self.connect_boxed().await {
                        Ok(connection) => guard.connection = Some(connection),
                        Err(error) => {
                            drop(guard);
                            return Err(unsent(error, parts, body));
                        }
                    }
                }
                Err(failure) => return Err(SendError::Exchange(failure)),
            }
        }
    }

    /// This worker's idle connections.
    fn shard(&self) -> &IdleShard {
        // A bounds check rather than a division: this runs twice per request.
        let shards = &self.idle;
        shards.get(crate::workers::current()).unwrap_or(&shards[0])
    }

    /// An idle connection that is still open, if there is one.
    fn checkout(&self) -> Option<Connection> {
        let shard = self.shard();
        loop {
            let mut entry = {
                let entry = shard.lock().pop()?;
                self.metrics.idle.dec();
                entry
            };
            let idle_for = entry.since.elapsed();
            if idle_for <= self.settings.idle_timeout && entry.connection.is_reusable(idle_for) {
                return Some(entry.connection);
            }
        }
    }

    /// Takes back a connection whose last response was read to its end.
    pub fn give_back(&self, connection: Connection) {
        let mut idle = self.shard().lock();
        if idle.len() < self.max_idle_per_shard {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
            self.metrics.idle.inc();
        }
    }

    /// Keeps a connection whose request the client abandoned (its exchange was dropped
    /// after the request was written, or its response body before its end): the rest
    /// of the response is read and thrown away in a task of its own, within
    /// [`SALVAGE_TIME`] and [`SALVAGE_BYTES`], and the connection goes back to the
    /// pool. A client resetting requests one after another then costs the endpoint no
    /// new connection per request. At most `max_idle` are salvaged at once; beyond
    /// that, and for what cannot be salvaged, the connection closes.
    pub fn salvage(self: &Arc<Self>, connection: Connection, rest: Unfinished) {
        if matches!(rest, Unfinished::Nothing)
            || tokio::runtime::Handle::try_current().is_err()
            || self.salvaging.fetch_add(1, Ordering::Relaxed) >= self.settings.max_idle
        {
            if !matches!(rest, Unfinished::Nothing) {
                self.salvaging.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let finished =
                tokio::time::timeout(SALVAGE_TIME, connection.finish(rest, SALVAGE_BYTES));
            let kept = finished.await.ok().flatten();
            if let Some(pool) = pool.upgrade() {
                pool.salvaging.fetch_sub(1, Ordering::Relaxed);
                if let Some(connection) = kept {
                    pool.metrics.salvaged.inc();
                    pool.give_back(connection);
                }
            }
        });
    }

    /// Closes idle connections past the idle timeout, and those the endpoint closed.
    fn sweep(&self) {
        let timeout = self.settings.idle_timeout;
        for shard in &self.idle {
            let mut idle = shard.lock();
            let before = idle.len();
            idle.retain_mut(|entry| {
                let idle_for = entry.since.elapsed();
                idle_for <= timeout && entry.connection.is_reusable(idle_for)
            });
            self.metrics.idle.sub(gauge_value(before - idle.len()));
        }
    }

    /// A new connection; while the process is out of file descriptors, waits (up to
    /// the connect timeout, with pauses from 1 ms doubling to 50 ms) for a pooled
    /// connection to come free or a connect to succeed, instead of failing the request:
    /// descriptors free up as other exchanges end. True when the connection is a pooled
    /// one.
    async fn connect_or_wait(&self) -> Result<(Connection, bool), ConnectError> {
        let give_up = tokio::time::Instant::now() + self.settings.connect_timeout;
        let mut pause = DESCRIPTOR_WAIT_FIRST;
        let mut waited = false;
        loop {
            match self.connect_boxed().await {
                Ok(connection) => return Ok((connection, false)),
                Err(ConnectError::OutOfDescriptors) => {}
                Err(error) => return Err(error),
            }
            if !waited {
                waited = true;
                self.metrics.descriptor_waits.inc();
                tracing::warn!(endpoint = %self.host, "out of file descriptors: waiting for a connection to come free (raise the open-files limit, or lower max_connections or max_in_flight)");
            }
            if tokio::time::Instant::now() + pause > give_up {
                return Err(ConnectError::OutOfDescriptors);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(DESCRIPTOR_WAIT_MOST);
            if let Some(connection) = self.checkout() {
                return Ok((connection, true));
            }
        }
    }

    /// [`Http1Pool::connect`] on the heap: its future (name resolution, the TLS
    /// handshake) is several times the size of the rest of an exchange, and would
    /// otherwise enlarge every request's future for the rare request that connects.
    async fn connect_boxed(&self) -> Result<Connection, ConnectError> {
        Box::pin(self.connect()).await
    }

    /// Opens a connection: TCP (every address of the host in turn) within the connect
    /// timeout, then TLS for `https://`.
    async fn connect(&self) -> Result<Connection, ConnectError> {
        let tcp = tokio::time::timeout(self.settings.connect_timeout, self.connect_tcp())
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(|error| {
                if out_of_descriptors(&error) {
                    ConnectError::OutOfDescriptors
                } else {
                    ConnectError::Failed(error.into())
                }
            })?;
        let io = match &self.settings.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                let Some(name) = name else {
                    return Err(ConnectError::Failed(
                        format!("{} is not a valid TLS server name", self.host).into(),
                    ));
                };
                let handshake = connector.connect(name.clone(), tcp);
                let tls = tokio::time::timeout(self.settings.connect_timeout, handshake)
                    .await
                    .map_err(|_| ConnectError::Timeout)?
                    .map_err(|error| match crate::tls::verify_failure(&error) {
                        Some(cause) => ConnectError::TlsVerify(cause),
                        None => ConnectError::Failed(error.into()),
                    })?;
                Stream::Tls(Box::new(tls))
            }
        };
        self.metrics.opened.inc();
        Ok(Connection::new(io))
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

impl Drop for Http1Pool {
    /// The idle connections close with the pool (a reload replaced the upstream's
    /// endpoints): they no longer count as idle.
    fn drop(&mut self) {
        let idle: usize = self.idle.iter().map(|shard| shard.lock().len()).sum();
        self.metrics.idle.sub(gauge_value(idle));
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
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
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
