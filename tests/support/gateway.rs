//! The gateway under test, described the way a test reads:
//!
//! ```ignore
//! let gw = Gateway::new()
//!     .upstream("users", Upstream::new(&backend).max_in_flight(4))
//!     .route("/api", "users")
//!     .admin()
//!     .start()
//!     .await;
//! ```
//!
//! Each builder renders its part of `gateway.yaml` as a YAML value (never by pasting
//! text), so paths, hosts and templates need no escaping. What the builders leave out
//! is left to the gateway's defaults. Listener `public` on `127.0.0.1:0` is added when
//! a test names no listener; every listener and the admin listener bind port 0 unless a
//! test gives an address. `raw` on each builder sets a key from a YAML fragment, for a
//! test that exercises a key the builders do not know.
//!
//! Tests whose subject is the text of the file (error locations, parse errors) keep
//! their YAML literal.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::Method;
use portcullis::RunningGateway;
use serde_yaml::{Mapping, Value};

use super::Backend;

/// A YAML mapping whose keys keep the order they were set in.
#[derive(Debug, Clone, Default)]
struct Map(Mapping);

impl Map {
    fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(Value::from(key), value.into());
    }

    /// The mapping under `key`, created empty when absent.
    fn nested(&mut self, key: &str) -> &mut Mapping {
        let entry = self
            .0
            .entry(Value::from(key))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        match entry {
            Value::Mapping(mapping) => mapping,
            other => panic!("`{key}` is already set to {other:?}, not a mapping"),
        }
    }

    fn set_nested(&mut self, key: &str, inner: &str, value: impl Into<Value>) {
        self.nested(key).insert(Value::from(inner), value.into());
    }

    /// Sets `key` to the value a YAML fragment spells: the escape hatch.
    fn raw(&mut self, key: &str, yaml: &str) {
        let value: Value = serde_yaml::from_str(yaml)
            .unwrap_or_else(|e| panic!("raw value for `{key}` is not YAML ({e}): {yaml}"));
        self.set(key, value);
    }

    fn into_value(self) -> Value {
        Value::Mapping(self.0)
    }
}

/// A duration as the configuration writes it: `30s`, `250ms`, `500us`.
fn duration(d: Duration) -> Value {
    let text = if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    };
    Value::from(text)
}

fn path(p: &Path) -> Value {
    Value::from(p.display().to_string())
}

fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Sequence(items.into_iter().map(|s| Value::from(s.as_ref())).collect())
}

fn methods(list: &[Method]) -> Value {
    strings(list.iter().map(Method::as_str))
}

// ---------------------------------------------------------------------------------------
// The gateway

/// A whole configuration: listeners, the admin listener, upstreams, routes and the
/// process-wide keys.
#[derive(Debug, Default)]
pub struct Gateway {
    top: Map,
    listeners: Vec<Listener>,
    admin: Option<String>,
    upstreams: Map,
    routes: Vec<Route>,
}

impl Gateway {
    pub fn new() -> Gateway {
        Gateway::default()
    }

    /// Adds a listener (without any, the gateway gets [`Listener::public`]).
    pub fn listener(mut self, listener: Listener) -> Gateway {
        self.listeners.push(listener);
        self
    }

    /// The admin listener (`/metrics`, `/ready`, `/reload`) on `127.0.0.1:0`.
    pub fn admin(self) -> Gateway {
        self.admin_at("127.0.0.1:0")
    }

    pub fn admin_at(mut self, address: &str) -> Gateway {
        self.admin = Some(address.to_owned());
        self
    }

    pub fn workers(mut self, workers: usize) -> Gateway {
        self.top.set("workers", workers);
        self
    }

    pub fn worker_model(mut self, model: WorkerModel) -> Gateway {
        self.top.set("worker_model", model.as_str());
        self
    }

    pub fn shutdown_timeout(mut self, timeout: Duration) -> Gateway {
        self.top.set("shutdown_timeout", duration(timeout));
        self
    }

    /// `reload: { watch }`: whether the file is watched for changes.
    pub fn watch_config(mut self, watch: bool) -> Gateway {
        self.top.set_nested("reload", "watch", watch);
        self
    }

    /// `reload: { poll_interval }`.
    pub fn reload_poll_interval(mut self, interval: Duration) -> Gateway {
        self.top
            .set_nested("reload", "poll_interval", duration(interval));
        self
    }

