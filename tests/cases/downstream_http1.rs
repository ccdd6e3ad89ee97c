//! The gateway's client-facing HTTP/1.1 server, pinned over raw sockets: exact bytes
//! written, responses parsed by hand. Covered: pipelining and keep-alive (HTTP/1.1 and
//! HTTP/1.0), `Connection: close`, chunked request bodies (extensions, trailers, bytes
//! in small pieces, cut off by the client), `Expect: 100-continue`, the framing errors
//! that guard against request smuggling (400 and a closed connection), HEAD, responses
//! without a length or without a body, request bodies the gateway answers without
//! reading, idle and slow clients, absolute-form targets, `Host` rules, and the date,
//! length, JSON body and metrics of the gateway's own refusals. What a client observes,
//! not how the server does it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use portcullis::RunningGateway;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::backend::Body;
use crate::support::{
    eventually, metric_reaches, within, Backend, Gateway, Listener, Reply, Route, Underscores,
};

/// A client connection: reads go through a buffer, writes to the socket.
type Connection = BufReader<TcpStream>;

/// One response as read off the wire.
#[derive(Debug)]
struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
    /// Decoded: chunked framing removed.
    body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
    }
}

/// The backend behind every test's gateway. It answers `METHOD target body=BODY` with
/// the body it read, except: a path ending in `/stream` gets a body of two chunks with
/// no length, `/status/N` gets status N and no body, and a path containing `/held`
/// waits at the gate first.
async fn backend() -> Backend {
    Backend::start(|request, state| async move {
        let path = request.uri().path().to_owned();
        if path.ends_with("/stream") {
            return streamed(&["part one;", "part two"]);
        }
        if let Some(code) = path.rsplit_once("/status/").map(|(_, code)| code) {
            let status = StatusCode::from_bytes(code.as_bytes()).expect("a status code");
            return Reply::text(status, "");
        }
        if path.contains("/held") {
            state.hold().await;
        }
        let head = format!("{} {}", request.method(), request.uri());
        let body = match request.into_body().collect().await {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            Err(_) => "<failed>".to_owned(),
        };
        Reply::ok(format!("{head} body={body}"))
    })
    .await
}

/// A 200 whose body is `parts`, sent as separate frames with no length known upfront.
fn streamed(parts: &[&'static str]) -> http::Response<Body> {
    let frames = parts
        .iter()
        .map(|part| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(part.as_bytes())))
        })
        .collect::<Vec<_>>();
    http::Response::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed())
}

/// A gateway with `listener` in front of `backend`: `/api` on host `api.example.com`
/// goes to it with the path prefixed by `/hosted`; `/api` on any other host goes
/// unchanged; anything else gets 404.
async fn gateway_to(backend: &Backend, listener: Listener) -> RunningGateway {
    Gateway::new()
        .listener(listener)
        .upstream("u", backend)
        .route_with(
            Route::prefix("/api")
                .host("api.example.com")
                .named("hosted")
                .to("u")
                .add_prefix("/hosted"),
        )
        .route_with(Route::prefix("/api").named("api").to("u"))
        .start()
        .await
}

/// A gateway with `listener`, an admin listener (for its metrics) and one route, `/api`
/// to `backend`.
async fn gateway_with_admin(backend: &Backend, listener: Listener) -> RunningGateway {
    Gateway::new()
        .admin()
        .listener(listener)
        .upstream("u", backend)
        .route_with(Route::prefix("/api").named("api").to("u"))
        .start()
        .await
}

async fn connect(gw: &RunningGateway) -> Connection {
    let stream = TcpStream::connect(gw.listener_addr("public").expect("listener `public`"))
        .await
        .expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    BufReader::new(stream)
}

async fn send(connection: &mut Connection, bytes: &[u8]) {
    connection.get_mut().write_all(bytes).await.expect("writes");
}

/// Writes `bytes` `piece` bytes at a time, letting the gateway run between writes.
async fn send_in_pieces(connection: &mut Connection, bytes: &[u8], piece: usize) {
    for part in bytes.chunks(piece) {
        send(connection, part).await;
        tokio::task::yield_now().await;
    }
}

/// Reads one response to a request with `method`, failing the test after 10 s.
/// The connection is still in step: a further request on it is answered as sent.
async fn assert_next_request_served(connection: &mut Connection) {
    send(connection, b"GET /api/next HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        read_response(connection, "GET").await.text(),
        "GET /api/next body="
    );
}

