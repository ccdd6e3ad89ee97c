//! Aggregate routes: one request fans out into several upstream calls whose JSON
//! results are merged into one answer.
//!
//! Calls without dependencies start at once and run concurrently; a call whose path
//! uses another call's result starts the moment that call finishes ([`Execution`]).
//! Every call goes through its upstream's limiter, balancer and pool exactly like a
//! proxied request: it moves to another endpoint when one refuses its connection, and
//! is retried under the upstream's retry policy. A required call that fails ends the route at once and cancels
//! the calls still running; so does the route's timeout, and so does the client going
//! away (dropping the response drops the calls).
//!
//! Two ways to answer: wait for all calls and send one merged document ([`respond`]),
//! or stream one NDJSON line per call as it completes, then a summary ([`stream`]).

pub mod merge;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};

use crate::access_log::CallStatuses;
use crate::config::{AggregateConfig, HostHeader};
use crate::metrics::{CallMetrics, CallOutcome};
use crate::template::MissingValue;
use crate::upstream::{Endpoint, ExchangeError, Rejection, Upstream, UpstreamError, Wait};
use crate::upstream::{ResponseBody, UpstreamBody};

pub use merge::ERRORS_KEY;

/// Names the calls that failed in a partial answer.
pub const PARTIAL_HEADER: HeaderName = HeaderName::from_static("portcullis-partial");
const NDJSON: &str = "application/x-ndjson";

/// Why one call produced no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the upstream answered {0}")]
    Status(StatusCode),
    #[error("upstream {upstream:?} is overloaded: {reason}")]
    Overloaded { upstream: String, reason: Rejection },
    #[error("{0}")]
    Upstream(UpstreamError),
    #[error("no answer within the call's timeout of {0:?}")]
    Timeout(Duration),
    #[error("still running when the route's timeout of {0:?} ran out")]
    RouteTimeout(Duration),
    #[error("the response body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the response body is not JSON: {0}")]
    InvalidJson(String),
    #[error("reading the response body failed: {0}")]
    Body(String),
    #[error("it needs call `{0}`, which failed")]
    DependencyFailed(String),
    #[error("{0}")]
    Missing(MissingValue),
}

impl CallError {
    fn outcome(&self) -> CallOutcome {
        match self {
            CallError::Status(_) => CallOutcome::UpstreamStatus,
            CallError::Overloaded { .. } => CallOutcome::Overloaded,
            CallError::Timeout(_) | CallError::RouteTimeout(_) => CallOutcome::Timeout,
            CallError::Upstream(
                UpstreamError::ConnectTimeout { .. } | UpstreamError::Timeout { .. },
            ) => CallOutcome::Timeout,
            CallError::Upstream(_) => CallOutcome::UpstreamError,
            CallError::TooLarge(_) | CallError::InvalidJson(_) | CallError::Body(_) => {
                CallOutcome::InvalidBody
            }
            CallError::DependencyFailed(_) | CallError::Missing(_) => CallOutcome::DependencyFailed,
        }
    }
}

