//! HTTP/2 clients (h2c with prior knowledge) whose requests the gateway translates for
//! HTTP/1.1 upstreams: `:authority` against `Host`, field values with surrounding
//! whitespace, userinfo, `cookie` fields, a `:path` that is only a query, what hyper's
//! HTTP/2 server (h2) already refuses and how (a stream error or the whole connection),
//! header lists over the limit, streams cancelled in bulk, and streams whose client
//! grants no flow-control window.
//!
//! Requests a well-behaved client would send go through the `h2` crate's client; what it
//! refuses to send (connection-specific fields, uppercase names, a `:path` or
//! `:authority` it would normalise) goes out as raw frames with a literal HPACK encoding
//! ([`crate::support::h2::Raw`]). The translation as a whole is checked against a
//! reference by the differential test in `h2_translation`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use portcullis::RunningGateway;
use tokio::net::TcpStream;

use crate::support::backend::State;
use crate::support::h2::{Outcome, Raw, PROTOCOL_ERROR};
use crate::support::{
    eventually, gateway_in_front_of, metric_reaches, metrics_text, within, Backend, Gateway,
    Listener, Reply, Route, Upstream,
};

// ---------------------------------------------------------------------------------------
// The gateway and its backends

/// Three backends: `a` behind the route for host `a.example`, `b` behind `b.test`, and
/// `other` behind a route for any host. A path containing `/held` waits at the gate.
struct Hosts {
    a: Backend,
    b: Backend,
    other: Backend,
    gw: RunningGateway,
}

/// Answers with the `host` it received; holds paths containing `/held`.
async fn host_backend() -> Backend {
    Backend::start(|request, state| async move {
        if request.uri().path().contains("/held") {
            state.hold().await;
        }
        let host = request
            .headers()
            .get("host")
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default();
        Reply::ok(host)
    })
    .await
}

async fn hosts(listener: Listener) -> Hosts {
    let (a, b, other) = (
        host_backend().await,
        host_backend().await,
        host_backend().await,
    );
    let gw = Gateway::new()
        .listener(listener)
        .admin()
        .upstream("a", &a)
        .upstream("b", &b)
        .upstream("other", &other)
        .route_with(Route::prefix("/").host("a.example").to("a"))
        .route_with(Route::prefix("/").host("b.test").to("b"))
        .route("/", "other")
        .start()
        .await;
    Hosts { a, b, other, gw }
}

impl Hosts {
    fn addr(&self) -> std::net::SocketAddr {
        self.gw.listener_addr("public").expect("listener `public`")
    }

    /// Requests seen by all three backends.
    fn forwarded(&self) -> usize {
        [&self.a, &self.b, &self.other]
            .iter()
            .map(|backend| backend.state.arrived())
            .sum()
    }
}

/// The `host` header values a backend received.
fn hosts_seen(state: &State) -> Vec<String> {
    state
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|seen| {
            seen.headers
                .get("host")
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                .unwrap_or_default()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// A well-behaved client: the h2 crate

type Sender = h2::client::SendRequest<Bytes>;

/// An h2c connection with prior knowledge; the connection task is returned so that a
/// test can see it end.
async fn connect_h2(
    addr: std::net::SocketAddr,
    builder: &h2::client::Builder,
) -> (Sender, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    // A RST_STREAM and the next HEADERS are small writes in a row: without this,
    // Nagle's algorithm holds the second until the first is acknowledged.
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let (sender, connection) = within("the HTTP/2 handshake", builder.handshake(tcp))
        .await
        .expect("HTTP/2 handshake");
    (sender, tokio::spawn(connection))
}

/// A finished response: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `request` (no body) and reads its whole response.
async fn send(sender: &Sender, request: Request<()>) -> Result<Answer, h2::Error> {
    let mut sender = within("a stream", sender.clone().ready()).await?;
    let (response, _) = sender.send_request(request, true)?;
    let response = within("the response", response).await?;
    let (parts, mut body) = response.into_parts();
    let mut bytes = BytesMut::new();
    while let Some(chunk) = within("the body", body.data()).await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: bytes.freeze(),
    })
}

fn get(uri: &str) -> http::request::Builder {
    Request::builder().method(Method::GET).uri(uri)
}