    /// Adds upstream `name`: a [`Backend`], an endpoint URL or address, or an
    /// [`Upstream`] with options.
    pub fn upstream(mut self, name: &str, upstream: impl Into<Upstream>) -> Gateway {
        self.upstreams.set(name, upstream.into().into_value());
        self
    }

    /// A route named after `upstream` that sends every path under `path_prefix` to it.
    pub fn route(self, path_prefix: &str, upstream: &str) -> Gateway {
        self.route_with(Route::prefix(path_prefix).to(upstream))
    }

    /// Adds a route with options; routes keep the order they are added in.
    pub fn route_with(mut self, route: Route) -> Gateway {
        self.routes.push(route);
        self
    }

    /// Sets a top-level key from a YAML fragment.
    pub fn raw(mut self, key: &str, yaml: &str) -> Gateway {
        self.top.raw(key, yaml);
        self
    }

    /// The configuration as YAML text.
    pub fn yaml(&self) -> String {
        let mut root = self.top.clone();
        let listeners = if self.listeners.is_empty() {
            vec![Listener::public()]
        } else {
            self.listeners.clone()
        };
        root.set(
            "listeners",
            Value::Sequence(listeners.into_iter().map(|l| l.map.into_value()).collect()),
        );
        if let Some(address) = &self.admin {
            root.set_nested("admin", "address", address.as_str());
        }
        root.set("upstreams", self.upstreams.clone().into_value());
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| route.to_value(index))
            .collect();
        root.set("routes", Value::Sequence(routes));
        serde_yaml::to_string(&root.into_value()).expect("a YAML value renders")
    }

    /// Starts the gateway on this configuration.
    pub async fn start(self) -> RunningGateway {
        super::gateway_from_yaml(&self.yaml()).await
    }

    /// Writes the configuration to `file` and starts a gateway that reloads from it
    /// (`POST /reload` on the admin listener, or watching when `watch_config(true)`).
    pub async fn start_reloadable(self, file: &Path) -> RunningGateway {
        super::reloadable_from_file(file, &self.yaml()).await
    }
}

// ---------------------------------------------------------------------------------------
// Listeners

#[derive(Debug, Clone)]
pub struct Listener {
    map: Map,
}

impl Listener {
    /// Listener `public` on `127.0.0.1:0`, the one [`super::url`] addresses.
    pub fn public() -> Listener {
        Listener::named("public")
    }

    /// A listener on `127.0.0.1:0`, its access log off (the gateway's default is on,
    /// to stdout, which would only add noise to the tests' output): tests of the
    /// access log turn it on with [`Listener::access_log`].
    pub fn named(name: &str) -> Listener {
        let mut map = Map::default();
        map.set("name", name);
        map.set("address", "127.0.0.1:0");
        map.set("access_log", "off");
        Listener { map }
    }

    /// `access_log`, from a YAML fragment (`on`, `{ path: ..., sample: 0.1 }`).
    pub fn access_log(mut self, yaml: &str) -> Listener {
        self.map.raw("access_log", yaml);
        self
    }

    pub fn address(mut self, address: SocketAddr) -> Listener {
        self.map.set("address", address.to_string());
        self
    }