/// A failed call as a partial answer describes it (decided in `crate::proxy::respond`,
/// the one place that maps failures to what clients see).
#[derive(Debug, Clone)]
pub struct CallFailure {
    /// The status shown for the call: the upstream's own when it answered with an error.
    pub status: StatusCode,
    /// The status the route answers with when this call was required.
    pub failing_status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl CallFailure {
    /// `{"status": .., "error": .., "message": ..}`.
    pub fn to_json(&self) -> Value {
        json!({"status": self.status.as_u16(), "error": self.code, "message": self.message})
    }
}

/// Describes a failed call for the client, as the listener's `error_detail` allows.
pub type Describe = fn(&CallError) -> CallFailure;

/// An aggregate route compiled for serving.
pub struct AggregateRuntime {
    pub route: String,
    pub config: AggregateConfig,
    pub names: Vec<String>,
    /// `names`, shared with the access log's lines.
    pub call_names: Arc<[String]>,
    calls: Vec<CallRuntime>,
    /// For each call, the calls that wait for it.
    dependents: Vec<Vec<usize>>,
}

struct CallRuntime {
    upstream: Arc<Upstream>,
    metrics: CallMetrics,
}

impl AggregateRuntime {
    /// `upstreams` are the snapshot's, indexed like the configuration's.
    pub fn new(
        route: &str,
        config: &AggregateConfig,
        upstreams: &[Arc<Upstream>],
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        let mut dependents = vec![Vec::new(); config.calls.len()];
        for (index, call) in config.calls.iter().enumerate() {
            for &dependency in &call.depends_on {
                dependents[dependency].push(index);
            }
        }
        AggregateRuntime {
            route: route.to_owned(),
            names: config.calls.iter().map(|c| c.name.clone()).collect(),
            call_names: config.calls.iter().map(|c| c.name.clone()).collect(),
            calls: config
                .calls
                .iter()
                .map(|call| CallRuntime {
                    upstream: upstreams[call.upstream].clone(),
                    metrics: metrics.aggregate_call(route, &call.name),
                })
                .collect(),
            config: config.clone(),
            dependents,
        }
    }
}

/// What every call of one request shares.
pub struct Inputs {
    /// Where the calls' outcomes go for the access log, when the request is logged.
    pub calls: Option<Arc<CallStatuses>>,
    /// The route's path parameters.
    pub params: Vec<(String, String)>,
    pub query: Option<String>,
    /// The client's headers; each call passes on those it allows.
    pub client_headers: HeaderMap,
    /// Headers every call sends: request id, `X-Forwarded-*`, the client's `Host`.
    pub base_headers: HeaderMap,
    /// How a failed call is described in a partial answer.
    pub describe: Describe,
    /// The request's trace, when tracing is on: each call is a span of it.
    pub trace: Option<crate::trace::SendContext>,
}

type CallFuture = Pin<Box<dyn Future<Output = (usize, Result<Value, CallError>)> + Send>>;

/// The calls of one request, started in dependency order.
pub struct Execution {
    runtime: Arc<AggregateRuntime>,
    inputs: Arc<Inputs>,
    results: Vec<Option<Result<Value, CallError>>>,
    waiting_for: Vec<usize>,
    running: FuturesUnordered<CallFuture>,
}

impl Execution {
    /// Starts every call that depends on no other.
    pub fn start(runtime: Arc<AggregateRuntime>, inputs: Arc<Inputs>) -> Self {
        let count = runtime.config.calls.len();
        let mut execution = Execution {
            waiting_for: runtime
                .config
                .calls
                .iter()
                .map(|c| c.depends_on.len())
                .collect(),
            results: (0..count).map(|_| None).collect(),
            running: FuturesUnordered::new(),
            runtime,
            inputs,
        };
        for call in 0..count {
            if execution.waiting_for[call] == 0 {
                execution.launch(call);
            }
        }
        execution
    }

    /// Waits for the next call to finish and returns its index; `None` once all have.
    pub async fn next(&mut self) -> Option<usize> {
        let (call, result) = self.running.next().await?;
        self.results[call] = Some(result);
        for dependent in self.runtime.dependents[call].clone() {
            self.waiting_for[dependent] -= 1;
            if self.waiting_for[dependent] == 0 {
                self.launch(dependent);
            }
        }
        Some(call)
    }

    pub fn result(&self, call: usize) -> Option<&Result<Value, CallError>> {
        self.results[call].as_ref()
    }

    /// Marks every call without a result as cut off by the route's timeout (their
    /// futures are dropped, which cancels them).
    fn time_out(&mut self) {
        self.running.clear();
        let timeout = self.runtime.config.timeout;
        for result in self.results.iter_mut().filter(|r| r.is_none()) {
            *result = Some(Err(CallError::RouteTimeout(timeout)));
        }
    }

    /// Call `call` ended with `outcome` before it could start.
    fn record(&self, call: usize, outcome: CallOutcome) {
        self.runtime.calls[call].metrics.record(outcome);
        if let Some(calls) = &self.inputs.calls {
            calls.record(call, outcome.label());
        }
    }

