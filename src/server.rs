//! Client-facing listeners: binding, the accept loop with its connection limit, TLS
//! ([`tls`], in each connection's task), serving each connection with hyper (HTTP/1.1,
//! HTTP/2 over TLS by ALPN, and cleartext HTTP/2 with prior knowledge), and draining
//! connections on shutdown.

pub mod tls;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};

use crate::metrics::ListenerMetrics;
use crate::proxy::{ConnectionContext, ListenerContext};
use tls::{CertificateWatcher, TlsListener};

/// Pending connections the kernel may hold for us while we are at `max_connections`.
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds a listening socket with `SO_REUSEADDR` and a deep accept queue.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Signals that stop a listener: `accept` stops its accept loop only (a reload replaced
/// it: its connections go on); `drain` also asks its connections to finish their
/// requests and close; `close` ends whatever is still open.
#[derive(Clone)]
pub struct Shutdown {
    pub accept: watch::Receiver<bool>,
    pub drain: watch::Receiver<bool>,
    pub close: watch::Receiver<bool>,
}

impl Shutdown {
    /// Resolves once the accept loop must stop.
    async fn accepting_stops(&mut self) {
        tokio::select! {
            _ = signalled(&mut self.accept) => {}
            _ = signalled(&mut self.drain) => {}
        }
    }
}

/// Resolves once `signal` turns true, or its sender is gone (which also means stop).
pub async fn signalled(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}

/// A bound listener, ready to serve.
pub struct Listener {
    /// Shared so that a reload can hand the socket to a new accept loop without
    /// closing it (connections wait in the kernel's queue meanwhile).
    pub tcp: Arc<TcpListener>,
    pub context: Arc<ListenerContext>,
    pub max_connections: usize,
    pub metrics: ListenerMetrics,
    /// Set on TLS listeners: every connection shakes hands before HTTP.
    pub tls: Option<Arc<TlsListener>>,
    /// Reloads the TLS listener's certificates when their files change.
    pub certificate_watcher: Option<CertificateWatcher>,
}

impl Listener {
    /// Accepts and serves connections until `shutdown.accept` or `shutdown.drain`; then
    /// waits until every connection has finished (bounded by `shutdown.close`).
    pub async fn serve(mut self, mut shutdown: Shutdown) {
        if let Some(watcher) = self.certificate_watcher.take() {
            tokio::spawn(watcher.run(shutdown.accept.clone()));
        }
        let builder = Arc::new(http_builder(&self.context));
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let mut backoff = Duration::from_millis(5);
        let mut at_limit = false;
        loop {
            if limit.available_permits() == 0 {
                if !at_limit {
                    tracing::warn!(
                        listener = %self.context.name,
                        max_connections = self.max_connections,
                        "connection limit reached; new connections wait in the accept queue"
                    );
                }
                at_limit = true;
            } else if at_limit {
                tracing::info!(listener = %self.context.name, "below the connection limit again");
                at_limit = false;
            }
            let permit = tokio::select! {
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = shutdown.accepting_stops() => break,
            };
            let accepted = tokio::select! {
                accepted = self.tcp.accept() => accepted,
                _ = shutdown.accepting_stops() => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(5);
                    accepted
                }
                Err(error) if is_per_connection_error(&error) => continue,
                Err(error) => {
                    // EMFILE, ENFILE, ENOBUFS: the process is out of something; back
                    // off instead of spinning, and keep the loop alive.
                    tracing::error!(listener = %self.context.name, "accept failed: {error}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.accepting_stops() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            self.metrics.accepted.inc();
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {error}");
            }
            let connection = ConnectionContext {
                listener: self.context.clone(),
                peer_ip: HeaderValue::from_str(&peer.ip().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                close: shutdown.close.clone(),
            };
            let builder = builder.clone();
            let shutdown = shutdown.clone();
            let active = self.metrics.active.clone();
            let tls = self.tls.clone();
            let idle_timeout = self.context.limits.idle_timeout;
            tokio::spawn(async move {
                active.inc();
                let mut drain = shutdown.drain.clone();
                match tls {
                    None => {
                        let mut first_byte = [0u8; 1];
                        let peek = stream.peek(&mut first_byte);
                        if first_byte_arrives(peek, idle_timeout, &mut drain).await {
                            serve_connection(&builder, stream, connection, shutdown).await;
                        }
                    }
                    Some(tls) => {
                        // A handshake still under way when draining starts is abandoned.
                        let handshake = tokio::select! {
                            handshake = tls.handshake(stream, peer) => handshake,
                            _ = signalled(&mut drain) => None,
                        };
                        if let Some(tls) = handshake {
                            // TLS streams cannot peek: a small buffer holds the first
                            // bytes instead; hyper's larger reads then bypass it.
                            let mut stream =
                                BufReader::with_capacity(FIRST_READ_BUFFER, tls.stream);
                            let fill = async { stream.fill_buf().await.map(<[u8]>::len) };
                            if first_byte_arrives(fill, idle_timeout, &mut drain).await {
                                serve_connection(&builder, stream, connection, shutdown).await;
                            }
                            drop(tls.active);
                        }
                    }
                }
                active.dec();
                drop(permit);
            });
        }
        drop(self.tcp);
        // Every connection holds a permit: all permits back means all connections done.
        let everyone = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let mut close = shutdown.close.clone();
        tokio::select! {
            _ = limit.acquire_many(everyone) => {}
            _ = signalled(&mut close) => {}
        }
    }
}

/// Bytes buffered while waiting for a TLS client's first request bytes.
const FIRST_READ_BUFFER: usize = 1024;

/// Waits, for at most the idle timeout, until `read` (a peek or a buffered read) says the
/// client has sent something. hyper's header timeout starts only once the protocol has
/// been detected from the first bytes: a client that connects (or completes a TLS
/// handshake) and then sends nothing must be timed out here. False: close the
/// connection (timed out, closed by the client, or draining).
async fn first_byte_arrives(
    read: impl std::future::Future<Output = io::Result<usize>>,
    idle_timeout: Duration,
    drain: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        read = tokio::time::timeout(idle_timeout, read) => match read {
            Ok(Ok(n)) => n > 0,
            Ok(Err(_)) => false,
            Err(_elapsed) => {
                tracing::debug!("closing a connection that sent nothing within {idle_timeout:?}");
                false
            }
        },
        _ = signalled(drain) => false,
    }
}

fn http_builder(context: &ListenerContext) -> auto::Builder<TokioExecutor> {
    let limits = &context.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_size.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(limits.idle_timeout));
    builder
}

async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    context: ConnectionContext,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let context = Arc::new(context);
    let service = service_fn(move |request| {
        let context = context.clone();
        async move { Ok::<_, Infallible>(context.handle(request).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = signalled(&mut shutdown.drain) => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                _ = signalled(&mut shutdown.close) => Ok(()),
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!("connection ended with an error: {error}");
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
