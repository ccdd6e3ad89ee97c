//! The shared rate-limit store (`policy::rate_limit::redis`) against a real
//! `redis-server` (tests/support/redis.rs): its script decides exactly as
//! `gcra::decide`, two stores (two gateways) share one burst, and a stopped, restarted,
//! flushed or paused Redis costs a bounded, counted error and nothing more.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::config::{OnStoreError, RateLimitStoreConfig};
use portcullis::metrics::{Metrics, StoreErrorKind};
use portcullis::policy::rate_limit::gcra::{self, Rate};
use portcullis::policy::rate_limit::{RedisStore, StoreError};
use portcullis::Config;

use crate::support::redis::RedisServer;

/// How late past its timeout a failed decision may return (a debug build on a busy
/// two-core machine; the timeout itself is what bounds it).
const SLACK: Duration = Duration::from_millis(150);

/// The store `rate_limit_stores.shared` of a file, compiled as the gateway would.
fn store_config(url: &str, timeout: &str, pool: usize, on_error: &str) -> RateLimitStoreConfig {
    let yaml = format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams: {{ app: {{ endpoints: ["http://127.0.0.1:9"] }} }}
routes: [{{ name: app, match: {{ path_prefix: / }}, upstream: app }}]
rate_limit_stores:
  shared: {{ redis: {{ url: "{url}", timeout: {timeout}, pool: {pool} }}, on_error: {on_error} }}
"#
    );
    let config = Config::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let index = config.rate_limit_store("shared").expect("the store");
    config.rate_limit_stores[index].clone()
}

fn store(server: &RedisServer, timeout: &str, pool: usize) -> (RedisStore, Metrics) {
    let metrics = Metrics::new();
    let config = store_config(&server.url(), timeout, pool, "allow");
    (RedisStore::new(&config, &metrics, 1), metrics)
}

fn rate(count: u32, period: Duration, burst: u32) -> Rate {
    Rate::new(count, period, burst).expect("a rate")
}

