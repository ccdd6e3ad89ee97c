//! `routes`: each route's matcher (host, path, methods, headers) and target: a proxy
//! route's upstream, rewrite, timeout, retry and WebSocket limits, or an aggregate
//! (compiled by `config::aggregate`).

use std::collections::HashMap;

use http::{HeaderName, HeaderValue};

use super::retry::compile_retry;
use super::{check_name, unknown_upstream, Problems};
use crate::config::raw::{MergeMode, RawAggregate, RawMatch, RawRoute, UpstreamProtocol};
use crate::config::units::HumanDuration;
use crate::config::{defaults, PolicyConfig, RouteConfig, RouteTarget, WebSocketConfig};
use crate::routing::{HostPattern, PathPattern, Rewrite, RouteSpec};

pub(super) fn compile_routes(
    raw: &[RawRoute],
    upstream_names: &[&str],
    upstream_protocols: &[UpstreamProtocol],
    policy_names: &[&str],
    policies: &[PolicyConfig],
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
        let path = compile_path(i, matcher, problems);
        let host = matcher.host.as_deref().and_then(|h| {
            HostPattern::parse(h)
                .map_err(|e| problems.add(key("match.host"), e))
                .ok()
        });
        let headers = compile_header_matchers(i, matcher, problems);
        if let Some(methods) = &matcher.methods {
            if methods.is_empty() {
                problems.add(
                    key("match.methods"),
                    "list at least one method, or leave `methods` out to allow all",
                );
            }
        }
        let target = compile_target(
            i,
            route,
            path.as_ref(),
            upstream_names,
            upstream_protocols,
            problems,
        );
        let resolved =
            super::policies::resolve_route_policies(i, &route.policies, policy_names, problems);
        let captured = path.as_ref().map(PathPattern::params).unwrap_or_default();
        super::header_transforms::check_route_policies(
            i,
            &route.name,
            &captured,
            &resolved,
            policies,
            problems,
        );
        if let (Some(path), Some(target)) = (path, target) {
            routes.push(RouteConfig {
                policies: resolved,
                access_log: route.access_log.is_none_or(|on| on.0),
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

/// `match.path` or `match.path_prefix`: exactly one of them.
fn compile_path(i: usize, matcher: &RawMatch, problems: &mut Problems) -> Option<PathPattern> {
    let key = |field: &str| format!("routes[{i}].{field}");
    match (&matcher.path, &matcher.path_prefix) {
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
    }
}

/// `match.headers`: header fields a request must carry, with their values.
fn compile_header_matchers(
    i: usize,
    matcher: &RawMatch,
    problems: &mut Problems,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(matcher.headers.len());
    for (name, value) in &matcher.headers {
        let header_key = format!("routes[{i}].match.headers.{name}");
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.0.as_str()),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            (Err(_), _) => problems.add(header_key, format!("{name:?} is not a valid header name")),
            (_, Err(_)) => problems.add(
                header_key,
                format!("{:?} is not a valid header value", value.0),
            ),
        }
    }
    headers
}

/// Where the route sends its requests: one `upstream`, or an `aggregate` of calls.
fn compile_target(
    i: usize,
    route: &RawRoute,
    path: Option<&PathPattern>,
    upstream_names: &[&str],
    upstream_protocols: &[UpstreamProtocol],
    problems: &mut Problems,
) -> Option<RouteTarget> {
    let key = |field: &str| format!("routes[{i}].{field}");
    match (&route.upstream, &route.aggregate) {
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
        (Some(name), None) => compile_proxy_target(
            i,
            route,
            name,
            path,
            upstream_names,
            upstream_protocols,
            problems,
        ),
        (None, Some(aggregate)) => {
            compile_aggregate_target(i, route, aggregate, path, upstream_names, problems)
        }
    }
}

/// A route to one upstream (`name`): its rewrite, timeout, retry and WebSocket limits.
fn compile_proxy_target(
    i: usize,
    route: &RawRoute,
    name: &str,
    path: Option<&PathPattern>,
    upstream_names: &[&str],
    upstream_protocols: &[UpstreamProtocol],
    problems: &mut Problems,
) -> Option<RouteTarget> {
    let key = |field: &str| format!("routes[{i}].{field}");
    let upstream = match upstream_names.iter().position(|u| *u == name) {
        Some(index) => Some(index),
        None => {
            problems.add(key("upstream"), unknown_upstream(name, upstream_names));
            None
        }
    };
    let rewrite = match (&route.rewrite, path) {
        (None, _) => Some(Rewrite::Keep),
        (Some(rewrite), path) => compile_rewrite(i, rewrite, path, problems),
    };
    let timeout = route.timeout.map(|d| d.0);
    if timeout.is_some_and(|t| t.is_zero()) {
        problems.add(key("timeout"), "must be longer than 0s");
    }
    let retry = route
        .retry
        .as_ref()
        .map(|retry| compile_retry(&key("retry"), retry, problems));
    let http2_only =
        upstream.is_some_and(|u| upstream_protocols.get(u) == Some(&UpstreamProtocol::Http2));
    let websocket = compile_websocket(i, route, http2_only, problems);
    let hedge = match &route.hedge {
        None => Some(None),
        Some(hedge) => super::retry::compile_hedge(&key("hedge"), hedge, problems)
            .map(|hedge| Some(Box::new(hedge))),
    };
    let hedge = hedge?;
    match (upstream, rewrite, retry) {
        (Some(upstream), Some(rewrite), None) => Some(RouteTarget::Proxy {
            upstream,
            rewrite,
            timeout,
            retry: None,
            websocket,
            hedge,
        }),
        (Some(upstream), Some(rewrite), Some(Some(retry))) => Some(RouteTarget::Proxy {
            upstream,
            rewrite,
            timeout,
            retry: Some(retry),
            websocket,
            hedge,
        }),
        _ => None,
    }
}

/// An aggregate route: the keys only a proxy route has are problems here; the calls are
/// compiled by `config::aggregate`.
fn compile_aggregate_target(
    i: usize,
    route: &RawRoute,
    aggregate: &RawAggregate,
    path: Option<&PathPattern>,
    upstream_names: &[&str],
    problems: &mut Problems,
) -> Option<RouteTarget> {
    let key = |field: &str| format!("routes[{i}].{field}");
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
    if route.retry.is_some() {
        problems.warn(
            key("retry"),
            "has no effect: aggregate calls are not retried (each call is tried once, within \
             `aggregate.timeout`)",
        );
    }
    if route.hedge.is_some() {
        problems.add(
            key("hedge"),
            "an aggregate route's calls are not hedged (`hedge` is for proxied routes)",
        );
    }
    if aggregate.stream.is_some() && aggregate.merge == MergeMode::Flat {
        problems.warn(
            key("aggregate.merge"),
            "has no effect with `stream: ndjson`: a streamed answer sends each call's result \
             on its own line, unmerged",
        );
    }
    let limit = aggregate
        .timeout
        .map_or(defaults::AGGREGATE_TIMEOUT, |d| d.0);
    for (name, call) in &aggregate.calls {
        if let Some(timeout) = call.timeout.filter(|t| t.0 > limit) {
            problems.warn(
                key(&format!("aggregate.calls.{name}.timeout")),
                format!(
                    "{timeout} is longer than the route's aggregate.timeout ({}), which cancels \
                     the call first",
                    HumanDuration(limit)
                ),
            );
        }
    }
    let captured = path.map(PathPattern::params).unwrap_or_default();
    crate::config::aggregate::compile(i, aggregate, &captured, upstream_names, problems)
        .map(RouteTarget::Aggregate)
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
    rewrite: &crate::config::raw::RawRewrite,
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

/// Warns about each route that can never match because an earlier one takes all of its
/// requests. Routes compete by file order only when their host and path patterns are
/// the same (otherwise the more specific pattern wins, whatever the order), so a later
/// route is unreachable exactly when an earlier one has its host and path, allows every
/// method it allows, and requires no header it does not require.
pub(super) fn warn_unreachable(
    raw: &[RawRoute],
    compiled: &[RouteConfig],
    problems: &mut Problems,
) {
    let raw_index = |route: &RouteConfig| {
        raw.iter()
            .position(|r| r.name == route.name)
            .unwrap_or_default()
    };
    for (j, later) in compiled.iter().enumerate() {
        let Some(earlier) = compiled[..j]
            .iter()
            .find(|earlier| covers(&earlier.spec, &later.spec))
        else {
            continue;
        };
        let (first, second) = (raw_index(earlier), raw_index(later));
        let how = if same_matchers(&earlier.spec, &later.spec) {
            "matches exactly the same requests"
        } else {
            "has the same host and path, so it takes all of these requests (it allows these methods and requires no header this route does not)"
        };
        problems.warn(
            format!("routes[{second}].match"),
            format!(
                "route {:?} can never match: route {:?} (routes[{first}] at {}) comes first and {how}",
                later.name,
                earlier.name,
                problems.location_of(&format!("routes[{first}].match")),
            ),
        );
    }
}

/// Whether every request `later` matches is matched by `earlier` first.
fn covers(earlier: &RouteSpec, later: &RouteSpec) -> bool {
    let methods = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(wide), Some(narrow)) => narrow.iter().all(|m| {
            wide.contains(m) || (*m == http::Method::HEAD && wide.contains(&http::Method::GET))
        }),
    };
    earlier.host == later.host
        && earlier.path == later.path
        && methods
        && earlier.headers.iter().all(|h| later.headers.contains(h))
}

fn same_matchers(a: &RouteSpec, b: &RouteSpec) -> bool {
    fn sorted(methods: &Option<Vec<http::Method>>) -> Option<Vec<&str>> {
        methods.as_ref().map(|m| {
            let mut names: Vec<&str> = m.iter().map(http::Method::as_str).collect();
            names.sort_unstable();
            names.dedup();
            names
        })
    }
    covers(a, b) && covers(b, a) && sorted(&a.methods) == sorted(&b.methods)
}
