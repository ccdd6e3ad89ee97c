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
    reloader: Option<Arc<Reloader>>,
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

    /// The reloader, when the gateway was started from a file.
    pub fn reloader(&self) -> Option<&Arc<Reloader>> {
        self.reloader.as_ref()
    }

    /// Stops accepting, waits for in-flight requests (at most `shutdown_timeout`), and
    /// returns when everything is closed.
    pub async fn shutdown(self) {
        let _ = self.drain.send(true);
        let _ = self.stopped.await;
    }
}

/// Binds and starts serving `config`.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    launch(config, Metrics::new(), None).await
}

/// Binds and starts serving `config`, which was loaded from `path` (whose content
/// hashes to `text_hash`); reloads it when the file changes (unless `reload.watch` is
/// off) and on `POST /reload` (the binary adds SIGHUP).
pub async fn start_reloadable(
    config: Config,
    path: PathBuf,
    text_hash: String,
) -> Result<RunningGateway, StartError> {
    launch(config, Metrics::new(), Some((path, text_hash))).await
}

async fn launch(
    config: Config,
    metrics: Metrics,
    source: Option<(PathBuf, String)>,
) -> Result<RunningGateway, StartError> {
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
    ));
    let changes = listeners.prepare(&listener_configs)?;
    let admin_tcp = match &admin_config {
        Some(admin) => Some(
            server::bind(admin.address).map_err(|source| StartError::Admin {
                address: admin.address,
                source,
            })?,
        ),
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
            tracing::info!(%address, "admin listening: /metrics /healthz /ready /config /reload");
        }
        tokio::spawn(crate::admin::serve(
            tcp,
            crate::admin::AdminState {
                metrics: metrics.clone(),
                ready: ready.clone(),
                reloader: reloader.clone(),
                snapshot: state.clone(),
            },
            close_rx.clone(),
        ))
    });

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
        reloader,
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
