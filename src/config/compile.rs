//! From the raw file to a [`Config`]: every value checked, every cross-reference
//! resolved, every problem collected (not only the first) with its location.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Uri};

use super::error::ConfigError;
use super::locate::LocationIndex;
use super::raw::{
    RawConfig, RawListener, RawRedirect, RawRoute, RawTls, RawUpstream, RawUpstreamTls,
    UpstreamProtocol,
};
use super::{
    defaults, AdminConfig, ClientLimits, Config, EndpointAddress, ListenerConfig, ReloadConfig,
    RouteConfig, RouteTarget, UpstreamConfig, UpstreamTls, WebSocketConfig,
};
use crate::routing::{HostPattern, PathPattern, Rewrite, RouteSpec, RouteTable};
use crate::tls::{
    self, CertificateConfig, CertificateFile, CertificateFiles, ListenerTls, UpstreamTlsFiles,
};

/// Collects problems by key path; locations are resolved at the end.
pub(super) struct Problems<'a> {
    file: &'a str,
    index: LocationIndex,
    found: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Problems<'_> {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let error = self.locate(key.into(), message.into());
        self.found.push(error);
    }

    /// Something valid that is probably a mistake: reported, but the file loads.
    pub(super) fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let warning = self.locate(key.into(), message.into());
        self.warnings.push(warning);
    }

    /// `value` or `default`, which must be longer than zero (else a problem at `key`).
    pub(super) fn positive_duration(
        &mut self,
        key: String,
        value: Option<super::units::HumanDuration>,
        default: std::time::Duration,
    ) -> std::time::Duration {
        let value = value.map_or(default, |d| d.0);
        if value.is_zero() {
            self.add(key, "must be longer than 0s");
        }
        value
    }

    pub(super) fn error_count(&self) -> usize {
        self.found.len()
    }

    fn locate(&self, key: String, message: String) -> ConfigError {
        let location = self.index.locate(&key);
        ConfigError {
            file: self.file.to_owned(),
            line: location.map_or(1, |l| l.line),
            column: location.map_or(1, |l| l.column),
            key,
            message,
        }
    }
}

pub(super) fn compile(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    let raw: RawConfig = match serde_yaml::from_str::<Option<RawConfig>>(text) {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            return Err(vec![ConfigError {
                file: file.to_owned(),
                line: 1,
                column: 1,
                key: String::new(),
                message:
                    "the file is empty; it needs at least `listeners`, `upstreams` and `routes`"
                        .to_owned(),
            }])
        }
        Err(error) => return Err(vec![serde_error(&error, file)]),
    };
    let mut problems = Problems {
        file,
        index: LocationIndex::build(text),
        found: Vec::new(),
        warnings: Vec::new(),
    };

    if raw.listeners.is_empty() {
        problems.add("listeners", "at least one listener is needed");
    }
    // Relative certificate paths are relative to the configuration file.
    let base = Path::new(file).parent().unwrap_or(Path::new(""));
    let listeners = compile_listeners(&raw.listeners, base, &mut problems);
    let upstream_names: Vec<&str> = raw.upstreams.keys().map(String::as_str).collect();
    let upstreams: Vec<UpstreamConfig> = raw
        .upstreams
        .iter()
        .filter_map(|(name, upstream)| compile_upstream(name, upstream, base, &mut problems))
        .collect();
    let upstream_protocols: Vec<UpstreamProtocol> =
        raw.upstreams.values().map(|u| u.protocol).collect();
    let routes = compile_routes(
        &raw.routes,
        &upstream_names,
        &upstream_protocols,
        &mut problems,
    );

    if raw.workers == Some(0) {
        problems.add("workers", "must be at least 1");
    }
    if raw.reload.poll_interval.is_some_and(|d| d.0.is_zero()) {
        problems.add("reload.poll_interval", "must be longer than 0s");
    }
    if let Some(admin) = &raw.admin {
        if admin.address.port() != 0 && listeners.iter().any(|l| l.address == admin.address) {
            problems.add(
                "admin.address",
                format!("{} is also a listener's address", admin.address),
            );
        }
    }

    let specs: Vec<RouteSpec> = routes.iter().map(|r| r.spec.clone()).collect();
    let router = match RouteTable::build(&specs) {
        Ok(router) => Some(router),
        Err(errors) => {
            for error in errors {
                let key = match &raw.routes[error.route].matcher.path {
                    Some(_) => format!("routes[{}].match.path", error.route),
                    None => format!("routes[{}].match.path_prefix", error.route),
                };
                problems.add(key, error.message);
            }
            None
        }
    };

    match router {
        Some(router) if problems.found.is_empty() => Ok(Config {
            source: file.to_owned(),
            listeners,
            admin: raw.admin.map(|a| AdminConfig { address: a.address }),
            upstreams,
            routes,
            router,
            shutdown_timeout: raw
                .shutdown_timeout
                .map_or(defaults::SHUTDOWN_TIMEOUT, |d| d.0),
            workers: raw.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            worker_model: raw.worker_model,
            warnings: problems.warnings,
            reload: ReloadConfig {
                watch: raw.reload.watch.unwrap_or(true),
                poll_interval: raw
                    .reload
                    .poll_interval
                    .map_or(defaults::RELOAD_POLL_INTERVAL, |d| d.0),
            },
        }),
        _ => {
            let mut found = problems.found;
            found.sort_by_key(|e| (e.line, e.column));
            Err(found)
        }
    }
}

