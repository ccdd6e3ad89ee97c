//! The upstream families: requests sent to endpoints and their outcomes, response time,
//! the concurrency limit and its queue, retries and their budget, redispatches (requests
//! that never reached an endpoint, sent elsewhere), endpoint health and ejections, and
//! each endpoint's pool of HTTP/1.1 connections.

use http::StatusCode;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{Metrics, Registrar};

/// Outcome label values of `portcullis_upstream_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    Status1xx,
    Status2xx,
    Status3xx,
    Status4xx,
    Status5xx,
    ConnectFailure,
    /// The endpoint's TLS certificate failed verification.
    TlsVerifyFailed,
    Timeout,
    Error,
    /// The client's request body failed, or exceeded its limit, while being sent: the
    /// exchange ended for the client's sake, not the endpoint's.
    ClientBody,
    /// The caller gave the exchange up before its response headers arrived: the client
    /// went away, or an aggregate route's timeout or failed required call cut it off.
    Cancelled,
}

impl UpstreamOutcome {
    const ALL: [UpstreamOutcome; 11] = [
        UpstreamOutcome::Status1xx,
        UpstreamOutcome::Status2xx,
        UpstreamOutcome::Status3xx,
        UpstreamOutcome::Status4xx,
        UpstreamOutcome::Status5xx,
        UpstreamOutcome::ConnectFailure,
        UpstreamOutcome::TlsVerifyFailed,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Error,
        UpstreamOutcome::ClientBody,
        UpstreamOutcome::Cancelled,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamOutcome::Status1xx => "1xx",
            UpstreamOutcome::Status2xx => "2xx",
            UpstreamOutcome::Status3xx => "3xx",
            UpstreamOutcome::Status4xx => "4xx",
            UpstreamOutcome::Status5xx => "5xx",
            UpstreamOutcome::ConnectFailure => "connect_failure",
            UpstreamOutcome::TlsVerifyFailed => "tls_verify_failed",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
            UpstreamOutcome::ClientBody => "client_body",
            UpstreamOutcome::Cancelled => "cancelled",
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

/// The upstream and endpoint families, registered once per process.
#[derive(Clone)]
pub(super) struct UpstreamFamilies {
    pub(super) requests: IntCounterVec,
    body_failures: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    queue_depth: IntGaugeVec,
    queue_wait: HistogramVec,
    rejected: IntCounterVec,
    endpoint_healthy: IntGaugeVec,
    connections_opened: IntCounterVec,
    connections_salvaged: IntCounterVec,
    descriptor_waits: IntCounterVec,
    connections_idle: IntGaugeVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
    redispatches: IntCounterVec,
    hedges: IntCounterVec,
    retry_budget_exhausted: IntCounterVec,
    concurrency_limit: IntGaugeVec,
}

impl UpstreamFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        UpstreamFamilies {
            requests: r.counter(
                "portcullis_upstream_requests_total",
                "Exchanges with upstream endpoints, each counted once when it ends, by outcome \
                 (status class, failure, client_body or cancelled); health checks not included.",
                &["upstream", "endpoint", "outcome"],
            ),
            body_failures: r.counter(
                "portcullis_upstream_response_body_failures_total",
                "Responses whose body broke off mid-stream after their headers were counted.",
                &["upstream", "endpoint"],
            ),
            duration: r.histogram(
                "portcullis_upstream_request_duration_seconds",
                "Time from sending a request upstream until its response headers arrived or the \
                 exchange ended without them; one observation per exchange.",
                &["upstream"],
            ),
            in_flight: r.gauge(
                "portcullis_upstream_in_flight",
                "Requests holding one of the upstream's concurrency permits.",
                &["upstream"],
            ),
            queue_depth: r.gauge(
                "portcullis_upstream_queue_depth",
                "Requests waiting for one of the upstream's concurrency permits.",
                &["upstream"],
            ),
            queue_wait: r.histogram(
                "portcullis_upstream_queue_wait_seconds",
                "Time requests that found no free permit waited in the upstream's queue.",
                &["upstream"],
            ),
            rejected: r.counter(
                "portcullis_upstream_rejected_total",
                "Requests refused with 503 by the upstream's concurrency limit, by reason.",
                &["upstream", "reason"],
            ),
            endpoint_healthy: r.gauge(
                "portcullis_upstream_endpoint_healthy",
                "1 while the endpoint receives requests (passing health checks, not ejected), else 0.",
                &["upstream", "endpoint"],
            ),
            connections_opened: r.counter(
                "portcullis_upstream_connections_opened_total",
                "Connections opened to the endpoint (protocol: http1); a steady rise under steady load means keep-alive is not working.",
                &["upstream", "endpoint"],
            ),
            connections_salvaged: r.counter(
                "portcullis_upstream_connections_salvaged_total",
                "Connections kept for reuse after the client abandoned its request: the \
                 rest of the response was read and dropped (protocol: http1).",
                &["upstream", "endpoint"],
            ),
            descriptor_waits: r.counter(
                "portcullis_upstream_descriptor_waits_total",
                "Sends that found the process out of file descriptors (EMFILE, ENFILE) and \
                 waited for a pooled connection or a free descriptor instead of failing \
                 (protocol: http1). Any rise means the open-files limit is too low for \
                 the listeners' max_connections plus the upstream connections.",
                &["upstream", "endpoint"],
            ),
            connections_idle: r.gauge(
                "portcullis_upstream_connections_idle",
                "Keep-alive connections to the endpoint waiting in the pool (protocol: http1).",
                &["upstream", "endpoint"],
            ),
            ejections: r.counter(
                "portcullis_upstream_ejections_total",
                "Endpoints taken out of rotation, by reason (consecutive_failures, health_check, \
                 or connect_failure: marked down at once after a refused or timed-out connect).",
                &["upstream", "endpoint", "reason"],
            ),
            retries: r.counter(
                "portcullis_upstream_retries_total",
                "Requests tried again, by what failed (connect_failure, reset, timeout, status).",
                &["upstream", "reason"],
            ),
            redispatches: r.counter(
                "portcullis_upstream_redispatches_total",
                "Requests that never reached an endpoint, moved to another endpoint (or a new \
                 connection) without drawing on the retry budget, by what failed \
                 (connect_failure, reset_before_response, tls_verify_failed).",
                &["upstream", "reason"],
            ),
            hedges: r.counter(
                "portcullis_upstream_hedges_total",
                "Hedged tries of routes with `hedge`, by outcome: won (its response was \
                 used, the slower try cancelled), lost (an earlier try answered first; the \
                 hedge was cancelled), budget_exhausted (not sent: the retry budget was \
                 spent).",
                &["upstream", "outcome"],
            ),
            retry_budget_exhausted: r.counter(
                "portcullis_upstream_retry_budget_exhausted_total",
                "Retries not made because the upstream's retry budget was spent.",
                &["upstream"],
            ),
            concurrency_limit: r.gauge(
                "portcullis_upstream_concurrency_limit",
                "The upstream's current concurrency limit (max_in_flight, or the adaptive limit).",
                &["upstream"],
            ),
        }
    }
}

