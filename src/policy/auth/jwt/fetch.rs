//! Fetching a JWKS document through the gateway's own upstream client: the issuer's
//! `jwks.upstream` gives the endpoints, TLS verification, limiter, timeout and metrics,
//! exactly as for proxied requests. The whole fetch (headers and body) is bounded by the
//! upstream's `timeout`, the body by `jwks.max_size`.

use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, CACHE_CONTROL, HOST};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Limited};

use super::jwks::{cache_max_age, Fetch, FetchError, Fetched};
use crate::upstream::{Endpoint, ExchangeError, Upstream, UpstreamBody};

/// GETs `path` from `upstream`.
pub struct UpstreamFetch {
    pub upstream: Arc<Upstream>,
    pub path: PathAndQuery,
    pub max_size: u64,
}

impl UpstreamFetch {
    /// The longest a fetch may take: the upstream's timeout.
    pub fn timeout(&self) -> Duration {
        self.upstream.timeout
    }

    fn request(&self, endpoint: &Endpoint) -> Result<Request<UpstreamBody>, FetchError> {
        let uri = endpoint
            .uri(self.path.clone())
            .map_err(|e| FetchError::Upstream(e.to_string()))?;
        let mut request = Request::new(UpstreamBody::Empty);
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(HOST, endpoint.host_value.clone());
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/jwk-set+json, application/json"),
        );
        Ok(request)
    }
}

impl Fetch for UpstreamFetch {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let (response, exchange) = self
            .upstream
            .exchange(self.upstream.timeout, |endpoint| self.request(endpoint))
            .await
            .map_err(|error| match error {
                ExchangeError::Overloaded(reason) => FetchError::Upstream(format!(
                    "upstream {} refused: {reason}",
                    self.upstream.name
                )),
                ExchangeError::Build(error) => error,
                ExchangeError::Upstream(error) => FetchError::Upstream(error.to_string()),
            })?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let max_age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|value| cache_max_age(value.as_bytes()));
        let limit = usize::try_from(self.max_size).unwrap_or(usize::MAX);
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge(self.max_size)
                } else {
                    FetchError::Body(error.to_string())
                }
            })?
            .to_bytes();
        drop(exchange);
        Ok(Fetched { body, max_age })
    }
}

/// An issuer whose upstream is not in the configuration (which `check` refuses): every
/// fetch fails, so the issuer has no keys.
pub struct Unreachable(pub String);

impl Fetch for Unreachable {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        Err(FetchError::Upstream(format!("no upstream {:?}", self.0)))
    }
}
