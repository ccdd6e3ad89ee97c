//! Retries: what is retried (and where), what is not, and the budget that keeps a
//! failing upstream from a retry storm. Counted at the backends, never timed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Method, StatusCode};
use portcullis::RunningGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::backend::drain_body;
use crate::support::{
    closed_port, metric, metrics_text, url, Backend, Client, Endpoint, Gateway, Reply, Retry,
    Route, Upstream,
};

/// Upstream `u` (`upstream`, with `retry`) behind `route` to it.
async fn single_upstream(upstream: Upstream, retry: Retry, route: Route) -> RunningGateway {
    Gateway::new()
        .admin()
        .upstream("u", upstream.retry(retry))
        .route_with(route.to("u"))
        .start()
        .await
}

fn every_path() -> Route {
    Route::prefix("/")
}

#[tokio::test]
async fn a_connect_failure_is_retried_on_another_endpoint() {
    let good = Backend::echo().await;
    let gw = single_upstream(
        Upstream::endpoints([closed_port().endpoint(), good.endpoint()]),
        Retry::attempts(2)
            .on(&["connect_failure"])
            .backoff("1ms..2ms"),
        every_path(),
    )
    .await;
    let client = Client::new();
    for _ in 0..4 {
        let reply = client.get(&url(&gw, "/x")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(good.state.arrived(), 4);
    let text = metrics_text(&gw).await;
    // A refused connect sent nothing: the request moves to the other endpoint without
    // a retry (nor its budget), and the endpoint is marked down, so round robin's later
    // turns skip it (see dead_endpoint.rs).
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_retries_total{reason=\"connect_failure\",upstream=\"u\"}"
        ),
        Some(0.0),
    );
    let redispatched = metric(
        &text,
        "portcullis_upstream_redispatches_total{reason=\"connect_failure\",upstream=\"u\"}",
    );
    assert!(
        redispatched.is_some_and(|n| n >= 1.0),
        "round robin sent the first request to the closed endpoint: {redispatched:?}"
    );
}

/// A backend that answers 503 to its first `failures` requests, then 200 with the
/// length of the body it received.
async fn fails_first(failures: usize) -> Backend {
    let calls = Arc::new(AtomicUsize::new(0));
    Backend::start(move |request, state| {
        let calls = calls.clone();
        async move {
            let body = drain_body(request, &state).await;
            if calls.fetch_add(1, Ordering::SeqCst) < failures {
                Reply::text(StatusCode::SERVICE_UNAVAILABLE, "busy")
            } else {
                Reply::ok(body.to_string())
            }
        }
    })
    .await
}

#[tokio::test]
async fn post_is_retried_only_when_the_route_opts_in_and_its_body_is_sent_again() {
    let retry = || Retry::attempts(3).on(&["503"]).backoff("1ms..2ms");
    let client = Client::new();

    let backend = fails_first(2).await;
    let gw = single_upstream(Upstream::new(&backend), retry(), every_path()).await;
    let get = client.get(&url(&gw, "/orders")).await;
    assert_eq!(get.status, StatusCode::OK, "GET is retried");
    assert_eq!(backend.state.arrived(), 3);

    let backend = fails_first(1).await;
    let gw = single_upstream(Upstream::new(&backend), retry(), every_path()).await;
    let post = client
        .send(Method::POST, &url(&gw, "/orders"), &[], "hello")
        .await;
    assert_eq!(
        post.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "POST is not retried by default"
    );
    assert_eq!(backend.state.arrived(), 1);

    let backend = fails_first(1).await;
    let gw = single_upstream(
        Upstream::new(&backend),
        retry(),
        every_path().retry(
            Retry::attempts(3)
                .on(&["503"])
                .methods(&[Method::POST])
                .backoff("1ms..2ms"),
        ),
    )
    .await;
    let post = client
        .send(Method::POST, &url(&gw, "/orders"), &[], "hello")
        .await;
    assert_eq!(post.status, StatusCode::OK, "{}", post.text());
    assert_eq!(post.text(), "5", "the retry sent the whole body again");
    assert_eq!(backend.state.arrived(), 2);
}

#[tokio::test]
async fn a_connection_reset_before_the_response_is_retried() {
    // The first connection is closed right after the request arrives; later ones answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let server = {
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    loop {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if first => return,
                            Ok(_) => {
                                let _ = socket
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                    .await;
                            }
                        }
                    }
                });
            }
        })
    };
    let gw = single_upstream(
        Upstream::new(addr),
        Retry::attempts(2).on(&["reset"]).backoff("1ms..2ms"),
        every_path(),
    )
    .await;
    let reply = Client::new().get(&url(&gw, "/x")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "ok");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_retries_total{reason=\"reset\",upstream=\"u\"}"
        ),
        Some(1.0)
    );
    server.abort();
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    let down =
        Backend::start(|_, _| async move { Reply::text(StatusCode::SERVICE_UNAVAILABLE, "down") })
            .await;
    let gw = single_upstream(
        Upstream::new(&down),
        Retry::attempts(5)
            .on(&["503"])
            .budget("20%")
            .backoff("1ms..2ms"),
        every_path(),
    )
    .await;
    let client = Client::new();
    for _ in 0..20 {
        assert_eq!(
            client.get(&url(&gw, "/x")).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    // 20 requests may add max(10, 20% of 20) = 10 retries in the window, not 20 × 4:
    // the first two requests use 4 each, the third 2, and the other 18 find the budget
    // spent.
    assert_eq!(down.state.arrived(), 30);
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_retries_total{reason=\"status\",upstream=\"u\"}"
        ),
        Some(10.0)
    );
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_retry_budget_exhausted_total{upstream=\"u\"}"
        ),
        Some(18.0)
    );
}