async fn read_response(connection: &mut Connection, method: &str) -> Response {
    within("a response", read_one(connection, method)).await
}

async fn read_one(connection: &mut Connection, method: &str) -> Response {
    let status_line = read_line(connection).await;
    assert!(
        !status_line.is_empty(),
        "the connection closed where a response was expected"
    );
    let mut words = status_line.splitn(3, ' ');
    let version = words.next().unwrap_or_default().to_owned();
    let status = words
        .next()
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    assert!(version.starts_with("HTTP/1."), "{status_line:?}");
    let mut headers = Vec::new();
    loop {
        let line = read_line(connection).await;
        assert!(line.ends_with("\r\n"), "cut off in the head: {line:?}");
        if line == "\r\n" {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("not a header line: {line:?}"));
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut response = Response {
        version,
        status,
        headers,
        body: Vec::new(),
    };
    let bodiless =
        method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304;
    if bodiless {
        return response;
    }
    if response.is_chunked() {
        response.body = read_chunked(connection).await;
    } else if let Some(length) = response.header("content-length") {
        let length = length.parse().expect("a numeric content-length");
        response.body = vec![0; length];
        connection
            .read_exact(&mut response.body)
            .await
            .expect("the whole body");
    } else {
        connection
            .read_to_end(&mut response.body)
            .await
            .expect("a body delimited by close");
    }
    response
}

/// One line, CRLF included; empty at end of stream.
async fn read_line(connection: &mut Connection) -> String {
    let mut line = String::new();
    connection.read_line(&mut line).await.expect("reads a line");
    line
}

/// A chunked body, decoded; its trailer section is read and dropped.
async fn read_chunked(connection: &mut Connection) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(connection).await;
        let size = size_line.trim_end().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|_| panic!("not a chunk size line: {size_line:?}"));
        if size == 0 {
            while read_line(connection).await != "\r\n" {}
            return body;
        }
        let start = body.len();
        body.resize(start + size, 0);
        connection
            .read_exact(&mut body[start..])
            .await
            .expect("chunk data");
        assert_eq!(read_line(connection).await, "\r\n", "CRLF after chunk data");
    }
}

/// The next response, or `None` when the gateway closes the connection instead.
async fn response_or_close(connection: &mut Connection, method: &str) -> Option<Response> {
    let more = within("a response or the end", connection.fill_buf())
        .await
        .is_ok_and(|buffered| !buffered.is_empty());
    if more {
        Some(read_response(connection, method).await)
    } else {
        None
    }
}

/// Fails unless the gateway closes the connection without sending anything more.
async fn assert_closed(connection: &mut Connection) {
    let mut rest = Vec::new();
    let read = within(
        "the gateway closes the connection",
        connection.read_to_end(&mut rest),
    )
    .await;
    // A reset counts as closed too.
    assert!(
        rest.is_empty(),
        "expected the connection to close, got more bytes ({read:?}): {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// The requests the backend received, as `METHOD target`.
fn backend_saw(backend: &Backend) -> Vec<String> {
    backend
        .state
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|seen| format!("{} {}", seen.method, seen.uri))
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    // Four requests in one write: the first waits at the backend, two carry bodies
    // (one sized, one chunked) whose ends must be found exactly.
    send(
        &mut connection,
        b"GET /api/held/1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /api/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo\
          POST /api/3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthree\r\n0\r\n\r\n\
          GET /api/4 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    eventually("the first request reaches the backend", async || {
        backend.state.arrived() == 1
    })
    .await;
    backend.state.release(1);
    let expected = [
        ("GET", "GET /api/held/1 body="),
        ("POST", "POST /api/2 body=two"),
        ("POST", "POST /api/3 body=three"),
        ("GET", "GET /api/4 body="),
    ];
    for (method, body) in expected {
        let response = read_response(&mut connection, method).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.text(), body);
    }
    // The connection is still open for more.
    send(&mut connection, b"GET /api/5 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        read_response(&mut connection, "GET").await.text(),
        "GET /api/5 body="
    );
    assert_eq!(
        backend_saw(&backend),
        [
            "GET /api/held/1",
            "POST /api/2",
            "POST /api/3",
            "GET /api/4",
            "GET /api/5"
        ]
    );
}

