//! The request id every request carries (`X-Request-Id`), a leaf: the client's when it
//! sent a usable one, else a new random one. Errors, logs and aggregate calls use it.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id that is passed on; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's request id when it sent a usable one.
pub fn client_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.to_str().is_ok())
        .cloned()
}

/// A new random request id: 32 hex digits.
pub fn generate_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut value = fastrand::u128(..);
    let mut text = [0u8; 32];
    for byte in text.iter_mut().rev() {
        *byte = HEX[(value & 0xf) as usize];
        value >>= 4;
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_hex_and_distinct() {
        let a = generate_request_id();
        let b = generate_request_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a
            .to_str()
            .expect("ascii")
            .bytes()
            .all(|c| c.is_ascii_hexdigit()));
    }
}
