//! Text with `{placeholder}`s, a leaf: the one tokenizer that route rewrites
//! (`routing::rewrite`) and aggregate call paths ([`call`]) share, so both accept and
//! refuse the same spellings.

pub mod call;

pub use call::{CallTemplate, MissingValue};

/// One part of a template as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// Text copied as it is.
    Literal(&'a str),
    /// What stood between `{` and `}`.
    Placeholder(&'a str),
}

/// Why a template's braces do not pair up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unbalanced {
    #[error("unclosed `{{`")]
    Unclosed,
    #[error("unbalanced `}}`")]
    StrayClose,
}

/// Splits `text` into literal text and placeholders. Braces do not nest: a `{` opens a
/// placeholder that the next `}` closes; a `}` outside one is an error.
pub fn tokenize(text: &str) -> Result<Vec<Token<'_>>, Unbalanced> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if rest[..open].contains('}') {
            return Err(Unbalanced::StrayClose);
        }
        if open > 0 {
            tokens.push(Token::Literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(Unbalanced::Unclosed)?;
        tokens.push(Token::Placeholder(&after[..close]));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(Unbalanced::StrayClose);
    }
    if !rest.is_empty() {
        tokens.push(Token::Literal(rest));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_placeholders_alternate() {
        assert_eq!(
            tokenize("/a/{id}/b{x}"),
            Ok(vec![
                Token::Literal("/a/"),
                Token::Placeholder("id"),
                Token::Literal("/b"),
                Token::Placeholder("x"),
            ])
        );
        assert_eq!(tokenize(""), Ok(vec![]));
        assert_eq!(tokenize("{a}{b}").map(|t| t.len()), Ok(2));
    }

    #[test]
    fn unpaired_braces_are_refused() {
        assert_eq!(tokenize("/a/{id"), Err(Unbalanced::Unclosed));
        assert_eq!(tokenize("/a/}id"), Err(Unbalanced::StrayClose));
        assert_eq!(tokenize("/a}/{id}"), Err(Unbalanced::StrayClose));
        assert_eq!(
            tokenize("/{a{b}"),
            Ok(vec![Token::Literal("/"), Token::Placeholder("a{b")])
        );
    }
}
