//! The client side of a listener: connections (per listener and per worker), client
//! timeouts, header fields dropped, HTTP/2 cancel floods, and TLS (handshakes and their
//! failures, connections by protocol, certificate expiry and reloads).

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{Metrics, Registrar};

/// The client-side families of listeners and workers, registered once per process.
#[derive(Clone)]
pub(super) struct ListenerFamilies {
    connections_active: IntGaugeVec,
    connections_total: IntCounterVec,
    worker_connections_active: IntGaugeVec,
    worker_connections_total: IntCounterVec,
    client_timeouts: IntCounterVec,
    header_fields_dropped: IntCounterVec,
    http2_cancel_floods: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_handshake_failures: IntCounterVec,
    tls_connections_active: IntGaugeVec,
    tls_certificate_expiry: IntGaugeVec,
    tls_certificate_reloads: IntCounterVec,
}

impl ListenerFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        ListenerFamilies {
            connections_active: r.gauge(
                "portcullis_connections_active",
                "Client connections open now.",
                &["listener"],
            ),
            connections_total: r.counter(
                "portcullis_connections_total",
                "Client connections accepted.",
                &["listener"],
            ),
            worker_connections_active: r.gauge(
                "portcullis_worker_connections_active",
                "Client connections open now, by the worker serving them.",
                &["worker"],
            ),
            worker_connections_total: r.counter(
                "portcullis_worker_connections_total",
                "Client connections accepted, by the worker that accepted them.",
                &["worker"],
            ),
            client_timeouts: r.counter(
                "portcullis_client_timeouts_total",
                "HTTP/1.1 client connections closed after idle_timeout, by what the client \
                 was doing: idle (no request), head (a request head not finished), \
                 response (not reading its response; over HTTP/2, a stream reset).",
                &["listener", "phase"],
            ),
            header_fields_dropped: r.counter(
                "portcullis_header_fields_dropped_total",
                "Request header fields removed before routing because their names contain \
                 `_` (listener option headers_with_underscores: drop).",
                &["listener"],
            ),
            http2_cancel_floods: r.counter(
                "portcullis_http2_cancel_floods_total",
                "HTTP/2 connections closed (GOAWAY) because the client cancelled most of \
                 its streams while they were being answered (paced rapid reset).",
                &["listener"],
            ),
            tls_handshakes: r.counter(
                "portcullis_tls_handshakes_total",
                "TLS handshakes completed, by protocol version and negotiated ALPN protocol.",
                &["listener", "version", "alpn"],
            ),
            tls_handshake_failures: r.counter(
                "portcullis_tls_handshake_failures_total",
                "TLS handshakes that failed, by reason.",
                &["listener", "reason"],
            ),
            tls_connections_active: r.gauge(
                "portcullis_tls_connections_active",
                "TLS connections open now (handshake done), by protocol version and ALPN protocol.",
                &["listener", "version", "alpn"],
            ),
            tls_certificate_expiry: r.gauge(
                "portcullis_tls_certificate_expiry_timestamp_seconds",
                "When the certificate served for a host expires (notAfter), in Unix seconds.",
                &["listener", "host"],
            ),
            tls_certificate_reloads: r.counter(
                "portcullis_tls_certificate_reloads_total",
                "Certificate files that changed on disk, by outcome (loaded, or rejected and the previous certificate kept).",
                &["listener", "outcome"],
            ),
        }
    }
}

impl Metrics {
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            active: self
                .listeners
                .connections_active
                .with_label_values(&[listener]),
            accepted: self
                .listeners
                .connections_total
                .with_label_values(&[listener]),
        }
    }

    /// Handles for the connections of worker `index`.
    pub fn worker(&self, index: usize) -> WorkerConnections {
        let worker = index.to_string();
        WorkerConnections {
            active: self
                .listeners
                .worker_connections_active
                .with_label_values(&[&worker]),
            accepted: self
                .listeners
                .worker_connections_total
                .with_label_values(&[&worker]),
        }
    }

    /// Handles for one listener's client timeouts.
    pub fn client_timeouts(&self, listener: &str) -> ClientTimeouts {
        let phase = |phase: &str| {
            self.listeners
                .client_timeouts
                .with_label_values(&[listener, phase])
        };
        ClientTimeouts {
            idle: phase("idle"),
            head: phase("head"),
            response: phase("response"),
        }
    }

    /// One listener's count of request header fields dropped for their names.
    pub fn header_fields_dropped(&self, listener: &str) -> IntCounter {
        self.listeners
            .header_fields_dropped
            .with_label_values(&[listener])
    }

    /// `portcullis_http2_cancel_floods_total` of one listener.
    pub fn http2_cancel_floods(&self, listener: &str) -> IntCounter {
        self.listeners
            .http2_cancel_floods
            .with_label_values(&[listener])
    }

    /// Handles for one TLS listener.
    pub fn tls(&self, listener: &str) -> TlsMetrics {
        let by_protocol = |family: &IntCounterVec| {
            TLS_VERSIONS.map(|version| {
                TLS_ALPNS.map(|alpn| family.with_label_values(&[listener, version, alpn]))
            })
        };
        TlsMetrics {
            handshakes: by_protocol(&self.listeners.tls_handshakes),
            active: TLS_VERSIONS.map(|version| {
                TLS_ALPNS.map(|alpn| {
                    self.listeners
                        .tls_connections_active
                        .with_label_values(&[listener, version, alpn])
                })
            }),
            failures: HandshakeFailure::ALL.map(|reason| {
                self.listeners
                    .tls_handshake_failures
                    .with_label_values(&[listener, reason.label()])
            }),
            expiry: self.listeners.tls_certificate_expiry.clone(),
            listener: listener.into(),
            reloaded: self
                .listeners
                .tls_certificate_reloads
                .with_label_values(&[listener, "loaded"]),
            reload_rejected: self
                .listeners
                .tls_certificate_reloads
                .with_label_values(&[listener, "rejected"]),
        }
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
