//! The gateway's life: bind every listener (fail before serving anything), serve
//! (reloading the configuration file when it changes, see [`crate::reload`]), and
//! shut down in steps: stop accepting and report not-ready, let in-flight requests
//! finish for up to `shutdown_timeout`, then close what is left.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::ListenerContext;
use crate::reload::Reloader;
use crate::server::tls::TlsListener;
use crate::server::{self, Listener, Shutdown};
use crate::snapshot::Snapshot;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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

/// A gateway that is serving. Dropping it starts a graceful shutdown.
pub struct RunningGateway {
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    reloader: Option<Arc<Reloader>>,
    drain: watch::Sender<bool>,
    stopped: JoinHandle<()>,
}

impl RunningGateway {
    /// The bound address of the listener called `name` (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Every listener's name and bound address, in configuration order.
    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listeners
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
    let state = Arc::new(ArcSwap::from_pointee(Snapshot::build(
        config, &metrics, None,
    )));

    let mut tls = Vec::with_capacity(listener_configs.len());
    for listener in &listener_configs {
        tls.push(match &listener.tls {
            Some(config) => Some(TlsListener::new(&listener.name, config, &metrics).map_err(
                |source| StartError::Tls {
                    listener: listener.name.clone(),
                    source,
                },
            )?),
            None => None,
        });
    }

    let mut bound = Vec::with_capacity(listener_configs.len());
    for listener in &listener_configs {
        let tcp = server::bind(listener.address).map_err(|source| StartError::Bind {
            what: format!("listener {:?}", listener.name),
            address: listener.address,
            source,
        })?;
        bound.push(tcp);
    }
    let admin_tcp = match &admin_config {
        Some(admin) => Some(
            server::bind(admin.address).map_err(|source| StartError::Bind {
                what: "the admin listener".to_owned(),
                address: admin.address,
                source,
            })?,
        ),
        None => None,
    };

    let (drain_tx, drain_rx) = watch::channel(false);
    let (close_tx, close_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));
    let mut addresses = Vec::with_capacity(bound.len());
    let mut serving = JoinSet::new();
    for (index, ((tcp, listener), tls)) in bound
        .into_iter()
        .zip(&listener_configs)
        .zip(tls)
        .enumerate()
    {
        let address = tcp.local_addr().unwrap_or(listener.address);
        addresses.push((listener.name.clone(), address));
        tracing::info!(
            listener = %listener.name,
            %address,
            tls = tls.is_some(),
            "listening"
        );
        let (tls, certificate_watcher) = tls.unzip();
        let listener = Listener {
            tcp,
            context: Arc::new(ListenerContext {
                index,
                name: listener.name.clone(),
                limits: listener.limits,
                state: state.clone(),
                forwarded_proto: HeaderValue::from_static(if tls.is_some() {
                    "https"
                } else {
                    "http"
                }),
                redirect_to_https: listener.redirect_to_https,
            }),
            max_connections: listener.max_connections,
            metrics: metrics.listener(&listener.name),
            tls,
            certificate_watcher,
        };
        serving.spawn(listener.serve(Shutdown {
            drain: drain_rx.clone(),
            close: close_rx.clone(),
        }));
    }
    let reloader = source
        .map(|(path, hash)| Arc::new(Reloader::new(path, hash, state.clone(), metrics.clone())));
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
            },
            close_rx.clone(),
        ))
    });

    let mut drain_signal = drain_rx;
    let stopped = tokio::spawn(async move {
        crate::server::signalled(&mut drain_signal).await;
        ready.store(false, Ordering::Release);
        tracing::info!(timeout = ?shutdown_timeout, "shutting down: no new connections; waiting for in-flight requests");
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
        tracing::info!("stopped");
    });

    Ok(RunningGateway {
        listeners: addresses,
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
