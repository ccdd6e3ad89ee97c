//! Header rules at the proxy boundary: hop-by-hop headers removed both ways (the
//! `X-Forwarded-*` headers are the policy step's, in [`crate::policy::forwarded`]).

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST, TE};
use http::HeaderMap;

use crate::http1::fields::{HOP_BY_HOP, HOP_BY_HOP_COUNT};
use crate::request_id::X_REQUEST_ID;

/// Removes hop-by-hop headers and every header the `Connection` header names. With
/// `keep_te_trailers`, a `TE: trailers` survives (gRPC needs it).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Most messages carry few or none of these: one pass over the names finds which,
    // instead of a hash lookup for each of the nine.
    let mut present = [false; HOP_BY_HOP_COUNT];
    let mut any = false;
    for name in headers.keys() {
        if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[index] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        // Nearly always one value, `close` or `keep-alive`: a copy of it (a reference
        // count) lets the names it lists be removed without collecting them first.
        let mut values = headers.get_all(CONNECTION).iter();
        match (values.next().cloned(), values.next().is_some()) {
            (Some(only), false) => remove_nominated(headers, &only),
            _ => {
                let all: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
                for value in &all {
                    remove_nominated(headers, value);
                }
            }
        }
    }
    let te_trailers = keep_te_trailers
        && headers
            .get_all(TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes the headers that one `Connection` value names, except hop-by-hop ones (removed
/// anyway), the request id and `Host`. Looks names up as text: no `HeaderName` is built
/// for the usual `close` or `keep-alive`.
fn remove_nominated(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(value) = connection.to_str() else {
        return;
    };
    for token in value.split(',').map(str::trim) {
        let is = |name: &HeaderName| token.eq_ignore_ascii_case(name.as_str());
        // The request id and Host are ours to manage; never let a client strip them.
        if token.is_empty() || HOP_BY_HOP.iter().any(is) || is(&X_REQUEST_ID) || is(&HOST) {
            continue;
        }
        // A token that is no valid header name finds nothing.
        headers.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{TRANSFER_ENCODING, UPGRADE};

    #[test]
    fn connection_nominated_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret, X-Other"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        headers.insert(TE, HeaderValue::from_static("gzip, trailers"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        remove_hop_by_hop(&mut headers, true);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers[TE], "trailers");
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn every_connection_value_counts_and_ours_are_kept() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("close, X-A"));
        headers.append(
            CONNECTION,
            HeaderValue::from_static(" x-b ,, x-request-id, Host, bad name, Upgrade"),
        );
        for name in ["x-a", "x-b", "x-kept"] {
            headers.insert(name, HeaderValue::from_static("1"));
        }
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        headers.insert(HOST, HeaderValue::from_static("example.test"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut headers, false);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept", "x-request-id"]);
    }
}
