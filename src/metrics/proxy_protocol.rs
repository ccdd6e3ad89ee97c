//! `portcullis_proxy_protocol_connections_total`: the connections of listeners with
//! `client_ip.proxy_protocol`, by what became of their PROXY protocol header.

use prometheus::{IntCounter, IntCounterVec};

use super::{Metrics, Registrar};

/// The PROXY protocol family, registered once per process.
#[derive(Clone)]
pub(super) struct ProxyProtocolFamilies {
    connections: IntCounterVec,
}

impl ProxyProtocolFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        ProxyProtocolFamilies {
            connections: r.counter(
                "portcullis_proxy_protocol_connections_total",
                "Connections of listeners with client_ip.proxy_protocol, by outcome: served \
                 (accepted, local, unknown, absent) or closed before HTTP (missing, \
                 wrong_version, malformed, untrusted, timeout, closed).",
                &["listener", "outcome"],
            ),
        }
    }
}

impl Metrics {
    /// Handles for one listener's PROXY protocol outcomes.
    pub fn proxy_protocol(&self, listener: &str) -> ProxyProtocolMetrics {
        ProxyProtocolMetrics {
            outcomes: ProxyProtocolOutcome::ALL.map(|outcome| {
                self.proxy_protocol
                    .connections
                    .with_label_values(&[listener, outcome.label()])
            }),
        }
    }
}

/// The `outcome` label of `portcullis_proxy_protocol_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolOutcome {
    /// A header was read and its source address is the client's.
    Accepted,
    /// A version 2 `LOCAL` header (the balancer's own connection, such as a health
    /// check): the TCP peer is the client.
    Local,
    /// A header without an address (v1 `UNKNOWN`, v2 `UNSPEC` or a Unix socket): the
    /// TCP peer is the client.
    Unknown,
    /// `optional` listeners: a connection without a header, served as it came.
    Absent,
    /// The connection does not start with a header, and the listener requires one.
    Missing,
    /// A header of the version the listener does not take.
    WrongVersion,
    /// A header that does not parse, is too long, or was cut off.
    Malformed,
    /// A connection from a peer outside `client_ip.trusted_proxies` (on `optional`
    /// listeners: one that sent a header).
    Untrusted,
    /// The header did not arrive in time.
    Timeout,
    /// The client closed (or reset) the connection before it sent anything.
    Closed,
}

impl ProxyProtocolOutcome {
    pub const ALL: [ProxyProtocolOutcome; 10] = [
        ProxyProtocolOutcome::Accepted,
        ProxyProtocolOutcome::Local,
        ProxyProtocolOutcome::Unknown,
        ProxyProtocolOutcome::Absent,
        ProxyProtocolOutcome::Missing,
        ProxyProtocolOutcome::WrongVersion,
        ProxyProtocolOutcome::Malformed,
        ProxyProtocolOutcome::Untrusted,
        ProxyProtocolOutcome::Timeout,
        ProxyProtocolOutcome::Closed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ProxyProtocolOutcome::Accepted => "accepted",
            ProxyProtocolOutcome::Local => "local",
            ProxyProtocolOutcome::Unknown => "unknown",
            ProxyProtocolOutcome::Absent => "absent",
            ProxyProtocolOutcome::Missing => "missing",
            ProxyProtocolOutcome::WrongVersion => "wrong_version",
            ProxyProtocolOutcome::Malformed => "malformed",
            ProxyProtocolOutcome::Untrusted => "untrusted",
            ProxyProtocolOutcome::Timeout => "timeout",
            ProxyProtocolOutcome::Closed => "closed",
        }
    }
}

/// One listener's counters, one per outcome (in the order of
/// [`ProxyProtocolOutcome::ALL`]), resolved when the listener starts.
#[derive(Clone)]
pub struct ProxyProtocolMetrics {
    outcomes: [IntCounter; 10],
}

impl ProxyProtocolMetrics {
    pub fn count(&self, outcome: ProxyProtocolOutcome) {
        // `ALL` lists every variant in declaration order.
        self.outcomes[outcome as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_index_their_own_counter() {
        for (index, outcome) in ProxyProtocolOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index, "{outcome:?}");
        }
        let metrics = Metrics::new();
        let listener = metrics.proxy_protocol("edge");
        listener.count(ProxyProtocolOutcome::Timeout);
        let text = String::from_utf8(metrics.encode()).expect("UTF-8");
        assert!(text.contains(
            "portcullis_proxy_protocol_connections_total{listener=\"edge\",outcome=\"timeout\"} 1"
        ));
        assert!(text.contains(
            "portcullis_proxy_protocol_connections_total{listener=\"edge\",outcome=\"accepted\"} 0"
        ));
    }
}
