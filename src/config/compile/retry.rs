//! `retry`, the same mapping under an upstream (its default) and under a route (an
//! override): attempts, what to retry on, backoff, budget, per-try timeout, methods; and
//! a route's `hedge`, which draws on the same budget.

use std::time::Duration;

use super::Problems;
use crate::config::raw::{RawConfig, RawHedge, RawRetry};
use crate::config::units::{HumanDuration, ScalarString};
use crate::config::{
    defaults, HedgeConfig, HedgeDelay, RetryConfig, RetryOn, RouteConfig, RouteTarget,
    UpstreamConfig,
};

/// The `retry` mapping at `key`; `None` when any of its values is invalid (every
/// problem is recorded).
pub(super) fn compile_retry(
    key: &str,
    raw: &RawRetry,
    problems: &mut Problems,
) -> Option<RetryConfig> {
    let mut ok = true;
    if raw.attempts == 0 {
        problems.add(
            format!("{key}.attempts"),
            "must be at least 1 (the first try counts)",
        );
        ok = false;
    }
    let on = compile_retry_on(key, raw.on.as_deref(), problems);
    let backoff = compile_backoff(key, raw.backoff.as_deref(), problems);
    let budget_percent = compile_budget(key, raw.budget.as_ref(), problems);
    let per_try_timeout = raw.per_try_timeout.map(|d| d.0);
    if per_try_timeout.is_some_and(|d| d.is_zero()) {
        problems.add(format!("{key}.per_try_timeout"), "must be longer than 0s");
        ok = false;
    }
    let methods = match &raw.methods {
        Some(methods) => methods.iter().map(|m| m.to_method()).collect(),
        None => idempotent_methods(),
    };
    if raw.attempts == 1 {
        problems.warn(
            format!("{key}.attempts"),
            "1 is the first try only: nothing is retried (write 2 for one retry)",
        );
    }
    if on.as_ref().is_some_and(|on| on.timeout) && per_try_timeout.is_none() {
        problems.warn(
            format!("{key}.on"),
            "retrying on `timeout` needs `per_try_timeout`: without it the first try has the \
             whole timeout and none is left for another",
        );
    }
    let (Some(on), Some(backoff), Some(budget_percent)) = (on, backoff, budget_percent) else {
        return None;
    };
    ok.then(|| RetryConfig {
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

/// `on`: which failures are tried again (connect failures, resets and 502, 503 and 504
/// when not given). `None` when an item is none of them.
fn compile_retry_on(
    key: &str,
    list: Option<&[ScalarString]>,
    problems: &mut Problems,
) -> Option<RetryOn> {
    let mut ok = true;
    let mut on = RetryOn::default();
    match list {
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
    ok.then_some(on)
}

/// `backoff`: the bounds of the full-jitter backoff between tries, e.g. `25ms..250ms`.
fn compile_backoff(
    key: &str,
    text: Option<&str>,
    problems: &mut Problems,
) -> Option<(Duration, Duration)> {
    match text {
        None => Some(defaults::RETRY_BACKOFF),
        Some(text) => match text.split_once("..").map(|(a, b)| {
            (
                HumanDuration::parse(a).map(|d| d.0),
                HumanDuration::parse(b).map(|d| d.0),
            )
        }) {
            Some((Ok(low), Ok(high))) if low <= high => Some((low, high)),
            _ => {
                problems.add(
                    format!("{key}.backoff"),
                    format!("{text:?} is not a range; write e.g. 25ms..250ms"),
                );
                None
            }
        },
    }
}

/// `budget`: retries allowed, as a percentage of the upstream's recent requests (`20%`).
fn compile_budget(key: &str, text: Option<&ScalarString>, problems: &mut Problems) -> Option<u32> {
    match text {
        None => Some(defaults::RETRY_BUDGET_PERCENT),
        Some(text) => match text.0.trim().trim_end_matches('%').trim().parse::<u32>() {
            Ok(percent) if percent <= 100 => Some(percent),
            _ => {
                problems.add(
                    format!("{key}.budget"),
                    format!("{:?} is not a percentage; write e.g. 20%", text.0),
                );
                None
            }
        },
    }
}

/// Warns where a `per_try_timeout` is not shorter than the timeout that contains it: the
/// first try then uses all the time and no retry starts after a timeout. Checked for
/// each upstream's own policy and for each proxy route's policy in effect (its own or
/// its upstream's) under its timeout in effect.
pub(super) fn warn_per_try_timeouts(
    raw: &RawConfig,
    upstreams: &[UpstreamConfig],
    routes: &[RouteConfig],
    problems: &mut Problems,
) {
    for upstream in upstreams {
        if let Some(per_try) = upstream.retry.as_ref().and_then(|r| r.per_try_timeout) {
            if per_try >= upstream.timeout {
                problems.warn(
                    format!("upstreams.{}.retry.per_try_timeout", upstream.name),
                    format!(
                        "{} is not shorter than the upstream's timeout ({}), which bounds all \
                         tries together: the first try uses all of it and is never retried \
                         after a timeout",
                        HumanDuration(per_try),
                        HumanDuration(upstream.timeout)
                    ),
                );
            }
        }
    }
    for route in routes {
        let RouteTarget::Proxy {
            upstream,
            timeout,
            retry,
            ..
        } = &route.target
        else {
            continue;
        };
        let Some(i) = raw.routes.iter().position(|r| r.name == route.name) else {
            continue;
        };
        let upstream = &upstreams[*upstream];
        // The upstream's own pairing is reported above.
        if retry.is_none() && timeout.is_none() {
            continue;
        }
        let Some(per_try) = retry
            .as_ref()
            .or(upstream.retry.as_ref())
            .and_then(|r| r.per_try_timeout)
        else {
            continue;
        };
        let (limit, limit_key) = match timeout {
            Some(t) => (*t, format!("routes[{i}].timeout")),
            None => (
                upstream.timeout,
                format!("upstreams.{}.timeout", upstream.name),
            ),
        };
        if per_try >= limit {
            let key = if retry.is_some() {
                format!("routes[{i}].retry.per_try_timeout")
            } else {
                format!("routes[{i}].timeout")
            };
            problems.warn(
                key,
                format!(
                    "the route's per_try_timeout ({}) is not shorter than its timeout ({}, {limit_key}), \
                     which bounds all tries together: the first try uses all of it and is \
                     never retried after a timeout",
                    HumanDuration(per_try),
                    HumanDuration(limit)
                ),
            );
        }
    }
}

/// A route's `hedge`.
pub(super) fn compile_hedge(
    key: &str,
    raw: &RawHedge,
    problems: &mut Problems,
) -> Option<HedgeConfig> {
    let text = raw.after.0.trim();
    let after = match text.strip_prefix('p') {
        Some(digits) => match digits.parse::<f64>() {
            Ok(percentile) if (50.0..100.0).contains(&percentile) => {
                Some(HedgeDelay::Percentile(percentile / 100.0))
            }
            _ => {
                problems.add(
                    format!("{key}.after"),
                    format!("{text:?} is not a percentile from p50 to p99.9"),
                );
                None
            }
        },
        None => match HumanDuration::parse(text) {
            Ok(HumanDuration(delay)) if !delay.is_zero() => Some(HedgeDelay::Fixed(delay)),
            Ok(_) => {
                problems.add(format!("{key}.after"), "must be longer than 0s");
                None
            }
            Err(message) => {
                problems.add(
                    format!("{key}.after"),
                    format!("{message}, or a percentile of the route's latency such as p95"),
                );
                None
            }
        },
    };
    let max = raw.max.unwrap_or(1);
    if !(1..=3).contains(&max) {
        problems.add(format!("{key}.max"), "must be 1, 2 or 3");
    }
    let budget_percent = compile_budget(key, raw.budget.as_ref(), problems);
    let methods = match &raw.methods {
        Some(methods) => methods.iter().map(|m| m.to_method()).collect(),
        None => idempotent_methods(),
    };
    Some(HedgeConfig {
        after: after?,
        max: max.clamp(1, 3),
        budget_percent: budget_percent?,
        methods,
    })
}

/// The methods retried and hedged unless a policy lists its own: the idempotent ones
/// (RFC 9110 § 9.2.2) but TRACE.
fn idempotent_methods() -> Vec<http::Method> {
    vec![
        http::Method::GET,
        http::Method::HEAD,
        http::Method::OPTIONS,
        http::Method::PUT,
        http::Method::DELETE,
    ]
}