fn bad_request(answer: &Answer, what: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
    assert_eq!(answer.json()["error"], "bad_request", "{what}");
    assert!(answer.headers.contains_key("x-request-id"), "{what}");
}

// ---------------------------------------------------------------------------------------
// Host and authority

#[tokio::test]
async fn authority_and_host_that_name_different_hosts_are_refused() {
    let hosts = hosts(Listener::public()).await;
    let (sender, _) = connect_h2(hosts.addr(), &h2::client::Builder::new()).await;
    for (authority, host) in [("a.example", "b.test"), ("b.test", "a.example")] {
        let request = get(&format!("http://{authority}/x"))
            .header("host", host)
            .body(())
            .expect("request");
        let answer = send(&sender, request).await.expect("an answer");
        bad_request(&answer, &format!(":authority {authority}, host {host}"));
    }
    assert_eq!(hosts.forwarded(), 0, "nothing was forwarded");
}

#[tokio::test]
async fn the_host_upstream_comes_from_the_authority_when_both_name_the_same_host() {
    let hosts = hosts(Listener::public()).await;
    let (sender, _) = connect_h2(hosts.addr(), &h2::client::Builder::new()).await;
    // Scheme-based normalisation (RFC 9113, 8.3.1): case and the default port.
    for host in ["A.Example", "a.example:80", "a.example"] {
        let request = get("http://a.example/x")
            .header("host", host)
            .body(())
            .expect("request");
        let answer = send(&sender, request).await.expect("an answer");
        assert_eq!(answer.status, StatusCode::OK, "host {host}");
        assert_eq!(answer.body, "a.example", "host {host}: the upstream's Host");
    }
    // A different port is a different authority.
    let request = get("http://a.example/x")
        .header("host", "a.example:8080")
        .body(())
        .expect("request");
    bad_request(
        &send(&sender, request).await.expect("an answer"),
        "port 8080",
    );
    assert_eq!(hosts_seen(&hosts.a.state), ["a.example"; 3]);
}

#[tokio::test]
async fn a_request_with_only_host_is_routed_and_forwarded_by_it() {
    let hosts = hosts(Listener::public()).await;
    let mut raw = Raw::connect(hosts.addr()).await;
    raw.get(1, "/x", None, Some("b.test:8080")).await;
    assert_eq!(raw.outcome(1).await, Outcome::Response(Some(200)));
    assert_eq!(hosts_seen(&hosts.b.state), ["b.test:8080"]);
    assert_eq!(hosts.forwarded(), 1);
}

#[tokio::test]
async fn userinfo_in_the_authority_is_refused() {
    let hosts = hosts(Listener::public()).await;
    let (sender, _) = connect_h2(hosts.addr(), &h2::client::Builder::new()).await;
    let request = get("http://a.example@b.test/x").body(()).expect("request");
    bad_request(
        &send(&sender, request).await.expect("an answer"),
        "userinfo",
    );
    // The same in a lone Host field.
    let mut raw = Raw::connect(hosts.addr()).await;
    raw.get(1, "/x", None, Some("a.example@b.test")).await;
    assert_eq!(raw.outcome(1).await, Outcome::Response(Some(400)));
    assert_eq!(raw.error_code(1).await, "bad_request");
    assert_eq!(hosts.forwarded(), 0, "nothing was forwarded");
}

// ---------------------------------------------------------------------------------------
// Field values, cookies, the path

#[tokio::test]
async fn field_values_with_surrounding_whitespace_are_refused() {
    let hosts = hosts(Listener::public()).await;
    let (sender, _) = connect_h2(hosts.addr(), &h2::client::Builder::new()).await;
    for (name, value) in [
        ("host", "a.example "),
        ("x-note", " leading"),
        ("x-note", "trailing\t"),
    ] {
        let request = get("http://a.example/x")
            .header(name, HeaderValue::from_str(value).expect("a valid value"))
            .body(())
            .expect("request");
        let answer = send(&sender, request).await.expect("an answer");
        bad_request(&answer, &format!("{name}: {value:?}"));
    }
    // A lone Host with a trailing space would be routed as another host than the one
    // the upstream reads.
    let mut raw = Raw::connect(hosts.addr()).await;
    raw.get(1, "/x", None, Some("b.test ")).await;
    assert_eq!(raw.outcome(1).await, Outcome::Response(Some(400)));
    assert_eq!(raw.error_code(1).await, "bad_request");
    // Whitespace inside a value is fine.
    let request = get("http://a.example/x")
        .header("x-note", "two words")
        .body(())
        .expect("request");
    assert_eq!(
        send(&sender, request).await.expect("an answer").status,
        StatusCode::OK
    );
    assert_eq!(hosts.forwarded(), 1);
}

