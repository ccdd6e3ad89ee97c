//! Upstreams: a pooled HTTP client per upstream, its endpoints and load balancer, and
//! its concurrency limit ([`limiter`]).
//!
//! Endpoints are `http://` or `https://` (rustls, see [`crate::tls`]);
//! the upstream's `protocol` chooses HTTP/1.1, HTTP/2 (h2c with prior knowledge, or ALPN
//! `h2`) or whatever ALPN negotiates. HTTP/1.1 goes through the gateway's own client
//! ([`http1`]) over per-endpoint pools ([`connections`]); the others through
//! hyper-util's client. [`received`] makes their responses look alike.
//!
//! An [`Upstream`] is built from each configuration, sharing its limiter and pool
//! with the previous configuration's upstream of the same name. Proxied requests and
//! aggregate calls both go through [`Upstream::exchange`]: a permit from its limiter,
//! an endpoint from its balancer, and its client, whose keep-alive pool reuses
//! connections per endpoint. A request that could not connect to its endpoint goes to
//! another one ([`exchange`]), and the endpoint is marked down ([`health`]).

pub mod adaptive;
mod body;
mod connections;
mod exchange;
pub mod health;
mod hedge;
pub(crate) mod http1;
pub mod limiter;
mod received;
mod retry;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, Uri, Version};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{
    Balance, EndpointAddress, HealthCheckConfig, HostHeader, OutlierConfig, RetryConfig,
    UpstreamConfig, UpstreamProtocol, UpstreamTls,
};
use crate::metrics::{EndpointMetrics, Metrics, UpstreamMetrics, UpstreamOutcome};

pub use body::{ResponseBody, UpstreamBody};
use connections::{Http1Pool, PoolSettings};
pub use exchange::{Exchange, ExchangeError, UpstreamError, Wait};
pub use hedge::Hedge;
pub use limiter::{Limiter, Permit, Rejection};
pub use received::{ReceivedBody, UpstreamUpgrade};

/// One address of an upstream.
pub struct Endpoint {
    pub address: EndpointAddress,
    /// `host:port`, for upstreams that send the endpoint's own `Host`.
    pub host_value: HeaderValue,
    in_flight: AtomicUsize,
    metrics: EndpointMetrics,
    pub health: health::EndpointHealth,
    /// The gateway's own pool of HTTP/1.1 connections (`protocol: http1`); other
    /// protocols go through the upstream's hyper-util client.
    connections: Option<Arc<Http1Pool>>,
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

    /// A response from this endpoint whose body broke off mid-stream.
    pub(crate) fn body_failed(&self) {
        self.metrics.body_failures.inc();
    }

    /// The URI of a request for `path` on this endpoint, in the form its transport
    /// sends: origin form (`/path?query`) over the gateway's own HTTP/1.1 pool, absolute
    /// (`http://host:port/path`) for the hyper-util client, which connects by it.
    pub fn uri(&self, path: PathAndQuery) -> Result<Uri, http::uri::InvalidUriParts> {
        if self.connections.is_some() {
            return Ok(Uri::from(path));
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.address.scheme.clone());
        parts.authority = Some(self.address.authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts)
    }
}

/// An upstream as one configuration describes it. Its long-lived parts are shared
/// with the previous configuration's upstream of the same name (see
/// [`Upstream::carry_over`]): the limiter always, the endpoints and their connection
/// pool while they are unchanged.
pub struct Upstream {
    pub name: String,
    balance: Balance,
    /// Until the response headers.
    pub timeout: Duration,
    pub host_header: HostHeader,
    outlier: Option<OutlierConfig>,
    pub limiter: Arc<Limiter>,
    budget: Arc<retry::RetryBudget>,
    pool: Arc<EndpointPool>,
    pub metrics: UpstreamMetrics,
    pub retry: Option<Arc<RetryConfig>>,
    adaptive: bool,
}

/// Endpoints, their load and the client that pools connections to them.
pub struct EndpointPool {
    identity: PoolIdentity,
    weak_self: std::sync::Weak<EndpointPool>,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    /// For `protocol: http2 | auto` (HTTP/2 multiplexing, ALPN); `None` for `http1`,
    /// whose endpoints pool their own connections.
    client: Option<Client<Connector, UpstreamBody>>,
}

/// Plain TCP, with TLS for `https://` endpoints.
pub(crate) type Connector = HttpsConnector<HttpConnector>;

