//! Prometheus metrics: one registry per process, families defined once, and handles
//! resolved per listener, route, upstream and endpoint when a configuration is compiled,
//! so the request path touches only atomics.
//!
//! Names follow Prometheus conventions: `portcullis_` prefix, base units, `_total` for
//! counters. Label values come from the configuration (names), never from requests.

use std::sync::{Arc, OnceLock};

use http::{Method, StatusCode};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from half a millisecond to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Method label values; anything else is counted as `OTHER` so labels stay bounded.
const METHOD_LABELS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "OTHER",
];

/// Status codes whose counters are cached per route; others take the slower labelled path.
const CACHED_STATUSES: [u16; 30] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413,
    414, 415, 422, 429, 431, 499, 500, 501, 502, 503, 504,
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        _ => 8,
    }
}

/// The label value for the pseudo-route of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "_unmatched";

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

/// Every metric family of the gateway, registered once per process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_in_flight: IntGaugeVec,
    upstream_queue_depth: IntGaugeVec,
    upstream_queue_wait: HistogramVec,
    upstream_rejected: IntCounterVec,
    connections_active: IntGaugeVec,
    connections_total: IntCounterVec,
    worker_connections_active: IntGaugeVec,
    worker_connections_total: IntCounterVec,
    client_timeouts: IntCounterVec,
    header_fields_dropped: IntCounterVec,
    http2_cancel_floods: IntCounterVec,
    aggregate_calls: IntCounterVec,
    aggregate_call_duration: HistogramVec,
    endpoint_healthy: IntGaugeVec,
    upstream_connections_opened: IntCounterVec,
    upstream_connections_salvaged: IntCounterVec,
    upstream_connections_idle: IntGaugeVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
    retry_budget_exhausted: IntCounterVec,
    concurrency_limit: IntGaugeVec,
    config_reloads: IntCounterVec,
    config_last_success: prometheus::Gauge,
    config_info: IntGaugeVec,
    tls_handshakes: IntCounterVec,
    tls_handshake_failures: IntCounterVec,
    tls_connections_active: IntGaugeVec,
    tls_certificate_expiry: IntGaugeVec,
    tls_certificate_reloads: IntCounterVec,
    websocket_active: IntGaugeVec,
    websocket_upgrades: IntCounterVec,
    websocket_closed: IntCounterVec,
}