#[tokio::test]
async fn cookie_fields_are_joined_into_one_for_http1_upstreams() {
    let backend = Backend::echo().await;
    let gw = gateway_in_front_of(&backend).await;
    let addr = gw.listener_addr("public").expect("listener");
    let (sender, _) = connect_h2(addr, &h2::client::Builder::new()).await;
    let request = get("http://api.test/x")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(())
        .expect("request");
    let answer = send(&sender, request).await.expect("an answer");
    assert_eq!(answer.status, StatusCode::OK);
    let seen = backend.state.last_seen();
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"], "one field, joined with `; `");
    // One cookie field goes on as it is.
    let request = get("http://api.test/x")
        .header("cookie", "only=1")
        .body(())
        .expect("request");
    send(&sender, request).await.expect("an answer");
    let seen = backend.state.last_seen();
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["only=1"]);
}

#[tokio::test]
async fn a_path_that_is_only_a_query_is_refused() {
    let hosts = hosts(Listener::public()).await;
    let mut raw = Raw::connect(hosts.addr()).await;
    raw.get(1, "?x=1", Some("a.example"), None).await;
    assert_eq!(raw.outcome(1).await, Outcome::Response(Some(400)));
    assert_eq!(
        raw.error_code(1).await,
        "bad_request",
        "the gateway's own 400"
    );
    raw.get(3, "/?x=1", Some("a.example"), None).await;
    assert_eq!(raw.outcome(3).await, Outcome::Response(Some(200)));
    let uris: Vec<String> = hosts
        .a
        .state
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|seen| seen.uri.clone())
        .collect();
    assert_eq!(uris, ["/?x=1"]);
}

// ---------------------------------------------------------------------------------------
// What h2 refuses on its own (pinned)

#[tokio::test]
async fn connection_specific_fields_reset_only_their_stream() {
    let hosts = hosts(Listener::public()).await;
    let mut raw = Raw::connect(hosts.addr()).await;
    let base = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/x"),
        (":authority", "a.example"),
    ];
    let hostile = [
        ("connection", "x-secret"),
        ("transfer-encoding", "chunked"),
        ("keep-alive", "timeout=5"),
        ("upgrade", "websocket"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
    ];
    let mut stream = 1;
    for (name, value) in hostile {
        let mut fields = base.to_vec();
        fields.push((name, value));
        raw.request(stream, &fields, true).await;
        // A well-formed sibling right behind it on the same connection.
        raw.get(stream + 2, "/x", Some("a.example"), None).await;
        assert_eq!(
            raw.outcome(stream).await,
            Outcome::Reset(PROTOCOL_ERROR),
            "{name}: {value}"
        );
        assert_eq!(
            raw.outcome(stream + 2).await,
            Outcome::Response(Some(200)),
            "the sibling of {name}"
        );
        stream += 4;
    }
    // `te: trailers` is allowed.
    let mut fields = base.to_vec();
    fields.push(("te", "trailers"));
    raw.request(stream, &fields, true).await;
    assert_eq!(raw.outcome(stream).await, Outcome::Response(Some(200)));
    assert_eq!(hosts.a.state.arrived(), hostile.len() + 1);
}

#[tokio::test]
async fn a_malformed_authority_or_path_resets_only_its_stream() {
    let hosts = hosts(Listener::public()).await;
    let mut raw = Raw::connect(hosts.addr()).await;
    let mut stream = 1;
    for (authority, path) in [
        ("a.example ", "/x"),
        ("a.ex ample", "/x"),
        ("a.example", "/a b"),
        ("a.example", ""),
    ] {
        raw.get(stream, path, Some(authority), None).await;
        assert_eq!(
            raw.outcome(stream).await,
            Outcome::Reset(PROTOCOL_ERROR),
            "{authority:?} {path:?}"
        );
        stream += 2;
    }
    raw.get(stream, "/x", Some("a.example"), None).await;
    assert_eq!(raw.outcome(stream).await, Outcome::Response(Some(200)));
    assert_eq!(hosts.forwarded(), 1);
}

