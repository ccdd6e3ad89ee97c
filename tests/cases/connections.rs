//! Connection handling: thousands of keep-alive connections at once, pooled upstream
//! connections that the upstream closes, and graceful shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::support::client::until_read_by_peer;
use crate::support::{
    eventually, metric, url, within, Backend, Client, Gateway, Listener, Reply, Upstream,
};

/// Reads one HTTP/1.1 response with a Content-Length body; returns the status code.
async fn read_response(reader: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).await.expect("header line");
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.expect("body");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_keep_alive_connections_are_served_at_once() {
    const CONNECTIONS: usize = 2000;
    let _ = portcullis::raise_open_files_limit();
    let backend = Backend::start(|_, _| async move { Reply::ok("pong") }).await;
    let gw = Gateway::new()
        .listener(Listener::public().max_connections(5000))
        .admin()
        .upstream(
            "u",
            Upstream::new(&backend)
                .max_in_flight(4096)
                .max_queue(4096)
                .queue_timeout(Duration::from_secs(30)),
        )
        .route("/", "u")
        .start()
        .await;
    let addr = gw.listener_addr("public").expect("listener");
    // All clients and this test meet twice: once every connection has been served,
    // and again after the test has read the metrics while all of them are open.
    let all_open = Arc::new(Barrier::new(CONNECTIONS + 1));
    let measured = Arc::new(Barrier::new(CONNECTIONS + 1));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let all_open = all_open.clone();
            let measured = measured.clone();
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connects");
                let mut reader = BufReader::new(stream);
                reader
                    .get_mut()
                    .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("writes");
                let first = read_response(&mut reader).await;
                // Every connection stays open until all of them have been served once.
                all_open.wait().await;
                measured.wait().await;
                reader
                    .get_mut()
                    .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("writes");
                let second = read_response(&mut reader).await;
                (first, second)
            })
        })
        .collect();

    within("all connections served once", all_open.wait()).await;
    let text = Client::new()
        .get(&format!(
            "http://{}/metrics",
            gw.admin_addr().expect("admin")
        ))
        .await
        .text();
    assert_eq!(
        metric(&text, "portcullis_connections_active{listener=\"public\"}"),
        Some(CONNECTIONS as f64),
        "all client connections are open at once"
    );
    within("clients resume", measured.wait()).await;
    for client in clients {
        let (first, second) = within("a client", client).await.expect("joins");
        assert_eq!((first, second), (200, 200));
    }
    let text = Client::new()
        .get(&format!(
            "http://{}/metrics",
            gw.admin_addr().expect("admin")
        ))
        .await
        .text();
    assert_eq!(
        metric(&text, "portcullis_connections_total{listener=\"public\"}"),
        Some(CONNECTIONS as f64),
        "each connection carried both of its requests (keep-alive)"
    );
}

#[tokio::test]
async fn pooled_connections_closed_by_the_upstream_are_replaced() {
    let backend = Backend::start_with(
        |_, _| async move { Reply::ok("pong") },
        Some(Duration::from_millis(50)),
    )
    .await;
    let gw = Gateway::new()
        .upstream(
            "u",
            Upstream::new(&backend).pool_idle_timeout(Duration::from_secs(60)),
        )
        .route("/", "u")
        .start()
        .await;
    let client = Client::new();
    for round in 1..=3 {
        let reply = client.get(&url(&gw, "/x")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "round {round}: {}",
            reply.text()
        );
        // The upstream closes the idle pooled connection; the next request must not fail.
        eventually("the upstream closes its idle connection", async || {
            backend.state.connections_closed.load(Ordering::SeqCst) == round
        })
        .await;
    }
    assert_eq!(backend.state.connections_opened.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let held = Backend::holding().await;
    let gw = Gateway::new()
        .shutdown_timeout(Duration::from_secs(30))
        .upstream("u", &held)
        .route("/", "u")
        .start()
        .await;
    let addr = gw.listener_addr("public").expect("listener");
    let in_flight = {
        let u = url(&gw, "/slow");
        tokio::spawn(async move { Client::new().get(&u).await })
    };
    eventually("the request is in flight", async || {
        held.state.arrived() == 1
    })
    .await;

    let shutdown = tokio::spawn(gw.shutdown());
    eventually(
        "new connections are refused once shutdown begins",
        async || TcpStream::connect(addr).await.is_err(),
    )
    .await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the in-flight request"
    );

    held.state.release(1);
    let reply = within("the in-flight request", in_flight)
        .await
        .expect("joins");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "released");
    within("shutdown completes", shutdown).await.expect("joins");
}

