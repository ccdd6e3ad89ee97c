//! Configuration: `gateway.yaml` read, validated and compiled into a [`Config`].
//!
//! Two stages: [`raw`] mirrors the file for serde (unknown keys are errors), then
//! [`compile`] checks every value and cross-reference, collecting all problems with
//! their file, line, column and key path, and builds the route table. A `Config` is
//! immutable; the gateway turns it into a runtime snapshot (see `crate::gateway`).

mod aggregate;
pub mod auth;
mod compile;
pub mod cors;
pub mod descriptors;
mod error;
pub mod header_transforms;
pub mod jwt;
mod locate;
pub mod raw;
mod stores;
pub mod units;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use ipnet::IpNet;

pub use crate::tls::{ListenerTls, UpstreamTls};
pub use crate::trace::{TracingSettings, TrustIncoming};
#[cfg(test)]
pub(crate) use compile::parse_key_part;
pub use error::{ConfigError, LoadError};
pub use raw::{
    Balance, ErrorDetail, HostHeader, MergeMode, ProxyProtocolMode, StreamMode, UnderscoreHeaders,
    UpstreamProtocol, WorkerModel,
};
pub use stores::{
    OnStoreError, RateLimitStoreConfig, RedisPassword, RedisStoreConfig, RedisUrl, LOCAL_STORE,
};

use crate::routing::{Rewrite, RouteSpec, RouteTable};
use crate::template::CallTemplate;

/// A validated configuration, ready to serve.
pub struct Config {
    /// Where it came from, for messages.
    pub source: String,
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<AdminConfig>,
    /// Sorted by name.
    pub upstreams: Vec<UpstreamConfig>,
    /// In file order; the route table refers to them by index.
    pub routes: Vec<RouteConfig>,
    /// Sorted by name.
    pub policies: Vec<PolicyConfig>,
    /// The named identities, sorted by name; auth policies refer to them by index.
    pub consumers: Vec<auth::ConsumerConfig>,
    /// The shared rate-limit stores, sorted by name (see [`Config::rate_limit_store`]).
    pub rate_limit_stores: Vec<RateLimitStoreConfig>,
    pub router: RouteTable,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Threads serving traffic; 1 runs a single-threaded runtime.
    pub workers: usize,
    /// How the workers share connections (when there is more than one).
    pub worker_model: WorkerModel,
    /// Things that are valid but probably not what the author meant.
    pub warnings: Vec<ConfigError>,
    pub reload: ReloadConfig,
    /// Distributed tracing; `None`: off.
    pub tracing: Option<TracingSettings>,
    /// Each listener's access log (`None`: off), indexed like `listeners`. Kept apart
    /// from [`ListenerConfig`] so that a reload changing only the log does not restart
    /// the listener.
    pub access_logs: Vec<Option<AccessLogConfig>>,
}

/// A listener's access log, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub destination: AccessLogDestination,
    /// The share of successful requests logged (errors, gateway answers and slow
    /// requests always are).
    pub sample: f64,
    /// Requests that take at least this long are always logged.
    pub slow_over: Duration,
    /// The query string is logged.
    pub query: bool,
    /// Request header fields whose values are logged, in order.
    pub headers: Vec<LoggedHeader>,
    /// Lines waiting for the writer at most.
    pub queue: usize,
}

/// Where an access log's lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccessLogDestination {
    Stdout,
    /// Appended to, reopened on `SIGUSR1`.
    File(std::path::PathBuf),
}

/// A request header field an access log names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedHeader {
    pub name: http::HeaderName,
    /// A credential: logged as `[redacted]` unless the log's `unredacted` lists it.
    pub redacted: bool,
}

/// How the gateway notices that its configuration file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the file (and its directory, to see editors that write a new file and
    /// rename it over the old one).
    pub watch: bool,
    /// Also compare the file's content this often: catches changes that file
    /// notifications miss (bind mounts, network file systems).
    pub poll_interval: Duration,
}

/// One client-facing listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// Connections open at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    pub limits: ClientLimits,
    /// Terminates TLS when set; plain HTTP (and h2c) otherwise.
    pub tls: Option<ListenerTls>,
    /// On a plain listener: answer every request with a redirect to `https://` on this
    /// port instead of routing it.
    pub redirect_to_https: Option<u16>,
    /// How much of a gateway error this listener's clients are told.
    pub error_detail: ErrorDetail,
    /// How the client's address is found behind proxies.
    pub client_ip: ClientIpConfig,
}

/// How a listener finds the client's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIpConfig {
    /// Peers whose `X-Forwarded-For` is believed: the list is walked from the right, and
    /// the first address outside these ranges is the client. Empty: the TCP peer is.
    /// With `proxy_protocol`, also the peers whose PROXY headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Read a PROXY protocol header before anything else on each connection.
    pub proxy_protocol: Option<ProxyProtocolConfig>,
}

