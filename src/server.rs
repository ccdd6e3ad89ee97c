//! Client-facing listeners: binding, the accept loop with its connection limit, the
//! PROXY protocol header of listeners behind L4 balancers ([`proxy_protocol`]), TLS
//! ([`tls`], in each connection's task), serving each connection (HTTP/1.1 with the
//! gateway's own server, [`http1`]; HTTP/2 over TLS by ALPN and cleartext HTTP/2 with
//! prior knowledge with hyper's), and draining connections on shutdown.
//!
//! A connection's way in: accept → PROXY header (when the listener takes one) → TLS
//! handshake (on TLS listeners) → HTTP/1.1 or HTTP/2, told by ALPN or by the first
//! bytes.

mod connection;
mod context;
pub mod http1;
pub mod proxy_protocol;

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::HeaderValue;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::metrics::{ListenerMetrics, WorkerConnections};
use crate::shutdown::signalled;
pub use crate::shutdown::Shutdown;
use crate::tls::{CertificateWatcher, TlsListener};
use connection::{serve_connection, HttpBuilders, Protocol, H2_PREFACE};
pub use context::{ConnectionContext, ListenerContext};
pub use proxy_protocol::ProxyProtocol;

/// Pending connections the kernel may hold for us while we are at `max_connections`.
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds a listening socket with `SO_REUSEADDR` and a deep accept queue.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    listen_socket(address, false)?.listen(ACCEPT_BACKLOG)
}

/// Binds `count` listening sockets to `address`, one per worker. With more than one,
/// each has `SO_REUSEPORT`, so the kernel spreads new connections across them; the
/// first resolves port 0 and the others join it. The sockets are not yet registered
/// with any runtime: each worker's accept loop registers its own.
///
/// `SO_REUSEPORT` would also let a second process join the group unnoticed (another
/// Portcullis started by mistake, taking a share of the connections): before binding a
/// group, the address is bound once without it, which fails with "address in use"
/// while any process listens there, as a plain bind does for nginx and HAProxy.
pub fn bind_group(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let shared = count > 1;
    if shared && address.port() != 0 {
        drop(listen_socket(address, false)?.listen(1)?);
    }
    let first = listen_socket(address, shared)?
        .listen(ACCEPT_BACKLOG)?
        .into_std()?;
    let address = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        let socket = listen_socket(address, shared)?;
        sockets.push(socket.listen(ACCEPT_BACKLOG)?.into_std()?);
    }
    Ok(sockets)
}

fn listen_socket(address: SocketAddr, reuse_port: bool) -> io::Result<TcpSocket> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(address)?;
    Ok(socket)
}

/// A bound listener, ready to serve: one socket per worker.
pub struct Listener {
    pub context: Arc<ListenerContext>,
    pub max_connections: usize,
    /// Set on TLS listeners: every connection shakes hands before HTTP.
    pub tls: Option<Arc<TlsListener>>,
    /// Reloads the TLS listener's certificates when their files change.
    pub certificate_watcher: Option<CertificateWatcher>,
    pub workers: Vec<WorkerSocket>,
}

/// A listener's socket on one worker.
pub struct WorkerSocket {
    /// The worker's runtime, which runs the accept loop and the connections.
    pub runtime: tokio::runtime::Handle,
    /// A duplicate of the worker's socket: the listener set keeps the socket open, so
    /// that a reload can hand it to a new accept loop without closing it (connections
    /// wait in the kernel's queue meanwhile). Registered with `runtime` by the loop.
    pub socket: std::net::TcpListener,
    pub metrics: ListenerMetrics,
    /// The connection counters of the worker.
    pub connections: WorkerConnections,
}

/// What one worker's accept loop shares with the listener's other workers.
struct Accepting {
    context: Arc<ListenerContext>,
    builders: Arc<HttpBuilders>,
    /// The listener's connection limit.
    limit: Arc<Semaphore>,
    max_connections: usize,
    tls: Option<Arc<TlsListener>>,
}

