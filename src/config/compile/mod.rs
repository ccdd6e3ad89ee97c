//! From the raw file to a [`Config`]: every value checked, every cross-reference
//! resolved, every problem collected (not only the first) with its location.
//!
//! This file holds the entry point, [`compile`], and what every key shares: the
//! [`Problems`] collector and the checks on names. Each top-level key has its own file:
//! [`listeners`] (and their limits), [`tls`] (a listener's certificates, an upstream's
//! client settings), [`upstreams`] (endpoints, limits, health checks, outlier
//! detection), [`retry`] (the `retry` mapping of an upstream or a route), [`routes`]
//! (matchers, targets, rewrites, WebSocket limits) and [`stores`] (shared rate-limit
//! stores).

mod access_log;
mod auth;
mod cors;
mod durations;
mod header_transforms;
pub(crate) mod jwt;
mod listeners;
mod policies;
mod retry;
mod routes;
mod stores;
mod tls;
mod tracing;
mod upstreams;

use std::path::Path;

use super::error::ConfigError;
use super::locate::LocationIndex;
use super::raw::{RawConfig, RawRoute, UpstreamProtocol};
use super::{
    defaults, AdminConfig, Config, ListenerConfig, ReloadConfig, RouteConfig, UpstreamConfig,
};
use crate::routing::{RouteSpec, RouteTable};
use listeners::compile_listeners;
#[cfg(test)]
pub(crate) use policies::parse_key_part;
use policies::{check_route_params, compile_policies};
use routes::compile_routes;
use stores::compile_stores;
use upstreams::compile_upstream;

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

    /// `file:line:col` of `key`, for messages that point at a second place.
    pub(super) fn location_of(&self, key: &str) -> String {
        let location = self.index.locate(key);
        format!(
            "{}:{}:{}",
            self.file,
            location.map_or(1, |l| l.line),
            location.map_or(1, |l| l.column)
        )
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
    let raw = parse(text, file)?;
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
    let access_logs = access_log::compile_access_logs(&raw.listeners, base, &mut problems);
    let upstream_names: Vec<&str> = raw.upstreams.keys().map(String::as_str).collect();
    let upstreams: Vec<UpstreamConfig> = raw
        .upstreams
        .iter()
        .filter_map(|(name, upstream)| compile_upstream(name, upstream, base, &mut problems))
        .collect();
    let upstream_protocols: Vec<UpstreamProtocol> =
        raw.upstreams.values().map(|u| u.protocol).collect();
    let rate_limit_stores = compile_stores(&raw.rate_limit_stores, &mut problems);
    let store_names: Vec<&str> = raw
        .rate_limit_stores
        .keys()
        .map(String::as_str)
        .filter(|name| *name != crate::config::LOCAL_STORE)
        .collect();
    let consumers = auth::compile_consumers(&raw.consumers, base, &mut problems);
    let consumer_names: Vec<&str> = raw.consumers.keys().map(String::as_str).collect();
    let auth_names = auth::AuthNames {
        consumers: &consumer_names,
        upstreams: &upstream_names,
        base,
    };
    let policies = compile_policies(&raw.policies, &store_names, &auth_names, &mut problems);
    let policy_names: Vec<&str> = raw.policies.keys().map(String::as_str).collect();
    let routes = compile_routes(
        &raw.routes,
        &upstream_names,
        &upstream_protocols,
        &policy_names,
        &policies,
        &mut problems,
    );

    check_top_level(&raw, &listeners, &mut problems);
    let tracing = raw
        .tracing
        .as_ref()
        .and_then(|t| tracing::compile_tracing(t, &mut problems));
    durations::check_duration_bounds(&raw, &mut problems);
    check_route_params(&routes, &policies, &mut problems);

    let router = build_router(&raw.routes, &routes, &mut problems);
    if router.is_some() {
        routes::warn_unreachable(&raw.routes, &routes, &mut problems);
        retry::warn_per_try_timeouts(&raw, &upstreams, &routes, &mut problems);
    }

    match router {
        Some(router) if problems.found.is_empty() => Ok(Config {
            source: file.to_owned(),
            listeners,
            admin: raw.admin.map(|a| AdminConfig { address: a.address }),
            upstreams,
            routes,
            policies,
            consumers,
            rate_limit_stores,
            router,
            shutdown_timeout: raw
                .shutdown_timeout
                .map_or(defaults::SHUTDOWN_TIMEOUT, |d| d.0),
            workers: raw.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            worker_model: raw.worker_model,
            warnings: {
                let mut warnings = problems.warnings;
                warnings.sort_by_key(|w| (w.line, w.column));
                warnings
            },
            access_logs,
            reload: ReloadConfig {
                watch: raw.reload.watch.unwrap_or(true),
                poll_interval: raw
                    .reload
                    .poll_interval
                    .map_or(defaults::RELOAD_POLL_INTERVAL, |d| d.0),
            },
            tracing,
        }),
        _ => {
            let mut found = problems.found;
            found.sort_by_key(|e| (e.line, e.column));
            Err(found)
        }
    }
}

