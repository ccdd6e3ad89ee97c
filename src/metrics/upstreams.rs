//! The upstream families: requests sent to endpoints and their outcomes, response time,
//! the concurrency limit and its queue, retries and their budget, endpoint health and
//! ejections, and each endpoint's pool of HTTP/1.1 connections.

use http::StatusCode;
use prometheus::{Histogram, IntCounter, IntGauge};

use super::Metrics;

/// Outcome label values of `portcullis_upstream_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    Status1xx,
    Status2xx,
    Status3xx,
    Status4xx,
    Status5xx,
    ConnectFailure,
    Timeout,
    Error,
}

impl UpstreamOutcome {
    const ALL: [UpstreamOutcome; 8] = [
        UpstreamOutcome::Status1xx,
        UpstreamOutcome::Status2xx,
        UpstreamOutcome::Status3xx,
        UpstreamOutcome::Status4xx,
        UpstreamOutcome::Status5xx,
        UpstreamOutcome::ConnectFailure,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamOutcome::Status1xx => "1xx",
            UpstreamOutcome::Status2xx => "2xx",
            UpstreamOutcome::Status3xx => "3xx",
            UpstreamOutcome::Status4xx => "4xx",
            UpstreamOutcome::Status5xx => "5xx",
            UpstreamOutcome::ConnectFailure => "connect_failure",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
        }
    }

    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() / 100 {
            1 => UpstreamOutcome::Status1xx,
            2 => UpstreamOutcome::Status2xx,
            3 => UpstreamOutcome::Status3xx,
            4 => UpstreamOutcome::Status4xx,
            _ => UpstreamOutcome::Status5xx,
        }
    }
}

impl Metrics {
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            duration: self.upstream_duration.with_label_values(&[upstream]),
            in_flight: self.upstream_in_flight.with_label_values(&[upstream]),
            queue_depth: self.upstream_queue_depth.with_label_values(&[upstream]),
            queue_wait: self.upstream_queue_wait.with_label_values(&[upstream]),
            rejected_queue_full: self
                .upstream_rejected
                .with_label_values(&[upstream, "queue_full"]),
            rejected_queue_timeout: self
                .upstream_rejected
                .with_label_values(&[upstream, "queue_timeout"]),
            retries: ["connect_failure", "reset", "timeout", "status"]
                .map(|reason| self.retries.with_label_values(&[upstream, reason])),
            retry_budget_exhausted: self.retry_budget_exhausted.with_label_values(&[upstream]),
            concurrency_limit: self.concurrency_limit.with_label_values(&[upstream]),
        }
    }

    /// The healthy gauge and the two ejection counters of an endpoint.
    pub fn endpoint_health(
        &self,
        upstream: &str,
        endpoint: &str,
    ) -> (IntGauge, IntCounter, IntCounter) {
        (
            self.endpoint_healthy
                .with_label_values(&[upstream, endpoint]),
            self.ejections
                .with_label_values(&[upstream, endpoint, "consecutive_failures"]),
            self.ejections
                .with_label_values(&[upstream, endpoint, "health_check"]),
        )
    }

    /// Handles for an endpoint's pool of HTTP/1.1 connections.
    pub fn connection_pool(&self, upstream: &str, endpoint: &str) -> PoolMetrics {
        PoolMetrics {
            opened: self
                .upstream_connections_opened
                .with_label_values(&[upstream, endpoint]),
            idle: self
                .upstream_connections_idle
                .with_label_values(&[upstream, endpoint]),
            salvaged: self
                .upstream_connections_salvaged
                .with_label_values(&[upstream, endpoint]),
        }
    }

    pub fn endpoint(&self, upstream: &str, endpoint: &str) -> EndpointMetrics {
        EndpointMetrics {
            outcomes: UpstreamOutcome::ALL.map(|o| {
                self.upstream_requests
                    .with_label_values(&[upstream, endpoint, o.label()])
            }),
        }
    }
}

/// Handles for one upstream.
#[derive(Clone)]
pub struct UpstreamMetrics {
    pub duration: Histogram,
    pub in_flight: IntGauge,
    pub queue_depth: IntGauge,
    pub queue_wait: Histogram,
    pub rejected_queue_full: IntCounter,
    pub rejected_queue_timeout: IntCounter,
    /// By reason: connect_failure, reset, timeout, status.
    pub retries: [IntCounter; 4],
    pub retry_budget_exhausted: IntCounter,
    pub concurrency_limit: IntGauge,
}
/// Handles for one endpoint of an upstream.
pub struct EndpointMetrics {
    outcomes: [IntCounter; 8],
}

impl EndpointMetrics {
    pub fn record(&self, outcome: UpstreamOutcome) {
        let index = UpstreamOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(UpstreamOutcome::ALL.len() - 1);
        self.outcomes[index].inc();
    }
}

/// The pool's metric handles.
pub struct PoolMetrics {
    pub opened: IntCounter,
    pub idle: IntGauge,
    /// Connections kept after their request was abandoned.
    pub salvaged: IntCounter,
}
