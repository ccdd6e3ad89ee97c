//! HTTP/2 to upstreams (`protocol: http2 | auto`): cleartext h2c with prior knowledge,
//! ALPN `h2` over TLS, requests multiplexed over one connection; and gRPC carried end to
//! end over HTTP/2 on both sides, with messages streamed and trailers intact.
//!
//! The gRPC services are hand-rolled on hyper's HTTP/2 (5-byte length-prefixed
//! messages, `grpc-status` trailers) rather than tonic: what the gateway must get right
//! is HTTP/2 framing, streaming and trailers, and this keeps the test build small.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::RunningGateway;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::backend::{Body, State};
use crate::support::pki::Pki;
use crate::support::{
    url, within, Backend, Client, Gateway, Protocol, Reply, Upstream, UpstreamTls,
};

/// One worker: hyper's HTTP/2 client pool is shared by the workers, and two workers'
/// first requests can each open a connection before either handshake has finished.
async fn upstream_gateway(upstream: Upstream) -> RunningGateway {
    Gateway::new()
        .workers(1)
        .upstream("app", upstream)
        .route("/", "app")
        .start()
        .await
}

#[tokio::test]
async fn http2_upstreams_get_h2c_with_prior_knowledge_over_one_connection() {
    let backend = Backend::echo_version().await;
    let gw = upstream_gateway(Upstream::new(&backend).protocol(Protocol::Http2)).await;
    let client = Client::new();
    let replies = futures_util::future::join_all((0..8).map(|i| {
        let client = client.clone();
        let url = url(&gw, &format!("/r{i}"));
        async move { client.get(&url).await }
    }))
    .await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), "HTTP/2.0");
    }
    assert!(backend
        .state
        .seen
        .lock()
        .expect("lock")
        .iter()
        .all(|seen| seen.version == Version::HTTP_2));
    assert_eq!(backend.state.connections_opened.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http1_stays_the_default_for_cleartext_upstreams() {
    let backend = Backend::echo_version().await;
    for protocol in [None, Some(Protocol::Auto), Some(Protocol::Http1)] {
        let upstream = Upstream::new(&backend);
        let upstream = match protocol {
            Some(protocol) => upstream.protocol(protocol),
            None => upstream,
        };
        let gw = upstream_gateway(upstream).await;
        let reply = Client::new().get(&url(&gw, "/")).await;
        assert_eq!(reply.text(), "HTTP/1.1", "with protocol {protocol:?}");
    }
}

#[tokio::test]
async fn tls_upstreams_negotiate_http2_by_alpn() {
    let pki = Pki::new("upstream CA");
    let ca = pki.write_ca();
    let backend = Backend::start_tls(
        pki.server_config(&["127.0.0.1"], &[b"h2", b"http/1.1"], false),
        |request, _| async move { Reply::ok(format!("{:?}", request.version())) },
    )
    .await;
    for (protocol, expected) in [
        (Protocol::Http2, "HTTP/2.0"),
        (Protocol::Auto, "HTTP/2.0"),
        (Protocol::Http1, "HTTP/1.1"),
    ] {
        let gw = upstream_gateway(
            Upstream::new(backend.https_url())
                .protocol(protocol)
                .tls(UpstreamTls::ca(&ca)),
        )
        .await;
        let reply = Client::new().get(&url(&gw, "/")).await;
        assert_eq!(reply.status, StatusCode::OK, "{protocol}: {}", reply.text());
        assert_eq!(reply.text(), expected, "protocol: {protocol}");
    }

    // An endpoint that only speaks HTTP/1.1 still serves `auto`.
    let http1_only = Backend::start_tls(
        pki.server_config(&["127.0.0.1"], &[b"http/1.1"], false),
        |request, _| async move { Reply::ok(format!("{:?}", request.version())) },
    )
    .await;
    let gw = upstream_gateway(
        Upstream::new(http1_only.https_url())
            .protocol(Protocol::Auto)
            .tls(UpstreamTls::ca(&ca)),
    )
    .await;
    assert_eq!(Client::new().get(&url(&gw, "/")).await.text(), "HTTP/1.1");
}

// ---------------------------------------------------------------------------------------
// gRPC

/// One gRPC message: uncompressed flag, big-endian length, payload.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + payload.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(payload.len()).expect("small"));
    framed.put_slice(payload);
    framed.freeze()
}

/// The payloads of the gRPC messages in `data`.
fn grpc_messages(mut data: &[u8]) -> Vec<String> {
    let mut messages = Vec::new();
    while data.len() >= 5 {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        messages.push(String::from_utf8_lossy(&data[5..5 + len]).into_owned());
        data = &data[5 + len..];
    }
    messages
}

fn trailers(status: u32, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "grpc-status",
        HeaderValue::from_str(&status.to_string()).expect("digits"),
    );
    trailers.insert(
        "grpc-message",
        HeaderValue::from_str(message).expect("ascii"),
    );
    trailers.insert("x-trailer", HeaderValue::from_static("kept"));
    trailers
}