/// serde_yaml's own error, with its location split out of the message.
fn serde_error(error: &serde_yaml::Error, file: &str) -> ConfigError {
    let mut message = error.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    let (key, message) = match message.split_once(": ") {
        Some((key, rest)) if !key.contains(' ') => (key.to_owned(), rest.to_owned()),
        _ => (String::new(), message),
    };
    let location = error.location();
    ConfigError {
        file: file.to_owned(),
        line: location.as_ref().map_or(1, |l| l.line()),
        column: location.as_ref().map_or(1, |l| l.column()),
        key,
        message,
    }
}

fn check_name(kind: &str, name: &str, key: String, problems: &mut Problems) {
    if name.is_empty() {
        problems.add(key, format!("{kind} name must not be empty"));
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.add(
            key,
            format!("{kind} name {name:?} may contain only letters, digits, `-`, `_` and `.`"),
        );
    }
}

fn compile_listeners(
    raw: &[RawListener],
    base: &Path,
    problems: &mut Problems,
) -> Vec<ListenerConfig> {
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let defaults = ClientLimits::default();
    raw.iter()
        .enumerate()
        .map(|(i, listener)| {
            let key = |field: &str| format!("listeners[{i}].{field}");
            check_name("listener", &listener.name, key("name"), problems);
            if !names.insert(listener.name.as_str()) {
                problems.add(
                    key("name"),
                    format!("listener name {:?} is used twice", listener.name),
                );
            }
            // Port 0 asks the system for a free port: never a clash.
            if listener.address.port() != 0 && !addresses.insert(listener.address) {
                problems.add(
                    key("address"),
                    format!("address {} is used by two listeners", listener.address),
                );
            }
            let max_connections = listener
                .max_connections
                .unwrap_or(defaults::MAX_CONNECTIONS);
            if max_connections == 0 {
                problems.add(key("max_connections"), "must be at least 1");
            }
            let max_header_size = listener
                .max_header_size
                .map_or(defaults.max_header_size, |s| {
                    usize::try_from(s.0).unwrap_or(usize::MAX)
                });
            if max_header_size < 8192 {
                problems.add(key("max_header_size"), "must be at least 8KiB (8192 bytes)");
            }
            let max_headers = listener.max_headers.unwrap_or(defaults.max_headers);
            if max_headers == 0 {
                problems.add(key("max_headers"), "must be at least 1");
            }
            let max_uri_length = listener.max_uri_length.unwrap_or(defaults.max_uri_length);
            if max_uri_length < 16 {
                problems.add(key("max_uri_length"), "must be at least 16");
            }
            let idle_timeout = listener.idle_timeout.map_or(defaults.idle_timeout, |d| d.0);
            if idle_timeout.is_zero() {
                problems.add(key("idle_timeout"), "must be longer than 0s");
            }
            let tls = listener
                .tls
                .as_ref()
                .and_then(|raw| compile_tls(&key("tls"), raw, base, problems));
            let redirect_to_https = match &listener.redirect_to_https {
                None | Some(RawRedirect::Enabled(false)) => None,
                Some(RawRedirect::Enabled(true)) => Some(443),
                Some(RawRedirect::Port(port)) => {
                    if port.port == 0 {
                        problems.add(
                            key("redirect_to_https.port"),
                            "must be a port between 1 and 65535",
                        );
                    }
                    Some(port.port)
                }
            };
            if redirect_to_https.is_some() && listener.tls.is_some() {
                problems.add(
                    key("redirect_to_https"),
                    "is for plain HTTP listeners; this one already serves HTTPS",
                );
            }
            ListenerConfig {
                name: listener.name.clone(),
                address: listener.address,
                max_connections,
                limits: ClientLimits {
                    idle_timeout,
                    max_header_size,
                    max_headers,
                    max_uri_length,
                    max_request_body: listener
                        .max_request_body
                        .map_or(defaults.max_request_body, |s| s.0),
                    headers_with_underscores: listener.headers_with_underscores.unwrap_or_default(),
                },
                tls,
                redirect_to_https,
                error_detail: listener.error_detail.unwrap_or_default(),
            }
        })
        .collect()
}

