//! Tracing (OpenTelemetry): the spans the gateway exports over OTLP/HTTP, decoded by a
//! real receiver ([`OtlpReceiver`]): the span tree of a proxied request and the
//! `traceparent` its upstream sees, a retried request's two client spans, an
//! aggregate's call spans in dependency order, sampling (ratio 0, a caller's decision
//! followed), invalid `traceparent`s, and spans dropped (and counted) when the export
//! queue is full.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Method, StatusCode};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

use crate::support::otlp::{attribute, hex, span_attribute, OtlpReceiver, Span};
use crate::support::{
    eventually, metric, metrics_text, url, Aggregate, Backend, Call, Client, Gateway, Listener,
    Reply, Retry, Route, Upstream,
};

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// `tracing` exporting to `receiver`, sampling `sample` of new traces, in batches that
/// leave within 20 ms.
fn tracing(receiver: &OtlpReceiver, sample: f64) -> String {
    format!(
        "{{ otlp: {{ endpoint: \"{}\", timeout: 5s }}, sample: {sample}, export_interval: 20ms }}",
        receiver.endpoint()
    )
}

async fn get(gw: &portcullis::RunningGateway, path: &str, headers: &[(&str, &str)]) -> StatusCode {
    Client::new()
        .send(Method::GET, &url(gw, path), headers, "")
        .await
        .status
}

fn of_kind(spans: &[Span], kind: SpanKind) -> Vec<&Span> {
    spans.iter().filter(|s| s.kind == kind as i32).collect()
}

