//! The gateway's own HTTP/1.1 client against upstreams scripted byte by byte on raw
//! sockets: the body framings of RFC 9112 (chunked with trailers, delimited by close,
//! HTTP/1.0), interim responses, the request as written on the wire, and a pooled
//! connection the upstream closes under a request (resent when that is safe, 502
//! otherwise).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::client::raw_exchange;
use crate::support::{url, within, Client, Gateway, Upstream};

/// What the scripted upstream does with a request.
enum Answer {
    /// Writes these bytes and keeps the connection open.
    Reply(&'static [u8]),
    /// Writes these bytes, then closes the connection.
    ReplyAndClose(&'static [u8]),
    /// Closes the connection without answering.
    Close,
}

/// A request as the upstream read it: the head and the raw body bytes.
#[derive(Clone, Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// An upstream on raw sockets: `script(n, request)` answers the `n`-th request (from
/// 0) on its connection.
struct Scripted {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Connections the upstream has closed.
    closed: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(script: fn(usize, &Received) -> Answer) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (opened, seen, ended) = (connections.clone(), received.clone(), closed.clone());
        let task = tokio::spawn(async move {
            let mut handlers = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                opened.fetch_add(1, Ordering::SeqCst);
                let (seen, ended) = (seen.clone(), ended.clone());
                handlers.spawn(async move {
                    serve(socket, script, seen).await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Scripted {
            addr,
            connections,
            closed,
            received,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    fn opened(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut socket: tokio::net::TcpStream,
    script: fn(usize, &Received) -> Answer,
    seen: Arc<Mutex<Vec<Received>>>,
) {
    let mut buffer = Vec::new();
    for index in 0.. {
        let Some(request) = read_request(&mut socket, &mut buffer).await else {
            return;
        };
        seen.lock().expect("lock").push(request.clone());
        match script(index, &request) {
            Answer::Reply(bytes) => {
                if socket.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Answer::ReplyAndClose(bytes) => {
                let _ = socket.write_all(bytes).await;
                return;
            }
            Answer::Close => return,
        }
    }
}

/// Reads one request: the head, then a `Content-Length` body or a chunked one (kept
/// raw, up to its last chunk).
async fn read_request(
    socket: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<Received> {
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at + 4;
        }
        read_more(socket, buffer).await?;
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    buffer.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let body = if let Some(length) = lower
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
    {
        while buffer.len() < length {
            read_more(socket, buffer).await?;
        }
        buffer.drain(..length).collect()
    } else if lower.contains("transfer-encoding: chunked") {
        // The last chunk (`0` at a line start), then its trailer section to the blank line.
        let end = loop {
            let last = if buffer.starts_with(b"0\r\n") {
                Some(0)
            } else {
                find(buffer, b"\r\n0\r\n").map(|at| at + 2)
            };
            if let Some(end) =
                last.and_then(|at| find(&buffer[at + 1..], b"\r\n\r\n").map(|e| at + 1 + e + 4))
            {
                break end;
            }
            read_more(socket, buffer).await?;
        };
        buffer.drain(..end).collect()
    } else {
        Vec::new()
    };
    Some(Received { head, body })
}

async fn read_more(socket: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn gateway_for(upstream: &Scripted) -> portcullis::RunningGateway {
    gateway_to(upstream.addr).await
}

/// A gateway with one worker in front of `addr`: each worker keeps its own upstream
/// connections, and these tests count the connections one pool opens.
async fn gateway_to(addr: std::net::SocketAddr) -> portcullis::RunningGateway {
    Gateway::new()
        .workers(1)
        .upstream(
            "u",
            Upstream::new(addr).timeout(std::time::Duration::from_secs(5)),
        )
        .route("/", "u")
        .start()
        .await
}

#[tokio::test]
async fn a_chunked_response_with_trailers_is_decoded_and_its_connection_reused() {
    let upstream = Scripted::start(|_, _| {
        Answer::Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-checksum: abc\r\n\r\n",
        )
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let client = Client::new();
    for _ in 0..3 {
        let reply = within("the response", client.get(&url(&gw, "/chunked"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "hello, world");
    }
    assert_eq!(
        upstream.opened(),
        1,
        "the connection is reused after the last chunk"
    );
}

#[tokio::test]
async fn a_chunked_response_read_in_one_piece_is_passed_on_complete() {
    // Head, data and last chunk in one write, as most servers send a short body: the
    // gateway ends its own chunked response together with the data.
    let upstream = Scripted::start(|_, _| {
        Answer::Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
    })
    .await;
    // New client connections may land on any worker: `gateway_to` runs one, so the
    // reuse counted below is of one pool.
    let gw = gateway_for(&upstream).await;
    let addr = gw.listener_addr("public").expect("listener");
    for _ in 0..3 {
        let raw = raw_exchange(
            addr,
            b"GET /one HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            "\r\n0\r\n\r\n",
        )
        .await;
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{raw}"
        );
        assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n");
    }
    assert_eq!(upstream.opened(), 1, "the upstream connection is reused");
}

#[tokio::test]
async fn a_response_delimited_by_close_arrives_whole_and_its_connection_is_not_reused() {
    let upstream =
        Scripted::start(|_, _| Answer::ReplyAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"))
            .await;
    let gw = gateway_for(&upstream).await;
    let client = Client::new();
    for _ in 0..2 {
        let reply = within("the response", client.get(&url(&gw, "/close"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "until the end");
    }
    assert_eq!(upstream.opened(), 2);
}

#[tokio::test]
async fn http_1_0_responses_are_passed_on_and_their_connections_not_reused() {
    let upstream =
        Scripted::start(|_, _| Answer::Reply(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
            .await;
    let gw = gateway_for(&upstream).await;
    let client = Client::new();
    for _ in 0..2 {
        let reply = within("the response", client.get(&url(&gw, "/old"))).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "ok")
        );
    }
    assert_eq!(upstream.opened(), 2);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let upstream = Scripted::start(|_, _| {
        Answer::Reply(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone",
        )
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let reply = within(
        "the response",
        Client::new().send(Method::POST, &url(&gw, "/make"), &[], "payload"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.text(), "done");
}

#[tokio::test]
async fn the_request_goes_upstream_as_the_client_framed_it() {
    let upstream =
        Scripted::start(|_, _| Answer::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
            .await;
    let gw = gateway_for(&upstream).await;
    let addr = gw.listener_addr("public").expect("listener");
    let chunked = raw_exchange(
        addr,
        b"POST /up?x=1 HTTP/1.1\r\nHost: client.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    let sized = within(
        "the response",
        Client::new().send(
            Method::PUT,
            &url(&gw, "/put"),
            &[],
            Bytes::from_static(b"12345"),
        ),
    )
    .await;
    assert_eq!(sized.status, StatusCode::OK);
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    let (streamed, known) = (&received[0], &received[1]);
    assert!(
        streamed.head.starts_with("POST /up?x=1 HTTP/1.1\r\n"),
        "{}",
        streamed.head
    );
    assert!(
        streamed.head.contains("host: client.example\r\n"),
        "{}",
        streamed.head
    );
    assert!(
        streamed.head.contains("transfer-encoding: chunked\r\n"),
        "{}",
        streamed.head
    );
    let body = String::from_utf8_lossy(&streamed.body);
    let decoded: String = body.split("\r\n").skip(1).step_by(2).collect();
    assert_eq!(decoded, "abcdefg", "chunked body as sent: {body:?}");
    assert!(
        known.head.starts_with("PUT /put HTTP/1.1\r\n"),
        "{}",
        known.head
    );
    assert!(
        known.head.contains("content-length: 5\r\n"),
        "{}",
        known.head
    );
    assert_eq!(known.body, b"12345");
}

#[tokio::test]
async fn a_pooled_connection_closed_under_a_request_is_resent_only_when_safe() {
    // Every connection answers its first request and closes on its second: the gateway
    // meets a pooled connection that breaks before any response.
    let upstream = Scripted::start(|index, _| match index {
        0 => Answer::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        _ => Answer::Close,
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let client = Client::new();
    let first = within("the first GET", client.get(&url(&gw, "/a"))).await;
    assert_eq!(first.status, StatusCode::OK);
    // A GET is idempotent and has no body: sent again on a new connection.
    let second = within("the second GET", client.get(&url(&gw, "/b"))).await;
    assert_eq!(
        (second.status, second.text().as_str()),
        (StatusCode::OK, "ok")
    );
    assert_eq!(upstream.opened(), 2);
    // A POST is not: the client gets a 502, and the upstream saw it once.
    let post = within(
        "the POST",
        client.send(Method::POST, &url(&gw, "/c"), &[], "data"),
    )
    .await;
    assert_eq!(post.status, StatusCode::BAD_GATEWAY);
    assert_eq!(post.json()["error"], "upstream_bad_response");
    let paths: Vec<String> = upstream
        .received()
        .iter()
        .map(|r| r.head.split(' ').nth(1).unwrap_or("").to_owned())
        .collect();
    assert_eq!(paths, ["/a", "/b", "/b", "/c"]);
}

#[tokio::test]
async fn an_answer_sent_before_the_upload_was_read_reaches_the_client() {
    // The upstream refuses the upload from its head alone and closes with the body
    // unread (the kernel resets the connection).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    let refusing = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = Vec::new();
            while find(&buffer, b"\r\n\r\n").is_none() {
                if read_more(&mut socket, &mut buffer).await.is_none() {
                    break;
                }
            }
            let _ = socket
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo much")
                .await;
        }
    });
    let gw = gateway_to(addr).await;
    // A raw client: it keeps writing the body while it reads, and ignores a failed
    // write (the gateway may close once it has answered).
    let stream = tokio::net::TcpStream::connect(gw.listener_addr("public").expect("listener"))
        .await
        .expect("connects");
    let (mut reading, mut writing) = stream.into_split();
    let body_size = 4 << 20;
    let uploading = tokio::spawn(async move {
        let head =
            format!("POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: {body_size}\r\n\r\n");
        let _ = writing.write_all(head.as_bytes()).await;
        let _ = writing.write_all(&vec![b'u'; body_size]).await;
    });
    let answer = within("the refusal", async {
        let mut received = Vec::new();
        while !String::from_utf8_lossy(&received).contains("too much") {
            let mut chunk = [0u8; 4096];
            match reading.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with("too much"), "{answer}");
    uploading.abort();
    refusing.abort();
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_never_reaches_the_client_complete() {
    let upstream = Scripted::start(|_, _| {
        Answer::ReplyAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let addr = gw.listener_addr("public").expect("listener");
    for _ in 0..2 {
        // The client's connection ends short of a complete response (hyper's server
        // closes it when the body fails, with or without what it had buffered).
        let raw = raw_exchange(addr, b"GET /short HTTP/1.1\r\nHost: gw\r\n\r\n", "never").await;
        let complete = raw
            .split_once("\r\n\r\n")
            .is_some_and(|(_, body)| body.len() >= 10);
        assert!(!complete, "{raw}");
    }
    assert_eq!(upstream.opened(), 2);
}

#[tokio::test]
async fn responses_that_cannot_have_a_body_lose_their_content_length() {
    let upstream = Scripted::start(|_, request| {
        if request.head.starts_with("GET /204") {
            Answer::Reply(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        } else {
            Answer::Reply(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"a\"\r\n\r\n")
        }
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let addr = gw.listener_addr("public").expect("listener");
    for path in ["/204", "/304"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let raw = raw_exchange(addr, request.as_bytes(), "\r\n\r\n").await;
        let head = raw.to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("http/1.1 {}", &path[1..])),
            "{raw}"
        );
        assert!(!head.contains("content-length"), "{raw}");
    }
}

#[tokio::test]
async fn a_switch_nobody_asked_for_and_endless_interim_responses_are_bad_gateways() {
    let upstream = Scripted::start(|_, request| {
        if request.head.starts_with("GET /switch") {
            Answer::ReplyAndClose(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nraw bytes",
            )
        } else {
            Answer::ReplyAndClose(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
                  HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
                  HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            )
        }
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let client = Client::new();
    for path in ["/switch", "/interim"] {
        let reply = within("the response", client.get(&url(&gw, path))).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{path}: {}",
            reply.text()
        );
    }
}

#[tokio::test]
async fn trailers_lose_framing_fields_both_ways() {
    let upstream = Scripted::start(|_, _| {
        Answer::Reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\
              Content-Length: 99\r\nHost: evil.example\r\nX-Checksum: abc\r\n\r\n",
        )
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let addr = gw.listener_addr("public").expect("listener");
    let raw = raw_exchange(
        addr,
        b"POST /up HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          3\r\nabc\r\n0\r\nX-Sum: 3\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
        "x-checksum: abc\r\n\r\n",
    )
    .await;
    let lower = raw.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{raw}");
    let (_, body) = lower.split_once("\r\n\r\n").expect("a head");
    assert!(
        !body.contains("content-length") && !body.contains("evil"),
        "{raw}"
    );
    // The request's trailers went upstream, without their framing fields.
    let received = upstream.received();
    let body = String::from_utf8_lossy(&received[0].body).to_ascii_lowercase();
    assert!(body.starts_with("3\r\nabc\r\n0\r\n"), "{body:?}");
    assert!(body.contains("x-sum: 3\r\n"), "{body:?}");
    assert!(
        !body.contains("content-length") && !body.contains("transfer-encoding"),
        "{body:?}"
    );
}

#[tokio::test]
async fn the_content_length_upstream_is_the_one_the_gateway_read() {
    let upstream =
        Scripted::start(|_, _| Answer::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
            .await;
    let gw = gateway_for(&upstream).await;
    let addr = gw.listener_addr("public").expect("listener");
    for lengths in [
        "Content-Length: 005\r\n",
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
    ] {
        let request =
            format!("POST /len HTTP/1.1\r\nHost: gw\r\n{lengths}Connection: close\r\n\r\nhello");
        let raw = raw_exchange(addr, request.as_bytes(), "\r\n\r\n").await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        let received = upstream.received();
        let last = received.last().expect("the upstream got the request");
        let lower = last.head.to_ascii_lowercase();
        assert_eq!(
            lower.matches("content-length").count(),
            1,
            "{lengths:?}: {}",
            last.head
        );
        assert!(lower.contains("content-length: 5\r\n"), "{}", last.head);
        assert_eq!(last.body, b"hello");
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_while_idle_is_not_reused() {
    // Every response says keep-alive, then the upstream closes: the gateway must see
    // the close before it reuses the connection for a request it may not resend.
    let upstream = Scripted::start(|_, _| {
        Answer::ReplyAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let client = Client::new();
    for attempt in 0..5 {
        let reply = within(
            "the response",
            client.send(Method::POST, &url(&gw, "/once"), &[], "x"),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "attempt {attempt}: {}",
            reply.text()
        );
        // The upstream has closed its side before the next request is sent.
        crate::support::eventually("the upstream has closed the connection", async || {
            upstream.closed.load(Ordering::SeqCst) == attempt + 1
        })
        .await;
    }
    assert_eq!(upstream.opened(), 5);
}

#[tokio::test]
async fn early_hints_reach_http_1_1_clients_before_the_final_response() {
    let upstream = Scripted::start(|_, _| {
        Answer::Reply(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x-hop\r\n\r\n\
              HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone",
        )
    })
    .await;
    let gw = gateway_for(&upstream).await;
    let addr = gw.listener_addr("public").expect("listener");
    let raw = raw_exchange(
        addr,
        b"GET /page HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        "\r\n\r\ndone",
    )
    .await;
    let expected_start = "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n\
                          HTTP/1.1 103 Early Hints\r\nlink: </b.js>; rel=preload\r\n\r\n\
                          HTTP/1.1 200 OK\r\n";
    assert!(raw.starts_with(expected_start), "{raw}");
    assert!(raw.ends_with("\r\n\r\ndone"), "{raw}");
    // HTTP/1.0 clients never get an interim response (RFC 9110 §15.2).
    let raw = raw_exchange(addr, b"GET /page HTTP/1.0\r\n\r\n", "\r\n\r\ndone").await;
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
}