#[tokio::test]
async fn sequential_requests_share_one_keep_alive_connection() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    for i in 1..=3 {
        send(
            &mut connection,
            format!("GET /api/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        let response = read_response(&mut connection, "GET").await;
        assert_eq!(response.version, "HTTP/1.1");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), format!("GET /api/{i} body="));
        assert!(!response.closes(), "{response:?}");
    }
    assert_eq!(
        backend_saw(&backend),
        ["GET /api/1", "GET /api/2", "GET /api/3"]
    );
}

#[tokio::test]
async fn an_http_1_0_request_is_answered_and_its_connection_closed() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    // A second request in the same write must not be answered.
    send(
        &mut connection,
        b"GET /api/old HTTP/1.0\r\nHost: x\r\n\r\nGET /api/second HTTP/1.0\r\nHost: x\r\n\r\n",
    )
    .await;
    let response = read_response(&mut connection, "GET").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "GET /api/old body=");
    assert_closed(&mut connection).await;
    assert_eq!(backend_saw(&backend), ["GET /api/old"]);
}

#[tokio::test]
async fn an_http_1_0_request_asking_for_keep_alive_keeps_its_connection() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    for path in ["/api/a", "/api/b"] {
        send(
            &mut connection,
            format!("GET {path} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        )
        .await;
        let response = read_response(&mut connection, "GET").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), format!("GET {path} body="));
        // An HTTP/1.0 client learns that the connection persists only from this.
        assert_eq!(
            response
                .header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("keep-alive"),
            "{response:?}"
        );
    }
    // Without the header, the next one ends the connection.
    send(&mut connection, b"GET /api/c HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        read_response(&mut connection, "GET").await.text(),
        "GET /api/c body="
    );
    assert_closed(&mut connection).await;
}

#[tokio::test]
async fn connection_close_from_an_http_1_1_client_is_honoured_after_the_response() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"GET /api/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
          GET /api/ignored HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let response = read_response(&mut connection, "GET").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "GET /api/last body=");
    assert!(response.closes(), "{response:?}");
    assert_closed(&mut connection).await;
    assert_eq!(backend_saw(&backend), ["GET /api/last"]);
}

#[tokio::test]
async fn a_chunked_body_with_extensions_and_trailers_arrives_whole_from_small_writes() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    let request = b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        3;name=value\r\nabc\r\n\
        A;q=\"quoted\"\r\n0123456789\r\n\
        1\r\n!\r\n\
        0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
    // Three bytes at a time: sizes, data, CRLFs and trailers all split across reads.
    send_in_pieces(&mut connection, request, 3).await;
    let response = read_response(&mut connection, "POST").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "POST /api/upload body=abc0123456789!");
    // The trailer section was consumed: the next request on the connection is intact.
    assert_next_request_served(&mut connection).await;
}

#[tokio::test]
async fn a_sized_body_in_small_writes_arrives_whole() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    let body = "x".repeat(1000);
    let request = format!(
        "PUT /api/sized HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send_in_pieces(&mut connection, request.as_bytes(), 7).await;
    let response = read_response(&mut connection, "PUT").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), format!("PUT /api/sized body={body}"));
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_response_before_the_body_is_sent() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"POST /api/expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    let interim = read_response(&mut connection, "POST").await;
    assert_eq!(interim.status, 100, "{interim:?}");
    send(&mut connection, b"hello").await;
    let response = read_response(&mut connection, "POST").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "POST /api/expect body=hello");
    // The expectation was the gateway's to meet: the upstream is not asked again.
    assert!(!backend.state.last_seen().headers.contains_key("expect"));
}

#[tokio::test]
async fn an_expectation_the_gateway_refuses_from_the_head_gets_only_the_final_response() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    // No route: the client is told without having to send its body.
    send(
        &mut connection,
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    let response = read_response(&mut connection, "POST").await;
    assert_eq!(response.status, 404, "{response:?}");
    assert_eq!(backend.state.arrived(), 0);
}

/// Sends `request` with a request for `/api/smuggled` after it in the same write, and
/// checks that the gateway answers once with 400 and closes: the bytes after a broken
/// head are never taken for a request.
async fn refused_and_closed(gw: &RunningGateway, backend: &Backend, request: &str) {
    let mut connection = connect(gw).await;
    let smuggling = format!("{request}GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    send(&mut connection, smuggling.as_bytes()).await;
    let response = read_response(&mut connection, "POST").await;
    assert_eq!(response.status, 400, "{request:?} got {response:?}");
    assert_closed(&mut connection).await;
    assert_eq!(backend.state.arrived(), 0, "{request:?}");
}

#[tokio::test]
async fn invalid_or_conflicting_content_lengths_get_400_and_a_closed_connection() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    for length_headers in [
        "Content-Length: abc\r\n",
        "Content-Length: +3\r\n",
        "Content-Length: -3\r\n",
        "Content-Length: 3\r\nContent-Length: 40\r\n",
        "Content-Length: 3, 40\r\n",
    ] {
        refused_and_closed(
            &gw,
            &backend,
            &format!("POST /api/a HTTP/1.1\r\nHost: x\r\n{length_headers}\r\nabc"),
        )
        .await;
    }
}

