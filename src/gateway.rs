//! The gateway's life: bind every listener (fail before serving anything), serve
//! (reloading the configuration file when it changes, see [`crate::reload`]), and
//! shut down in steps: stop accepting and report not-ready, let in-flight requests
//! finish for up to `shutdown_timeout`, then close what is left.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::listeners::{ListenerError, ListenerSet};
use crate::metrics::Metrics;
use crate::proxy::Snapshot;
use crate::reload::Reloader;
use crate::server;
use crate::upgrade::{Inherited, Offered};
use crate::workers::Workers;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error("cannot start the worker threads")]
    Workers(#[source] std::io::Error),
    #[error("cannot listen on {address} for the admin listener")]
    Admin {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A gateway that is serving. Dropping it starts a graceful shutdown.
pub struct RunningGateway {
    listeners: Arc<ListenerSet>,
    admin: Option<SocketAddr>,
    /// A duplicate of the admin listener's socket, to hand over in a binary upgrade.
    admin_socket: Option<Arc<std::net::TcpListener>>,
    reloader: Option<Arc<Reloader>>,
    state: Arc<ArcSwap<Snapshot>>,
    drain: watch::Sender<bool>,
    stopped: JoinHandle<()>,
}

impl RunningGateway {
    /// The bound address of the listener called `name` (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .addresses()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Every running listener's name and bound address.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.addresses()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// What lists the gateway's listening sockets (duplicates, with their addresses) for
    /// the process that replaces it in a binary upgrade ([`crate::upgrade::serve`]).
    pub fn offerer(&self) -> impl Fn() -> std::io::Result<Vec<Offered>> + Send + 'static {
        let listeners = self.listeners.clone();
        let admin = self.admin.zip(self.admin_socket.clone());
        move || {
            let mut offered = listeners.offer()?;
            if let Some((address, socket)) = &admin {
                offered.push(Offered {
                    address: *address,
                    socket: socket.try_clone()?,
                });
            }
            Ok(offered)
        }
    }

    /// The reloader, when the gateway was started from a file.
    pub fn reloader(&self) -> Option<&Arc<Reloader>> {
        self.reloader.as_ref()
    }

    /// Reopens every access-log file of the configuration in use before its next line
    /// (the binary does this on `SIGUSR1`, logrotate's convention).
    pub fn reopen_access_logs(&self) {
        self.access_log_reopener().reopen();
    }

    /// A handle that reopens the access logs, for a signal handler's task.
    pub fn access_log_reopener(&self) -> AccessLogReopener {
        AccessLogReopener(self.state.clone())
    }

    /// Stops accepting, waits for in-flight requests (at most `shutdown_timeout`), and
    /// returns when everything is closed.
    pub async fn shutdown(self) {
        let _ = self.drain.send(true);
        let _ = self.stopped.await;
    }
}

/// Reopens the access-log files of the configuration in use (see
/// [`RunningGateway::reopen_access_logs`]).
#[derive(Clone)]
pub struct AccessLogReopener(Arc<ArcSwap<Snapshot>>);

impl AccessLogReopener {
    pub fn reopen(&self) {
        for log in self.0.load().access_logs.iter().flatten() {
            log.reopen();
        }
    }
}

/// Binds and starts serving `config`.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    launch(config, Metrics::new(), None, Inherited::none()).await
}

/// Binds and starts serving `config`, which was loaded from `path` (whose content
/// hashes to `text_hash`); reloads it when the file changes (unless `reload.watch` is
/// off) and on `POST /reload` (the binary adds SIGHUP).
pub async fn start_reloadable(
    config: Config,
    path: PathBuf,
    text_hash: String,
) -> Result<RunningGateway, StartError> {
    start_replacing(config, path, text_hash, Inherited::none()).await
}

/// As [`start_reloadable`], serving on the listening sockets `inherited` from the
/// process this one replaces (a binary upgrade, [`crate::upgrade`]) where their
/// addresses are those of the configuration; inherited sockets it does not listen on
/// are closed.
pub async fn start_replacing(
    config: Config,
    path: PathBuf,
    text_hash: String,
    inherited: Inherited,
) -> Result<RunningGateway, StartError> {
    launch(config, Metrics::new(), Some((path, text_hash)), inherited).await
}

