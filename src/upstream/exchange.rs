//! One exchange with an upstream, shared by proxied requests and aggregate calls:
//! take a permit, pick an endpoint, send, wait for the response headers, and record the
//! outcome. The returned [`Exchange`] guard holds the permit and the endpoint's load
//! until the response body has been consumed or dropped.
//!
//! Every send counts once in the upstream families when it ends, however it ends: with
//! response headers, a failure, its timeout (an aggregate call's own timeout included,
//! through [`Wait::deadline`]), or `cancelled` when the caller drops it first.
//!
//! A request that never reached its endpoint (the connection was refused, did not open
//! within the connect timeout, or the endpoint's certificate failed verification) is
//! **redispatched**: the endpoint is marked down ([`super::health`]) and the request
//! goes to another endpoint, each endpoint at most once, within the same timeout,
//! without drawing on the retry budget and whether or not the upstream has a retry
//! policy: nothing was sent, so sending it elsewhere is always safe (nginx's default
//! `proxy_next_upstream error`, HAProxy's `option redispatch`). The request goes as
//! it was (its body unread) when the transport gives it back, as the gateway's own
//! HTTP/1.1 pool does, or is built again when the caller can ([`Requests`]: a retry
//! policy's tries keep the body); otherwise the failure is the answer.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{Request, Response};
use prometheus::Histogram;

use super::adaptive::Sample;
use super::connections::{ConnectError, SendError};
use super::http1::ExchangeFailure;
use super::UpstreamBody;
use super::{Endpoint, EndpointPool, Permit, ReceivedBody, Rejection, Upstream};
use crate::body::{BodyError, BoxError};
use crate::config::HostHeader;
use crate::metrics::{Redispatch, UpstreamOutcome};

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
    #[error("the TLS certificate of {endpoint} failed verification: {cause}")]
    TlsVerify { endpoint: String, cause: String },
    #[error("{endpoint} sent no response headers within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the client's request body failed: {0}")]
    ClientBody(String),
    #[error("no endpoint is available (all are failing health checks or ejected)")]
    NoHealthyEndpoint,
    #[error("no file descriptor free for a connection to {endpoint} within the connect timeout")]
    OutOfDescriptors { endpoint: String },
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
            UpstreamError::Connect { .. }
            | UpstreamError::TlsVerify { .. }
            | UpstreamError::Protocol { .. } => StatusCode::BAD_GATEWAY,
            UpstreamError::ConnectTimeout { .. } | UpstreamError::Timeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            UpstreamError::NoHealthyEndpoint | UpstreamError::OutOfDescriptors { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamError::ClientBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A stable, machine-readable name for error bodies. A certificate that failed
    /// verification is a failed connect to the client; the metrics tell them apart.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } | UpstreamError::TlsVerify { .. } => {
                "upstream_connect_failed"
            }
            UpstreamError::ConnectTimeout { .. } => "upstream_connect_timeout",
            UpstreamError::Timeout { .. } => "upstream_timeout",
            UpstreamError::Protocol { .. } => "upstream_bad_response",
            UpstreamError::NoHealthyEndpoint => "upstream_unavailable",
            UpstreamError::OutOfDescriptors { .. } => "gateway_out_of_descriptors",
            UpstreamError::BodyTooLarge { .. } => "body_too_large",
            UpstreamError::ClientBody(_) => "client_body_error",
        }
    }

    /// The outcome label an exchange that failed so counts under. `NoHealthyEndpoint`
    /// never reaches an exchange; it counts as `error` should it ever be recorded.
    pub fn outcome(&self) -> UpstreamOutcome {
        match self {
            UpstreamError::Connect { .. } => UpstreamOutcome::ConnectFailure,
            UpstreamError::TlsVerify { .. } => UpstreamOutcome::TlsVerifyFailed,
            UpstreamError::ConnectTimeout { .. } | UpstreamError::Timeout { .. } => {
                UpstreamOutcome::Timeout
            }
            UpstreamError::BodyTooLarge { .. } | UpstreamError::ClientBody(_) => {
                UpstreamOutcome::ClientBody
            }
            UpstreamError::Protocol { .. }
            | UpstreamError::NoHealthyEndpoint
            | UpstreamError::OutOfDescriptors { .. } => UpstreamOutcome::Error,
        }
    }

    /// Whether the endpoint, not the client, failed (counts toward outlier ejection).
    fn endpoint_failed(&self) -> bool {
        !matches!(
            self,
            UpstreamError::BodyTooLarge { .. }
                | UpstreamError::ClientBody(_)
                | UpstreamError::NoHealthyEndpoint
                | UpstreamError::OutOfDescriptors { .. }
        )
    }

    /// Why a request that failed so may go to another endpoint: it never reached this
    /// one. A connect that timed out sent nothing either.
    fn redispatch(&self) -> Option<Redispatch> {
        match self {
            UpstreamError::Connect { .. } | UpstreamError::ConnectTimeout { .. } => {
                Some(Redispatch::ConnectFailure)
            }
            UpstreamError::TlsVerify { .. } => Some(Redispatch::TlsVerifyFailed),
            _ => None,
        }
    }
}