#[tokio::test]
async fn transfer_encodings_without_chunked_last_get_400_and_a_closed_connection() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let body = "3\r\nabc\r\n0\r\n\r\n";
    for (version, coding) in [
        ("HTTP/1.1", "gzip"),
        ("HTTP/1.1", "chunked, gzip"),
        ("HTTP/1.1", "xchunked"),
        // HTTP/1.0 has no transfer codings: the framing cannot be trusted.
        ("HTTP/1.0", "chunked"),
    ] {
        refused_and_closed(
            &gw,
            &backend,
            &format!(
                "POST /api/a {version}\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n{body}"
            ),
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_heads_get_400_and_a_closed_connection() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    for request in [
        "GARBAGE\r\n\r\n",
        "GET /api/a b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /api/a HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        // Whitespace between a field name and its colon (RFC 9112, 5.1).
        "POST /api/a HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
        "GET /api/a HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    ] {
        refused_and_closed(&gw, &backend, request).await;
    }
}

/// RFC 9112, 6.1: a request with both `Content-Length` and `Transfer-Encoding` may be
/// refused, or processed by its `Transfer-Encoding` alone with the `Content-Length`
/// dropped; either way the connection must close after the response. Whichever the
/// server does, what follows the chunked body is never served as a second request.
#[tokio::test]
async fn content_length_with_chunked_never_lets_a_second_request_through() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let chunked_then_smuggled =
        "3\r\nabc\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for framing in [
        "Content-Length: 50\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 50\r\n",
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let mut connection = connect(&gw).await;
        send(
            &mut connection,
            format!("POST /api/both HTTP/1.1\r\nHost: x\r\n{framing}\r\n{chunked_then_smuggled}")
                .as_bytes(),
        )
        .await;
        let response = read_response(&mut connection, "POST").await;
        if response.status != 400 {
            // Processed: by the chunked framing, and the length is not passed on.
            assert_eq!(response.status, 200, "{framing:?}: {response:?}");
            assert_eq!(response.text(), "POST /api/both body=abc", "{framing:?}");
            let seen = backend.state.last_seen();
            assert!(!seen.headers.contains_key("content-length"), "{seen:?}");
        }
        assert_closed(&mut connection).await;
    }
    assert!(
        !backend_saw(&backend).iter().any(|r| r.contains("smuggled")),
        "{:?}",
        backend_saw(&backend)
    );
}

#[tokio::test]
async fn head_responses_carry_the_upstream_length_but_no_body() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    // A GET follows in the same write: any body bytes after the HEAD response would
    // be read as the start of the GET's response.
    send(
        &mut connection,
        b"HEAD /api/page HTTP/1.1\r\nHost: x\r\n\r\nGET /api/after-head HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let head = read_response(&mut connection, "HEAD").await;
    assert_eq!(head.status, 200);
    let length = "HEAD /api/page body=".len().to_string();
    assert_eq!(
        head.header("content-length"),
        Some(length.as_str()),
        "{head:?}"
    );
    let get = read_response(&mut connection, "GET").await;
    assert_eq!(
        (get.status, get.text().as_str()),
        (200, "GET /api/after-head body=")
    );

    // The same for an upstream response of unknown length: no length, no chunks.
    send(
        &mut connection,
        b"HEAD /api/stream HTTP/1.1\r\nHost: x\r\n\r\nGET /api/after-stream HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let head = read_response(&mut connection, "HEAD").await;
    assert_eq!(head.status, 200);
    let get = read_response(&mut connection, "GET").await;
    assert_eq!(
        (get.status, get.text().as_str()),
        (200, "GET /api/after-stream body=")
    );
}

#[tokio::test]
async fn bodiless_statuses_from_the_upstream_leave_the_connection_usable() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"GET /api/status/204 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /api/status/304 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /api/after HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let no_content = read_response(&mut connection, "GET").await;
    assert_eq!(no_content.status, 204);
    assert!(!no_content.is_chunked(), "{no_content:?}");
    let not_modified = read_response(&mut connection, "GET").await;
    assert_eq!(not_modified.status, 304);
    assert!(!not_modified.is_chunked(), "{not_modified:?}");
    let after = read_response(&mut connection, "GET").await;
    assert_eq!(
        (after.status, after.text().as_str()),
        (200, "GET /api/after body=")
    );
}

