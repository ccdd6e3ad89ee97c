//! The shared rate-limit store: GCRA ([`super::gcra`]) kept in Redis, so that every
//! gateway instance in front of the same Redis counts against the same limits.
//!
//! # One round trip per decision
//! A decision is one atomic Lua script ([`GCRA_SCRIPT`]) called with `EVALSHA`: it reads
//! the server's clock (`TIME`, so N gateways agree on the time whatever their own clocks
//! say), reads the key's TAT, applies exactly the arithmetic of [`super::gcra::decide`],
//! writes the new TAT with `PX` set to the time until it passes (a key nobody uses
//! expires once its bucket is full again, so forgotten keys cost nothing) and returns
//! allowed, remaining, retry-after and reset. The script is loaded (`SCRIPT LOAD`) on
//! every new connection; if Redis lost it anyway (`SCRIPT FLUSH`, a failover to a
//! replica), `NOSCRIPT` is answered by loading it and calling it again.
//!
//! Redis numbers in Lua are doubles (exact to 2^53), and nanoseconds since the epoch
//! are past that; the script therefore keeps absolute times as seconds and nanoseconds
//! apart and only ever computes with differences, which are exact while a rate's
//! interval plus its tolerance (`interval × burst`) stays under 2^53 ns (104 days).
//!
//! # Keys and Redis Cluster
//! The key is `portcullis:rl:` followed by the caller's key bytes, and the script
//! touches only that one key (`KEYS[1]`), so it is safe under Cluster's one-slot rule
//! without a hash tag. The store itself talks to one Redis address and does not follow
//! Cluster redirections (`MOVED`): point it at a standalone Redis (or a primary), or at a
//! proxy that routes by key.
//!
//! # Connections
//! Connections are multiplexed (many decisions pipelined on one socket) and belong to
//! a worker: with `worker_model: per_core`, each worker's decisions use connections whose
//! driver runs on that worker's runtime, so a decision never crosses threads (as the
//! upstream pools do). `pool` connections per process are spread over the workers, at
//! least one each. A worker's connections are started in the background by its first
//! decision, then each is kept up by a task that reconnects with jittered exponential
//! backoff; a request never connects. While a worker has no connection up, decisions fail
//! at once (a `connection` error), except during its very first connect, which they
//! wait for (within the timeout). Every decision is bounded by the store's `timeout`, so
//! a slow or dead Redis never holds a request longer than that; a connection on which
//! several decisions in a row time out is dropped and made again (a peer that vanished
//! without closing the socket).
//!
//! # Failures
//! [`RedisStore::decide`] returns a [`StoreError`]; what a rate limit does then is the
//! store's [`RedisStore::on_error`] (`allow`: fail open; `deny`: refuse). Failures are
//! counted in `portcullis_rate_limit_store_errors_total{store,kind}`, every decision's
//! time in `portcullis_rate_limit_store_duration_seconds{store}`; a failing store logs a
//! warning at most every [`WARN_INTERVAL`] (with how many failed since), and logs once when
//! it answers again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, RedisConnectionInfo, Script};
use arc_swap::ArcSwapOption;
use tokio::sync::{watch, Notify};

use super::gcra::{Decision, Rate};
use crate::config::{OnStoreError, RateLimitStoreConfig};
use crate::metrics::{Metrics, StoreErrorKind, StoreMetrics};

/// Prefix of every key the store writes.
pub const KEY_PREFIX: &[u8] = b"portcullis:rl:";

/// A failing store warns at most this often.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// One connection attempt (TCP, `AUTH`/`SELECT`, `SCRIPT LOAD`) gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect backoff: from the first to the last, doubling, with full jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Decisions awaiting Redis on one connection at once; more wait (within the timeout).
const IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// Decisions in a row that time out on one connection before it is made again.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

/// The GCRA of [`super::gcra::decide`] in Lua. `KEYS[1]`: the key, holding its TAT as
/// nanoseconds (decimal). `ARGV[1]`: the rate's interval, `ARGV[2]`: its tolerance (ns).
/// `ARGV[3]`, for tests only: the time (ns) to decide at instead of the server's clock.
/// Returns `{allowed (0|1), remaining, retry_after_ns, reset_ns}`.
pub const GCRA_SCRIPT: &str = r#"
local function split(text)
  local n = #text
  if n <= 9 then return 0, tonumber(text) end
  return tonumber(string.sub(text, 1, n - 9)), tonumber(string.sub(text, n - 8))
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local now_s, now_ns
if ARGV[3] and ARGV[3] ~= '' then
  now_s, now_ns = split(ARGV[3])
