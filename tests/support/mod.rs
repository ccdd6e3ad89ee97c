//! The test harness: backends that record and hold requests, clients (plain, TLS,
//! HTTP/2 frame by frame), a test CA, a real `redis-server`, a real Prometheus, and the gateway described by a builder
//! ([`Gateway`]) and started on ephemeral ports.

#![allow(dead_code)]

pub mod backend;
pub mod browser;
pub mod chromium;
pub mod client;
pub mod gateway;
pub mod h2;
pub mod idp;
pub mod otlp;
pub mod pki;
pub mod prometheus;
pub mod redis;
pub mod tls;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use portcullis::{Config, RunningGateway};

pub use backend::{Backend, Reply};
pub use client::Client;
pub use gateway::{
    Aggregate, Call, ClientAuth, Endpoint, Gateway, HealthCheck, HostHeader, Listener, Outlier,
    Protocol, Retry, Route, Tls, Underscores, Upstream, UpstreamTls, WebSocket, WorkerModel,
};

/// Starts a gateway from the whole text of a configuration (listeners and the admin
/// listener should use port 0). Tests describe their gateway with [`Gateway`]; this is
/// for the few whose subject is the text itself.
pub async fn gateway_from_yaml(yaml: &str) -> RunningGateway {
    let config = Config::from_yaml(yaml, "test.yaml")
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n{yaml}"));
    portcullis::start(config).await.expect("gateway starts")
}

/// A gateway whose one route (`app`) sends every path to `endpoint`.
pub async fn gateway_in_front_of(endpoint: impl Endpoint) -> RunningGateway {
    Gateway::new()
        .upstream("app", Upstream::new(endpoint))
        .route("/", "app")
        .start()
        .await
}

/// Replaces a file's contents in one step (a new file renamed over it), as editors and
/// deployment tools do.
pub fn replace_file(path: &Path, contents: &str) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, contents).expect("writes");
    std::fs::rename(&staging, path).expect("renames");
}

/// Writes `text` to `file` and starts a gateway that reloads its configuration from it.
pub async fn reloadable_from_file(file: &Path, text: &str) -> RunningGateway {
    replace_file(file, text);
    let config = Config::load(file).unwrap_or_else(|e| panic!("{e}\n{text}"));
    portcullis::gateway::start_reloadable(
        config,
        file.to_owned(),
        portcullis::reload::content_hash(text),
    )
    .await
    .expect("starts")
}

/// The base URL of the gateway's `public` listener.
pub fn url(gateway: &RunningGateway, path: &str) -> String {
    format!(
        "http://{}{}",
        gateway.listener_addr("public").expect("listener `public`"),
        path
    )
}

/// Polls `condition` until it holds; fails the test after 10 s. This is a deadline for
/// a condition that must come true, never a timing assertion. The condition may await
/// (a metrics scrape, a connection attempt): `eventually("…", async || …)`. It is a
/// closure returning a future, not `AsyncFnMut`, so that a spawned task may call this
/// (an `AsyncFnMut` future is not `Send` there); the closure therefore reads what it
/// captures and assigns nothing.
pub async fn eventually<F, Condition>(what: &str, mut condition: Condition)
where
    Condition: FnMut() -> F,
    F: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut polls = 0u32;
    while !within(what, condition()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        // Most conditions come true within milliseconds: look often at first.
        polls += 1;
        let pause = if polls < 50 { 1 } else { 5 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Awaits `future`, failing the test after 10 s instead of hanging.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The admin listener's `/metrics` text.
pub async fn metrics_text(gateway: &RunningGateway) -> String {
    Client::new()
        .get(&format!(
            "http://{}/metrics",
            gateway.admin_addr().expect("an admin listener")
        ))
        .await
        .text()
}

/// The value of one sample line of a metrics text, e.g.
/// `metric(&text, "portcullis_upstream_in_flight{upstream=\"a\"}")`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Waits until the metric `series` has `value` in the admin listener's `/metrics`.
pub async fn metric_reaches(gateway: &RunningGateway, series: &str, value: f64) {
    eventually(&format!("{series} reaches {value}"), async || {
        metric(&metrics_text(gateway).await, series) == Some(value)
    })
    .await;
}

/// A port for a listener that a test binds later (after a reload, say). It is below the
/// kernel's ephemeral range (32768-60999 by default), so the client connections that
/// other tests open meanwhile cannot take it as their source port, as a port from
/// `bind(0)` can.
pub fn port_to_listen_on_later() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PICKED: AtomicU32 = AtomicU32::new(0);
    for _ in 0..1000 {
        let n = PICKED.fetch_add(1, Ordering::Relaxed);
        let offset = (std::process::id().wrapping_mul(97) ^ n.wrapping_mul(7919)) % 12_000;
        let port = 20_000 + u16::try_from(offset).expect("below 12,000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 31999");
}

/// An address on which nothing listens.
pub fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}
