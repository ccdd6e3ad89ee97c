//! `portcullis_auth_*`: what the auth policies of routes decided, and their caches of
//! verified credentials. Labels are names from the configuration (route, policy, the
//! method as written), never values from requests.

use prometheus::{IntCounter, IntCounterVec};

use super::{Metrics, Registrar};

/// The auth families, registered once per process.
#[derive(Clone)]
pub(super) struct AuthFamilies {
    decisions: IntCounterVec,
    cache: IntCounterVec,
}

impl AuthFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        AuthFamilies {
            decisions: r.counter(
                "portcullis_auth_decisions_total",
                "Auth policy decisions, by route, policy, method (api_key, basic, forward, any_of, all_of) and result: allowed, missing (no credentials, 401), invalid (wrong credentials, 401), forbidden (a consumer not admitted here, 403), denied (the forward-auth service refused; its answer relayed), unavailable (could not be decided in time, 503).",
                &["route", "policy", "method", "result"],
            ),
            cache: r.counter(
                "portcullis_auth_cache_lookups_total",
                "Lookups in an auth policy's cache of verified credentials (basic) or auth-service answers (forward), by policy, method and result (hit, miss).",
                &["policy", "method", "result"],
            ),
        }
    }
}

/// What an auth policy decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Allowed,
    Missing,
    Invalid,
    Forbidden,
    Denied,
    Unavailable,
}

impl AuthResult {
    pub const ALL: [AuthResult; 6] = [
        AuthResult::Allowed,
        AuthResult::Missing,
        AuthResult::Invalid,
        AuthResult::Forbidden,
        AuthResult::Denied,
        AuthResult::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AuthResult::Allowed => "allowed",
            AuthResult::Missing => "missing",
            AuthResult::Invalid => "invalid",
            AuthResult::Forbidden => "forbidden",
            AuthResult::Denied => "denied",
            AuthResult::Unavailable => "unavailable",
        }
    }
}

/// One auth policy's decision counters on one route, indexed like [`AuthResult::ALL`].
#[derive(Debug, Clone)]
pub struct AuthCounters([IntCounter; 6]);

impl AuthCounters {
    pub fn inc(&self, result: AuthResult) {
        self.0[result as usize].inc();
    }
}

/// A cache's hit and miss counters.
#[derive(Debug, Clone)]
pub struct CacheCounters {
    pub hit: IntCounter,
    pub miss: IntCounter,
}

impl Metrics {
    /// The decision counters of `policy`'s auth (method `method`) on `route`.
    pub fn auth_decisions(&self, route: &str, policy: &str, method: &str) -> AuthCounters {
        AuthCounters(AuthResult::ALL.map(|result| {
            self.auth
                .decisions
                .with_label_values(&[route, policy, method, result.label()])
        }))
    }

    /// The lookup counters of the cache of `policy`'s `method`.
    pub fn auth_cache(&self, policy: &str, method: &str) -> CacheCounters {
        let counter = |result: &str| self.auth.cache.with_label_values(&[policy, method, result]);
        CacheCounters {
            hit: counter("hit"),
            miss: counter("miss"),
        }
    }
}