else
  local t = redis.call('TIME')
  now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000
end
local ahead = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local tat_s, tat_ns = split(stored)
  ahead = (tat_s - now_s) * 1000000000 + (tat_ns - now_ns)
  if ahead < 0 then ahead = 0 end
end
if ahead > tolerance then
  return {0, 0, ahead - tolerance, ahead}
end
local used = ahead + interval
local total = now_ns + used
local new_s = now_s + math.floor(total / 1000000000)
local new_ns = total % 1000000000
redis.call('SET', KEYS[1], string.format('%d%09d', new_s, new_ns), 'PX', math.ceil(used / 1000000))
local capacity = tolerance + interval
local remaining = 0
if used < capacity then remaining = math.floor((capacity - used) / interval) end
return {1, remaining, 0, used}
"#;

/// Why the store could not decide. Messages name the store and its address, never a
/// password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("rate-limit store {store:?} ({url}): no answer within {after:?}")]
    Timeout {
        store: Arc<str>,
        url: Arc<str>,
        after: Duration,
    },
    #[error("rate-limit store {store:?} ({url}): no connection: {reason}")]
    Connection {
        store: Arc<str>,
        url: Arc<str>,
        reason: String,
    },
    #[error("rate-limit store {store:?} ({url}): {detail}")]
    Script {
        store: Arc<str>,
        url: Arc<str>,
        detail: String,
    },
}

impl StoreError {
    /// The `kind` label it is counted under.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Timeout { .. } => StoreErrorKind::Timeout,
            StoreError::Connection { .. } => StoreErrorKind::Connection,
            StoreError::Script { .. } => StoreErrorKind::Script,
        }
    }
}

/// A shared rate-limit store on one Redis. Cheap to share (`Arc`); built without I/O.
pub struct RedisStore {
    config: RateLimitStoreConfig,
    workers: usize,
    link: Arc<Link>,
    /// One per worker, indexed by `workers::current()`.
    shares: Box<[Arc<Share>]>,
    health: Health,
    /// Dropped with the store: every connection task sees it and ends.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

/// What a connection task needs to connect: shared by the store and its tasks (which do
/// not hold the store, so that dropping it ends them).
struct Link {
    name: Arc<str>,
    /// The URL as it may be shown (no password).
    url: Arc<str>,
    host: String,
    port: u16,
    info: RedisConnectionInfo,
    script: Script,
    metrics: StoreMetrics,
    /// The last connect failure, for the errors of decisions that find no connection.
    last_failure: Mutex<String>,
    connect_warnings: WarnGate,
}

/// One worker's connections.
struct Share {
    /// Its connection tasks run (on the runtime of the worker that started them).
    started: AtomicBool,
    next: AtomicUsize,
    slots: Box<[Slot]>,
}

/// One connection, kept up by its task.
struct Slot {
    connection: ArcSwapOption<MultiplexedConnection>,
    state: watch::Sender<SlotState>,
    /// Asks the task to drop the connection and make a new one.
    reconnect: Notify,
    timeouts_in_a_row: AtomicU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Not tried yet, or trying for the first time: decisions wait for it.
    Starting,
    Up,
    /// Lost or failed: decisions fail at once until it is up again.
    Down,
}

impl RedisStore {
    /// The store `config` describes, for a gateway of `workers` per-core workers (1 for
    /// a work-stealing runtime). Nothing connects until the first decision.
    pub fn new(config: &RateLimitStoreConfig, metrics: &Metrics, workers: usize) -> RedisStore {
        let workers = workers.max(1);
        let per_worker = config.redis.pool.div_ceil(workers).max(1);
        let url = &config.redis.url;
        let mut info = RedisConnectionInfo::default()
            .set_db(url.db)
            .set_lib_name("portcullis", env!("CARGO_PKG_VERSION"));
        if let Some(user) = &url.username {
            info = info.set_username(user);
        }
        if let Some(password) = &url.password {
            info = info.set_password(password.expose());
        }
        let (alive_tx, alive) = watch::channel(());
        RedisStore {
            link: Arc::new(Link {
                name: config.name.as_str().into(),
                url: url.to_string().into(),
                host: url.host.clone(),
                port: url.port,
                info,
                script: Script::new(GCRA_SCRIPT),
                metrics: metrics.rate_limit_store(&config.name),
                last_failure: Mutex::new("not connected yet".to_owned()),
                connect_warnings: WarnGate::new(),
            }),
            shares: (0..workers)
                .map(|_| {
                    Arc::new(Share {
                        started: AtomicBool::new(false),
                        next: AtomicUsize::new(0),
                        slots: (0..per_worker).map(|_| Slot::new()).collect(),
                    })
                })
                .collect(),
            health: Health::new(),
            config: config.clone(),
            workers,
            _alive: alive_tx,
            alive,
        }
    }