/// A listener's `tls`: which certificates, read and checked now, serve which names.
/// `prefix` is the key path of the `tls` mapping.
fn compile_tls(
    prefix: &str,
    raw: &RawTls,
    base: &Path,
    problems: &mut Problems,
) -> Option<ListenerTls> {
    let key = |field: &str| format!("{prefix}.{field}");
    let provider = tls::crypto_provider();
    // (key path of the entry, hosts as written, certificate, private key)
    let entries: Vec<(String, &[String], &Path, &Path)> = match (
        &raw.certificate,
        &raw.private_key,
        &raw.certificates,
    ) {
        (Some(certificate), Some(private_key), None) => {
            vec![(prefix.to_owned(), &[][..], certificate, private_key)]
        }
        (None, None, Some(list)) => {
            if list.is_empty() {
                problems.add(key("certificates"), "list at least one certificate");
            }
            list.iter()
                .enumerate()
                .map(|(i, entry)| {
                    (
                        format!("{prefix}.certificates[{i}]"),
                        &entry.hosts[..],
                        entry.certificate.as_path(),
                        entry.private_key.as_path(),
                    )
                })
                .collect()
        }
        (_, _, Some(_)) => {
            problems.add(
                prefix,
                "give either `certificate` and `private_key`, or `certificates`, not both",
            );
            return None;
        }
        (Some(_), None, None) => {
            problems.add(key("certificate"), "needs `private_key` beside it");
            return None;
        }
        (None, Some(_), None) => {
            problems.add(key("private_key"), "needs `certificate` beside it");
            return None;
        }
        (None, None, None) => {
            problems.add(
                    prefix,
                    "needs `certificate` and `private_key`, or `certificates` (one entry per set of host names)",
                );
            return None;
        }
    };
    let by_sni = raw.certificates.is_some();

    let mut certificates = Vec::with_capacity(entries.len());
    let mut claimed: HashMap<String, usize> = HashMap::new();
    for (index, (entry_key, hosts, certificate, private_key)) in entries.into_iter().enumerate() {
        let mut patterns = Vec::with_capacity(hosts.len());
        if by_sni && hosts.is_empty() {
            problems.add(
                format!("{entry_key}.hosts"),
                "list the server names this certificate is for, e.g. [api.example.com, \"*.example.com\"]",
            );
        }
        for (h, host) in hosts.iter().enumerate() {
            let host_key = format!("{entry_key}.hosts[{h}]");
            match HostPattern::parse(host) {
                Ok(pattern) => {
                    let text = tls::host_pattern_text(&pattern);
                    if let Some(first) = claimed.insert(text, index) {
                        problems.add(
                            host_key,
                            format!(
                                "host {host:?} is already served by {prefix}.certificates[{first}]"
                            ),
                        );
                    } else {
                        patterns.push((h, pattern));
                    }
                }
                Err(message) => problems.add(host_key, message),
            }
        }
        let files = CertificateFiles {
            certificate: base.join(certificate),
            private_key: base.join(private_key),
        };
        match files.load(&provider) {
            Ok(loaded) => {
                for (h, pattern) in &patterns {
                    if !tls::covers(&loaded.names, pattern) {
                        let names = if loaded.names.is_empty() {
                            "it has no DNS names (subjectAltName)".to_owned()
                        } else {
                            format!("its names are {}", loaded.names.join(", "))
                        };
                        problems.add(
                            format!("{entry_key}.hosts[{h}]"),
                            format!(
                                "certificate {} is not valid for {}; {names}",
                                files.certificate.display(),
                                tls::host_pattern_text(pattern)
                            ),
                        );
                    }
                }
                certificates.push(CertificateConfig {
                    hosts: patterns.into_iter().map(|(_, p)| p).collect(),
                    files,
                    loaded,
                });
            }
            Err(errors) => {
                for error in errors {
                    let field = match error.file {
                        CertificateFile::Certificate => "certificate",
                        CertificateFile::PrivateKey => "private_key",
                    };
                    problems.add(format!("{entry_key}.{field}"), error.message);
                }
            }
        }
    }

    let default = match &raw.default {
        None => 0,
        Some(_) if !by_sni => {
            problems.add(
                key("default"),
                "applies to `certificates` only; a single `certificate` answers every name",
            );
            0
        }
        Some(name) => match HostPattern::parse(name)
            .ok()
            .and_then(|p| claimed.get(&tls::host_pattern_text(&p)).copied())
        {
            Some(index) => index,
            None => {
                problems.add(
                    key("default"),
                    format!("{name:?} is not one of the hosts listed in `certificates`"),
                );
                0
            }
        },
    };

    let positive = |value: Option<super::units::HumanDuration>,
                    default,
                    field: &str,
                    problems: &mut Problems| {
        problems.positive_duration(key(field), value, default)
    };
    let handshake_timeout = positive(
        raw.handshake_timeout,
        defaults::TLS_HANDSHAKE_TIMEOUT,
        "handshake_timeout",
        problems,
    );
    let reload_interval = positive(
        raw.reload_interval,
        defaults::TLS_RELOAD_INTERVAL,
        "reload_interval",
        problems,
    );

    let client_auth = match (&raw.client_ca, raw.client_auth) {
        (Some(path), mode) => {
            let ca = base.join(path);
            let mode = mode.unwrap_or_default();
            match tls::client_verifier(&ca, mode, provider) {
                Ok(verifier) => Some(tls::ClientAuth { ca, mode, verifier }),
                Err(message) => {
                    problems.add(key("client_ca"), message);
                    None
                }
            }
        }
        (None, Some(_)) => {
            problems.add(
                key("client_auth"),
                "needs `client_ca`: the CA certificates that client certificates must chain to",
            );
            None
        }
        (None, None) => None,
    };

    // The entry count matches only when every certificate loaded; errors were recorded.
    let complete = certificates.len() == raw.certificates.as_ref().map_or(1, Vec::len);
    (complete && !certificates.is_empty()).then(|| ListenerTls {
        default: default.min(certificates.len() - 1),
        certificates,
        handshake_timeout,
        reload_interval,
        client_auth,
    })
}