/// How long an exchange waits for its response headers.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// From each send.
    pub timeout: Duration,
    /// When the caller gives up, if it does (an aggregate call's own timeout): no send
    /// outlives it, so one that reaches it ends as a `timeout` rather than being
    /// dropped unrecorded.
    pub deadline: Option<tokio::time::Instant>,
}

impl From<Duration> for Wait {
    fn from(timeout: Duration) -> Self {
        Wait {
            timeout,
            deadline: None,
        }
    }
}

/// A send that produced no response, with the request when it comes back unsent.
pub(super) struct SendFailure {
    pub error: UpstreamError,
    /// Nothing of it was sent (no connection could be had); its body is unread.
    pub unsent: Option<Box<Request<UpstreamBody>>>,
}

impl From<UpstreamError> for SendFailure {
    fn from(error: UpstreamError) -> Self {
        SendFailure {
            error,
            unsent: None,
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

/// Where a redispatch starts: the endpoint that failed, the request's guard, and when
/// its first send's time runs out (a redispatch has what is left of it).
struct Redispatching {
    index: usize,
    guard: Exchange,
    until: tokio::time::Instant,
    /// The first send's timeout, for the error that says it ran out.
    timeout: Duration,
}

/// What an exchange sends: the caller's request for the first endpoint, and what can
/// build it again for another endpoint a request is redispatched to ([`Again`]).
pub(super) trait Requests<E> {
    type Again: Again<E>;
    fn first(self, endpoint: &Endpoint) -> (Result<Request<UpstreamBody>, E>, Self::Again);
}

/// Builds a request again for another endpoint, when the caller can (`None`: it
/// cannot, its body is gone).
pub(super) trait Again<E> {
    fn again(&mut self, endpoint: &Endpoint) -> Option<Result<Request<UpstreamBody>, E>>;
}

/// A request built once ([`Upstream::exchange`]). Nothing of the caller's builder is
/// kept for a redispatch (nor makes the exchange's future larger): [`Never`].
pub(super) struct Once<F>(pub F);

impl<E, F: FnOnce(&Endpoint) -> Result<Request<UpstreamBody>, E>> Requests<E> for Once<F> {
    type Again = Never;

    fn first(self, endpoint: &Endpoint) -> (Result<Request<UpstreamBody>, E>, Never) {
        ((self.0)(endpoint), Never)
    }
}

/// The request cannot be built again.
pub(super) struct Never;

impl<E> Again<E> for Never {
    fn again(&mut self, _endpoint: &Endpoint) -> Option<Result<Request<UpstreamBody>, E>> {
        None
    }
}

/// A request built for each try ([`Upstream::exchange_retrying`]).
pub(super) struct Each<'a, F>(pub &'a mut F);

impl<'a, E, F: FnMut(&Endpoint) -> Result<Request<UpstreamBody>, E>> Requests<E> for Each<'a, F> {
    type Again = Each<'a, F>;

    fn first(self, endpoint: &Endpoint) -> (Result<Request<UpstreamBody>, E>, Self) {
        ((self.0)(endpoint), self)
    }
}

impl<E, F: FnMut(&Endpoint) -> Result<Request<UpstreamBody>, E>> Again<E> for Each<'_, F> {
    fn again(&mut self, endpoint: &Endpoint) -> Option<Result<Request<UpstreamBody>, E>> {
        Some((self.0)(endpoint))
    }
}

impl Upstream {
    /// Takes a permit, picks an endpoint, sends the request `build` makes for it, and
    /// waits at most `timeout` for the response headers. Dropping the future cancels
    /// the exchange and frees the permit.
    pub async fn exchange<E>(
        self: &Arc<Self>,
        wait: impl Into<Wait>,
        build: impl FnOnce(&Endpoint) -> Result<Request<UpstreamBody>, E>,
    ) -> Result<(Response<ReceivedBody>, Exchange), ExchangeError<E>> {
        self.attempt(wait.into(), &mut Vec::new(), Once(build))
            .await
            .0
    }