#[tokio::test]
async fn a_response_without_a_length_is_chunked_for_http_1_1_clients() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let response = read_response(&mut connection, "GET").await;
    assert_eq!(response.status, 200);
    assert!(response.is_chunked(), "{response:?}");
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.text(), "part one;part two");
    // The last chunk ended the response, not the connection.
    assert_next_request_served(&mut connection).await;
}

#[tokio::test]
async fn a_response_without_a_length_is_delimited_by_close_for_http_1_0_clients() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    for keep_alive in ["", "Connection: keep-alive\r\n"] {
        let mut connection = connect(&gw).await;
        send(
            &mut connection,
            format!("GET /api/stream HTTP/1.0\r\nHost: x\r\n{keep_alive}\r\n").as_bytes(),
        )
        .await;
        // Read until the gateway closes: the close is what ends the body.
        let response = read_response(&mut connection, "GET").await;
        assert_eq!(response.status, 200);
        assert!(!response.is_chunked(), "{response:?}");
        assert_eq!(response.header("content-length"), None);
        assert_eq!(response.text(), "part one;part two");
    }
}

#[tokio::test]
async fn a_body_the_gateway_answers_without_reading_is_never_parsed_as_a_request() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    // The body is itself a request; the gateway answers 404 without reading it.
    let body = "GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let head = format!(
        "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let next = "GET /api/after HTTP/1.1\r\nHost: x\r\n\r\n";

    // The body in the same write as the head, and the body sent only after the 404.
    for body_first in [true, false] {
        let mut connection = connect(&gw).await;
        if body_first {
            send(&mut connection, format!("{head}{body}{next}").as_bytes()).await;
        } else {
            send(&mut connection, head.as_bytes()).await;
        }
        let refused = read_response(&mut connection, "POST").await;
        assert_eq!(refused.status, 404, "{refused:?}");
        if !body_first {
            // The gateway may have closed already: a failed write is fine.
            let _ = connection
                .get_mut()
                .write_all(format!("{body}{next}").as_bytes())
                .await;
        }
        // Either the connection goes on with the next real request, or it ends.
        if let Some(response) = response_or_close(&mut connection, "GET").await {
            assert_eq!(
                (response.status, response.text().as_str()),
                (200, "GET /api/after body="),
                "body_first: {body_first}"
            );
        }
    }
    assert!(
        !backend_saw(&backend).iter().any(|r| r.contains("smuggled")),
        "{:?}",
        backend_saw(&backend)
    );
}

#[tokio::test]
async fn an_upload_cut_off_by_the_client_never_reaches_the_upstream_complete() {
    // Records how each request body ended at the backend.
    let endings: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = endings.clone();
    let backend = Backend::start(move |request, state| {
        let endings = recorded.clone();
        async move {
            let mut body = request.into_body();
            let mut ending = "complete";
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        let read = frame.data_ref().map_or(0, Bytes::len);
                        state.body_bytes.fetch_add(read, Ordering::SeqCst);
                    }
                    Err(_) => {
                        ending = "failed";
                        break;
                    }
                }
            }
            endings.lock().expect("lock").push(ending.to_owned());
            Reply::ok(ending)
        }
    })
    .await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let uploads = [
        "POST /api/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "POST /api/up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    ];
    // A request ends at the backend either with its body failing or with the handler
    // dropped (cancelled).
    let ended =
        || endings.lock().expect("lock").len() + backend.state.cancelled.load(Ordering::SeqCst);
    for (done, upload) in uploads.into_iter().enumerate() {
        let mut connection = connect(&gw).await;
        send(&mut connection, upload.as_bytes()).await;
        eventually("the first bytes reach the backend", async || {
            backend.state.body_bytes.load(Ordering::SeqCst) == 5 * (done + 1)
        })
        .await;
        drop(connection);
        eventually("the backend's request ends", async || ended() == done + 1).await;
        let endings = endings.lock().expect("lock");
        assert!(
            endings.iter().all(|ending| ending == "failed"),
            "{upload:?}: {endings:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let backend = backend().await;
    let gw = gateway_to(
        &backend,
        Listener::public().idle_timeout(Duration::from_secs(1)),
    )
    .await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"GET /api/once HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let response = read_response(&mut connection, "GET").await;
    assert_eq!(response.status, 200);
    assert!(!response.closes(), "{response:?}");
    // Nothing more is sent: the gateway ends the connection.
    assert_closed(&mut connection).await;
}

#[tokio::test]
async fn a_request_written_one_byte_at_a_time_is_served() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send_in_pieces(
        &mut connection,
        b"POST /api/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Long: a-header-value\r\n\r\nhello",
        1,
    )
    .await;
    let response = read_response(&mut connection, "POST").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "POST /api/slow body=hello");
}

