//! The per-upstream bulkhead: at most `max_in_flight` requests at once, at most
//! `max_queue` waiting for a turn, each for at most `queue_timeout`. Everything beyond is
//! refused at once, so a slow upstream costs its own callers fast 503s and never holds
//! up requests to other upstreams.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, TryAcquireError};

use super::adaptive::{Adaptive, Sample};
use crate::config::AdaptiveLimit;
use crate::metrics::UpstreamMetrics;

/// Why a request was refused a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{in_flight} requests in flight and {queued} waiting (the queue is full)")]
    QueueFull { in_flight: usize, queued: usize },
    #[error("no permit became free within the queue timeout of {0:?}")]
    QueueTimeout(Duration),
}

/// A concurrency limit with a bounded wait queue. It outlives configuration reloads
/// (see [`Limiter::reconfigure`]), so requests in flight stay counted when the limits
/// change.
pub struct Limiter {
    /// Free permits. A request's permit is forgotten when taken and added back when
    /// its [`Permit`] drops: no `Arc` of the semaphore is cloned per request, which
    /// matters when every worker thread takes permits from the same upstream.
    semaphore: Arc<Semaphore>,
    max_in_flight: AtomicUsize,
    max_queue: AtomicUsize,
    queue_timeout_nanos: AtomicU64,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    metrics: UpstreamMetrics,
    /// Present when the limit follows the upstream's latency. A std mutex: held only
    /// to update the controller, never across `.await`.
    adaptive: std::sync::Mutex<Option<Adaptive>>,
    /// Whether `adaptive` holds a controller: lets [`Limiter::sample`] skip the lock
    /// for a fixed limit, so worker threads do not contend on it per request.
    adaptive_enabled: AtomicBool,
}

/// The right to have one request in flight; released when dropped.
pub struct Permit {
    limiter: Arc<Limiter>,
    /// How long the request waited in the queue for it (zero when one was free).
    pub waited: Duration,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.limiter.metrics.in_flight.dec();
        self.limiter.semaphore.add_permits(1);
    }
}

/// A place in the wait queue, given up when dropped (also when the waiter is cancelled).
struct QueueSlot<'a> {
    limiter: &'a Limiter,
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.limiter.queued.fetch_sub(1, Ordering::AcqRel);
        self.limiter.metrics.queue_depth.dec();
    }
}

impl Limiter {
    pub fn new(
        max_in_flight: usize,
        max_queue: usize,
        queue_timeout: Duration,
        metrics: UpstreamMetrics,
    ) -> Self {
        metrics
            .concurrency_limit
            .set(i64::try_from(max_in_flight).unwrap_or(i64::MAX));
        Limiter {
            adaptive: std::sync::Mutex::new(None),
            adaptive_enabled: AtomicBool::new(false),
            semaphore: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight: AtomicUsize::new(max_in_flight),
            max_queue: AtomicUsize::new(max_queue),
            queue_timeout_nanos: AtomicU64::new(nanos(queue_timeout)),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Applies new limits to a live limiter. Requests in flight keep their permits and
    /// stay counted: growing adds permits at once; shrinking removes free permits at
    /// once and the rest as requests finish (new requests wait or are refused until
    /// in-flight work is below the new limit).
    pub fn reconfigure(&self, max_in_flight: usize, max_queue: usize, queue_timeout: Duration) {
        self.max_queue.store(max_queue, Ordering::Release);
        self.queue_timeout_nanos
            .store(nanos(queue_timeout), Ordering::Release);
        self.set_limit(max_in_flight);
    }

    /// Makes the limit adaptive within `bounds` (keeping an adaptive limit's current
    /// value when it already was one), or fixed with `None`.
    pub fn set_adaptive(&self, bounds: Option<AdaptiveLimit>) {
        let mut adaptive = self
            .adaptive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let limit = match (bounds, adaptive.as_mut()) {
            (None, _) => {
                *adaptive = None;
                self.adaptive_enabled.store(false, Ordering::Release);
                return;
            }
            (Some(bounds), Some(current)) => current.rebound(bounds),
            (Some(bounds), None) => {
                let controller = Adaptive::new(bounds, self.max_in_flight.load(Ordering::Acquire));
                let limit = controller.limit();
                *adaptive = Some(controller);
                self.adaptive_enabled.store(true, Ordering::Release);
                limit
            }
        };
        drop(adaptive);
        self.set_limit(limit);
    }

    /// Feeds one finished request to an adaptive limit (no-op for a fixed one).
    pub fn sample(&self, sample: Sample) {
        if !self.adaptive_enabled.load(Ordering::Acquire) {
            return;
        }
        let new_limit = {
            let mut adaptive = self
                .adaptive
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match adaptive.as_mut() {
                Some(controller) => controller.sample(sample, self.in_flight()),
                None => return,
            }
        };
        if let Some(limit) = new_limit {
            self.set_limit(limit);
        }
    }

    /// Changes the number of permits. Requests in flight keep theirs: growing adds
    /// permits at once; shrinking removes free permits at once and the rest as
    /// requests finish (new requests wait or are refused meanwhile).
    fn set_limit(&self, max_in_flight: usize) {
        self.metrics
            .concurrency_limit
            .set(i64::try_from(max_in_flight).unwrap_or(i64::MAX));
        let previous = self.max_in_flight.swap(max_in_flight, Ordering::AcqRel);
        if max_in_flight > previous {
            self.semaphore.add_permits(max_in_flight - previous);
        } else if max_in_flight < previous {
            let excess = previous - max_in_flight;
            let forgotten = self.semaphore.forget_permits(excess);
            if let Ok(rest) = u32::try_from(excess - forgotten) {
                if rest > 0 {
                    // Take the remaining permits as in-flight requests release them. The
                    // semaphore is fair, so later requests queue behind this until the
                    // new, lower limit holds.
                    let semaphore = self.semaphore.clone();
                    tokio::spawn(async move {
                        if let Ok(permits) = semaphore.acquire_many_owned(rest).await {
                            permits.forget();
                        }
                    });
                }
            }
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.max_in_flight.load(Ordering::Acquire)
    }

    /// Waits for a permit, or says why none will come.
    pub async fn acquire(self: &Arc<Self>) -> Result<Permit, Rejection> {
        match self.semaphore.try_acquire() {
            Ok(permit) => {
                permit.forget();
                return Ok(self.grant(Duration::ZERO));
            }
            Err(TryAcquireError::NoPermits) => {}
            Err(TryAcquireError::Closed) => return Err(self.queue_full()),
        }
        let max_queue = self.max_queue.load(Ordering::Acquire);
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < max_queue).then_some(queued + 1)
            });
        if joined.is_err() {
            self.metrics.rejected_queue_full.inc();
            return Err(self.queue_full());
        }
        self.metrics.queue_depth.inc();
        let _slot = QueueSlot { limiter: self };
        let queue_timeout = Duration::from_nanos(self.queue_timeout_nanos.load(Ordering::Acquire));
        let waiting_since = Instant::now();
        let acquired = tokio::time::timeout(queue_timeout, self.semaphore.acquire()).await;
        let waited = waiting_since.elapsed();
        self.metrics.queue_wait.observe(waited.as_secs_f64());
        match acquired {
            Ok(Ok(permit)) => {
                permit.forget();
                Ok(self.grant(waited))
            }
            Ok(Err(_closed)) => Err(self.queue_full()),
            Err(_elapsed) => {
                self.metrics.rejected_queue_timeout.inc();
                Err(Rejection::QueueTimeout(queue_timeout))
            }
        }
    }