    fn launch(&mut self, call: usize) {
        let config = &self.runtime.config.calls[call];
        let failed_dependency = config
            .depends_on
            .iter()
            .find(|&&d| matches!(self.results[d], Some(Err(_))));
        if let Some(&dependency) = failed_dependency {
            let error = CallError::DependencyFailed(self.runtime.names[dependency].clone());
            self.record(call, error.outcome());
            self.running
                .push(Box::pin(async move { (call, Err(error)) }));
            return;
        }
        let values: Vec<Option<&Value>> = self
            .results
            .iter()
            .map(|r| r.as_ref().and_then(|r| r.as_ref().ok()))
            .collect();
        let path = config.path.render(
            &self.inputs.params,
            self.inputs.query.as_deref(),
            &values,
            &self.runtime.names,
        );
        let future: CallFuture = match path {
            Ok(path) => {
                let run = run_call(self.runtime.clone(), self.inputs.clone(), call, path);
                match &self.inputs.trace {
                    None => Box::pin(run),
                    Some(trace) => Box::pin(traced_call(trace.child(), self.runtime.clone(), run)),
                }
            }
            Err(missing) => {
                let error = CallError::Missing(missing);
                self.record(call, error.outcome());
                Box::pin(async move { (call, Err(error)) })
            }
        };
        self.running.push(future);
    }
}

/// Records a call's outcome once; a call dropped before finishing counts as cancelled.
struct Tally<'a> {
    metrics: &'a CallMetrics,
    recorded: bool,
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.metrics.record(CallOutcome::Cancelled);
        }
    }
}

/// A call as a span of the request's trace (an internal span named after the call,
/// its upstream sends its children); the calls it waited for are in
/// `portcullis.aggregate.depends_on`, and it starts once they have ended.
async fn traced_call(
    span: crate::trace::OpenSpan,
    runtime: Arc<AggregateRuntime>,
    run: impl Future<Output = (usize, Result<Value, CallError>)>,
) -> (usize, Result<Value, CallError>) {
    use crate::trace::AttrValue;
    let (call, result) = crate::trace::in_context(span.context().clone(), run).await;
    span.end(crate::trace::SpanKind::Internal, || {
        let config = &runtime.config.calls[call];
        let mut attributes: Vec<(&'static str, AttrValue)> = vec![
            ("portcullis.aggregate.call", config.name.as_str().into()),
            ("portcullis.route", runtime.route.as_str().into()),
            (
                "portcullis.upstream",
                runtime.calls[call].upstream.name.as_str().into(),
            ),
        ];
        if !config.depends_on.is_empty() {
            let names = config
                .depends_on
                .iter()
                .map(|&d| runtime.names[d].to_string())
                .collect();
            attributes.push(("portcullis.aggregate.depends_on", AttrValue::StrList(names)));
        }
        if let Err(error) = &result {
            attributes.push(("error.type", error.outcome().label().into()));
        }
        (config.name.clone(), attributes, result.is_err())
    });
    (call, result)
}

async fn run_call(
    runtime: Arc<AggregateRuntime>,
    inputs: Arc<Inputs>,
    call: usize,
    path: String,
) -> (usize, Result<Value, CallError>) {
    let config = &runtime.config.calls[call];
    let call_runtime = &runtime.calls[call];
    let mut tally = Tally {
        metrics: &call_runtime.metrics,
        recorded: false,
    };
    let started = Instant::now();
    let timeout = config.timeout.unwrap_or(call_runtime.upstream.timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    // The exchange ends at the deadline itself (a `timeout` in the upstream families);
    // this bounds the queue wait and the body's reading.
    let fetched = fetch(&runtime, &inputs, call, path, deadline);
    let result = tokio::time::timeout_at(deadline, fetched)
        .await
        .unwrap_or(Err(CallError::Timeout(timeout)))
        .map_err(|error| match error {
            CallError::Upstream(UpstreamError::Timeout { .. })
                if tokio::time::Instant::now() >= deadline =>
            {
                CallError::Timeout(timeout)
            }
            error => error,
        });
    call_runtime
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(_) => CallOutcome::Success,
        Err(error) => error.outcome(),
    };
    call_runtime.metrics.record(outcome);
    if let Some(calls) = &inputs.calls {
        calls.record(call, outcome.label());
    }
    tally.recorded = true;
    (call, result)
}

