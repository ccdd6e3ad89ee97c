//! What a client is told when the gateway answers instead of the upstream: a brief JSON
//! body by default, the whole cause on listeners with `error_detail: verbose`, gRPC
//! statuses for gRPC requests, and a closed connection when the request's body was
//! refused.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{closed_port, url, within, Client, Gateway, Listener};

/// The JSON answer to a request routed to an upstream where nothing listens, and the
/// address that refused it.
async fn connect_failure(listener: Listener) -> (serde_json::Value, String) {
    let gone = closed_port();
    let gw = Gateway::new()
        .listener(listener)
        .upstream("gone", gone)
        .route("/", "gone")
        .start()
        .await;
    let reply = within("the 502", Client::new().get(&url(&gw, "/x"))).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body = reply.json();
    assert_eq!(body["error"], "upstream_connect_failed");
    (body, gone.to_string())
}

#[tokio::test]
async fn a_failed_connect_names_the_upstream_but_not_its_address_or_cause() {
    let (body, address) = connect_failure(Listener::public()).await;
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"gone\""), "{body}");
    assert!(!message.contains(&address), "{body}");
    assert!(!message.to_lowercase().contains("refused"), "{body}");
}

#[tokio::test]
async fn a_verbose_listener_tells_the_whole_cause() {
    let (body, address) = connect_failure(Listener::public().verbose_errors()).await;
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(&address), "{body}");
    assert!(message.to_lowercase().contains("refused"), "{body}");
}

/// One request over h2c; the response head and its body's length.
async fn grpc_call(gw: &portcullis::RunningGateway, path: &str) -> http::Response<usize> {
    let tcp = TcpStream::connect(gw.listener_addr("public").expect("listener"))
        .await
        .expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = Request::post(format!("http://example.com{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = within("the answer", sender.send_request(request))
        .await
        .expect("answered");
    let (parts, body) = response.into_parts();
    let collected = within("the body", body.collect()).await.expect("body");
    assert!(collected.trailers().is_none(), "a trailers-only answer");
    http::Response::from_parts(parts, collected.to_bytes().len())
}

#[tokio::test]
async fn grpc_requests_get_a_grpc_status_in_a_trailers_only_answer() {
    let gone = closed_port();
    let gw = Gateway::new()
        .upstream("gone", gone)
        .route("/svc.Users/", "gone")
        .start()
        .await;

    let unrouted = grpc_call(&gw, "/svc.Orders/Get").await;
    assert_eq!(unrouted.version(), Version::HTTP_2);
    assert_eq!(unrouted.status(), StatusCode::OK);
    assert_eq!(unrouted.headers()["content-type"], "application/grpc");
    assert_eq!(unrouted.headers()["grpc-status"], "12", "UNIMPLEMENTED");
    assert!(unrouted.headers().contains_key("x-request-id"));
    assert_eq!(*unrouted.body(), 0);

    let unreachable = grpc_call(&gw, "/svc.Users/Get").await;
    assert_eq!(unreachable.headers()["grpc-status"], "14", "UNAVAILABLE");
    let message = unreachable.headers()["grpc-message"]
        .to_str()
        .expect("ascii");
    assert!(message.starts_with("upstream_connect_failed"), "{message}");
    assert!(!message.contains(&gone.to_string()), "{message}");
    assert_eq!(*unreachable.body(), 0);
}

#[tokio::test]
async fn a_refused_body_closes_the_connection_even_when_it_was_all_sent() {
    let gw = Gateway::new()
        .listener(Listener::public().max_request_body(8))
        .upstream("gone", closed_port())
        .route("/", "gone")
        .start()
        .await;
    let mut tcp = TcpStream::connect(gw.listener_addr("public").expect("listener"))
        .await
        .expect("connects");
    // Head and body in one write: the gateway has the whole body buffered when it
    // refuses it, and could have kept the connection; it closes it instead.
    tcp.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 16\r\n\r\n0123456789abcdef")
        .await
        .expect("writes");
    let mut received = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(closed.is_ok(), "the connection stayed open after: {text}");
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(text.to_lowercase().contains("connection: close"), "{text}");
}
