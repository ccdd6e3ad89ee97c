//! A policy's `cors`: origins parsed ([`crate::config::cors`]), methods and header names
//! checked, and the preflight answer's header values joined once.

use http::{HeaderName, HeaderValue, Method};

use super::Problems;
use crate::config::cors::{join_value, CorsConfig, OriginPattern, Origins};
use crate::config::raw::RawCors;

/// Browsers cap how long they keep a preflight's answer (Chromium at two hours).
const BROWSER_MAX_AGE_CAP: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

pub(super) fn compile_cors(key: &str, raw: &RawCors, problems: &mut Problems) -> CorsConfig {
    let origins = compile_origins(key, raw, problems);
    let methods: Vec<Method> = match &raw.methods {
        None => vec![Method::GET, Method::HEAD, Method::POST],
        Some(methods) => {
            if methods.is_empty() {
                problems.add(
                    format!("{key}.methods"),
                    "list at least one method, or leave `methods` out for GET, HEAD and POST",
                );
            }
            let mut listed: Vec<Method> = Vec::with_capacity(methods.len());
            for method in methods.iter().map(|m| m.to_method()) {
                if !listed.contains(&method) {
                    listed.push(method);
                }
            }
            listed
        }
    };
    let headers = header_names(&format!("{key}.headers"), &raw.headers, problems);
    let expose = header_names(
        &format!("{key}.expose_headers"),
        &raw.expose_headers,
        problems,
    );
    let max_age = raw.max_age.map(|d| d.0);
    if let Some(age) = max_age {
        if age.subsec_nanos() != 0 {
            problems.add(
                format!("{key}.max_age"),
                "browsers read whole seconds; write e.g. 10m or 600s",
            );
        } else if age > BROWSER_MAX_AGE_CAP {
            problems.warn(
                format!("{key}.max_age"),
                "browsers keep a preflight's answer at most 2h (Chromium) or 24h (Firefox)",
            );
        }
    }
    CorsConfig {
        allow_methods: join_value(methods.iter().map(Method::as_str))
            .unwrap_or_else(|| HeaderValue::from_static("GET, HEAD, POST")),
        allow_headers: join_value(headers.iter().map(HeaderName::as_str)),
        expose_headers: join_value(expose.iter().map(HeaderName::as_str)),
        max_age_value: max_age.map(|age| HeaderValue::from(age.as_secs())),
        origins,
        methods,
        headers,
        credentials: raw.credentials,
        max_age,
    }
}

fn compile_origins(key: &str, raw: &RawCors, problems: &mut Problems) -> Origins {
    let key = format!("{key}.origins");
    if raw.origins.is_empty() {
        problems.add(
            key.as_str(),
            "list the allowed origins, e.g. https://app.example.com, or `*` for any",
        );
    }
    if raw.origins.iter().any(|o| o == "*") {
        if raw.origins.len() > 1 {
            problems.add(
                key.as_str(),
                "`*` already allows every origin; list it alone",
            );
        }
        if raw.credentials {
            problems.add(
                key.as_str(),
                "`*` is never combined with `credentials: true` (browsers refuse \
                 credentialed answers to `*`); list the origins",
            );
        }
        return Origins::Any;
    }
    let patterns = raw
        .origins
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            OriginPattern::parse(text)
                .map_err(|message| problems.add(format!("{key}[{i}]"), message))
                .ok()
        })
        .collect();
    Origins::List(patterns)
}

/// `raw` as header names (lower case), each once.
fn header_names(key: &str, raw: &[String], problems: &mut Problems) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        if text == "*" {
            problems.add(
                format!("{key}[{i}]"),
                "`*` is not supported here; list the header names",
            );
            continue;
        }
        match HeaderName::try_from(text.as_str()) {
            Ok(name) if !names.contains(&name) => names.push(name),
            Ok(_) => {}
            Err(_) => problems.add(
                format!("{key}[{i}]"),
                format!("{text:?} is not a valid header name"),
            ),
        }
    }
    names
}
