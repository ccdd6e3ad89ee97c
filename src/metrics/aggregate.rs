//! `portcullis_aggregate_calls_total` and `portcullis_aggregate_call_duration_seconds`:
//! each call an aggregate route makes, by outcome, and how long it took.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use super::{Metrics, Registrar};

/// The aggregate-call families, registered once per process.
#[derive(Clone)]
pub(super) struct AggregateFamilies {
    calls: IntCounterVec,
    call_duration: HistogramVec,
}

impl AggregateFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        AggregateFamilies {
            calls: r.counter(
                "portcullis_aggregate_calls_total",
                "Calls made by aggregate routes, by outcome.",
                &["route", "call", "outcome"],
            ),
            call_duration: r.histogram(
                "portcullis_aggregate_call_duration_seconds",
                "Time an aggregate route's call took, from its start until its body was read.",
                &["route", "call"],
            ),
        }
    }
}

impl Metrics {
    pub fn aggregate_call(&self, route: &str, call: &str) -> CallMetrics {
        CallMetrics {
            outcomes: CallOutcome::ALL.map(|o| {
                self.aggregate
                    .calls
                    .with_label_values(&[route, call, o.label()])
            }),
            duration: self
                .aggregate
                .call_duration
                .with_label_values(&[route, call]),
        }
    }
}

/// Outcome label values of `portcullis_aggregate_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    UpstreamStatus,
    Timeout,
    Overloaded,
    UpstreamError,
    InvalidBody,
    DependencyFailed,
    Cancelled,
}

impl CallOutcome {
    const ALL: [CallOutcome; 8] = [
        CallOutcome::Success,
        CallOutcome::UpstreamStatus,
        CallOutcome::Timeout,
        CallOutcome::Overloaded,
        CallOutcome::UpstreamError,
        CallOutcome::InvalidBody,
        CallOutcome::DependencyFailed,
        CallOutcome::Cancelled,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CallOutcome::Success => "success",
            CallOutcome::UpstreamStatus => "upstream_status",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Overloaded => "overloaded",
            CallOutcome::UpstreamError => "upstream_error",
            CallOutcome::InvalidBody => "invalid_body",
            CallOutcome::DependencyFailed => "dependency_failed",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// Handles for one call of an aggregate route.
pub struct CallMetrics {
    outcomes: [IntCounter; 8],
    pub duration: Histogram,
}

impl CallMetrics {
    pub fn record(&self, outcome: CallOutcome) {
        let index = CallOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.outcomes[index].inc();
    }
}