/// What must be equal for a reloaded upstream to keep its pooled connections.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PoolIdentity {
    endpoints: Vec<EndpointAddress>,
    connect_timeout: Duration,
    max_idle_per_endpoint: usize,
    pool_idle_timeout: Duration,
    health_check: Option<HealthCheckConfig>,
    protocol: UpstreamProtocol,
    tls: Option<UpstreamTls>,
    /// Workers whose idle HTTP/1.1 connections are kept apart (see [`Http1Pool`]).
    worker_shards: usize,
}

impl PoolIdentity {
    fn of(config: &UpstreamConfig, worker_shards: usize) -> Self {
        PoolIdentity {
            endpoints: config.endpoints.clone(),
            connect_timeout: config.connect_timeout,
            max_idle_per_endpoint: config.max_idle_per_endpoint,
            pool_idle_timeout: config.pool_idle_timeout,
            health_check: config.health_check.clone(),
            protocol: config.protocol,
            tls: config.tls.clone(),
            worker_shards,
        }
    }
}

impl EndpointPool {
    /// Builds the pool, and starts its health checker when one is configured.
    fn start(identity: PoolIdentity, upstream: &str, metrics: &Metrics) -> Arc<Self> {
        let checks = identity.health_check.clone();
        let sweep_every = (identity.pool_idle_timeout / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        let pool = Arc::new_cyclic(|weak| Self::new(identity, weak.clone(), upstream, metrics));
        let pooled: Vec<_> = pool
            .endpoints
            .iter()
            .filter_map(|endpoint| endpoint.connections.as_ref().map(Arc::downgrade))
            .collect();
        if !pooled.is_empty() {
            connections::spawn_sweeper(pooled, sweep_every);
        }
        if let Some(checks) = checks {
            health::spawn_checker(Arc::downgrade(&pool), checks, upstream.to_owned());
        }
        pool
    }

    fn new(
        identity: PoolIdentity,
        weak_self: std::sync::Weak<EndpointPool>,
        upstream: &str,
        metrics: &Metrics,
    ) -> Self {
        let client =
            (identity.protocol != UpstreamProtocol::Http1).then(|| build_client(&identity));
        let http1_tls = identity.tls.as_ref().map(|tls| {
            let mut config = (*tls.client_config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            (
                tokio_rustls::TlsConnector::from(Arc::new(config)),
                tls.server_name.clone(),
            )
        });
        EndpointPool {
            endpoints: identity
                .endpoints
                .iter()
                .map(|address| Endpoint {
                    connections: (identity.protocol == UpstreamProtocol::Http1).then(|| {
                        let tls = match (&http1_tls, address.scheme == http::uri::Scheme::HTTPS) {
                            (Some((connector, name)), true) => Some((
                                connector.clone(),
                                name.clone().or_else(|| server_name_of(address)),
                            )),
                            _ => None,
                        };
                        Arc::new(Http1Pool::new(
                            address,
                            PoolSettings {
                                connect_timeout: identity.connect_timeout,
                                max_idle: identity.max_idle_per_endpoint,
                                idle_timeout: identity.pool_idle_timeout,
                                worker_shards: identity.worker_shards,
                                tls,
                            },
                            metrics.connection_pool(upstream, &address.label),
                        ))
                    }),
                    health: health::EndpointHealth::new(
                        metrics.endpoint_health(upstream, &address.label),
                        identity.health_check.is_some(),
                    ),
                    host_value: HeaderValue::from_str(address.authority.as_str())
                        .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                    metrics: metrics.endpoint(upstream, &address.label),
                    address: address.clone(),
                    in_flight: AtomicUsize::new(0),
                })
                .collect(),
            identity,
            weak_self,
            next: AtomicUsize::new(0),
            client,
        }
    }
}

/// The name an `https://` endpoint is sent (SNI) and verified by: its host.
fn server_name_of(address: &EndpointAddress) -> Option<rustls::pki_types::ServerName<'static>> {
    let host = address
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_owned()).ok()
}

