//! Every way a request can fail at the gateway. What the client is told of each is
//! decided in one place, [`super::respond`].

use crate::aggregate::AggregateError;
use crate::policy::PolicyError;
use crate::routing::MethodSet;
use crate::upstream::{Rejection, UpstreamError};

/// Why the gateway answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("method not allowed on this path")]
    MethodNotAllowed(MethodSet),
    #[error("the request target is longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("the request head is larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("the request's transfer coding is not supported; only `chunked` is")]
    UnsupportedTransferCoding,
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request's Expect header asks for something other than `100-continue`")]
    ExpectationFailed,
    #[error("upstream {upstream:?} is overloaded: {reason}")]
    Overloaded { upstream: String, reason: Rejection },
    #[error("upstream {upstream:?}: {error}")]
    Upstream {
        upstream: String,
        error: UpstreamError,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("route {route:?} has {limit} WebSocket connections open, its limit")]
    WebSocketLimit { route: String, limit: usize },
    #[error("aggregate route {route:?}: {error}")]
    Aggregate {
        route: String,
        error: AggregateError,
    },
}
