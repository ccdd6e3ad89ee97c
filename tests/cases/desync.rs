//! Request smuggling, tried as an attacker would over real sockets: every malformed
//! body framing (chunk sizes, chunk extensions, the CRLF after chunk data, trailer
//! lines, conflicting lengths) is followed on the same connection by a pipelined
//! request, sent whole and split into two writes at every byte boundary. Each time the
//! client must get exactly one response, a 400 or 501 with `Connection: close`, the
//! connection must close, and the upstream must never see the pipelined request.
//! Well-formed bodies followed by the same pipelined request, split the same ways, get
//! both answers: the suite can tell a desync from a refusal.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use portcullis::RunningGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{within, Backend, Gateway, Listener, Reply, Route};

/// The request that must never reach the upstream after a refused one.
const SMUGGLED: &str = "GET /api/SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n";
/// The head of a chunked upload; each case appends its body.
const CHUNKED_HEAD: &str = "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Chunked bodies whose framing is broken, each a way some parser in front of or
/// behind a proxy has been made to disagree.
const BAD_CHUNKED_BODIES: &[&str] = &[
    "Z\r\nabc\r\n0\r\n\r\n",
    "0x3\r\nabc\r\n0\r\n\r\n",
    "+3\r\nabc\r\n0\r\n\r\n",
    "-3\r\nabc\r\n0\r\n\r\n",
    " 3\r\nabc\r\n0\r\n\r\n",
    "3 \r\nabc\r\n0\r\n\r\n",
    "00000000000000003\r\nabc\r\n0\r\n\r\n",
    "fffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "3\r\nabcX\r\n0\r\n\r\n",
    "3\r\nabc0\r\n\r\n",
    "3\nabc\r\n0\r\n\r\n",
    "3\r\nabc\n0\r\n\r\n",
    "3\rabc\r\n0\r\n\r\n",
    "3;\r\nabc\r\n0\r\n\r\n",
    "3;a b\r\nabc\r\n0\r\n\r\n",
    "3;a=\"b\r\nabc\r\n0\r\n\r\n",
    "3;a=\x01\r\nabc\r\n0\r\n\r\n",
    "3 ;a\r\nabc\r\n0\r\n\r\n",
    "3\r\nabc\r\n0\r\nno-colon\r\n\r\n",
    "3\r\nabc\r\n0\r\nx-t : 1\r\n\r\n",
    "3\r\nabc\r\n0\r\nx-t: 1\r\n folded\r\n\r\n",
    "3\r\nabc\r\n0\r\nx-t: 1\n\n",
    "3\r\nabc\r\n0\r\nx-t: a\x00b\r\n\r\n",
    "3\r\nabc\r\n0\n\n",
];

/// Heads whose body length cannot be told: refused before any body is read.
const BAD_LENGTH_HEADS: &[&str] = &[
    "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabc",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST /api/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
];

/// Well-formed uploads: each is answered, then the pipelined request is too.
const GOOD_UPLOADS: &[&str] = &[
    "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d e\"\r\nabc\r\n0\r\nx-sum: 3\r\n\r\n",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
];

/// A backend that reads each body and answers `ok <path>`.
async fn echo_backend() -> Backend {
    Backend::start(|request, _| async move {
        let path = request.uri().path().to_owned();
        let _ = request.into_body().collect().await;
        Reply::ok(format!("ok {path}"))
    })
    .await
}

async fn gateway_to(backend: &Backend) -> RunningGateway {
    Gateway::new()
        .listener(Listener::public().idle_timeout(Duration::from_secs(5)))
        .upstream("u", backend)
        .route_with(Route::prefix("/api").named("api").to("u"))
        .start()
        .await
}

/// What the client received on one connection, read until the gateway closed it.
struct Received {
    text: String,
    closed: bool,
}

impl Received {
    /// The status codes of the responses, in order.
    fn statuses(&self) -> Vec<u16> {
        self.text
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, _)| self.text.get(at + 9..at + 12)?.parse().ok())
            .collect()
    }
}