    /// `127.0.0.1:port`.
    pub fn port(self, port: u16) -> Listener {
        self.address(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn max_connections(mut self, max: usize) -> Listener {
        self.map.set("max_connections", max);
        self
    }

    pub fn idle_timeout(mut self, timeout: Duration) -> Listener {
        self.map.set("idle_timeout", duration(timeout));
        self
    }

    pub fn max_header_size(mut self, bytes: u64) -> Listener {
        self.map.set("max_header_size", bytes);
        self
    }

    pub fn max_headers(mut self, max: usize) -> Listener {
        self.map.set("max_headers", max);
        self
    }

    pub fn max_uri_length(mut self, max: usize) -> Listener {
        self.map.set("max_uri_length", max);
        self
    }

    pub fn max_request_body(mut self, bytes: u64) -> Listener {
        self.map.set("max_request_body", bytes);
        self
    }

    pub fn headers_with_underscores(mut self, rule: Underscores) -> Listener {
        self.map.set("headers_with_underscores", rule.as_str());
        self
    }

    pub fn tls(mut self, tls: Tls) -> Listener {
        self.map.set("tls", tls.into_value());
        self
    }

    /// `client_ip: { trusted_proxies }`: peers whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies(mut self, ranges: &[&str]) -> Listener {
        self.map
            .set_nested("client_ip", "trusted_proxies", ranges.to_vec());
        self
    }

    /// `client_ip: { proxy_protocol }`: `v1`, `v2`, `any` or `optional`. Headers are
    /// believed only from `trusted_proxies`.
    pub fn proxy_protocol(mut self, mode: &str) -> Listener {
        self.map.set_nested("client_ip", "proxy_protocol", mode);
        self
    }

    /// `client_ip: { proxy_protocol_timeout }`.
    pub fn proxy_protocol_timeout(mut self, timeout: Duration) -> Listener {
        self.map
            .set_nested("client_ip", "proxy_protocol_timeout", duration(timeout));
        self
    }

    /// `error_detail: verbose`: clients read the whole cause of gateway errors.
    pub fn verbose_errors(mut self) -> Listener {
        self.map.set("error_detail", "verbose");
        self
    }

    /// `redirect_to_https: true`.
    pub fn redirect_to_https(mut self) -> Listener {
        self.map.set("redirect_to_https", true);
        self
    }

    /// `redirect_to_https: { port }`.
    pub fn redirect_to_https_port(mut self, port: u16) -> Listener {
        self.map.set_nested("redirect_to_https", "port", port);
        self
    }

    pub fn raw(mut self, key: &str, yaml: &str) -> Listener {
        self.map.raw(key, yaml);
        self
    }
}

/// `headers_with_underscores`.
#[derive(Debug, Clone, Copy)]
pub enum Underscores {
    Drop,
    Allow,
    Reject,
}

impl Underscores {
    fn as_str(self) -> &'static str {
        match self {
            Underscores::Drop => "drop",
            Underscores::Allow => "allow",
            Underscores::Reject => "reject",
        }
    }
}

/// A listener's TLS: one certificate ([`Tls::certificate`]) or one per host
/// ([`Tls::per_host`]).
#[derive(Debug, Clone)]
pub struct Tls {
    map: Map,
    certificates: Option<Vec<Value>>,
}

impl Tls {
    /// One certificate and its key for every name.
    pub fn certificate(certificate: impl AsRef<Path>, private_key: impl AsRef<Path>) -> Tls {
        let mut map = Map::default();
        map.set("certificate", path(certificate.as_ref()));
        map.set("private_key", path(private_key.as_ref()));
        Tls {
            map,
            certificates: None,
        }
    }

    /// Certificates chosen by the name the client asks for (SNI); add them with
    /// [`Tls::host`].
    pub fn per_host() -> Tls {
        Tls {
            map: Map::default(),
            certificates: Some(Vec::new()),
        }
    }

    /// A certificate for `hosts` (with [`Tls::per_host`]).
    pub fn host(
        mut self,
        hosts: &[&str],
        certificate: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Tls {
        let mut entry = Map::default();
        entry.set("hosts", strings(hosts));
        entry.set("certificate", path(certificate.as_ref()));
        entry.set("private_key", path(private_key.as_ref()));
        self.certificates
            .get_or_insert_with(Vec::new)
            .push(entry.into_value());
        self
    }

    /// The host whose certificate answers clients that name no listed host.
    pub fn default_host(mut self, host: &str) -> Tls {
        self.map.set("default", host);
        self
    }

    pub fn handshake_timeout(mut self, timeout: Duration) -> Tls {
        self.map.set("handshake_timeout", duration(timeout));
        self
    }

    pub fn reload_interval(mut self, interval: Duration) -> Tls {
        self.map.set("reload_interval", duration(interval));
        self
    }

    /// Client certificates must chain to `ca` (mTLS).
    pub fn client_ca(mut self, ca: impl AsRef<Path>) -> Tls {
        self.map.set("client_ca", path(ca.as_ref()));
        self
    }

    pub fn client_auth(mut self, mode: ClientAuth) -> Tls {
        self.map.set("client_auth", mode.as_str());
        self
    }

    pub fn raw(mut self, key: &str, yaml: &str) -> Tls {
        self.map.raw(key, yaml);
        self
    }

    fn into_value(self) -> Value {
        let mut map = self.map;
        if let Some(certificates) = self.certificates {
            map.set("certificates", Value::Sequence(certificates));
        }
        map.into_value()
    }
}

/// `client_auth` of an mTLS listener.
#[derive(Debug, Clone, Copy)]
pub enum ClientAuth {
    Required,
    Optional,
}

impl ClientAuth {
    fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
        }
    }
}

