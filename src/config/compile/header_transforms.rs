//! A policy's `headers`: names checked (valid, not a framing or hop-by-hop field, not
//! both set and removed), values parsed for placeholders
//! ([`crate::config::header_transforms`]); and, per route, the path parameters they
//! name checked against the route's path.

use std::collections::BTreeMap;

use http::HeaderName;

use super::{unknown_name, Problems};
use crate::config::header_transforms::{
    is_untouchable, HeaderEdits, HeaderTransformsConfig, ValueTemplate, BUILT_IN_PLACEHOLDERS,
};
use crate::config::raw::{RawHeaderEdits, RawHeaderTransforms};
use crate::config::units::ScalarString;
use crate::config::PolicyConfig;

pub(super) fn compile_header_transforms(
    key: &str,
    raw: &RawHeaderTransforms,
    problems: &mut Problems,
) -> HeaderTransformsConfig {
    let transforms = HeaderTransformsConfig {
        request: compile_edits(&format!("{key}.request"), &raw.request, true, problems),
        response: compile_edits(&format!("{key}.response"), &raw.response, false, problems),
    };
    if transforms.request.is_empty() && transforms.response.is_empty() {
        problems.warn(
            key,
            "changes nothing: give `request` or `response` a `set`, `add` or `remove`",
        );
    }
    transforms
}

fn compile_edits(
    key: &str,
    raw: &RawHeaderEdits,
    request: bool,
    problems: &mut Problems,
) -> HeaderEdits {
    let mut remove = Vec::with_capacity(raw.remove.len());
    for (i, text) in raw.remove.iter().enumerate() {
        if let Some(name) = name(&format!("{key}.remove[{i}]"), text, problems) {
            if !remove.contains(&name) {
                remove.push(name);
            }
        }
    }
    let set = values(&format!("{key}.set"), &raw.set, request, problems);
    let add = values(&format!("{key}.add"), &raw.add, request, problems);
    for (name, _) in &set {
        if remove.contains(name) {
            problems.add(
                format!("{key}.set.{name}"),
                format!("`{name}` is also under `remove`; `set` already replaces it"),
            );
        }
    }
    HeaderEdits { remove, set, add }
}

fn values(
    key: &str,
    raw: &BTreeMap<String, ScalarString>,
    request: bool,
    problems: &mut Problems,
) -> Vec<(HeaderName, ValueTemplate)> {
    let mut compiled: Vec<(HeaderName, ValueTemplate)> = Vec::with_capacity(raw.len());
    for (text, value) in raw {
        let key = format!("{key}.{text}");
        let Some(name) = name(&key, text, problems) else {
            continue;
        };
        if compiled.iter().any(|(seen, _)| *seen == name) {
            problems.add(key, format!("`{name}` is listed twice (names ignore case)"));
            continue;
        }
        match ValueTemplate::parse(&value.0) {
            Ok(template) if !request && template.varies_per_request() => problems.add(
                key,
                "answer headers are fixed per route: of the placeholders only `{route}` \
                 may appear here",
            ),
            Ok(template) => compiled.push((name, template)),
            Err(message) => problems.add(key, message),
        }
    }
    compiled
}

fn name(key: &str, text: &str, problems: &mut Problems) -> Option<HeaderName> {
    let Ok(name) = HeaderName::try_from(text) else {
        problems.add(key, format!("{text:?} is not a valid header name"));
        return None;
    };
    if let Some(why) = is_untouchable(&name) {
        problems.add(
            key,
            format!("`{name}` cannot be changed by a transform: {why}"),
        );
        return None;
    }
    Some(name)
}

/// Checks what a route's named policies need of it: at most one of them sets `cors`,
/// and every path parameter their header transforms name is one the route's path
/// captures. `names` are the route's `policies` as written, `resolved` their indexes.
pub(super) fn check_route_policies(
    route: usize,
    route_name: &str,
    captured: &[String],
    resolved: &[usize],
    policies: &[PolicyConfig],
    problems: &mut Problems,
) {
    let mut cors: Option<&str> = None;
    for (position, policy) in resolved.iter().filter_map(|&p| policies.get(p)).enumerate() {
        if policy.cors.is_some() {
            if let Some(first) = cors {
                problems.add(
                    format!("routes[{route}].policies[{position}]"),
                    format!(
                        "policies {first:?} and {:?} both set `cors`; a route answers \
                         preflights by one",
                        policy.name
                    ),
                );
            }
            cors = Some(&policy.name);
        }
        let Some(transforms) = &policy.headers else {
            continue;
        };
        for (field, template) in &transforms.request.set {
            check_params(
                route_name, captured, policy, "set", field, template, problems,
            );
        }
        for (field, template) in &transforms.request.add {
            check_params(
                route_name, captured, policy, "add", field, template, problems,
            );
        }
    }
}

fn check_params(
    route_name: &str,
    captured: &[String],
    policy: &PolicyConfig,
    edit: &str,
    field: &HeaderName,
    template: &ValueTemplate,
    problems: &mut Problems,
) {
    for param in template.params() {
        if captured.iter().any(|c| c == param) {
            continue;
        }
        let known: Vec<&str> = BUILT_IN_PLACEHOLDERS
            .iter()
            .copied()
            .chain(captured.iter().map(String::as_str))
            .collect();
        problems.add(
            format!("policies.{}.headers.request.{edit}.{field}", policy.name),
            format!(
                "{} (on route {route_name:?}, which names this policy; besides the built-in \
                 placeholders a value may name the route's path parameters)",
                unknown_name("placeholder", param, &known)
            ),
        );
    }
}