/// A listener's PROXY protocol: which headers it takes, and how long one may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyProtocolConfig {
    pub mode: ProxyProtocolMode,
    /// From the header's first byte to its last. The wait for the first byte is the
    /// listener's `idle_timeout`, as for a request: a balancer may send the header only
    /// with the client's first bytes.
    pub timeout: Duration,
}

/// A named policy, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub name: String,
    pub ip: Option<IpListConfig>,
    pub cors: Option<cors::CorsConfig>,
    pub headers: Option<header_transforms::HeaderTransformsConfig>,
    /// `rate_limit`: every entry is checked; the most restrictive answer wins.
    pub rate_limits: Vec<RateLimitConfig>,
    /// `auth`: how a request proves who it is.
    pub auth: Option<auth::AuthConfig>,
}

/// One entry of a policy's `rate_limit`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Its `name`, or its index in the policy's list: the `limit` metric label.
    pub label: String,
    /// The name it has in the `RateLimit-Policy` and `RateLimit` response fields: its
    /// `name`, else the policy's name when the policy has one limit, else
    /// `policy.index`.
    pub field_name: String,
    /// What the request is keyed by: the parts, in order, combined.
    pub key: Vec<RateLimitKeyPart>,
    /// `count` requests per `period`, on average.
    pub count: u32,
    pub period: Duration,
    /// Requests admitted at once (`burst`, default `count`).
    pub burst: u32,
    pub store: RateLimitStoreRef,
    /// Counted and logged, never refused.
    pub shadow: bool,
    /// Shown in the route's `RateLimit-Policy` and `RateLimit` fields (`advertise`,
    /// default true; never for a shadow limit).
    pub advertise: bool,
    /// Keys the local store holds at most.
    pub max_keys: usize,
}

/// A part of a rate limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKeyPart {
    /// The client's address (see `client_ip.trusted_proxies`).
    ClientIp,
    /// The route's name: without it, routes that share the policy share buckets.
    Route,
    /// A request header's (first) value.
    Header(http::HeaderName),
    /// A query parameter's (first) value, percent-decoded.
    Query(String),
    /// A path parameter of the route, percent-decoded.
    Param(String),
    /// The consumer an auth policy of the route identified (requests without one share
    /// one bucket).
    Consumer,
    /// A claim of the token a `jwt` auth method verified (`jwt.sub`); requests without
    /// the claim (or without a token) share one bucket.
    JwtClaim(String),
}

/// The part as the file writes it (`client_ip`, `header.x-api-key`, ...).
impl std::fmt::Display for RateLimitKeyPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateLimitKeyPart::ClientIp => f.write_str("client_ip"),
            RateLimitKeyPart::Route => f.write_str("route"),
            RateLimitKeyPart::Consumer => f.write_str("consumer"),
            RateLimitKeyPart::Header(name) => write!(f, "header.{name}"),
            RateLimitKeyPart::Query(name) => write!(f, "query.{name}"),
            RateLimitKeyPart::Param(name) => write!(f, "param.{name}"),
            RateLimitKeyPart::JwtClaim(name) => write!(f, "jwt.{name}"),
        }
    }
}

/// Which store decides a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitStoreRef {
    /// This process's own buckets (`store: local`, the default).
    Local,
    /// A `rate_limit_stores` entry, by name.
    Named(String),
}

/// Client addresses a policy allows or denies. A denied address is refused; with an
/// allow list, so is every address it does not cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpListConfig {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time allowed for a request's headers to arrive, counted from accept or from the
    /// end of the previous response, and for a client to take any of its response:
    /// bounds idle keep-alive connections, slow clients and clients that stop reading.
    pub idle_timeout: Duration,
    /// Request line plus headers, in bytes (431 beyond).
    pub max_header_size: usize,
    /// Number of request headers (431 beyond).
    pub max_headers: usize,
    /// Bytes of path and query (414 beyond).
    pub max_uri_length: usize,
    /// Bytes of request body (413 beyond).
    pub max_request_body: u64,
    /// Request header fields whose names contain `_`.
    pub headers_with_underscores: UnderscoreHeaders,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            idle_timeout: Duration::from_secs(60),
            max_header_size: 64 * 1024,
            max_headers: 100,
            max_uri_length: 8 * 1024,
            max_request_body: 1 << 30,
            headers_with_underscores: UnderscoreHeaders::Drop,
        }
    }
}

/// The admin listener: `/metrics`, `/healthz`, `/ready`, `/config`, `/reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub address: SocketAddr,
}