/// `worker_model`.
#[derive(Debug, Clone, Copy)]
pub enum WorkerModel {
    PerCore,
    WorkStealing,
}

impl WorkerModel {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerModel::PerCore => "per_core",
            WorkerModel::WorkStealing => "work_stealing",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Upstreams

/// What can be an upstream's endpoint: a [`Backend`] (its `http://` URL), a URL, or a
/// socket address (`http://` it).
pub trait Endpoint {
    fn endpoint(&self) -> String;
}

impl Endpoint for Backend {
    fn endpoint(&self) -> String {
        self.url()
    }
}

impl Endpoint for str {
    fn endpoint(&self) -> String {
        self.to_owned()
    }
}

impl Endpoint for String {
    fn endpoint(&self) -> String {
        self.clone()
    }
}

impl Endpoint for SocketAddr {
    fn endpoint(&self) -> String {
        format!("http://{self}")
    }
}

impl<T: Endpoint + ?Sized> Endpoint for &T {
    fn endpoint(&self) -> String {
        (**self).endpoint()
    }
}

impl<E: Endpoint> From<E> for Upstream {
    fn from(endpoint: E) -> Upstream {
        Upstream::new(endpoint)
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    map: Map,
}

impl Upstream {
    /// An upstream with one endpoint.
    pub fn new(endpoint: impl Endpoint) -> Upstream {
        Upstream::endpoints([endpoint])
    }

    /// An upstream with these endpoints, in this order.
    pub fn endpoints<E: Endpoint>(endpoints: impl IntoIterator<Item = E>) -> Upstream {
        let mut map = Map::default();
        map.set(
            "endpoints",
            strings(endpoints.into_iter().map(|e| e.endpoint())),
        );
        Upstream { map }
    }

    pub fn max_in_flight(mut self, max: usize) -> Upstream {
        self.map.set("max_in_flight", max);
        self
    }

    /// `max_in_flight: { adaptive: { min, max } }`.
    pub fn adaptive_max_in_flight(mut self, min: usize, max: usize) -> Upstream {
        let mut bounds = Map::default();
        bounds.set("min", min);
        bounds.set("max", max);
        self.map
            .set_nested("max_in_flight", "adaptive", bounds.into_value());
        self
    }

    pub fn max_queue(mut self, max: usize) -> Upstream {
        self.map.set("max_queue", max);
        self
    }

    pub fn queue_timeout(mut self, timeout: Duration) -> Upstream {
        self.map.set("queue_timeout", duration(timeout));
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Upstream {
        self.map.set("connect_timeout", duration(timeout));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Upstream {
        self.map.set("timeout", duration(timeout));
        self
    }

    /// `pool: { idle_timeout }`.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Upstream {
        self.map
            .set_nested("pool", "idle_timeout", duration(timeout));
        self
    }

    pub fn host_header(mut self, host: HostHeader) -> Upstream {
        self.map.set("host_header", host.as_str());
        self
    }

    pub fn health_check(mut self, check: HealthCheck) -> Upstream {
        self.map.set("health_check", check.map.into_value());
        self
    }

    pub fn outlier(mut self, outlier: Outlier) -> Upstream {
        self.map.set("outlier", outlier.map.into_value());
        self
    }

    pub fn retry(mut self, retry: Retry) -> Upstream {
        self.map.set("retry", retry.map.into_value());
        self
    }

    pub fn protocol(mut self, protocol: Protocol) -> Upstream {
        self.map.set("protocol", protocol.as_str());
        self
    }

    pub fn tls(mut self, tls: UpstreamTls) -> Upstream {
        self.map.set("tls", tls.map.into_value());
        self
    }

    pub fn raw(mut self, key: &str, yaml: &str) -> Upstream {
        self.map.raw(key, yaml);
        self
    }

    fn into_value(self) -> Value {
        self.map.into_value()
    }
}

/// `host_header`: which `Host` the upstream receives.
#[derive(Debug, Clone, Copy)]
pub enum HostHeader {
    Client,
    Endpoint,
}

impl HostHeader {
    fn as_str(self) -> &'static str {
        match self {
            HostHeader::Client => "client",
            HostHeader::Endpoint => "endpoint",
        }
    }
}

/// `protocol`: how the gateway speaks to the endpoints.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    Http1,
    Http2,
    Auto,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Auto => "auto",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An upstream's `health_check`.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    map: Map,
}

impl HealthCheck {
    pub fn path(check_path: &str) -> HealthCheck {
        let mut map = Map::default();
        map.set("path", check_path);
        HealthCheck { map }
    }

