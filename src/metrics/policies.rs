//! `portcullis_policy_rejections_total`: requests a route's policies refused, by route,
//! policy and reason.

use prometheus::{IntCounter, IntCounterVec};

use super::{Metrics, Registrar};

/// The policy families, registered once per process.
#[derive(Clone)]
pub(super) struct PolicyFamilies {
    rejections: IntCounterVec,
}

impl PolicyFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        PolicyFamilies {
            rejections: r.counter(
                "portcullis_policy_rejections_total",
                "Requests refused by a route's policy, by route, policy and reason (ip_denied: the client's address is denied or not allowed).",
                &["route", "policy", "reason"],
            ),
        }
    }
}

impl Metrics {
    /// The counter of requests that `policy` refuses on `route` for `reason`.
    pub fn policy_rejections(&self, route: &str, policy: &str, reason: &str) -> IntCounter {
        self.policies
            .rejections
            .with_label_values(&[route, policy, reason])
    }
}