    /// Counts a permit taken from the semaphore (and forgotten there) as in flight.
    fn grant(self: &Arc<Self>, waited: Duration) -> Permit {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.metrics.in_flight.inc();
        Permit {
            limiter: self.clone(),
            waited,
        }
    }

    fn queue_full(&self) -> Rejection {
        Rejection::QueueFull {
            in_flight: self.in_flight(),
            queued: self.queued.load(Ordering::Acquire),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests waiting for a permit now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Requests allowed to wait at once.
    pub fn max_queue(&self) -> usize {
        self.max_queue.load(Ordering::Acquire)
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn limiter(max_in_flight: usize, max_queue: usize) -> Limiter {
        Limiter::new(
            max_in_flight,
            max_queue,
            Duration::from_millis(100),
            Metrics::new().upstream("u"),
        )
    }

    #[test]
    fn samples_move_only_an_adaptive_limit() {
        let limiter = limiter(10, 0);
        limiter.sample(Sample::Dropped);
        assert_eq!(limiter.limit(), 10, "a fixed limit ignores samples");
        limiter.set_adaptive(Some(AdaptiveLimit { min: 1, max: 20 }));
        let adaptive_start = limiter.limit();
        limiter.sample(Sample::Dropped);
        let lowered = limiter.limit();
        assert!(lowered < adaptive_start, "{lowered} < {adaptive_start}");
        limiter.set_adaptive(None);
        limiter.sample(Sample::Dropped);
        assert_eq!(limiter.limit(), lowered, "fixed again: samples are ignored");
    }

    #[tokio::test(start_paused = true)]
    async fn queue_is_bounded_and_times_out() {
        let limiter = Arc::new(limiter(1, 1));
        let held = limiter.acquire().await.expect("first permit");
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert!(matches!(
            limiter.acquire().await,
            Err(Rejection::QueueFull {
                in_flight: 1,
                queued: 1
            })
        ));
        // Paused time: the waiter's timeout fires without sleeping.
        assert!(matches!(
            waiter.await.expect("joins"),
            Err(Rejection::QueueTimeout(_))
        ));
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
        assert!(limiter.acquire().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn reconfiguring_keeps_in_flight_requests_counted() {
        let limiter = Arc::new(limiter(2, 0));
        let first = limiter.acquire().await.expect("permit");
        let second = limiter.acquire().await.expect("permit");
        // Grow to 3: one more fits beside the two in flight.
        limiter.reconfigure(3, 0, Duration::from_millis(100));
        let third = limiter.acquire().await.expect("a third permit");
        assert!(limiter.acquire().await.is_err(), "but not a fourth");
        // Shrink to 1 with 3 in flight: nothing new until two of them have finished.
        limiter.reconfigure(1, 0, Duration::from_millis(100));
        drop(first);
        tokio::task::yield_now().await;
        assert!(limiter.acquire().await.is_err(), "2 in flight > 1");
        drop(second);
        tokio::task::yield_now().await;
        assert!(limiter.acquire().await.is_err(), "1 in flight = 1");
        drop(third);
        tokio::task::yield_now().await;
        let only = limiter.acquire().await.expect("room for exactly one");
        assert!(limiter.acquire().await.is_err());
        assert_eq!(limiter.in_flight(), 1);
        drop(only);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_permit_goes_to_the_waiter() {
        let limiter = Arc::new(limiter(1, 1));
        let held = limiter.acquire().await.expect("first permit");
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.expect("joins").is_ok());
    }
}