    pub fn interval(mut self, interval: Duration) -> HealthCheck {
        self.map.set("interval", duration(interval));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> HealthCheck {
        self.map.set("timeout", duration(timeout));
        self
    }

    pub fn healthy_threshold(mut self, checks: u32) -> HealthCheck {
        self.map.set("healthy_threshold", checks);
        self
    }

    pub fn unhealthy_threshold(mut self, checks: u32) -> HealthCheck {
        self.map.set("unhealthy_threshold", checks);
        self
    }
}

/// An upstream's `outlier` ejection.
#[derive(Debug, Clone)]
pub struct Outlier {
    map: Map,
}

impl Outlier {
    pub fn consecutive_failures(failures: u32) -> Outlier {
        let mut map = Map::default();
        map.set("consecutive_failures", failures);
        Outlier { map }
    }

    pub fn base_ejection_time(mut self, time: Duration) -> Outlier {
        self.map.set("base_ejection_time", duration(time));
        self
    }
}

/// A `retry` policy, of an upstream or of a route.
#[derive(Debug, Clone)]
pub struct Retry {
    map: Map,
}

impl Retry {
    pub fn attempts(attempts: u32) -> Retry {
        let mut map = Map::default();
        map.set("attempts", attempts);
        Retry { map }
    }

    /// What is retried: statuses (`"503"`) and failures (`"connect_failure"`,
    /// `"reset"`).
    pub fn on(mut self, conditions: &[&str]) -> Retry {
        self.map.set("on", strings(conditions));
        self
    }

    /// `backoff`, as written: `1ms..2ms`.
    pub fn backoff(mut self, backoff: &str) -> Retry {
        self.map.set("backoff", backoff);
        self
    }

    /// `budget`, as written: `20%`.
    pub fn budget(mut self, budget: &str) -> Retry {
        self.map.set("budget", budget);
        self
    }

    pub fn methods(mut self, list: &[Method]) -> Retry {
        self.map.set("methods", methods(list));
        self
    }

    pub fn per_try_timeout(mut self, timeout: Duration) -> Retry {
        self.map.set("per_try_timeout", duration(timeout));
        self
    }
}

/// An upstream's `tls` client settings.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    map: Map,
}

impl UpstreamTls {
    /// No settings: the built-in roots verify the endpoints.
    pub fn new() -> UpstreamTls {
        UpstreamTls::default()
    }

    /// Endpoints' certificates must chain to `ca`.
    pub fn ca(ca: impl AsRef<Path>) -> UpstreamTls {
        UpstreamTls::new().with_ca(ca)
    }

    pub fn with_ca(mut self, ca: impl AsRef<Path>) -> UpstreamTls {
        self.map.set("ca", path(ca.as_ref()));
        self
    }

    pub fn server_name(mut self, name: &str) -> UpstreamTls {
        self.map.set("server_name", name);
        self
    }

    pub fn insecure_skip_verify(mut self) -> UpstreamTls {
        self.map.set("insecure_skip_verify", true);
        self
    }

    /// A client certificate for endpoints that ask for one.
    pub fn client_certificate(
        mut self,
        certificate: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> UpstreamTls {
        self.map.set("certificate", path(certificate.as_ref()));
        self.map.set("private_key", path(private_key.as_ref()));
        self
    }
}

// ---------------------------------------------------------------------------------------
// Routes

/// A route: what it matches, then where it sends the request and how.
#[derive(Debug, Clone)]
pub struct Route {
    name: Option<String>,
    matcher: Map,
    map: Map,
}

impl Route {
    /// Matches every path under `prefix`.
    pub fn prefix(prefix: &str) -> Route {
        Route::matching("path_prefix", prefix)
    }

    /// Matches `path` exactly, or as a template (`/users/{id}`).
    pub fn path(path: &str) -> Route {
        Route::matching("path", path)
    }

    fn matching(key: &str, value: &str) -> Route {
        let mut matcher = Map::default();
        matcher.set(key, value);
        Route {
            name: None,
            matcher,
            map: Map::default(),
        }
    }

    /// The route's name (in metrics and errors); without one, the upstream's name.
    pub fn named(mut self, name: &str) -> Route {
        self.name = Some(name.to_owned());
        self
    }

    /// The upstream the route sends requests to.
    pub fn to(mut self, upstream: &str) -> Route {
        self.map.set("upstream", upstream);
        self
    }

