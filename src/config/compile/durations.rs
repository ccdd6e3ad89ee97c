//! Sane bounds of every duration in the file: a value far outside what a gateway's
//! timer can mean (`timeout: 1ns`, `connect_timeout: 2h`) is surely a wrong unit or a
//! typo, so `check` warns about it. The file still loads: a warning, not an error,
//! because an unusual deployment may mean it.
//!
//! The bounds are by key (the last segment of the key path, and for `timeout` its
//! parent), documented in `docs/configuration.md` ("Durations").

use std::time::Duration;

use super::Problems;
use crate::config::raw::{RawConfig, RawRetry, RawUpstream};
use crate::config::units::HumanDuration;

/// Below this, no timer of the gateway means anything (scheduling alone takes longer).
pub(super) const MIN: Duration = Duration::from_millis(1);

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The longest value that makes sense at `key`.
pub(super) fn max_for(key: &str) -> Duration {
    let last = key.rsplit('.').next().unwrap_or(key);
    match last {
        "connect_timeout" | "queue_timeout" | "handshake_timeout" | "proxy_protocol_timeout" => {
            MINUTE
        }
        "timeout" if key.contains(".health_check.") || key.contains(".redis.") => MINUTE,
        "timeout" if key.starts_with("tracing.") => MINUTE,
        "export_interval" => MINUTE,
        "timeout" | "per_try_timeout" | "shutdown_timeout" => HOUR,
        "interval" | "poll_interval" | "reload_interval" => HOUR,
        "idle_timeout" if key.contains(".websocket.") => DAY,
        "idle_timeout" => HOUR,
        _ => DAY,
    }
}

/// Warns about every duration of `raw` outside its bounds.
pub(super) fn check_duration_bounds(raw: &RawConfig, problems: &mut Problems) {
    let mut found: Vec<(String, HumanDuration)> = Vec::new();
    let mut at = |key: String, value: Option<HumanDuration>| {
        if let Some(value) = value {
            found.push((key, value));
        }
    };
    at("shutdown_timeout".to_owned(), raw.shutdown_timeout);
    at("reload.poll_interval".to_owned(), raw.reload.poll_interval);
    if let Some(tracing) = &raw.tracing {
        at("tracing.otlp.timeout".to_owned(), tracing.otlp.timeout);
        at(
            "tracing.export_interval".to_owned(),
            tracing.export_interval,
        );
    }
    for (i, listener) in raw.listeners.iter().enumerate() {
        let key = |field: &str| format!("listeners[{i}].{field}");
        at(key("idle_timeout"), listener.idle_timeout);
        if let Some(client_ip) = &listener.client_ip {
            at(
                key("client_ip.proxy_protocol_timeout"),
                client_ip.proxy_protocol_timeout,
            );
        }
        if let Some(tls) = &listener.tls {
            at(key("tls.handshake_timeout"), tls.handshake_timeout);
            at(key("tls.reload_interval"), tls.reload_interval);
        }
    }
    for (name, upstream) in &raw.upstreams {
        upstream_durations(&format!("upstreams.{name}"), upstream, &mut at);
    }
    for (i, route) in raw.routes.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        at(key("timeout"), route.timeout);
        if let Some(retry) = &route.retry {
            retry_durations(&key("retry"), retry, &mut at);
        }
        if let Some(websocket) = &route.websocket {
            at(key("websocket.idle_timeout"), websocket.idle_timeout);
        }
        if let Some(aggregate) = &route.aggregate {
            at(key("aggregate.timeout"), aggregate.timeout);
            for (call, raw_call) in &aggregate.calls {
                at(
                    key(&format!("aggregate.calls.{call}.timeout")),
                    raw_call.timeout,
                );
            }
        }
    }
    for (name, policy) in &raw.policies {
        if let Some(cors) = &policy.cors {
            at(format!("policies.{name}.cors.max_age"), cors.max_age);
        }
    }
    for (name, store) in &raw.rate_limit_stores {
        at(
            format!("rate_limit_stores.{name}.redis.timeout"),
            store.redis.timeout,
        );
    }
    for (key, value) in found {
        // Zero is an error where it is checked, not a warning.
        if value.0.is_zero() {
            continue;
        }
        let max = max_for(&key);
        if value.0 < MIN {
            problems.warn(
                key,
                format!(
                    "{value} is shorter than {}, too short for any timer of the gateway: check the unit",
                    HumanDuration(MIN)
                ),
            );
        } else if value.0 > max {
            problems.warn(
                key,
                format!(
                    "{value} is longer than {}, the most that makes sense here: check the unit",
                    HumanDuration(max)
                ),
            );
        }
    }
}

fn upstream_durations(
    prefix: &str,
    upstream: &RawUpstream,
    at: &mut impl FnMut(String, Option<HumanDuration>),
) {
    let key = |field: &str| format!("{prefix}.{field}");
    at(key("queue_timeout"), upstream.queue_timeout);
    at(key("connect_timeout"), upstream.connect_timeout);
    at(key("timeout"), upstream.timeout);
    at(key("pool.idle_timeout"), upstream.pool.idle_timeout);
    if let Some(check) = &upstream.health_check {
        at(key("health_check.interval"), check.interval);
        at(key("health_check.timeout"), check.timeout);
    }
    if let Some(outlier) = &upstream.outlier {
        at(
            key("outlier.base_ejection_time"),
            outlier.base_ejection_time,
        );
        at(key("outlier.max_ejection_time"), outlier.max_ejection_time);
    }
    if let Some(retry) = &upstream.retry {
        retry_durations(&key("retry"), retry, at);
    }
}

fn retry_durations(
    prefix: &str,
    retry: &RawRetry,
    at: &mut impl FnMut(String, Option<HumanDuration>),
) {
    at(format!("{prefix}.per_try_timeout"), retry.per_try_timeout);
}
