//! The forwarding headers: `X-Forwarded-For` (the client's address appended),
//! `X-Forwarded-Proto` (the listener's scheme) and `X-Forwarded-Host` (the host the
//! client asked for). One of the gateway's own rules of the policy step.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Appends the client's address to `X-Forwarded-For` and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    proto: &HeaderValue,
    host: Option<HeaderValue>,
) {
    let mut existing = headers.get_all(X_FORWARDED_FOR).iter();
    let forwarded_for = match (existing.next(), existing.next()) {
        (None, _) => peer_ip.clone(),
        (Some(first), None) => join_list([first.as_bytes(), peer_ip.as_bytes()].into_iter()),
        (Some(_), Some(_)) => {
            let all = headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(HeaderValue::as_bytes);
            join_list(all.chain(std::iter::once(peer_ip.as_bytes())))
        }
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    headers.insert(X_FORWARDED_PROTO, proto.clone());
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

fn join_list<'a>(parts: impl Iterator<Item = &'a [u8]>) -> HeaderValue {
    let mut joined = Vec::with_capacity(64);
    for part in parts {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(part);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(joined))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends() {
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        set_forwarded(
            &mut headers,
            &HeaderValue::from_static("3.3.3.3"),
            &HeaderValue::from_static("http"),
            None,
        );
        assert_eq!(headers[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 3.3.3.3");
        assert_eq!(headers.get_all(X_FORWARDED_FOR).iter().count(), 1);
    }
}