    /// The store for `config` after a reload: `previous` itself (its connections kept)
    /// when its configuration and the number of workers are unchanged, else a new one
    /// (and `previous`'s connections close once the old snapshot is gone).
    pub fn carry_over(
        config: &RateLimitStoreConfig,
        previous: Option<&Arc<RedisStore>>,
        metrics: &Metrics,
        workers: usize,
    ) -> Arc<RedisStore> {
        match previous {
            Some(store) if store.config == *config && store.workers == workers.max(1) => {
                store.clone()
            }
            _ => Arc::new(RedisStore::new(config, metrics, workers)),
        }
    }

    /// The store's name in `rate_limit_stores`.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What a rate limit should do when [`RedisStore::decide`] fails: `Allow` lets the
    /// request go on, `Deny` refuses it at once.
    pub fn on_error(&self) -> OnStoreError {
        self.config.on_error
    }

    /// The configuration it was built from (what [`RedisStore::carry_over`] compares).
    pub fn config(&self) -> &RateLimitStoreConfig {
        &self.config
    }

    /// Connections up now, over every worker.
    pub fn connections_up(&self) -> usize {
        self.shares
            .iter()
            .flat_map(|share| share.slots.iter())
            .filter(|slot| slot.connection.load().is_some())
            .count()
    }

    /// One request to `key` under `rate`, decided on the Redis server's clock. Within the
    /// store's timeout, always.
    pub async fn decide(&self, key: &[u8], rate: &Rate) -> Result<Decision, StoreError> {
        self.run(key, rate, None).await
    }

    /// [`RedisStore::decide`] at `now_nanos` instead of the server's clock: for tests
    /// that compare the script with [`super::gcra::decide`].
    #[doc(hidden)]
    pub async fn decide_at(
        &self,
        key: &[u8],
        rate: &Rate,
        now_nanos: u64,
    ) -> Result<Decision, StoreError> {
        self.run(key, rate, Some(now_nanos)).await
    }

    async fn run(&self, key: &[u8], rate: &Rate, now: Option<u64>) -> Result<Decision, StoreError> {
        let started = Instant::now();
        let timeout = self.config.redis.timeout;
        let mut used: Option<&Slot> = None;
        let result = match tokio::time::timeout(timeout, self.call(key, rate, now, &mut used)).await
        {
            Ok(result) => result,
            Err(_) => {
                if let Some(slot) = used {
                    slot.timed_out();
                }
                Err(StoreError::Timeout {
                    store: self.link.name.clone(),
                    url: self.link.url.clone(),
                    after: timeout,
                })
            }
        };
        let metrics = &self.link.metrics;
        metrics.duration.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {
                if let Some(slot) = used {
                    slot.timeouts_in_a_row.store(0, Ordering::Relaxed);
                }
                self.health.succeeded(&self.link.name);
            }
            Err(error) => {
                metrics.error(error.kind());
                self.health.failed(&self.link.name, error);
            }
        }
        result
    }

