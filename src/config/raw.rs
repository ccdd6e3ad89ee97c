//! The file as written: serde structs that mirror `gateway.yaml` key for key.
//!
//! Nothing here is validated beyond its type; [`super::compile`] turns these into a
//! [`super::Config`]. Unknown keys are rejected here, with their location.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::http1::request::UnderscoreHeaders;
pub use crate::tls::ClientAuthMode;
use serde::Deserialize;

use super::units::{ByteSize, HumanDuration, ScalarString};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub shutdown_timeout: Option<HumanDuration>,
    pub workers: Option<usize>,
    #[serde(default)]
    pub worker_model: WorkerModel,
    #[serde(default)]
    pub reload: RawReload,
    /// Named policies that routes list in `policies`.
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    /// Named shared stores that rate limits name in `store` (`local` is the gateway's
    /// own and is not listed here).
    #[serde(default)]
    pub rate_limit_stores: BTreeMap<String, RawRateLimitStore>,
    /// Named identities that authentication policies recognise.
    #[serde(default)]
    pub consumers: super::auth::RawConsumers,
    /// Distributed tracing (OpenTelemetry); absent: off.
    pub tracing: Option<RawTracing>,
}

/// `tracing`: where spans go and which requests are traced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp: RawOtlp,
    /// The share of new traces sampled, 0 to 1.
    pub sample: Option<f64>,
    pub service_name: Option<String>,
    pub trust_incoming: Option<crate::trace::TrustIncoming>,
    pub queue: Option<usize>,
    pub batch: Option<usize>,
    pub export_interval: Option<HumanDuration>,
}

/// `tracing.otlp`: the OTLP/HTTP collector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    /// `http://host:port/v1/traces`.
    pub endpoint: String,
    pub timeout: Option<HumanDuration>,
}

/// A shared rate-limit store: where its state lives and what a failure to reach it means.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitStore {
    pub redis: RawRedisStore,
    pub on_error: Option<OnStoreError>,
}

/// A Redis server that holds the store's state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisStore {
    /// `redis://[user[:password]@]host[:port][/db]`.
    pub url: String,
    /// Each decision's limit, the round trip included.
    pub timeout: Option<HumanDuration>,
    /// Connections of the process to this server, spread over the workers.
    pub pool: Option<usize>,
}

/// What a rate limit decides when its shared store cannot answer in time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Fail open: the request goes on as if the limit allowed it.
    #[default]
    Allow,
    /// Fail closed: the request is refused at once (503).
    Deny,
}

impl OnStoreError {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
        }
    }
}

/// A named, reusable policy: the checks a route applies to each request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub ip: Option<RawIpList>,
    pub cors: Option<RawCors>,
    pub headers: Option<RawHeaderTransforms>,
    /// Rate limits, each checked on every request of the routes that list the policy.
    pub rate_limit: Option<Vec<RawRateLimit>>,
    /// How a request proves who it is (one method, or `any_of` / `all_of`).
    pub auth: Option<super::auth::RawAuth>,
}

/// Which browser origins may read a route's answers, and what their preflights may ask.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub origins: Vec<String>,
    pub methods: Option<Vec<HttpMethod>>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    pub max_age: Option<HumanDuration>,
}

/// Header fields changed on the request (to the upstream) and the answer (to the client).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderTransforms {
    #[serde(default)]
    pub request: RawHeaderEdits,
    #[serde(default)]
    pub response: RawHeaderEdits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderEdits {
    #[serde(default)]
    pub set: BTreeMap<String, ScalarString>,
    #[serde(default)]
    pub add: BTreeMap<String, ScalarString>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// One rate limit: `{ key: client_ip, rate: 100/s, burst: 200, store: local }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// The metric label and the name in the `RateLimit` fields; default: its index.
    pub name: Option<String>,
    /// One part (`client_ip`) or a list of parts (`[route, header.x-api-key]`).
    pub key: RawRateLimitKey,
    /// `N/s`, `N/m` (or `N/min`), `N/h`, `N/d`.
    pub rate: ScalarString,
    pub burst: Option<u32>,
    /// `local` (the default) or a `rate_limit_stores` entry.
    pub store: Option<String>,
    #[serde(default)]
    pub shadow: bool,
    /// Shown in the `RateLimit-Policy` and `RateLimit` response fields (default true).
    pub advertise: Option<bool>,
    /// Keys the local store holds at most.
    pub max_keys: Option<usize>,
}