/// One upstream service and how to reach it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub endpoints: Vec<EndpointAddress>,
    pub balance: Balance,
    /// Requests in flight at once (the upstream's semaphore); with `adaptive`, the
    /// starting value.
    pub max_in_flight: usize,
    /// When set, the limit follows the upstream's latency between these bounds.
    pub adaptive: Option<AdaptiveLimit>,
    /// Requests allowed to wait for a permit; beyond that, 503 at once.
    pub max_queue: usize,
    /// Longest wait for a permit before 503.
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    /// Until the upstream's response headers.
    pub timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub pool_idle_timeout: Duration,
    pub host_header: HostHeader,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier: Option<OutlierConfig>,
    pub retry: Option<RetryConfig>,
    pub protocol: UpstreamProtocol,
    /// For `https://` endpoints; set when the upstream has any.
    pub tls: Option<UpstreamTls>,
}

/// When and how a failed request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub on: RetryOn,
    /// Each try's limit until response headers; the route's timeout bounds them all.
    pub per_try_timeout: Option<Duration>,
    /// Full-jitter exponential backoff between `backoff.0` and `backoff.1`.
    pub backoff: (Duration, Duration),
    /// Retries allowed, as a percentage of the upstream's recent requests.
    pub budget_percent: u32,
    /// Only these methods are retried.
    pub methods: Vec<http::Method>,
    /// A request body up to this size is kept so it can be sent again; requests with
    /// larger (or unsized, streamed) bodies are not retried.
    pub max_body_size: u64,
}

/// Which failures are worth another try.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    /// The connection broke before a response arrived.
    pub reset: bool,
    /// No response headers within the try's timeout.
    pub timeout: bool,
    pub statuses: Vec<u16>,
}

/// Bounds of an adaptive concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveLimit {
    pub min: usize,
    pub max: usize,
}

/// Active health checking of an upstream's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passing checks that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
    /// Consecutive failing checks that take an endpoint out.
    pub unhealthy_threshold: u32,
    /// Statuses that pass, inclusive.
    pub expected_status: (u16, u16),
}

/// Passive outlier ejection: endpoints that keep failing real requests are taken out
/// for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Connect failures, timeouts and 5xx answers in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length; each repeated ejection doubles it.
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// At most this share of an upstream's endpoints is ejected at once.
    pub max_ejection_percent: u8,
}

/// An endpoint's address, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddress {
    /// As written, for labels and messages (`http://127.0.0.1:9101`).
    pub label: String,
    pub scheme: Scheme,
    pub authority: Authority,
}

/// One route: what it matches and what answers it.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub spec: RouteSpec,
    pub target: RouteTarget,
    /// Indexes into [`Config::policies`], in the order the route applies them.
    pub policies: Vec<usize>,
    /// The route's requests go to the listener's access log (`access_log: off`: not).
    pub access_log: bool,
}

/// What answers a route's requests.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// One upstream, with the request streamed through.
    Proxy {
        /// Index into [`Config::upstreams`].
        upstream: usize,
        rewrite: Rewrite,
        /// Overrides the upstream's `timeout`.
        timeout: Option<Duration>,
        /// Overrides the upstream's `retry`.
        retry: Option<RetryConfig>,
        /// WebSocket upgrades; `None` when the upstream speaks HTTP/2 only.
        websocket: Option<WebSocketConfig>,
        /// Hedged requests: a second try to another endpoint when the first is slow.
        hedge: Option<Box<HedgeConfig>>,
    },
    /// Several upstream calls, their JSON merged.
    Aggregate(AggregateConfig),
}

/// A route's hedged requests.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeConfig {
    /// When a try that has not answered gets a hedge.
    pub after: HedgeDelay,
    /// Hedges per request, at most (1 to 3).
    pub max: u32,
    /// Each hedge draws on the upstream's retry budget: at most this share of requests.
    pub budget_percent: u32,
    /// Methods that are hedged (default: the idempotent ones).
    pub methods: Vec<http::Method>,
}

/// The delay before a hedge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    Fixed(Duration),
    /// This percentile (e.g. 0.95) of the route's observed latency.
    Percentile(f64),
}

/// Limits of a route's WebSocket connections (HTTP/1.1 upgrades, tunnelled once the
/// upstream answers 101).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketConfig {
    /// Upgraded connections open at once; further upgrade requests get 503.
    pub max_connections: usize,
    /// An upgraded connection with no bytes in either direction this long is closed.
    pub idle_timeout: Duration,
}

/// An aggregate route: calls made concurrently (in dependency order) and merged.
#[derive(Debug, Clone)]
pub struct AggregateConfig {
    /// For the whole route; calls still outstanding then are cancelled.
    pub timeout: Duration,
    pub merge: MergeMode,
    pub stream: Option<StreamMode>,
    /// Largest body accepted from one call.
    pub max_body_size: u64,
    /// Sorted by name.
    pub calls: Vec<CallConfig>,
}

