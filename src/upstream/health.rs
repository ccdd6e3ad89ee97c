//! Endpoint health: whether an endpoint may receive requests.
//!
//! Three independent verdicts, all required: the **active** check (a periodic request
//! to `health_check.path`; `unhealthy_threshold` failures in a row take the endpoint
//! out, `healthy_threshold` passes bring it back), **passive** outlier ejection
//! (`consecutive_failures` connect failures, timeouts or 5xx answers on real traffic
//! eject it for `base_ejection_time`, doubling on each repeat up to
//! `max_ejection_time`, never more than `max_ejection_percent` of the endpoints at
//! once), and **marked down**: an endpoint that refused a connection (or did not open
//! one within `connect_timeout`, or presented a certificate that failed verification)
//! is out at once, always, without configuration. It comes back when a passing active
//! check or any response from it says it is reachable; without active checks, one real
//! request is let through as a probe after [`PROBE_BACKOFF_BASE`], then after twice as
//! long for each probe that finds it still down, up to [`PROBE_BACKOFF_MAX`]. Being
//! marked down never leaves an upstream without endpoints: when every endpoint that
//! the other verdicts allow is marked down, they are tried anyway (see
//! [`EndpointPool::available_from`]). The state lives with the endpoint pool, so it
//! survives reloads that keep the endpoints.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{OnceLock, Weak};
use std::time::Duration;

use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Limited};
use prometheus::{IntCounter, IntGauge};

use super::UpstreamBody;
use super::{Endpoint, EndpointPool};
use crate::config::{HealthCheckConfig, OutlierConfig};
use crate::metrics::EndpointHealthMetrics;

/// How long an endpoint marked down (without active checks) waits for its first probe.
pub const PROBE_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between two probes of an endpoint marked down.
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Milliseconds on tokio's clock (so paused-time tests see ejections expire). The
/// epoch lies an hour back, so that every runtime's clock (a paused one starts at its
/// own creation) is past it and `elapsed` never saturates.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| {
        let now = tokio::time::Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    });
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Why an endpoint is out of rotation, as the admin status page shows it: the first
/// verdict that keeps it out, marked down first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// In rotation.
    Up,
    /// A connect was refused or timed out (or its certificate failed verification).
    MarkedDown,
    /// Failing its active health checks.
    FailingChecks,
    /// Ejected by outlier detection, until its ejection time has passed.
    Ejected,
}

/// One endpoint's health state.
pub struct EndpointHealth {
    checked_healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    /// Ejections in a row; each doubles the next ejection's length.
    ejections: AtomicU32,
    /// When the endpoint was marked down (`now_ms`, at least 1); 0 while it is not.
    down_since_ms: AtomicU64,
    /// While marked down without active checks: when the next probe may go.
    probe_at_ms: AtomicU64,
    /// Probes let through since it was marked down; each doubles the wait for the next.
    probes: AtomicU32,
    /// Whether active checks run: they, not probes, end a mark-down.
    actively_checked: bool,
    gauge: IntGauge,
    ejected_for_failures: IntCounter,
    failed_health_checks: IntCounter,
    marked_down: IntCounter,
}

impl EndpointHealth {
    pub fn new(metrics: EndpointHealthMetrics, actively_checked: bool) -> Self {
        metrics.healthy.set(1);
        EndpointHealth {
            checked_healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            down_since_ms: AtomicU64::new(0),
            probe_at_ms: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            actively_checked,
            gauge: metrics.healthy,
            ejected_for_failures: metrics.ejected_for_failures,
            failed_health_checks: metrics.failed_health_checks,
            marked_down: metrics.marked_down,
        }
    }

    /// The endpoint's health now, read from its atomics (no probe is claimed).
    pub fn state(&self, now: u64) -> HealthState {
        if self.marked_down() {
            HealthState::MarkedDown
        } else if !self.checked_healthy.load(Ordering::Acquire) {
            HealthState::FailingChecks
        } else if self.ejected(now) {
            HealthState::Ejected
        } else {
            HealthState::Up
        }
    }