    pub fn host(mut self, host: &str) -> Route {
        self.matcher.set("host", host);
        self
    }

    pub fn methods(mut self, list: &[Method]) -> Route {
        self.matcher.set("methods", methods(list));
        self
    }

    /// Matches requests whose header `name` has `value`.
    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.matcher.set_nested("headers", name, value);
        self
    }

    pub fn strip_prefix(mut self, prefix: &str) -> Route {
        self.map.set_nested("rewrite", "strip_prefix", prefix);
        self
    }

    pub fn add_prefix(mut self, prefix: &str) -> Route {
        self.map.set_nested("rewrite", "add_prefix", prefix);
        self
    }

    /// `rewrite: { path }`: the upstream path, from a template.
    pub fn rewrite_path(mut self, template: &str) -> Route {
        self.map.set_nested("rewrite", "path", template);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Route {
        self.map.set("timeout", duration(timeout));
        self
    }

    pub fn retry(mut self, retry: Retry) -> Route {
        self.map.set("retry", retry.map.into_value());
        self
    }

    pub fn websocket(mut self, websocket: WebSocket) -> Route {
        self.map.set("websocket", websocket.map.into_value());
        self
    }

    pub fn aggregate(mut self, aggregate: Aggregate) -> Route {
        self.map.set("aggregate", aggregate.into_value());
        self
    }

    /// `policies: [..]`: the named policies the route applies, in order.
    pub fn policies(mut self, names: &[&str]) -> Route {
        self.map.set("policies", names.to_vec());
        self
    }

    pub fn raw(mut self, key: &str, yaml: &str) -> Route {
        self.map.raw(key, yaml);
        self
    }

    fn to_value(&self, index: usize) -> Value {
        let upstream = self
            .map
            .0
            .get("upstream")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let name = self
            .name
            .clone()
            .or(upstream)
            .unwrap_or_else(|| format!("route{index}"));
        let mut route = Map::default();
        route.set("name", name);
        route.set("match", self.matcher.clone().into_value());
        for (key, value) in &self.map.0 {
            route.0.insert(key.clone(), value.clone());
        }
        route.into_value()
    }
}

/// A route's limits on WebSocket connections.
#[derive(Debug, Clone, Default)]
pub struct WebSocket {
    map: Map,
}

impl WebSocket {
    pub fn new() -> WebSocket {
        WebSocket::default()
    }

    pub fn max_connections(mut self, max: usize) -> WebSocket {
        self.map.set("max_connections", max);
        self
    }

    pub fn idle_timeout(mut self, timeout: Duration) -> WebSocket {
        self.map.set("idle_timeout", duration(timeout));
        self
    }
}

/// An aggregate route's calls and how their results are combined.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    map: Map,
    calls: Map,
}

impl Aggregate {
    pub fn new() -> Aggregate {
        Aggregate::default()
    }

    pub fn call(mut self, name: &str, call: Call) -> Aggregate {
        self.calls.set(name, call.map.into_value());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Aggregate {
        self.map.set("timeout", duration(timeout));
        self
    }

    /// `merge: flat`: the calls' fields side by side.
    pub fn merge_flat(mut self) -> Aggregate {
        self.map.set("merge", "flat");
        self
    }

    /// `stream: ndjson`: one line per call as it completes.
    pub fn stream_ndjson(mut self) -> Aggregate {
        self.map.set("stream", "ndjson");
        self
    }

    pub fn max_body_size(mut self, bytes: u64) -> Aggregate {
        self.map.set("max_body_size", bytes);
        self
    }

    fn into_value(self) -> Value {
        let mut map = self.map;
        map.set("calls", self.calls.into_value());
        map.into_value()
    }
}

/// One call of an aggregate route.
#[derive(Debug, Clone)]
pub struct Call {
    map: Map,
}

impl Call {
    /// Calls `upstream` at `path` (a template over the route's parameters, the query
    /// and other calls' results).
    pub fn new(upstream: &str, path: &str) -> Call {
        let mut map = Map::default();
        map.set("upstream", upstream);
        map.set("path", path);
        Call { map }
    }

    pub fn optional(mut self) -> Call {
        self.map.set("optional", true);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Call {
        self.map.set("timeout", duration(timeout));
        self
    }

    /// Keeps only these fields of the result.
    pub fn select(mut self, fields: &[&str]) -> Call {
        self.map.set("select", strings(fields));
        self
    }
}
