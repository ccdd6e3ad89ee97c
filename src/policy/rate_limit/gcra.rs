//! The generic cell rate algorithm (GCRA), the arithmetic every rate-limit store
//! shares: one number per key, the *theoretical arrival time* (TAT), instead of a
//! counter per window, so there is no double burst at a window's edge.
//!
//! A rate of `count` per `period` admits one request every `interval = period / count`
//! on average; `burst` requests may arrive at once. A request at `now` is admitted when
//! `max(tat, now) - now <= interval * (burst - 1)`, and then moves the key's TAT one
//! interval on. A key whose TAT has passed is the same as a key never seen (a full
//! bucket), which is what lets a store forget it for free.
//!
//! Times are nanoseconds on the store's clock (the process's monotonic clock for the
//! local store, the Redis server's clock for a shared one). The Redis store runs the
//! same arithmetic in its Lua script; the two are tested against each other.

use std::time::Duration;

/// A rate and its burst, as compiled from `rate: 100/s, burst: 200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// The time one request "costs": the rate's period divided by its count, ≥ 1 ns.
    pub interval_nanos: u64,
    /// How many requests may arrive at once, ≥ 1.
    pub burst: u32,
    /// The rate's count and period as written, for the `RateLimit-Policy` header.
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// `count` requests per `period`, `burst` at once (at least 1). `None` when the rate
    /// is zero or its interval would not fit in nanoseconds.
    pub fn new(count: u32, period: Duration, burst: u32) -> Option<Rate> {
        if count == 0 || period.is_zero() {
            return None;
        }
        let period_nanos = u64::try_from(period.as_nanos()).ok()?;
        Some(Rate {
            interval_nanos: (period_nanos / u64::from(count)).max(1),
            burst: burst.max(1),
            count,
            period,
        })
    }

    /// How far ahead of `now` a key's TAT may be and still admit a request:
    /// `interval * (burst - 1)`.
    pub fn tolerance_nanos(&self) -> u64 {
        self.interval_nanos
            .saturating_mul(u64::from(self.burst.saturating_sub(1)))
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests the key may still make at once after this one.
    pub remaining: u32,
    /// When limited: how long until one request would be admitted. Zero when allowed.
    pub retry_after: Duration,
    /// How long until the key's bucket is full again (its TAT passes).
    pub reset: Duration,
}

/// The decision for a request at `now` to a key whose TAT is `tat` (`None`: never
/// seen or forgotten), and the key's new TAT (unchanged when limited).
pub fn decide(tat: Option<u64>, now: u64, rate: &Rate) -> (Decision, u64) {
    let tat = tat.map_or(now, |tat| tat.max(now));
    let tolerance = rate.tolerance_nanos();
    let ahead = tat - now;
    if ahead > tolerance {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_nanos(ahead - tolerance),
            reset: Duration::from_nanos(ahead),
        };
        return (decision, tat);
    }
    let new_tat = tat.saturating_add(rate.interval_nanos);
    let used = new_tat - now;
    let capacity = tolerance.saturating_add(rate.interval_nanos);
    let remaining = (capacity - used.min(capacity)) / rate.interval_nanos;
    let decision = Decision {
        allowed: true,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        retry_after: Duration::ZERO,
        reset: Duration::from_nanos(used),
    };
    (decision, new_tat)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn rate(count: u32, period_ms: u64, burst: u32) -> Rate {
        Rate::new(count, Duration::from_millis(period_ms), burst).expect("a rate")
    }

    /// Runs `times` (ms) through one key and returns which were admitted.
    fn admitted(rate: &Rate, times: &[u64]) -> Vec<bool> {
        let mut tat = None;
        times
            .iter()
            .map(|&t| {
                let (decision, new_tat) = decide(tat, t * MS, rate);
                tat = Some(new_tat);
                decision.allowed
            })
            .collect()
    }

    #[test]
    fn a_burst_is_admitted_at_once_then_one_per_interval() {
        // 10/s, burst 3: three at t=0, then one every 100 ms.
        let r = rate(10, 1000, 3);
        assert_eq!(
            admitted(&r, &[0, 0, 0, 0, 50, 100, 150, 200, 200]),
            [true, true, true, false, false, true, false, true, false]
        );
    }

    #[test]
    fn no_double_burst_at_a_window_edge() {
        // A fixed window of 1 s would admit 5 at 999 ms and 5 more at 1000 ms. GCRA
        // admits the burst once, then the rate.
        let r = rate(5, 1000, 5);
        let times = [999, 999, 999, 999, 999, 1000, 1000, 1000, 1000, 1000];
        let count = admitted(&r, &times).iter().filter(|a| **a).count();
        assert_eq!(count, 5);
    }

    #[test]
    fn remaining_retry_after_and_reset_are_exact() {
        let r = rate(10, 1000, 3); // interval 100 ms, tolerance 200 ms
        let (first, tat) = decide(None, 0, &r);
        assert_eq!(
            (first.allowed, first.remaining, first.reset),
            (true, 2, Duration::from_millis(100))
        );
        let (_, tat) = decide(Some(tat), 0, &r);
        let (third, tat) = decide(Some(tat), 0, &r);
        assert_eq!(
            (third.remaining, third.reset),
            (0, Duration::from_millis(300))
        );
        let (limited, unchanged) = decide(Some(tat), 30 * MS, &r);
        assert!(!limited.allowed);
        assert_eq!(unchanged, tat, "a refusal does not move the TAT");
        // TAT 300 ms, tolerance 200 ms: the next request fits at 100 ms.
        assert_eq!(limited.retry_after, Duration::from_millis(70));
        assert_eq!(limited.reset, Duration::from_millis(270));
        let (later, _) = decide(Some(tat), 100 * MS, &r);
        assert!(later.allowed, "admitted exactly when Retry-After said");
    }

    #[test]
    fn a_passed_tat_is_a_full_bucket() {
        let r = rate(10, 1000, 3);
        let (old, _) = decide(Some(5 * MS), 10_000 * MS, &r);
        let (fresh, _) = decide(None, 10_000 * MS, &r);
        assert_eq!(old, fresh);
    }

    #[test]
    fn degenerate_rates_are_refused_or_clamped() {
        assert!(Rate::new(0, Duration::from_secs(1), 1).is_none());
        assert!(Rate::new(1, Duration::ZERO, 1).is_none());
        let fast = Rate::new(u32::MAX, Duration::from_nanos(1), 0).expect("clamped");
        assert_eq!((fast.interval_nanos, fast.burst), (1, 1));
        let slow = Rate::new(1, Duration::from_secs(86_400 * 365), u32::MAX).expect("a year");
        let (decision, _) = decide(Some(u64::MAX - 1), u64::MAX - 1, &slow);
        assert!(decision.allowed, "no overflow near the end of the clock");
    }
}
