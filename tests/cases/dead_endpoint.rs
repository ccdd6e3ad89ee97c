//! An endpoint that is down must not cost requests: a connection it refuses (or that
//! never opens in time, or whose certificate fails verification) means the request
//! never left the gateway, so it goes to another endpoint at once, without drawing on
//! the retry budget and without needing a retry policy, and the endpoint is marked down
//! until a health check, a probe or any response says it is back. A pooled connection
//! closed before any response byte is resent on a new one. Counted at the backends and
//! in the metrics, never timed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use portcullis::RunningGateway;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Barrier;

use crate::support::backend::drain_body;
use crate::support::pki::Pki;
use crate::support::{
    closed_port, eventually, metric, metric_reaches, metrics_text, port_to_listen_on_later, url,
    Aggregate, Backend, Call, Client, Endpoint, Gateway, HealthCheck, Protocol, Reply, Retry,
    Route, Upstream, UpstreamTls,
};

/// `count` requests for `path`, all sent at once (a barrier releases them together);
/// their statuses, counted.
async fn burst(gw: &RunningGateway, path: &str, count: usize) -> BTreeMap<u16, usize> {
    let barrier = Arc::new(Barrier::new(count));
    let client = Client::new();
    let requests = (0..count).map(|_| {
        let barrier = barrier.clone();
        let client = client.clone();
        let url = url(gw, path);
        tokio::spawn(async move {
            barrier.wait().await;
            client.get(&url).await.status.as_u16()
        })
    });
    let mut statuses = BTreeMap::new();
    for status in futures_util::future::join_all(requests).await {
        *statuses
            .entry(status.expect("the request task"))
            .or_insert(0) += 1;
    }
    statuses
}

/// A series of upstream `u`'s metrics, by its labels other than `upstream`.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = labels.to_vec();
    all.push(("upstream", "u"));
    all.sort();
    let labels: Vec<String> = all.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, &series(name, labels)).unwrap_or(0.0)
}

/// Requests that reached `backend` other than health checks.
fn traffic(backend: &Backend) -> usize {
    let seen = backend.state.seen.lock().expect("lock");
    seen.iter().filter(|seen| seen.uri != "/health").count()
}

/// A backend answering 200 with the length of the body it received.
async fn body_length() -> Backend {
    Backend::start(|request, state| async move {
        let length = drain_body(request, &state).await;
        Reply::ok(length.to_string())
    })
    .await
}

/// Answers every request on `listener` with 200 `revived` and closes the connection.
fn serve_revived(listener: TcpListener) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let served = Arc::new(AtomicUsize::new(0));
    let task = {
        let served = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let served = served.clone();
                tokio::spawn(async move {
                    if read_head(&mut socket).await {
                        served.fetch_add(1, Ordering::SeqCst);
                        let _ = socket
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nrevived",
                            )
                            .await;
                    }
                });
            }
        })
    };
    (served, task)
}

/// Reads one request head (up to its blank line); `false` when the connection ended.
async fn read_head(socket: &mut tokio::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        assert!(head.len() < 64 * 1024, "a request head this long");
    }
    true
}

#[tokio::test]
async fn a_burst_right_after_start_loses_no_request_to_a_refusing_endpoint() {
    // Before: 10 of the 40 got 502, the retry budget (at least 10 a window) spent.
    let good = Backend::echo().await;
    let dead = closed_port();
    let gw = Gateway::new()
        .admin()
        .upstream(
            "u",
            Upstream::endpoints([dead.endpoint(), good.endpoint()])
                .retry(
                    Retry::attempts(3)
                        .on(&["connect_failure"])
                        .backoff("1ms..2ms"),
                )
                .health_check(HealthCheck::path("/health").interval(Duration::from_millis(500))),
        )
        .route("/", "u")
        .start()
        .await;
    let statuses = burst(&gw, "/x", 40).await;
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 40)]),
        "every request answered"
    );
    assert_eq!(traffic(&good), 40);
    let text = metrics_text(&gw).await;
    let dead = dead.endpoint();
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_retry_budget_exhausted_total",
            &[]
        ),
        0.0,
    );
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_retries_total",
            &[("reason", "connect_failure")]
        ),
        0.0,
        "moving a request that never left the gateway is no retry"
    );
    let redispatched = value(
        &text,
        "portcullis_upstream_redispatches_total",
        &[("reason", "connect_failure")],
    );
    let refused = value(
        &text,
        "portcullis_upstream_requests_total",
        &[("endpoint", &dead), ("outcome", "connect_failure")],
    );
    assert!(redispatched >= 1.0, "{text}");
    assert_eq!(redispatched, refused, "each refused request went elsewhere");
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_ejections_total",
            &[("endpoint", &dead), ("reason", "connect_failure")]
        ),
        1.0,
        "marked down once"
    );
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_endpoint_healthy",
            &[("endpoint", &dead)]
        ),
        0.0
    );
}

