//! `GET /`: the status page, one self-contained HTML document (inline CSS and script,
//! no external assets, works offline). The server embeds the current status document
//! so the page renders at once; the page's script then fetches `GET /status` every
//! two seconds and renders again, showing when it last did. Rates are derived in the
//! page from two successive documents' counters.
//!
//! The script puts every value in as text, never as markup; the embedded document is
//! JSON with `<`, `>` and `&` escaped, so no value can close the `<script>` it sits in.

use super::status::Status;

/// The page, with [`PLACEHOLDER`] where the status document goes.
const TEMPLATE: &str = include_str!("status.html");
const PLACEHOLDER: &str = "/*INITIAL_STATUS*/";

/// The page with `status` embedded.
pub fn render(status: &Status) -> String {
    let json = serde_json::to_string(status).unwrap_or_else(|_| "null".to_owned());
    TEMPLATE.replacen(PLACEHOLDER, &script_safe(&json), 1)
}

/// JSON that can sit inside a `<script>` element: the characters that HTML or
/// JavaScript would read specially, escaped as JSON escapes (which mean the same
/// characters to `JSON.parse`). They occur only inside strings in JSON.
fn script_safe(json: &str) -> String {
    let mut safe = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => safe.push_str("\\u003c"),
            '>' => safe.push_str("\\u003e"),
            '&' => safe.push_str("\\u0026"),
            '\u{2028}' => safe.push_str("\\u2028"),
            '\u{2029}' => safe.push_str("\\u2029"),
            other => safe.push(other),
        }
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_has_one_placeholder_and_no_external_assets() {
        assert_eq!(TEMPLATE.matches(PLACEHOLDER).count(), 1);
        for external in ["http://", "https://", "src=\"", "href=\"/", "@import"] {
            assert!(!TEMPLATE.contains(external), "the page loads {external}");
        }
    }

    #[test]
    fn embedded_json_cannot_close_its_script_and_parses_the_same() {
        let hostile = "</script><script>alert(1)</script> & \u{2028}";
        let json =
            serde_json::to_string(&serde_json::json!({ "value": hostile })).expect("serializes");
        let safe = script_safe(&json);
        assert!(!safe.contains('<') && !safe.contains('>') && !safe.contains('&'));
        assert!(!safe.contains('\u{2028}'));
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back["value"], hostile);
    }
}
