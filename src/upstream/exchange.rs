//! One exchange with an upstream, shared by proxied requests and aggregate calls:
//! take a permit, pick an endpoint, send, wait for the response headers, and record the
//! outcome. The returned [`Exchange`] guard holds the permit and the endpoint's load
//! until the response body has been consumed or dropped.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use prometheus::Histogram;

use super::adaptive::Sample;
use super::connections::SendError;
use super::http1::ExchangeFailure;
use super::UpstreamBody;
use super::{Endpoint, EndpointPool, Permit, ReceivedBody, Rejection, Upstream};
use crate::body::{BodyError, BoxError};
use crate::metrics::UpstreamOutcome;

/// A failed upstream exchange, with what the status mapping needs to know.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: BoxError,
    },
    #[error("connecting to {endpoint} timed out")]
    ConnectTimeout { endpoint: String },
    #[error("{endpoint} sent no response headers within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the client's request body failed: {0}")]
    ClientBody(String),
    #[error("no endpoint is available (all are failing health checks or ejected)")]
    NoHealthyEndpoint,
    #[error("exchange with {endpoint} failed: {source}")]
    Protocol {
        endpoint: String,
        /// The connection broke before any response arrived.
        reset: bool,
        #[source]
        source: BoxError,
    },
}

impl UpstreamError {
    /// The status a client gets for this failure.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            UpstreamError::Connect { .. } | UpstreamError::Protocol { .. } => {
                StatusCode::BAD_GATEWAY
            }
            UpstreamError::ConnectTimeout { .. } | UpstreamError::Timeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            UpstreamError::NoHealthyEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamError::ClientBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A stable, machine-readable name for error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "upstream_connect_failed",
            UpstreamError::ConnectTimeout { .. } => "upstream_connect_timeout",
            UpstreamError::Timeout { .. } => "upstream_timeout",
            UpstreamError::Protocol { .. } => "upstream_bad_response",
            UpstreamError::NoHealthyEndpoint => "upstream_unavailable",
            UpstreamError::BodyTooLarge { .. } => "body_too_large",
            UpstreamError::ClientBody(_) => "client_body_error",
        }
    }

    /// The outcome label this error counts under, or `None` when the client, not the
    /// upstream, was at fault.
    pub fn outcome(&self) -> Option<UpstreamOutcome> {
        match self {
            UpstreamError::Connect { .. } => Some(UpstreamOutcome::ConnectFailure),
            UpstreamError::ConnectTimeout { .. } | UpstreamError::Timeout { .. } => {
                Some(UpstreamOutcome::Timeout)
            }
            UpstreamError::Protocol { .. } => Some(UpstreamOutcome::Error),
            UpstreamError::BodyTooLarge { .. }
            | UpstreamError::ClientBody(_)
            | UpstreamError::NoHealthyEndpoint => None,
        }
    }
}

/// Why an exchange produced no response.
#[derive(Debug)]
pub enum ExchangeError<E> {
    /// The upstream's limiter refused a permit.
    Overloaded(Rejection),
    /// The caller could not build the request for the chosen endpoint.
    Build(E),
    Upstream(UpstreamError),
}

impl Upstream {
    /// Takes a permit, picks an endpoint, sends the request `build` makes for it, and
    /// waits at most `timeout` for the response headers. Dropping the future cancels
    /// the exchange and frees the permit.
    pub async fn exchange<E>(
        self: &Arc<Self>,
        timeout: Duration,
        build: impl FnOnce(&Endpoint) -> Result<Request<UpstreamBody>, E>,
    ) -> Result<(Response<ReceivedBody>, Exchange), ExchangeError<E>> {
        self.attempt(timeout, &[], build).await.0
    }

    /// One try: like [`Upstream::exchange`], preferring endpoints not in `skip`.
    /// Also returns the endpoint used, if one was.
    pub(super) async fn attempt<E>(
        self: &Arc<Self>,
        timeout: Duration,
        skip: &[usize],
        build: impl FnOnce(&Endpoint) -> Result<Request<UpstreamBody>, E>,
    ) -> (
        Result<(Response<ReceivedBody>, Exchange), ExchangeError<E>>,
        Option<usize>,
    ) {
        let permit = match self.limiter.acquire().await {
            Ok(permit) => permit,
            Err(reason) => return (Err(ExchangeError::Overloaded(reason)), None),
        };
        let Some(index) = self.pick(skip).or_else(|| self.pick(&[])) else {
            return (
                Err(ExchangeError::Upstream(UpstreamError::NoHealthyEndpoint)),
                None,
            );
        };
        let endpoint = &self.endpoints()[index];
        let guard = Exchange::begin(self.clone(), index, permit);
        let request = match build(endpoint) {
            Ok(request) => request,
            Err(error) => return (Err(ExchangeError::Build(error)), Some(index)),
        };
        let sent = Instant::now();
        let result = self.pool.send(index, request, timeout).await;
        let latency = sent.elapsed();
        self.metrics.duration.observe(latency.as_secs_f64());
        self.limiter.sample(match &result {
            Ok(response) if matches!(response.status().as_u16(), 429 | 503) => Sample::Dropped,
            Ok(_) => Sample::Latency(latency),
            Err(UpstreamError::Timeout { .. }) => Sample::Dropped,
            Err(_) => Sample::Latency(latency),
        });
        let result = match result {
            Ok(response) => {
                endpoint.record(UpstreamOutcome::of_status(response.status()));
                self.observe(index, response.status().is_server_error());
                Ok((response, guard))
            }
            Err(error) => {
                if let Some(outcome) = error.outcome() {
                    endpoint.record(outcome);
                    self.observe(index, true);
                }
                Err(ExchangeError::Upstream(error))
            }
        };
        (result, Some(index))
    }
}