/// A rate limit's `key`: one part, or several combined.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRateLimitKey {
    One(String),
    Many(Vec<String>),
}

/// Allowed and denied client addresses (CIDR ranges, or single addresses).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpList {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// How a listener finds the client's address behind proxies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Read a PROXY protocol header (from an L4 balancer) before anything else.
    pub proxy_protocol: Option<ProxyProtocolMode>,
    /// How long the rest of a PROXY header may take once its first byte has arrived.
    pub proxy_protocol_timeout: Option<HumanDuration>,
}

/// Which PROXY protocol headers a listener takes (`client_ip.proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocolMode {
    /// Every connection starts with a version 1 (text) header.
    V1,
    /// Every connection starts with a version 2 (binary) header.
    V2,
    /// Every connection starts with a header of either version.
    Any,
    /// A header of either version is read when a connection starts with one; other
    /// connections are served as they come (for moving a listener behind a balancer).
    Optional,
}

impl ProxyProtocolMode {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocolMode::V1 => "v1",
            ProxyProtocolMode::V2 => "v2",
            ProxyProtocolMode::Any => "any",
            ProxyProtocolMode::Optional => "optional",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub watch: Option<bool>,
    pub poll_interval: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    #[serde(deserialize_with = "super::units::socket_address")]
    pub address: SocketAddr,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<HumanDuration>,
    pub max_header_size: Option<ByteSize>,
    pub max_headers: Option<usize>,
    pub max_uri_length: Option<usize>,
    pub max_request_body: Option<ByteSize>,
    pub headers_with_underscores: Option<UnderscoreHeaders>,
    pub error_detail: Option<ErrorDetail>,
    pub client_ip: Option<RawClientIp>,
    pub tls: Option<RawTls>,
    pub redirect_to_https: Option<RawRedirect>,
    /// On (JSON lines to stdout) unless `off`; a mapping for a file and its settings.
    pub access_log: Option<RawAccessLog>,
}

/// A listener's `access_log`: `on`, `off`, or its settings (which turn it on).
#[derive(Debug)]
pub enum RawAccessLog {
    Switch(bool),
    Settings(RawAccessLogSettings),
}

/// The settings of a listener's access log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLogSettings {
    /// A file the lines are appended to; stdout when left out.
    pub path: Option<PathBuf>,
    /// The share of successful requests logged, from 0 to 1.
    pub sample: Option<f64>,
    /// Requests that take longer are logged whatever `sample` says.
    pub slow_over: Option<HumanDuration>,
    /// Log the query string with the path.
    pub query: Option<bool>,
    /// Request header fields whose values are logged.
    pub headers: Option<Vec<String>>,
    /// Credential fields of `headers` logged in clear instead of redacted.
    pub unredacted: Option<Vec<String>>,
    /// Lines waiting for the writer; beyond, lines are dropped and counted.
    pub queue: Option<usize>,
}

impl<'de> Deserialize<'de> for RawAccessLog {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SwitchOrMap::<true>)
    }
}

/// `on`/`off` (or `true`/`false`); for [`RawAccessLog`], also a mapping of settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSwitch(pub bool);

impl<'de> Deserialize<'de> for RawSwitch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(SwitchOrMap::<false>)? {
            RawAccessLog::Switch(on) => Ok(RawSwitch(on)),
            RawAccessLog::Settings(_) => Err(serde::de::Error::custom("expected `on` or `off`")),
        }
    }
}

/// Reads `on`, `off`, `true`, `false`, and (when `MAP`) a mapping of access-log settings.
struct SwitchOrMap<const MAP: bool>;

impl<'de, const MAP: bool> serde::de::Visitor<'de> for SwitchOrMap<MAP> {
    type Value = RawAccessLog;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if MAP {
            f.write_str("`on`, `off` or a mapping such as { path: /var/log/portcullis/access.log }")
        } else {
            f.write_str("`on` or `off`")
        }
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(RawAccessLog::Switch(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v {
            "on" => Ok(RawAccessLog::Switch(true)),
            "off" => Ok(RawAccessLog::Switch(false)),
            other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
        }
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        if !MAP {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Map,
                &self,
            ));
        }
        RawAccessLogSettings::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            .map(RawAccessLog::Settings)
    }
}

