//! The per-upstream bulkhead: at most `max_in_flight` requests at once, at most
//! `max_queue` waiting for a turn, each for at most `queue_timeout`. Everything beyond is
//! refused at once, so a slow upstream costs its own callers fast 503s and never holds
//! up requests to other upstreams.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::metrics::UpstreamMetrics;

/// Why a request was refused a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{in_flight} requests in flight and {queued} waiting (the queue is full)")]
    QueueFull { in_flight: usize, queued: usize },
    #[error("no permit became free within the queue timeout of {0:?}")]
    QueueTimeout(Duration),
}

/// A concurrency limit with a bounded wait queue.
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    max_in_flight: usize,
    max_queue: usize,
    queue_timeout: Duration,
    queued: AtomicUsize,
    metrics: UpstreamMetrics,
}

/// The right to have one request in flight; released when dropped.
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    in_flight: prometheus::IntGauge,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.dec();
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
        Limiter {
            semaphore: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_queue,
            queue_timeout,
            queued: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Waits for a permit, or says why none will come.
    pub async fn acquire(&self) -> Result<Permit, Rejection> {
        match self.semaphore.clone().try_acquire_owned() {
            Ok(permit) => return Ok(self.grant(permit)),
            Err(TryAcquireError::NoPermits) => {}
            Err(TryAcquireError::Closed) => return Err(self.queue_full()),
        }
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.max_queue).then_some(queued + 1)
            });
        if joined.is_err() {
            self.metrics.rejected_queue_full.inc();
            return Err(self.queue_full());
        }
        self.metrics.queue_depth.inc();
        let _slot = QueueSlot { limiter: self };
        let waiting_since = Instant::now();
        let waited =
            tokio::time::timeout(self.queue_timeout, self.semaphore.clone().acquire_owned()).await;
        self.metrics
            .queue_wait
            .observe(waiting_since.elapsed().as_secs_f64());
        match waited {
            Ok(Ok(permit)) => Ok(self.grant(permit)),
            Ok(Err(_closed)) => Err(self.queue_full()),
            Err(_elapsed) => {
                self.metrics.rejected_queue_timeout.inc();
                Err(Rejection::QueueTimeout(self.queue_timeout))
            }
        }
    }

    fn grant(&self, permit: OwnedSemaphorePermit) -> Permit {
        self.metrics.in_flight.inc();
        Permit {
            _permit: permit,
            in_flight: self.metrics.in_flight.clone(),
        }
    }

    fn queue_full(&self) -> Rejection {
        Rejection::QueueFull {
            in_flight: self.max_in_flight
                - self.semaphore.available_permits().min(self.max_in_flight),
            queued: self.queued.load(Ordering::Acquire),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.semaphore.available_permits().min(self.max_in_flight)
    }
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