impl Metrics {
    /// Creates the registry and registers every family. Panics only on a programming
    /// error (a malformed or duplicate family definition), at startup.
    pub fn new() -> Self {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
            registry
                .register(Box::new(c.clone()))
                .expect("metric families are defined once with valid names");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid histogram"),
            )
        };
        let metrics = Metrics {
            http_requests: counter(
                "portcullis_http_requests_total",
                "Requests answered, by listener, route, method and status.",
                &["listener", "route", "method", "status"],
            ),
            http_duration: histogram(
                "portcullis_http_request_duration_seconds",
                "Time from a request's arrival until its response body was sent, by route.",
                &["route"],
            ),
            upstream_requests: counter(
                "portcullis_upstream_requests_total",
                "Requests sent to upstream endpoints, by outcome (status class or failure).",
                &["upstream", "endpoint", "outcome"],
            ),
            upstream_duration: histogram(
                "portcullis_upstream_request_duration_seconds",
                "Time from sending a request upstream until its response headers arrived.",
                &["upstream"],
            ),
            upstream_in_flight: gauge(
                "portcullis_upstream_in_flight",
                "Requests holding one of the upstream's concurrency permits.",
                &["upstream"],
            ),
            upstream_queue_depth: gauge(
                "portcullis_upstream_queue_depth",
                "Requests waiting for one of the upstream's concurrency permits.",
                &["upstream"],
            ),
            upstream_queue_wait: histogram(
                "portcullis_upstream_queue_wait_seconds",
                "Time requests that found no free permit waited in the upstream's queue.",
                &["upstream"],
            ),
            upstream_rejected: counter(
                "portcullis_upstream_rejected_total",
                "Requests refused with 503 by the upstream's concurrency limit, by reason.",
                &["upstream", "reason"],
            ),
            connections_active: gauge(
                "portcullis_connections_active",
                "Client connections open now.",
                &["listener"],
            ),
            connections_total: counter(
                "portcullis_connections_total",
                "Client connections accepted.",
                &["listener"],
            ),
            worker_connections_active: gauge(
                "portcullis_worker_connections_active",
                "Client connections open now, by the worker serving them.",
                &["worker"],
            ),
            worker_connections_total: counter(
                "portcullis_worker_connections_total",
                "Client connections accepted, by the worker that accepted them.",
                &["worker"],
            ),
            client_timeouts: counter(
                "portcullis_client_timeouts_total",
                "HTTP/1.1 client connections closed after idle_timeout, by what the client \
                 was doing: idle (no request), head (a request head not finished), \
                 response (not reading its response; over HTTP/2, a stream reset).",
                &["listener", "phase"],
            ),
            header_fields_dropped: counter(
                "portcullis_header_fields_dropped_total",
                "Request header fields removed before routing because their names contain \
                 `_` (listener option headers_with_underscores: drop).",
                &["listener"],
            ),
            http2_cancel_floods: counter(
                "portcullis_http2_cancel_floods_total",
                "HTTP/2 connections closed (GOAWAY) because the client cancelled most of \
                 its streams while they were being answered (paced rapid reset).",
                &["listener"],
            ),
            aggregate_calls: counter(
                "portcullis_aggregate_calls_total",
                "Calls made by aggregate routes, by outcome.",
                &["route", "call", "outcome"],
            ),
            aggregate_call_duration: histogram(
                "portcullis_aggregate_call_duration_seconds",
                "Time an aggregate route's call took, from its start until its body was read.",
                &["route", "call"],
            ),
            endpoint_healthy: gauge(
                "portcullis_upstream_endpoint_healthy",
                "1 while the endpoint receives requests (passing health checks, not ejected), else 0.",
                &["upstream", "endpoint"],
            ),
            upstream_connections_opened: counter(
                "portcullis_upstream_connections_opened_total",
                "Connections opened to the endpoint (protocol: http1); a steady rise under steady load means keep-alive is not working.",
                &["upstream", "endpoint"],
            ),
            upstream_connections_salvaged: counter(
                "portcullis_upstream_connections_salvaged_total",
                "Connections kept for reuse after the client abandoned its request: the \
                 rest of the response was read and dropped (protocol: http1).",
                &["upstream", "endpoint"],
            ),
            upstream_connections_idle: gauge(
                "portcullis_upstream_connections_idle",
                "Keep-alive connections to the endpoint waiting in the pool (protocol: http1).",
                &["upstream", "endpoint"],
            ),
            ejections: counter(
                "portcullis_upstream_ejections_total",
                "Endpoints taken out of rotation, by reason (consecutive_failures or health_check).",
                &["upstream", "endpoint", "reason"],
            ),
            retries: counter(
                "portcullis_upstream_retries_total",
                "Requests tried again, by what failed (connect_failure, reset, timeout, status).",
                &["upstream", "reason"],
            ),
            retry_budget_exhausted: counter(
                "portcullis_upstream_retry_budget_exhausted_total",
                "Retries not made because the upstream's retry budget was spent.",
                &["upstream"],
            ),
            concurrency_limit: gauge(
                "portcullis_upstream_concurrency_limit",
                "The upstream's current concurrency limit (max_in_flight, or the adaptive limit).",
                &["upstream"],
            ),
            config_reloads: counter(
                "portcullis_config_reloads_total",
                "Configuration reloads attempted, by result (success or failure).",
                &["result"],
            ),
            config_last_success: reg(
                &registry,
                prometheus::Gauge::new(
                    "portcullis_config_last_reload_success_timestamp_seconds",
                    "When the configuration in use was loaded (Unix time).",
                )
                .expect("valid gauge"),
            ),
            config_info: gauge(
                "portcullis_config_info",
                "Always 1; the hash label identifies the configuration file's content in use.",
                &["hash"],
            ),
            tls_handshakes: counter(
                "portcullis_tls_handshakes_total",
                "TLS handshakes completed, by protocol version and negotiated ALPN protocol.",
                &["listener", "version", "alpn"],
            ),
            tls_handshake_failures: counter(
                "portcullis_tls_handshake_failures_total",
                "TLS handshakes that failed, by reason.",
                &["listener", "reason"],
            ),
            tls_connections_active: gauge(
                "portcullis_tls_connections_active",
                "TLS connections open now (handshake done), by protocol version and ALPN protocol.",
                &["listener", "version", "alpn"],
            ),
            tls_certificate_expiry: gauge(
                "portcullis_tls_certificate_expiry_timestamp_seconds",
                "When the certificate served for a host expires (notAfter), in Unix seconds.",
                &["listener", "host"],
            ),
            tls_certificate_reloads: counter(
                "portcullis_tls_certificate_reloads_total",
                "Certificate files that changed on disk, by outcome (loaded, or rejected and the previous certificate kept).",
                &["listener", "outcome"],
            ),
            websocket_active: gauge(
                "portcullis_websocket_connections_active",
                "Upgraded (WebSocket) connections open now, by route.",
                &["route"],
            ),
            websocket_upgrades: counter(
                "portcullis_websocket_upgrades_total",
                "WebSocket upgrade requests, by outcome: upgraded (the upstream answered 101), refused (it answered something else), rejected (the route's max_connections was reached).",
                &["route", "outcome"],
            ),
            websocket_closed: counter(
                "portcullis_websocket_closed_total",
                "Upgraded connections closed, by reason: closed (by either side), idle_timeout, shutdown, error.",
                &["route", "reason"],
            ),
            registry,
        };
        for result in ["success", "failure"] {
            metrics.config_reloads.with_label_values(&[result]);
        }
        let build_info = IntGaugeVec::new(
            Opts::new(
                "portcullis_build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )
        .expect("valid gauge");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        reg(&metrics.registry, build_info);
        metrics
    }

    /// Records a reload attempt.
    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// Marks the configuration with `hash` as the one in use, loaded now.
    pub fn config_loaded(&self, previous_hash: Option<&str>, hash: &str) {
        if let Some(previous) = previous_hash.filter(|p| *p != hash) {
            let _ = self.config_info.remove_label_values(&[previous]);
        }
        self.config_info.with_label_values(&[hash]).set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.config_last_success.set(now);
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        buffer
    }

    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            active: self.connections_active.with_label_values(&[listener]),
            accepted: self.connections_total.with_label_values(&[listener]),
        }
    }

    /// Handles for the connections of worker `index`.
    pub fn worker(&self, index: usize) -> WorkerConnections {
        let worker = index.to_string();
        WorkerConnections {
            active: self.worker_connections_active.with_label_values(&[&worker]),
            accepted: self.worker_connections_total.with_label_values(&[&worker]),
        }
    }

    /// Handles for one listener's client timeouts.
    pub fn client_timeouts(&self, listener: &str) -> ClientTimeouts {
        let phase = |phase: &str| self.client_timeouts.with_label_values(&[listener, phase]);
        ClientTimeouts {
            idle: phase("idle"),
            head: phase("head"),
            response: phase("response"),
        }
    }

    /// One listener's count of request header fields dropped for their names.
    pub fn header_fields_dropped(&self, listener: &str) -> IntCounter {
        self.header_fields_dropped.with_label_values(&[listener])
    }

    /// `portcullis_http2_cancel_floods_total` of one listener.
    pub fn http2_cancel_floods(&self, listener: &str) -> IntCounter {
        self.http2_cancel_floods.with_label_values(&[listener])
    }

    /// Handles for one TLS listener.
    pub fn tls(&self, listener: &str) -> TlsMetrics {
        let by_protocol = |family: &IntCounterVec| {
            TLS_VERSIONS.map(|version| {
                TLS_ALPNS.map(|alpn| family.with_label_values(&[listener, version, alpn]))
            })
        };
        TlsMetrics {
            handshakes: by_protocol(&self.tls_handshakes),
            active: TLS_VERSIONS.map(|version| {
                TLS_ALPNS.map(|alpn| {
                    self.tls_connections_active
                        .with_label_values(&[listener, version, alpn])
                })
            }),
            failures: HandshakeFailure::ALL.map(|reason| {
                self.tls_handshake_failures
                    .with_label_values(&[listener, reason.label()])
            }),
            expiry: self.tls_certificate_expiry.clone(),
            listener: listener.into(),
            reloaded: self
                .tls_certificate_reloads
                .with_label_values(&[listener, "loaded"]),
            reload_rejected: self
                .tls_certificate_reloads
                .with_label_values(&[listener, "rejected"]),
        }
    }

    /// Handles for one route on every listener (`listeners` in configuration order).
    pub fn route(&self, route: &str, listeners: &[String]) -> RouteMetrics {
        let route: Arc<str> = route.into();
        RouteMetrics {
            requests: listeners
                .iter()
                .map(|listener| RequestCounters {
                    family: self.http_requests.clone(),
                    listener: listener.as_str().into(),
                    route: route.clone(),
                    cells: OnceLock::new(),
                })
                .collect(),
            duration: self.http_duration.with_label_values(&[&*route]),
        }
    }

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

    /// Handles for one route's WebSocket connections.
    pub fn websocket(&self, route: &str) -> WebSocketMetrics {
        WebSocketMetrics {
            active: self.websocket_active.with_label_values(&[route]),
            upgrades: UpgradeOutcome::ALL.map(|outcome| {
                self.websocket_upgrades
                    .with_label_values(&[route, outcome.label()])
            }),
            closed: CloseReason::ALL.map(|reason| {
                self.websocket_closed
                    .with_label_values(&[route, reason.label()])
            }),
        }
    }

    pub fn aggregate_call(&self, route: &str, call: &str) -> CallMetrics {
        CallMetrics {
            outcomes: CallOutcome::ALL.map(|o| {
                self.aggregate_calls
                    .with_label_values(&[route, call, o.label()])
            }),
            duration: self
                .aggregate_call_duration
                .with_label_values(&[route, call]),
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
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

/// `portcullis_client_timeouts_total` of one listener, by phase.
#[derive(Clone)]
pub struct ClientTimeouts {
    pub idle: IntCounter,
    pub head: IntCounter,
    pub response: IntCounter,
}

pub struct ListenerMetrics {
    pub active: IntGauge,
    pub accepted: IntCounter,
}

/// The client connections of one worker (all listeners).
#[derive(Clone)]
pub struct WorkerConnections {
    pub active: IntGauge,
    pub accepted: IntCounter,
}

/// Label values of `version`: the TLS versions a listener accepts.
pub const TLS_VERSIONS: [&str; 2] = ["1.2", "1.3"];
/// Label values of `alpn`: what ALPN negotiated (`none` when the client offered nothing).
pub const TLS_ALPNS: [&str; 3] = ["h2", "http/1.1", "none"];

/// The `reason` label of `portcullis_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The handshake did not finish within `handshake_timeout`.
    Timeout,
    /// The client closed or reset the connection during the handshake.
    Closed,
    /// The client sent something other than TLS (typically plain HTTP).
    NotTls,
    /// No common protocol version, cipher suite or ALPN protocol.
    Incompatible,
    /// The client rejected the gateway's certificate (an alert such as `unknown_ca`).
    CertificateRejected,
    /// mTLS: the client sent no certificate, or one that does not verify.
    ClientCertificate,
    /// A malformed or unexpected TLS message.
    Protocol,
    /// Anything else (an I/O error, an unexpected alert).
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 8] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::NotTls,
        HandshakeFailure::Incompatible,
        HandshakeFailure::CertificateRejected,
        HandshakeFailure::ClientCertificate,
        HandshakeFailure::Protocol,
        HandshakeFailure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::CertificateRejected => "certificate_rejected",
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Other => "other",
        }
    }
}

