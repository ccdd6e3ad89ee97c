//! Validating an aggregate route: every call's upstream exists, every placeholder
//! resolves, the calls' dependencies form no cycle, and `flat` merges that must
//! collide are flagged while loading.

use std::collections::BTreeMap;

use http::HeaderName;

use super::compile::{unknown_upstream, Problems};
use super::raw::{MergeMode, RawAggregate, RawCall};
use super::{defaults, AggregateConfig, CallConfig};
use crate::template::CallTemplate;

pub(super) fn compile(
    route: usize,
    raw: &RawAggregate,
    captured: &[String],
    upstream_names: &[&str],
    problems: &mut Problems,
) -> Option<AggregateConfig> {
    let base = format!("routes[{route}].aggregate");
    if raw.calls.is_empty() {
        problems.add(format!("{base}.calls"), "list at least one call");
    }
    let timeout = raw.timeout.map_or(defaults::AGGREGATE_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        problems.add(format!("{base}.timeout"), "must be longer than 0s");
    }
    let names: Vec<&str> = raw.calls.keys().map(String::as_str).collect();
    let before = problems_count(problems);
    let calls: Vec<Option<CallConfig>> = raw
        .calls
        .iter()
        .map(|(name, call)| {
            compile_call(
                &format!("{base}.calls.{name}"),
                name,
                call,
                captured,
                &names,
                upstream_names,
                problems,
            )
        })
        .collect();
    if problems_count(problems) > before {
        return None;
    }
    let calls: Vec<CallConfig> = calls.into_iter().flatten().collect();
    if let Some(cycle) = find_cycle(&calls) {
        let path: Vec<&str> = cycle.iter().map(|&i| calls[i].name.as_str()).collect();
        problems.add(
            format!("{base}.calls.{}.path", calls[cycle[0]].name),
            format!(
                "calls depend on each other in a cycle: {}",
                path.join(" -> ")
            ),
        );
        return None;
    }
    if raw.merge == MergeMode::Flat {
        warn_flat_conflicts(&base, &raw.calls, problems);
    }
    Some(AggregateConfig {
        timeout,
        merge: raw.merge,
        stream: raw.stream,
        max_body_size: raw
            .max_body_size
            .map_or(defaults::AGGREGATE_MAX_BODY_SIZE, |s| s.0),
        calls,
    })
}

fn problems_count(problems: &Problems) -> usize {
    problems.error_count()
}

fn compile_call(
    key: &str,
    name: &str,
    raw: &RawCall,
    captured: &[String],
    calls: &[&str],
    upstream_names: &[&str],
    problems: &mut Problems,
) -> Option<CallConfig> {
    if name.is_empty()
        || name == "query"
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.add(
            key.to_owned(),
            format!("call name {name:?} must be letters, digits, `-` or `_` (and not `query`, which names the client's query)"),
        );
    }
    let upstream = upstream_names.iter().position(|u| *u == raw.upstream);
    if upstream.is_none() {
        problems.add(
            format!("{key}.upstream"),
            unknown_upstream(&raw.upstream, upstream_names),
        );
    }
    let path = CallTemplate::parse(&raw.path, captured, calls)
        .map_err(|e| problems.add(format!("{key}.path"), e))
        .ok();
    let own_index = calls.iter().position(|c| *c == name);
    let depends_on = path
        .as_ref()
        .map(CallTemplate::dependencies)
        .unwrap_or_default();
    if own_index.is_some_and(|own| depends_on.contains(&own)) {
        problems.add(
            format!("{key}.path"),
            format!("call `{name}` cannot use its own result"),
        );
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (i, header) in raw.headers.iter().enumerate() {
        match HeaderName::try_from(header.as_str()) {
            Ok(h) => headers.push(h),
            Err(_) => problems.add(
                format!("{key}.headers[{i}]"),
                format!("{header:?} is not a valid header name"),
            ),
        }
    }
    let timeout = raw.timeout.map(|d| d.0);
    if timeout.is_some_and(|t| t.is_zero()) {
        problems.add(format!("{key}.timeout"), "must be longer than 0s");
    }
    if raw.select.as_ref().is_some_and(Vec::is_empty) {
        problems.add(
            format!("{key}.select"),
            "list at least one field, or leave `select` out to keep all",
        );
    }
    Some(CallConfig {
        name: name.to_owned(),
        upstream: upstream?,
        method: raw.method.map_or(http::Method::GET, |m| m.to_method()),
        path: path?,
        headers,
        timeout,
        optional: raw.optional,
        select: raw.select.clone(),
        depends_on,
    })
}

/// A cycle among the calls' dependencies, as call indices, if there is one.
fn find_cycle(calls: &[CallConfig]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        call: usize,
        calls: &[CallConfig],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        match marks[call] {
            Mark::Done => return None,
            Mark::Active => {
                let start = stack.iter().position(|&c| c == call).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(call);
                return Some(cycle);
            }
            Mark::New => {}
        }
        marks[call] = Mark::Active;
        stack.push(call);
        for &dependency in &calls[call].depends_on {
            if let Some(cycle) = visit(dependency, calls, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks[call] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; calls.len()];
    (0..calls.len()).find_map(|call| visit(call, calls, &mut marks, &mut Vec::new()))
}

/// With `merge: flat`, two calls that both `select` the same field always collide.
fn warn_flat_conflicts(base: &str, calls: &BTreeMap<String, RawCall>, problems: &mut Problems) {
    let selected: Vec<(&String, &Vec<String>)> = calls
        .iter()
        .filter_map(|(name, call)| call.select.as_ref().map(|s| (name, s)))
        .collect();
    for (i, (first, first_fields)) in selected.iter().enumerate() {
        for (second, second_fields) in &selected[i + 1..] {
            for field in first_fields.iter().filter(|f| second_fields.contains(f)) {
                problems.warn(
                    format!("{base}.calls.{second}.select"),
                    format!(
                        "with `merge: flat`, field `{field}` comes from both `{first}` and `{second}`: \
                         every response will report the conflict (the value of `{first}` is kept)"
                    ),
                );
            }
        }
    }
}