#[tokio::test]
async fn without_a_retry_policy_a_refused_request_moves_on_with_its_whole_body() {
    let good = body_length().await;
    let dead = closed_port();
    let gw = Gateway::new()
        .admin()
        .upstream("u", Upstream::endpoints([dead.endpoint(), good.endpoint()]))
        .route("/", "u")
        .start()
        .await;
    let client = Client::new();
    let body = Bytes::from(vec![b'x'; 100_000]);
    for _ in 0..6 {
        // Streamed upstream as it arrives: the refused connect had not read it yet.
        let reply = client
            .send(Method::POST, &url(&gw, "/upload"), &[], body.clone())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), "100000", "the whole body, once");
    }
    assert_eq!(good.state.arrived(), 6);
    let text = metrics_text(&gw).await;
    let dead = dead.endpoint();
    let redispatched = value(
        &text,
        "portcullis_upstream_redispatches_total",
        &[("reason", "connect_failure")],
    );
    assert!(redispatched >= 1.0, "{text}");
    assert!(
        redispatched < 6.0,
        "later requests skipped the endpoint marked down"
    );
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_ejections_total",
            &[("endpoint", &dead), ("reason", "connect_failure")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_single_refusing_endpoint_still_answers_502_every_time() {
    // Nowhere to move to, and marked down alone never makes it a 503: as before.
    let dead = closed_port();
    let gw = Gateway::new()
        .admin()
        .upstream("u", Upstream::new(dead))
        .route("/", "u")
        .start()
        .await;
    let client = Client::new();
    for _ in 0..3 {
        let reply = client.get(&url(&gw, "/x")).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
        assert_eq!(reply.json()["error"], "upstream_connect_failed");
    }
    let text = metrics_text(&gw).await;
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_requests_total",
            &[
                ("endpoint", &dead.endpoint()),
                ("outcome", "connect_failure")
            ]
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_redispatches_total",
            &[("reason", "connect_failure")]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_passing_health_check_brings_a_marked_down_endpoint_back() {
    let good = Backend::echo().await;
    let port = port_to_listen_on_later();
    let later = SocketAddr::from(([127, 0, 0, 1], port));
    let gw = Gateway::new()
        .admin()
        .upstream(
            "u",
            Upstream::endpoints([later.endpoint(), good.endpoint()]).health_check(
                HealthCheck::path("/health")
                    .interval(Duration::from_millis(20))
                    .unhealthy_threshold(1000),
            ),
        )
        .route("/", "u")
        .start()
        .await;
    let healthy = series(
        "portcullis_upstream_endpoint_healthy",
        &[("endpoint", &later.endpoint())],
    );
    let client = Client::new();
    // Whichever request meets the refusal first marks it down (a check may be first,
    // but checks do not mark endpoints down): send until one has.
    eventually("a request marks the endpoint down", async || {
        assert_eq!(client.get(&url(&gw, "/x")).await.status, StatusCode::OK);
        metric(&metrics_text(&gw).await, &healthy) == Some(0.0)
    })
    .await;
    let before = traffic(&good);
    for _ in 0..6 {
        assert_eq!(client.get(&url(&gw, "/x")).await.status, StatusCode::OK);
    }
    assert_eq!(traffic(&good), before + 6, "skipped while down");

    let (served, server) = serve_revived(TcpListener::bind(later).await.expect("binds"));
    metric_reaches(&gw, &healthy, 1.0).await;
    let checks = served.load(Ordering::SeqCst);
    for _ in 0..6 {
        assert_eq!(client.get(&url(&gw, "/x")).await.status, StatusCode::OK);
    }
    assert!(served.load(Ordering::SeqCst) > checks, "back in rotation");
    server.abort();
}

#[tokio::test]
async fn without_health_checks_a_probe_request_brings_it_back() {
    let good = Backend::echo().await;
    let port = port_to_listen_on_later();
    let later = SocketAddr::from(([127, 0, 0, 1], port));
    let gw = Gateway::new()
        .admin()
        .upstream(
            "u",
            Upstream::endpoints([later.endpoint(), good.endpoint()]),
        )
        .route("/", "u")
        .start()
        .await;
    let client = Client::new();
    assert_eq!(client.get(&url(&gw, "/x")).await.status, StatusCode::OK);
    let healthy = series(
        "portcullis_upstream_endpoint_healthy",
        &[("endpoint", &later.endpoint())],
    );
    metric_reaches(&gw, &healthy, 0.0).await;

    let (served, server) = serve_revived(TcpListener::bind(later).await.expect("binds"));
    // The probe goes a second after the mark-down (the unit tests do the arithmetic).
    eventually("a probe reaches the revived endpoint", async || {
        assert_eq!(client.get(&url(&gw, "/x")).await.status, StatusCode::OK);
        served.load(Ordering::SeqCst) > 0
    })
    .await;
    metric_reaches(&gw, &healthy, 1.0).await;
    server.abort();
}

/// A keep-alive server that answers the first request on each connection and closes
/// the connection when a second one arrives on it, without a byte of a response.
async fn closes_on_the_second_request(
) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let task = {
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if read_head(&mut socket).await {
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        // The next request: closed without a response.
                        let _ = read_head(&mut socket).await;
                    }
                });
            }
        })
    };
    (addr, connections, task)
}