/// The trace id of a backend request's `traceparent`, its parent id and flags.
fn traceparent_seen(backend: &Backend) -> (String, String, String) {
    let seen = backend.state.last_seen();
    let value = seen
        .headers
        .get("traceparent")
        .expect("traceparent sent upstream")
        .to_str()
        .expect("ascii")
        .to_owned();
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

#[tokio::test]
async fn a_proxied_request_is_a_server_span_over_a_client_span() {
    let receiver = OtlpReceiver::start().await;
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .upstream("users", &backend)
        .route_with(Route::path("/api/users/{id}").named("users").to("users"))
        .raw("tracing", &tracing(&receiver, 1.0))
        .start()
        .await;
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let status = get(
        &gw,
        "/api/users/42",
        &[("traceparent", &parent), ("tracestate", "vendor=x1")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let trace_id = hex_bytes(PARENT_TRACE);
    let spans = receiver.trace(&trace_id, 2).await;
    let server = of_kind(&spans, SpanKind::Server);
    let client = of_kind(&spans, SpanKind::Client);
    assert_eq!((server.len(), client.len()), (1, 1), "{spans:#?}");
    let (server, client) = (server[0], client[0]);
    // The incoming trace is continued: the server span's parent is the caller's span.
    assert_eq!(hex(&server.parent_span_id), PARENT_SPAN);
    assert_eq!(
        server.name, "GET /api/users/{id}",
        "the route's pattern, not the path"
    );
    assert_eq!(
        span_attribute(server, "http.route").as_deref(),
        Some("/api/users/{id}")
    );
    assert_eq!(
        span_attribute(server, "url.path").as_deref(),
        Some("/api/users/42")
    );
    assert_eq!(
        span_attribute(server, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        span_attribute(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        span_attribute(server, "portcullis.route").as_deref(),
        Some("users")
    );
    // The client span is the server span's child, with the endpoint it went to.
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(
        span_attribute(client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        span_attribute(client, "server.port"),
        Some(backend.addr.port().to_string())
    );
    assert_eq!(
        span_attribute(client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    // The upstream saw the trace, with the client span as its parent, and the state.
    let (trace, parent_id, flags) = traceparent_seen(&backend);
    assert_eq!((trace.as_str(), flags.as_str()), (PARENT_TRACE, "01"));
    assert_eq!(parent_id, hex(&client.span_id));
    let seen = backend.state.last_seen();
    assert_eq!(
        seen.headers.get("tracestate").map(|v| v.as_bytes()),
        Some(&b"vendor=x1"[..])
    );
    // The resource says who exported.
    let resource = receiver.resource();
    assert_eq!(
        attribute(&resource, "service.name").as_deref(),
        Some("portcullis")
    );
    assert!(attribute(&resource, "service.instance.id").is_some());
    assert_eq!(
        attribute(&resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn a_retried_request_has_a_client_span_per_try() {
    let receiver = OtlpReceiver::start().await;
    let tries = Arc::new(AtomicUsize::new(0));
    let counted = tries.clone();
    let backend = Backend::start(move |_, _| {
        let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                Reply::text(StatusCode::SERVICE_UNAVAILABLE, "later")
            } else {
                Reply::ok("ok")
            }
        }
    })
    .await;
    let gw = Gateway::new()
        .upstream(
            "app",
            Upstream::new(&backend).retry(Retry::attempts(2).on(&["503"]).backoff("1ms..2ms")),
        )
        .route("/", "app")
        .raw("tracing", &tracing(&receiver, 1.0))
        .start()
        .await;
    assert_eq!(get(&gw, "/x", &[]).await, StatusCode::OK);
    let spans = receiver
        .spans_until("a server span and two client spans", |spans| {
            spans.iter().any(|s| s.kind == SpanKind::Server as i32)
                && spans
                    .iter()
                    .filter(|s| s.kind == SpanKind::Client as i32)
                    .count()
                    == 2
        })
        .await;
    let server = of_kind(&spans, SpanKind::Server)[0];
    assert_eq!(server.name, "GET /*");
    assert!(
        server.parent_span_id.is_empty(),
        "a new trace has a root span"
    );
    let mut client = of_kind(&spans, SpanKind::Client);
    client.sort_by_key(|s| s.start_time_unix_nano);
    for span in &client {
        assert_eq!(span.parent_span_id, server.span_id);
        assert_eq!(span.trace_id, server.trace_id);
    }
    let statuses: Vec<_> = client
        .iter()
        .map(|s| span_attribute(s, "http.response.status_code"))
        .collect();
    assert_eq!(statuses, [Some("503".to_owned()), Some("200".to_owned())]);
    assert!(client[0].end_time_unix_nano <= client[1].start_time_unix_nano);
    // The last try's traceparent names the last client span.
    assert_eq!(traceparent_seen(&backend).1, hex(&client[1].span_id));
}

#[tokio::test]
async fn an_aggregate_has_a_span_per_call_in_dependency_order() {
    let receiver = OtlpReceiver::start().await;
    let users = Backend::start(|_, _| async { Reply::ok(json!({"team_id": 7}).to_string()) }).await;
    let teams = Backend::start(|_, _| async { Reply::ok(json!({"name": "t"}).to_string()) }).await;
    let news = Backend::start(|_, _| async { Reply::ok(json!([1]).to_string()) }).await;
    let gw = Gateway::new()
        .upstream("a", &users)
        .upstream("b", &teams)
        .upstream("c", &news)
        .route_with(
            Route::path("/home/{id}").named("home").aggregate(
                Aggregate::new()
                    .call("user", Call::new("a", "/users/{id}"))
                    .call("team", Call::new("b", "/teams/{user.team_id}"))
                    .call("news", Call::new("c", "/news")),
            ),
        )
        .raw("tracing", &tracing(&receiver, 1.0))
        .start()
        .await;
    assert_eq!(get(&gw, "/home/1", &[]).await, StatusCode::OK);
    let spans = receiver
        .spans_until(
            "a server span, three call spans, three client spans",
            |spans| {
                spans.iter().any(|s| s.kind == SpanKind::Server as i32)
                    && spans
                        .iter()
                        .filter(|s| s.kind == SpanKind::Internal as i32)
                        .count()
                        == 3
                    && spans
                        .iter()
                        .filter(|s| s.kind == SpanKind::Client as i32)
                        .count()
                        == 3
            },
        )
        .await;
    let server = of_kind(&spans, SpanKind::Server)[0];
    assert_eq!(server.name, "GET /home/{id}");
    let calls = of_kind(&spans, SpanKind::Internal);
    let call = |name: &str| {
        *calls
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("a span for call {name}: {calls:#?}"))
    };
    for name in ["user", "team", "news"] {
        assert_eq!(call(name).parent_span_id, server.span_id, "{name}");
        // Each call's upstream send is its child.
        let sends: Vec<_> = of_kind(&spans, SpanKind::Client)
            .into_iter()
            .filter(|s| s.parent_span_id == call(name).span_id)
            .collect();
        assert_eq!(sends.len(), 1, "{name}");
    }
    assert_eq!(
        span_attribute(call("team"), "portcullis.aggregate.depends_on").as_deref(),
        Some("user")
    );
    assert_eq!(
        span_attribute(call("news"), "portcullis.aggregate.depends_on"),
        None
    );
    assert!(
        call("team").start_time_unix_nano >= call("user").end_time_unix_nano,
        "the dependent call starts after its dependency ended"
    );
}

#[tokio::test]
async fn sampling_zero_sends_nothing_and_a_sampled_caller_is_followed() {
    let receiver = OtlpReceiver::start().await;
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .upstream("app", &backend)
        .route("/", "app")
        .raw("tracing", &tracing(&receiver, 0.0))
        .start()
        .await;
    for _ in 0..5 {
        assert_eq!(get(&gw, "/unsampled", &[]).await, StatusCode::OK);
        // Not sampled, but the upstream still gets a trace context (flag 00).
        assert_eq!(traceparent_seen(&backend).2, "00");
    }
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    assert_eq!(
        get(&gw, "/sampled", &[("traceparent", &parent)]).await,
        StatusCode::OK
    );
    receiver.trace(&hex_bytes(PARENT_TRACE), 2).await;
    // Spans leave in order: once the sampled request's are in, none of the others came.
    let spans = receiver.spans();
    assert!(
        spans.iter().all(|s| hex(&s.trace_id) == PARENT_TRACE),
        "only the sampled caller's trace is exported: {spans:#?}"
    );
}

#[tokio::test]
async fn an_unsampled_caller_is_followed_and_an_invalid_traceparent_starts_a_trace() {
    let receiver = OtlpReceiver::start().await;
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .upstream("app", &backend)
        .route("/", "app")
        .raw("tracing", &tracing(&receiver, 1.0))
        .start()
        .await;
    // An unsampled caller: followed (nothing exported), its trace passed on.
    let unsampled = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
    assert_eq!(
        get(
            &gw,
            "/a",
            &[("traceparent", &unsampled), ("tracestate", "k=v")]
        )
        .await,
        StatusCode::OK
    );
    let (trace, parent, flags) = traceparent_seen(&backend);
    assert_eq!((trace.as_str(), flags.as_str()), (PARENT_TRACE, "00"));
    assert_ne!(parent, PARENT_SPAN, "the gateway's own span id is sent");
    // An invalid one (all-zero trace id): a new trace, sampled by the ratio; the
    // caller's tracestate is not passed on with it.
    let invalid = format!("00-{}-{PARENT_SPAN}-01", "0".repeat(32));
    assert_eq!(
        get(
            &gw,
            "/b",
            &[("traceparent", &invalid), ("tracestate", "k=v")]
        )
        .await,
        StatusCode::OK
    );
    let (new_trace, _, flags) = traceparent_seen(&backend);
    assert_ne!(new_trace, "0".repeat(32));
    assert_eq!(flags, "01");
    assert!(backend
        .state
        .last_seen()
        .headers
        .get("tracestate")
        .is_none());
    let spans = receiver.trace(&hex_bytes(&new_trace), 2).await;
    let server = of_kind(&spans, SpanKind::Server)[0];
    assert!(server.parent_span_id.is_empty());
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| hex(&s.trace_id) != PARENT_TRACE),
        "the unsampled caller's request exported nothing"
    );
}

#[tokio::test]
async fn trusted_proxies_only_continues_the_traces_of_trusted_peers() {
    let receiver = OtlpReceiver::start().await;
    let backend = Backend::echo().await;
    let settings = format!(
        "{{ otlp: {{ endpoint: \"{}\" }}, sample: 1, export_interval: 20ms, trust_incoming: trusted_proxies }}",
        receiver.endpoint()
    );
    // The test's client (127.0.0.1) is not among the trusted proxies.
    let gw = Gateway::new()
        .listener(Listener::public().trusted_proxies(&["10.0.0.0/8"]))
        .upstream("app", &backend)
        .route("/", "app")
        .raw("tracing", &settings)
        .start()
        .await;
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    assert_eq!(
        get(&gw, "/", &[("traceparent", &parent)]).await,
        StatusCode::OK
    );
    let (trace, _, _) = traceparent_seen(&backend);
    assert_ne!(
        trace, PARENT_TRACE,
        "an untrusted peer's traceparent starts a new trace"
    );
    let spans = receiver.trace(&hex_bytes(&trace), 2).await;
    assert!(of_kind(&spans, SpanKind::Server)[0]
        .parent_span_id
        .is_empty());
}

#[tokio::test]
async fn a_full_queue_drops_spans_and_counts_them() {
    let receiver = OtlpReceiver::hanging().await;
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .admin()
        .upstream("app", &backend)
        .route("/", "app")
        .raw(
            "tracing",
            &format!(
                "{{ otlp: {{ endpoint: \"{}\", timeout: 30s }}, sample: 1, queue: 1, batch: 1 }}",
                receiver.endpoint()
            ),
        )
        .start()
        .await;
    // Two spans a request; the exporter holds one (its export never answered) and the
    // queue one more: of ten requests' twenty spans, at least eighteen are dropped.
    for _ in 0..10 {
        assert_eq!(
            get(&gw, "/", &[]).await,
            StatusCode::OK,
            "requests never wait for the exporter"
        );
    }
    eventually("the dropped spans are counted", async || {
        metric(
            &metrics_text(&gw).await,
            "portcullis_tracing_spans_dropped_total",
        )
        .is_some_and(|dropped| dropped >= 18.0)
    })
    .await;
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(&text, "portcullis_tracing_spans_exported_total"),
        Some(0.0)
    );
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