/// Decides until the store answers again (after a restart or a pause), at most `limit`.
async fn until_answering(store: &RedisStore, key: &[u8], rate: &Rate, limit: Duration) {
    let started = Instant::now();
    loop {
        match store.decide(key, rate).await {
            Ok(_) => return,
            Err(error) if started.elapsed() > limit => {
                panic!("the store did not answer again within {limit:?}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The differential test: each rate's sequence of requests, at times fed to the script
/// (`decide_at`), decided by the script on Redis and by `gcra::decide` in process; every
/// decision must be the same. Times are pseudo-random steps from two origins: 0 and a
/// realistic clock (nanoseconds since the epoch are past what a Lua double holds
/// exactly, which the script must handle). Intervals are long (seconds) because the
/// script's `PX` runs on Redis's real clock: no key may expire during the test.
#[tokio::test]
async fn the_script_decides_exactly_as_gcra() {
    let server = RedisServer::start();
    let (store, _metrics) = store(&server, "2s", 1);
    let rates = [
        rate(7, Duration::from_secs(60), 3), // 8_571_428_571 ns: not whole ms
        rate(1, Duration::from_secs(60), 5),
        rate(100, Duration::from_secs(3600), 20), // 36 s
        rate(3, Duration::from_secs(40), 1),      // no burst
        rate(13, Duration::from_secs(170), 200),  // a large tolerance
    ];
    let mut random = fastrand::Rng::with_seed(0x5eed);
    let mut compared = 0;
    for (r, rate) in rates.iter().enumerate() {
        for (o, origin) in [0u64, 1_765_000_000_123_456_789].into_iter().enumerate() {
            let key = format!("differential:{r}:{o}");
            let mut tat = None;
            let mut now = origin;
            for step in 0..150 {
                // Mostly bursts (no time passes), sometimes a fraction of an interval,
                // sometimes several intervals.
                now += match random.u8(0..10) {
                    0..=4 => 0,
                    5..=7 => random.u64(0..rate.interval_nanos),
                    _ => random.u64(0..rate.interval_nanos * 4),
                };
                let (expected, new_tat) = gcra::decide(tat, now, rate);
                tat = Some(new_tat);
                let got = store
                    .decide_at(key.as_bytes(), rate, now)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    got, expected,
                    "rate {r} origin {o} step {step} at {now}: the script and gcra::decide differ"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, rates.len() * 2 * 150);
}

/// On the server's own clock: the burst, then a refusal whose `retry_after` is within one
/// interval; the key's TTL is the time until its TAT passes. (An interval of a second, so
/// that a slow machine still makes the four decisions well within one.)
#[tokio::test]
async fn decisions_on_the_server_clock_and_keys_that_expire_when_full() {
    let server = RedisServer::start();
    let (store, _metrics) = store(&server, "2s", 2);
    let limit = rate(1, Duration::from_secs(1), 3);
    let started = Instant::now();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let decision = store.decide(b"clock", &limit).await.expect("decides");
        assert!(decision.allowed);
        remaining.push(decision.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = store.decide(b"clock", &limit).await.expect("decides");
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(1),
        "{refused:?}"
    );
    let ttl = server.command("PTTL portcullis:rl:clock");
    let ttl: u128 = ttl
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("PTTL answered {ttl:?}"));
    let elapsed = started.elapsed().as_millis();
    assert!(
        ttl <= 3000 && ttl + elapsed >= 2999,
        "the key lives until its TAT passes (3 s after the first decision): {ttl} ms, {elapsed} ms later"
    );
}

/// Two stores, as two gateways in front of one Redis, decide concurrently for one key:
/// between them they admit exactly the burst (the rate adds nothing during the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_redis_admit_exactly_the_burst_between_them() {
    let server = RedisServer::start();
    let (first, _m1) = store(&server, "2s", 4);
    let (second, _m2) = store(&server, "2s", 4);
    let stores = [Arc::new(first), Arc::new(second)];
    let limit = rate(1, Duration::from_secs(3600), 50);
    let allowed = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = stores[i % 2].clone();
        let (allowed, limited, start) = (allowed.clone(), limited.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let decision = store
                .decide(b"shared-burst", &limit)
                .await
                .expect("decides");
            let counter = if decision.allowed { &allowed } else { &limited };
            counter.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        task.await.expect("the task ends");
    }
    assert_eq!(allowed.load(Ordering::Relaxed), 50);
    assert_eq!(limited.load(Ordering::Relaxed), 150);
}

/// A stopped Redis: every decision fails within the timeout (never hangs) and is
/// counted; once it is back (empty, without the script), decisions resume on their own.
#[tokio::test]
async fn a_stopped_redis_fails_within_the_timeout_and_decisions_resume_after_a_restart() {
    let mut server = RedisServer::start();
    let (store, metrics) = store(&server, "200ms", 2);
    let limit = rate(100, Duration::from_secs(1), 100);
    assert!(store.decide(b"k", &limit).await.expect("decides").allowed);
    assert_eq!(store.on_error(), OnStoreError::Allow);

    server.stop();
    for _ in 0..20 {
        let started = Instant::now();
        let error = store
            .decide(b"k", &limit)
            .await
            .expect_err("Redis is stopped");
        assert!(
            started.elapsed() < Duration::from_millis(200) + SLACK,
            "took {:?}: {error}",
            started.elapsed()
        );
        assert!(
            matches!(
                error,
                StoreError::Connection { .. } | StoreError::Timeout { .. }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("\"shared\""), "{error}");
    }
    let handles = metrics.rate_limit_store("shared");
    let counted: u64 = StoreErrorKind::ALL.iter().map(|k| handles.errors(*k)).sum();
    assert_eq!(counted, 20);
    let text = String::from_utf8(metrics.encode()).expect("utf-8");
    assert!(
        text.contains(
            r#"portcullis_rate_limit_store_errors_total{kind="connection",store="shared"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_rate_limit_store_duration_seconds_count{store="shared"} 21"#)
    );

    server.restart();
    until_answering(&store, b"k", &limit, Duration::from_secs(10)).await;
    let decision = store.decide(b"k", &limit).await.expect("decides again");
    assert!(decision.allowed);
    assert!(store.connections_up() >= 1);
}

/// `NOSCRIPT` (the script cache flushed under a live connection): the script is loaded
/// again and the decision still made.
#[tokio::test]
async fn a_flushed_script_is_loaded_again() {
    let server = RedisServer::start();
    let (store, metrics) = store(&server, "2s", 1);
    let limit = rate(10, Duration::from_secs(1), 5);
    assert!(
        store
            .decide(b"flush", &limit)
            .await
            .expect("decides")
            .allowed
    );
    assert_eq!(server.command("SCRIPT FLUSH"), "+OK");
    let decision = store
        .decide(b"flush", &limit)
        .await
        .expect("NOSCRIPT handled");
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 3);
    let handles = metrics.rate_limit_store("shared");
    assert_eq!(handles.errors(StoreErrorKind::Script), 0);
}

/// A paused Redis (`SIGSTOP`: the socket stays open, nothing answers): decisions fail
/// within the timeout, the first as a timeout; after `SIGCONT` they resume.
#[tokio::test]
async fn a_paused_redis_times_out_within_the_timeout() {
    let mut server = RedisServer::start();
    let (store, metrics) = store(&server, "50ms", 1);
    let limit = rate(100, Duration::from_secs(1), 100);
    assert!(
        store
            .decide(b"pause", &limit)
            .await
            .expect("decides")
            .allowed
    );

    server.pause();
    for i in 0..8 {
        let started = Instant::now();
        let error = store
            .decide(b"pause", &limit)
            .await
            .expect_err("Redis is paused");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(50) + SLACK,
            "took {took:?}: {error}"
        );
        if i == 0 {
            assert!(matches!(error, StoreError::Timeout { .. }), "{error}");
        }
    }
    let handles = metrics.rate_limit_store("shared");
    assert!(handles.errors(StoreErrorKind::Timeout) >= 3);

    server.resume();
    until_answering(&store, b"pause", &limit, Duration::from_secs(10)).await;
}

/// A reload that leaves a store's configuration as it was keeps the store (and its
/// connections); one that changes it gets a new store.
#[tokio::test]
async fn a_store_is_carried_over_when_its_configuration_is_unchanged() {
    let server = RedisServer::start();
    let metrics = Metrics::new();
    let config = store_config(&server.url(), "20ms", 4, "deny");
    let first = RedisStore::carry_over(&config, None, &metrics, 2);
    assert_eq!(first.on_error(), OnStoreError::Deny);
    let limit = rate(10, Duration::from_secs(1), 5);
    first.decide(b"carry", &limit).await.expect("decides");
    let up = first.connections_up();
    assert!(up >= 1);

    let same = RedisStore::carry_over(&config, Some(&first), &metrics, 2);
    assert!(Arc::ptr_eq(&first, &same));
    assert_eq!(same.connections_up(), up, "no connection dropped");

    let changed = store_config(&server.url(), "30ms", 4, "deny");
    let new = RedisStore::carry_over(&changed, Some(&first), &metrics, 2);
    assert!(!Arc::ptr_eq(&first, &new));
    let other_workers = RedisStore::carry_over(&config, Some(&first), &metrics, 3);
    assert!(!Arc::ptr_eq(&first, &other_workers));
}

/// What one decision costs on loopback: 10,000 in a row, one at a time. Printed (run
/// with `--nocapture`), not asserted: timings depend on the machine.
#[tokio::test]
async fn the_latency_of_a_decision_on_loopback() {
    let server = RedisServer::start();
    let (store, _metrics) = store(&server, "1s", 1);
    let limit = rate(1_000_000, Duration::from_secs(1), 1_000);
    let mut times = Vec::with_capacity(10_000);
    for i in 0..10_000u32 {
        let key = (i % 100).to_be_bytes();
        let started = Instant::now();
        store.decide(&key, &limit).await.expect("decides");
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "rate-limit store decision on loopback, 10,000 sequential: median {:?}, p99 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
}

/// With per-core workers, each worker's decisions use connections of its own, started on
/// its runtime by its first decision; when a worker's runtime stops, its connections go
/// with it and the store stays usable.
#[tokio::test]
async fn each_worker_gets_connections_of_its_own() {
    let server = RedisServer::start();
    let metrics = Metrics::new();
    let config = store_config(&server.url(), "2s", 3, "allow");
    let store = Arc::new(RedisStore::new(&config, &metrics, 3));
    let workers = portcullis::workers::Workers::start(3).expect("workers start");
    let limit = rate(100, Duration::from_secs(1), 100);
    for handle in workers.handles() {
        let store = store.clone();
        handle
            .spawn(async move { store.decide(b"w", &limit).await.map(|d| d.allowed) })
            .await
            .expect("the task ends")
            .expect("decides");
    }
    assert_eq!(store.connections_up(), 3, "one per worker");
    workers.stop().await;
    // Worker 0 is this test's runtime: its connection stays; those of workers 1 and 2
    // ended with their runtimes.
    assert_eq!(store.connections_up(), 1);
    let gauge = metrics.rate_limit_store("shared").connections.get();
    assert_eq!(gauge, 1, "the gauge follows");
    assert!(store.decide(b"w", &limit).await.expect("decides").allowed);
}

/// A password and a database in the URL: `AUTH` and `SELECT` on every connection; a wrong
/// password is a connection error that never shows the password.
#[tokio::test]
async fn credentials_and_the_database_come_from_the_url() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pass"]);
    let port = server.address().port();
    let limit = rate(10, Duration::from_secs(1), 5);
    let metrics = Metrics::new();
    let config = store_config(
        &format!("redis://:s3cret-pass@127.0.0.1:{port}/3"),
        "2s",
        1,
        "deny",
    );
    let store = RedisStore::new(&config, &metrics, 1);
    assert!(
        store
            .decide(b"auth", &limit)
            .await
            .expect("decides")
            .allowed
    );
    let replies = server.commands(&[
        "AUTH s3cret-pass",
        "EXISTS portcullis:rl:auth",
        "SELECT 3",
        "EXISTS portcullis:rl:auth",
    ]);
    assert_eq!(
        replies,
        ["+OK", ":0", "+OK", ":1"],
        "the key is in database 3"
    );

    let wrong = store_config(
        &format!("redis://:not-it@127.0.0.1:{port}"),
        "500ms",
        1,
        "deny",
    );
    let store = RedisStore::new(&wrong, &metrics, 1);
    let started = Instant::now();
    let error = store.decide(b"auth", &limit).await.expect_err("refused");
    assert!(started.elapsed() < Duration::from_millis(500) + SLACK);
    assert!(matches!(error, StoreError::Connection { .. }), "{error}");
    let message = error.to_string();
    assert!(
        !message.contains("not-it") && !message.contains("s3cret"),
        "{message}"
    );
    assert!(message.contains(":***@127.0.0.1"), "{message}");
}

/// Through the snapshot a reload builds: an unchanged store entry is the same store (its
/// connections kept), a changed one a new store, a removed one gone.
#[tokio::test]
async fn a_reload_keeps_an_unchanged_store_in_the_snapshot() {
    use portcullis::proxy::Snapshot;
    let yaml = |timeout: &str, extra: &str| {
        format!(
            r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams: {{ app: {{ endpoints: ["http://127.0.0.1:9"] }} }}
routes: [{{ name: app, match: {{ path_prefix: / }}, upstream: app }}]
rate_limit_stores:
  shared: {{ redis: {{ url: "redis://127.0.0.1:6399", timeout: {timeout} }} }}
{extra}"#
        )
    };
    let load = |text: String| Config::from_yaml(&text, "test.yaml").expect("valid");
    let metrics = Metrics::new();
    let first = Snapshot::build(load(yaml("20ms", "")), &metrics, None);
    assert_eq!(first.rate_limit_stores.len(), 1);
    assert_eq!(first.rate_limit_stores[0].name(), "shared");

    let extra = "  second: { redis: { url: \"redis://127.0.0.1:6398\" } }\n";
    let same = Snapshot::build(load(yaml("20ms", extra)), &metrics, Some(&first));
    let index = same.config.rate_limit_store("shared").expect("still there");
    assert!(Arc::ptr_eq(
        &first.rate_limit_stores[0],
        &same.rate_limit_stores[index]
    ));
    assert_eq!(same.rate_limit_stores.len(), 2);

    let changed = Snapshot::build(load(yaml("25ms", "")), &metrics, Some(&same));
    assert!(!Arc::ptr_eq(
        &first.rate_limit_stores[0],
        &changed.rate_limit_stores[0]
    ));
    assert_eq!(
        changed.rate_limit_stores[0].config().redis.timeout,
        Duration::from_millis(25)
    );
}