/// The file as written; an empty file, or one serde rejects, stops here with one error.
fn parse(text: &str, file: &str) -> Result<RawConfig, Vec<ConfigError>> {
    match serde_yaml::from_str::<Option<RawConfig>>(text) {
        Ok(Some(raw)) => Ok(raw),
        Ok(None) => Err(vec![ConfigError {
            file: file.to_owned(),
            line: 1,
            column: 1,
            key: String::new(),
            message: "the file is empty; it needs at least `listeners` (and `upstreams` and `routes` to forward anything)"
                .to_owned(),
        }]),
        Err(error) => Err(vec![serde_error(&error, file)]),
    }
}

/// The keys at the top of the file: `workers`, `reload`, `admin`.
fn check_top_level(raw: &RawConfig, listeners: &[ListenerConfig], problems: &mut Problems) {
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
}

/// The route table of the compiled routes. A conflict is reported at the route's
/// `match` key, looked up in `raw` by the compiled route's index (the same route when
/// every route compiled).
fn build_router(
    raw: &[RawRoute],
    compiled: &[RouteConfig],
    problems: &mut Problems,
) -> Option<RouteTable> {
    let specs: Vec<RouteSpec> = compiled.iter().map(|r| r.spec.clone()).collect();
    match RouteTable::build(&specs) {
        Ok(router) => Some(router),
        Err(errors) => {
            // Compiled routes are found in `raw` by name (names are unique, or that is
            // an error of its own): a route that failed to compile shifts the indices.
            let raw_index = |compiled_index: usize| {
                let name = &compiled[compiled_index].name;
                raw.iter()
                    .position(|r| &r.name == name)
                    .unwrap_or(compiled_index)
            };
            let path_key = |i: usize| match &raw[i].matcher.path {
                Some(_) => format!("routes[{i}].match.path"),
                None => format!("routes[{i}].match.path_prefix"),
            };
            for error in errors {
                let key = path_key(raw_index(error.route));
                let message = match error.conflict {
                    Some((other, reason)) => {
                        let other = raw_index(other);
                        format!(
                            "{} of route {:?} (routes[{other}] at {}): {reason}",
                            error.message,
                            raw[other].name,
                            problems.location_of(&path_key(other))
                        )
                    }
                    None => error.message,
                };
                problems.add(key, message);
            }
            None
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
    let message = suggest_known_word(&message);
    let location = error.location();
    ConfigError {
        file: file.to_owned(),
        line: location.as_ref().map_or(1, |l| l.line()),
        column: location.as_ref().map_or(1, |l| l.column()),
        key,
        message,
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), with
/// the closest expected word named first when one is close: `max_inflight` gets "did
/// you mean `max_in_flight`?".
fn suggest_known_word(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message.to_owned();
    };
    let Some(unknown) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|start| head.strip_prefix(start))
        .and_then(|rest| rest.strip_suffix('`'))
    else {
        return message.to_owned();
    };
    let known: Vec<&str> = expected
        .trim_start_matches("one of ")
        .split([',', ' '])
        .filter_map(|word| word.strip_prefix('`')?.strip_suffix('`'))
        .collect();
    match closest(unknown, &known) {
        Some(word) => format!("{head} (did you mean `{word}`?), expected {expected}"),
        None => message.to_owned(),
    }
}

/// The word of `known` closest to `name`, when it is close enough to be a typo and no
/// other word is as close (`v3` is as near `v1` as `v2`: no guess then).
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let mut near: Vec<(usize, &str)> = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .collect();
    near.sort_unstable();
    match near.as_slice() {
        [(best, word), (second, _), ..] if best < second => Some(*word),
        [(_, word)] => Some(*word),
        _ => None,
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

pub(super) fn unknown_upstream(name: &str, known: &[&str]) -> String {
    unknown_name("upstream", name, known)
}

/// "unknown KIND NAME", with the closest known name when one is close.
pub(super) fn unknown_name(kind: &str, name: &str, known: &[&str]) -> String {
    match closest(name, known) {
        Some(k) => format!("unknown {kind} {name:?} (did you mean {k:?}?)"),
        None if known.is_empty() => format!("unknown {kind} {name:?}: no {kind}s are defined"),
        None => format!(
            "unknown {kind} {name:?}; defined {kind}s: {}",
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
    fn unknown_words_get_the_one_closest_known_word() {
        assert_eq!(
            suggest_known_word("unknown field `max_inflight`, expected `max_in_flight` or `max_queue`"),
            "unknown field `max_inflight` (did you mean `max_in_flight`?), expected `max_in_flight` or `max_queue`"
        );
        // As near one as another: no guess.
        let tie = "unknown variant `v3`, expected one of `v1`, `v2`, `any`";
        assert_eq!(suggest_known_word(tie), tie);
        let far = "unknown field `colour`, expected one of `name`, `address`";
        assert_eq!(suggest_known_word(far), far);
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