impl Metrics {
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            duration: self.upstreams.duration.with_label_values(&[upstream]),
            in_flight: self.upstreams.in_flight.with_label_values(&[upstream]),
            queue_depth: self.upstreams.queue_depth.with_label_values(&[upstream]),
            queue_wait: self.upstreams.queue_wait.with_label_values(&[upstream]),
            rejected_queue_full: self
                .upstreams
                .rejected
                .with_label_values(&[upstream, "queue_full"]),
            rejected_queue_timeout: self
                .upstreams
                .rejected
                .with_label_values(&[upstream, "queue_timeout"]),
            retries: ["connect_failure", "reset", "timeout", "status"].map(|reason| {
                self.upstreams
                    .retries
                    .with_label_values(&[upstream, reason])
            }),
            redispatches: Redispatch::ALL.map(|reason| {
                self.upstreams
                    .redispatches
                    .with_label_values(&[upstream, reason.label()])
            }),
            hedges: ["won", "lost", "budget_exhausted"].map(|outcome| {
                self.upstreams
                    .hedges
                    .with_label_values(&[upstream, outcome])
            }),
            retry_budget_exhausted: self
                .upstreams
                .retry_budget_exhausted
                .with_label_values(&[upstream]),
            concurrency_limit: self
                .upstreams
                .concurrency_limit
                .with_label_values(&[upstream]),
        }
    }

    /// The healthy gauge and the ejection counters of an endpoint.
    pub fn endpoint_health(&self, upstream: &str, endpoint: &str) -> EndpointHealthMetrics {
        let ejections = |reason| {
            self.upstreams
                .ejections
                .with_label_values(&[upstream, endpoint, reason])
        };
        EndpointHealthMetrics {
            healthy: self
                .upstreams
                .endpoint_healthy
                .with_label_values(&[upstream, endpoint]),
            ejected_for_failures: ejections("consecutive_failures"),
            failed_health_checks: ejections("health_check"),
            marked_down: ejections("connect_failure"),
        }
    }

    /// Handles for an endpoint's pool of HTTP/1.1 connections.
    pub fn connection_pool(&self, upstream: &str, endpoint: &str) -> PoolMetrics {
        PoolMetrics {
            opened: self
                .upstreams
                .connections_opened
                .with_label_values(&[upstream, endpoint]),
            idle: self
                .upstreams
                .connections_idle
                .with_label_values(&[upstream, endpoint]),
            salvaged: self
                .upstreams
                .connections_salvaged
                .with_label_values(&[upstream, endpoint]),
            descriptor_waits: self
                .upstreams
                .descriptor_waits
                .with_label_values(&[upstream, endpoint]),
            resent: self
                .upstreams
                .redispatches
                .with_label_values(&[upstream, Redispatch::ResetBeforeResponse.label()]),
        }
    }

    pub fn endpoint(&self, upstream: &str, endpoint: &str) -> EndpointMetrics {
        EndpointMetrics {
            outcomes: UpstreamOutcome::ALL.map(|o| {
                self.upstreams
                    .requests
                    .with_label_values(&[upstream, endpoint, o.label()])
            }),
            body_failures: self
                .upstreams
                .body_failures
                .with_label_values(&[upstream, endpoint]),
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
    /// By [`Redispatch`].
    pub redispatches: [IntCounter; 3],
    /// By outcome: won, lost, budget_exhausted.
    pub hedges: [IntCounter; 3],
    pub retry_budget_exhausted: IntCounter,
    pub concurrency_limit: IntGauge,
}

/// Why a request that never reached an endpoint was sent again: the `reason` label of
/// `portcullis_upstream_redispatches_total`, and the index into
/// [`UpstreamMetrics::redispatches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redispatch {
    /// The connection was refused or did not open in time.
    ConnectFailure = 0,
    /// A pooled connection closed before any response byte (resent on a new one).
    ResetBeforeResponse = 1,
    /// The endpoint's certificate failed verification (another endpoint tried).
    TlsVerifyFailed = 2,
}

impl Redispatch {
    const ALL: [Redispatch; 3] = [
        Redispatch::ConnectFailure,
        Redispatch::ResetBeforeResponse,
        Redispatch::TlsVerifyFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Redispatch::ConnectFailure => "connect_failure",
            Redispatch::ResetBeforeResponse => "reset_before_response",
            Redispatch::TlsVerifyFailed => "tls_verify_failed",
        }
    }
}

/// The health handles of one endpoint.
pub struct EndpointHealthMetrics {
    /// `portcullis_upstream_endpoint_healthy`.
    pub healthy: IntGauge,
    pub ejected_for_failures: IntCounter,
    pub failed_health_checks: IntCounter,
    /// Marked down at once by a refused or timed-out connect (passive health).
    pub marked_down: IntCounter,
}
/// Handles for one endpoint of an upstream.
pub struct EndpointMetrics {
    outcomes: [IntCounter; 11],
    /// `portcullis_upstream_response_body_failures_total`.
    pub body_failures: IntCounter,
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
    /// The upstream's redispatches for `reset_before_response`: requests resent on a
    /// new connection after a pooled one closed before any response byte.
    pub resent: IntCounter,
    /// Sends that waited for a file descriptor.
    pub descriptor_waits: IntCounter,
}
