//! `retry`, the same mapping under an upstream (its default) and under a route (an
//! override): attempts, what to retry on, backoff, budget, per-try timeout, methods.

use super::Problems;
use crate::config::defaults;

pub(super) fn compile_retry(
    key: &str,
    raw: &crate::config::raw::RawRetry,
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
