//! Retries: a failed try is repeated, on another endpoint when there is one, if the
//! failure is one the policy names, the method may be repeated, tries remain, and the
//! upstream's retry budget allows. The budget caps retries at a share of the
//! upstream's recent requests, so a failing upstream never gets a retry storm.
//!
//! A try that could not connect has first been redispatched to every other endpoint
//! within [`Upstream::attempt`], which is no retry: it draws nothing from the budget
//! and counts in no `attempts`. Only what is left (every endpoint refused, or there is
//! one) comes here as a `connect_failure`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use super::exchange::{Each, Exchange, ExchangeError, UpstreamError, Wait};
use super::health::now_ms;
use super::UpstreamBody;
use super::{Endpoint, ReceivedBody, Upstream};
use crate::config::RetryConfig;

/// How long the budget counts requests before starting over.
const BUDGET_WINDOW_MS: u64 = 10_000;
/// Retries always allowed per window (one a second), so that a quiet upstream can
/// still retry.
const BUDGET_MIN_RETRIES: u64 = 10;

/// Requests and retries in the current window. Lives as long as the upstream's name.
#[derive(Default)]
pub struct RetryBudget {
    window_start_ms: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    fn roll(&self, now: u64) {
        let start = self.window_start_ms.load(Ordering::Acquire);
        if now.saturating_sub(start) >= BUDGET_WINDOW_MS
            && self
                .window_start_ms
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.requests.store(0, Ordering::Release);
            self.retries.store(0, Ordering::Release);
        }
    }

    pub(super) fn deposit(&self) {
        self.roll(now_ms());
        self.requests.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn withdraw(&self, percent: u32) -> bool {
        self.roll(now_ms());
        let allowed = (self.requests.load(Ordering::Acquire) * u64::from(percent) / 100)
            .max(BUDGET_MIN_RETRIES);
        self.retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |retries| {
                (retries < allowed).then_some(retries + 1)
            })
            .is_ok()
    }
}

/// Why a try is repeated; the index into `UpstreamMetrics::retries`.
#[derive(Debug, Clone, Copy)]
enum Reason {
    ConnectFailure = 0,
    Reset = 1,
    Timeout = 2,
    Status = 3,
}

fn reason<E>(
    policy: &RetryConfig,
    result: &Result<(Response<ReceivedBody>, Exchange), ExchangeError<E>>,
) -> Option<Reason> {
    let on = &policy.on;
    match result {
        Ok((response, _)) => on
            .statuses
            .contains(&response.status().as_u16())
            .then_some(Reason::Status),
        Err(ExchangeError::Upstream(error)) => match error {
            UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. }
                if on.connect_failure =>
            {
                Some(Reason::ConnectFailure)
            }
            UpstreamError::Protocol { reset: true, .. } if on.reset => Some(Reason::Reset),
            UpstreamError::Timeout { .. } if on.timeout => Some(Reason::Timeout),
            _ => None,
        },
        // Refused by the limiter: another try would only add load.
        Err(_) => None,
    }
}

/// Full jitter between `low` and the exponential step for `retry` (1, 2, …), capped.
fn backoff(policy: &RetryConfig, retry: u32) -> Duration {
    let (low, high) = policy.backoff;
    let step = low
        .saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1).min(16))
                .unwrap_or(u32::MAX),
        )
        .min(high);
    if step <= low {
        return low;
    }
    let span = u64::try_from((step - low).as_micros()).unwrap_or(u64::MAX);
    low + Duration::from_micros(fastrand::u64(0..=span))
}

impl Upstream {
    /// Like [`Upstream::exchange`], with retries by `policy`, all within `timeout`.
    /// `build` makes each try's request for its endpoint.
    pub async fn exchange_retrying<E>(
        self: &Arc<Self>,
        policy: &RetryConfig,
        wait: impl Into<Wait>,
        mut build: impl FnMut(&Endpoint) -> Result<Request<UpstreamBody>, E>,
    ) -> Result<(Response<ReceivedBody>, Exchange), ExchangeError<E>> {
        self.budget.deposit();
        let wait = wait.into();
        let mut deadline = tokio::time::Instant::now() + wait.timeout;
        if let Some(callers) = wait.deadline {
            deadline = deadline.min(callers);
        }
        let mut tried = Vec::with_capacity(policy.attempts as usize);
        let mut tries = 1;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let per_try = policy
                .per_try_timeout
                .map_or(remaining, |t| t.min(remaining));
            let this_try = Wait {
                timeout: per_try,
                deadline: wait.deadline,
            };
            let (mut result, endpoint) = self.attempt(this_try, &mut tried, Each(&mut build)).await;
            if let Ok((_, exchange)) = &mut result {
                exchange.retries = tries - 1;
            }
            let Some(reason) = reason(policy, &result) else {
                return result;
            };
            if tries >= policy.attempts {
                return result;
            }
            if !self.budget.withdraw(policy.budget_percent) {
                self.metrics.retry_budget_exhausted.inc();
                tracing::debug!(upstream = %self.name, "retry budget exhausted; not retrying");
                return result;
            }
            let pause = backoff(policy, tries);
            if tokio::time::Instant::now() + pause >= deadline {
                return result;
            }
            self.metrics.retries[reason as usize].inc();
            tracing::debug!(upstream = %self.name, ?reason, try_number = tries + 1, "retrying");
            tried.extend(endpoint);
            // The failed try's response (and permit) go before the pause.
            drop(result);
            tokio::time::sleep(pause).await;
            tries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_share_of_requests_and_a_minimum() {
        let budget = RetryBudget::default();
        for _ in 0..10 {
            assert!(budget.withdraw(20), "the minimum allows a few retries");
        }
        assert!(!budget.withdraw(20));
        for _ in 0..100 {
            budget.deposit();
        }
        // 20% of 100 requests: 20 retries in all, 10 already spent.
        let granted = (0..40).filter(|_| budget.withdraw(20)).count();
        assert_eq!(granted, 10);
    }
}