fn compile_upstream(
    name: &str,
    raw: &RawUpstream,
    base: &Path,
    problems: &mut Problems,
) -> Option<UpstreamConfig> {
    let key = |field: &str| format!("upstreams.{name}.{field}");
    check_name("upstream", name, format!("upstreams.{name}"), problems);
    if raw.endpoints.is_empty() {
        problems.add(key("endpoints"), "at least one endpoint is needed");
    }
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    for (i, text) in raw.endpoints.iter().enumerate() {
        match parse_endpoint(text) {
            Ok(endpoint) => {
                if endpoints.contains(&endpoint) {
                    problems.add(
                        format!("upstreams.{name}.endpoints[{i}]"),
                        format!("endpoint {text:?} is listed twice"),
                    );
                }
                endpoints.push(endpoint);
            }
            Err(message) => problems.add(format!("upstreams.{name}.endpoints[{i}]"), message),
        }
    }
    let (max_in_flight, adaptive) = match &raw.max_in_flight {
        None => (defaults::MAX_IN_FLIGHT, None),
        Some(super::raw::RawMaxInFlight::Fixed(limit)) => {
            if *limit == 0 {
                problems.add(key("max_in_flight"), "must be at least 1");
            }
            (*limit, None)
        }
        Some(super::raw::RawMaxInFlight::Adaptive { adaptive }) => {
            let min = adaptive.min.unwrap_or(8);
            let max = adaptive.max.unwrap_or(defaults::MAX_IN_FLIGHT);
            let initial = adaptive.initial.unwrap_or(min);
            if min == 0 || min > max || !(min..=max).contains(&initial) {
                problems.add(
                    key("max_in_flight.adaptive"),
                    format!("needs 1 <= min <= initial <= max (got min {min}, initial {initial}, max {max})"),
                );
            }
            (initial, Some(crate::config::AdaptiveLimit { min, max }))
        }
    };
    let positive = |value: Option<super::units::HumanDuration>,
                    default,
                    field: &str,
                    problems: &mut Problems| {
        problems.positive_duration(key(field), value, default)
    };
    let queue_timeout = positive(
        raw.queue_timeout,
        defaults::QUEUE_TIMEOUT,
        "queue_timeout",
        problems,
    );
    let connect_timeout = positive(
        raw.connect_timeout,
        defaults::CONNECT_TIMEOUT,
        "connect_timeout",
        problems,
    );
    let timeout = positive(raw.timeout, defaults::TIMEOUT, "timeout", problems);
    let pool_idle_timeout = positive(
        raw.pool.idle_timeout,
        defaults::POOL_IDLE_TIMEOUT,
        "pool.idle_timeout",
        problems,
    );
    let health_check = raw
        .health_check
        .as_ref()
        .and_then(|check| compile_health_check(name, check, problems));
    let outlier = raw.outlier.as_ref().map(|outlier| {
        let key = |field: &str| format!("upstreams.{name}.outlier.{field}");
        let consecutive_failures = outlier
            .consecutive_failures
            .unwrap_or(defaults::CONSECUTIVE_FAILURES);
        if consecutive_failures == 0 {
            problems.add(key("consecutive_failures"), "must be at least 1");
        }
        let base = outlier
            .base_ejection_time
            .map_or(defaults::BASE_EJECTION_TIME, |d| d.0);
        let max = outlier
            .max_ejection_time
            .map_or(defaults::MAX_EJECTION_TIME, |d| d.0);
        if base.is_zero() {
            problems.add(key("base_ejection_time"), "must be longer than 0s");
        }
        if max < base {
            problems.add(
                key("max_ejection_time"),
                format!("must be at least base_ejection_time ({base:?})"),
            );
        }
        let percent = outlier
            .max_ejection_percent
            .unwrap_or(defaults::MAX_EJECTION_PERCENT);
        if percent > 100 {
            problems.add(key("max_ejection_percent"), "must be between 0 and 100");
        }
        crate::config::OutlierConfig {
            consecutive_failures,
            base_ejection_time: base,
            max_ejection_time: max,
            max_ejection_percent: percent,
        }
    });
    let retry = raw
        .retry
        .as_ref()
        .and_then(|retry| compile_retry(&format!("upstreams.{name}.retry"), retry, problems));
    let tls = compile_upstream_tls(name, raw, &endpoints, base, problems);
    Some(UpstreamConfig {
        protocol: raw.protocol,
        tls,
        name: name.to_owned(),
        retry,
        health_check,
        outlier,
        endpoints,
        balance: raw.balance,
        max_in_flight,
        adaptive,
        max_queue: raw.max_queue.unwrap_or(defaults::MAX_QUEUE),
        queue_timeout,
        connect_timeout,
        timeout,
        max_idle_per_endpoint: raw
            .pool
            .max_idle_per_endpoint
            .unwrap_or(defaults::MAX_IDLE_PER_ENDPOINT),
        pool_idle_timeout,
        host_header: raw.host_header,
    })
}