    fn ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Acquire) > now
    }

    /// Whether the endpoint may receive requests now. For an endpoint marked down
    /// whose probe is due, this lets one request through as the probe: the caller is
    /// expected to send it one.
    pub fn available(&self, now: u64) -> bool {
        self.allowed_by_checks(now) && self.reachable_or_probe(now)
    }

    /// The active check's and outlier ejection's verdicts, without being marked down.
    #[inline]
    fn allowed_by_checks(&self, now: u64) -> bool {
        self.checked_healthy.load(Ordering::Acquire) && !self.ejected(now)
    }

    /// Whether the endpoint is marked down (a refused or timed-out connect).
    #[inline]
    pub fn marked_down(&self) -> bool {
        self.down_since_ms.load(Ordering::Acquire) != 0
    }

    /// Not marked down; or marked down without active checks and its probe is due, in
    /// which case the probe is claimed (one caller gets it) and the next one put off.
    #[inline]
    fn reachable_or_probe(&self, now: u64) -> bool {
        !self.marked_down() || self.probe(now)
    }

    /// For an endpoint marked down: whether this caller gets its probe now.
    #[cold]
    fn probe(&self, now: u64) -> bool {
        if self.actively_checked {
            return false;
        }
        let due = self.probe_at_ms.load(Ordering::Acquire);
        if now < due {
            return false;
        }
        let probes = self.probes.load(Ordering::Acquire).saturating_add(1);
        let claimed = self
            .probe_at_ms
            .compare_exchange(
                due,
                now + millis(probe_backoff(probes)),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if claimed {
            self.probes.store(probes, Ordering::Release);
        }
        claimed
    }

    /// Marks the endpoint down at once; `true` when it was not already.
    fn mark_down(&self, now: u64) -> bool {
        let marked = self
            .down_since_ms
            .compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if marked {
            self.probes.store(0, Ordering::Release);
            self.probe_at_ms
                .store(now + millis(PROBE_BACKOFF_BASE), Ordering::Release);
            self.marked_down.inc();
            self.refresh_gauge();
        }
        marked
    }

    /// Ends a mark-down: the endpoint answered. `true` when it was marked down. One
    /// load when it was not (the case on every response).
    #[inline]
    fn mark_up(&self) -> bool {
        self.marked_down() && self.end_mark_down()
    }

    #[cold]
    fn end_mark_down(&self) -> bool {
        let was = self.down_since_ms.swap(0, Ordering::AcqRel) != 0;
        if was {
            self.refresh_gauge();
        }
        was
    }

    /// Whether the endpoint is in rotation (for the gauge): allowed by every verdict,
    /// probes aside.
    fn in_rotation(&self, now: u64) -> bool {
        self.allowed_by_checks(now) && !self.marked_down()
    }

    fn refresh_gauge(&self) {
        self.gauge.set(i64::from(self.in_rotation(now_ms())));
    }
}

/// The wait after the `probes`-th probe of an endpoint marked down: the base, doubled
/// for each probe, capped.
fn probe_backoff(probes: u32) -> Duration {
    let factor = 1u32.checked_shl(probes.min(16)).unwrap_or(u32::MAX);
    PROBE_BACKOFF_BASE
        .saturating_mul(factor)
        .min(PROBE_BACKOFF_MAX)
}

