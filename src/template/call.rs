//! The path template of an aggregate call: literal text with placeholders filled per
//! request from the route's path parameters (`{id}`), the client's query
//! (`{query.page}`) or a field of another call's result (`{user.team_id}`, which makes
//! the call wait for `user`).

use serde_json::Value;

use super::Token;

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    RouteParam(String),
    Query(String),
    /// A field (path of keys) of call number `call`'s result.
    Field {
        call: usize,
        path: Vec<String>,
    },
}

/// A compiled call path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTemplate {
    pieces: Vec<Piece>,
}

/// Why a placeholder has no value for this request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissingValue {
    #[error("the request has no query parameter `{0}`")]
    Query(String),
    #[error("field `{field}` of call `{call}` is missing or not a string, number or boolean")]
    Field { call: String, field: String },
}

impl CallTemplate {
    /// Parses `text`. `captured` are the route's path parameters; `calls` the names of
    /// the route's calls (a placeholder `{name.field}` refers to call `name`).
    pub fn parse(text: &str, captured: &[String], calls: &[&str]) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("call path {text:?} must start with `/`"));
        }
        let tokens = super::tokenize(text)
            .map_err(|unbalanced| format!("{unbalanced} in call path {text:?}"))?;
        let mut pieces = Vec::with_capacity(tokens.len());
        for token in tokens {
            pieces.push(match token {
                Token::Literal(literal) => Piece::Literal(literal.to_owned()),
                Token::Placeholder(inner) => placeholder(inner, captured, calls)?,
            });
        }
        Ok(CallTemplate { pieces })
    }

    /// The calls whose results this template needs.
    pub fn dependencies(&self) -> Vec<usize> {
        let mut calls: Vec<usize> = self
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Field { call, .. } => Some(*call),
                _ => None,
            })
            .collect();
        calls.sort_unstable();
        calls.dedup();
        calls
    }

    /// Fills the template. `results[i]` is call `i`'s result when it has one.
    pub fn render(
        &self,
        params: &[(String, String)],
        query: Option<&str>,
        results: &[Option<&Value>],
        call_names: &[String],
    ) -> Result<String, MissingValue> {
        let mut out = String::with_capacity(64);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::RouteParam(name) => {
                    // Validated at load: the route always captures it.
                    let value = params
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or("", |(_, v)| v.as_str());
                    out.push_str(value);
                }
                Piece::Query(name) => {
                    let value = query
                        .into_iter()
                        .flat_map(|q| q.split('&'))
                        .find_map(|pair| {
                            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                            (key == name).then_some(value)
                        })
                        .ok_or_else(|| MissingValue::Query(name.clone()))?;
                    out.push_str(value);
                }
                Piece::Field { call, path } => {
                    let missing = || MissingValue::Field {
                        call: call_names[*call].clone(),
                        field: path.join("."),
                    };
                    let mut value = results.get(*call).copied().flatten().ok_or_else(missing)?;
                    for key in path {
                        value = value.get(key.as_str()).ok_or_else(missing)?;
                    }
                    match value {
                        Value::String(text) => percent_encode_into(text, &mut out),
                        Value::Number(number) => out.push_str(&number.to_string()),
                        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
                        _ => return Err(missing()),
                    }
                }
            }
        }
        Ok(out)
    }
}

fn placeholder(inner: &str, captured: &[String], calls: &[&str]) -> Result<Piece, String> {
    match inner.split_once('.') {
        None => {
            if captured.iter().any(|c| c == inner) {
                Ok(Piece::RouteParam(inner.to_owned()))
            } else if calls.contains(&inner) {
                Err(format!(
                    "`{{{inner}}}` names call `{inner}` but no field; write e.g. `{{{inner}.id}}`"
                ))
            } else {
                Err(format!(
                    "`{{{inner}}}` is not a parameter of the route's path (it captures: {})",
                    if captured.is_empty() {
                        "nothing".to_owned()
                    } else {
                        captured.join(", ")
                    }
                ))
            }
        }
        Some(("query", name)) if !name.is_empty() => Ok(Piece::Query(name.to_owned())),
        Some((call, field)) => {
            let index = calls
                .iter()
                .position(|c| *c == call)
                .ok_or_else(|| unknown_call(call, calls))?;
            if field.is_empty() || field.split('.').any(str::is_empty) {
                return Err(format!("`{{{inner}}}` needs a field name after `{call}.`"));
            }
            Ok(Piece::Field {
                call: index,
                path: field.split('.').map(str::to_owned).collect(),
            })
        }
    }
}

fn unknown_call(name: &str, calls: &[&str]) -> String {
    let close = calls
        .iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min();
    match close {
        Some((_, c)) => format!("unknown call `{name}` (did you mean `{c}`?)"),
        None => format!(
            "unknown call `{name}`; this route's calls are: {}",
            calls.join(", ")
        ),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode_into(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_params_query_and_fields() {
        let calls = ["user", "team"];
        let template = CallTemplate::parse(
            "/teams/{user.team.id}/members?u={id}&p={query.page}",
            &["id".into()],
            &calls,
        )
        .expect("valid");
        assert_eq!(template.dependencies(), vec![0]);
        let user = json!({"team": {"id": "a b/c"}});
        let rendered = template
            .render(
                &[("id".into(), "7".into())],
                Some("x=1&page=3"),
                &[Some(&user), None],
                &["user".into(), "team".into()],
            )
            .expect("renders");
        assert_eq!(rendered, "/teams/a%20b%2Fc/members?u=7&p=3");
    }

    #[test]
    fn missing_values_are_errors() {
        let template = CallTemplate::parse("/t/{user.team_id}", &[], &["user"]).expect("valid");
        let user = json!({"name": "x"});
        assert!(template
            .render(&[], None, &[Some(&user)], &["user".into()])
            .is_err());
        let query = CallTemplate::parse("/t?p={query.page}", &[], &[]).expect("valid");
        assert_eq!(
            query.render(&[], None, &[], &[]),
            Err(MissingValue::Query("page".into()))
        );
    }

    #[test]
    fn bad_placeholders_are_explained() {
        assert!(CallTemplate::parse("/u/{uid}", &["id".into()], &[])
            .expect_err("invalid")
            .contains("captures: id"));
        assert!(CallTemplate::parse("/u/{usr.id}", &[], &["user"])
            .expect_err("invalid")
            .contains("did you mean `user`"));
        assert!(CallTemplate::parse("/u/{user}", &[], &["user"])
            .expect_err("invalid")
            .contains("no field"));
    }
}