#[tokio::test]
async fn a_head_that_stops_arriving_is_closed_after_the_idle_timeout() {
    let backend = backend().await;
    let gw = gateway_to(
        &backend,
        Listener::public().idle_timeout(Duration::from_secs(1)),
    )
    .await;
    let mut connection = connect(&gw).await;
    // Whether the write lands before the gateway gives up on the connection or not, it
    // must end closed.
    let _ = connection
        .get_mut()
        .write_all(b"GET /api/never HTTP/1.1\r\nHost: x\r\n")
        .await;
    let mut received = Vec::new();
    let _ = within(
        "the gateway closes the connection",
        connection.read_to_end(&mut received),
    )
    .await;
    // Closed, with a 408 or without anything.
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received:?}"
    );
    assert_eq!(backend.state.arrived(), 0);
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_like_origin_form() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    for (target, host) in [
        ("http://api.example.com/api/abs?q=1", "api.example.com"),
        ("/api/abs?q=1", "api.example.com"),
        ("http://other.example/api/abs?q=1", "other.example"),
        // The target's host wins over `Host` (RFC 9112, 3.2.2).
        ("http://api.example.com/api/abs?q=1", "other.example"),
    ] {
        send(
            &mut connection,
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
        .await;
        let response = read_response(&mut connection, "GET").await;
        assert_eq!(response.status, 200, "{target}: {response:?}");
    }
    // The upstream gets origin form; the host (from the target or `Host`) picks the route.
    assert_eq!(
        backend_saw(&backend),
        [
            "GET /hosted/api/abs?q=1",
            "GET /hosted/api/abs?q=1",
            "GET /api/abs?q=1",
            "GET /hosted/api/abs?q=1"
        ]
    );
}

#[tokio::test]
async fn the_gateway_s_own_responses_carry_a_date_and_an_exact_content_length() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(&mut connection, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let not_found = read_response(&mut connection, "GET").await;
    assert_eq!(not_found.status, 404);
    assert_eq!(not_found.header("content-type"), Some("application/json"));
    assert_imf_date(&not_found);
    let length = not_found.body.len().to_string();
    assert_eq!(not_found.header("content-length"), Some(length.as_str()));
    // Read by its content-length: the body is exactly the JSON, nothing after it.
    let json: serde_json::Value = serde_json::from_slice(&not_found.body).expect("JSON");
    assert_eq!(json["error"], "no_route");

    // The connection goes on after it, and the parser's own 400 is framed too.
    send(
        &mut connection,
        b"GET /api/a HTTP/1.1\r\nBroken header\r\n\r\n",
    )
    .await;
    let bad = read_response(&mut connection, "GET").await;
    assert_eq!(bad.status, 400);
    assert_imf_date(&bad);
    assert_eq!(
        bad.header("content-length").map(str::parse::<usize>),
        Some(Ok(bad.body.len()))
    );
}

/// `Date` in the IMF-fixdate form, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn assert_imf_date(response: &Response) {
    let date = response
        .header("date")
        .unwrap_or_else(|| panic!("no date header: {response:?}"));
    let shape: String = date
        .chars()
        .map(|c| match c {
            '0'..='9' => '0',
            'A'..='Z' | 'a'..='z' => 'a',
            other => other,
        })
        .collect();
    assert_eq!(shape, "aaa, 00 aaa 0000 00:00:00 aaa", "{date:?}");
    assert!(date.ends_with(" GMT"), "{date:?}");
}