/// The TLS client settings of an upstream with `https://` endpoints: its `tls` mapping,
/// or the defaults (web PKI roots, the endpoint's host as server name).
fn compile_upstream_tls(
    name: &str,
    raw: &RawUpstream,
    endpoints: &[EndpointAddress],
    base: &Path,
    problems: &mut Problems,
) -> Option<UpstreamTls> {
    let key = |field: &str| format!("upstreams.{name}.tls.{field}");
    let https = endpoints.iter().any(|e| e.scheme == Scheme::HTTPS);
    if !https {
        if raw.tls.is_some() {
            problems.warn(
                format!("upstreams.{name}.tls"),
                "has no effect: none of the upstream's endpoints is https://",
            );
        }
        return None;
    }
    let defaults = RawUpstreamTls::default();
    let settings = raw.tls.as_ref().unwrap_or(&defaults);
    if settings.insecure_skip_verify {
        problems.warn(
            key("insecure_skip_verify"),
            "the endpoints' certificates are not verified: the connection is encrypted but anyone on the path can impersonate the upstream",
        );
    }
    let files = UpstreamTlsFiles {
        ca: settings.ca.clone(),
        server_name: settings.server_name.clone(),
        insecure_skip_verify: settings.insecure_skip_verify,
        certificate: settings.certificate.clone(),
        private_key: settings.private_key.clone(),
    };
    match UpstreamTls::load(&files, base) {
        Ok(tls) => Some(tls),
        Err(errors) => {
            for error in errors {
                problems.add(key(error.field), error.message);
            }
            None
        }
    }
}

fn compile_health_check(
    upstream: &str,
    raw: &super::raw::RawHealthCheck,
    problems: &mut Problems,
) -> Option<crate::config::HealthCheckConfig> {
    let key = |field: &str| format!("upstreams.{upstream}.health_check.{field}");
    let path = match http::uri::PathAndQuery::try_from(raw.path.as_str()) {
        Ok(path) if raw.path.starts_with('/') => Some(path),
        _ => {
            problems.add(
                key("path"),
                format!("{:?} must be a path starting with `/`", raw.path),
            );
            None
        }
    };
    let interval = raw.interval.map_or(defaults::HEALTH_INTERVAL, |d| d.0);
    let timeout = raw.timeout.map_or(defaults::HEALTH_TIMEOUT, |d| d.0);
    if interval.is_zero() {
        problems.add(key("interval"), "must be longer than 0s");
    }
    if timeout.is_zero() {
        problems.add(key("timeout"), "must be longer than 0s");
    }
    let healthy_threshold = raw.healthy_threshold.unwrap_or(defaults::HEALTHY_THRESHOLD);
    let unhealthy_threshold = raw
        .unhealthy_threshold
        .unwrap_or(defaults::UNHEALTHY_THRESHOLD);
    if healthy_threshold == 0 {
        problems.add(key("healthy_threshold"), "must be at least 1");
    }
    if unhealthy_threshold == 0 {
        problems.add(key("unhealthy_threshold"), "must be at least 1");
    }
    let expected_status = match &raw.expected_status {
        None => Some((200, 399)),
        Some(text) => match parse_status_range(&text.0) {
            Ok(range) => Some(range),
            Err(message) => {
                problems.add(key("expected_status"), message);
                None
            }
        },
    };
    Some(crate::config::HealthCheckConfig {
        path: path?,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expected_status: expected_status?,
    })
}