impl Listener {
    /// Accepts and serves connections on every worker until `shutdown.accept` or
    /// `shutdown.drain`; then waits until every connection has finished (bounded by
    /// `shutdown.close`).
    pub async fn serve(mut self, shutdown: Shutdown) {
        if let Some(watcher) = self.certificate_watcher.take() {
            tokio::spawn(watcher.run(shutdown.accept.clone()));
        }
        let shared = Arc::new(Accepting {
            builders: Arc::new(HttpBuilders::new(&self.context)),
            context: self.context,
            limit: Arc::new(Semaphore::new(self.max_connections)),
            max_connections: self.max_connections,
            tls: self.tls,
        });
        let mut accepting = tokio::task::JoinSet::new();
        for worker in self.workers {
            let runtime = worker.runtime.clone();
            accepting.spawn_on(
                accept_loop(worker, shared.clone(), shutdown.clone()),
                &runtime,
            );
        }
        while accepting.join_next().await.is_some() {}
        // Every connection holds a permit: all permits back means all connections done.
        // (Only now that no worker accepts: a permit taken here is one no accepted
        // client waits for.)
        let everyone = u32::try_from(shared.max_connections).unwrap_or(u32::MAX);
        let mut close = shutdown.close.clone();
        tokio::select! {
            _ = shared.limit.acquire_many(everyone) => {}
            _ = signalled(&mut close) => {}
        }
    }
}

/// One worker's accept loop: accepts on the worker's socket and serves each connection
/// in a task on the worker's runtime, until accepting stops.
async fn accept_loop(worker: WorkerSocket, shared: Arc<Accepting>, mut shutdown: Shutdown) {
    let name = &shared.context.name;
    let tcp = match TcpListener::from_std(worker.socket) {
        Ok(tcp) => tcp,
        Err(error) => {
            tracing::error!(listener = %name, "cannot accept on this worker: {error}");
            return;
        }
    };
    let mut backoff = Duration::from_millis(5);
    let mut at_limit = false;
    // Accept first, then take a place under the limit: a worker must not sit on the
    // listener's last free place while the waiting client is in another worker's queue.
    // Each worker holds at most one accepted connection that waits for a place; the
    // others wait in the kernel's queue.
    while let Some((stream, peer)) = accept_next(&tcp, name, &mut backoff, &mut shutdown).await {
        let Some(permit) = take_place(&shared, &mut at_limit, &shutdown).await else {
            break;
        };
        worker.metrics.accepted.inc();
        worker.connections.accepted.inc();
        let slot = ConnectionSlot::open(
            [
                worker.metrics.active.clone(),
                worker.connections.active.clone(),
            ],
            permit,
        );
        spawn_connection(&shared, stream, peer, &shutdown, slot);
    }
}

