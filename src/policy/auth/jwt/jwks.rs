//! One issuer's JWKS key set: the keys in use, fetched and refreshed by a background
//! task that belongs to the configuration that made it.
//!
//! - The first fetch starts at once; until it succeeds the issuer has no keys (its
//!   tokens are answered 503, and `/ready` names it), everything else serves.
//! - A fetched set lives for the document's `Cache-Control: max-age`, raised to
//!   `min_age` and lowered to `max_age` (`max_age` without one); the task fetches again
//!   when nine tenths of that have passed, so the set is renewed before it expires.
//! - A failed fetch (the upstream failed or timed out, a non-2xx answer, a body over
//!   `max_size`, a document without a usable key) keeps the last good set; it is
//!   counted, logged, and tried again after `refetch_interval`.
//! - A token whose `kid` the set lacks asks for a refetch ([`KeySet::refetch`]): one
//!   starts only when none started in the last `refetch_interval`; requests that ask
//!   while one runs wait for that one (bounded by the fetch's timeout); the others are
//!   refused without a fetch. So unknown `kid`s never cost more than one fetch per
//!   interval, whatever their number.
//!
//! The task stops when its [`KeySetHandle`] is dropped or stopped (the configuration
//! was replaced, or the gateway shuts down); a reload that keeps the issuer seeds the
//! new set with the old one's keys and schedule ([`KeySet::new`]), so no request sees
//! an issuer without keys because of a reload.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::keys::{parse_document, Key};
use crate::config::jwt::JwksConfig;
use crate::metrics::{JwksMetrics, UnknownKeyOutcome};

/// What a fetch brought back.
#[derive(Debug)]
pub struct Fetched {
    pub body: Bytes,
    /// From `Cache-Control: max-age` (`no-store`/`no-cache`: zero).
    pub max_age: Option<Duration>,
}

/// Why a fetch brought nothing back.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Upstream(String),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("the document is larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the document failed: {0}")]
    Body(String),
    #[error("no document within {0:?}")]
    Timeout(Duration),
}

/// Gets the document (through the issuer's upstream; a fake in tests).
pub trait Fetch: Send + Sync + 'static {
    fn fetch(&self) -> impl Future<Output = Result<Fetched, FetchError>> + Send;
}

/// The keys in use and where they came from.
#[derive(Debug, Default)]
pub struct KeyList {
    pub keys: Vec<Key>,
    /// Changes whenever the keys do (verified tokens cached under another one are
    /// verified again).
    pub generation: u64,
    /// The document they came from, to tell a changed set from the same one.
    body: Bytes,
}

/// The refetch bookkeeping, behind a lock held for no `.await`.
#[derive(Debug)]
struct Gate {
    /// A fetch runs now.
    in_flight: bool,
    /// When the last fetch started.
    last_started: Option<Instant>,
    /// When the task fetches next by itself.
    next_refresh: Instant,
}

/// What [`KeySet::refetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refetch {
    /// A fetch ended (this one's, or one already running) within the wait.
    Done,
    /// A fetch started less than `refetch_interval` ago: none was started.
    TooSoon,
    /// The wait ended before the fetch, or the set was stopped.
    GaveUp,
}

/// One issuer's keys, shared by the requests that verify its tokens and by its task.
pub struct KeySet {
    /// The issuer, for logs.
    issuer: String,
    config: JwksConfig,
    /// How long a fetch may take in all (the upstream's timeout, also for the body).
    fetch_timeout: Duration,
    current: ArcSwap<KeyList>,
    gate: Mutex<Gate>,
    wake: Notify,
    /// Counts the fetches that ended; requests waiting for a refetch watch it.
    ended: watch::Sender<u64>,
    metrics: JwksMetrics,
}

/// The owner's end of a [`KeySet`]: its task runs until this is stopped or dropped.
pub struct KeySetHandle {
    set: Arc<KeySet>,
    stop: watch::Sender<bool>,
}

impl KeySetHandle {
    pub fn set(&self) -> &Arc<KeySet> {
        &self.set
    }