#[tokio::test]
async fn an_invalid_field_name_ends_the_whole_connection() {
    // h2 rejects an uppercase name (or a value with a control character) while decoding
    // HPACK, which it treats as a connection error: GOAWAY with PROTOCOL_ERROR, taking
    // sibling streams with it. RFC 9113 (8.2.1) would allow a stream error; h2 offers
    // no way to choose one. Pinned so that a change in h2 is noticed.
    let hosts = hosts(Listener::public()).await;
    for (n, (name, value)) in [("X-Upper", "1"), ("x-ctl", "a\u{1}b")]
        .into_iter()
        .enumerate()
    {
        let mut raw = Raw::connect(hosts.addr()).await;
        raw.get(1, "/held", Some("a.example"), None).await;
        eventually("the first stream is forwarded", async || {
            hosts.a.state.arrived() > n
        })
        .await;
        raw.request(
            3,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/x"),
                (":authority", "a.example"),
                (name, value),
            ],
            true,
        )
        .await;
        assert_eq!(
            raw.outcome(3).await,
            Outcome::GoAway(PROTOCOL_ERROR),
            "{name}"
        );
        assert_eq!(
            raw.outcome(1).await,
            Outcome::GoAway(PROTOCOL_ERROR),
            "the sibling stream dies with the connection"
        );
    }
}

#[tokio::test]
async fn a_body_that_disagrees_with_content_length_is_refused() {
    // Counts request bodies the upstream read to their end without an error.
    let complete = Arc::new(AtomicUsize::new(0));
    let counted = complete.clone();
    let backend = Backend::start(move |request, _| {
        let complete = counted.clone();
        async move {
            if request.into_body().collect().await.is_ok() {
                complete.fetch_add(1, Ordering::SeqCst);
            }
            Reply::ok("read")
        }
    })
    .await;
    let gw = gateway_in_front_of(&backend).await;
    let addr = gw.listener_addr("public").expect("listener");
    let (sender, connection) = connect_h2(addr, &h2::client::Builder::new()).await;
    // `first`: sent on its own, the rest once the upstream has the request.
    for (length, first, rest) in [
        ("10", "", "abc"),
        ("2", "", "abcdef"),
        ("10", "a", "bc"),
        ("2", "a", "bcdef"),
    ] {
        let what = format!("content-length {length}, {first:?} then {rest:?}");
        let request = Request::post("http://api.test/upload")
            .header("content-length", length)
            .body(())
            .expect("request");
        let mut ready = within("a stream", sender.clone().ready())
            .await
            .expect("ready");
        let (response, mut request_body) = ready.send_request(request, false).expect("sent");
        let arrived = backend.state.arrived();
        if !first.is_empty() {
            request_body
                .send_data(Bytes::from(first), false)
                .expect("data");
            eventually("the request is forwarded", async || {
                backend.state.arrived() > arrived
            })
            .await;
        }
        request_body
            .send_data(Bytes::from(rest), true)
            .expect("data");
        let error = within("the outcome", response)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: the stream is reset"));
        assert_eq!(error.reason(), Some(h2::Reason::PROTOCOL_ERROR), "{what}");
        if first.is_empty() {
            assert_eq!(backend.state.arrived(), arrived, "{what}: not forwarded");
        }
    }
    // The upstream never read a body of the length it was promised; the connection
    // goes on.
    assert!(backend.state.arrived() >= 2);
    assert_eq!(complete.load(Ordering::SeqCst), 0);
    assert!(!connection.is_finished());
}

// ---------------------------------------------------------------------------------------
// Hostile hosts