pub(super) fn compile_retry(
    key: &str,
    raw: &super::raw::RawRetry,
    problems: &mut Problems,
) -> Option<crate::config::RetryConfig> {
    use crate::config::RetryOn;
    let mut ok = true;
    if raw.attempts == 0 {
        problems.add(
            format!("{key}.attempts"),
            "must be at least 1 (the first try counts)",
        );
        ok = false;
    }
    let mut on = RetryOn::default();
    match &raw.on {
        None => {
            on.connect_failure = true;
            on.reset = true;
            on.statuses = vec![502, 503, 504];
        }
        Some(list) => {
            for (i, item) in list.iter().enumerate() {
                match item.0.as_str() {
                    "connect_failure" => on.connect_failure = true,
                    "reset" => on.reset = true,
                    "timeout" => on.timeout = true,
                    text => match text.parse::<u16>() {
                        Ok(status) if (500..=599).contains(&status) || status == 429 => {
                            on.statuses.push(status)
                        }
                        _ => {
                            problems.add(
                                format!("{key}.on[{i}]"),
                                format!("{text:?} is not connect_failure, reset, timeout, 429 or a 5xx status"),
                            );
                            ok = false;
                        }
                    },
                }
            }
        }
    }
    let backoff = match &raw.backoff {
        None => defaults::RETRY_BACKOFF,
        Some(text) => match text.split_once("..").map(|(a, b)| {
            (
                humantime::parse_duration(a.trim()),
                humantime::parse_duration(b.trim()),
            )
        }) {
            Some((Ok(low), Ok(high))) if low <= high => (low, high),
            _ => {
                problems.add(
                    format!("{key}.backoff"),
                    format!("{text:?} is not a range; write e.g. 25ms..250ms"),
                );
                ok = false;
                defaults::RETRY_BACKOFF
            }
        },
    };
    let budget_percent = match &raw.budget {
        None => defaults::RETRY_BUDGET_PERCENT,
        Some(text) => match text.0.trim().trim_end_matches('%').trim().parse::<u32>() {
            Ok(percent) if percent <= 100 => percent,
            _ => {
                problems.add(
                    format!("{key}.budget"),
                    format!("{:?} is not a percentage; write e.g. 20%", text.0),
                );
                ok = false;
                0
            }
        },
    };
    let per_try_timeout = raw.per_try_timeout.map(|d| d.0);
    if per_try_timeout.is_some_and(|d| d.is_zero()) {
        problems.add(format!("{key}.per_try_timeout"), "must be longer than 0s");
        ok = false;
    }
    let methods = match &raw.methods {
        Some(methods) => methods.iter().map(|m| m.to_method()).collect(),
        None => vec![
            http::Method::GET,
            http::Method::HEAD,
            http::Method::OPTIONS,
            http::Method::PUT,
            http::Method::DELETE,
        ],
    };
    ok.then(|| crate::config::RetryConfig {
        attempts: raw.attempts,
        on,
        per_try_timeout,
        backoff,
        budget_percent,
        methods,
        max_body_size: raw
            .max_body_size
            .map_or(defaults::RETRY_MAX_BODY_SIZE, |s| s.0),
    })
}

/// `200`, or `200-399`.
fn parse_status_range(text: &str) -> Result<(u16, u16), String> {
    let invalid = || format!("{text:?} is not a status or range; write e.g. 200 or 200-399");
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (low.trim(), high.trim()),
        None => (text.trim(), text.trim()),
    };
    let low: u16 = low.parse().map_err(|_| invalid())?;
    let high: u16 = high.parse().map_err(|_| invalid())?;
    if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
        return Err(invalid());
    }
    Ok((low, high))
}

fn parse_endpoint(text: &str) -> Result<EndpointAddress, String> {
    let uri: Uri = text.parse().map_err(|e| {
        format!("endpoint {text:?} is not a valid URI ({e}); write e.g. http://10.0.0.5:8080")
    })?;
    let (scheme, default_port) = match uri.scheme_str() {
        Some("http") => (Scheme::HTTP, 80),
        Some("https") => (Scheme::HTTPS, 443),
        _ => {
            return Err(format!(
                "endpoint {text:?} needs the http:// or https:// scheme"
            ))
        }
    };
    let authority: Authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("endpoint {text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("endpoint {text:?} must not contain credentials"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "endpoint {text:?} must not have a path; use the route's `rewrite` to change paths"
        ));
    }
    let authority = if authority.port().is_some() {
        authority
    } else {
        Authority::try_from(format!("{}:{default_port}", authority.host()).as_str())
            .map_err(|e| format!("endpoint {text:?}: {e}"))?
    };
    Ok(EndpointAddress {
        label: format!("{scheme}://{authority}"),
        scheme,
        authority,
    })
}