    /// One try: like [`Upstream::exchange`], preferring endpoints not in `tried`, and
    /// redispatched (see the module) to endpoints not in `tried`, each of which it
    /// adds there. Also returns the endpoint last used, if one was.
    pub(super) async fn attempt<E>(
        self: &Arc<Self>,
        Wait { timeout, deadline }: Wait,
        tried: &mut Vec<usize>,
        requests: impl Requests<E>,
    ) -> (
        Result<(Response<ReceivedBody>, Exchange), ExchangeError<E>>,
        Option<usize>,
    ) {
        let permit = match self.limiter.acquire().await {
            Ok(permit) => permit,
            Err(reason) => return (Err(ExchangeError::Overloaded(reason)), None),
        };
        let Some(index) = self.pick(tried).or_else(|| self.pick(&[])) else {
            return (
                Err(ExchangeError::Upstream(UpstreamError::NoHealthyEndpoint)),
                None,
            );
        };
        let guard = Exchange::begin(self.clone(), index, permit);
        let (request, again) = match requests.first(&self.endpoints()[index]) {
            (Ok(request), again) => (request, again),
            (Err(error), _) => return (Err(ExchangeError::Build(error)), Some(index)),
        };
        let (until, timeout) = Wait { timeout, deadline }.until();
        let result = self.send_recorded(index, request, until, timeout).await;
        // Nothing but what a redispatch needs outlives this match, so that no more of
        // it than a box is kept in every request's future.
        let (failure, reason) = match result {
            Ok(response) => return (Ok((response, guard)), Some(index)),
            Err(failure) => match failure.error.redispatch() {
                None => return (Err(ExchangeError::Upstream(failure.error)), Some(index)),
                Some(reason) => (failure, reason),
            },
        };
        let state = Redispatching {
            index,
            guard,
            until,
            timeout,
        };
        // Off the success path, and its future on the heap: a redispatch is rare.
        Box::pin(self.redispatch(state, tried, failure, reason, again)).await
    }

    /// Records a send to endpoint `index` that went at `sent`: the endpoint's outcome,
    /// the upstream's latency, the limiter's sample, outlier ejection, and a mark-down
    /// ending with a response.
    #[inline]
    fn record_send(
        &self,
        index: usize,
        result: &Result<Response<ReceivedBody>, SendFailure>,
        sent: Instant,
    ) {
        let endpoint = &self.endpoints()[index];
        let latency = sent.elapsed();
        self.metrics.duration.observe(latency.as_secs_f64());
        self.limiter.sample(match result {
            Ok(response) if matches!(response.status().as_u16(), 429 | 503) => Sample::Dropped,
            Ok(_) => Sample::Latency(latency),
            Err(SendFailure {
                error: UpstreamError::Timeout { .. },
                ..
            }) => Sample::Dropped,
            Err(_) => Sample::Latency(latency),
        });
        match result {
            Ok(response) => {
                endpoint.record(UpstreamOutcome::of_status(response.status()));
                self.observe(index, response.status().is_server_error());
                self.pool.mark_up(index, &self.name);
            }
            Err(failure) => {
                endpoint.record(failure.error.outcome());
                if failure.error.endpoint_failed() {
                    self.observe(index, true);
                }
            }
        }
    }

