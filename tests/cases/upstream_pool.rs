//! The gateway's pool of keep-alive HTTP/1.1 connections to each endpoint: connections
//! are reused request after request, one is opened per concurrent request and kept for
//! the next ones, idle ones are closed after the pool's idle timeout, and a connection
//! whose response was abandoned mid-body is never handed to another request.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;

use crate::support::{
    eventually, metric, metric_reaches, metrics_text, url, within, Backend, Client, Gateway, Reply,
    Upstream,
};

const OPENED: &str = "portcullis_upstream_connections_opened_total{endpoint=\"E\",upstream=\"u\"}";
const IDLE: &str = "portcullis_upstream_connections_idle{endpoint=\"E\",upstream=\"u\"}";

fn series(template: &str, backend: &Backend) -> String {
    template.replace('E', &backend.url())
}

/// One worker: its requests share one pool of idle connections (with more, each worker
/// keeps its own; see the test at the end).
async fn single_route(
    backend: &Backend,
    pool_idle_timeout: Duration,
) -> portcullis::RunningGateway {
    Gateway::new()
        .workers(1)
        .admin()
        .upstream(
            "u",
            Upstream::new(backend)
                .max_in_flight(64)
                .pool_idle_timeout(pool_idle_timeout),
        )
        .route("/", "u")
        .start()
        .await
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    // Bodies of several sizes, up to one that takes many reads to pass through.
    let backend = Backend::start(|request, _| async move {
        let size: usize = request.uri().path()[1..].parse().unwrap_or(0);
        Reply::ok(vec![b'x'; size])
    })
    .await;
    let gw = single_route(&backend, Duration::from_secs(60)).await;
    let client = Client::new();
    for (round, size) in [0, 5, 70_000, 1, 300_000, 2]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let reply = client.get(&url(&gw, &format!("/{size}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "request {round}");
        assert_eq!(reply.body.len(), size, "request {round}");
    }
    assert_eq!(backend.state.connections_opened.load(Ordering::SeqCst), 1);
    let text = metrics_text(&gw).await;
    assert_eq!(metric(&text, &series(OPENED, &backend)), Some(1.0));
}

#[tokio::test]
async fn concurrent_requests_each_get_a_connection_that_later_requests_reuse() {
    const CONCURRENT: usize = 4;
    let backend = Backend::holding().await;
    let gw = single_route(&backend, Duration::from_secs(60)).await;
    let held: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let target = url(&gw, "/held");
            tokio::spawn(async move { Client::new().get(&target).await })
        })
        .collect();
    eventually("every request reaches the backend", async || {
        backend.state.arrived() == CONCURRENT
    })
    .await;
    assert_eq!(
        backend.state.connections_opened.load(Ordering::SeqCst),
        CONCURRENT
    );
    backend.state.release(CONCURRENT);
    for request in held {
        let reply = within("a held request", request).await.expect("joins");
        assert_eq!(reply.status, StatusCode::OK);
    }
    let idle = series(IDLE, &backend);
    crate::support::metric_reaches(&gw, &idle, CONCURRENT as f64).await;
    // Again, all at once: the pooled connections serve them; none is opened.
    let again: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let target = url(&gw, "/again");
            tokio::spawn(async move { Client::new().get(&target).await })
        })
        .collect();
    eventually("the second wave reaches the backend", async || {
        backend.state.arrived() == 2 * CONCURRENT
    })
    .await;
    backend.state.release(CONCURRENT);
    for request in again {
        let reply = within("a second-wave request", request)
            .await
            .expect("joins");
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(
        backend.state.connections_opened.load(Ordering::SeqCst),
        CONCURRENT
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_pool_idle_timeout() {
    let backend = Backend::start(|_, _| async move { Reply::ok("pong") }).await;
    let gw = single_route(&backend, Duration::from_millis(200)).await;
    let client = Client::new();
    assert_eq!(client.get(&url(&gw, "/one")).await.status, StatusCode::OK);
    eventually("the gateway closes its idle connection", async || {
        backend.state.connections_closed.load(Ordering::SeqCst) == 1
    })
    .await;
    crate::support::metric_reaches(&gw, &series(IDLE, &backend), 0.0).await;
    // The next request opens a new connection.
    assert_eq!(client.get(&url(&gw, "/two")).await.status, StatusCode::OK);
    assert_eq!(backend.state.connections_opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_whose_response_was_abandoned_is_not_reused() {
    // `/endless` sends one chunk, then nothing until the backend is dropped.
    let backend = Backend::start(|request, state| async move {
        if request.uri().path() != "/endless" {
            return Reply::ok("fine");
        }
        let (sender, receiver) = mpsc::channel::<Bytes>(1);
        tokio::spawn(async move {
            let _ = sender.send(Bytes::from_static(b"first")).await;
            state.hold().await;
            drop(sender);
        });
        let frames = stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((Ok(hyper::body::Frame::data(chunk)), receiver))
        });
        http::Response::new(StreamBody::new(frames).boxed())
    })
    .await;
    let gw = single_route(&backend, Duration::from_secs(60)).await;
    let request = Request::get(url(&gw, "/endless"))
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("request");
    let response = within("response headers", Client::new().stream(request)).await;
    let mut body = response.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("data");
    assert_eq!(first.data_ref().map(Bytes::as_ref), Some(&b"first"[..]));
    drop(body);
    // The client went away mid-body: that upstream connection is closed, and the next
    // request gets a new one instead of waiting behind the unfinished response.
    eventually("the abandoned upstream connection is closed", async || {
        backend.state.connections_closed.load(Ordering::SeqCst) == 1
    })
    .await;
    let reply = within("the next request", Client::new().get(&url(&gw, "/next"))).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "fine")
    );
    assert_eq!(backend.state.connections_opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_abandoned_before_its_response_keeps_its_connection_for_the_next() {
    // `/held` waits at the backend's gate; the client leaves before it is answered.
    let backend = Backend::start(|request, state| async move {
        if request.uri().path() == "/held" {
            state.hold().await;
        }
        Reply::ok("fine")
    })
    .await;
    let gw = single_route(&backend, Duration::from_secs(60)).await;
    for round in 0..3 {
        let addr = gw.listener_addr("public").expect("listener");
        let mut client = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /held HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .expect("writes");
        eventually("the request reaches the backend", async || {
            backend.state.arrived() == round * 2 + 1
        })
        .await;
        drop(client);
        // The gateway has seen the client go (the request counts as 499).
        metric_reaches(
            &gw,
            "portcullis_http_requests_total{listener=\"public\",method=\"GET\",route=\"u\",status=\"499\"}",
            (round + 1) as f64,
        )
        .await;
        backend.state.release(1);
        // The abandoned response is read and thrown away; the connection goes back to
        // the pool and carries the next request.
        metric_reaches(&gw, &series(IDLE, &backend), 1.0).await;
        let reply = within("the next request", Client::new().get(&url(&gw, "/next"))).await;
        assert_eq!(reply.text(), "fine");
    }
    assert_eq!(backend.state.connections_opened.load(Ordering::SeqCst), 1);
    let salvaged = "portcullis_upstream_connections_salvaged_total{endpoint=\"E\",upstream=\"u\"}";
    let text = metrics_text(&gw).await;
    assert_eq!(metric(&text, &series(salvaged, &backend)), Some(3.0));
}
