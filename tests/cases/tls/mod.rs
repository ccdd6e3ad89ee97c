//! Downstream TLS, by subject: HTTPS served end to end with a real rustls client
//! (`serving`), certificates chosen by SNI (`sni`), failed handshakes counted without
//! disturbing the listener (`handshakes`), client certificates (`mtls`), certificate
//! reload (`reload`), and certificate problems reported as configuration errors
//! (`config`). h2c on plain listeners is in `cases::h2c`; the client side of TLS and
//! the test CA are in `support::{tls, pki}`.
//!
//! Certificates are generated per test with rcgen into a temporary directory.

mod config;
mod handshakes;
mod mtls;
mod reload;
mod serving;
mod sni;

use std::net::SocketAddr;

use portcullis::RunningGateway;

use crate::support::{Backend, Gateway, Listener, Tls};

/// A gateway whose listener `public` has `tls`, with the admin listener, in front of
/// `backend`.
async fn tls_gateway(tls: Tls, backend: &Backend) -> RunningGateway {
    Gateway::new()
        .listener(Listener::public().tls(tls))
        .admin()
        .upstream("app", backend)
        .route("/", "app")
        .start()
        .await
}

fn public(gw: &RunningGateway) -> SocketAddr {
    gw.listener_addr("public").expect("listener `public`")
}

fn failures(reason: &str) -> String {
    format!("portcullis_tls_handshake_failures_total{{listener=\"public\",reason=\"{reason}\"}}")
}