#[tokio::test]
async fn a_pooled_connection_closed_before_the_response_is_resent_on_a_new_one() {
    let (addr, connections, server) = closes_on_the_second_request().await;
    let gw = Gateway::new()
        .admin()
        .upstream("u", Upstream::new(addr))
        .route("/", "u")
        .start()
        .await;
    let client = Client::new();
    for _ in 0..2 {
        let reply = client.get(&url(&gw, "/x")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the second GET, resent"
    );
    let text = metrics_text(&gw).await;
    let resent = || {
        value(
            &text,
            "portcullis_upstream_redispatches_total",
            &[("reason", "reset_before_response")],
        )
    };
    assert_eq!(resent(), 1.0);
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_retries_total",
            &[("reason", "reset")]
        ),
        0.0
    );

    // A POST may have been acted on: not resent (no retry policy names it).
    let reply = client
        .send(Method::POST, &url(&gw, "/x"), &[], "order")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    let text = metrics_text(&gw).await;
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_redispatches_total",
            &[("reason", "reset_before_response")],
        ),
        1.0
    );
    server.abort();
}

/// A TLS backend answering `ok`.
async fn tls_backend(pki: &Pki) -> Backend {
    Backend::start_tls(
        pki.server_config(&["127.0.0.1"], &[], false),
        |_, _| async move { Reply::ok("ok") },
    )
    .await
}

/// `bad`'s failed verifications are counted as such, not as connect failures, and
/// each request that met one went to another endpoint.
fn assert_tls_verify_failures_redispatched(text: &str, bad: &Backend) {
    let failed = value(
        text,
        "portcullis_upstream_requests_total",
        &[
            ("endpoint", &bad.https_url()),
            ("outcome", "tls_verify_failed"),
        ],
    );
    assert!(failed >= 1.0, "{text}");
    assert_eq!(
        value(
            text,
            "portcullis_upstream_requests_total",
            &[
                ("endpoint", &bad.https_url()),
                ("outcome", "connect_failure")
            ],
        ),
        0.0
    );
    assert_eq!(
        value(
            text,
            "portcullis_upstream_redispatches_total",
            &[("reason", "tls_verify_failed")]
        ),
        failed
    );
}

