//! Upstreams: a pooled HTTP client per upstream, its endpoints and load balancer, and
//! its concurrency limit ([`limiter`]).
//!
//! An [`Upstream`] is built from its configuration once. Proxied requests and
//! aggregate calls both go through [`Upstream::exchange`]: a permit from its limiter,
//! an endpoint from its balancer, and its client, whose keep-alive pool reuses
//! connections per endpoint.

mod exchange;
pub mod limiter;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::UpstreamBody;
use crate::config::{Balance, EndpointAddress, HostHeader, UpstreamConfig};
use crate::metrics::{EndpointMetrics, Metrics, UpstreamMetrics, UpstreamOutcome};

pub use exchange::{Exchange, ExchangeError, UpstreamError};
pub use limiter::{Limiter, Permit, Rejection};

/// One address of an upstream.
pub struct Endpoint {
    pub address: EndpointAddress,
    /// `host:port`, for upstreams that send the endpoint's own `Host`.
    pub host_value: HeaderValue,
    in_flight: AtomicUsize,
    metrics: EndpointMetrics,
}

impl Endpoint {
    /// Requests sent to this endpoint whose responses have not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn record(&self, outcome: UpstreamOutcome) {
        self.metrics.record(outcome);
    }
}

/// An upstream service: endpoints, balancer, limiter and connection pool.
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    balance: Balance,
    next: AtomicUsize,
    pub limiter: Limiter,
    pub(crate) client: Client<HttpConnector, UpstreamBody>,
    pub timeout: Duration,
    pub host_header: HostHeader,
    pub metrics: UpstreamMetrics,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, metrics: &Metrics) -> Self {
        let upstream_metrics = metrics.upstream(&config.name);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_endpoint)
            .build(connector);
        Upstream {
            name: config.name.clone(),
            endpoints: config
                .endpoints
                .iter()
                .map(|address| Endpoint {
                    host_value: HeaderValue::from_str(address.authority.as_str())
                        .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                    metrics: metrics.endpoint(&config.name, &address.label),
                    address: address.clone(),
                    in_flight: AtomicUsize::new(0),
                })
                .collect(),
            balance: config.balance,
            next: AtomicUsize::new(0),
            limiter: Limiter::new(
                config.max_in_flight,
                config.max_queue,
                config.queue_timeout,
                upstream_metrics.clone(),
            ),
            client,
            timeout: config.timeout,
            host_header: config.host_header,
            metrics: upstream_metrics,
        }
    }

    /// Chooses the endpoint for the next request, by the configured balance.
    pub fn pick(&self) -> usize {
        let count = self.endpoints.len();
        if count <= 1 {
            return 0;
        }
        match self.balance {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % count,
            Balance::Random => fastrand::usize(..count),
            Balance::LeastRequest => {
                let a = fastrand::usize(..count);
                let mut b = fastrand::usize(..count - 1);
                if b >= a {
                    b += 1;
                }
                if self.endpoints[b].in_flight() < self.endpoints[a].in_flight() {
                    b
                } else {
                    a
                }
            }
        }
    }
}
