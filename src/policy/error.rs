//! Why a policy refused a request. What the client is told of each is decided with
//! every other failure, in `proxy::respond`.

use std::sync::Arc;

/// A refusal by one of a route's policies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("the client's address is not allowed on this route (policy {policy:?})")]
    IpDenied { policy: Arc<str> },
}
