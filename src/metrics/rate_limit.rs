//! `portcullis_rate_limit_*`: what the rate limits of routes decided, and the keys the
//! local stores hold and evict. Labels are names from the configuration (route, policy,
//! the limit's `name` or index), never values from requests.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{Metrics, Registrar};

/// The rate-limit families, registered once per process.
#[derive(Clone)]
pub(super) struct RateLimitFamilies {
    decisions: IntCounterVec,
    keys: IntGaugeVec,
    evictions: IntCounterVec,
}

impl RateLimitFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        RateLimitFamilies {
            decisions: r.counter(
                "portcullis_rate_limit_decisions_total",
                "Rate-limit decisions, by route, policy, limit (its name or index) and decision: allowed, limited (refused with 429), shadow_limited (over a shadow limit, let through), store_error (the store could not decide).",
                &["route", "policy", "limit", "decision"],
            ),
            keys: r.gauge(
                "portcullis_rate_limit_keys",
                "Keys a limit's local store holds now (at most its max_keys), by policy and limit.",
                &["policy", "limit"],
            ),
            evictions: r.counter(
                "portcullis_rate_limit_evictions_total",
                "Live keys a limit's local store evicted to make room for new ones (its max_keys was reached), by policy and limit.",
                &["policy", "limit"],
            ),
        }
    }
}

/// What a rate limit decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitDecision {
    Allowed,
    Limited,
    ShadowLimited,
    StoreError,
}

impl RateLimitDecision {
    pub const ALL: [RateLimitDecision; 4] = [
        RateLimitDecision::Allowed,
        RateLimitDecision::Limited,
        RateLimitDecision::ShadowLimited,
        RateLimitDecision::StoreError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RateLimitDecision::Allowed => "allowed",
            RateLimitDecision::Limited => "limited",
            RateLimitDecision::ShadowLimited => "shadow_limited",
            RateLimitDecision::StoreError => "store_error",
        }
    }
}

/// One limit's decision counters on one route, indexed like [`RateLimitDecision::ALL`].
#[derive(Debug, Clone)]
pub struct RateLimitCounters([IntCounter; 4]);

impl RateLimitCounters {
    pub fn inc(&self, decision: RateLimitDecision) {
        self.0[decision as usize].inc();
    }
}

impl Metrics {
    /// The decision counters of limit `limit` of `policy` on `route`.
    pub fn rate_limit_decisions(
        &self,
        route: &str,
        policy: &str,
        limit: &str,
    ) -> RateLimitCounters {
        RateLimitCounters(RateLimitDecision::ALL.map(|decision| {
            self.rate_limit
                .decisions
                .with_label_values(&[route, policy, limit, decision.label()])
        }))
    }

    /// The key gauge and eviction counter of a limit's local store.
    pub fn rate_limit_local_store(&self, policy: &str, limit: &str) -> (IntGauge, IntCounter) {
        (
            self.rate_limit.keys.with_label_values(&[policy, limit]),
            self.rate_limit
                .evictions
                .with_label_values(&[policy, limit]),
        )
    }
}