/// The next client, or `None` once accepting must stop. Errors of one connection are
/// skipped; errors of the process (EMFILE, ENFILE, ENOBUFS: out of something) are
/// logged and waited out with a growing backoff instead of spinning.
async fn accept_next(
    tcp: &TcpListener,
    name: &str,
    backoff: &mut Duration,
    shutdown: &mut Shutdown,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = shutdown.accepting_stops() => return None,
        };
        match accepted {
            Ok(accepted) => {
                *backoff = Duration::from_millis(5);
                return Some(accepted);
            }
            Err(error) if is_per_connection_error(&error) => continue,
            Err(error) => {
                tracing::error!(listener = %name, "accept failed: {error}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(*backoff) => {}
                    _ = shutdown.accepting_stops() => return None,
                }
                *backoff = (*backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A place under the listener's `max_connections` for an accepted client, waiting for
/// one when all are taken; `None` when the listener drains meanwhile.
async fn take_place(
    shared: &Accepting,
    at_limit: &mut bool,
    shutdown: &Shutdown,
) -> Option<OwnedSemaphorePermit> {
    let name = &shared.context.name;
    match shared.limit.clone().try_acquire_owned() {
        Ok(permit) => {
            if *at_limit {
                tracing::info!(listener = %name, "below the connection limit again");
                *at_limit = false;
            }
            Some(permit)
        }
        Err(TryAcquireError::Closed) => None,
        Err(TryAcquireError::NoPermits) => {
            if !*at_limit {
                tracing::warn!(
                    listener = %name,
                    max_connections = shared.max_connections,
                    "connection limit reached; new connections wait until others close"
                );
                *at_limit = true;
            }
            // The accepted client is served once a place frees, even if a reload
            // replaces the listener meanwhile; only a drain gives up on it.
            let mut drain = shutdown.drain.clone();
            tokio::select! {
                permit = shared.limit.clone().acquire_owned() => permit.ok(),
                _ = signalled(&mut drain) => None,
            }
        }
    }
}

/// Serves an accepted connection in a task of its own.
fn spawn_connection(
    shared: &Accepting,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: &Shutdown,
    slot: ConnectionSlot,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {error}");
    }
    let connection = ConnectionContext {
        listener: shared.context.clone(),
        peer_ip: peer_ip_value(peer.ip()),
        peer: peer.ip(),
        peer_port: peer.port(),
        tls_version: None,
        close: shutdown.close.clone(),
        drain: shutdown.drain.clone(),
    };
    let builders = shared.builders.clone();
    let shutdown = shutdown.clone();
    let idle_timeout = shared.context.limits.idle_timeout;
    // Plain and TLS connections are separate task types: a task is as large as its
    // future, and an idle plain connection must not carry the TLS states.
    match shared.tls.clone() {
        None => {
            tokio::spawn(serve_plain(
                stream,
                builders,
                connection,
                shutdown,
                idle_timeout,
                slot,
            ));
        }
        Some(tls) => {
            tokio::spawn(serve_tls(
                stream,
                peer,
                tls,
                builders,
                connection,
                shutdown,
                idle_timeout,
                slot,
            ));
        }
    }
}

/// The client's address as a header value (for `X-Forwarded-For`). Each thread keeps
/// the last one it made: clients behind a load balancer or a NAT arrive from a few
/// addresses, and formatting an address took ~2,400 instructions per connection,
/// about a quarter of what accepting one costs in user space.
fn peer_ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((cached, value)) if *cached == ip => value.clone(),
            _ => {
                let value = HeaderValue::from_str(&ip.to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

/// One accepted connection's place: counted as active, and holding a permit of the
/// listener's connection limit, until dropped.
struct ConnectionSlot {
    /// The listener's and the worker's gauges of open connections.
    active: [prometheus::IntGauge; 2],
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl ConnectionSlot {
    fn open(active: [prometheus::IntGauge; 2], permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        for gauge in &active {
            gauge.inc();
        }
        ConnectionSlot {
            active,
            _permit: permit,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        for gauge in &self.active {
            gauge.dec();
        }
    }
}

/// Serves a cleartext connection once its first bytes arrive. They are read (not
/// peeked: that would cost a system call per connection) into the buffer the HTTP/1.1
/// server goes on with, or that hyper is handed back first. On a listener that takes a
/// PROXY protocol header, the header is read first (that reader does peek: it must
/// leave the bytes after the header in the socket).
async fn serve_plain(
    mut stream: TcpStream,
    builders: Arc<HttpBuilders>,
    mut connection: ConnectionContext,
    shutdown: Shutdown,
    idle_timeout: Duration,
    _slot: ConnectionSlot,
) {
    let mut drain = shutdown.drain.clone();
    let mut first = BytesMut::new();
    if connection.listener.proxy_protocol.is_some() {
        // The port only names the peer in the log; the task does not keep it otherwise.
        let peer = stream
            .peer_addr()
            .unwrap_or(SocketAddr::new(connection.peer, 0));
        match proxy_header(&mut stream, peer, &mut connection, &mut drain).await {
            Some(received) => first = received.first,
            None => return,
        }
    }
    // Read onto the stack, then kept in a buffer of the size that arrived: a connection
    // waiting for its first bytes holds no buffer, nor does a burst of new connections
    // leave 8 KiB apiece behind. (Through `AsyncRead`, not `try_read`: tokio then notes
    // that a short read emptied the socket, which saves the next read's system call.)
    // Bytes the PROXY header's reader took that were no header come first instead.
    if first.is_empty() {
        let read = std::future::poll_fn(|cx| {
            let mut scratch = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut filled = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut stream).poll_read(cx, &mut filled))?;
            first.extend_from_slice(filled.filled());
            Poll::Ready(Ok::<_, io::Error>(filled.filled().len()))
        });
        if first_bytes_arrive(read, idle_timeout, &mut drain)
            .await
            .is_none()
        {
            return;
        }
    }
    // Nearly always decided by the first read: no timer is set up unless it was not.
    let decided = Protocol::sniff(&first) != Protocol::Undecided
        || first_bytes_arrive(
            read_until_decided(&mut stream, &mut first),
            idle_timeout,
            &mut drain,
        )
        .await
        .is_some();
    if decided {
        let protocol = Protocol::sniff(&first);
        serve_connection(
            &builders, protocol, stream, first, false, connection, shutdown,
        )
        .await;
    }
}

/// Reads on while the bytes so far are a strict prefix of the HTTP/2 preface (a client
/// that sent `P`, or `PRI * HTTP/2.0`, in its first segment), until they tell HTTP/1.1
/// from HTTP/2: every HTTP/1.1 request then meets the gateway's own parser, however its
/// first bytes were split. `Ok(0)`: the client closed before they told.
async fn read_until_decided<S: AsyncRead + Unpin>(
    stream: &mut S,
    first: &mut BytesMut,
) -> io::Result<usize> {
    while Protocol::sniff(first) == Protocol::Undecided {
        let mut more = [0u8; H2_PREFACE.len()];
        let read = stream.read(&mut more).await?;
        if read == 0 {
            return Ok(0);
        }
        first.extend_from_slice(&more[..read]);
    }
    Ok(first.len())
}

/// Shakes hands, then serves the connection once its first request bytes arrive.
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    tls: Arc<TlsListener>,
    builders: Arc<HttpBuilders>,
    mut connection: ConnectionContext,
    shutdown: Shutdown,
    idle_timeout: Duration,
    _slot: ConnectionSlot,
) {
    let mut drain = shutdown.drain.clone();
    // The PROXY header comes before the handshake: the balancer passes TLS through.
    if connection.listener.proxy_protocol.is_some() {
        let Some(received) = proxy_header(&mut stream, peer, &mut connection, &mut drain).await
        else {
            return;
        };
        if !received.first.is_empty() {
            // Bytes that began like a header but were none: never a ClientHello,
            // whose first byte (0x16) tells at once.
            tracing::debug!(
                listener = %connection.listener.name,
                %peer,
                "closing a connection that sent neither TLS nor a PROXY header"
            );
            return;
        }
        peer = received.client;
    }
    // A handshake still under way when draining starts is abandoned.
    let handshake = tokio::select! {
        handshake = tls.handshake(stream, peer) => handshake,
        _ = signalled(&mut drain) => None,
    };
    if let Some(tls) = handshake {
        // TLS streams cannot peek: a small buffer holds the first bytes instead;
        // hyper's larger reads then bypass it.
        let alpn = Protocol::from_alpn(tls.stream.get_ref().1.alpn_protocol());
        connection.tls_version = tls_version_name(tls.stream.get_ref().1.protocol_version());
        let mut stream = BufReader::with_capacity(FIRST_READ_BUFFER, tls.stream);
        let fill = async { stream.fill_buf().await.map(<[u8]>::len) };
        if first_bytes_arrive(fill, idle_timeout, &mut drain)
            .await
            .is_some()
        {
            // Without ALPN, the first bytes tell, as on cleartext listeners; when they
            // cannot yet, they are taken out of the buffer and more are read.
            let mut first = BytesMut::new();
            let protocol = match alpn {
                Protocol::Undecided if Protocol::sniff(stream.buffer()) == Protocol::Undecided => {
                    first.extend_from_slice(stream.buffer());
                    stream.consume(first.len());
                    let decided = read_until_decided(&mut stream, &mut first);
                    if first_bytes_arrive(decided, idle_timeout, &mut drain)
                        .await
                        .is_none()
                    {
                        return;
                    }
                    Protocol::sniff(&first)
                }
                Protocol::Undecided => Protocol::sniff(stream.buffer()),
                decided => decided,
            };
            serve_connection(
                &builders, protocol, stream, first, true, connection, shutdown,
            )
            .await;
        }
        drop(tls.active);
    }
}

/// Reads the PROXY protocol header that starts a connection of a listener that takes
/// one (see [`proxy_protocol`]); the client it names becomes the connection's peer.
/// `None`: close the connection (refused, or draining).
async fn proxy_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    connection: &mut ConnectionContext,
    drain: &mut watch::Receiver<bool>,
) -> Option<proxy_protocol::Received> {
    let listener = connection.listener.clone();
    let proxy = listener.proxy_protocol.as_ref()?;
    // Boxed: the connection's task keeps room for its largest state all its life, and
    // this one (buffers, two timers) is over once the header is read.
    let read = Box::pin(proxy.accept(
        stream,
        peer,
        &listener.trusted_proxies,
        listener.limits.idle_timeout,
        &listener.name,
    ));
    // A header still under way when draining starts is abandoned.
    let received = tokio::select! {
        received = read => received?,
        _ = signalled(drain) => return None,
    };
    connection.peer_port = received.client.port();
    if received.client.ip() != connection.peer {
        connection.peer = received.client.ip();
        connection.peer_ip = peer_ip_value(connection.peer);
    }
    Some(received)
}

/// A TLS version as the access log names it.
fn tls_version_name(version: Option<rustls::ProtocolVersion>) -> Option<&'static str> {
    match version? {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => Some("TLS"),
    }
}

/// Bytes buffered while waiting for a TLS client's first request bytes.
const FIRST_READ_BUFFER: usize = 1024;
/// The first read of a cleartext connection.
const FIRST_READ: usize = 8 * 1024;

/// Waits, for at most the idle timeout, until `read` (a peek or a buffered read) says the
/// client has sent something, and returns how many bytes are there. hyper's header
/// timeout starts only once the connection is handed to it: a client that connects (or
/// completes a TLS handshake) and then sends nothing must be timed out here. Once the
/// gateway drains, a client that connected just before gets
/// [`http1::IDLE_DRAIN_GRACE`] more for its request, which is on its way (closing now
/// would fail it), and is answered with `Connection: close`. `None`: close the
/// connection (timed out, closed by the client, or nothing came within the drain's
/// grace).
async fn first_bytes_arrive(
    read: impl std::future::Future<Output = io::Result<usize>>,
    idle_timeout: Duration,
    drain: &mut watch::Receiver<bool>,
) -> Option<usize> {
    let read = tokio::time::timeout(idle_timeout, read);
    let mut read = std::pin::pin!(read);
    let outcome = tokio::select! {
        read = &mut read => read,
        _ = signalled(drain) => {
            match tokio::time::timeout(http1::IDLE_DRAIN_GRACE, &mut read).await {
                Ok(read) => read,
                Err(_grace_over) => return None,
            }
        }
    };
    match outcome {
        Ok(Ok(n)) => (n > 0).then_some(n),
        Ok(Err(_)) => None,
        Err(_elapsed) => {
            tracing::debug!("closing a connection that sent nothing within {idle_timeout:?}");
            None
        }
    }
}

/// Accept errors that concern one connection only (it was reset before we took it).
fn is_per_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_are_formatted_and_the_last_one_is_reused() {
        let v4: IpAddr = "192.0.2.7".parse().expect("v4");
        let v6: IpAddr = "2001:db8::1".parse().expect("v6");
        assert_eq!(peer_ip_value(v4), "192.0.2.7");
        assert_eq!(peer_ip_value(v4), "192.0.2.7");
        assert_eq!(peer_ip_value(v6), "2001:db8::1");
        assert_eq!(peer_ip_value(v4), "192.0.2.7");
    }
}
