//! What a browser makes of a cross-origin answer: the Fetch standard's CORS check
//! (§ 4.9 "CORS check") and the checks of a CORS-preflight fetch (§ 4.8), applied to
//! a [`Reply`]. Tests assert the browser's verdict, not only which headers are there.

use super::client::Reply;

/// Fetch's credentials mode for the request: `include` sends cookies and needs
/// `Access-Control-Allow-Credentials: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    Omit,
    Include,
}

/// § 4.9 CORS check: may a page from `origin` read `reply`?
pub fn cors_check(reply: &Reply, origin: &str, credentials: Credentials) -> Result<(), String> {
    let mut values = reply.headers.get_all("access-control-allow-origin").iter();
    let Some(allow_origin) = values.next() else {
        return Err("no Access-Control-Allow-Origin".into());
    };
    if values.next().is_some() {
        return Err("more than one Access-Control-Allow-Origin".into());
    }
    if credentials == Credentials::Omit && allow_origin == "*" {
        return Ok(());
    }
    if allow_origin.as_bytes() != origin.as_bytes() {
        return Err(format!(
            "Access-Control-Allow-Origin {allow_origin:?} is not the origin {origin:?}"
        ));
    }
    if credentials == Credentials::Include
        && reply
            .headers
            .get("access-control-allow-credentials")
            .is_none_or(|v| v != "true")
    {
        return Err("credentials included, but no Access-Control-Allow-Credentials: true".into());
    }
    Ok(())
}

/// § 4.8 CORS-preflight fetch: does `reply` (to the preflight) let a page from
/// `origin` send `method` with the (non-safelisted) `headers`?
pub fn preflight_check(
    reply: &Reply,
    origin: &str,
    credentials: Credentials,
    method: &str,
    headers: &[&str],
) -> Result<(), String> {
    if !reply.status.is_success() {
        return Err(format!("the preflight's status {} is not ok", reply.status));
    }
    cors_check(reply, origin, credentials)?;
    let methods = list(reply, "access-control-allow-methods");
    let names = list(reply, "access-control-allow-headers");
    let wildcard =
        |list: &[String]| credentials == Credentials::Omit && list.iter().any(|m| m == "*");
    let safelisted = matches!(method, "GET" | "HEAD" | "POST");
    if !methods.iter().any(|m| m == method) && !safelisted && !wildcard(&methods) {
        return Err(format!(
            "method {method} is not allowed (allowed: {methods:?})"
        ));
    }
    for header in headers {
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(header));
        let covered = wildcard(&names) && !header.eq_ignore_ascii_case("authorization");
        if !listed && !covered {
            return Err(format!(
                "header {header} is not allowed (allowed: {names:?})"
            ));
        }
    }
    Ok(())
}

fn list(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}
