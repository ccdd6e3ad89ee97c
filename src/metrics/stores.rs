//! The shared rate-limit stores' families: `portcullis_rate_limit_store_errors_total`
//! (decisions the store could not make, by store and kind),
//! `portcullis_rate_limit_store_duration_seconds` (each decision's time, by store) and
//! `portcullis_rate_limit_store_connections` (connections up, by store). The `store`
//! label is a name from `rate_limit_stores`.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use prometheus::{IntGaugeVec, Opts};

use super::{Metrics, Registrar};

/// A store decision takes a round trip to Redis: finer buckets than requests, from 50 µs
/// to a second.
const STORE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Why a store could not decide; the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No answer within the store's `timeout`.
    Timeout,
    /// No connection, or it broke.
    Connection,
    /// Redis refused the script or answered something else than a decision.
    Script,
}

impl StoreErrorKind {
    pub const ALL: [StoreErrorKind; 3] = [
        StoreErrorKind::Timeout,
        StoreErrorKind::Connection,
        StoreErrorKind::Script,
    ];

    /// Its place in [`StoreErrorKind::ALL`] (and in a store's handles).
    fn index(self) -> usize {
        match self {
            StoreErrorKind::Timeout => 0,
            StoreErrorKind::Connection => 1,
            StoreErrorKind::Script => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Connection => "connection",
            StoreErrorKind::Script => "script",
        }
    }
}

/// The store families, registered once per process.
#[derive(Clone)]
pub(super) struct StoreFamilies {
    errors: IntCounterVec,
    duration: HistogramVec,
    connections: IntGaugeVec,
}

impl StoreFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        StoreFamilies {
            errors: r.counter(
                "portcullis_rate_limit_store_errors_total",
                "Rate-limit decisions a shared store could not make, by store and kind (timeout: no answer within the store's timeout; connection: no connection or it broke; script: Redis refused the script or answered something unexpected).",
                &["store", "kind"],
            ),
            duration: r.register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "portcullis_rate_limit_store_duration_seconds",
                        "Time a shared rate-limit store took for one decision, failed ones included, by store.",
                    )
                    .buckets(STORE_BUCKETS.to_vec()),
                    &["store"],
                )
                .expect("valid histogram"),
            ),
            connections: r.register(
                IntGaugeVec::new(
                    Opts::new(
                        "portcullis_rate_limit_store_connections",
                        "Connections to a shared rate-limit store that are up, by store.",
                    ),
                    &["store"],
                )
                .expect("valid gauge"),
            ),
        }
    }
}

/// One store's handles, resolved when the store is built.
#[derive(Clone)]
pub struct StoreMetrics {
    errors: [IntCounter; 3],
    pub duration: Histogram,
    pub connections: IntGauge,
}

impl StoreMetrics {
    /// Counts one decision that failed for `kind`.
    pub fn error(&self, kind: StoreErrorKind) {
        self.errors[kind.index()].inc();
    }

    /// Decisions that failed for `kind` so far.
    pub fn errors(&self, kind: StoreErrorKind) -> u64 {
        self.errors[kind.index()].get()
    }
}

impl Metrics {
    /// The handles of the shared store called `store`.
    pub fn rate_limit_store(&self, store: &str) -> StoreMetrics {
        let families = &self.stores;
        StoreMetrics {
            errors: StoreErrorKind::ALL
                .map(|kind| families.errors.with_label_values(&[store, kind.as_str()])),
            duration: families.duration.with_label_values(&[store]),
            connections: families.connections.with_label_values(&[store]),
        }
    }
}