impl EndpointPool {
    /// Sends `request` to endpoint `index` and waits at most `timeout` for the response
    /// headers. Over the gateway's own HTTP/1.1 pool, the connection returns to the
    /// endpoint's pool when the body has been read to its end.
    pub(super) async fn send(
        &self,
        index: usize,
        request: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<ReceivedBody>, UpstreamError> {
        let endpoint = &self.endpoints[index];
        let label = || endpoint.address.label.clone();
        let timed_out = || UpstreamError::Timeout {
            endpoint: label(),
            timeout,
        };
        if let Some(connections) = &endpoint.connections {
            let sent = connections.send(request, &endpoint.host_value);
            return match tokio::time::timeout(timeout, sent).await {
                Err(_elapsed) => Err(timed_out()),
                Ok(Ok(response)) => Ok(response.map(ReceivedBody::Pooled)),
                Ok(Err(SendError::ConnectTimeout)) => {
                    Err(UpstreamError::ConnectTimeout { endpoint: label() })
                }
                Ok(Err(SendError::Connect(source))) => Err(UpstreamError::Connect {
                    endpoint: label(),
                    source,
                }),
                Ok(Err(SendError::Exchange(failure))) => Err(http1_failed(failure, label())),
            };
        }
        let Some(client) = &self.client else {
            return Err(UpstreamError::Connect {
                endpoint: label(),
                source: "the upstream has no client for its protocol".into(),
            });
        };
        match tokio::time::timeout(timeout, client.request(request)).await {
            Err(_elapsed) => Err(timed_out()),
            Ok(Ok(response)) => Ok(response.map(ReceivedBody::Hyper)),
            Ok(Err(error)) if error.is_connect() && find_source::<BodyError>(&error).is_none() => {
                let timed_out = find_source::<std::io::Error>(&error)
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                Err(if timed_out {
                    UpstreamError::ConnectTimeout { endpoint: label() }
                } else {
                    UpstreamError::Connect {
                        endpoint: label(),
                        source: match crate::tls::upstream::explain_certificate_failure(&error) {
                            Some(words) => words.into(),
                            None => error.into(),
                        },
                    }
                })
            }
            Ok(Err(error)) => Err(exchange_failed(error, label())),
        }
    }
}

/// Sorts out an exchange over the gateway's own HTTP/1.1 client that failed after
/// connecting: like [`exchange_failed`].
fn http1_failed(failure: ExchangeFailure, endpoint: String) -> UpstreamError {
    match failure {
        ExchangeFailure::Body(BodyError::TooLarge { limit }) => {
            UpstreamError::BodyTooLarge { limit }
        }
        ExchangeFailure::Body(BodyError::Client(error)) => {
            UpstreamError::ClientBody(error.to_string())
        }
        failure => UpstreamError::Protocol {
            endpoint,
            reset: failure.before_response(),
            source: failure.into(),
        },
    }
}

/// Sorts out an exchange that failed after connecting: the client's body (too large,
/// or broken), a connection reset before any response, or another protocol error.
fn exchange_failed(
    error: impl StdError + Send + Sync + 'static,
    endpoint: String,
) -> UpstreamError {
    if let Some(body_error) = find_source::<BodyError>(&error) {
        return match body_error {
            BodyError::TooLarge { limit } => UpstreamError::BodyTooLarge { limit: *limit },
            BodyError::Client(e) => UpstreamError::ClientBody(e.to_string()),
        };
    }
    let reset = find_source::<hyper::Error>(&error)
        .is_some_and(|e| e.is_incomplete_message() || e.is_canceled())
        || find_source::<std::io::Error>(&error).is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        });
    UpstreamError::Protocol {
        endpoint,
        reset,
        source: error.into(),
    }
}

/// The first error of type `T` in `error`'s source chain.
fn find_source<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Held from the moment a request has its permit until its response body has been
/// consumed or dropped: releases the permit and the endpoint's load, and records the
/// request's duration when timed.
pub struct Exchange {
    upstream: Arc<Upstream>,
    endpoint: usize,
    timer: Option<(Histogram, Instant)>,
    _permit: Permit,
}

impl Exchange {
    fn begin(upstream: Arc<Upstream>, endpoint: usize, permit: Permit) -> Self {
        upstream.endpoints()[endpoint].begin();
        Exchange {
            upstream,
            endpoint,
            timer: None,
            _permit: permit,
        }
    }

    /// Observes `started.elapsed()` into `histogram` when the exchange ends.
    pub fn timed(mut self, histogram: Histogram, started: Instant) -> Self {
        self.timer = Some((histogram, started));
        self
    }

    /// The upstream's body broke off mid-stream.
    pub fn body_failed(&mut self, error: &dyn std::fmt::Display) {
        let endpoint = &self.upstream.endpoints()[self.endpoint];
        endpoint.record(UpstreamOutcome::Error);
        tracing::warn!(
            upstream = %self.upstream.name,
            endpoint = %endpoint.address.label,
            "upstream response body failed: {error}"
        );
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.upstream.endpoints()[self.endpoint].end();
        if let Some((histogram, started)) = &self.timer {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}