/// Writes `raw` in two writes split at `split` (a pause between them, so that the
/// gateway usually reads them apart; the assertions hold however they arrive), then
/// reads until the gateway closes the connection or `expected_responses` bodies have
/// arrived and a moment passed.
async fn send_split(addr: SocketAddr, raw: &[u8], split: usize) -> Received {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    let (first, second) = raw.split_at(split);
    if !first.is_empty() {
        stream.write_all(first).await.expect("writes");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The gateway may have answered and closed already: a failed write is fine.
    let _ = stream.write_all(second).await;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => break false,
        }
    };
    Received {
        text: String::from_utf8_lossy(&received).into_owned(),
        closed,
    }
}

/// Sends `raw` whole and split at every byte boundary, a few connections at a time;
/// `check` sees each outcome with the split that produced it.
async fn at_every_split(addr: SocketAddr, raw: String, check: impl Fn(usize, &Received)) {
    let raw = std::sync::Arc::new(raw.into_bytes());
    let splits: Vec<usize> = (0..raw.len()).collect();
    for batch in splits.chunks(16) {
        let mut tasks = tokio::task::JoinSet::new();
        for &split in batch {
            let raw = raw.clone();
            tasks.spawn(async move { (split, send_split(addr, &raw, split).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (split, received) = done.expect("joins");
            check(split, &received);
        }
    }
}

fn refused_once(what: &str, split: usize, received: &Received, allowed: &[u16]) {
    let statuses = received.statuses();
    assert!(
        statuses.len() == 1 && allowed.contains(&statuses[0]),
        "{what:?} split at {split}: expected one refusal, got {statuses:?}:\n{}",
        received.text
    );
    assert!(
        received
            .text
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{what:?} split at {split}: the refusal does not say it closes:\n{}",
        received.text
    );
    assert!(
        received.closed,
        "{what:?} split at {split}: the connection stayed open"
    );
}

fn assert_never_smuggled(backend: &Backend) {
    let seen = backend.state.seen.lock().expect("lock");
    assert!(
        seen.iter().all(|request| !request.uri.contains("SMUGGLED")),
        "the upstream saw a smuggled request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_never_lets_the_next_request_through() {
    let backend = echo_backend().await;
    let gw = gateway_to(&backend).await;
    let addr = gw.listener_addr("public").expect("listener");
    for body in BAD_CHUNKED_BODIES {
        let raw = format!("{CHUNKED_HEAD}{body}{SMUGGLED}");
        within(
            "every split of one case",
            at_every_split(addr, raw, |split, received| {
                refused_once(body, split, received, &[400]);
            }),
        )
        .await;
    }
    assert_never_smuggled(&backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_untellable_length_is_refused_before_the_next_request() {
    let backend = echo_backend().await;
    let gw = gateway_to(&backend).await;
    let addr = gw.listener_addr("public").expect("listener");
    for head in BAD_LENGTH_HEADS {
        let raw = format!("{head}{SMUGGLED}");
        within(
            "every split of one case",
            at_every_split(addr, raw, |split, received| {
                refused_once(head, split, received, &[400, 501]);
            }),
        )
        .await;
    }
    assert_eq!(
        backend.state.arrived(),
        0,
        "nothing of a refused head reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_body_and_the_request_after_it_are_both_answered_however_split() {
    let backend = echo_backend().await;
    let gw = gateway_to(&backend).await;
    let addr = gw.listener_addr("public").expect("listener");
    for upload in GOOD_UPLOADS {
        // The second request closes the connection, so the client reads to the end.
        let raw = format!("{upload}GET /api/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        within(
            "every split of one case",
            at_every_split(addr, raw, |split, received| {
                assert_eq!(
                    received.statuses(),
                    [200, 200],
                    "{upload:?} split at {split}:\n{}",
                    received.text
                );
                assert!(
                    received.text.contains("ok /api/x") && received.text.contains("ok /api/next"),
                    "{upload:?} split at {split}:\n{}",
                    received.text
                );
            }),
        )
        .await;
    }
}
