//! Hedged requests: when a try has not answered after the route's `hedge.after` (a
//! fixed delay, or a percentile of the route's observed latency), another try goes to
//! another endpoint; the first response to arrive wins, and the other tries are
//! cancelled at once (their sends dropped, their permits released, their connections
//! closed, each counted as `cancelled`). Up to `hedge.max` hedges, each drawing on the
//! upstream's retry budget like a retry, so that a slow upstream never gets double its
//! load. A try that fails without a response (a refused connection, after its own
//! redispatch) does not end the request while another try is still under way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{Request, Response};
use prometheus::Histogram;

use super::exchange::{Each, Exchange, ExchangeError, Wait};
use super::health::now_ms;
use super::UpstreamBody;
use super::{Endpoint, ReceivedBody, Upstream};
use crate::config::{HedgeConfig, HedgeDelay};

/// Indexes into `UpstreamMetrics::hedges`.
const HEDGE_WON: usize = 0;
const HEDGE_LOST: usize = 1;
const HEDGE_BUDGET_EXHAUSTED: usize = 2;

/// Observed latencies a percentile needs before hedges are sent by it.
const PERCENTILE_MIN_SAMPLES: u64 = 20;
/// How often a percentile delay is computed again from the route's histogram.
const PERCENTILE_REFRESH_MS: u64 = 1_000;

/// A route's hedging: its configuration and, for `after: pNN`, the delay last computed.
pub struct Hedge {
    pub config: HedgeConfig,
    /// The route's latency histogram (for a percentile delay).
    latency: Histogram,
    /// The percentile delay in microseconds (`u64::MAX`: not enough samples yet), and
    /// when it was computed (`now_ms`).
    estimate_us: AtomicU64,
    estimated_at: AtomicU64,
}

impl Hedge {
    pub fn new(config: HedgeConfig, latency: Histogram) -> Hedge {
        Hedge {
            config,
            latency,
            estimate_us: AtomicU64::new(u64::MAX),
            estimated_at: AtomicU64::new(0),
        }
    }

    /// The delay before a hedge now; `None` while a percentile has too few samples.
    pub fn delay(&self) -> Option<Duration> {
        let percentile = match self.config.after {
            HedgeDelay::Fixed(delay) => return Some(delay),
            HedgeDelay::Percentile(p) => p,
        };
        let now = now_ms();
        let at = self.estimated_at.load(Ordering::Relaxed);
        if at == 0 || now.saturating_sub(at) >= PERCENTILE_REFRESH_MS {
            // Racing workers may both compute it: the same value, no harm.
            self.estimated_at.store(now.max(1), Ordering::Relaxed);
            let estimate = percentile_of(&self.latency, percentile).map_or(u64::MAX, |d| {
                u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
            });
            self.estimate_us.store(estimate, Ordering::Relaxed);
        }
        match self.estimate_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// The upper bound of the histogram bucket where `percentile` of the samples fall;
/// `None` with too few samples, or when it is beyond the last finite bucket.
fn percentile_of(histogram: &Histogram, percentile: f64) -> Option<Duration> {
    use prometheus::core::Collector;
    let families = histogram.collect();
    let metric = families.first()?.get_metric().first()?;
    let data = metric.get_histogram();
    let total = data.get_sample_count();
    if total < PERCENTILE_MIN_SAMPLES {
        return None;
    }
    let wanted = (total as f64 * percentile).ceil() as u64;
    data.get_bucket()
        .iter()
        .find(|bucket| bucket.cumulative_count() >= wanted)
        .map(|bucket| bucket.upper_bound())
        .filter(|bound| bound.is_finite() && *bound > 0.0)
        .map(Duration::from_secs_f64)
}

impl Upstream {
    /// Like [`Upstream::exchange`], with up to `hedge.max` hedges after `delay` each.
    /// `build` makes each try's request for its endpoint (it is called once per try).
    pub async fn exchange_hedged<E>(
        self: &Arc<Self>,
        hedge: &HedgeConfig,
        delay: Duration,
        wait: impl Into<Wait>,
        build: impl FnMut(&Endpoint) -> Result<Request<UpstreamBody>, E>,
    ) -> Result<(Response<ReceivedBody>, Exchange), ExchangeError<E>> {
        self.budget.deposit();
        let wait = wait.into();
        // Shared by the tries, which run in this one task: the locks are never contended
        // (a std mutex rather than a RefCell keeps the request's future Send).
        let build = Mutex::new(build);
        // The endpoints the tries went to: a hedge prefers one no try has used.
        let used: Mutex<Vec<usize>> = Mutex::new(Vec::new());
        let index_of = |endpoint: &Endpoint| {
            self.endpoints()
                .iter()
                .position(|candidate| std::ptr::eq(candidate, endpoint))
        };
        let try_number = |number: usize| {
            let build = &build;
            let used = &used;
            async move {
                let mut tried = used.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let mut make = |endpoint: &Endpoint| {
                    if let Some(index) = index_of(endpoint) {
                        used.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(index);
                    }
                    (build.lock().unwrap_or_else(PoisonError::into_inner))(endpoint)
                };
                let (result, _) = self.attempt(wait, &mut tried, Each(&mut make)).await;
                (number, result)
            }
        };
        let mut tries = FuturesUnordered::new();
        tries.push(try_number(0));
        let mut hedges_sent = 0;
        let mut last_failure = None;
        let mut next_hedge = Some(tokio::time::Instant::now() + delay);
        loop {
            let hedge_due = async {
                match next_hedge {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                finished = tries.next() => match finished {
                    Some((number, Ok(exchanged))) => {
                        // Every hedge sent either won (its response is the answer) or
                        // lost (cancelled, or failed first).
                        let won = usize::from(number > 0);
                        self.metrics.hedges[HEDGE_WON].inc_by(won as u64);
                        self.metrics.hedges[HEDGE_LOST].inc_by((hedges_sent - won) as u64);
                        return Ok(exchanged);
                    }
                    Some((_, Err(error))) => {
                        last_failure = Some(error);
                        if tries.is_empty() && next_hedge.is_none() {
                            break;
                        }
                        if tries.is_empty() {
                            // Nothing under way: hedge now rather than wait.
                            next_hedge = Some(tokio::time::Instant::now());
                        }
                    }
                    None => break,
                },
                () = hedge_due => {
                    next_hedge = None;
                    if hedges_sent < hedge.max as usize {
                        if self.budget.withdraw(hedge.budget_percent) {
                            hedges_sent += 1;
                            tries.push(try_number(hedges_sent));
                            if hedges_sent < hedge.max as usize {
                                next_hedge = Some(tokio::time::Instant::now() + delay);
                            }
                        } else {
                            self.metrics.hedges[HEDGE_BUDGET_EXHAUSTED].inc();
                            self.metrics.retry_budget_exhausted.inc();
                        }
                    }
                    if tries.is_empty() {
                        break;
                    }
                }
            }
        }
        self.metrics.hedges[HEDGE_LOST].inc_by(hedges_sent as u64);
        Err(last_failure.unwrap_or(ExchangeError::Upstream(
            super::exchange::UpstreamError::NoHealthyEndpoint,
        )))
    }
}
