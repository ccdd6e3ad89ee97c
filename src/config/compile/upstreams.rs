//! `upstreams`: each upstream's endpoints, concurrency limit and queue, timeouts,
//! connection pool, health check and outlier detection. Its `tls` is compiled by
//! [`super::tls`], its `retry` by [`super::retry`].

use std::path::Path;

use http::uri::{Authority, Scheme};
use http::Uri;

use super::retry::compile_retry;
use super::tls::compile_upstream_tls;
use super::{check_name, Problems};
use crate::config::raw::{RawOutlier, RawUpstream};
use crate::config::{defaults, AdaptiveLimit, EndpointAddress, OutlierConfig, UpstreamConfig};

pub(super) fn compile_upstream(
    name: &str,
    raw: &RawUpstream,
    base: &Path,
    problems: &mut Problems,
) -> Option<UpstreamConfig> {
    let key = |field: &str| format!("upstreams.{name}.{field}");
    check_name("upstream", name, format!("upstreams.{name}"), problems);
    let endpoints = compile_endpoints(name, raw, problems);
    let (max_in_flight, adaptive) = compile_max_in_flight(name, raw, problems);
    let positive = |value: Option<crate::config::units::HumanDuration>,
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
    let outlier = raw
        .outlier
        .as_ref()
        .map(|outlier| compile_outlier(name, outlier, problems));
    let retry = raw
        .retry
        .as_ref()
        .and_then(|retry| compile_retry(&format!("upstreams.{name}.retry"), retry, problems));
    warn_idle_settings(name, raw, health_check.as_ref(), problems);
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

/// `endpoints`: at least one, each a valid `http://` or `https://` address, none twice.
fn compile_endpoints(
    name: &str,
    raw: &RawUpstream,
    problems: &mut Problems,
) -> Vec<EndpointAddress> {
    let key = |field: &str| format!("upstreams.{name}.{field}");
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
    endpoints
}

/// `max_in_flight`: a fixed limit, or an adaptive one (then the starting limit and
/// the bounds).
fn compile_max_in_flight(
    name: &str,
    raw: &RawUpstream,
    problems: &mut Problems,
) -> (usize, Option<AdaptiveLimit>) {
    let key = |field: &str| format!("upstreams.{name}.{field}");
    match &raw.max_in_flight {
        None => (defaults::MAX_IN_FLIGHT, None),
        Some(crate::config::raw::RawMaxInFlight::Fixed(limit)) => {
            if *limit == 0 {
                problems.add(key("max_in_flight"), "must be at least 1");
            }
            (*limit, None)
        }
        Some(crate::config::raw::RawMaxInFlight::Adaptive { adaptive }) => {
            let min = adaptive.min.unwrap_or(8);
            let max = adaptive.max.unwrap_or(defaults::MAX_IN_FLIGHT);
            let initial = adaptive.initial.unwrap_or(min);
            if min == 0 || min > max || !(min..=max).contains(&initial) {
                problems.add(
                    key("max_in_flight.adaptive"),
                    format!("needs 1 <= min <= initial <= max (got min {min}, initial {initial}, max {max})"),
                );
            }
            (initial, Some(AdaptiveLimit { min, max }))
        }
    }
}

/// `outlier`: when an endpoint is ejected after consecutive failures, and for how long.
fn compile_outlier(name: &str, outlier: &RawOutlier, problems: &mut Problems) -> OutlierConfig {
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
    OutlierConfig {
        consecutive_failures,
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: percent,
    }
}

fn compile_health_check(
    upstream: &str,
    raw: &crate::config::raw::RawHealthCheck,
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

/// Settings of an upstream that are valid but do nothing.
fn warn_idle_settings(
    name: &str,
    raw: &RawUpstream,
    health_check: Option<&crate::config::HealthCheckConfig>,
    problems: &mut Problems,
) {
    let key = |field: &str| format!("upstreams.{name}.{field}");
    if let Some(outlier) = &raw.outlier {
        let percent = outlier
            .max_ejection_percent
            .unwrap_or(defaults::MAX_EJECTION_PERCENT);
        if raw.endpoints.len() == 1 && percent < 100 {
            problems.warn(
                key("outlier"),
                format!(
                    "has no effect with one endpoint: max_ejection_percent {percent} never \
                     ejects an upstream's only endpoint"
                ),
            );
        }
    }
    if let Some(check) = health_check {
        if check.timeout > check.interval {
            problems.warn(
                key("health_check.timeout"),
                format!(
                    "{} is longer than the interval ({}): a slow check is still waiting when the next is due",
                    crate::config::units::HumanDuration(check.timeout),
                    crate::config::units::HumanDuration(check.interval)
                ),
            );
        }
    }
    if raw.max_queue == Some(0) && raw.queue_timeout.is_some() {
        problems.warn(
            key("queue_timeout"),
            "has no effect with `max_queue: 0`: no request waits for a permit",
        );
    }
}
