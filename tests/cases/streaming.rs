//! Bodies stream through both ways: the gateway forwards the first bytes before the
//! last exist, so memory stays flat whatever the size. Size limits cut off what is
//! too large.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;

use crate::support::backend::{drain_body, Body};
use crate::support::client::raw_exchange;
use crate::support::{eventually, url, within, Backend, Client, Gateway, Listener, Reply};

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 64;

async fn single_route(backend: &Backend, listener: Listener) -> portcullis::RunningGateway {
    Gateway::new()
        .listener(listener)
        .upstream("u", backend)
        .route("/", "u")
        .start()
        .await
}

fn channel_body(receiver: mpsc::Receiver<Bytes>) -> Body {
    let frames = stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Frame::data(chunk)), receiver))
    });
    StreamBody::new(frames).boxed()
}

#[tokio::test]
async fn a_large_upload_streams_to_the_upstream_as_it_arrives() {
    let backend = Backend::start(|request, state| async move {
        let total = drain_body(request, &state).await;
        Reply::ok(total.to_string())
    })
    .await;
    let gw = single_route(&backend, Listener::public()).await;
    let (sender, receiver) = mpsc::channel(1);
    let request = Request::builder()
        .method(Method::POST)
        .uri(url(&gw, "/upload"))
        .body(channel_body(receiver))
        .expect("request");
    let client = Client::new();
    let response = tokio::spawn(async move { client.request(request).await });

    sender
        .send(Bytes::from(vec![7u8; CHUNK]))
        .await
        .expect("first chunk");
    // The upstream sees the first megabyte while the client has not sent the rest.
    eventually("the first chunk reaches the upstream", async || {
        backend.state.body_bytes.load(Ordering::SeqCst) == CHUNK
    })
    .await;
    for _ in 1..CHUNKS {
        sender
            .send(Bytes::from(vec![7u8; CHUNK]))
            .await
            .expect("chunk");
    }
    drop(sender);
    let reply = within("the upload's answer", response)
        .await
        .expect("joins");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), (CHUNK * CHUNKS).to_string());
}

#[tokio::test]
async fn a_large_download_streams_to_the_client_as_it_arrives() {
    let backend = Backend::start(|_, state| async move {
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            let _ = sender.send(Bytes::from(vec![1u8; CHUNK])).await;
            state.hold().await;
            for _ in 1..CHUNKS {
                if sender.send(Bytes::from(vec![1u8; CHUNK])).await.is_err() {
                    return;
                }
            }
        });
        http::Response::new(channel_body(receiver))
    })
    .await;
    let gw = single_route(&backend, Listener::public()).await;
    let request = Request::builder()
        .uri(url(&gw, "/download"))
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("request");
    let response = within("response headers", Client::new().stream(request)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0;
    while received < CHUNK {
        let frame = within("the first chunk", body.frame())
            .await
            .expect("a frame")
            .expect("data");
        received += frame.data_ref().map_or(0, Bytes::len);
    }
    // The client holds the first megabyte; the upstream has not produced the rest yet.
    assert_eq!(received, CHUNK);
    backend.state.release(1);
    while let Some(frame) = within("the rest", body.frame()).await {
        received += frame.expect("data").data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(received, CHUNK * CHUNKS);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let backend = Backend::start(|request, state| async move {
        let total = drain_body(request, &state).await;
        Reply::ok(total.to_string())
    })
    .await;
    let gw = single_route(&backend, Listener::public().max_request_body(1 << 20)).await;
    let client = Client::new();

    // Declared too large: refused before anything is sent upstream.
    let declared = client
        .send(Method::POST, &url(&gw, "/x"), &[], vec![0u8; 2 * CHUNK])
        .await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(declared.json()["error"], "body_too_large");
    assert_eq!(backend.state.arrived(), 0);

    // Chunked, no length: cut off once the limit is crossed.
    let (sender, receiver) = mpsc::channel(4);
    let request = Request::builder()
        .method(Method::POST)
        .uri(url(&gw, "/x"))
        .body(channel_body(receiver))
        .expect("request");
    let sending = tokio::spawn(async move {
        for _ in 0..4 {
            if sender
                .send(Bytes::from(vec![0u8; CHUNK / 2]))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let streamed = within("the 413", client.request(request)).await;
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
    sending.abort();

    // Within the limit: passes.
    let fits = client
        .send(Method::POST, &url(&gw, "/x"), &[], vec![0u8; CHUNK])
        .await;
    assert_eq!(fits.status, StatusCode::OK);
    assert_eq!(fits.text(), CHUNK.to_string());
}

#[tokio::test]
async fn oversized_heads_get_431_and_414() {
    let backend = Backend::echo().await;
    let gw = single_route(
        &backend,
        Listener::public()
            .max_headers(20)
            .max_header_size(16 * 1024)
            .max_uri_length(1024),
    )
    .await;
    let addr = gw.listener_addr("public").expect("listener");

    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let reply = raw_exchange(addr, big_header.as_bytes(), "\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = raw_exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        "\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "u".repeat(2000)
    );
    let reply = raw_exchange(addr, long_uri.as_bytes(), "}").await;
    assert!(reply.starts_with("HTTP/1.1 414"), "{reply}");
    assert!(reply.contains("uri_too_long"), "{reply}");
    assert_eq!(backend.state.arrived(), 0);
    let _ = Arc::clone(&backend.state);
}
