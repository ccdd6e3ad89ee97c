//! An OTLP/HTTP trace receiver for tests: a real HTTP/1.1 server on `127.0.0.1:0`
//! that decodes each `POST /v1/traces` body as an `ExportTraceServiceRequest` (with the
//! same proto crate the gateway encodes with) and keeps the spans, or one that never
//! answers (to fill the gateway's export queue).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::within;

/// What the receiver got: every span, and the resource attributes of the last batch.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    resource: Vec<KeyValue>,
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    /// Bumped after each batch.
    batches: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// A receiver that answers `200` to every export.
    pub async fn start() -> OtlpReceiver {
        Self::serve(true).await
    }

    /// A receiver that accepts connections and reads requests but never answers.
    pub async fn hanging() -> OtlpReceiver {
        Self::serve(false).await
    }

    async fn serve(answers: bool) -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Received::default()));
        let (batches_tx, batches) = watch::channel(0usize);
        let batches_tx = Arc::new(batches_tx);
        let state = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                let batches_tx = batches_tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let state = state.clone();
                        let batches_tx = batches_tx.clone();
                        async move {
                            if !answers {
                                std::future::pending::<()>().await;
                            }
                            let status = receive(request, &state).await;
                            batches_tx.send_modify(|n| *n += 1);
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OtlpReceiver {
            addr,
            received,
            batches,
            task,
        }
    }

    /// The URL for `tracing.otlp.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().expect("lock").spans.clone()
    }

    /// The resource attributes of the last batch.
    pub fn resource(&self) -> Vec<KeyValue> {
        self.received.lock().expect("lock").resource.clone()
    }

    /// Waits (at most 10 s) until the spans received satisfy `done`, and returns them.
    pub async fn spans_until(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let mut batches = self.batches.clone();
        within(what, batches.wait_for(|_| done(&self.spans())))
            .await
            .expect("the receiver runs");
        self.spans()
    }

    /// Waits until the spans of trace `trace_id` number `count`, and returns them.
    pub async fn trace(&self, trace_id: &[u8], count: usize) -> Vec<Span> {
        let of_trace = |spans: &[Span]| spans.iter().filter(|s| s.trace_id == trace_id).count();
        self.spans_until(&format!("{count} spans of the trace"), |spans| {
            of_trace(spans) >= count
        })
        .await
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(request: Request<Incoming>, state: &Mutex<Received>) -> StatusCode {
    if request.uri().path() != "/v1/traces"
        || request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_none_or(|t| t != "application/x-protobuf")
    {
        return StatusCode::BAD_REQUEST;
    }
    let Ok(body) = request.into_body().collect().await else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut state = state.lock().expect("lock");
    for resource_spans in export.resource_spans {
        if let Some(resource) = resource_spans.resource {
            state.resource = resource.attributes;
        }
        for scope in resource_spans.scope_spans {
            state.spans.extend(scope.spans);
        }
    }
    StatusCode::OK
}

/// The value of attribute `key`, as text (numbers in decimal, lists joined by `,`).
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        Value::StringValue(text) => text.clone(),
        Value::IntValue(number) => number.to_string(),
        Value::BoolValue(flag) => flag.to_string(),
        Value::DoubleValue(number) => number.to_string(),
        Value::ArrayValue(list) => list
            .values
            .iter()
            .filter_map(|v| match v.value.as_ref()? {
                Value::StringValue(text) => Some(text.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => return None,
    })
}

/// The value of span attribute `key`.
pub fn span_attribute(span: &Span, key: &str) -> Option<String> {
    attribute(&span.attributes, key)
}

/// Hex of an id, as `traceparent` writes it.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
