//! Client certificates (mTLS): required or optional, checked against `client_ca`, and
//! refusals counted.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;

use super::{failures, public, tls_gateway};
use crate::support::pki::Pki;
use crate::support::tls::{client_config, client_with_certificate, connect};
use crate::support::{metric_reaches, metrics_text, within, Backend, ClientAuth, Tls};

/// Sends one request; `None` when the connection fails at any point (with TLS 1.3 a
/// refused client certificate shows only after the client's handshake completed).
async fn try_get(addr: SocketAddr, config: ClientConfig) -> Option<StatusCode> {
    let stream = connect(addr, "api.example.com", config).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get("/")
        .header(http::header::HOST, "api.example.com")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = within("an answer or an error", sender.send_request(request))
        .await
        .ok()?;
    Some(response.status())
}

#[tokio::test]
async fn client_certificates_are_required_and_checked_when_client_ca_is_set() {
    let pki = Pki::new("Test CA");
    let clients = Pki::new("Client CA");
    let strangers = Pki::new("Stranger CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let client_ca = clients.write_ca();
    let backend = Backend::echo().await;
    let gw = tls_gateway(
        Tls::certificate(&cert, &key)
            .client_ca(&client_ca)
            .client_auth(ClientAuth::Required),
        &backend,
    )
    .await;
    let addr = public(&gw);

    let trusted = clients.issue(&["client-1"]);
    assert_eq!(
        try_get(addr, client_with_certificate(&pki, &trusted)).await,
        Some(StatusCode::OK)
    );
    assert_eq!(
        try_get(addr, client_config(pki.roots(), &[])).await,
        None,
        "no client certificate"
    );
    metric_reaches(&gw, &failures("client_certificate"), 1.0).await;
    let untrusted = strangers.issue(&["client-2"]);
    assert_eq!(
        try_get(addr, client_with_certificate(&pki, &untrusted)).await,
        None,
        "a client certificate from another CA"
    );
    metric_reaches(&gw, &failures("client_certificate"), 2.0).await;
    assert_eq!(backend.state.arrived(), 1);
    crate::cases::metrics::promtool_accepts(&metrics_text(&gw).await);
}

#[tokio::test]
async fn optional_client_certificates_let_clients_without_one_in() {
    let pki = Pki::new("Test CA");
    let clients = Pki::new("Client CA");
    let strangers = Pki::new("Stranger CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let client_ca = clients.write_ca();
    let backend = Backend::echo().await;
    let gw = tls_gateway(
        Tls::certificate(&cert, &key)
            .client_ca(&client_ca)
            .client_auth(ClientAuth::Optional),
        &backend,
    )
    .await;
    let addr = public(&gw);
    assert_eq!(
        try_get(addr, client_config(pki.roots(), &[])).await,
        Some(StatusCode::OK)
    );
    let trusted = clients.issue(&["client-1"]);
    assert_eq!(
        try_get(addr, client_with_certificate(&pki, &trusted)).await,
        Some(StatusCode::OK)
    );
    let untrusted = strangers.issue(&["client-2"]);
    assert_eq!(
        try_get(addr, client_with_certificate(&pki, &untrusted)).await,
        None,
        "a certificate that is presented must verify"
    );
}