    /// Ends the task (an in-flight fetch is abandoned).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for KeySetHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl KeySet {
    /// A set for `config`, seeded from `previous` (the same issuer in the configuration
    /// being replaced) when there is one; its task is spawned on the current runtime.
    pub fn start<F: Fetch>(
        issuer: &str,
        config: &JwksConfig,
        fetch_timeout: Duration,
        fetcher: F,
        metrics: JwksMetrics,
        previous: Option<&KeySet>,
    ) -> KeySetHandle {
        let now = Instant::now();
        let (current, gate) = match previous {
            Some(previous) => {
                let gate = previous.lock_gate();
                let next_refresh = if gate.in_flight {
                    now
                } else {
                    gate.next_refresh
                };
                (
                    previous.current.load_full(),
                    Gate {
                        in_flight: false,
                        last_started: gate.last_started,
                        next_refresh,
                    },
                )
            }
            None => (
                Arc::new(KeyList::default()),
                Gate {
                    in_flight: false,
                    last_started: None,
                    next_refresh: now,
                },
            ),
        };
        metrics.keys.set(current.keys.len() as i64);
        if let Some(previous) = previous {
            metrics
                .last_success
                .set(previous.metrics.last_success.get());
        }
        let set = Arc::new(KeySet {
            issuer: issuer.to_owned(),
            config: config.clone(),
            fetch_timeout,
            current: ArcSwap::new(current),
            gate: Mutex::new(gate),
            wake: Notify::new(),
            ended: watch::channel(0).0,
            metrics,
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(run(set.clone(), fetcher, stopped));
        KeySetHandle { set, stop }
    }

    /// The keys in use now.
    pub fn keys(&self) -> arc_swap::Guard<Arc<KeyList>> {
        self.current.load()
    }

    /// Whether the issuer has no keys at all (never fetched successfully).
    pub fn is_empty(&self) -> bool {
        self.current.load().keys.is_empty()
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A token needs a key the set lacks: starts a refetch unless one started less
    /// than `refetch_interval` ago, joins one that runs, and waits for it to end.
    pub async fn refetch(&self) -> Refetch {
        let mut ended = self.ended.subscribe();
        {
            let mut gate = self.lock_gate();
            if gate.in_flight {
                self.metrics.unknown_key(UnknownKeyOutcome::Joined);
            } else if gate
                .last_started
                .is_some_and(|t| t.elapsed() < self.config.refetch_interval)
            {
                self.metrics.unknown_key(UnknownKeyOutcome::RateLimited);
                return Refetch::TooSoon;
            } else {
                self.metrics.unknown_key(UnknownKeyOutcome::Refetched);
                gate.in_flight = true;
                gate.last_started = Some(Instant::now());
                self.wake.notify_one();
            }
        }
        // The task ends every fetch within `fetch_timeout`; the margin covers its
        // bookkeeping.
        let wait = self.fetch_timeout + Duration::from_millis(100);
        match tokio::time::timeout(wait, ended.changed()).await {
            Ok(Ok(())) => Refetch::Done,
            _ => Refetch::GaveUp,
        }
    }

    fn lock_gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        // The gate holds plain values: a panic elsewhere cannot leave it inconsistent.
        self.gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The task's side: whether a refresh that came due may start now.
    fn begin_refresh(&self) -> bool {
        let mut gate = self.lock_gate();
        if gate.in_flight {
            return false;
        }
        gate.in_flight = true;
        gate.last_started = Some(Instant::now());
        true
    }

    fn next_refresh(&self) -> Instant {
        self.lock_gate().next_refresh
    }

    /// Takes a fetch's result: new keys when it brought usable ones, the last good
    /// ones otherwise; schedules the next refresh and wakes the waiting requests.
    fn end_fetch(&self, result: Result<Fetched, FetchError>) {
        let now = Instant::now();
        let next = match result {
            Ok(fetched) => match parse_document(&fetched.body) {
                Ok((keys, skipped)) => {
                    let lifetime = fetched
                        .max_age
                        .unwrap_or(self.config.max_age)
                        .clamp(self.config.min_age, self.config.max_age);
                    self.install(keys, skipped, fetched.body, lifetime);
                    now + lifetime.mul_f64(0.9)
                }
                Err(error) => {
                    self.metrics.fetch_invalid.inc();
                    tracing::warn!(
                        issuer = %self.issuer,
                        upstream = %self.config.upstream,
                        path = %self.config.path,
                        retry_in = ?self.config.refetch_interval,
                        "JWKS document refused, keeping the last good keys: {error}"
                    );
                    now + self.config.refetch_interval
                }
            },
            Err(error) => {
                self.metrics.fetch_error.inc();
                tracing::warn!(
                    issuer = %self.issuer,
                    upstream = %self.config.upstream,
                    path = %self.config.path,
                    retry_in = ?self.config.refetch_interval,
                    "JWKS fetch failed, keeping the last good keys: {error}"
                );
                now + self.config.refetch_interval
            }
        };
        {
            let mut gate = self.lock_gate();
            gate.in_flight = false;
            gate.next_refresh = next;
        }
        self.ended.send_modify(|count| *count += 1);
    }

    fn install(&self, keys: Vec<Key>, skipped: usize, body: Bytes, lifetime: Duration) {
        self.metrics.fetch_ok.inc();
        self.metrics.keys.set(keys.len() as i64);
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.metrics
            .last_success
            .set(i64::try_from(unix_now).unwrap_or(i64::MAX));
        let previous = self.current.load();
        if previous.body == body {
            tracing::debug!(issuer = %self.issuer, ?lifetime, "JWKS document unchanged");
            return;
        }
        let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        tracing::info!(
            issuer = %self.issuer,
            keys = keys.len(),
            skipped,
            kids = ?kids,
            ?lifetime,
            "JWKS key set loaded"
        );
        let generation = previous.generation + 1;
        drop(previous);
        self.current.store(Arc::new(KeyList {
            keys,
            generation,
            body,
        }));
    }
}

/// The task: fetches when a refresh is due or a request asked, until stopped.
async fn run<F: Fetch>(set: Arc<KeySet>, fetcher: F, mut stopped: watch::Receiver<bool>) {
    loop {
        if *stopped.borrow() {
            return;
        }
        let due = set.next_refresh();
        tokio::select! {
            _ = stopped.changed() => return,
            // A request set `in_flight` before it woke us.
            () = set.wake.notified() => {}
            () = tokio::time::sleep_until(due) => {
                if !set.begin_refresh() {
                    continue;
                }
            }
        }
        let result = tokio::select! {
            _ = stopped.changed() => return,
            result = tokio::time::timeout(set.fetch_timeout, fetcher.fetch()) => {
                result.unwrap_or(Err(FetchError::Timeout(set.fetch_timeout)))
            }
        };
        set.end_fetch(result);
    }
}

/// `max-age` of a `Cache-Control` value; `no-store` and `no-cache` count as zero.
pub fn cache_max_age(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?;
    let mut found = None;
    for directive in text.split(',') {
        let directive = directive.trim();
        let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            let argument = argument.trim().trim_matches('"');
            if !argument.is_empty() && argument.bytes().all(|b| b.is_ascii_digit()) {
                // Beyond u32 is "forever"; max_age bounds it anyway.
                let seconds = argument.parse::<u64>().unwrap_or(u64::from(u32::MAX));
                found = Some(Duration::from_secs(seconds));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::metrics::Metrics;

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    fn document(kids: &[&str]) -> Bytes {
        let keys: Vec<String> = kids
            .iter()
            .map(|kid| format!(r#"{{"kty":"RSA","kid":"{kid}","n":"{RSA_N}","e":"AQAB"}}"#))
            .collect();
        Bytes::from(format!(r#"{{"keys":[{}]}}"#, keys.join(",")))
    }

    /// Serves what the test put there, counting fetches; each takes `delay`.
    #[derive(Clone)]
    struct Fake(Arc<FakeState>);

    struct FakeState {
        fetches: AtomicUsize,
        answer: Mutex<Result<(Bytes, Option<Duration>), ()>>,
        delay: Duration,
    }

    impl Fake {
        fn new(kids: &[&str], max_age: Option<Duration>, delay: Duration) -> Self {
            Fake(Arc::new(FakeState {
                fetches: AtomicUsize::new(0),
                answer: Mutex::new(Ok((document(kids), max_age))),
                delay,
            }))
        }
        fn serve(&self, answer: Result<(Bytes, Option<Duration>), ()>) {
            *self.0.answer.lock().expect("lock") = answer;
        }
        fn fetches(&self) -> usize {
            self.0.fetches.load(Ordering::SeqCst)
        }
    }

    impl Fetch for Fake {
        async fn fetch(&self) -> Result<Fetched, FetchError> {
            self.0.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.0.delay).await;
            let answer = self.0.answer.lock().expect("lock").clone();
            match answer {
                Ok((body, max_age)) => Ok(Fetched { body, max_age }),
                Err(()) => Err(FetchError::Status(http::StatusCode::BAD_GATEWAY)),
            }
        }
    }

    fn config() -> JwksConfig {
        JwksConfig {
            upstream: "idp".into(),
            path: http::uri::PathAndQuery::from_static("/jwks.json"),
            min_age: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            refetch_interval: Duration::from_secs(30),
            max_size: 1 << 16,
        }
    }

    fn start(fake: &Fake, previous: Option<&KeySet>) -> KeySetHandle {
        KeySet::start(
            "https://issuer/",
            &config(),
            Duration::from_secs(5),
            fake.clone(),
            Metrics::new().jwks("p", "https://issuer/"),
            previous,
        )
    }

    fn kids(set: &KeySet) -> Vec<String> {
        set.keys()
            .keys
            .iter()
            .filter_map(|k| k.kid.clone())
            .collect()
    }

    /// Lets the task run until it waits again (paused time moves only when all wait).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_fetch_starts_at_once_and_refreshes_follow_max_age() {
        let fake = Fake::new(&["a"], Some(Duration::from_secs(600)), Duration::ZERO);
        let handle = start(&fake, None);
        settle().await;
        assert_eq!(fake.fetches(), 1);
        assert_eq!(kids(handle.set()), ["a"]);
        // Refreshed at nine tenths of 600s, not before.
        tokio::time::sleep(Duration::from_secs(539)).await;
        assert_eq!(fake.fetches(), 1);
        fake.serve(Ok((document(&["a", "b"]), Some(Duration::from_secs(5)))));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fake.fetches(), 2);
        assert_eq!(kids(handle.set()), ["a", "b"]);
        // max-age=5 is raised to min_age (60s): the next refresh is 54s later.
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert_eq!(fake.fetches(), 2);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(fake.fetches(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_keeps_the_last_good_keys_and_is_retried_after_the_interval() {
        let fake = Fake::new(&["a"], None, Duration::ZERO);
        let handle = start(&fake, None);
        settle().await;
        let generation = handle.set().keys().generation;
        fake.serve(Err(()));
        // max_age (3600s) without Cache-Control: refreshed at 3240s.
        tokio::time::sleep(Duration::from_secs(3241)).await;
        assert_eq!(fake.fetches(), 2);
        assert_eq!(kids(handle.set()), ["a"]);
        assert_eq!(handle.set().keys().generation, generation);
        assert_eq!(handle.set().metrics.fetch_error.get(), 1);
        fake.serve(Ok((Bytes::from_static(b"not json"), None)));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(fake.fetches(), 3);
        assert_eq!(handle.set().metrics.fetch_invalid.get(), 1);
        assert_eq!(kids(handle.set()), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_unknown_kids_share_one_refetch_and_later_ones_wait_for_the_interval() {
        let fake = Fake::new(&["a"], None, Duration::from_millis(200));
        let handle = start(&fake, None);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(fake.fetches(), 1);
        fake.serve(Ok((document(&["a", "b"]), None)));
        let set = handle.set().clone();
        let asks: Vec<_> = (0..1000)
            .map(|_| {
                let set = set.clone();
                tokio::spawn(async move { set.refetch().await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for ask in asks {
            outcomes.push(ask.await.expect("no panic"));
        }
        assert!(
            outcomes.iter().all(|o| *o == Refetch::Done),
            "all share the fetch"
        );
        assert_eq!(fake.fetches(), 2, "one refetch for 1,000 unknown kids");
        assert_eq!(kids(&set), ["a", "b"]);
        // Within the interval: refused without a fetch.
        assert_eq!(set.refetch().await, Refetch::TooSoon);
        assert_eq!(fake.fetches(), 2);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(set.refetch().await, Refetch::Done);
        assert_eq!(fake.fetches(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_set_stops_and_its_successor_keeps_keys_and_schedule() {
        let fake = Fake::new(&["a"], None, Duration::ZERO);
        let old = start(&fake, None);
        settle().await;
        let successor = Fake::new(&["b"], None, Duration::ZERO);
        let new = start(&successor, Some(old.set()));
        old.stop();
        settle().await;
        assert_eq!(kids(new.set()), ["a"], "seeded with the old keys");
        assert_eq!(successor.fetches(), 0, "the schedule is carried over too");
        tokio::time::sleep(Duration::from_secs(7200)).await;
        assert_eq!(fake.fetches(), 1, "the old task stopped");
        assert!(successor.fetches() >= 1);
        assert_eq!(kids(new.set()), ["b"]);
        let set = new.set().clone();
        drop(new);
        settle().await;
        let fetched = successor.fetches();
        tokio::time::sleep(Duration::from_secs(7200)).await;
        assert_eq!(
            successor.fetches(),
            fetched,
            "dropping the handle stops the task"
        );
        assert_eq!(set.refetch().await, Refetch::GaveUp);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            cache_max_age(b"public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            cache_max_age(b"MAX-AGE=\"60\""),
            Some(Duration::from_secs(60))
        );
        assert_eq!(cache_max_age(b"no-store"), Some(Duration::ZERO));
        assert_eq!(cache_max_age(b"max-age=-1"), None);
        assert_eq!(cache_max_age(b"public"), None);
        assert_eq!(
            cache_max_age(b"max-age=99999999999999999999999"),
            Some(Duration::from_secs(u64::from(u32::MAX)))
        );
    }
}