/// Whatever `:authority` and `host` say, an upstream only ever gets a Host naming the
/// host its route was chosen for.
#[tokio::test]
async fn no_request_reaches_an_upstream_with_another_host_than_it_was_routed_by() {
    let hosts = hosts(Listener::public()).await;
    let spellings = [
        None,
        Some("a.example"),
        Some("A.EXAMPLE"),
        Some("a.example:80"),
        Some("a.example:8080"),
        Some("b.test"),
        Some("b.test:443"),
        Some("a.example@b.test"),
        Some("b.test@a.example"),
        Some("a.example "),
        Some(" b.test"),
        Some("a.example\tx"),
        Some("a.example,b.test"),
        Some("a.example/x"),
        Some("a.example:b.test"),
        Some("[::1]:80"),
        Some(""),
    ];
    let mut raw = Raw::connect(hosts.addr()).await;
    let mut stream = 1;
    for authority in spellings {
        for host in spellings {
            raw.get(stream, "/x", authority, host).await;
            let outcome = raw.outcome(stream).await;
            assert!(
                matches!(outcome, Outcome::Response(_) | Outcome::Reset(_)),
                "{authority:?} {host:?}: {outcome:?}"
            );
            stream += 2;
        }
    }
    let name = |host: &str| {
        let host = host.to_ascii_lowercase();
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
            _ => host,
        }
    };
    for seen in hosts_seen(&hosts.a.state) {
        assert_eq!(name(&seen), "a.example", "upstream a got host {seen:?}");
    }
    for seen in hosts_seen(&hosts.b.state) {
        assert_eq!(name(&seen), "b.test", "upstream b got host {seen:?}");
    }
    for seen in hosts_seen(&hosts.other.state) {
        let seen = name(seen.trim());
        assert!(
            seen != "a.example" && seen != "b.test",
            "the catch-all upstream got host {seen:?}"
        );
    }
    assert!(hosts.a.state.arrived() > 0 && hosts.b.state.arrived() > 0);
}

// ---------------------------------------------------------------------------------------
// Header lists over the limit

#[tokio::test]
async fn a_header_list_over_the_limit_gets_a_bare_431_and_the_connection_goes_on() {
    let hosts = hosts(Listener::public().max_header_size(8 * 1024)).await;
    let (sender, connection) = connect_h2(hosts.addr(), &h2::client::Builder::new()).await;
    let big = "x".repeat(10 * 1024);
    let request = get("http://a.example/x")
        .header("x-big", big.as_str())
        .body(())
        .expect("request");
    let answer = send(&sender, request).await.expect("an answer");
    // h2 answers by itself: no JSON body, no request id, not counted by the gateway.
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(answer.body.is_empty());
    assert!(!answer.headers.contains_key("x-request-id"));
    assert_eq!(hosts.forwarded(), 0);
    // The connection goes on.
    let request = get("http://a.example/x").body(()).expect("request");
    assert_eq!(
        send(&sender, request).await.expect("an answer").status,
        StatusCode::OK
    );
    // Over four times the limit, h2 ends the connection.
    let huge = "x".repeat(40 * 1024);
    let request = get("http://a.example/x")
        .header("x-huge", huge.as_str())
        .body(())
        .expect("request");
    let error = send(&sender, request)
        .await
        .err()
        .expect("the connection ends");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{error}"
    );
    let ended = within("the connection ends", connection)
        .await
        .expect("the connection task");
    assert!(ended.is_err());
    assert_eq!(hosts.forwarded(), 1);
}

// ---------------------------------------------------------------------------------------
// Streams cancelled in bulk