/// The pooled client for `identity`: TCP with its connect timeout, TLS for `https://`
/// endpoints with ALPN offered by protocol, and HTTP/2 only for `protocol: http2`.
fn build_client(identity: &PoolIdentity) -> Client<Connector, UpstreamBody> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(identity.connect_timeout));
    http.set_nodelay(true);
    // The TLS layer sees https:// URIs through; endpoints are checked at load time.
    http.enforce_http(false);
    let tls_config = match &identity.tls {
        Some(tls) => (*tls.client_config).clone(),
        // Plain endpoints only: the TLS layer passes http:// through and never uses this.
        None => plain_only_tls_config(),
    };
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http();
    let builder = match identity.tls.as_ref().and_then(|t| t.server_name.clone()) {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    let connector = match identity.protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
        UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(http),
        UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(http),
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(identity.pool_idle_timeout)
        .pool_max_idle_per_host(identity.max_idle_per_endpoint);
    if identity.protocol == UpstreamProtocol::Http2 {
        client.http2_only(true);
    }
    client.build(connector)
}

/// The TLS configuration of an upstream without `https://` endpoints: required by the
/// connector's type, never used.
fn plain_only_tls_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, metrics: &Metrics) -> Self {
        Self::carry_over(config, None, metrics, 1)
    }

    /// Builds the upstream for `config`, keeping `previous`'s limiter (reconfigured in
    /// place, so requests in flight stay counted) and, when the endpoints and
    /// connection settings are unchanged, its endpoints and pooled connections.
    pub fn carry_over(
        config: &UpstreamConfig,
        previous: Option<&Upstream>,
        metrics: &Metrics,
        worker_shards: usize,
    ) -> Self {
        let upstream_metrics = metrics.upstream(&config.name);
        let limiter = match previous {
            Some(previous) => {
                // An adaptive limit keeps the value it has learned.
                let limit = match (config.adaptive, previous.adaptive) {
                    (Some(_), true) => previous.limiter.limit(),
                    _ => config.max_in_flight,
                };
                previous
                    .limiter
                    .reconfigure(limit, config.max_queue, config.queue_timeout);
                previous.limiter.clone()
            }
            None => Arc::new(Limiter::new(
                config.max_in_flight,
                config.max_queue,
                config.queue_timeout,
                upstream_metrics.clone(),
            )),
        };
        limiter.set_adaptive(config.adaptive);
        let identity = PoolIdentity::of(config, worker_shards);
        let pool = match previous {
            Some(previous) if previous.pool.identity == identity => previous.pool.clone(),
            _ => EndpointPool::start(identity, &config.name, metrics),
        };
        Upstream {
            name: config.name.clone(),
            balance: config.balance,
            timeout: config.timeout,
            host_header: config.host_header,
            outlier: config.outlier,
            budget: previous.map_or_else(Default::default, |p| p.budget.clone()),
            retry: config.retry.clone().map(Arc::new),
            adaptive: config.adaptive.is_some(),
            limiter,
            pool,
            metrics: upstream_metrics,
        }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.pool.endpoints
    }

    /// The version of requests sent to this upstream: HTTP/2 for `protocol: http2`;
    /// otherwise HTTP/1.1, which the pool sends over HTTP/2 where ALPN chose `h2`.
    pub fn request_version(&self) -> Version {
        match self.pool.identity.protocol {
            UpstreamProtocol::Http2 => Version::HTTP_2,
            UpstreamProtocol::Http1 | UpstreamProtocol::Auto => Version::HTTP_11,
        }
    }

    /// Whether this upstream can take an HTTP/1.1 upgrade (WebSocket).
    pub fn speaks_http1(&self) -> bool {
        self.pool.identity.protocol != UpstreamProtocol::Http2
    }

    /// Chooses the endpoint for the next request by the configured balance, among
    /// the available ones (healthy, not ejected) not in `skip`; `None` when there is
    /// none.
    pub fn pick(&self, skip: &[usize]) -> Option<usize> {
        let pool = &*self.pool;
        let count = pool.endpoints.len();
        match self.balance {
            Balance::RoundRobin => {
                pool.available_from(pool.next.fetch_add(1, Ordering::Relaxed) % count, skip)
            }
            Balance::Random => pool.available_from(fastrand::usize(..count), skip),
            Balance::LeastRequest => {
                let a = pool.available_from(fastrand::usize(..count), skip)?;
                let b = pool
                    .available_from(fastrand::usize(..count), &[skip, &[a]].concat())
                    .unwrap_or(a);
                if pool.endpoints[b].in_flight() < pool.endpoints[a].in_flight() {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }

    /// Records a request's result for the endpoint's outlier ejection.
    pub fn observe(&self, endpoint: usize, failed: bool) {
        self.pool
            .observe(endpoint, failed, self.outlier.as_ref(), &self.name);
    }
}