/// How much of a gateway error a listener's clients are told.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorDetail {
    /// The status, a stable code, a short message and the request id; upstream
    /// addresses and library errors go to the log only.
    #[default]
    Brief,
    /// Also the full cause (upstream address, library error): for internal listeners.
    Verbose,
}

/// A listener's TLS: one certificate for every name (`certificate`, `private_key`), or
/// several chosen by the name the client asks for (`certificates`, SNI).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub certificates: Option<Vec<RawCertificate>>,
    /// A host of one of `certificates`: that certificate answers clients that send no
    /// name or one no certificate lists. The first certificate when left out.
    pub default: Option<String>,
    pub handshake_timeout: Option<HumanDuration>,
    /// How often the certificate and key files are checked for changes.
    pub reload_interval: Option<HumanDuration>,
    /// CA certificates (PEM) that client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    pub client_auth: Option<ClientAuthMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    #[serde(default)]
    pub hosts: Vec<String>,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// `redirect_to_https: true`, or `{ port: 8443 }` when HTTPS is not on 443.
#[derive(Debug)]
pub enum RawRedirect {
    Enabled(bool),
    Port(RawRedirectPort),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirectPort {
    pub port: u16,
}

impl<'de> Deserialize<'de> for RawRedirect {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RedirectVisitor;
        impl<'de> serde::de::Visitor<'de> for RedirectVisitor {
            type Value = RawRedirect;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or { port: 8443 }")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawRedirect::Enabled(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RawRedirectPort::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawRedirect::Port)
            }
        }
        deserializer.deserialize_any(RedirectVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(deserialize_with = "super::units::socket_address")]
    pub address: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub balance: Balance,
    pub max_in_flight: Option<RawMaxInFlight>,
    pub max_queue: Option<usize>,
    pub queue_timeout: Option<HumanDuration>,
    pub connect_timeout: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    #[serde(default)]
    pub pool: RawPool,
    #[serde(default)]
    pub host_header: HostHeader,
    pub health_check: Option<RawHealthCheck>,
    pub outlier: Option<RawOutlier>,
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    pub tls: Option<RawUpstreamTls>,
}

/// How `workers` share the traffic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerModel {
    /// One single-threaded runtime per worker, each accepting on its own `SO_REUSEPORT`
    /// socket; a connection stays on the worker that accepted it.
    #[default]
    PerCore,
    /// One multi-threaded runtime: any worker thread may run any connection, and idle
    /// threads steal work from busy ones.
    WorkStealing,
}

impl WorkerModel {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerModel::PerCore => "per_core",
            WorkerModel::WorkStealing => "work_stealing",
        }
    }
}

/// How the gateway speaks to an upstream's endpoints.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request per connection at a time (pooled keep-alive connections).
    #[default]
    Http1,
    /// HTTP/2 only, requests multiplexed over one connection per endpoint: prior
    /// knowledge (h2c) for `http://`, ALPN `h2` for `https://`.
    Http2,
    /// `https://`: whatever the endpoint picks by ALPN (`h2` or `http/1.1`); `http://`:
    /// HTTP/1.1.
    Auto,
}

/// The TLS client settings of an upstream with `https://` endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// CA certificates (PEM) the endpoints' certificates must chain to, instead of the
    /// built-in web PKI roots.
    pub ca: Option<PathBuf>,
    /// The name sent (SNI) and verified, instead of the endpoint's host.
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// A client certificate and its key, for upstreams that require one (mTLS).
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: u32,
    pub on: Option<Vec<ScalarString>>,
    pub per_try_timeout: Option<HumanDuration>,
    pub backoff: Option<String>,
    pub budget: Option<ScalarString>,
    pub methods: Option<Vec<HttpMethod>>,
    pub max_body_size: Option<ByteSize>,
}