#[tokio::test]
async fn a_certificate_that_fails_verification_is_its_own_outcome_and_not_retried() {
    let trusted = Pki::new("trusted CA");
    let other = Pki::new("other CA");
    let bad = tls_backend(&other).await;
    let good = tls_backend(&trusted).await;
    let ca = trusted.write_ca();
    let retry = || {
        Retry::attempts(3)
            .on(&["connect_failure"])
            .backoff("1ms..2ms")
    };

    // Several endpoints: another one answers, over the gateway's own HTTP/1.1 client
    // and over hyper-util's (ALPN), whose failed request the retry policy rebuilds.
    let client = Client::new();
    for (protocol, arrived) in [(Protocol::Http1, 4), (Protocol::Auto, 8)] {
        let gw = Gateway::new()
            .admin()
            .upstream(
                "u",
                Upstream::endpoints([bad.https_url(), good.https_url()])
                    .tls(UpstreamTls::ca(&ca))
                    .protocol(protocol)
                    .retry(retry()),
            )
            .route("/", "u")
            .start()
            .await;
        for _ in 0..4 {
            let reply = client.get(&url(&gw, "/x")).await;
            assert_eq!(reply.status, StatusCode::OK, "{protocol}: {}", reply.text());
        }
        assert_eq!(good.state.arrived(), arrived);
        assert_eq!(bad.state.arrived(), 0);
        let text = metrics_text(&gw).await;
        assert_tls_verify_failures_redispatched(&text, &bad);
    }

    // One endpoint: a 502, not retried as a connect failure would be.
    let gw = Gateway::new()
        .admin()
        .upstream(
            "u",
            Upstream::new(bad.https_url())
                .tls(UpstreamTls::ca(&ca))
                .retry(retry()),
        )
        .route("/", "u")
        .start()
        .await;
    let reply = client.get(&url(&gw, "/x")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.json()["error"], "upstream_connect_failed");
    let text = metrics_text(&gw).await;
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_requests_total",
            &[
                ("endpoint", &bad.https_url()),
                ("outcome", "tls_verify_failed")
            ],
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "portcullis_upstream_retries_total",
            &[("reason", "connect_failure")]
        ),
        0.0
    );
}

#[tokio::test]
async fn aggregate_calls_move_past_a_refusing_endpoint_and_follow_the_retry_policy() {
    let good = Backend::start(|_, _| async move { Reply::ok(json!({"n": 1}).to_string()) }).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let flaky = {
        let calls = calls.clone();
        Backend::start(move |_, _| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Reply::text(StatusCode::SERVICE_UNAVAILABLE, "busy")
                } else {
                    Reply::ok(json!({"n": 2}).to_string())
                }
            }
        })
        .await
    };
    let dead = closed_port();
    let gw = Gateway::new()
        .admin()
        .upstream("u", Upstream::endpoints([dead.endpoint(), good.endpoint()]))
        .upstream(
            "f",
            Upstream::new(&flaky).retry(Retry::attempts(2).on(&["503"]).backoff("1ms..2ms")),
        )
        .route_with(
            Route::path("/both").named("both").aggregate(
                Aggregate::new()
                    .call("one", Call::new("u", "/one"))
                    .call("two", Call::new("f", "/two")),
            ),
        )
        .start()
        .await;
    let client = Client::new();
    for _ in 0..2 {
        let reply = client.get(&url(&gw, "/both")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let reply = client.get(&url(&gw, "/both")).await;
    assert_eq!(reply.json()["one"], json!({"n": 1}));
    assert_eq!(reply.json()["two"], json!({"n": 2}));
    assert_eq!(good.state.arrived(), 3);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the first call to f was retried"
    );
    let text = metrics_text(&gw).await;
    assert!(
        value(
            &text,
            "portcullis_upstream_redispatches_total",
            &[("reason", "connect_failure")]
        ) >= 1.0
    );
}
