//! Path rewriting before a request goes upstream: strip or add a prefix, or build the
//! path from a template filled with the route's captured parameters. The query string
//! is always kept.

use matchit::Params;

use crate::template::{tokenize, Token};

/// How a route changes the request path. Compiled once per configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Rewrite {
    /// The path goes upstream unchanged.
    #[default]
    Keep,
    /// Remove `strip` (segment-aware) then put `add` in front.
    Prefix {
        strip: Option<String>,
        add: Option<String>,
    },
    /// Build the path from literal text and captured parameters.
    Template(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Param(String),
}

/// Why a rewrite rule is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("{0} {1:?} must start with `/`")]
    NoLeadingSlash(&'static str, String),
    #[error("template {template:?} uses `{{{name}}}`, which the route's path does not capture (it captures: {captured})")]
    UnknownParam {
        template: String,
        name: String,
        captured: String,
    },
    #[error("unbalanced braces in template {0:?}")]
    Unbalanced(String),
}

impl Rewrite {
    /// A prefix rewrite; `None` for both means no rewrite.
    pub fn prefix(strip: Option<&str>, add: Option<&str>) -> Result<Self, RewriteError> {
        for (key, value) in [("strip_prefix", strip), ("add_prefix", add)] {
            if let Some(v) = value {
                if !v.starts_with('/') {
                    return Err(RewriteError::NoLeadingSlash(key, v.to_owned()));
                }
            }
        }
        let clean = |v: Option<&str>| {
            v.map(|p| p.trim_end_matches('/').to_owned())
                .filter(|p| !p.is_empty())
        };
        match (clean(strip), clean(add)) {
            (None, None) => Ok(Rewrite::Keep),
            (strip, add) => Ok(Rewrite::Prefix { strip, add }),
        }
    }

    /// A template such as `/users/{id}`; every `{name}` must be one of `captured`.
    pub fn template(template: &str, captured: &[String]) -> Result<Self, RewriteError> {
        if !template.starts_with('/') {
            return Err(RewriteError::NoLeadingSlash("path", template.to_owned()));
        }
        let tokens =
            tokenize(template).map_err(|_| RewriteError::Unbalanced(template.to_owned()))?;
        let mut pieces = Vec::with_capacity(tokens.len());
        for token in tokens {
            let name = match token {
                Token::Literal(literal) => {
                    pieces.push(Piece::Literal(literal.to_owned()));
                    continue;
                }
                Token::Placeholder(inner) => inner.trim_start_matches('*'),
            };
            if !captured.iter().any(|c| c == name) {
                return Err(RewriteError::UnknownParam {
                    template: template.to_owned(),
                    name: name.to_owned(),
                    captured: if captured.is_empty() {
                        "nothing".to_owned()
                    } else {
                        captured.join(", ")
                    },
                });
            }
            pieces.push(Piece::Param(name.to_owned()));
        }
        Ok(Rewrite::Template(pieces))
    }

    /// The new path and query, or `None` when the request's own can be used unchanged.
    pub fn apply(
        &self,
        path: &str,
        query: Option<&str>,
        params: Option<&Params>,
    ) -> Option<String> {
        let mut out = match self {
            Rewrite::Keep => return None,
            Rewrite::Prefix { strip, add } => {
                let rest = match strip {
                    Some(strip) => match path.strip_prefix(strip.as_str()) {
                        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                        _ => path,
                    },
                    None => path,
                };
                let add = add.as_deref().unwrap_or("");
                let mut out =
                    String::with_capacity(add.len() + rest.len() + 2 + query.map_or(0, str::len));
                out.push_str(add);
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
            Rewrite::Template(pieces) => {
                let mut out = String::with_capacity(path.len() + 16);
                for piece in pieces {
                    match piece {
                        Piece::Literal(text) => out.push_str(text),
                        Piece::Param(name) => {
                            out.push_str(params.and_then(|p| p.get(name)).unwrap_or(""))
                        }
                    }
                }
                out
            }
        };
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_is_segment_aware() {
        let rewrite = Rewrite::prefix(Some("/api"), None).expect("valid");
        assert_eq!(
            rewrite.apply("/api/users/7", Some("a=1"), None).as_deref(),
            Some("/users/7?a=1")
        );
        assert_eq!(rewrite.apply("/api", None, None).as_deref(), Some("/"));
        assert_eq!(rewrite.apply("/apix", None, None).as_deref(), Some("/apix"));
    }

    #[test]
    fn prefix_can_be_replaced() {
        let rewrite = Rewrite::prefix(Some("/api/"), Some("/internal")).expect("valid");
        assert_eq!(
            rewrite.apply("/api/users", None, None).as_deref(),
            Some("/internal/users")
        );
    }

    #[test]
    fn template_fills_captures() {
        let mut router = matchit::Router::new();
        router.insert("/v2/users/{id}/{*rest}", ()).expect("valid");
        let found = router.at("/v2/users/7/a/b").expect("matches");
        let rewrite = Rewrite::template("/users/{id}/x/{rest}", &["id".into(), "rest".into()])
            .expect("valid");
        assert_eq!(
            rewrite
                .apply("/v2/users/7/a/b", Some("q=1"), Some(&found.params))
                .as_deref(),
            Some("/users/7/x/a/b?q=1")
        );
        assert!(Rewrite::template("/users/{uid}", &["id".into()]).is_err());
    }
}
