//! The edge policies' families: `portcullis_cors_requests_total` (cross-origin
//! requests a route's `cors` policy saw, by result) and
//! `portcullis_header_transform_skipped_total` (header values a transform could not
//! build for a request and left out).

use prometheus::{IntCounter, IntCounterVec};

use super::{Metrics, Registrar};

/// The results `portcullis_cors_requests_total` counts.
pub const CORS_RESULTS: [&str; 4] = [
    "preflight",
    "preflight_refused",
    "allowed",
    "origin_refused",
];

/// The edge policy families, registered once per process.
#[derive(Clone)]
pub(super) struct EdgeFamilies {
    cors: IntCounterVec,
    transform_skipped: IntCounterVec,
}

impl EdgeFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        EdgeFamilies {
            cors: r.counter(
                "portcullis_cors_requests_total",
                "Requests with an Origin on routes with a cors policy, by route, policy and result (preflight: answered with the allowing headers; preflight_refused: answered without them; allowed: forwarded, its answer readable; origin_refused: forwarded, its answer not readable by the page).",
                &["route", "policy", "result"],
            ),
            transform_skipped: r.counter(
                "portcullis_header_transform_skipped_total",
                "Header fields a transform left out because its placeholders did not make a valid value for the request, by route and policy.",
                &["route", "policy"],
            ),
        }
    }
}

/// A `cors` policy's counters on one route, by result.
#[derive(Debug, Clone)]
pub struct CorsCounters {
    pub preflight: IntCounter,
    pub preflight_refused: IntCounter,
    pub allowed: IntCounter,
    pub origin_refused: IntCounter,
}

impl Metrics {
    /// The counters of `policy`'s CORS results on `route`.
    pub fn cors_requests(&self, route: &str, policy: &str) -> CorsCounters {
        let counter = |result: &str| self.edge.cors.with_label_values(&[route, policy, result]);
        CorsCounters {
            preflight: counter(CORS_RESULTS[0]),
            preflight_refused: counter(CORS_RESULTS[1]),
            allowed: counter(CORS_RESULTS[2]),
            origin_refused: counter(CORS_RESULTS[3]),
        }
    }

    /// The counter of header values `policy`'s transforms left out on `route`.
    pub fn header_transform_skipped(&self, route: &str, policy: &str) -> IntCounter {
        self.edge
            .transform_skipped
            .with_label_values(&[route, policy])
    }
}