impl EndpointPool {
    /// Records a real request's result for outlier ejection.
    pub(super) fn observe(
        &self,
        index: usize,
        failed: bool,
        outlier: Option<&OutlierConfig>,
        upstream: &str,
    ) {
        let endpoint = &self.endpoints[index];
        let health = &endpoint.health;
        if !failed {
            // Read before writing: a store on every success would pull the cache line
            // away from every other worker thread.
            if health.consecutive_failures.load(Ordering::Acquire) != 0 {
                health.consecutive_failures.store(0, Ordering::Release);
            }
            return;
        }
        let Some(config) = outlier else { return };
        let failures = health.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < config.consecutive_failures {
            return;
        }
        let now = now_ms();
        if health.ejected(now) {
            return;
        }
        let total = self.endpoints.len();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.health.ejected(now))
            .count();
        let within_limit = (ejected + 1) * 100 <= usize::from(config.max_ejection_percent) * total;
        // At least one endpoint may always be ejected when others remain.
        let first_of_several = ejected == 0 && total > 1;
        if !(within_limit || first_of_several) {
            tracing::debug!(%upstream, endpoint = %endpoint.address.label, "not ejected: max_ejection_percent reached");
            return;
        }
        let previous_until = health.ejected_until_ms.load(Ordering::Acquire);
        let repeats = health.ejections.load(Ordering::Acquire);
        // An endpoint that stayed in rotation longer than its last ejection starts over.
        let last_length = ejection_length(config, repeats.saturating_sub(1));
        let repeats =
            if previous_until > 0 && now.saturating_sub(previous_until) > millis(last_length) {
                0
            } else {
                repeats
            };
        let length = ejection_length(config, repeats);
        health.ejections.store(repeats + 1, Ordering::Release);
        health
            .ejected_until_ms
            .store(now + millis(length), Ordering::Release);
        health.consecutive_failures.store(0, Ordering::Release);
        health.ejected_for_failures.inc();
        health.refresh_gauge();
        tracing::warn!(
            %upstream,
            endpoint = %endpoint.address.label,
            failures,
            ejected_for = ?length,
            "endpoint ejected after consecutive failures"
        );
        let pool = self.weak_self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            if let Some(pool) = pool.upgrade() {
                pool.endpoints[index].health.refresh_gauge();
            }
        });
    }

    /// Marks endpoint `index` down at once: it refused a connection, did not open one
    /// in time, or failed TLS verification (`cause`). Logged once, when it goes down.
    pub(super) fn mark_down(&self, index: usize, upstream: &str, cause: &dyn std::fmt::Display) {
        let endpoint = &self.endpoints[index];
        if endpoint.health.mark_down(now_ms()) {
            let until = if endpoint.health.actively_checked {
                "a health check passes"
            } else {
                "a probe request gets a response"
            };
            tracing::warn!(
                %upstream,
                endpoint = %endpoint.address.label,
                "endpoint marked down until {until}: {cause}"
            );
        }
    }

    /// Endpoint `index` answered: a mark-down ends (logged once, when it comes back).
    #[inline]
    pub(super) fn mark_up(&self, index: usize, upstream: &str) {
        let endpoint = &self.endpoints[index];
        if endpoint.health.mark_up() {
            tracing::info!(
                %upstream,
                endpoint = %endpoint.address.label,
                "endpoint reachable again; back in rotation"
            );
        }
    }

    /// The index of an available endpoint not in `skip`, scanning from `start`. When
    /// every endpoint the active checks and outlier ejection allow is marked down (or
    /// in `skip`), one of those marked down: being marked down alone never makes an
    /// upstream unavailable, the request is tried as it would have been before.
    pub(super) fn available_from(&self, start: usize, skip: &[usize]) -> Option<usize> {
        let now = now_ms();
        let count = self.endpoints.len();
        let candidates = || {
            (0..count)
                .map(move |offset| (start + offset) % count)
                .filter(|i| !skip.contains(i))
        };
        candidates()
            .find(|&i| self.endpoints[i].health.available(now))
            .or_else(|| candidates().find(|&i| self.endpoints[i].health.allowed_by_checks(now)))
    }
}