#[tokio::test]
async fn requests_without_exactly_one_host_get_400_with_a_json_body() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    for request in [
        "GET /api/a HTTP/1.1\r\n\r\n",
        "GET /api/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /api/a HTTP/1.1\r\nHost:\r\n\r\n",
    ] {
        let mut connection = connect(&gw).await;
        send(&mut connection, request.as_bytes()).await;
        let response = read_response(&mut connection, "GET").await;
        assert_eq!(response.status, 400, "{request:?}: {response:?}");
        let json: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
        assert_eq!(json["error"], "bad_request");
        assert_eq!(
            json["request_id"].as_str(),
            response.header("x-request-id"),
            "{response:?}"
        );
        assert_closed(&mut connection).await;
    }
    // HTTP/1.0 predates `Host`: a request without one is served.
    let mut connection = connect(&gw).await;
    send(&mut connection, b"GET /api/old HTTP/1.0\r\n\r\n").await;
    assert_eq!(read_response(&mut connection, "GET").await.status, 200);
    assert_eq!(backend.state.arrived(), 1);
}

#[tokio::test]
async fn the_upstream_sees_the_host_of_an_absolute_form_target() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"GET http://api.example.com/api/abs HTTP/1.1\r\nHost: other.example\r\n\r\n",
    )
    .await;
    assert_eq!(read_response(&mut connection, "GET").await.status, 200);
    let seen = backend.state.last_seen();
    assert_eq!(seen.uri, "/hosted/api/abs");
    assert_eq!(seen.headers["host"], "api.example.com");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
}

#[tokio::test]
async fn a_transfer_coding_before_chunked_gets_501() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"POST /api/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let response = read_response(&mut connection, "POST").await;
    assert_eq!(response.status, 501, "{response:?}");
    let json: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    assert_eq!(json["error"], "unsupported_transfer_coding");
    assert_closed(&mut connection).await;
    assert_eq!(backend.state.arrived(), 0);
}

#[tokio::test]
async fn refused_requests_are_counted_as_unmatched() {
    let backend = backend().await;
    let gw = gateway_with_admin(&backend, Listener::public().max_header_size(8 * 1024)).await;
    let mut connection = connect(&gw).await;
    send(&mut connection, b"GARBAGE\r\n\r\n").await;
    assert_eq!(read_response(&mut connection, "GET").await.status, 400);
    let mut connection = connect(&gw).await;
    let big = format!(
        "GET /api/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    send(&mut connection, big.as_bytes()).await;
    let response = read_response(&mut connection, "GET").await;
    assert_eq!(response.status, 431);
    let json: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    assert_eq!(json["error"], "request_head_too_large");
    let unmatched = |status: u16| {
        format!(
            "portcullis_http_requests_total{{listener=\"public\",method=\"OTHER\",route=\"_unmatched\",status=\"{status}\"}}"
        )
    };
    metric_reaches(&gw, &unmatched(400), 1.0).await;
    metric_reaches(&gw, &unmatched(431), 1.0).await;
    assert_eq!(backend.state.arrived(), 0);
}

#[tokio::test]
async fn a_client_that_reads_none_of_its_response_is_disconnected_after_the_idle_timeout() {
    // 64 MiB, made as it is read: more than the sockets between them can hold.
    let backend = Backend::start(|_request, _state| async move {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = futures_util::stream::iter(
            std::iter::repeat_n(chunk, 1024)
                .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(c))),
        );
        http::Response::new(http_body_util::StreamBody::new(chunks).boxed())
    })
    .await;
    let gw = gateway_with_admin(
        &backend,
        Listener::public().idle_timeout(Duration::from_secs(1)),
    )
    .await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"GET /api/huge HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    // The client reads nothing. The gateway gives up on it, and with it on the
    // upstream's response: the upstream connection closes and the permit is free again.
    metric_reaches(
        &gw,
        "portcullis_client_timeouts_total{listener=\"public\",phase=\"response\"}",
        1.0,
    )
    .await;
    eventually("the upstream connection is closed", async || {
        backend.state.connections_closed.load(Ordering::SeqCst) == 1
    })
    .await;
    metric_reaches(&gw, "portcullis_upstream_in_flight{upstream=\"u\"}", 0.0).await;
    drop(connection);
}