/// One call of an aggregate route.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub name: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    pub method: http::Method,
    pub path: CallTemplate,
    /// Client headers passed on to this call (`x-request-id` always is).
    pub headers: Vec<http::HeaderName>,
    /// For this call, from its start until its body is read.
    pub timeout: Option<Duration>,
    /// A failed optional call leaves `null` and a note; a failed required call fails
    /// the route.
    pub optional: bool,
    /// Keep only these top-level fields of the result.
    pub select: Option<Vec<String>>,
    /// Calls whose results this call's path uses (indices into the route's calls).
    pub depends_on: Vec<usize>,
}

impl Config {
    /// Reads and compiles the file at `path`.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_yaml(&text, &file)
    }

    /// Compiles YAML text; `file` names it in error messages, and relative paths in it
    /// (certificates, keys) are resolved against `file`'s directory.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, LoadError> {
        compile::compile(text, file).map_err(LoadError::Invalid)
    }

    /// How many single-threaded worker runtimes serve traffic: `workers` with
    /// `worker_model: per_core`, else one (a multi-threaded runtime counts as one: its
    /// threads share everything).
    pub fn per_core_workers(&self) -> usize {
        match self.worker_model {
            WorkerModel::PerCore => self.workers,
            WorkerModel::WorkStealing => 1,
        }
    }

    /// The index in [`Config::rate_limit_stores`] of the shared store called `name`;
    /// `None` for [`LOCAL_STORE`] and for names the file does not define.
    pub fn rate_limit_store(&self, name: &str) -> Option<usize> {
        self.rate_limit_stores.iter().position(|s| s.name == name)
    }

    /// The upstreams a route calls, by name.
    pub fn upstreams_of(&self, route: &RouteConfig) -> Vec<&str> {
        match &route.target {
            RouteTarget::Proxy { upstream, .. } => vec![self.upstreams[*upstream].name.as_str()],
            RouteTarget::Aggregate(aggregate) => {
                let mut names: Vec<&str> = aggregate
                    .calls
                    .iter()
                    .map(|c| self.upstreams[c.upstream].name.as_str())
                    .collect();
                names.dedup();
                names
            }
        }
    }
}

/// Defaults that apply when a key is left out.
pub mod defaults {
    use std::time::Duration;

    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const ACCESS_LOG_QUEUE: usize = 4096;
    pub const ACCESS_LOG_SLOW_OVER: Duration = Duration::from_secs(1);
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_IN_FLIGHT: usize = 512;
    pub const MAX_QUEUE: usize = 512;
    pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_IDLE_PER_ENDPOINT: usize = 256;
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(2);
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    pub const HEALTHY_THRESHOLD: u32 = 2;
    pub const UNHEALTHY_THRESHOLD: u32 = 3;
    pub const CONSECUTIVE_FAILURES: u32 = 5;
    pub const BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
    pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
    pub const MAX_EJECTION_PERCENT: u8 = 50;
    pub const RETRY_BACKOFF: (Duration, Duration) =
        (Duration::from_millis(25), Duration::from_millis(250));
    pub const RETRY_BUDGET_PERCENT: u32 = 20;
    pub const RETRY_MAX_BODY_SIZE: u64 = 64 * 1024;
    pub const AGGREGATE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const AGGREGATE_MAX_BODY_SIZE: u64 = 10 << 20;
    pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const PROXY_PROTOCOL_TIMEOUT: Duration = Duration::from_secs(5);
    pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
    pub const WEBSOCKET_MAX_CONNECTIONS: usize = 1024;
    pub const WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    /// Keys a rate limit's local store holds at most.
    pub const RATE_LIMIT_MAX_KEYS: usize = 100_000;
    /// A shared rate-limit store's limit on one decision.
    pub const RATE_LIMIT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
    /// A shared rate-limit store's connections per process (at least one per worker).
    pub const RATE_LIMIT_STORE_POOL: usize = 4;
    /// The largest `pool` a shared store may ask for.
    pub const RATE_LIMIT_STORE_MAX_POOL: usize = 1024;
    pub const REDIS_PORT: u16 = 6379;
    /// Entries of a cache of verified credentials (basic auth, forward auth).
    pub const AUTH_CACHE_MAX_ENTRIES: usize = 10_000;
    /// How long a verified basic credential is believed (forward auth: at most).
    pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);
    /// A forward-auth sub-request's limit, from its start to its body's end.
    pub const FORWARD_AUTH_TIMEOUT: Duration = Duration::from_secs(2);
    /// The largest body of a forward-auth refusal relayed to the client.
    pub const FORWARD_AUTH_MAX_BODY: u64 = 64 * 1024;
}
