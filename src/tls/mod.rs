//! TLS, a leaf both the configuration and the server use: the crypto provider, the
//! certificates and keys read and checked when a configuration loads and again when
//! their files change ([`certificates`]), the server side of a listener (SNI choice,
//! handshake, certificate reload: [`acceptor`]), and the client side of an upstream
//! (roots, server name, client certificate: [`upstream`]).

pub mod acceptor;
pub mod certificates;
pub mod upstream;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use acceptor::{CertificateWatcher, TlsListener};
pub use certificates::{
    client_verifier, covers, host_pattern_text, CertificateConfig, CertificateFile,
    CertificateFiles, ClientAuth, ClientAuthMode, ListenerTls,
};
pub use upstream::{
    describe_certificate_error, verify_failure, AcceptAnyCertificate, UpstreamTls, UpstreamTlsFiles,
};

/// The crypto provider of every TLS configuration in Portcullis: *ring*. It is passed to
/// each rustls builder explicitly, so no process-wide default is needed or assumed.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
