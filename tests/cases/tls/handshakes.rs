//! Handshakes that fail (plain HTTP on the TLS port, a client that does not trust the
//! certificate, one that never finishes) are counted and closed without holding up the
//! listener; a client idle after its handshake is closed after the idle timeout.

use std::time::Duration;

use http::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{failures, public, tls_gateway};
use crate::support::client::get_http1;
use crate::support::pki::Pki;
use crate::support::tls::{client_config, connect};
use crate::support::{metric_reaches, within, Backend, Gateway, Listener, Tls};

#[tokio::test]
async fn plain_http_on_the_tls_port_is_a_counted_failure_and_the_listener_goes_on() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(Tls::certificate(&cert, &key), &backend).await;

    let answer = crate::support::client::raw_exchange(
        public(&gw),
        b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
        "\u{0}never",
    )
    .await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
    metric_reaches(&gw, &failures("not_tls"), 1.0).await;

    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[]),
    )
    .await
    .expect("the listener still serves TLS");
    let (_, status, _) = get_http1(stream, "api.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_counted() {
    let pki = Pki::new("Test CA");
    let stranger = Pki::new("Another CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(Tls::certificate(&cert, &key), &backend).await;

    let refused = connect(
        public(&gw),
        "api.example.com",
        client_config(stranger.roots(), &[]),
    )
    .await;
    assert!(refused.is_err(), "the client must refuse an unknown issuer");
    metric_reaches(&gw, &failures("certificate_rejected"), 1.0).await;

    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[]),
    )
    .await
    .expect("a trusting client still gets in");
    let (_, status, _) = get_http1(stream, "api.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(backend.state.arrived(), 1);
}

#[tokio::test]
async fn silent_clients_do_not_hold_up_other_handshakes() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(
        Tls::certificate(&cert, &key).handshake_timeout(Duration::from_secs(3600)),
        &backend,
    )
    .await;
    // Connections that never send a ClientHello, accepted before the real client.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(public(&gw)).await.expect("connects"));
    }
    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[]),
    )
    .await
    .expect("handshake while others stall");
    let (_, status, _) = get_http1(stream, "api.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);
    metric_reaches(
        &gw,
        "portcullis_connections_active{listener=\"public\"}",
        8.0,
    )
    .await;
}

#[tokio::test]
async fn a_handshake_that_does_not_finish_in_time_is_closed_and_counted() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(
        Tls::certificate(&cert, &key).handshake_timeout(Duration::from_millis(50)),
        &backend,
    )
    .await;
    let mut silent = TcpStream::connect(public(&gw)).await.expect("connects");
    let mut buffer = [0u8; 64];
    let read = within(
        "the gateway closes the silent connection",
        silent.read(&mut buffer),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    metric_reaches(&gw, &failures("timeout"), 1.0).await;
}

#[tokio::test]
async fn a_client_that_sends_nothing_after_the_handshake_is_closed_after_the_idle_timeout() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .listener(
            Listener::public()
                .idle_timeout(Duration::from_millis(100))
                .tls(Tls::certificate(&cert, &key)),
        )
        .upstream("app", &backend)
        .route("/", "app")
        .start()
        .await;
    let mut stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[]),
    )
    .await
    .expect("handshake");
    let mut buffer = [0u8; 64];
    let read = within(
        "the gateway closes the idle TLS connection",
        stream.read(&mut buffer),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