    async fn call<'a>(
        &'a self,
        key: &[u8],
        rate: &Rate,
        now: Option<u64>,
        used: &mut Option<&'a Slot>,
    ) -> Result<Decision, StoreError> {
        let share = &self.shares[crate::workers::current() % self.shares.len()];
        // A load first: once started, a decision only reads the flag.
        if !share.started.load(Ordering::Acquire) && !share.started.swap(true, Ordering::AcqRel) {
            self.start(share);
        }
        let (slot, mut connection) = self.connection(share).await?;
        *used = Some(slot);
        let mut full_key = Vec::with_capacity(KEY_PREFIX.len() + key.len());
        full_key.extend_from_slice(KEY_PREFIX);
        full_key.extend_from_slice(key);
        let mut invocation = self.link.script.key(full_key);
        invocation
            .arg(rate.interval_nanos)
            .arg(rate.tolerance_nanos());
        if let Some(now) = now {
            invocation.arg(now);
        }
        let answer: Vec<i64> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| {
                let error = self.link.redis_error(&error);
                if matches!(error, StoreError::Connection { .. }) {
                    slot.reconnect.notify_waiters();
                }
                error
            })?;
        self.link.decision(&answer)
    }

    /// A connection of `share` that is up (each in turn), waiting only for a first
    /// connect still under way.
    async fn connection<'a>(
        &self,
        share: &'a Share,
    ) -> Result<(&'a Slot, MultiplexedConnection), StoreError> {
        let count = share.slots.len();
        loop {
            let first = share.next.fetch_add(1, Ordering::Relaxed);
            for offset in 0..count {
                let slot = &share.slots[(first + offset) % count];
                if let Some(connection) = &*slot.connection.load() {
                    return Ok((slot, MultiplexedConnection::clone(connection)));
                }
            }
            let starting = share
                .slots
                .iter()
                .find(|slot| *slot.state.borrow() == SlotState::Starting);
            match starting {
                Some(slot) => {
                    let mut state = slot.state.subscribe();
                    // The sender lives in the slot, so this only ends with a new state.
                    let _ = state.wait_for(|s| *s != SlotState::Starting).await;
                }
                None => {
                    let reason = self
                        .link
                        .last_failure
                        .lock()
                        .map_or_else(|_| "not connected".to_owned(), |r| r.clone());
                    return Err(StoreError::Connection {
                        store: self.link.name.clone(),
                        url: self.link.url.clone(),
                        reason,
                    });
                }
            }
        }
    }

    /// Starts `share`'s connection tasks on the calling runtime (the worker's).
    fn start(&self, share: &Arc<Share>) {
        for index in 0..share.slots.len() {
            let task = keep_connected(self.link.clone(), share.clone(), index, self.alive.clone());
            tokio::spawn(task);
        }
    }
}

impl Slot {
    fn new() -> Slot {
        Slot {
            connection: ArcSwapOption::empty(),
            state: watch::Sender::new(SlotState::Starting),
            reconnect: Notify::new(),
            timeouts_in_a_row: AtomicU32::new(0),
        }
    }

    /// Unpublishes the connection (decisions no longer pick it), counting it down.
    fn take_connection(&self, link: &Link) {
        if self.connection.swap(None).is_some() {
            link.metrics.connections.dec();
        }
    }

    fn timed_out(&self) {
        let in_a_row = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= TIMEOUTS_BEFORE_RECONNECT {
            self.timeouts_in_a_row.store(0, Ordering::Relaxed);
            self.reconnect.notify_waiters();
        }
    }
}

/// Resets a share when its tasks end: if their runtime went away (a worker stopped)
/// while the store lives on, the next decision starts them again on its own runtime.
struct ShareReset {
    link: Arc<Link>,
    share: Arc<Share>,
    index: usize,
}

impl Drop for ShareReset {
    fn drop(&mut self) {
        let slot = &self.share.slots[self.index];
        slot.take_connection(&self.link);
        slot.state.send_replace(SlotState::Starting);
        self.share.started.store(false, Ordering::Release);
    }
}

