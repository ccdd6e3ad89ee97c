//! HTTP/1.1 framing, written once for both directions (RFC 9112): the gateway's
//! server ([`crate::server::http1`]) reads requests and writes responses with it, its
//! upstream client ([`crate::upstream::http1`]) writes requests and reads responses
//! with it. A rule fixed here is fixed for requests and responses alike.
//!
//! - [`request`]: the request head, parsed and written; the request body's framing;
//! - [`response`]: the response head, parsed and written; the response body's framing;
//! - [`body`]: a body's bytes decoded by its framing (length, chunked, until close),
//!   trailers included;
//! - [`fields`]: the field rules both heads share (`Content-Length`,
//!   `Transfer-Encoding`, `Connection`, names not allowed in trailers).
//!
//! Pure functions over buffers: the I/O belongs to the server and the client. Where
//! the gateway is stricter than RFC 9112 requires, and why, is listed in
//! `docs/http1.md`.

pub mod body;
pub mod fields;
pub mod request;
pub mod response;

pub use body::{Chunk, Decoded, Decoder};

/// A message that breaks the protocol: a response head, or a body's framing.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed response head: {0}")]
    Head(&'static str),
    #[error("response head larger than {} bytes", response::MAX_HEAD_SIZE)]
    HeadTooLarge,
    #[error("conflicting or invalid Content-Length")]
    ContentLength,
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("the connection closed before the body ended")]
    Truncated,
}

/// A header map from name and value pairs, in order (for the codec's unit tests).
#[cfg(test)]
pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, http::HeaderValue::from_static(value));
    }
    map
}