fn grpc_response(frames: mpsc::Receiver<Frame<Bytes>>) -> http::Response<Body> {
    let body = StreamBody::new(stream::unfold(frames, |mut frames| async move {
        frames.recv().await.map(|frame| (Ok(frame), frames))
    }));
    let mut response = http::Response::new(BodyExt::boxed(body));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

/// `/echo.Echo/Unary` answers one message; `/echo.Echo/Count` streams three, holding
/// at the backend's gate before the second; `/echo.Echo/Missing` fails with status 5.
async fn grpc_backend() -> Backend {
    Backend::start(|request: Request<Incoming>, state: Arc<State>| async move {
        let path = request.uri().path().to_owned();
        let te = request.headers().get("te").cloned();
        let body = request
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let input = grpc_messages(&body).join(",");
        let (sender, frames) = mpsc::channel(4);
        tokio::spawn(async move {
            match path.as_str() {
                "/echo.Echo/Unary" => {
                    let te = te.map(|v| v.to_str().unwrap_or("").to_owned());
                    let reply = format!("echo {input} te={}", te.unwrap_or_default());
                    let _ = sender
                        .send(Frame::data(grpc_message(reply.as_bytes())))
                        .await;
                    let _ = sender.send(Frame::trailers(trailers(0, "ok"))).await;
                }
                "/echo.Echo/Count" => {
                    for i in 1..=3 {
                        if i == 2 {
                            state.hold().await;
                        }
                        let message = format!("{input} {i}");
                        let _ = sender
                            .send(Frame::data(grpc_message(message.as_bytes())))
                            .await;
                    }
                    let _ = sender.send(Frame::trailers(trailers(0, "done"))).await;
                }
                _ => {
                    let _ = sender
                        .send(Frame::trailers(trailers(5, "no such method")))
                        .await;
                }
            }
        });
        grpc_response(frames)
    })
    .await
}

/// An HTTP/2 (prior knowledge) connection to the gateway.
async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connects");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

async fn grpc_call(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    gw: &RunningGateway,
    method: &str,
    message: &str,
) -> http::Response<Incoming> {
    let request = Request::builder()
        .method(Method::POST)
        .version(Version::HTTP_2)
        .uri(url(gw, &format!("/echo.Echo/{method}")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_message(message.as_bytes())))
        .expect("request");
    sender.send_request(request).await.expect("response")
}

/// Reads the rest of a body: its messages and its trailers.
async fn read_to_trailers(body: &mut Incoming) -> (Vec<String>, HeaderMap) {
    let mut data = BytesMut::new();
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        match frame.into_data() {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => trailers = frame.into_trailers().expect("trailers"),
        }
    }
    (grpc_messages(&data), trailers)
}

async fn grpc_gateway(backend: &Backend) -> RunningGateway {
    upstream_gateway(Upstream::new(backend).protocol(Protocol::Http2)).await
}

fn gw_addr(gw: &RunningGateway) -> SocketAddr {
    gw.listener_addr("public").expect("listener")
}

#[tokio::test]
async fn grpc_unary_calls_keep_their_status_and_trailers() {
    let backend = grpc_backend().await;
    let gw = grpc_gateway(&backend).await;
    let mut sender = h2_client(gw_addr(&gw)).await;

    let mut response = grpc_call(&mut sender, &gw, "Unary", "hello").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let (messages, trailers) = within("unary body", read_to_trailers(response.body_mut())).await;
    assert_eq!(messages, ["echo hello te=trailers"]);
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(trailers["x-trailer"], "kept");
    let seen = backend.state.last_seen();
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.headers["te"], "trailers");

    let mut response = grpc_call(&mut sender, &gw, "Missing", "hello").await;
    let (messages, trailers) = within("error body", read_to_trailers(response.body_mut())).await;
    assert!(messages.is_empty());
    assert_eq!(trailers["grpc-status"], "5");
    assert_eq!(trailers["grpc-message"], "no such method");
}

#[tokio::test]
async fn grpc_server_streaming_is_forwarded_message_by_message() {
    let backend = grpc_backend().await;
    let gw = grpc_gateway(&backend).await;
    let mut sender = h2_client(gw_addr(&gw)).await;

    let mut response = grpc_call(&mut sender, &gw, "Count", "n").await;
    assert_eq!(response.status(), StatusCode::OK);
    // The first message arrives while the backend still holds the rest: nothing buffers.
    let first = within("the first message", response.body_mut().frame())
        .await
        .expect("a frame")
        .expect("data");
    let first = first.into_data().expect("data frame");
    assert_eq!(grpc_messages(&first), ["n 1"]);
    backend.state.release(1);
    let (messages, trailers) = within("the rest", read_to_trailers(response.body_mut())).await;
    assert_eq!(messages, ["n 2", "n 3"]);
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
}

#[tokio::test]
async fn trailers_from_an_http2_upstream_lose_the_fields_a_trailer_section_may_not_carry() {
    let backend = Backend::start(|_, _| async move {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("authorization", HeaderValue::from_static("secret"));
        trailers.insert("content-type", HeaderValue::from_static("text/evil"));
        let frames = vec![
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"body"))),
            Ok(Frame::trailers(trailers)),
        ];
        http::Response::new(StreamBody::new(stream::iter(frames)).boxed())
    })
    .await;
    let gw = upstream_gateway(Upstream::new(&backend).protocol(Protocol::Http2)).await;
    let addr = gw.listener_addr("public").expect("listener");
    let raw = crate::support::client::raw_exchange(
        addr,
        b"GET /t HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        "grpc-status: 0\r\n\r\n",
    )
    .await;
    let lower = raw.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{raw}");
    assert!(lower.contains("\r\n0\r\ngrpc-status: 0\r\n\r\n"), "{raw}");
    assert!(
        !lower.contains("secret") && !lower.contains("text/evil"),
        "{raw}"
    );
}