async fn fetch(
    runtime: &AggregateRuntime,
    inputs: &Inputs,
    call: usize,
    path: String,
    deadline: tokio::time::Instant,
) -> Result<Value, CallError> {
    let config = &runtime.config.calls[call];
    let upstream = &runtime.calls[call].upstream;
    let wait = Wait {
        timeout: upstream.timeout,
        deadline: Some(deadline),
    };
    let mut headers = inputs.base_headers.clone();
    for name in &config.headers {
        for value in inputs.client_headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let path = PathAndQuery::from_maybe_shared(Bytes::from(path)).map_err(|e| {
        CallError::Missing(MissingValue::Query(format!(
            "(the call path is not a valid URI: {e})"
        )))
    })?;
    let build = |endpoint: &Endpoint, path: PathAndQuery, mut headers: HeaderMap| {
        let uri = endpoint
            .uri(path)
            .map_err(|e| CallError::Body(e.to_string()))?;
        if upstream.host_header == HostHeader::Endpoint || !headers.contains_key(HOST) {
            headers.insert(HOST, endpoint.host_value.clone());
        }
        let mut request = Request::new(UpstreamBody::Empty);
        *request.method_mut() = config.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    };
    // Retried like a proxied request under the upstream's retry policy (its methods,
    // conditions and budget); a call has no body to keep.
    let exchanged = match upstream.retry.as_deref() {
        Some(policy) if policy.methods.contains(&config.method) => {
            upstream
                .exchange_retrying(policy, wait, |endpoint| {
                    build(endpoint, path.clone(), headers.clone())
                })
                .await
        }
        _ => {
            upstream
                .exchange(wait, |endpoint| build(endpoint, path, headers))
                .await
        }
    };
    let (response, exchange) = exchanged.map_err(|error| match error {
        ExchangeError::Overloaded(reason) => CallError::Overloaded {
            upstream: upstream.name.clone(),
            reason,
        },
        ExchangeError::Build(error) => error,
        ExchangeError::Upstream(error) => CallError::Upstream(error),
    })?;
    if !response.status().is_success() {
        return Err(CallError::Status(response.status()));
    }
    let limit = runtime.config.max_body_size;
    let body = Limited::new(
        response.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    )
    .collect()
    .await
    .map_err(|error| {
        if error.is::<http_body_util::LengthLimitError>() {
            CallError::TooLarge(limit)
        } else {
            CallError::Body(error.to_string())
        }
    })?
    .to_bytes();
    drop(exchange);
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| CallError::InvalidJson(e.to_string()))?
    };
    Ok(match &config.select {
        Some(fields) => merge::select(value, fields),
        None => value,
    })
}

/// Why an aggregate route failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error("required call `{call}` failed: {error}")]
    Call { call: String, error: CallError },
}

impl AggregateError {
    pub fn call(&self) -> &str {
        match self {
            AggregateError::Call { call, .. } => call,
        }
    }
}

/// Runs every call and answers with the merged document, or fails on the first
/// required call that fails.
pub async fn respond(
    runtime: Arc<AggregateRuntime>,
    inputs: Arc<Inputs>,
) -> Result<Response<ResponseBody>, AggregateError> {
    let deadline = tokio::time::Instant::now() + runtime.config.timeout;
    let mut execution = Execution::start(runtime.clone(), inputs);
    loop {
        match tokio::time::timeout_at(deadline, execution.next()).await {
            Ok(Some(call)) => {
                if !runtime.config.calls[call].optional {
                    if let Some(Err(_)) = execution.result(call) {
                        return Err(required_failure(&mut execution, call));
                    }
                }
            }
            Ok(None) => break,
            Err(_elapsed) => {
                execution.time_out();
                if let Some(call) = (0..runtime.names.len())
                    .find(|&c| !runtime.config.calls[c].optional && is_route_timeout(&execution, c))
                {
                    return Err(required_failure(&mut execution, call));
                }
                break;
            }
        }
    }
    let results: Vec<Result<Value, CallError>> = execution
        .results
        .into_iter()
        .map(|r| r.unwrap_or(Err(CallError::RouteTimeout(runtime.config.timeout))))
        .collect();
    let describe = execution.inputs.describe;
    let (document, failed) = merge::merge(runtime.config.merge, &runtime.names, &results, describe);
    let mut response = Response::new(ResponseBody::full(document.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !failed.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&failed.join(", ")) {
            response.headers_mut().insert(PARTIAL_HEADER, value);
        }
    }
    Ok(response)
}

