//! `workers: N` with `worker_model: per_core`: a listener accepts on one socket per
//! worker, connections spread over the workers, each worker keeps its own idle upstream
//! connections, and a shutdown drains every worker.

use std::sync::atomic::Ordering;

use http::StatusCode;

use crate::support::{
    eventually, metric, metrics_text, url, within, Backend, Client, Gateway, Reply, Upstream,
    WorkerModel,
};

async fn two_workers(backend: &Backend) -> portcullis::RunningGateway {
    Gateway::new()
        .workers(2)
        .worker_model(WorkerModel::PerCore)
        .shutdown_timeout(std::time::Duration::from_secs(30))
        .admin()
        .upstream("u", Upstream::new(backend).max_in_flight(64))
        .route("/", "u")
        .start()
        .await
}

fn accepted_by(text: &str, worker: usize) -> f64 {
    metric(
        text,
        &format!("portcullis_worker_connections_total{{worker=\"{worker}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn connections_spread_over_the_workers_and_each_reuses_its_upstream_connections() {
    const CONNECTIONS: usize = 40;
    let backend = Backend::start(|_, _| async move { Reply::ok("pong") }).await;
    let gw = two_workers(&backend).await;
    // One request per client connection, one after another.
    for _ in 0..CONNECTIONS {
        let reply = Client::new()
            .send(
                http::Method::GET,
                &url(&gw, "/x"),
                &[("connection", "close")],
                "",
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "pong");
    }
    let text = metrics_text(&gw).await;
    let (first, second) = (accepted_by(&text, 0), accepted_by(&text, 1));
    assert_eq!(first + second, CONNECTIONS as f64, "{text}");
    // The kernel spreads connections by a hash of their addresses: 40 connections all
    // on one worker would happen about once in 2^39 runs.
    assert!(
        first > 0.0 && second > 0.0,
        "both workers accept: {first} and {second}"
    );
    // Requests come one at a time, so each worker needs at most one upstream
    // connection, which it keeps for its next request.
    let opened = backend.state.connections_opened.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&opened),
        "{opened} upstream connections for {CONNECTIONS} sequential requests"
    );
}

#[tokio::test]
async fn shutdown_lets_requests_on_every_worker_finish() {
    const CONNECTIONS: usize = 24;
    let held = Backend::holding().await;
    let gw = two_workers(&held).await;
    let target = url(&gw, "/held");
    let admin = gw.admin_addr().expect("admin");
    let public = gw.listener_addr("public").expect("listener");
    let in_flight: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { Client::new().get(&target).await })
        })
        .collect();
    eventually("every request reaches the backend", async || {
        held.state.arrived() == CONNECTIONS
    })
    .await;
    let text = Client::new()
        .get(&format!("http://{admin}/metrics"))
        .await
        .text();
    assert!(
        accepted_by(&text, 0) > 0.0 && accepted_by(&text, 1) > 0.0,
        "requests are in flight on both workers (24 connections on one worker: about \
         once in 2^23 runs)"
    );
    let shutdown = tokio::spawn(gw.shutdown());
    // Draining has begun on every worker once the listener refuses new connections.
    eventually("new connections are refused", async || {
        std::net::TcpStream::connect(public).is_err()
    })
    .await;
    held.state.release(CONNECTIONS);
    for request in in_flight {
        let reply = within("an in-flight request", request)
            .await
            .expect("joins");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "released");
    }
    within("the shutdown", shutdown).await.expect("joins");
}