fn compile_routes(
    raw: &[RawRoute],
    upstream_names: &[&str],
    upstream_protocols: &[UpstreamProtocol],
    problems: &mut Problems,
) -> Vec<RouteConfig> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (i, route) in raw.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        check_name("route", &route.name, key("name"), problems);
        if let Some(first) = names.insert(route.name.as_str(), i) {
            problems.add(
                key("name"),
                format!(
                    "route name {:?} is already used by routes[{first}]",
                    route.name
                ),
            );
        }
        let matcher = &route.matcher;
        let path = match (&matcher.path, &matcher.path_prefix) {
            (Some(path), None) => PathPattern::path(path)
                .map_err(|e| problems.add(key("match.path"), e))
                .ok(),
            (None, Some(prefix)) => PathPattern::prefix(prefix)
                .map_err(|e| problems.add(key("match.path_prefix"), e))
                .ok(),
            (Some(_), Some(_)) => {
                problems.add(
                    key("match"),
                    "give either `path` or `path_prefix`, not both",
                );
                None
            }
            (None, None) => {
                problems.add(
                    key("match"),
                    "needs `path` or `path_prefix` (use `path_prefix: /` to match everything)",
                );
                None
            }
        };
        let host = matcher.host.as_deref().and_then(|h| {
            HostPattern::parse(h)
                .map_err(|e| problems.add(key("match.host"), e))
                .ok()
        });
        let mut headers = Vec::with_capacity(matcher.headers.len());
        for (name, value) in &matcher.headers {
            let header_key = format!("routes[{i}].match.headers.{name}");
            match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.0.as_str()),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => {
                    problems.add(header_key, format!("{name:?} is not a valid header name"))
                }
                (_, Err(_)) => problems.add(
                    header_key,
                    format!("{:?} is not a valid header value", value.0),
                ),
            }
        }
        if let Some(methods) = &matcher.methods {
            if methods.is_empty() {
                problems.add(
                    key("match.methods"),
                    "list at least one method, or leave `methods` out to allow all",
                );
            }
        }
        let target = match (&route.upstream, &route.aggregate) {
            (Some(_), Some(_)) => {
                problems.add(
                    key("aggregate"),
                    "give either `upstream` or `aggregate`, not both",
                );
                None
            }
            (None, None) => {
                problems.add(
                    key("upstream"),
                    "every route needs an `upstream` (or an `aggregate`)",
                );
                None
            }
            (Some(name), None) => {
                let upstream = match upstream_names.iter().position(|u| u == name) {
                    Some(index) => Some(index),
                    None => {
                        problems.add(key("upstream"), unknown_upstream(name, upstream_names));
                        None
                    }
                };
                let rewrite = match (&route.rewrite, &path) {
                    (None, _) => Some(Rewrite::Keep),
                    (Some(rewrite), path) => compile_rewrite(i, rewrite, path.as_ref(), problems),
                };
                let timeout = route.timeout.map(|d| d.0);
                if timeout.is_some_and(|t| t.is_zero()) {
                    problems.add(key("timeout"), "must be longer than 0s");
                }
                let retry = route
                    .retry
                    .as_ref()
                    .map(|retry| compile_retry(&key("retry"), retry, problems));
                let http2_only = upstream
                    .is_some_and(|u| upstream_protocols.get(u) == Some(&UpstreamProtocol::Http2));
                let websocket = compile_websocket(i, route, http2_only, problems);
                match (upstream, rewrite, retry) {
                    (Some(upstream), Some(rewrite), None) => Some(RouteTarget::Proxy {
                        upstream,
                        rewrite,
                        timeout,
                        retry: None,
                        websocket,
                    }),
                    (Some(upstream), Some(rewrite), Some(Some(retry))) => {
                        Some(RouteTarget::Proxy {
                            upstream,
                            rewrite,
                            timeout,
                            retry: Some(retry),
                            websocket,
                        })
                    }
                    _ => None,
                }
            }
            (None, Some(aggregate)) => {
                if route.rewrite.is_some() {
                    problems.add(
                        key("rewrite"),
                        "an aggregate route has no `rewrite`; each call has its own `path`",
                    );
                }
                if route.timeout.is_some() {
                    problems.add(
                        key("timeout"),
                        "an aggregate route's timeout is `aggregate.timeout`",
                    );
                }
                if route.websocket.is_some() {
                    problems.add(
                        key("websocket"),
                        "an aggregate route cannot carry WebSocket connections",
                    );
                }
                let captured = path.as_ref().map(PathPattern::params).unwrap_or_default();
                super::aggregate::compile(i, aggregate, &captured, upstream_names, problems)
                    .map(RouteTarget::Aggregate)
            }
        };
        if let (Some(path), Some(target)) = (path, target) {
            routes.push(RouteConfig {
                name: route.name.clone(),
                spec: RouteSpec {
                    host,
                    path,
                    methods: matcher
                        .methods
                        .as_ref()
                        .map(|m| m.iter().map(|m| m.to_method()).collect()),
                    headers,
                },
                target,
            });
        }
    }
    routes
}

/// A proxy route's WebSocket limits: its `websocket` mapping or the defaults. `None` when
/// the upstream speaks HTTP/2 only, which has no HTTP/1.1 upgrade.
fn compile_websocket(
    i: usize,
    route: &RawRoute,
    http2_only: bool,
    problems: &mut Problems,
) -> Option<WebSocketConfig> {
    let key = |field: &str| format!("routes[{i}].websocket{field}");
    if http2_only {
        if route.websocket.is_some() {
            problems.add(
                key(""),
                "the route's upstream has `protocol: http2`; WebSocket upgrades need HTTP/1.1 (`protocol: http1` or `auto`)",
            );
        }
        return None;
    }
    let raw = route.websocket.as_ref();
    let max_connections = raw
        .and_then(|w| w.max_connections)
        .unwrap_or(defaults::WEBSOCKET_MAX_CONNECTIONS);
    if max_connections == 0 {
        problems.add(key(".max_connections"), "must be at least 1");
    }
    let idle_timeout = problems.positive_duration(
        key(".idle_timeout"),
        raw.and_then(|w| w.idle_timeout),
        defaults::WEBSOCKET_IDLE_TIMEOUT,
    );
    Some(WebSocketConfig {
        max_connections,
        idle_timeout,
    })
}