/// Handles for one TLS listener; protocol-labelled ones indexed by
/// `[TLS_VERSIONS index][TLS_ALPNS index]`.
pub struct TlsMetrics {
    pub handshakes: [[IntCounter; 3]; 2],
    pub active: [[IntGauge; 3]; 2],
    failures: [IntCounter; 8],
    expiry: IntGaugeVec,
    listener: Arc<str>,
    pub reloaded: IntCounter,
    pub reload_rejected: IntCounter,
}

impl TlsMetrics {
    pub fn failed(&self, reason: HandshakeFailure) {
        let index = HandshakeFailure::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(HandshakeFailure::ALL.len() - 1);
        self.failures[index].inc();
    }

    /// Records when the certificate served for `host` expires. Called at start and on
    /// each certificate reload, never per connection.
    pub fn set_expiry(&self, host: &str, not_after: i64) {
        self.expiry
            .with_label_values(&[&*self.listener, host])
            .set(not_after);
    }
}

/// Counters of one route on one listener, by method and status, created on first use.
pub struct RequestCounters {
    family: IntCounterVec,
    listener: Arc<str>,
    route: Arc<str>,
    cells: OnceLock<Box<[OnceLock<IntCounter>]>>,
}

impl RequestCounters {
    pub fn inc(&self, method: &Method, status: StatusCode) {
        let m = method_index(method);
        match CACHED_STATUSES.binary_search(&status.as_u16()) {
            Ok(s) => {
                let cells = self.cells.get_or_init(|| {
                    (0..METHOD_LABELS.len() * CACHED_STATUSES.len())
                        .map(|_| OnceLock::new())
                        .collect()
                });
                cells[m * CACHED_STATUSES.len() + s]
                    .get_or_init(|| self.labelled(m, status))
                    .inc();
            }
            Err(_) => self.labelled(m, status).inc(),
        }
    }

