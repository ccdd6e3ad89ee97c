//! A TLS client for the gateway's listeners: rustls client configurations (trusting a
//! [`Pki`], presenting a client certificate, or accepting any certificate), the
//! handshake, and which certificate the server sent.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis::tls::AcceptAnyCertificate;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::pki::{provider, Issued, Pki};
use super::within;

/// A client trusting `roots`, offering `alpn`.
pub fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A client trusting `pki`'s CA that presents `issued` as its certificate (mTLS).
pub fn client_with_certificate(pki: &Pki, issued: &Issued) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(pki.roots())
        .with_client_auth_cert(vec![issued.der.clone()], issued.key())
        .expect("client certificate")
}

/// A client that accepts whatever certificate the server sends.
pub fn accept_any_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(provider())))
        .with_no_client_auth()
}

/// Connects to `addr` and shakes hands, asking for `server_name`.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).expect("valid server name");
    within(
        "the TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
}

/// The DNS names and common name of the certificate the server sent.
pub fn served_certificate(stream: &TlsStream<TcpStream>) -> (Vec<String>, String) {
    let (_, connection) = stream.get_ref();
    let der = &connection.peer_certificates().expect("server certificate")[0];
    let (_, certificate) = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509");
    let names = certificate
        .subject_alternative_name()
        .expect("valid extensions")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    (names, common_name)
}
