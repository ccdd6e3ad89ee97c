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
//! [`aggregate`] (calls of aggregate routes), [`policies`] (requests refused by a
//! route's policies), [`edge`] (CORS results, header transforms), [`proxy_protocol`]
//! (the PROXY headers of listeners behind L4 balancers), [`rate_limit`] (rate-limit decisions, local
//! store keys), [`stores`] (shared rate-limit stores: errors, latency, connections),
//! [`access_log`] (lines written, dropped, write errors), [`auth`] (auth decisions,
//! credential caches), [`jwt`] (JWT refusals, the verified-token cache, JWKS key sets),
//! [`spans`] (traces: spans exported and dropped) and [`config`] (reloads, the
//! configuration in use, the build); [`totals`] reads request counts back for the status
//! page. Everything is re-exported here: `crate::metrics::X` is the path.

mod access_log;
mod aggregate;
mod auth;
mod config;
mod edge;
mod jwt;
mod listeners;
mod policies;
mod proxy_protocol;
mod rate_limit;
mod requests;
mod spans;
mod stores;
mod totals;
mod upstreams;
mod websocket;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use access_log::AccessLogMetrics;
pub use aggregate::{CallMetrics, CallOutcome};
pub use auth::{AuthCounters, AuthResult, CacheCounters};
pub use edge::{CorsCounters, CORS_RESULTS};
pub use jwt::{JwksMetrics, JwtMetrics, JwtRejection, UnknownKeyOutcome};
pub use listeners::{
    ClientTimeouts, HandshakeFailure, ListenerMetrics, TlsMetrics, WorkerConnections, TLS_ALPNS,
    TLS_VERSIONS,
};
pub use proxy_protocol::{ProxyProtocolMetrics, ProxyProtocolOutcome};
pub use rate_limit::{RateLimitCounters, RateLimitDecision};
pub use requests::{RequestCounters, RouteMetrics, UNMATCHED_ROUTE};
pub use spans::TracingMetrics;
pub use stores::{StoreErrorKind, StoreMetrics};
pub use totals::{Count, Totals};
pub use upstreams::{
    EndpointHealthMetrics, EndpointMetrics, PoolMetrics, Redispatch, UpstreamMetrics,
    UpstreamOutcome,
};
pub use websocket::{CloseReason, UpgradeOutcome, WebSocketMetrics};

use access_log::AccessLogFamilies;
use aggregate::AggregateFamilies;
use auth::AuthFamilies;
use config::ConfigFamilies;
use edge::EdgeFamilies;
use jwt::JwtFamilies;
use listeners::ListenerFamilies;
use policies::PolicyFamilies;
use proxy_protocol::ProxyProtocolFamilies;
use rate_limit::RateLimitFamilies;
use requests::RequestFamilies;
use spans::TracingFamilies;
use stores::StoreFamilies;
use upstreams::UpstreamFamilies;
use websocket::WebSocketFamilies;

/// Latency buckets in seconds, from half a millisecond to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Every metric family of the gateway, registered once per process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: RequestFamilies,
    upstreams: UpstreamFamilies,
    listeners: ListenerFamilies,
    websocket: WebSocketFamilies,
    aggregate: AggregateFamilies,
    config: ConfigFamilies,
    policies: PolicyFamilies,
    edge: EdgeFamilies,
    proxy_protocol: ProxyProtocolFamilies,
    stores: StoreFamilies,
    rate_limit: RateLimitFamilies,
    access_log: AccessLogFamilies,
    auth: AuthFamilies,
    jwt: JwtFamilies,
    tracing: TracingFamilies,
}

impl Metrics {
    /// Creates the registry and registers every family. Panics only on a programming
    /// error (a malformed or duplicate family definition), at startup.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = Registrar(&registry);
        Metrics {
            requests: RequestFamilies::register(&r),
            upstreams: UpstreamFamilies::register(&r),
            listeners: ListenerFamilies::register(&r),
            websocket: WebSocketFamilies::register(&r),
            aggregate: AggregateFamilies::register(&r),
            config: ConfigFamilies::register(&r),
            policies: PolicyFamilies::register(&r),
            edge: EdgeFamilies::register(&r),
            proxy_protocol: ProxyProtocolFamilies::register(&r),
            stores: StoreFamilies::register(&r),
            rate_limit: RateLimitFamilies::register(&r),
            access_log: AccessLogFamilies::register(&r),
            auth: AuthFamilies::register(&r),
            jwt: JwtFamilies::register(&r),
            tracing: TracingFamilies::register(&r),
            registry,
        }
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

/// Registers families in the process's registry: each family file's `register` asks it
/// for its counters, gauges and histograms. Panics only on a programming error (a
/// malformed or duplicate family definition), at startup.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric families are defined once with valid names");
        c
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"))
    }

    /// A histogram with the [`LATENCY_BUCKETS`].
    fn histogram(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        self.register(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid histogram"),
        )
    }
}
