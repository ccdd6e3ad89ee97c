//! Combining call results into one JSON answer. Failures and conflicts are reported
//! under `_errors`, never hidden: a client can always tell a partial answer from a
//! complete one.

use serde_json::{json, Map, Value};

use super::{CallError, Describe};
use crate::config::MergeMode;

/// The member that lists failed calls and conflicts.
pub const ERRORS_KEY: &str = "_errors";

/// The merged document, and the names of the calls that failed (for the
/// `Portcullis-Partial` header).
pub fn merge(
    mode: MergeMode,
    names: &[String],
    results: &[Result<Value, CallError>],
    describe: Describe,
) -> (Value, Vec<String>) {
    let mut out = Map::new();
    let mut errors = Map::new();
    let mut failed = Vec::new();
    for (name, result) in names.iter().zip(results) {
        match (mode, result) {
            (_, Err(error)) => {
                failed.push(name.clone());
                errors.insert(name.clone(), describe(error).to_json());
                if mode == MergeMode::Keyed {
                    out.insert(name.clone(), Value::Null);
                }
            }
            (MergeMode::Keyed, Ok(value)) => {
                out.insert(name.clone(), value.clone());
            }
            (MergeMode::Flat, Ok(Value::Object(fields))) => {
                let mut conflicts = Vec::new();
                for (key, value) in fields {
                    if key == ERRORS_KEY || out.contains_key(key) {
                        conflicts.push(key.clone());
                    } else {
                        out.insert(key.clone(), value.clone());
                    }
                }
                if !conflicts.is_empty() {
                    let message =
                        format!(
                        "field{} {} already came from an earlier call; the earlier value was kept",
                        if conflicts.len() == 1 { "" } else { "s" },
                        conflicts.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                    );
                    errors.insert(
                        name.clone(),
                        json!({"status": 200, "error": "conflict", "fields": conflicts, "message": message}),
                    );
                }
            }
            (MergeMode::Flat, Ok(other)) => {
                failed.push(name.clone());
                errors.insert(
                    name.clone(),
                    json!({
                        "status": 200,
                        "error": "not_an_object",
                        "message": format!("`merge: flat` needs a JSON object, and this call returned {}", kind(other)),
                    }),
                );
            }
        }
    }
    if !errors.is_empty() {
        out.insert(ERRORS_KEY.to_owned(), Value::Object(errors));
    }
    (Value::Object(out), failed)
}

/// Keeps only `fields` of an object, or of each object in an array.
pub fn select(value: Value, fields: &[String]) -> Value {
    match value {
        Value::Object(mut map) => {
            map.retain(|key, _| fields.iter().any(|f| f == key));
            Value::Object(map)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|item| select(item, fields)).collect())
        }
        other => other,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use http::StatusCode;

    use crate::aggregate::CallFailure;

    /// Stands in for the proxy's mapping (`proxy::respond`, where it is tested).
    fn describe(error: &CallError) -> CallFailure {
        CallFailure {
            status: StatusCode::GATEWAY_TIMEOUT,
            failing_status: StatusCode::GATEWAY_TIMEOUT,
            code: "timeout",
            message: error.to_string(),
        }
    }

    #[test]
    fn keyed_merge_marks_failures() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let results = vec![
            Ok(json!({"x": 1})),
            Err(CallError::Timeout(Duration::from_millis(300))),
        ];
        let (merged, failed) = merge(MergeMode::Keyed, &names, &results, describe);
        assert_eq!(merged["a"], json!({"x": 1}));
        assert_eq!(merged["b"], Value::Null);
        assert_eq!(merged["_errors"]["b"]["status"], 504);
        assert_eq!(merged["_errors"]["b"]["error"], "timeout");
        assert_eq!(failed, vec!["b".to_owned()]);
    }

    #[test]
    fn flat_merge_reports_conflicts_and_keeps_the_first() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let results = vec![
            Ok(json!({"id": 1, "name": "n"})),
            Ok(json!({"id": 2, "total": 3})),
        ];
        let (merged, failed) = merge(MergeMode::Flat, &names, &results, describe);
        assert_eq!(merged["id"], 1);
        assert_eq!(merged["total"], 3);
        assert_eq!(merged["_errors"]["b"]["error"], "conflict");
        assert_eq!(merged["_errors"]["b"]["fields"], json!(["id"]));
        assert!(failed.is_empty());
    }

    #[test]
    fn select_keeps_listed_fields_in_objects_and_arrays() {
        let fields = vec!["id".to_owned()];
        assert_eq!(select(json!({"id": 1, "x": 2}), &fields), json!({"id": 1}));
        assert_eq!(
            select(json!([{"id": 1, "x": 2}]), &fields),
            json!([{"id": 1}])
        );
    }
}
