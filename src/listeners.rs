//! The client listeners a gateway runs, and how a reload changes them.
//!
//! A change is prepared first ([`ListenerSet::prepare`]): new addresses are bound and
//! TLS configurations built, so anything that fails (an address in use, a bad
//! certificate) fails that reload alone, before anything changes. Then it is applied
//! ([`ListenerSet::apply`]): new accept loops start; replaced ones stop accepting
//! (their open connections go on until they close), removed ones also drain their
//! connections. A listener whose settings change but whose
//! address stays keeps its socket: the new accept loop takes it over, and clients that
//! connect meanwhile wait in the kernel's queue instead of being refused.
//!
//! With per-core workers ([`crate::workers`]) a listener is one socket per worker
//! (`SO_REUSEPORT`), each with an accept loop on its worker's runtime; the listener's
//! connection limit is shared by them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::ListenerConfig;
use crate::metrics::Metrics;
use crate::proxy::Snapshot;
use crate::server::{self, Listener, ListenerContext, ProxyProtocol, Shutdown, WorkerSocket};
use crate::tls::{CertificateWatcher, TlsListener};
use crate::upgrade::{Inherited, Offered};

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen on {address} for {what}")]
    Bind {
        what: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS for listener {listener:?}: {source}")]
    Tls {
        listener: String,
        #[source]
        source: rustls::Error,
    },
}

/// A listener's sockets, one per worker.
type Sockets = Arc<Vec<std::net::TcpListener>>;

/// A listener ready to start: sockets bound, TLS built.
pub struct Ready {
    config: ListenerConfig,
    sockets: Sockets,
    /// Duplicates of `sockets` for the new accept loops, with the worker that runs
    /// each (made here, so that running out of file descriptors fails the change, not
    /// one worker's loop). One per worker, unless the sockets were inherited from a
    /// process with another number of workers ([`worker_sockets`]).
    for_workers: Vec<(usize, std::net::TcpListener)>,
    tls: Option<(Arc<TlsListener>, CertificateWatcher)>,
}

/// What a reload changes: listeners to start and, by name, listeners to stop.
#[derive(Default)]
pub struct Changes {
    start: Vec<Ready>,
    stop: Vec<String>,
}

struct Running {
    config: ListenerConfig,
    address: SocketAddr,
    sockets: Sockets,
    /// Stops the accept loops.
    accept: watch::Sender<bool>,
    /// Asks the connections to finish and close.
    drain: watch::Sender<bool>,
}

struct Inner {
    running: Vec<Running>,
    /// Drain signals of replaced listeners whose connections are still open (a full
    /// shutdown drains them too).
    retired: Vec<watch::Sender<bool>>,
    tasks: JoinSet<()>,
    stopped: bool,
}

/// The running listeners. A std mutex guards them: held only to read or update the
/// set, never across `.await`.
pub struct ListenerSet {
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Metrics,
    /// The runtimes that serve connections, worker 0 first; every listener accepts on
    /// each of them.
    workers: Vec<Handle>,
    close: watch::Receiver<bool>,
    /// Sockets handed over by the process this one replaces (a binary upgrade), used
    /// instead of binding their addresses.
    inherited: Arc<Inherited>,
    inner: Mutex<Inner>,
}

