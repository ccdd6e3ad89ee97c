//! `listeners[].access_log`: on (JSON lines to stdout) unless `off`; a file, the share
//! of successful requests logged, the slow-request rule, the query string, and the
//! request header fields logged, credentials redacted unless listed in `unredacted`.

use std::path::Path;

use http::HeaderName;

use super::Problems;
use crate::config::raw::{RawAccessLog, RawAccessLogSettings, RawListener};
use crate::config::{defaults, AccessLogConfig, AccessLogDestination, LoggedHeader};

/// Header fields that carry credentials: their values are logged as `[redacted]`
/// unless the log lists them in `unredacted`.
const CREDENTIALS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
];

/// Whether a field named `name` (lowercase) carries credentials.
fn is_credential(name: &str) -> bool {
    CREDENTIALS.contains(&name)
        || name.ends_with("-token")
        || name.ends_with("-secret")
        || name.ends_with("-api-key")
}

/// Each listener's access log, indexed like `raw`.
pub(super) fn compile_access_logs(
    raw: &[RawListener],
    base: &Path,
    problems: &mut Problems,
) -> Vec<Option<AccessLogConfig>> {
    let defaults = RawAccessLogSettings::default();
    raw.iter()
        .enumerate()
        .map(|(i, listener)| {
            let key = format!("listeners[{i}].access_log");
            let settings = match &listener.access_log {
                Some(RawAccessLog::Switch(false)) => return None,
                None | Some(RawAccessLog::Switch(true)) => &defaults,
                Some(RawAccessLog::Settings(settings)) => settings,
            };
            Some(compile_settings(&key, settings, base, problems))
        })
        .collect()
}

fn compile_settings(
    key: &str,
    raw: &RawAccessLogSettings,
    base: &Path,
    problems: &mut Problems,
) -> AccessLogConfig {
    let destination = match &raw.path {
        None => AccessLogDestination::Stdout,
        Some(path) if path.as_os_str().is_empty() => {
            problems.add(
                format!("{key}.path"),
                "must not be empty (leave `path` out for stdout)",
            );
            AccessLogDestination::Stdout
        }
        Some(path) => AccessLogDestination::File(base.join(path)),
    };
    let sample = raw.sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample) {
        problems.add(
            format!("{key}.sample"),
            format!(
                "must be between 0 and 1 (the share of successful requests logged), not {sample}"
            ),
        );
    }
    let queue = raw.queue.unwrap_or(defaults::ACCESS_LOG_QUEUE);
    if queue == 0 {
        problems.add(format!("{key}.queue"), "must be at least 1");
    }
    let unredacted: Vec<String> = raw
        .unredacted
        .iter()
        .flatten()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    let mut headers: Vec<LoggedHeader> = Vec::new();
    for (j, name) in raw.headers.iter().flatten().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) if headers.iter().any(|h| h.name == name) => problems.add(
                format!("{key}.headers[{j}]"),
                format!("`{name}` is listed twice"),
            ),
            Ok(name) => headers.push(LoggedHeader {
                redacted: is_credential(name.as_str())
                    && !unredacted.iter().any(|u| u == name.as_str()),
                name,
            }),
            Err(_) => problems.add(
                format!("{key}.headers[{j}]"),
                format!("{name:?} is not a valid header field name"),
            ),
        }
    }
    for (j, name) in unredacted.iter().enumerate() {
        let field = format!("{key}.unredacted[{j}]");
        if !headers.iter().any(|h| h.name.as_str() == name) {
            problems.add(field, format!("`{name}` is not in `headers`"));
        } else if is_credential(name) {
            problems.warn(
                field,
                format!(
                    "`{name}` carries credentials: its values will be in the access log in clear"
                ),
            );
        } else {
            problems.warn(field, format!("`{name}` is not redacted anyway"));
        }
    }
    AccessLogConfig {
        destination,
        sample,
        slow_over: raw
            .slow_over
            .map_or(defaults::ACCESS_LOG_SLOW_OVER, |d| d.0),
        query: raw.query.unwrap_or(false),
        headers,
        queue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_known_by_name_and_by_suffix() {
        for name in [
            "authorization",
            "cookie",
            "x-api-key",
            "x-session-token",
            "x-client-secret",
        ] {
            assert!(is_credential(name), "{name}");
        }
        for name in ["x-tenant", "user-agent", "x-request-id", "tokenizer"] {
            assert!(!is_credential(name), "{name}");
        }
    }
}