fn compile_rewrite(
    i: usize,
    rewrite: &super::raw::RawRewrite,
    path: Option<&PathPattern>,
    problems: &mut Problems,
) -> Option<Rewrite> {
    let key = |field: &str| format!("routes[{i}].rewrite.{field}");
    if let Some(template) = &rewrite.path {
        if rewrite.strip_prefix.is_some() || rewrite.add_prefix.is_some() {
            problems.add(
                key("path"),
                "give either `path` or `strip_prefix`/`add_prefix`, not both",
            );
            return None;
        }
        let captured = path.map(PathPattern::params).unwrap_or_default();
        return Rewrite::template(template, &captured)
            .map_err(|e| problems.add(key("path"), e.to_string()))
            .ok();
    }
    if let (Some(strip), Some(PathPattern::Prefix(prefix))) = (&rewrite.strip_prefix, path) {
        let strip_clean = strip.trim_end_matches('/');
        let segment_prefix = prefix == strip_clean
            || prefix
                .strip_prefix(strip_clean)
                .is_some_and(|rest| rest.starts_with('/'));
        if !segment_prefix {
            problems.add(
                key("strip_prefix"),
                format!("{strip:?} is not a prefix of the route's path_prefix {prefix:?}, so it would never apply"),
            );
        }
    }
    Rewrite::prefix(
        rewrite.strip_prefix.as_deref(),
        rewrite.add_prefix.as_deref(),
    )
    .map_err(|e| problems.add(key("strip_prefix"), e.to_string()))
    .ok()
}

pub(super) fn unknown_upstream(name: &str, known: &[&str]) -> String {
    let suggestion = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .min();
    match suggestion {
        Some((_, k)) => format!("unknown upstream {name:?} (did you mean {k:?}?)"),
        None if known.is_empty() => format!("unknown upstream {name:?}: no upstreams are defined"),
        None => format!(
            "unknown upstream {name:?}; defined upstreams: {}",
            known.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
upstreams:
  orders:
    endpoints: ["http://127.0.0.1:9201"]
routes:
  - name: orders
    match: { path_prefix: /api/orders }
    upstream: orders
    rewrite: { strip_prefix: /api }
"#;

    fn errors_of(text: &str) -> Vec<ConfigError> {
        match compile(text, "g.yaml") {
            Ok(_) => panic!("expected errors"),
            Err(errors) => errors,
        }
    }

    #[test]
    fn valid_file_compiles() {
        let config = compile(VALID, "g.yaml").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(config.routes.len(), 1);
        assert_eq!(
            config.upstreams[0].endpoints[0].label,
            "http://127.0.0.1:9201"
        );
    }

    #[test]
    fn unknown_upstream_suggests_and_locates() {
        let text = VALID.replace("upstream: orders", "upstream: ordres");
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!((e.line, e.column), (11, 15));
        assert_eq!(e.key, "routes[0].upstream");
        assert!(
            e.message.contains("did you mean \"orders\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_key_is_located_by_serde() {
        let text = VALID.replace(
            "path_prefix: /api/orders",
            "path_prefix: /api/orders, hots: x",
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 10);
        assert!(
            errors[0].message.contains("unknown field `hots`"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[0].key, "routes[0].match");
    }

    #[test]
    fn workers_must_be_positive() {
        let errors = errors_of(&format!("workers: 0\n{VALID}"));
        assert_eq!(errors[0].key, "workers");
        assert_eq!((errors[0].line, errors[0].column), (1, 10));
    }

    #[test]
    fn workers_run_per_core_unless_told_to_steal_work() {
        let config =
            compile(&format!("workers: 4\n{VALID}"), "t.yaml").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(config.per_core_workers(), 4);
        let text = format!("workers: 4\nworker_model: work_stealing\n{VALID}");
        let config = compile(&text, "t.yaml").expect("valid");
        assert_eq!(
            config.worker_model,
            crate::config::WorkerModel::WorkStealing
        );
        assert_eq!(config.per_core_workers(), 1);
        let errors = errors_of(&format!("worker_model: threads\n{VALID}"));
        assert_eq!(errors[0].key, "worker_model");
        assert!(
            errors[0].message.contains("per_core"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = VALID
            .replace("http://127.0.0.1:9201", "ftp://x")
            .replace("upstream: orders", "upstream: nope")
            .replace("strip_prefix: /api", "strip_prefix: /v1");
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 3, "{errors:#?}");
    }
}
