//! The span exporter: a thread of its own with a single-threaded runtime, off every
//! worker. It takes spans from the bounded queue, sends them in batches (when a batch
//! is full, or `export_interval` after its first span) as one OTLP/HTTP protobuf
//! `ExportTraceServiceRequest` each, bounded by `timeout`, and counts what became of
//! them. One batch is under way at a time: while the collector is slow the queue
//! fills and further spans are dropped (counted), never waited for.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use tokio::sync::mpsc;

use super::span::{AttrValue, SpanKind, SpanRecord};
use super::TracingSettings;
use crate::metrics::TracingMetrics;

/// The most of a collector's answer that is read (its body is discarded).
const MAX_ANSWER: usize = 64 * 1024;

/// Starts the exporter thread.
pub(super) fn spawn(
    settings: TracingSettings,
    spans: mpsc::Receiver<SpanRecord>,
    metrics: TracingMetrics,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("portcullis-otlp".into())
        .spawn(move || runtime.block_on(run(settings, spans, metrics)))?;
    Ok(())
}

async fn run(
    settings: TracingSettings,
    mut spans: mpsc::Receiver<SpanRecord>,
    metrics: TracingMetrics,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let resource = resource(&settings.service_name);
    let batch_size = settings.batch.max(1);
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        let Some(first) = spans.recv().await else {
            return;
        };
        batch.push(first);
        let until = tokio::time::Instant::now() + settings.export_interval;
        let mut closed = false;
        while batch.len() < batch_size {
            match tokio::time::timeout_at(until, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_interval_over) => break,
            }
        }
        let count = batch.len() as u64;
        let body = encode(&resource, batch.drain(..));
        match post(&client, &settings, body).await {
            Ok(()) => metrics.exported.inc_by(count),
            Err(reason) => {
                metrics.export_failures.inc();
                metrics.dropped.inc_by(count);
                tracing::debug!(endpoint = %settings.endpoint, spans = count, "span export failed: {reason}");
            }
        }
        if closed {
            return;
        }
    }
}

/// Sends one batch; `Err` says why it was not accepted.
async fn post(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    settings: &TracingSettings,
    body: Vec<u8>,
) -> Result<(), String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(settings.endpoint.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read (and discard) a bounded answer, so the connection can be reused.
        let _ = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await;
        if status == StatusCode::OK || status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}"))
        }
    };
    match tokio::time::timeout(settings.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
    }
}

/// `service.name`, `service.instance.id` (host name and process id) and
/// `service.version`.
fn resource(service_name: &str) -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let instance = format!("{host}:{}", std::process::id());
    Resource {
        attributes: vec![
            key_value("service.name", &AttrValue::Str(service_name.to_owned())),
            key_value("service.instance.id", &AttrValue::Str(instance)),
            key_value(
                "service.version",
                &AttrValue::Str(env!("CARGO_PKG_VERSION").to_owned()),
            ),
        ],
        ..Default::default()
    }
}

/// One `ExportTraceServiceRequest` of `spans`, protobuf-encoded.
fn encode(resource: &Resource, spans: impl Iterator<Item = SpanRecord>) -> Vec<u8> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "portcullis".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans: spans.map(to_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    request.encode_to_vec()
}

fn to_proto(record: SpanRecord) -> Span {
    Span {
        trace_id: record.trace_id.0.to_vec(),
        span_id: record.span_id.0.to_vec(),
        parent_span_id: record.parent.map_or_else(Vec::new, |p| p.0.to_vec()),
        // W3C trace flags: sampled.
        flags: 1,
        name: record.name,
        kind: match record.kind {
            SpanKind::Server => span::SpanKind::Server,
            SpanKind::Client => span::SpanKind::Client,
            SpanKind::Internal => span::SpanKind::Internal,
        } as i32,
        start_time_unix_nano: record.start_unix_nanos,
        end_time_unix_nano: record.end_unix_nanos,
        attributes: record
            .attributes
            .iter()
            .map(|(key, value)| key_value(key, value))
            .collect(),
        status: record.error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

fn key_value(key: &str, value: &AttrValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(any_value(value)),
        ..Default::default()
    }
}

fn any_value(value: &AttrValue) -> AnyValue {
    AnyValue {
        value: Some(match value {
            AttrValue::Str(text) => any_value::Value::StringValue(text.clone()),
            AttrValue::Int(number) => any_value::Value::IntValue(*number),
            AttrValue::StrList(items) => any_value::Value::ArrayValue(ArrayValue {
                values: items
                    .iter()
                    .map(|item| AnyValue {
                        value: Some(any_value::Value::StringValue(item.clone())),
                    })
                    .collect(),
            }),
        }),
    }
}
