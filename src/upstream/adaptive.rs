//! Adaptive concurrency: the limit follows the upstream's latency, in the manner of
//! TCP Vegas (and Netflix's concurrency-limits). With `rtt_noload` the lowest latency
//! seen, a window's average latency `rtt` estimates how many requests are queueing
//! upstream: `limit × (1 − rtt_noload / rtt)`. Few queued and the limit in use: grow
//! by a step; many queued: shrink by a step; a timeout or an overload answer: cut by a
//! tenth. The limit settles where latency starts to rise (the upstream's knee), before
//! the upstream falls over, and no request is failed on purpose to probe it.

use std::time::Duration;

use crate::config::AdaptiveLimit;

/// One finished request, as the controller sees it.
#[derive(Debug, Clone, Copy)]
pub enum Sample {
    /// Response headers after this long.
    Latency(Duration),
    /// A timeout, or the upstream said it is overloaded (503, 429).
    Dropped,
}

/// The controller's state for one upstream.
#[derive(Debug)]
pub struct Adaptive {
    bounds: AdaptiveLimit,
    limit: f64,
    rtt_noload: Option<Duration>,
    window_sum: Duration,
    window_count: u32,
    window_max_in_flight: usize,
}

impl Adaptive {
    pub fn new(bounds: AdaptiveLimit, initial: usize) -> Self {
        Adaptive {
            bounds,
            limit: initial.clamp(bounds.min, bounds.max) as f64,
            rtt_noload: None,
            window_sum: Duration::ZERO,
            window_count: 0,
            window_max_in_flight: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.round() as usize
    }

    /// New bounds (after a reload); returns the limit, clamped into them.
    pub fn rebound(&mut self, bounds: AdaptiveLimit) -> usize {
        self.bounds = bounds;
        self.limit = self.limit.clamp(bounds.min as f64, bounds.max as f64);
        self.limit()
    }

    /// Records a sample; returns the new limit when it changed.
    pub fn sample(&mut self, sample: Sample, in_flight: usize) -> Option<usize> {
        let before = self.limit();
        match sample {
            Sample::Dropped => {
                self.limit = (self.limit * 0.9).max(self.bounds.min as f64);
            }
            Sample::Latency(rtt) => {
                self.rtt_noload = Some(self.rtt_noload.map_or(rtt, |noload| noload.min(rtt)));
                self.window_sum += rtt;
                self.window_count += 1;
                self.window_max_in_flight = self.window_max_in_flight.max(in_flight);
                // A window is about one round of the limit's worth of requests.
                if f64::from(self.window_count) >= (self.limit / 2.0).max(10.0) {
                    self.end_window();
                }
            }
        }
        let after = self.limit();
        (after != before).then_some(after)
    }

    fn end_window(&mut self) {
        let rtt = self.window_sum / self.window_count.max(1);
        let used = self.window_max_in_flight as f64 >= self.limit / 2.0;
        self.window_sum = Duration::ZERO;
        self.window_count = 0;
        self.window_max_in_flight = 0;
        let Some(noload) = self.rtt_noload else {
            return;
        };
        // At the minimum nothing queues: what is measured there is the no-load latency
        // (an upstream that became slower for good is re-learned here).
        if self.limit <= self.bounds.min as f64 {
            self.rtt_noload = Some(rtt);
        }
        let queued =
            self.limit * (1.0 - noload.as_secs_f64() / rtt.as_secs_f64().max(f64::MIN_POSITIVE));
        let step = self.limit.log10().max(1.0);
        let (alpha, beta) = (3.0 * step, 6.0 * step);
        if queued > beta {
            self.limit -= step;
        } else if queued < alpha && used {
            self.limit += step;
        }
        self.limit = self
            .limit
            .clamp(self.bounds.min as f64, self.bounds.max as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers in 10 ms up to 16 concurrent requests and queues the
    /// rest: latency grows in proportion beyond the knee.
    fn latency(concurrency: usize) -> Duration {
        const KNEE: usize = 16;
        Duration::from_micros(10_000 * concurrency.max(KNEE) as u64 / KNEE as u64)
    }

    /// Clients always have more requests than the limit allows; requests that take
    /// longer than `client_timeout` count as dropped.
    fn settle(initial: usize, client_timeout: Duration) -> usize {
        let mut adaptive = Adaptive::new(AdaptiveLimit { min: 4, max: 512 }, initial);
        for _ in 0..20_000 {
            let concurrency = adaptive.limit();
            let rtt = latency(concurrency);
            let sample = if rtt > client_timeout {
                Sample::Dropped
            } else {
                Sample::Latency(rtt)
            };
            adaptive.sample(sample, concurrency);
        }
        adaptive.limit()
    }

    #[test]
    fn the_limit_grows_to_the_upstream_s_knee_and_stays_there() {
        for initial in [4, 8, 12] {
            let settled = settle(initial, Duration::from_secs(10));
            assert!(
                (14..=26).contains(&settled),
                "from {initial}: settled at {settled}, knee 16"
            );
        }
    }

    #[test]
    fn a_limit_far_above_the_knee_comes_down_when_requests_time_out() {
        // Started at 200 (latency 125 ms), with requests timing out after 50 ms.
        let settled = settle(200, Duration::from_millis(50));
        assert!(settled <= 80, "settled at {settled}");
    }

    #[test]
    fn drops_cut_the_limit_and_bounds_hold() {
        let mut adaptive = Adaptive::new(AdaptiveLimit { min: 8, max: 100 }, 100);
        for _ in 0..100 {
            adaptive.sample(Sample::Dropped, 100);
        }
        assert_eq!(adaptive.limit(), 8);
        assert_eq!(adaptive.rebound(AdaptiveLimit { min: 20, max: 30 }), 20);
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let mut adaptive = Adaptive::new(AdaptiveLimit { min: 4, max: 512 }, 64);
        for _ in 0..10_000 {
            adaptive.sample(Sample::Latency(Duration::from_millis(10)), 3);
        }
        assert_eq!(adaptive.limit(), 64);
    }
}