#[tokio::test]
async fn a_client_leaving_a_streamed_response_frees_the_upstream() {
    // One chunk, then nothing more, ever (a stream of events that has gone quiet).
    let backend = Backend::start(|_request, _state| async move {
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
            Bytes::from_static(b"event: one\n\n"),
        ))]);
        let quiet = futures_util::stream::pending();
        http::Response::new(
            http_body_util::StreamBody::new(futures_util::StreamExt::chain(first, quiet)).boxed(),
        )
    })
    .await;
    let gw = gateway_with_admin(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let mut seen = Vec::new();
    within("the first event arrives", async {
        while !String::from_utf8_lossy(&seen).contains("event: one") {
            let mut chunk = [0u8; 1024];
            let n = connection.read(&mut chunk).await.expect("reads");
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    metric_reaches(&gw, "portcullis_upstream_in_flight{upstream=\"u\"}", 1.0).await;
    // The client goes away while the upstream has nothing to send: the gateway notices
    // from the client's side, not from a failed write.
    drop(connection);
    metric_reaches(&gw, "portcullis_upstream_in_flight{upstream=\"u\"}", 0.0).await;
    eventually("the upstream connection is closed", async || {
        backend.state.connections_closed.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn userinfo_in_an_absolute_target_and_connect_get_400() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    for request in [
        "GET http://user:pw@api.example.com/api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
        "GET http://user@api.example.com/api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
        "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
        "CONNECT /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut connection = connect(&gw).await;
        send(&mut connection, request.as_bytes()).await;
        let response = read_response(&mut connection, "GET").await;
        assert_eq!(response.status, 400, "{request:?}: {response:?}");
        assert!(response.closes(), "{request:?}");
        assert_closed(&mut connection).await;
    }
    assert!(backend_saw(&backend).is_empty());
}

#[tokio::test]
async fn an_expectation_other_than_100_continue_gets_417() {
    let backend = backend().await;
    let gw = gateway_to(&backend, Listener::public()).await;
    for expect in [
        "200-ok",
        "100-continue, foo",
        "100-continue\r\nExpect: 100-continue",
    ] {
        let mut connection = connect(&gw).await;
        let request = format!(
            "POST /api/x HTTP/1.1\r\nHost: x\r\nExpect: {expect}\r\nContent-Length: 2\r\n\r\nab"
        );
        send(&mut connection, request.as_bytes()).await;
        let response = read_response(&mut connection, "POST").await;
        assert_eq!(response.status, 417, "{expect:?}");
        assert!(
            response.text().contains("\"expectation_failed\""),
            "{response:?}"
        );
        assert_closed(&mut connection).await;
    }
    // HTTP/1.0 clients' `100-continue` is ignored (RFC 9110 §10.1.1), not forwarded.
    let mut connection = connect(&gw).await;
    send(
        &mut connection,
        b"POST /api/old HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
    )
    .await;
    let response = read_response(&mut connection, "POST").await;
    assert_eq!(response.text(), "POST /api/old body=ab");
    assert!(!backend.state.last_seen().headers.contains_key("expect"));
    assert_eq!(backend_saw(&backend), ["POST /api/old"]);
}

#[tokio::test]
async fn header_names_with_underscores_are_dropped_counted_passed_or_refused_as_configured() {
    let backend = backend().await;
    let request = b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\
        Transfer_Encoding: chunked\r\nX_Secret: 1\r\nX_Secret: 2\r\nX-Fine: 1\r\n\r\nab";

    let gw = gateway_with_admin(&backend, Listener::public()).await;
    let mut connection = connect(&gw).await;
    send(&mut connection, request).await;
    let response = read_response(&mut connection, "POST").await;
    assert_eq!(response.text(), "POST /api/x body=ab");
    let seen = backend.state.last_seen();
    assert!(seen.headers.contains_key("x-fine"));
    assert!(
        !seen.headers.contains_key("x_secret") && !seen.headers.contains_key("transfer_encoding")
    );
    metric_reaches(
        &gw,
        "portcullis_header_fields_dropped_total{listener=\"public\"}",
        3.0,
    )
    .await;

    let gw = gateway_to(
        &backend,
        Listener::public().headers_with_underscores(Underscores::Allow),
    )
    .await;
    let mut connection = connect(&gw).await;
    send(&mut connection, request).await;
    assert_eq!(read_response(&mut connection, "POST").await.status, 200);
    let seen = backend.state.last_seen();
    assert_eq!(seen.headers.get_all("x_secret").iter().count(), 2);

    let gw = gateway_to(
        &backend,
        Listener::public().headers_with_underscores(Underscores::Reject),
    )
    .await;
    let mut connection = connect(&gw).await;
    send(&mut connection, request).await;
    assert_eq!(read_response(&mut connection, "POST").await.status, 400);
    assert_closed(&mut connection).await;
}