/// Keeps slot `index` of `share` connected until the store is dropped: connect, serve
/// (run the connection's driver) until it breaks or is asked to reconnect, back off after
/// a failed attempt, again.
async fn keep_connected(
    link: Arc<Link>,
    share: Arc<Share>,
    index: usize,
    mut alive: watch::Receiver<()>,
) {
    let _reset = ShareReset {
        link: link.clone(),
        share: share.clone(),
        index,
    };
    let slot = &share.slots[index];
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        let attempt = tokio::select! {
            attempt = link.connect() => attempt,
            _ = alive.changed() => return,
        };
        let (connection, driver) = match attempt {
            Ok(connected) => connected,
            Err(reason) => {
                failures += 1;
                slot.state.send_replace(SlotState::Down);
                link.connect_failed(failures, reason);
                tokio::select! {
                    _ = tokio::time::sleep(jitter(backoff)) => {}
                    _ = alive.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut driver = driver;
        // The script, once per connection, so that decisions are one `EVALSHA` each; the
        // driver runs meanwhile (it carries the exchange).
        let mut loader = connection.clone();
        let loaded = tokio::select! {
            loaded = tokio::time::timeout(
                CONNECT_TIMEOUT,
                link.script.load_async(&mut loader),
            ) => match loaded {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(format!("SCRIPT LOAD failed: {error}")),
                Err(_) => Err(format!("SCRIPT LOAD got no answer within {CONNECT_TIMEOUT:?}")),
            },
            () = &mut driver => Err("the connection closed during SCRIPT LOAD".to_owned()),
            _ = alive.changed() => return,
        };
        drop(loader);
        if let Err(reason) = loaded {
            failures += 1;
            slot.state.send_replace(SlotState::Down);
            link.connect_failed(failures, reason);
            tokio::select! {
                _ = tokio::time::sleep(jitter(backoff)) => {}
                _ = alive.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        slot.timeouts_in_a_row.store(0, Ordering::Relaxed);
        slot.connection.store(Some(Arc::new(connection)));
        slot.state.send_replace(SlotState::Up);
        link.metrics.connections.inc();
        if failures > 0 {
            tracing::info!(
                store = &*link.name,
                url = &*link.url,
                failed_attempts = failures,
                "rate-limit store connected again"
            );
        } else {
            tracing::debug!(
                store = &*link.name,
                url = &*link.url,
                "rate-limit store connected"
            );
        }
        failures = 0;
        backoff = BACKOFF_MIN;
        let ended = tokio::select! {
            () = &mut driver => "the connection closed",
            () = slot.reconnect.notified() => "decisions on it failed or timed out",
            _ = alive.changed() => "",
        };
        slot.take_connection(&link);
        if ended.is_empty() {
            return;
        }
        slot.state.send_replace(SlotState::Down);
        link.connect_failed(1, format!("{ended}; reconnecting"));
    }
}

/// What runs a connection: reads answers, writes requests; ends when it closes.
type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A random time between half of `backoff` and all of it, so that many gateways do not
/// reconnect in step after Redis comes back.
fn jitter(backoff: Duration) -> Duration {
    let nanos = u64::try_from(backoff.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(nanos / 2..=nanos.max(1)))
}

impl Link {
    /// A TCP connection set up (`AUTH`, `SELECT`, the client's name), and the driver
    /// future that runs it.
    async fn connect(&self) -> Result<(MultiplexedConnection, Driver), String> {
        let setup = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("connect failed: {e}"))?;
            let _ = stream.set_nodelay(true);
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(None)
                .set_response_timeout(None)
                .set_concurrency_limit(IN_FLIGHT_PER_CONNECTION);
            let (connection, driver) =
                MultiplexedConnection::new_with_config(&self.info, stream, config)
                    .await
                    .map_err(|e| format!("connection setup failed: {e}"))?;
            Ok((connection, Box::pin(driver) as Driver))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, setup)
            .await
            .map_err(|_| format!("connecting took longer than {CONNECT_TIMEOUT:?}"))?
    }

    /// Notes a failed or lost connection: kept for the errors of decisions that find no
    /// connection, and logged at warn at most every [`WARN_INTERVAL`] for the whole store
    /// (all its connections, all workers), at debug otherwise.
    fn connect_failed(&self, failures: u64, reason: String) {
        if self.connect_warnings.due() {
            tracing::warn!(
                store = &*self.name,
                url = &*self.url,
                failed_attempts = failures,
                "rate-limit store: {reason} (retrying with backoff)"
            );
        } else {
            tracing::debug!(
                store = &*self.name,
                url = &*self.url,
                failed_attempts = failures,
                "rate-limit store: {reason}"
            );
        }
        if let Ok(mut last) = self.last_failure.lock() {
            *last = reason;
        }
    }

    fn redis_error(&self, error: &::redis::RedisError) -> StoreError {
        if error.is_timeout() {
            // The connection has no timeout of its own; only the store's applies.
            return StoreError::Timeout {
                store: self.name.clone(),
                url: self.url.clone(),
                after: Duration::ZERO,
            };
        }
        if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
            return StoreError::Connection {
                store: self.name.clone(),
                url: self.url.clone(),
                reason: error.to_string(),
            };
        }
        StoreError::Script {
            store: self.name.clone(),
            url: self.url.clone(),
            detail: format!("the GCRA script failed: {error}"),
        }
    }

    /// The script's `{allowed, remaining, retry_after_ns, reset_ns}` as a decision.
    fn decision(&self, answer: &[i64]) -> Result<Decision, StoreError> {
        let unexpected = || StoreError::Script {
            store: self.name.clone(),
            url: self.url.clone(),
            detail: format!("the GCRA script answered {answer:?}, not a decision"),
        };
        let &[allowed, remaining, retry_after, reset] = answer else {
            return Err(unexpected());
        };
        let nanos = |n: i64| u64::try_from(n).map(Duration::from_nanos);
        Ok(Decision {
            allowed: match allowed {
                0 => false,
                1 => true,
                _ => return Err(unexpected()),
            },
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            retry_after: nanos(retry_after).map_err(|_| unexpected())?,
            reset: nanos(reset).map_err(|_| unexpected())?,
        })
    }
}

/// At most one warning every [`WARN_INTERVAL`], whoever asks.
struct WarnGate {
    /// Milliseconds since `origin` of the last warning, plus one (0: never).
    warned_at: AtomicU64,
    origin: Instant,
}

impl WarnGate {
    fn new() -> WarnGate {
        WarnGate {
            warned_at: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Whether a warning may go out now (and, if so, the next not before the interval).
    fn due(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.warned_at.load(Ordering::Relaxed);
        let interval = u64::try_from(WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Whether the store's decisions are failing: a store that is down warns every
/// [`WARN_INTERVAL`] with a count, not once per request, and says once when it answers
/// again.
struct Health {
    failing: AtomicBool,
    failed_since_warning: AtomicU64,
    warnings: WarnGate,
}

impl Health {
    fn new() -> Health {
        Health {
            failing: AtomicBool::new(false),
            failed_since_warning: AtomicU64::new(0),
            warnings: WarnGate::new(),
        }
    }

    fn failed(&self, store: &str, error: &StoreError) {
        self.failed_since_warning.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        if self.warnings.due() {
            let failed = self.failed_since_warning.swap(0, Ordering::Relaxed);
            tracing::warn!(
                store,
                failed_decisions = failed,
                "rate-limit store failing, its limits follow `on_error`: {error}"
            );
        }
    }

    fn succeeded(&self, store: &str) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            let failed = self.failed_since_warning.swap(0, Ordering::Relaxed);
            tracing::info!(
                store,
                failed_decisions_since_last_warning = failed,
                "rate-limit store answering again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited() {
        let gate = WarnGate::new();
        assert!(gate.due(), "the first warning goes out");
        assert!(!gate.due(), "the next waits for the interval");
        assert!(!gate.due());
    }

    #[test]
    fn a_script_answer_that_is_not_a_decision_is_a_script_error() {
        let config = crate::config::RateLimitStoreConfig {
            name: "shared".into(),
            redis: crate::config::RedisStoreConfig {
                url: crate::config::RedisUrl {
                    host: "127.0.0.1".into(),
                    port: 6379,
                    db: 0,
                    username: None,
                    password: Some(crate::config::RedisPassword::new("hunter2".into())),
                },
                timeout: Duration::from_millis(20),
                pool: 2,
            },
            on_error: OnStoreError::Deny,
        };
        let store = RedisStore::new(&config, &Metrics::new(), 4);
        assert_eq!(store.shares.len(), 4);
        assert!(store.shares.iter().all(|share| share.slots.len() == 1));
        let link = &store.link;
        let decision = link.decision(&[1, 4, 0, 300]).expect("a decision");
        assert_eq!(
            (decision.allowed, decision.remaining, decision.reset),
            (true, 4, Duration::from_nanos(300))
        );
        for bad in [&[1, 2, 3][..], &[2, 0, 0, 0], &[0, 0, -1, 0]] {
            let error = link.decision(bad).expect_err("not a decision");
            assert_eq!(error.kind(), StoreErrorKind::Script);
            assert!(error.to_string().contains("\"shared\""), "{error}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }
}