    /// Sends `request` to endpoint `index`, waiting `until` then, and records the send
    /// ([`Upstream::record_send`]). Dropped before the send ends (the caller gave up:
    /// the client went away, an aggregate route's timeout or failed required call),
    /// the send still counts once, as `cancelled`, without blaming the endpoint.
    async fn send_recorded(
        &self,
        index: usize,
        mut request: Request<UpstreamBody>,
        until: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Response<ReceivedBody>, SendFailure> {
        // Under a trace, this send is a client span of its own, and says so upstream.
        let traced = crate::trace::client_send(request.headers_mut())
            .map(|span| (span, request.method().clone()));
        let sent = Instant::now();
        let mut pending = PendingSend {
            upstream: self,
            index,
            sent,
            ended: false,
        };
        let result = self.pool.send_until(index, request, until, timeout).await;
        pending.ended = true;
        self.record_send(index, &result, sent);
        if let Some((span, method)) = traced {
            let address = &self.endpoints()[index].address.authority;
            let outcome = match &result {
                Ok(response) => Ok(response.status().as_u16()),
                Err(failure) => Err(failure.error.code()),
            };
            span.end(
                &method,
                &self.name,
                (address.host(), address.port_u16()),
                outcome,
            );
        }
        result
    }

    /// After a send to `state.index` that never reached it (`failure`): marks that
    /// endpoint down and sends the request to endpoints this request has not tried,
    /// until one answers, a failure is not of this kind, no endpoint or time is left,
    /// or the request cannot be had again.
    async fn redispatch<E>(
        self: &Arc<Self>,
        state: Redispatching,
        tried: &mut Vec<usize>,
        mut failure: SendFailure,
        mut reason: Redispatch,
        mut again: impl Again<E>,
    ) -> (
        Result<(Response<ReceivedBody>, Exchange), ExchangeError<E>>,
        Option<usize>,
    ) {
        let Redispatching {
            mut index,
            mut guard,
            until,
            timeout,
        } = state;
        loop {
            let SendFailure { error, unsent } = failure;
            let from = &self.endpoints()[index];
            if let UpstreamError::TlsVerify { cause, .. } = &error {
                tracing::debug!(upstream = %self.name, endpoint = %from.address.label, "certificate failed verification: {cause}");
            }
            self.pool.mark_down(index, &self.name, &error);
            tried.push(index);
            // Another endpoint, never one this request has tried, while the timeout
            // leaves time.
            let time_left = until > tokio::time::Instant::now();
            let Some(next) = self.pick(tried).filter(|_| time_left) else {
                return (Err(ExchangeError::Upstream(error)), Some(index));
            };
            let to = &self.endpoints()[next];
            let request = match (again.again(to), unsent) {
                (Some(Ok(request)), _) => request,
                (Some(Err(error)), _) => return (Err(ExchangeError::Build(error)), Some(index)),
                (None, Some(unsent)) => self.readdressed(*unsent, from, to),
                (None, None) => return (Err(ExchangeError::Upstream(error)), Some(index)),
            };
            self.metrics.redispatches[reason as usize].inc();
            tracing::debug!(upstream = %self.name, from = %from.address.label, to = %to.address.label, "redispatched: {error}");
            guard.move_to(next);
            index = next;
            let result = self.send_recorded(index, request, until, timeout).await;
            match result {
                Ok(response) => return (Ok((response, guard)), Some(index)),
                Err(next_failure) => match next_failure.error.redispatch() {
                    Some(next_reason) => {
                        failure = next_failure;
                        reason = next_reason;
                    }
                    None => {
                        return (
                            Err(ExchangeError::Upstream(next_failure.error)),
                            Some(index),
                        )
                    }
                },
            }
        }
    }

    /// An unsent request for endpoint `from`, addressed to `to` instead: its URI, and
    /// its `Host` where that named `from` (the upstream sends each endpoint's own, or
    /// the caller used it for want of one).
    fn readdressed(
        &self,
        mut request: Request<UpstreamBody>,
        from: &Endpoint,
        to: &Endpoint,
    ) -> Request<UpstreamBody> {
        if let Some(path) = request.uri().path_and_query().cloned() {
            if let Ok(uri) = to.uri(path) {
                *request.uri_mut() = uri;
            }
        }
        let headers = request.headers_mut();
        if self.host_header == HostHeader::Endpoint || headers.get(HOST) == Some(&from.host_value) {
            headers.insert(HOST, to.host_value.clone());
        }
        request
    }
}

/// A send under way to endpoint `index`; dropped before it `ended` (the caller
/// abandoned it), it counts the exchange as `cancelled` and observes its duration.
struct PendingSend<'a> {
    upstream: &'a Upstream,
    index: usize,
    sent: Instant,
    ended: bool,
}

impl Drop for PendingSend<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Some(endpoint) = self.upstream.endpoints().get(self.index) {
            endpoint.record(UpstreamOutcome::Cancelled);
            let elapsed = self.sent.elapsed().as_secs_f64();
            self.upstream.metrics.duration.observe(elapsed);
        }
    }
}

