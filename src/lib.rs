//! Portcullis: an async API gateway and reverse proxy.
//!
//! # Layout
//! Modules depend one way; `tests/cases/layers.rs` holds the table of allowed imports
//! and fails on any other (`cargo test --test tests layers -- --nocapture` prints the
//! graph).
//!
//! - Leaves, used from anywhere and using nothing above them: [`shutdown`] (the drain
//!   signal), [`io`] (rewound streams, the two ends of a protocol switch), [`http1`]
//!   (the HTTP/1.1 codec), [`body`] (the client's request body and the shared body
//!   errors), [`tls`] (provider, certificates, the listener's acceptor, the upstream's
//!   client settings), [`metrics`], [`interim`] (`103 Early Hints` passed from the
//!   upstream client to the client's connection), [`request_id`], [`template`] (the
//!   placeholder tokenizer), [`routing`] (the route table and path rewrites), [`workers`]
//!   (one single-threaded runtime per core), [`upgrade`] (listening sockets handed to a new
//!   process in a binary upgrade), [`trace`] (W3C trace context, spans, their OTLP/HTTP
//!   export);
//! - [`config`]: `gateway.yaml` → a validated, compiled [`config::Config`]; imports no
//!   runtime module;
//! - [`access_log`]: one JSON line per request, formatted as the request goes and
//!   written by a thread per destination behind a bounded queue; imports `config` and
//!   `metrics`, used down the request path;
//! - down the request path: [`server`] (listeners' connections, their PROXY protocol
//!   headers, the gateway's own HTTP/1.1 server, hyper's for HTTP/2, graceful drain) → [`proxy`] (the phases: admit,
//!   route, the policy step, limit, send, stream back; the one error-to-response mapping
//!   in [`proxy::respond`]; the configuration [`proxy::Snapshot`] a request runs with) →
//!   [`policy`] (the per-route policy step: client address, IP lists, forwarding
//!   headers) and [`aggregate`] (routes that fan out and merge JSON) → [`upstream`]
//!   (pooled clients, balancing, health, per-upstream limits, the bodies of an
//!   exchange);
//! - running it: [`listeners`], [`reload`] (hot reload), [`admin`], [`gateway`] (start,
//!   serve, shut down); [`demo`]: sample services for `portcullis demo`.

pub mod access_log;
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
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod request_id;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod template;
pub mod tls;
pub mod trace;
pub mod upgrade;
pub mod upstream;
pub mod workers;

pub use config::Config;
pub use gateway::{run, start, RunningGateway, StartError};

/// Raises the open-files soft limit to the hard limit, so the gateway can hold as many
/// connections as the system allows. Returns the new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