    /// Counts a request whose method could not be read (label `OTHER`).
    pub fn inc_unknown_method(&self, status: StatusCode) {
        self.labelled(METHOD_LABELS.len() - 1, status).inc();
    }

    fn labelled(&self, method: usize, status: StatusCode) -> IntCounter {
        self.family.with_label_values(&[
            &*self.listener,
            &*self.route,
            METHOD_LABELS[method],
            status.as_str(),
        ])
    }
}

/// Handles for one route.
pub struct RouteMetrics {
    /// Indexed by listener, in configuration order.
    pub requests: Vec<RequestCounters>,
    pub duration: Histogram,
}

impl RouteMetrics {
    /// The counters for the listener at `index` (see `Snapshot::listener_index`).
    pub fn for_listener(&self, index: Option<usize>) -> Option<&RequestCounters> {
        index.and_then(|i| self.requests.get(i))
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

/// What became of a WebSocket upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeOutcome {
    Upgraded,
    Refused,
    Rejected,
}

impl UpgradeOutcome {
    const ALL: [UpgradeOutcome; 3] = [
        UpgradeOutcome::Upgraded,
        UpgradeOutcome::Refused,
        UpgradeOutcome::Rejected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpgradeOutcome::Upgraded => "upgraded",
            UpgradeOutcome::Refused => "refused",
            UpgradeOutcome::Rejected => "rejected",
        }
    }
}

