//! Hot reload: the configuration file is read, validated and compiled completely
//! before anything changes; then the whole snapshot is swapped at once. Requests keep
//! the snapshot they started with. A file that does not load changes nothing: the
//! error is logged, counted and shown on the admin listener's `GET /config`.
//!
//! Triggers: file changes (watched through the directory, so editors that write a new
//! file and rename it over the old one are seen, plus a periodic content check for
//! bind mounts that notifications miss), SIGHUP, and `POST /reload` on the admin
//! listener. One reload runs at a time.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, LoadError, ReloadConfig};
use crate::listeners::ListenerSet;
use crate::metrics::Metrics;
use crate::proxy::Snapshot;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file changed (or may have): skipped when its content is the same.
    FileChange,
    Signal,
    Admin,
}

impl Trigger {
    /// `file_change`, `signal` or `admin`, as the status page shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::FileChange => "file_change",
            Trigger::Signal => "signal",
            Trigger::Admin => "admin",
        }
    }
}

/// A reload that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        hash: String,
    },
    /// The file's content is what is already in use.
    Unchanged,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    NeedsRestart(String),
    #[error("the reload task failed: {0}")]
    Internal(String),
}

/// How many reload attempts [`Status::recent`] keeps.
pub const RECENT_ATTEMPTS: usize = 10;

/// A reload attempt, for `GET /config` and the status page.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: SystemTime,
    pub trigger: Trigger,
    /// Empty when it succeeded.
    pub errors: Vec<String>,
    /// The file held what is already serving: nothing was applied, and an earlier
    /// failure no longer describes the file.
    pub unchanged: bool,
}

impl Attempt {
    /// `success`, `unchanged` or `failure`, as `GET /config` shows it.
    pub fn result(&self) -> &'static str {
        match (self.errors.is_empty(), self.unchanged) {
            (false, _) => "failure",
            (true, true) => "unchanged",
            (true, false) => "success",
        }
    }
}

/// The configuration in use and the last attempt to change it.
#[derive(Debug, Clone)]
pub struct Status {
    pub source: PathBuf,
    pub hash: String,
    pub loaded_at: SystemTime,
    pub last_attempt: Option<Attempt>,
    /// The last [`RECENT_ATTEMPTS`] attempts, oldest first (the last is `last_attempt`).
    pub recent: VecDeque<Attempt>,
}

impl Status {
    /// Records `attempt` as the last one, forgetting the oldest beyond
    /// [`RECENT_ATTEMPTS`].
    fn record(&mut self, attempt: Attempt) {
        if self.recent.len() == RECENT_ATTEMPTS {
            self.recent.pop_front();
        }
        self.recent.push_back(attempt.clone());
        self.last_attempt = Some(attempt);
    }
}

/// Reloads one configuration file into the gateway's snapshot.
pub struct Reloader {
    path: PathBuf,
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Metrics,
    /// A std mutex: held only to copy or replace the status, never across `.await`.
    status: Mutex<Status>,
    /// Applies listener changes; `None` when listeners cannot change (tests).
    listeners: Option<Arc<ListenerSet>>,
    /// One reload at a time; holds the hash of the last content that failed to load,
    /// so a file change does not report the same broken file again and again.
    serial: tokio::sync::Mutex<Option<String>>,
}

