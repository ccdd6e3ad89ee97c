//! Distributed tracing (OpenTelemetry), a leaf: W3C trace context in and out
//! ([`context`]), the spans of a request ([`span`]: a server span per request, a
//! client span per upstream send, an internal span per aggregate call) and their export
//! over OTLP/HTTP in batches from a thread of its own ([`export`]).
//!
//! Nothing here is on the request's critical path beyond a branch: a request of a
//! gateway without `tracing` never reaches this module; an unsampled request costs
//! its ids and the `traceparent` it sends upstream; a sampled one builds a small
//! record per span, handed to the exporter with `try_send` (dropped and counted when
//! the queue is full, never waited for).

pub mod context;
mod export;
pub mod span;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Uri};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::metrics::TracingMetrics;
pub use context::{SpanId, TraceId, TraceParent};
pub use span::{
    client_send, current, in_context, AttrValue, OpenSpan, SendContext, SpanKind, SpanRecord,
};

/// Whose `traceparent` a request's trace continues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustIncoming {
    /// Every client's.
    #[default]
    Always,
    /// Only from peers in the listener's `client_ip.trusted_proxies`; other requests
    /// start a trace of their own.
    TrustedProxies,
    /// Nobody's: every request starts a trace.
    Never,
}

impl TrustIncoming {
    /// As the file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustIncoming::Always => "always",
            TrustIncoming::TrustedProxies => "trusted_proxies",
            TrustIncoming::Never => "never",
        }
    }
}

/// `tracing`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The OTLP/HTTP traces endpoint (`http://…/v1/traces`).
    pub endpoint: Uri,
    /// Each export request's limit, connecting included.
    pub timeout: Duration,
    /// The share of new traces sampled, 0 to 1 (a caller's decision is followed).
    pub sample: f64,
    pub service_name: String,
    pub trust_incoming: TrustIncoming,
    /// Spans waiting for export at most; more are dropped.
    pub queue: usize,
    /// Spans per export request at most.
    pub batch: usize,
    /// How long a span waits for its batch to fill before the batch goes anyway.
    pub export_interval: Duration,
}

/// The process's tracer: the settings a request needs and the exporter's queue.
/// Built once per `tracing` configuration (a reload that leaves it unchanged keeps it).
pub struct Tracer {
    pub settings: TracingSettings,
    /// Below this, a trace id's random part is sampled.
    threshold: u64,
    queue: mpsc::Sender<SpanRecord>,
    metrics: TracingMetrics,
}

impl Tracer {
    /// Starts the exporter thread for `settings`; it exports until every handle on
    /// the tracer is gone, then sends what is left and ends.
    pub fn start(
        settings: TracingSettings,
        metrics: TracingMetrics,
    ) -> std::io::Result<Arc<Tracer>> {
        let (queue, spans) = mpsc::channel(settings.queue.max(1));
        export::spawn(settings.clone(), spans, metrics.clone())?;
        let threshold = if settings.sample >= 1.0 {
            u64::MAX
        } else {
            // Saturating: the cast clamps to 0..=u64::MAX.
            (settings.sample.max(0.0) * u64::MAX as f64) as u64
        };
        Ok(Arc::new(Tracer {
            settings,
            threshold,
            queue,
            metrics,
        }))
    }

    /// Whether a trace without a sampled caller is sampled: by its id, so every
    /// gateway on the trace's path decides alike.
    fn samples(&self, trace_id: TraceId) -> bool {
        self.threshold == u64::MAX || trace_id.random_part() < self.threshold
    }

    /// The server span of a request with `headers`, from a `peer` that is
    /// (`peer_trusted`) or is not one of the listener's trusted proxies: continues a
    /// valid `traceparent` when the settings believe it (following its sampling
    /// decision), else starts a trace, sampled by ratio.
    pub fn begin(self: &Arc<Self>, headers: &HeaderMap, peer_trusted: bool) -> OpenSpan {
        let believed = match self.settings.trust_incoming {
            TrustIncoming::Always => true,
            TrustIncoming::TrustedProxies => peer_trusted,
            TrustIncoming::Never => false,
        };
        let incoming = if believed {
            incoming_parent(headers)
        } else {
            None
        };
        match incoming {
            Some(parent) => {
                let tracestate = headers
                    .get(&context::TRACESTATE)
                    .filter(|_| headers.get_all(&context::TRACESTATE).iter().count() == 1)
                    .filter(|state| context::tracestate_is_valid(state))
                    .cloned();
                OpenSpan::begin(
                    self.clone(),
                    parent.trace_id,
                    Some(parent.parent_id),
                    parent.sampled,
                    tracestate,
                )
            }
            None => {
                let trace_id = TraceId::random();
                OpenSpan::begin(self.clone(), trace_id, None, self.samples(trace_id), None)
            }
        }
    }

    /// Hands a finished span to the exporter, or drops and counts it when the queue
    /// is full (never waits).
    pub fn record(&self, span: SpanRecord) {
        if self.queue.try_send(span).is_err() {
            self.metrics.dropped.inc();
        }
    }
}

/// The request's one valid `traceparent`; several are as good as none.
fn incoming_parent(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(&context::TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(first.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sample: f64) -> TracingSettings {
        TracingSettings {
            endpoint: Uri::from_static("http://127.0.0.1:9/v1/traces"),
            timeout: Duration::from_secs(1),
            sample,
            service_name: "test".into(),
            trust_incoming: TrustIncoming::Always,
            queue: 8,
            batch: 8,
            export_interval: Duration::from_secs(1),
        }
    }

    fn tracer(sample: f64) -> Arc<Tracer> {
        Tracer::start(settings(sample), crate::metrics::Metrics::new().tracing()).expect("thread")
    }

    #[test]
    fn ratio_sampling_follows_the_ratio() {
        let none = tracer(0.0);
        let all = tracer(1.0);
        let tenth = tracer(0.1);
        let headers = HeaderMap::new();
        let sampled = (0..2000)
            .filter(|_| tenth.begin(&headers, false).sampled())
            .count();
        assert!((100..300).contains(&sampled), "{sampled} of 2000 at 10%");
        assert!((0..100).all(|_| !none.begin(&headers, false).sampled()));
        assert!((0..100).all(|_| all.begin(&headers, false).sampled()));
    }

    #[test]
    fn a_believed_parent_is_continued_and_its_decision_followed() {
        let all = tracer(1.0);
        let mut headers = HeaderMap::new();
        headers.insert(
            &context::TRACEPARENT,
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        );
        let span = all.begin(&headers, false);
        assert_eq!(span.trace_id().to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!span.sampled(), "an unsampled parent is followed");
    }
}
