//! The test harness: backends that record and hold requests, a client, and a gateway
//! started from YAML with backend addresses filled in.

#![allow(dead_code)]

pub mod backend;
pub mod client;
pub mod h2;
pub mod pki;

use std::future::Future;
use std::time::Duration;

use portcullis::{Config, RunningGateway};

pub use backend::{Backend, Reply};
pub use client::Client;

/// Starts a gateway from `yaml` (listener `public` and the admin listener should use
/// port 0).
pub async fn gateway(yaml: &str) -> RunningGateway {
    let config = Config::from_yaml(yaml, "test.yaml")
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
    portcullis::start(config).await.expect("gateway starts")
}

/// A gateway whose one route (`app`) sends every path to the endpoint at `url`.
pub async fn gateway_in_front_of(url: &str) -> RunningGateway {
    gateway(&format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams:
  app: {{ endpoints: ["{url}"] }}
routes:
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#
    ))
    .await
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
/// a condition that must come true, never a timing assertion.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
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
    within(&format!("{series} reaches {value}"), async {
        loop {
            if metric(&metrics_text(gateway).await, series) == Some(value) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