/// A short, stable hash of the file's content.
pub fn content_hash(text: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl Reloader {
    /// `hash` is the content hash of the configuration already in `state`.
    pub fn new(
        path: PathBuf,
        hash: String,
        state: Arc<ArcSwap<Snapshot>>,
        metrics: Metrics,
        listeners: Option<Arc<ListenerSet>>,
    ) -> Self {
        metrics.config_loaded(None, &hash);
        Reloader {
            status: Mutex::new(Status {
                source: path.clone(),
                hash,
                loaded_at: SystemTime::now(),
                last_attempt: None,
                recent: VecDeque::with_capacity(RECENT_ATTEMPTS),
            }),
            path,
            state,
            metrics,
            listeners,
            serial: tokio::sync::Mutex::new(None),
        }
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn current_hash(&self) -> String {
        self.status().hash
    }

    fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut status);
    }

    /// Reads, validates and compiles the file, then swaps it in; or changes nothing.
    pub async fn reload(&self, trigger: Trigger) -> Result<Outcome, ReloadError> {
        let mut last_failed = self.serial.lock().await;
        let path = self.path.clone();
        let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(&path))
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()))?;
        let text = match text {
            Ok(text) => text,
            Err(source) => {
                let error = ReloadError::Load(LoadError::Read {
                    file: self.path.display().to_string(),
                    source,
                });
                return Err(self.failed(trigger, error));
            }
        };
        let hash = content_hash(&text);
        if trigger == Trigger::FileChange {
            if hash == self.current_hash() {
                // The file is back to what is serving (an edit undone, a bad file
                // restored): a failure recorded since no longer describes it.
                if last_failed.take().is_some() {
                    tracing::info!(file = %self.path.display(), %hash, "configuration file is back to the one in use");
                    self.metrics.reload_failure_cleared();
                    self.update(|status| {
                        status.record(Attempt {
                            at: SystemTime::now(),
                            trigger,
                            errors: Vec::new(),
                            unchanged: true,
                        });
                    });
                }
                return Ok(Outcome::Unchanged);
            }
            if last_failed.as_deref() == Some(hash.as_str()) {
                return Ok(Outcome::Unchanged);
            }
        }
        *last_failed = Some(hash.clone());
        let file = self.path.display().to_string();
        let compiled = tokio::task::spawn_blocking(move || Config::from_yaml(&text, &file))
            .await
            .map_err(|e| ReloadError::Internal(e.to_string()))?;
        let config = match compiled {
            Ok(config) => config,
            Err(error) => return Err(self.failed(trigger, error.into())),
        };
        let current = self.state.load_full();
        if let Err(reason) = needs_restart(&current.config, &config) {
            return Err(self.failed(trigger, ReloadError::NeedsRestart(reason)));
        }
        let listener_changes = match &self.listeners {
            Some(listeners) => match listeners.prepare(&config.listeners) {
                Ok(changes) => Some(changes),
                Err(error) => {
                    return Err(
                        self.failed(trigger, ReloadError::NeedsRestart(format!("{error:#}")))
                    );
                }
            },
            None if current.config.listeners != config.listeners => {
                let reason = "listeners changed, and this gateway cannot change them".to_owned();
                return Err(self.failed(trigger, ReloadError::NeedsRestart(reason)));
            }
            None => None,
        };
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        note_descriptor_budget(&config, &self.metrics);
        *last_failed = None;
        let routes = config.routes.len();
        let snapshot = Snapshot::build(config, &self.metrics, Some(&current));
        self.state.store(Arc::new(snapshot));
        if let (Some(listeners), Some(changes)) = (&self.listeners, listener_changes) {
            listeners.apply(changes);
        }
        let previous = self.current_hash();
        self.metrics.record_reload(true);
        self.metrics.config_loaded(Some(&previous), &hash);
        self.update(|status| {
            status.hash = hash.clone();
            status.loaded_at = SystemTime::now();
            status.record(Attempt {
                at: SystemTime::now(),
                trigger,
                errors: Vec::new(),
                unchanged: false,
            });
        });
        tracing::info!(file = %self.path.display(), %hash, routes, ?trigger, "configuration reloaded");
        Ok(Outcome::Applied { hash })
    }

    fn failed(&self, trigger: Trigger, error: ReloadError) -> ReloadError {
        let errors: Vec<String> = match &error {
            ReloadError::Load(LoadError::Invalid(errors)) => {
                errors.iter().map(ToString::to_string).collect()
            }
            other => vec![other.to_string()],
        };
        for line in &errors {
            tracing::error!(file = %self.path.display(), ?trigger, "configuration not reloaded: {line}");
        }
        self.metrics.record_reload(false);
        self.update(|status| {
            status.record(Attempt {
                at: SystemTime::now(),
                trigger,
                errors,
                unchanged: false,
            });
        });
        error
    }
}

/// Settings that only a restart applies (the admin listener is bound and the workers
/// are started at start).
fn needs_restart(current: &Config, new: &Config) -> Result<(), String> {
    if current.admin != new.admin {
        return Err("the admin listener changed; restart the gateway to apply it".to_owned());
    }
    if (current.workers, current.worker_model) != (new.workers, new.worker_model) {
        return Err(format!(
            "workers changed ({} {} -> {} {}); restart the gateway to apply it",
            current.workers,
            current.worker_model.as_str(),
            new.workers,
            new.worker_model.as_str()
        ));
    }
    Ok(())
}

/// Watches the configuration file until `stop`: file notifications (through the
/// directory) and a content check every `poll_interval`.
pub fn watch_file(
    reloader: Arc<Reloader>,
    config: ReloadConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !config.watch {
            return;
        }
        let (changed_tx, mut changed) = mpsc::channel::<()>(1);
        let _watcher = notify_watcher(&reloader.path, changed_tx);
        let mut poll = tokio::time::interval(config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            tokio::select! {
                Some(()) = changed.recv() => {
                    // Editors write in several steps: let them finish.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    while changed.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
                _ = crate::shutdown::signalled(&mut stop) => return,
            }
            // Failures are logged, counted and kept for GET /config by reload itself.
            let _ = reloader.reload(Trigger::FileChange).await;
        }
    })
}

/// A file watcher on `path`'s directory, or `None` (polling still works) when the
/// system cannot provide one.
fn notify_watcher(path: &Path, changed: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a pending change.
            let _ = changed.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!("cannot watch {}: {error}; polling only", path.display());
            return None;
        }
    };
    if let Err(error) = watcher.watch(&directory, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(
            "cannot watch {}: {error}; polling only",
            directory.display()
        );
        return None;
    }
    Some(watcher)
}

/// Compares `config`'s descriptor budget with the process's open-files limit: both
/// exported as metrics, and a warning logged when the budget does not fit.
pub fn note_descriptor_budget(config: &Config, metrics: &Metrics) {
    let budget = crate::config::descriptors::DescriptorBudget::of(config);
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _hard)| soft)
        .unwrap_or(u64::MAX);
    metrics.record_descriptor_budget(
        budget.client_connections,
        budget.upstream_connections,
        budget.reserve,
        limit,
    );
    if let Some(warning) = budget.exceeds(limit) {
        tracing::warn!("{warning}");
    }
}