fn is_route_timeout(execution: &Execution, call: usize) -> bool {
    matches!(
        execution.result(call),
        Some(Err(CallError::RouteTimeout(_)))
    )
}

/// The route fails because required `call` failed; the calls still running are
/// cancelled when `execution` is dropped.
fn required_failure(execution: &mut Execution, call: usize) -> AggregateError {
    let error = execution.results[call]
        .take()
        .and_then(Result::err)
        .unwrap_or(CallError::RouteTimeout(execution.runtime.config.timeout));
    execution.running.clear();
    AggregateError::Call {
        call: execution.runtime.names[call].clone(),
        error,
    }
}

/// Answers at once with an NDJSON stream: a line per call as it completes
/// (`{"call":..,"status":200,"body":..}` or `{"call":..,"status":..,"error":..,"message":..}`),
/// then `{"summary":{"status":..,"failed":[..]}}`. A required call that fails ends
/// the stream after its line, cancelling the rest.
pub fn stream(runtime: Arc<AggregateRuntime>, inputs: Arc<Inputs>) -> Response<ResponseBody> {
    struct State {
        execution: Execution,
        deadline: tokio::time::Instant,
        failed: Vec<String>,
        /// Set once the stream has decided how it ends.
        ending: Option<StatusCode>,
        /// Lines owed after a route timeout.
        pending: Vec<usize>,
        done: bool,
    }
    let deadline = tokio::time::Instant::now() + runtime.config.timeout;
    let state = State {
        execution: Execution::start(runtime, inputs),
        deadline,
        failed: Vec::new(),
        ending: None,
        pending: Vec::new(),
        done: false,
    };
    let lines = futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        if let Some(call) = state.pending.pop() {
            return Some((call_line(&state.execution, call, &mut state.failed), state));
        }
        if let Some(status) = state.ending {
            state.done = true;
            let summary = json!({"summary": {"status": status.as_u16(), "failed": state.failed}});
            return Some((line(&summary), state));
        }
        let runtime = state.execution.runtime.clone();
        match tokio::time::timeout_at(state.deadline, state.execution.next()).await {
            Ok(Some(call)) => {
                let text = call_line(&state.execution, call, &mut state.failed);
                if !runtime.config.calls[call].optional {
                    if let Some(Err(error)) = state.execution.result(call) {
                        state.ending =
                            Some((state.execution.inputs.describe)(error).failing_status);
                        state.execution.running.clear();
                    }
                }
                Some((text, state))
            }
            Ok(None) => {
                state.done = true;
                let summary = json!({"summary": {"status": 200, "failed": state.failed}});
                Some((line(&summary), state))
            }
            Err(_elapsed) => {
                let unfinished: Vec<usize> = (0..runtime.names.len())
                    .filter(|&c| state.execution.result(c).is_none())
                    .collect();
                state.execution.time_out();
                let required_missing = unfinished
                    .iter()
                    .any(|&c| !runtime.config.calls[c].optional);
                state.ending = Some(if required_missing {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::OK
                });
                state.pending = unfinished;
                let call = state.pending.pop()?;
                Some((call_line(&state.execution, call, &mut state.failed), state))
            }
        }
    });
    let mut response = Response::new(ResponseBody::stream(lines));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

fn call_line(execution: &Execution, call: usize, failed: &mut Vec<String>) -> Bytes {
    let name = &execution.runtime.names[call];
    let value = match execution.result(call) {
        Some(Ok(body)) => json!({"call": name, "status": 200, "body": body}),
        Some(Err(error)) => {
            failed.push(name.clone());
            let mut entry = (execution.inputs.describe)(error).to_json();
            entry["call"] = json!(name);
            entry
        }
        None => json!({"call": name, "status": 500, "error": "internal", "message": "no result"}),
    };
    line(&value)
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

/// The headers every call of a request starts from: the client's `Host`. The proxy's
/// policy step adds the rest (request id, `X-Forwarded-*`).
pub fn base_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8);
    if let Some(host) = client.get(HOST) {
        headers.insert(HOST, host.clone());
    }
    headers
}

pub fn streams(config: &AggregateConfig) -> bool {
    config.stream.is_some()
}
