//! Endpoint health: whether an endpoint may receive requests.
//!
//! Two independent verdicts, both required: the **active** check (a periodic request
//! to `health_check.path`; `unhealthy_threshold` failures in a row take the endpoint
//! out, `healthy_threshold` passes bring it back), and **passive** outlier ejection
//! (`consecutive_failures` connect failures, timeouts or 5xx answers on real traffic
//! eject it for `base_ejection_time`, doubling on each repeat up to
//! `max_ejection_time`, never more than `max_ejection_percent` of the endpoints at
//! once). The state lives with the endpoint pool, so it survives reloads that keep the
//! endpoints.

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

/// One endpoint's health state.
pub struct EndpointHealth {
    checked_healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    /// Ejections in a row; each doubles the next ejection's length.
    ejections: AtomicU32,
    gauge: IntGauge,
    ejected_for_failures: IntCounter,
    failed_health_checks: IntCounter,
}

impl EndpointHealth {
    pub fn new(
        gauge: IntGauge,
        ejected_for_failures: IntCounter,
        failed_health_checks: IntCounter,
    ) -> Self {
        gauge.set(1);
        EndpointHealth {
            checked_healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            gauge,
            ejected_for_failures,
            failed_health_checks,
        }
    }

    fn ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Acquire) > now
    }

    /// Whether the endpoint may receive requests now.
    pub fn available(&self, now: u64) -> bool {
        self.checked_healthy.load(Ordering::Acquire) && !self.ejected(now)
    }

    fn refresh_gauge(&self) {
        self.gauge.set(i64::from(self.available(now_ms())));
    }
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

    /// The index of an available endpoint, scanning from `start`.
    pub(super) fn available_from(&self, start: usize, skip: &[usize]) -> Option<usize> {
        let now = now_ms();
        let count = self.endpoints.len();
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&i| !skip.contains(&i) && self.endpoints[i].health.available(now))
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
        let text = format!(
            "listeners: [{{ name: p, address: \"127.0.0.1:0\" }}]\nupstreams:\n  u:\n    endpoints: [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n    outlier: {outlier}\n"
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
}
