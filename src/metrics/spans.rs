//! `portcullis_tracing_*`: what became of the spans the gateway recorded (exported,
//! dropped because the export queue was full) and the exports that failed. Unlabelled:
//! one exporter per process.

use prometheus::{IntCounter, IntCounterVec};

use super::{Metrics, Registrar};

/// The tracing families, registered once per process.
#[derive(Clone)]
pub(super) struct TracingFamilies {
    exported: IntCounterVec,
    dropped: IntCounterVec,
    export_failures: IntCounterVec,
}

impl TracingFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        TracingFamilies {
            exported: r.counter(
                "portcullis_tracing_spans_exported_total",
                "Sampled spans the OTLP collector accepted.",
                &[],
            ),
            dropped: r.counter(
                "portcullis_tracing_spans_dropped_total",
                "Sampled spans dropped: the export queue was full, or their batch's export failed.",
                &[],
            ),
            export_failures: r.counter(
                "portcullis_tracing_export_failures_total",
                "OTLP export requests that failed (refused, unreachable or timed out); their spans count as dropped.",
                &[],
            ),
        }
    }
}

impl Metrics {
    /// Handles for the span exporter.
    pub fn tracing(&self) -> TracingMetrics {
        TracingMetrics {
            exported: self.tracing.exported.with_label_values(&[] as &[&str]),
            dropped: self.tracing.dropped.with_label_values(&[] as &[&str]),
            export_failures: self
                .tracing
                .export_failures
                .with_label_values(&[] as &[&str]),
        }
    }
}

/// The span exporter's handles.
#[derive(Clone)]
pub struct TracingMetrics {
    pub exported: IntCounter,
    pub dropped: IntCounter,
    pub export_failures: IntCounter,
}