fn ejection_length(config: &OutlierConfig, repeats: u32) -> Duration {
    let factor = 1u32.checked_shl(repeats.min(16)).unwrap_or(u32::MAX);
    config
        .base_ejection_time
        .saturating_mul(factor)
        .min(config.max_ejection_time)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Checks every endpoint of `pool` each `interval` until the pool is dropped.
pub(super) fn spawn_checker(pool: Weak<EndpointPool>, config: HealthCheckConfig, upstream: String) {
    tokio::spawn(async move {
        let mut streaks: Vec<(u32, u32)> = Vec::new();
        loop {
            let Some(current) = pool.upgrade() else {
                return;
            };
            streaks.resize(current.endpoints.len(), (0, 0));
            let checks = current
                .endpoints
                .iter()
                .enumerate()
                .map(|(index, endpoint)| check(&current, index, endpoint, &config));
            let results = futures_util::future::join_all(checks).await;
            for ((endpoint, passed), (passes, failures)) in current
                .endpoints
                .iter()
                .zip(results)
                .zip(streaks.iter_mut())
            {
                if passed {
                    *passes += 1;
                    *failures = 0;
                } else {
                    *failures += 1;
                    *passes = 0;
                }
                let health = &endpoint.health;
                if passed && health.mark_up() {
                    tracing::info!(%upstream, endpoint = %endpoint.address.label, "endpoint marked down passed a health check; back in rotation");
                }
                let healthy = health.checked_healthy.load(Ordering::Acquire);
                if healthy && *failures >= config.unhealthy_threshold {
                    health.checked_healthy.store(false, Ordering::Release);
                    health.failed_health_checks.inc();
                    tracing::warn!(%upstream, endpoint = %endpoint.address.label, failures = *failures, "endpoint failed its health checks; out of rotation");
                } else if !healthy && *passes >= config.healthy_threshold {
                    health.checked_healthy.store(true, Ordering::Release);
                    tracing::info!(%upstream, endpoint = %endpoint.address.label, "endpoint passed its health checks; back in rotation");
                }
                health.refresh_gauge();
            }
            drop(current);
            tokio::time::sleep(config.interval).await;
        }
    });
}

async fn check(
    pool: &EndpointPool,
    index: usize,
    endpoint: &Endpoint,
    config: &HealthCheckConfig,
) -> bool {
    let Ok(uri) = endpoint.uri(config.path.clone()) else {
        return false;
    };
    let mut request = Request::new(UpstreamBody::Empty);
    *request.uri_mut() = uri;
    request
        .headers_mut()
        .insert(HOST, endpoint.host_value.clone());
    request.headers_mut().insert(
        USER_AGENT,
        HeaderValue::from_static("portcullis-health-check"),
    );
    let checked = async {
        let response = pool.send(index, request, config.timeout).await.ok()?;
        let status = response.status().as_u16();
        // Read (a small) body to its end, so that the connection can be used again.
        let _ = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        Some(status)
    };
    match tokio::time::timeout(config.timeout, checked).await {
        Ok(Some(status)) => (config.expected_status.0..=config.expected_status.1).contains(&status),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::upstream::Upstream;

    fn upstream(outlier: &str) -> Upstream {
        upstream_with(&format!("outlier: {outlier}"))
    }

    /// Two endpoints nothing listens on, with `extra` (one line of YAML) on the upstream.
    fn upstream_with(extra: &str) -> Upstream {
        let text = format!(
            "listeners: [{{ name: p, address: \"127.0.0.1:0\" }}]\nupstreams:\n  u:\n    endpoints: [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n    {extra}\n"
        );
        let config = Config::from_yaml(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        Upstream::new(&config.upstreams[0], &Metrics::new())
    }

    fn picks(upstream: &Upstream) -> Vec<usize> {
        (0..6).filter_map(|_| upstream.pick(&[])).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_expire_and_double_on_repeat() {
        let upstream = upstream(
            "{ consecutive_failures: 2, base_ejection_time: 10s, max_ejection_time: 25s }",
        );
        upstream.observe(1, true);
        assert!(picks(&upstream).contains(&1), "one failure is not enough");
        upstream.observe(1, true);
        assert_eq!(picks(&upstream), vec![0; 6], "ejected after two");

        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            picks(&upstream).contains(&1),
            "back after the base ejection time"
        );

        upstream.observe(1, true);
        upstream.observe(1, true);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            picks(&upstream),
            vec![0; 6],
            "the second ejection lasts twice as long"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(picks(&upstream).contains(&1));

        upstream.observe(1, true);
        upstream.observe(1, true);
        tokio::time::advance(Duration::from_secs(24)).await;
        assert_eq!(
            picks(&upstream),
            vec![0; 6],
            "capped at max_ejection_time (25s)"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(picks(&upstream).contains(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_count_and_the_percentage_caps_ejections() {
        let upstream = upstream("{ consecutive_failures: 2, max_ejection_percent: 50 }");
        upstream.observe(0, true);
        upstream.observe(0, false);
        upstream.observe(0, true);
        assert!(
            picks(&upstream).contains(&0),
            "the failures were not consecutive"
        );
        upstream.observe(0, true);
        upstream.observe(1, true);
        upstream.observe(1, true);
        assert_eq!(
            picks(&upstream),
            vec![1; 6],
            "only half of the endpoints may be ejected"
        );
    }

    fn probes_in(upstream: &Upstream, picks_made: usize) -> usize {
        (0..picks_made)
            .filter(|_| upstream.pick(&[]) == Some(1))
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_marked_down_endpoint_gets_one_probe_after_each_backoff() {
        let upstream = upstream_with("max_in_flight: 10");
        upstream.pool.mark_down(1, "u", &"refused");
        assert_eq!(picks(&upstream), vec![0; 6], "skipped at once");

        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(probes_in(&upstream, 6), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            probes_in(&upstream, 6),
            1,
            "one request is the probe, after 1s"
        );
        assert_eq!(probes_in(&upstream, 6), 0);

        // The probe found it down still (no response marked it up): 2s, then 4s.
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(probes_in(&upstream, 6), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(probes_in(&upstream, 6), 1, "the second probe after 2s more");
        tokio::time::advance(Duration::from_millis(3999)).await;
        assert_eq!(probes_in(&upstream, 6), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(probes_in(&upstream, 6), 1, "the third after 4s more");

        // Marked down again while down: no new backoff, no new count.
        upstream.pool.mark_down(1, "u", &"refused");
        tokio::time::advance(Duration::from_millis(7999)).await;
        assert_eq!(probes_in(&upstream, 6), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(probes_in(&upstream, 6), 1, "the fourth after 8s more");

        // A response ends it.
        upstream.pool.mark_up(1, "u");
        assert_eq!(probes_in(&upstream, 6), 3, "back in rotation");
        assert!(!upstream.endpoints()[1].health.marked_down());
    }

    #[test]
    fn the_probe_backoff_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (0..8).map(|n| probe_backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn with_active_checks_only_a_check_or_a_response_ends_a_mark_down() {
        let upstream =
            upstream_with("health_check: { path: /, interval: 1h, unhealthy_threshold: 100 }");
        upstream.pool.mark_down(0, "u", &"refused");
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(picks(&upstream), vec![1; 6], "no probe: the checks decide");
        upstream.pool.mark_up(0, "u");
        assert!(picks(&upstream).contains(&0));
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_all_marked_down_are_tried_anyway() {
        let upstream = upstream_with("max_in_flight: 10");
        upstream.pool.mark_down(0, "u", &"refused");
        upstream.pool.mark_down(1, "u", &"refused");
        let picked = picks(&upstream);
        assert_eq!(
            picked.len(),
            6,
            "marked down alone never leaves no endpoint"
        );
        assert!(picked.contains(&0) && picked.contains(&1));
        assert_eq!(
            upstream.pick(&[0, 1]),
            None,
            "but never one the request tried"
        );
        assert_eq!(upstream.pick(&[0]), Some(1));
    }
}