/// A route's hedged requests: `{ after: 50ms | p95, max: 1, methods: [GET] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHedge {
    /// A duration, or `pNN`: the route's observed latency percentile.
    pub after: ScalarString,
    pub max: Option<u32>,
    pub budget: Option<ScalarString>,
    pub methods: Option<Vec<HttpMethod>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: String,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub expected_status: Option<ScalarString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection_time: Option<HumanDuration>,
    pub max_ejection_time: Option<HumanDuration>,
    pub max_ejection_percent: Option<u8>,
}

/// `max_in_flight: 128`, or `max_in_flight: { adaptive: { min, max, initial } }`.
///
/// Deserialized by hand (not `untagged`) so a wrong value says what is expected, at the
/// value's own line.
#[derive(Debug)]
pub enum RawMaxInFlight {
    Fixed(usize),
    Adaptive { adaptive: RawAdaptive },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdaptiveMap {
    adaptive: RawAdaptive,
}

impl<'de> Deserialize<'de> for RawMaxInFlight {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MaxInFlightVisitor;
        impl<'de> serde::de::Visitor<'de> for MaxInFlightVisitor {
            type Value = RawMaxInFlight;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a number of requests such as 128, or { adaptive: { min, max, initial } }",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                usize::try_from(v)
                    .map(RawMaxInFlight::Fixed)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RawAdaptiveMap::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(
                    |m| RawMaxInFlight::Adaptive {
                        adaptive: m.adaptive,
                    },
                )
            }
        }
        deserializer.deserialize_any(MaxInFlightVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdaptive {
    pub min: Option<usize>,
    pub max: Option<usize>,
    pub initial: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub max_idle_per_endpoint: Option<usize>,
    pub idle_timeout: Option<HumanDuration>,
}

/// How an upstream spreads requests over its endpoints.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Of two endpoints picked at random, the one with fewer requests in flight.
    LeastRequest,
    /// An endpoint picked at random.
    Random,
}

/// Which `Host` header an upstream receives.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    /// The client's `Host`, unchanged.
    #[default]
    Client,
    /// The endpoint's own `host:port`.
    Endpoint,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub upstream: Option<String>,
    pub rewrite: Option<RawRewrite>,
    pub timeout: Option<HumanDuration>,
    pub retry: Option<RawRetry>,
    pub hedge: Option<RawHedge>,
    pub aggregate: Option<RawAggregate>,
    pub websocket: Option<RawWebSocket>,
    /// Names of `policies`, applied in this order.
    #[serde(default)]
    pub policies: Vec<String>,
    /// `off`: this route's requests are not in the access log.
    pub access_log: Option<RawSwitch>,
}

/// Limits of a route's WebSocket (HTTP/1.1 `Upgrade: websocket`) connections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregate {
    pub timeout: Option<HumanDuration>,
    #[serde(default)]
    pub merge: MergeMode,
    pub stream: Option<StreamMode>,
    pub max_body_size: Option<ByteSize>,
    pub calls: BTreeMap<String, RawCall>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCall {
    pub upstream: String,
    pub path: String,
    pub method: Option<HttpMethod>,
    #[serde(default)]
    pub headers: Vec<String>,
    pub timeout: Option<HumanDuration>,
    #[serde(default)]
    pub optional: bool,
    pub select: Option<Vec<String>>,
}

/// How an aggregate route combines its calls' results.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// `{"call": result, ...}`.
    #[default]
    Keyed,
    /// The fields of every call's (object) result side by side; a field two calls
    /// both return is a conflict, reported, never silently overwritten.
    Flat,
}

/// How an aggregate route sends its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// One JSON line per call as it completes, then a summary line.
    Ndjson,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<HttpMethod>>,
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, ScalarString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub strip_prefix: Option<String>,
    pub add_prefix: Option<String>,
    pub path: Option<String>,
}

/// The request methods a route can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Trace,
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::Random => "random",
        })
    }
}

impl HttpMethod {
    pub fn to_method(self) -> http::Method {
        match self {
            HttpMethod::Get => http::Method::GET,
            HttpMethod::Head => http::Method::HEAD,
            HttpMethod::Post => http::Method::POST,
            HttpMethod::Put => http::Method::PUT,
            HttpMethod::Delete => http::Method::DELETE,
            HttpMethod::Patch => http::Method::PATCH,
            HttpMethod::Options => http::Method::OPTIONS,
            HttpMethod::Trace => http::Method::TRACE,
        }
    }
}
