//! Why a policy refused a request. What the client is told of each is decided with
//! every other failure, in `proxy::respond`.

use std::sync::Arc;

use http::HeaderValue;

use super::auth::Failure;

/// A refusal by one of a route's policies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("the client's address is not allowed on this route (policy {policy:?})")]
    IpDenied { policy: Arc<str> },
    /// A rate limit of the route is exhausted for this request's key (429).
    #[error("too many requests: rate limit {limit:?} of policy {policy:?} is exhausted; retry in {retry_after_secs} s")]
    RateLimited {
        policy: Arc<str>,
        /// The limit's `name`, or its index in the policy's list.
        limit: Arc<str>,
        /// `Retry-After`: whole seconds (rounded up) until the request would be admitted.
        retry_after_secs: u64,
    },
    /// A limit's shared store could not decide and its `on_error` is `deny` (503).
    #[error("rate limit {limit:?} of policy {policy:?} could not be decided: {error}")]
    RateLimitStoreFailed {
        policy: Arc<str>,
        limit: Arc<str>,
        error: super::rate_limit::StoreError,
    },
    /// An auth policy found no credentials or wrong ones (401; which of the two is not
    /// said). `challenges` go in `WWW-Authenticate`.
    #[error("the request did not authenticate (policy {policy:?})")]
    Unauthorized {
        policy: Arc<str>,
        challenges: Vec<HeaderValue>,
    },
    /// A valid identity that an auth policy does not admit (403).
    #[error("the authenticated identity is not admitted on this route (policy {policy:?})")]
    Forbidden { policy: Arc<str> },
    /// An auth policy could not decide in time (503, fail closed).
    #[error("authentication could not be decided (policy {policy:?}): {reason}")]
    AuthUnavailable { policy: Arc<str>, reason: Arc<str> },
}

impl PolicyError {
    /// The refusal of auth policy `policy` for `failure`.
    pub fn from_auth(policy: &Arc<str>, failure: Failure) -> PolicyError {
        let policy = policy.clone();
        match failure {
            Failure::Unauthorized { challenges, .. } => {
                PolicyError::Unauthorized { policy, challenges }
            }
            Failure::Forbidden => PolicyError::Forbidden { policy },
            Failure::Unavailable { reason } => PolicyError::AuthUnavailable { policy, reason },
        }
    }
}
