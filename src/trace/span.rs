//! Spans as the request path records them: a small record built only for sampled
//! requests, and the open span that becomes one when it ends. The task-local
//! [`SendContext`] tells upstream sends which span they belong to, so each send can
//! carry `traceparent` and record its own client span without the proxy passing a
//! trace through every call.

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};

use super::context::{SpanId, TraceId, TraceParent, TRACEPARENT, TRACESTATE};
use super::Tracer;

/// What the span does, as OTLP names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The gateway answering a client.
    Server,
    /// One send to an upstream endpoint.
    Client,
    /// Work inside the gateway (an aggregate call).
    Internal,
}

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    StrList(Vec<String>),
}

impl From<&str> for AttrValue {
    fn from(value: &str) -> Self {
        AttrValue::Str(value.to_owned())
    }
}

impl From<String> for AttrValue {
    fn from(value: String) -> Self {
        AttrValue::Str(value)
    }
}

impl From<u16> for AttrValue {
    fn from(value: u16) -> Self {
        AttrValue::Int(i64::from(value))
    }
}

/// A finished span, on its way to the exporter.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// The span failed (OTLP status `ERROR`).
    pub error: bool,
}

/// When a span started: the wall clock (what OTLP records) and the monotonic clock
/// (its duration, so that a clock step does not make a span end before it starts).
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall_nanos: u64,
    at: Instant,
}

impl Clock {
    fn now() -> Self {
        let wall_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Clock {
            wall_nanos,
            at: Instant::now(),
        }
    }

    fn end_nanos(&self) -> u64 {
        let elapsed = u64::try_from(self.at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wall_nanos.saturating_add(elapsed)
    }
}

/// What a request's sends need of its trace: the span they are children of, and
/// whether the trace is sampled. Carried in a task-local for the request's work
/// ([`in_context`]).
#[derive(Clone)]
pub struct SendContext {
    pub(super) tracer: Arc<Tracer>,
    pub(super) trace_id: TraceId,
    /// The span a send made now is a child of.
    pub(super) parent: SpanId,
    pub(super) sampled: bool,
    /// The caller's `tracestate`, passed on unchanged (when its `traceparent` was
    /// believed).
    pub(super) tracestate: Option<HeaderValue>,
}

tokio::task_local! {
    static CURRENT: SendContext;
}

/// Runs `work` with `context` current: the upstream sends it makes are children of
/// `context`'s span.
pub fn in_context<F: Future>(context: SendContext, work: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(context, work)
}

/// The context current for this task, if a trace is.
pub fn current() -> Option<SendContext> {
    CURRENT.try_with(SendContext::clone).ok()
}

impl SendContext {
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// Opens a child span of this context's span.
    pub fn child(&self) -> OpenSpan {
        OpenSpan {
            context: SendContext {
                parent: SpanId::random(),
                ..self.clone()
            },
            parent: Some(self.parent),
            clock: Clock::now(),
        }
    }
}

/// A span under way. Its [`SendContext`] (its own id as the parent) is what its
/// children are made from; [`OpenSpan::end`] records it, if sampled.
pub struct OpenSpan {
    context: SendContext,
    parent: Option<SpanId>,
    clock: Clock,
}

impl OpenSpan {
    /// The root or continued span of a request (see [`Tracer::begin`]).
    pub(super) fn begin(
        tracer: Arc<Tracer>,
        trace_id: TraceId,
        parent: Option<SpanId>,
        sampled: bool,
        tracestate: Option<HeaderValue>,
    ) -> Self {
        OpenSpan {
            context: SendContext {
                tracer,
                trace_id,
                parent: SpanId::random(),
                sampled,
                tracestate,
            },
            parent,
            clock: Clock::now(),
        }
    }

    /// The context of this span's children.
    pub fn context(&self) -> &SendContext {
        &self.context
    }

    pub fn sampled(&self) -> bool {
        self.context.sampled
    }

    pub fn trace_id(&self) -> TraceId {
        self.context.trace_id
    }

    pub fn span_id(&self) -> SpanId {
        self.context.parent
    }

    /// Ends the span and hands it to the exporter when sampled. `describe` is only
    /// called then: an unsampled span costs no name or attributes.
    pub fn end(
        self,
        kind: SpanKind,
        describe: impl FnOnce() -> (String, Vec<(&'static str, AttrValue)>, bool),
    ) {
        if !self.context.sampled {
            return;
        }
        let (name, attributes, error) = describe();
        let record = SpanRecord {
            trace_id: self.context.trace_id,
            span_id: self.context.parent,
            parent: self.parent,
            name,
            kind,
            start_unix_nanos: self.clock.wall_nanos,
            end_unix_nanos: self.clock.end_nanos(),
            attributes,
            error,
        };
        self.context.tracer.record(record);
    }
}

/// An upstream send's client span, opened by [`client_send`].
pub struct ClientSpan(OpenSpan);

/// Called for each send to an upstream endpoint: when a trace is current, opens the
/// send's client span and sets `traceparent` (with that span's id) and `tracestate`
/// on `headers`. `None` (and the headers untouched) when tracing is off; when the
/// trace is not sampled, the headers are set but no span is kept.
pub fn client_send(headers: &mut HeaderMap) -> Option<ClientSpan> {
    CURRENT
        .try_with(|context| {
            let span = if context.sampled {
                Some(context.child())
            } else {
                None
            };
            let id = span.as_ref().map_or_else(SpanId::random, OpenSpan::span_id);
            headers.insert(
                TRACEPARENT.clone(),
                TraceParent::header(context.trace_id, id, context.sampled),
            );
            match &context.tracestate {
                Some(state) => {
                    headers.insert(TRACESTATE.clone(), state.clone());
                }
                None => {
                    headers.remove(&TRACESTATE);
                }
            }
            span.map(ClientSpan)
        })
        .ok()
        .flatten()
}

impl ClientSpan {
    /// Ends the send's span: `method` sent to `upstream`'s endpoint at `host` and
    /// `port`, which answered `outcome`'s status or failed with its error code.
    pub fn end(
        self,
        method: &http::Method,
        upstream: &str,
        (host, port): (&str, Option<u16>),
        outcome: Result<u16, &'static str>,
    ) {
        self.0.end(SpanKind::Client, || {
            let mut attributes: Vec<(&'static str, AttrValue)> = Vec::with_capacity(6);
            attributes.push(("http.request.method", method.as_str().into()));
            attributes.push(("portcullis.upstream", upstream.into()));
            attributes.push(("server.address", host.trim_matches(['[', ']']).into()));
            if let Some(port) = port {
                attributes.push(("server.port", port.into()));
            }
            let error = match outcome {
                Ok(status) => {
                    attributes.push(("http.response.status_code", status.into()));
                    status >= 500
                }
                Err(code) => {
                    attributes.push(("error.type", code.into()));
                    true
                }
            };
            (method.as_str().to_owned(), attributes, error)
        });
    }
}
