//! `portcullis_access_log_*`: lines written, dropped (the writer's queue was full),
//! write errors, and reopens of log files (`SIGUSR1`).

use prometheus::{IntCounter, IntCounterVec};

use super::{Metrics, Registrar};

/// The access-log families, registered once per process.
#[derive(Clone)]
pub(super) struct AccessLogFamilies {
    written: IntCounterVec,
    dropped: IntCounterVec,
    write_errors: IntCounterVec,
    reopens: IntCounterVec,
}

impl AccessLogFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        AccessLogFamilies {
            written: r.counter(
                "portcullis_access_log_lines_total",
                "Access log lines written.",
                &[],
            ),
            dropped: r.counter(
                "portcullis_access_log_dropped_total",
                "Access log lines dropped because the writer's queue was full.",
                &[],
            ),
            write_errors: r.counter(
                "portcullis_access_log_write_errors_total",
                "Access log lines lost to a failed open or write.",
                &[],
            ),
            reopens: r.counter(
                "portcullis_access_log_reopens_total",
                "Access log files reopened (SIGUSR1).",
                &[],
            ),
        }
    }
}

/// The access-log counters, shared by every log of the process.
#[derive(Clone)]
pub struct AccessLogMetrics {
    pub written: IntCounter,
    pub dropped: IntCounter,
    pub write_errors: IntCounter,
    pub reopens: IntCounter,
}

impl Metrics {
    /// The access-log counters.
    pub fn access_log(&self) -> AccessLogMetrics {
        let families = &self.access_log;
        AccessLogMetrics {
            written: families.written.with_label_values(&[] as &[&str]),
            dropped: families.dropped.with_label_values(&[] as &[&str]),
            write_errors: families.write_errors.with_label_values(&[] as &[&str]),
            reopens: families.reopens.with_label_values(&[] as &[&str]),
        }
    }
}