#[tokio::test]
async fn beyond_max_connections_new_connections_wait_and_existing_ones_are_served() {
    let backend = Backend::start(|_, _| async move { Reply::ok("pong") }).await;
    let gw = Gateway::new()
        .workers(2)
        .listener(Listener::public().max_connections(2))
        .admin()
        .upstream("u", &backend)
        .route("/", "u")
        .start()
        .await;
    let addr = gw.listener_addr("public").expect("listener");
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = BufReader::new(TcpStream::connect(addr).await.expect("connects"));
    let mut second = BufReader::new(TcpStream::connect(addr).await.expect("connects"));
    for connection in [&mut first, &mut second] {
        connection
            .get_mut()
            .write_all(request)
            .await
            .expect("writes");
        assert_eq!(within("a response", read_response(connection)).await, 200);
    }

    // A third connection is accepted by the kernel but not served while two are open.
    let third = tokio::spawn(async move {
        let mut third = BufReader::new(TcpStream::connect(addr).await.expect("connects"));
        third
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("writes");
        read_response(&mut third).await
    });
    // The open connections keep being served meanwhile.
    for connection in [&mut first, &mut second] {
        connection
            .get_mut()
            .write_all(request)
            .await
            .expect("writes");
        assert_eq!(within("a response", read_response(connection)).await, 200);
    }
    let text = Client::new()
        .get(&format!(
            "http://{}/metrics",
            gw.admin_addr().expect("admin")
        ))
        .await
        .text();
    assert_eq!(
        metric(&text, "portcullis_connections_total{listener=\"public\"}"),
        Some(2.0)
    );
    assert!(!third.is_finished(), "the third connection waits");

    drop(first);
    assert_eq!(
        within("the third connection is served", third)
            .await
            .expect("joins"),
        200
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .listener(Listener::public().idle_timeout(Duration::from_millis(100)))
        .upstream("u", &backend)
        .route("/", "u")
        .start()
        .await;
    let mut silent = TcpStream::connect(gw.listener_addr("public").expect("listener"))
        .await
        .expect("connects");
    let mut buffer = [0u8; 16];
    let read = within(
        "the gateway closes the silent connection",
        silent.read(&mut buffer),
    )
    .await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection to be closed, got {read:?}"
    );
}

/// The gateway picks HTTP/1.1 or HTTP/2 from a connection's first bytes. A lone `P`
/// could begin `POST` or the HTTP/2 preface (`PRI * HTTP/2.0`): the request must be
/// served whatever arrives first.
#[tokio::test]
async fn a_request_whose_first_byte_arrives_alone_is_served() {
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .upstream("u", &backend)
        .route("/", "u")
        .start()
        .await;
    let addr = gw.listener_addr("public").expect("listener");
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream.write_all(b"P").await.expect("first byte");
    // The gateway has read the lone byte (nothing of it is left unread in its socket)
    // before the rest is written, and it waits for more instead of answering.
    until_read_by_peer(
        stream.local_addr().expect("address"),
        stream.peer_addr().expect("address"),
    )
    .await;
    let mut early = [0u8; 64];
    assert!(
        matches!(stream.try_read(&mut early), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the gateway answered a lone `P`"
    );
    stream
        .write_all(b"OST /split HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .expect("rest of the request");
    let mut reader = BufReader::new(stream);
    assert_eq!(
        within("the response", read_response(&mut reader)).await,
        200
    );
    let seen = backend.state.last_seen();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/split")
    );
}
