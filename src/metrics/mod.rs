//! Prometheus metrics: one registry per process, families defined once, and handles
//! resolved per listener, route, upstream and endpoint when a configuration is compiled,
//! so the request path touches only atomics.
//!
//! Names follow Prometheus conventions: `portcullis_` prefix, base units, `_total` for
//! counters. Label values come from the configuration (names), never from requests.
//!
//! This file holds the [`Metrics`] registry and the text exposition. Each family has its
//! own file with its handles and label values: [`requests`] (requests answered, by
//! route), [`upstreams`] (upstream requests, limits, retries, endpoints, pools),
//! [`listeners`] (client connections, workers, client timeouts, TLS), [`websocket`],
//! [`aggregate`] (calls of aggregate routes) and [`config`] (reloads, the configuration
//! in use, the build). Everything is re-exported here: `crate::metrics::X` is the path.

mod aggregate;
mod config;
mod listeners;
mod requests;
mod upstreams;
mod websocket;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use aggregate::{CallMetrics, CallOutcome};
pub use listeners::{
    ClientTimeouts, HandshakeFailure, ListenerMetrics, TlsMetrics, WorkerConnections, TLS_ALPNS,
    TLS_VERSIONS,
};
pub use requests::{RequestCounters, RouteMetrics, UNMATCHED_ROUTE};
pub use upstreams::{EndpointMetrics, PoolMetrics, UpstreamMetrics, UpstreamOutcome};
pub use websocket::{CloseReason, UpgradeOutcome, WebSocketMetrics};

/// Latency buckets in seconds, from half a millisecond to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

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

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        buffer
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