async fn launch(
    config: Config,
    metrics: Metrics,
    source: Option<(PathBuf, String)>,
    inherited: Inherited,
) -> Result<RunningGateway, StartError> {
    let inherited = Arc::new(inherited);
    crate::reload::note_descriptor_budget(&config, &metrics);
    let shutdown_timeout = config.shutdown_timeout;
    let reload_config = config.reload;
    let listener_configs = config.listeners.clone();
    let admin_config = config.admin.clone();
    let workers = match config.per_core_workers() {
        1 => Workers::single(),
        count => Workers::start(count).map_err(StartError::Workers)?,
    };
    let state = Arc::new(ArcSwap::from_pointee(Snapshot::build(
        config, &metrics, None,
    )));

    let (drain_tx, drain_rx) = watch::channel(false);
    let (close_tx, close_rx) = watch::channel(false);
    let listeners = Arc::new(ListenerSet::new(
        state.clone(),
        metrics.clone(),
        workers.handles().to_vec(),
        close_rx.clone(),
        inherited.clone(),
    ));
    let changes = listeners.prepare(&listener_configs)?;
    let admin_error = |address, source| StartError::Admin { address, source };
    let admin_tcp = match &admin_config {
        Some(admin) => Some(match inherited.take(admin.address).into_iter().next() {
            Some(socket) => socket
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(socket))
                .map_err(|source| admin_error(admin.address, source))?,
            None => {
                server::bind(admin.address).map_err(|source| admin_error(admin.address, source))?
            }
        }),
        None => None,
    };
    for address in inherited.close_leftovers() {
        tracing::warn!(%address, "closing a listening socket of the replaced process: this configuration does not listen there");
    }
    let admin_socket = match &admin_tcp {
        Some(tcp) => {
            use std::os::fd::AsFd;
            let duplicate = tcp.as_fd().try_clone_to_owned().map_err(|source| {
                admin_error(tcp.local_addr().unwrap_or(([0, 0, 0, 0], 0).into()), source)
            })?;
            Some(Arc::new(std::net::TcpListener::from(duplicate)))
        }
        None => None,
    };
    let ready = Arc::new(AtomicBool::new(true));
    listeners.apply(changes);
    let reloader = source.map(|(path, hash)| {
        Arc::new(Reloader::new(
            path,
            hash,
            state.clone(),
            metrics.clone(),
            Some(listeners.clone()),
        ))
    });
    let watcher = reloader.as_ref().map(|reloader| {
        crate::reload::watch_file(reloader.clone(), reload_config, drain_rx.clone())
    });
    let admin_address = admin_tcp.as_ref().and_then(|tcp| tcp.local_addr().ok());
    let admin_task = admin_tcp.map(|tcp| {
        if let Some(address) = admin_address {
            tracing::info!(%address, "admin listening: / /status /metrics /healthz /ready /config /reload");
        }
        tokio::spawn(crate::admin::serve(
            tcp,
            crate::admin::AdminState {
                metrics: metrics.clone(),
                ready: ready.clone(),
                reloader: reloader.clone(),
                snapshot: state.clone(),
                listeners: listeners.clone(),
            },
            close_rx.clone(),
        ))
    });

    let running_state = state.clone();
    let mut drain_signal = drain_rx;
    let listeners_for_shutdown = listeners.clone();
    let stopped = tokio::spawn(async move {
        crate::shutdown::signalled(&mut drain_signal).await;
        ready.store(false, Ordering::Release);
        tracing::info!(timeout = ?shutdown_timeout, "shutting down: no new connections; waiting for in-flight requests");
        let mut serving = listeners_for_shutdown.drain_all();
        let drained = tokio::time::timeout(shutdown_timeout, async {
            while serving.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timeout elapsed; closing the connections still open");
        }
        // WebSocket tunnels said Going Away when the drain began: their peers get the
        // proxy's grace to answer (within what is left of the shutdown timeout) before
        // what is still open is closed.
        let grace_ends = tokio::time::Instant::now()
            + crate::proxy::websocket::GOING_AWAY_GRACE
            + std::time::Duration::from_millis(100);
        while drained.is_ok()
            && state.load().open_tunnels() > 0
            && tokio::time::Instant::now() < grace_ends
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = close_tx.send(true);
        while serving.join_next().await.is_some() {}
        if let Some(admin) = admin_task {
            let _ = admin.await;
        }
        if let Some(watcher) = watcher {
            let _ = watcher.await;
        }
        // Keep the snapshot (and its upstream pools) alive until every connection is done.
        drop(state);
        workers.stop().await;
        tracing::info!("stopped");
    });

    Ok(RunningGateway {
        listeners,
        admin: admin_address,
        admin_socket,
        reloader,
        state: running_state,
        drain: drain_tx,
        stopped,
    })
}

/// Serves `config` until `shutdown` completes, then shuts down gracefully.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let gateway = start(config).await?;
    shutdown.await;
    gateway.shutdown().await;
    Ok(())
}