/// Why an upgraded connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Closed,
    IdleTimeout,
    Shutdown,
    Error,
}

impl CloseReason {
    const ALL: [CloseReason; 4] = [
        CloseReason::Closed,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Closed => "closed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error => "error",
        }
    }
}

/// Handles for one route's WebSocket connections.
#[derive(Clone)]
pub struct WebSocketMetrics {
    pub active: IntGauge,
    upgrades: [IntCounter; 3],
    closed: [IntCounter; 4],
}

impl WebSocketMetrics {
    pub fn upgrade(&self, outcome: UpgradeOutcome) {
        self.upgrades[outcome as usize].inc();
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].inc();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_for_binary_search() {
        assert!(CACHED_STATUSES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn request_counters_count_by_method_and_status() {
        let metrics = Metrics::new();
        let route = metrics.route("users", &["public".to_owned()]);
        route.requests[0].inc(&Method::GET, StatusCode::OK);
        route.requests[0].inc(&Method::GET, StatusCode::OK);
        route.requests[0].inc(
            &Method::from_bytes(b"PURGE").expect("valid"),
            StatusCode::IM_A_TEAPOT,
        );
        let text = String::from_utf8(metrics.encode()).expect("utf-8");
        assert!(text.contains(
            "portcullis_http_requests_total{listener=\"public\",method=\"GET\",route=\"users\",status=\"200\"} 2"
        ), "{text}");
        assert!(
            text.contains("method=\"OTHER\",route=\"users\",status=\"418\"} 1"),
            "{text}"
        );
    }
}