#[tokio::test]
async fn a_client_that_cancels_stream_after_stream_gets_its_connection_closed() {
    let hosts = hosts(Listener::public()).await;
    let builder = h2::client::Builder::new();
    let (bystander, _) = connect_h2(hosts.addr(), &builder).await;
    let request = get("http://b.test/fast").body(()).expect("request");
    assert_eq!(
        send(&bystander, request).await.expect("an answer").status,
        StatusCode::OK
    );

    let (sender, connection) = connect_h2(hosts.addr(), &builder).await;
    let mut opened = 0;
    while opened < 2000 && !connection.is_finished() {
        let Ok(mut ready) = sender.clone().ready().await else {
            break;
        };
        let request = get("http://a.example/held").body(()).expect("request");
        let Ok((response, _)) = ready.send_request(request, true) else {
            break;
        };
        opened += 1;
        // Reset once the gateway has forwarded it (its work is under way), as a paced
        // rapid reset does.
        eventually("the request is forwarded", async || {
            hosts.a.state.arrived() >= opened || connection.is_finished()
        })
        .await;
        drop(response);
    }
    eventually("the connection ends", async || connection.is_finished()).await;
    // The 101st cancellation closes it (a few more streams may open meanwhile).
    assert!(
        (101..200).contains(&opened),
        "the gateway closed the connection after {opened} streams"
    );
    metric_reaches(
        &hosts.gw,
        "portcullis_http2_cancel_floods_total{listener=\"public\"}",
        1.0,
    )
    .await;
    // The other connection is unaffected.
    let request = get("http://b.test/fast").body(()).expect("request");
    assert_eq!(
        send(&bystander, request).await.expect("an answer").status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_client_that_cancels_some_of_many_streams_keeps_its_connection() {
    let hosts = hosts(Listener::public()).await;
    let (sender, connection) = connect_h2(hosts.addr(), &h2::client::Builder::new()).await;
    // 150 cancelled among 450: over the count, but not most of its requests.
    for i in 0..450 {
        if i % 3 == 0 {
            let mut ready = within("a stream", sender.clone().ready())
                .await
                .expect("ready");
            let request = get("http://a.example/held").body(()).expect("request");
            let (response, _) = ready.send_request(request, true).expect("sent");
            let arrived = hosts.a.state.arrived();
            eventually("the request is forwarded", async || {
                hosts.a.state.arrived() > arrived
            })
            .await;
            drop(response);
        } else {
            let request = get("http://b.test/fast").body(()).expect("request");
            assert_eq!(
                send(&sender, request).await.expect("an answer").status,
                StatusCode::OK
            );
        }
    }
    assert!(!connection.is_finished());
    let text = metrics_text(&hosts.gw).await;
    assert_eq!(
        crate::support::metric(
            &text,
            "portcullis_http2_cancel_floods_total{listener=\"public\"}"
        ),
        Some(0.0)
    );
}

// ---------------------------------------------------------------------------------------
// Streams whose client grants no window

/// Opens a stream for `/big` on `sender` and waits for its response head.
async fn big_response_head(sender: &Sender) -> http::Response<h2::RecvStream> {
    let mut ready = within("a stream", sender.clone().ready())
        .await
        .expect("ready");
    let (response, _) = ready
        .send_request(get("http://api.test/big").body(()).expect("request"), true)
        .expect("sent");
    within("the response head", response)
        .await
        .expect("response")
}

#[tokio::test]
async fn a_stream_without_window_is_reset_after_the_idle_timeout_and_frees_its_permit() {
    let backend = Backend::start(|_, _| async move { Reply::ok(vec![b'x'; 64 * 1024]) }).await;
    let gw = Gateway::new()
        .listener(Listener::public().idle_timeout(Duration::from_millis(200)))
        .admin()
        .upstream("u", Upstream::new(&backend).max_in_flight(1).max_queue(0))
        .route("/", "u")
        .start()
        .await;
    let addr = gw.listener_addr("public").expect("listener");
    let in_flight = "portcullis_upstream_in_flight{upstream=\"u\"}";

    // A client that grants no window to its streams: the response's headers arrive, its
    // body cannot.
    let mut stalling = h2::client::Builder::new();
    stalling.initial_window_size(0);
    let (sender, connection) = connect_h2(addr, &stalling).await;
    let response = big_response_head(&sender).await;
    assert_eq!(response.status(), StatusCode::OK);

    // After idle_timeout without progress the stream is reset and the permit is back
    // (it would be held for as long as the client stays connected).
    metric_reaches(&gw, in_flight, 0.0).await;
    let mut body = response.into_body();
    let error = within("the stream is reset", body.data())
        .await
        .expect("an outcome")
        .expect_err("the stream is reset");
    assert_eq!(error.reason(), Some(h2::Reason::CANCEL), "{error}");

    // Another client's request fits under `max_in_flight: 1`.
    let (other, _) = connect_h2(addr, &h2::client::Builder::new()).await;
    let answer = send(
        &other,
        get("http://api.test/big").body(()).expect("request"),
    )
    .await
    .expect("an answer");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.len(), 64 * 1024);

    // The stalling client's connection is still open: a new stream gets its head.
    let response = big_response_head(&sender).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!connection.is_finished());
}
