//! HTTP/2 with prior knowledge (h2c) on plain listeners: the gateway tells it from
//! HTTP/1.1 by the connection's first bytes, however they are split.

use http::{StatusCode, Version};
use tokio::net::TcpStream;

use crate::support::client::{get_http2, FirstBytesAlone};
use crate::support::{gateway_in_front_of, Backend};

#[tokio::test]
async fn h2c_is_served_when_the_preface_arrives_in_pieces() {
    let backend = Backend::echo_version().await;
    let gw = gateway_in_front_of(&backend).await;
    let tcp = TcpStream::connect(gw.listener_addr("public").expect("listener"))
        .await
        .expect("connects");
    // `PRI * HTTP` alone: a strict prefix of the preface, which could still begin an
    // HTTP/1.1 request. The gateway reads it before the rest is written.
    let split = FirstBytesAlone::new(tcp, 10);
    let (version, status, body) = get_http2(split, "http", "example.com", "/x").await;
    assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));
    assert_eq!(body, "HTTP/1.1");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_on_a_plain_listener() {
    let backend = Backend::echo_version().await;
    let gw = gateway_in_front_of(&backend).await;
    let tcp = TcpStream::connect(gw.listener_addr("public").expect("listener"))
        .await
        .expect("connects");
    let (version, status, body) = get_http2(tcp, "http", "example.com", "/x").await;
    assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));
    assert_eq!(body, "HTTP/1.1");
    assert_eq!(
        backend
            .state
            .last_seen()
            .headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("http")
    );
}