impl Wait {
    /// When a send starting now must have its response headers: after `timeout`, or at
    /// the caller's `deadline` if that comes first. The caller's own timer for the
    /// same deadline fires in the same tick and is polled after the send's, so an
    /// aggregate call's timeout ends the send itself, which counts it as a `timeout`.
    /// Also the time that leaves, for the error that says it ran out.
    fn until(self) -> (tokio::time::Instant, Duration) {
        let now = tokio::time::Instant::now();
        let until = now + self.timeout;
        match self.deadline {
            Some(deadline) if deadline < until => {
                (deadline, deadline.saturating_duration_since(now))
            }
            _ => (until, self.timeout),
        }
    }
}

impl EndpointPool {
    /// Sends `request` to endpoint `index` and waits at most `timeout` for the response
    /// headers ([`EndpointPool::send_until`]).
    pub(super) async fn send(
        &self,
        index: usize,
        request: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<ReceivedBody>, SendFailure> {
        let until = tokio::time::Instant::now() + timeout;
        self.send_until(index, request, until, timeout).await
    }

    /// Sends `request` to endpoint `index` and waits `until` then for the response
    /// headers; `timeout` is what a timeout's error says it waited. Over the gateway's own HTTP/1.1 pool, the connection returns to the
    /// endpoint's pool when the body has been read to its end.
    pub(super) async fn send_until(
        &self,
        index: usize,
        request: Request<UpstreamBody>,
        until: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Response<ReceivedBody>, SendFailure> {
        let endpoint = &self.endpoints[index];
        let label = || endpoint.address.label.clone();
        let timed_out = || UpstreamError::Timeout {
            endpoint: label(),
            timeout,
        };
        if let Some(connections) = &endpoint.connections {
            let sent = connections.send(request, &endpoint.host_value);
            return match tokio::time::timeout_at(until, sent).await {
                Err(_elapsed) => Err(timed_out().into()),
                Ok(Ok(response)) => Ok(response.map(ReceivedBody::Pooled)),
                Ok(Err(SendError::Connect(error, request))) => Err(SendFailure {
                    error: match error {
                        ConnectError::Timeout => {
                            UpstreamError::ConnectTimeout { endpoint: label() }
                        }
                        ConnectError::TlsVerify(cause) => UpstreamError::TlsVerify {
                            endpoint: label(),
                            cause,
                        },
                        ConnectError::OutOfDescriptors => {
                            UpstreamError::OutOfDescriptors { endpoint: label() }
                        }
                        ConnectError::Failed(source) => UpstreamError::Connect {
                            endpoint: label(),
                            source,
                        },
                    },
                    unsent: Some(request),
                }),
                Ok(Err(SendError::Exchange(failure))) => Err(http1_failed(failure, label()).into()),
            };
        }
        let Some(client) = &self.client else {
            return Err(UpstreamError::Connect {
                endpoint: label(),
                source: "the upstream has no client for its protocol".into(),
            }
            .into());
        };
        // hyper-util's client keeps the request it could not send: a redispatch needs
        // the caller to build it again.
        match tokio::time::timeout_at(until, client.request(request)).await {
            Err(_elapsed) => Err(timed_out().into()),
            Ok(Ok(response)) => Ok(response.map(ReceivedBody::Hyper)),
            Ok(Err(error)) if error.is_connect() && find_source::<BodyError>(&error).is_none() => {
                let timed_out = find_source::<std::io::Error>(&error)
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                Err(if timed_out {
                    UpstreamError::ConnectTimeout { endpoint: label() }
                } else if let Some(cause) = crate::tls::verify_failure(&error) {
                    UpstreamError::TlsVerify {
                        endpoint: label(),
                        cause,
                    }
                } else {
                    UpstreamError::Connect {
                        endpoint: label(),
                        source: error.into(),
                    }
                }
                .into())
            }
            Ok(Err(error)) => Err(exchange_failed(error, label()).into()),
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
    /// Tries before this one (a retry policy's).
    pub(super) retries: u32,
    /// Endpoints the request moved away from because they could not be reached.
    redispatches: u32,
    permit: Permit,
}

impl Exchange {
    fn begin(upstream: Arc<Upstream>, endpoint: usize, permit: Permit) -> Self {
        upstream.endpoints()[endpoint].begin();
        Exchange {
            upstream,
            endpoint,
            timer: None,
            retries: 0,
            redispatches: 0,
            permit,
        }
    }

    /// The request moved to endpoint `endpoint` (a redispatch): the load moves with it.
    fn move_to(&mut self, endpoint: usize) {
        let endpoints = self.upstream.endpoints();
        endpoints[self.endpoint].end();
        endpoints[endpoint].begin();
        self.endpoint = endpoint;
        self.redispatches += 1;
    }

    /// The endpoint the request went to last, as metrics and logs name it.
    pub fn endpoint_label(&self) -> &str {
        &self.upstream.endpoints()[self.endpoint].address.label
    }

    /// How long the request waited for its permit.
    pub fn queue_wait(&self) -> Duration {
        self.permit.waited
    }

    /// Tries before the one that answered (a retry policy's).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Endpoints the request was moved away from (they could not be reached).
    pub fn redispatches(&self) -> u32 {
        self.redispatches
    }

    /// Observes `started.elapsed()` into `histogram` when the exchange ends.
    pub fn timed(mut self, histogram: Histogram, started: Instant) -> Self {
        self.timer = Some((histogram, started));
        self
    }

    /// The upstream's body broke off mid-stream.
    pub fn body_failed(&mut self, error: &dyn std::fmt::Display) {
        let endpoint = &self.upstream.endpoints()[self.endpoint];
        endpoint.body_failed();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_send_waits_its_timeout_or_until_the_caller_s_deadline_if_sooner() {
        let now = tokio::time::Instant::now();
        let timeout = Duration::from_secs(5);
        assert_eq!(Wait::from(timeout).until(), (now + timeout, timeout));
        let later = Wait {
            timeout,
            deadline: Some(now + Duration::from_secs(9)),
        };
        assert_eq!(later.until(), (now + timeout, timeout));
        let sooner = Wait {
            timeout,
            deadline: Some(now + Duration::from_millis(300)),
        };
        assert_eq!(
            sooner.until(),
            (now + Duration::from_millis(300), Duration::from_millis(300)),
            "exactly the caller's deadline, so that the send's timer fires with the caller's"
        );
    }
}