impl ListenerSet {
    /// An empty set whose listeners accept on every one of `workers`; `close` ends the
    /// connections still open after a drain.
    pub fn new(
        state: Arc<ArcSwap<Snapshot>>,
        metrics: Metrics,
        workers: Vec<Handle>,
        close: watch::Receiver<bool>,
        inherited: Arc<Inherited>,
    ) -> Self {
        ListenerSet {
            state,
            metrics,
            workers,
            close,
            inherited,
            inner: Mutex::new(Inner {
                running: Vec::new(),
                retired: Vec::new(),
                tasks: JoinSet::new(),
                stopped: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Binds what is new and builds TLS for `wanted`, changing nothing yet.
    pub fn prepare(&self, wanted: &[ListenerConfig]) -> Result<Changes, ListenerError> {
        let inner = self.lock();
        let mut changes = Changes::default();
        for config in wanted {
            let current = inner.running.iter().find(|r| r.config.name == config.name);
            if current.is_some_and(|r| r.config == *config) {
                continue;
            }
            // Reuse a socket already bound to this address (this listener's, or one a
            // removed or moved listener leaves behind).
            let reused = (config.address.port() != 0)
                .then(|| {
                    inner
                        .running
                        .iter()
                        .find(|r| r.config.address == config.address)
                })
                .flatten();
            let sockets = match reused {
                Some(running) => {
                    changes.stop.push(running.config.name.clone());
                    running.sockets.clone()
                }
                None => {
                    let inherited = self.inherited.take(config.address);
                    if inherited.is_empty() {
                        Arc::new(
                            server::bind_group(config.address, self.workers.len()).map_err(
                                |source| ListenerError::Bind {
                                    what: format!("listener {:?}", config.name),
                                    address: config.address,
                                    source,
                                },
                            )?,
                        )
                    } else {
                        tracing::info!(listener = %config.name, address = %config.address, sockets = inherited.len(), "listening on the sockets of the process this one replaces");
                        Arc::new(inherited)
                    }
                }
            };
            let tls = match &config.tls {
                Some(tls) => Some(TlsListener::new(&config.name, tls, &self.metrics).map_err(
                    |source| ListenerError::Tls {
                        listener: config.name.clone(),
                        source,
                    },
                )?),
                None => None,
            };
            if let Some(current) = current {
                changes.stop.push(current.config.name.clone());
            }
            let for_workers = worker_sockets(&sockets, self.workers.len()).map_err(|source| {
                ListenerError::Bind {
                    what: format!(
                        "listener {:?} (sharing its sockets with the workers)",
                        config.name
                    ),
                    address: config.address,
                    source,
                }
            })?;
            changes.start.push(Ready {
                config: config.clone(),
                sockets,
                for_workers,
                tls,
            });
        }
        for running in &inner.running {
            if !wanted.iter().any(|w| w.name == running.config.name) {
                changes.stop.push(running.config.name.clone());
            }
        }
        changes.stop.sort();
        changes.stop.dedup();
        Ok(changes)
    }

    /// Stops what `changes` stops (they drain), then starts what it starts.
    pub fn apply(&self, changes: Changes) {
        let mut inner = self.lock();
        while inner.tasks.try_join_next().is_some() {}
        inner.retired.retain(|drain| drain.receiver_count() > 0);
        for name in &changes.stop {
            if let Some(position) = inner.running.iter().position(|r| &r.config.name == name) {
                let running = inner.running.remove(position);
                let _ = running.accept.send(true);
                let replaced = changes.start.iter().any(|r| &r.config.name == name);
                if replaced {
                    // Its connections go on until they close; the new accept loop takes
                    // the new ones. Draining them now would close connections accepted
                    // at this very moment before their first request.
                    inner.retired.push(running.drain);
                } else {
                    let _ = running.drain.send(true);
                }
                tracing::info!(
                    listener = %name,
                    address = %running.address,
                    "{}",
                    if replaced { "listener settings changed; old connections drain" } else { "listener removed; its connections drain" }
                );
            }
        }
        if inner.stopped {
            return;
        }
        for ready in changes.start {
            let (accept_tx, accept_rx) = watch::channel(false);
            let (drain_tx, drain_rx) = watch::channel(false);
            let address = ready
                .sockets
                .first()
                .and_then(|socket| socket.local_addr().ok())
                .unwrap_or(ready.config.address);
            let config = ready.config;
            let (tls, certificate_watcher) = ready.tls.unzip();
            tracing::info!(listener = %config.name, %address, tls = tls.is_some(), workers = self.workers.len(), "listening");
            let context = Arc::new(ListenerContext {
                name: config.name.clone(),
                limits: config.limits,
                state: self.state.clone(),
                forwarded_proto: HeaderValue::from_static(if tls.is_some() {
                    "https"
                } else {
                    "http"
                }),
                redirect_to_https: config.redirect_to_https,
                error_detail: config.error_detail,
                timeouts: self.metrics.client_timeouts(&config.name),
                header_fields_dropped: self.metrics.header_fields_dropped(&config.name),
                cancel_floods: self.metrics.http2_cancel_floods(&config.name),
                trusted_proxies: config.client_ip.trusted_proxies.clone(),
                proxy_protocol: config.client_ip.proxy_protocol.map(|proxy| {
                    ProxyProtocol::new(proxy, self.metrics.proxy_protocol(&config.name))
                }),
            });
            let workers = ready
                .for_workers
                .into_iter()
                .map(|(index, socket)| WorkerSocket {
                    runtime: self.workers[index].clone(),
                    socket,
                    metrics: self.metrics.listener(&config.name),
                    connections: self.metrics.worker(index),
                })
                .collect();
            let listener = Listener {
                context,
                max_connections: config.max_connections,
                tls,
                certificate_watcher,
                workers,
            };
            inner.tasks.spawn(listener.serve(Shutdown {
                accept: accept_rx,
                drain: drain_rx,
                close: self.close.clone(),
            }));
            inner.running.push(Running {
                config,
                address,
                sockets: ready.sockets,
                accept: accept_tx,
                drain: drain_tx,
            });
        }
    }

    /// Duplicates of every running listener's sockets, with their addresses, for the
    /// process that replaces this one (a binary upgrade).
    pub fn offer(&self) -> std::io::Result<Vec<Offered>> {
        let inner = self.lock();
        let mut offered = Vec::new();
        for running in &inner.running {
            for socket in running.sockets.iter() {
                offered.push(Offered {
                    address: running.address,
                    socket: socket.try_clone()?,
                });
            }
        }
        Ok(offered)
    }

    /// Every running listener's name and bound address.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.lock()
            .running
            .iter()
            .map(|r| (r.config.name.clone(), r.address))
            .collect()
    }

    /// Stops accepting everywhere and returns the listener tasks, which end once their
    /// connections have drained (or `close` fires).
    pub fn drain_all(&self) -> JoinSet<()> {
        let mut inner = self.lock();
        inner.stopped = true;
        // Dropping our handles on the sockets lets them close as the loops stop.
        for running in std::mem::take(&mut inner.running) {
            let _ = running.accept.send(true);
            let _ = running.drain.send(true);
        }
        for drain in std::mem::take(&mut inner.retired) {
            let _ = drain.send(true);
        }
        std::mem::take(&mut inner.tasks)
    }
}

/// The accept loops of a listener's `sockets` on `workers` workers: each socket with
/// the worker that accepts on it. Sockets this process bound are one per worker; ones
/// inherited from a process with another number of workers are spread: every socket
/// gets a loop (connections already wait in each one's queue) and every worker at
/// least one.
fn worker_sockets(
    sockets: &[std::net::TcpListener],
    workers: usize,
) -> std::io::Result<Vec<(usize, std::net::TcpListener)>> {
    let loops = sockets.len().max(workers);
    (0..loops)
        .map(|i| Ok((i % workers, sockets[i % sockets.len()].try_clone()?)))
        .collect()
}
