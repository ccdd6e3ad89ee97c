//! Portcullis: an async API gateway and reverse proxy.
//!
//! # Layout
//! Modules follow a request's path through the gateway:
//!
//! - [`config`]: `gateway.yaml` → a validated, compiled [`config::Config`];
//! - [`gateway`]: start, serve and shut down; [`snapshot`]: a config compiled for
//!   serving, swapped atomically; [`reload`]: hot reload of the file;
//! - [`server`]: listeners, accept loop, connection limits, TLS ([`server::tls`]),
//!   the gateway's own HTTP/1.1 server ([`server::http1`]; hyper's for HTTP/2),
//!   graceful drain;
//! - [`http1`]: the HTTP/1.1 codec both the server and the upstream client use (heads,
//!   body framing, trailers), a leaf; [`interim`]: `103 Early Hints` passed from the
//!   upstream client to the client's connection;
//! - [`routing`]: the route table (host, path, method, headers) and path rewrites;
//! - [`proxy`]: forwarding a request: admit, route, limit, send, stream back; WebSocket
//!   upgrades tunnelled after the upstream's 101 ([`proxy::websocket`]);
//! - [`aggregate`]: routes that fan out to several upstreams and merge their JSON;
//! - [`upstream`]: pooled clients (the gateway's own HTTP/1.1 client run in the request's
//!   task, hyper's for HTTP/2; plain or TLS), load balancing,
//!   per-upstream concurrency limits;
//! - [`body`]: streaming bodies both ways ([`rewound`]: a stream with bytes put back);
//!   [`metrics`] and [`admin`]: observability;
//! - [`workers`]: one single-threaded runtime per core (`worker_model: per_core`);
//! - [`demo`]: sample services for `portcullis demo`.

pub mod admin;
pub mod aggregate;
pub mod body;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod http1;
pub mod interim;
pub mod io;
pub mod listeners;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod request_id;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod template;
pub mod tls;
pub mod upstream;
pub mod workers;

pub use config::Config;
pub use gateway::{run, start, RunningGateway, StartError};

/// Raises the open-files soft limit to the hard limit, so the gateway can hold as many
/// connections as the system allows. Returns the new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
