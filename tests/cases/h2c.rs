//! HTTP/2 with prior knowledge (h2c) on plain listeners: the gateway tells it from
//! HTTP/1.1 by the connection's first bytes, however they are split.

use std::time::Duration;

use http::{StatusCode, Version};
use tokio::net::TcpStream;

use crate::support::client::get_http2;
use crate::support::{gateway_in_front_of, Backend};

/// Writes its first `first` bytes alone, then the rest once `pause` has passed: the
/// gateway may see a prefix of the HTTP/2 preface before the rest of it.
struct SplitFirstWrite {
    inner: TcpStream,
    first: usize,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio::io::AsyncRead for SplitFirstWrite {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SplitFirstWrite {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.first > 0 {
            let n = buf.len().min(self.first);
            let written =
                std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_write(cx, &buf[..n]))?;
            self.first -= written;
            if self.first == 0 {
                self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
            }
            return std::task::Poll::Ready(Ok(written));
        }
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(std::future::Future::poll(pause.as_mut(), cx));
            self.pause = None;
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn h2c_is_served_when_the_preface_arrives_in_pieces() {
    let backend = Backend::echo_version().await;
    let gw = gateway_in_front_of(&backend).await;
    let tcp = TcpStream::connect(gw.listener_addr("public").expect("listener"))
        .await
        .expect("connects");
    let split = SplitFirstWrite {
        inner: tcp,
        first: 10,
        pause: None,
    };
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
