//! PROXY protocol v1 and v2 on listeners (`client_ip.proxy_protocol`), from raw sockets:
//! the header names the client that `X-Forwarded-For` and IP lists then use; it comes
//! before TLS and before HTTP/1.1 or h2c; a listener that requires it closes connections
//! without one, or with a broken one, without an HTTP answer, and counts them.
//!
//! Headers are built two ways, by `ppp`'s builder and by hand from the specification,
//! and [`headers_built_by_ppp_and_by_hand_are_the_same_bytes`] checks that they agree.
//! The tests connect from 127.0.0.1, so listeners trust `127.0.0.0/8` unless a test is
//! about an untrusted peer.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use portcullis::{Config, RunningGateway};
use ppp::v2::{Builder, Command, IPv4, IPv6, Protocol, Type};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::client::{get_http1, get_http2, until_read_by_peer, FirstBytesAlone};
use crate::support::pki::Pki;
use crate::support::tls::client_config;
use crate::support::{
    metric_reaches, metrics_text, within, Backend, Gateway, Listener, Route, Tls,
};

/// The client the balancer saw, as the tests' headers name it.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// An IPv6 client.
const CLIENT_V6: &str = "2001:db8::7";
/// The addresses the `guarded` route's policy denies.
const DENIED: &str = "203.0.113.0/24";

// ---------------------------------------------------------------------------------------
// Headers

/// A version 1 header for a TCP4 client.
fn v1_tcp4(client: Ipv4Addr) -> Vec<u8> {
    format!("PROXY TCP4 {client} 192.0.2.1 56324 443\r\n").into_bytes()
}

/// A version 2 `PROXY` header built by `ppp`, with a few TLVs (ALPN, authority, a
/// unique id, and NOOP padding), as HAProxy's `send-proxy-v2` and AWS NLB send them.
fn v2_proxy(addresses: impl Into<ppp::v2::Addresses>) -> Vec<u8> {
    Builder::with_addresses(
        ppp::v2::Version::Two | Command::Proxy,
        Protocol::Stream,
        addresses,
    )
    .write_tlv(Type::ALPN, b"h2")
    .and_then(|b| b.write_tlv(Type::Authority, b"api.example.com"))
    .and_then(|b| b.write_tlv(Type::UniqueId, b"conn-4711"))
    .and_then(|b| b.write_tlv(Type::NoOp, &[0; 5]))
    .and_then(Builder::build)
    .expect("a v2 header builds")
}

fn v2_tcp4(client: Ipv4Addr) -> Vec<u8> {
    v2_proxy(IPv4::new(client, Ipv4Addr::new(192, 0, 2, 1), 56324, 443))
}

fn v2_tcp6(client: &str) -> Vec<u8> {
    let client: Ipv6Addr = client.parse().expect("an IPv6 address");
    let server: Ipv6Addr = "2001:db8::1".parse().expect("an IPv6 address");
    v2_proxy(IPv6::new(client, server, 56324, 443))
}

/// A version 2 `LOCAL` header as AWS NLB sends for its health checks: with (dummy) TCP4
/// addresses, which the receiver must skip.
fn v2_local() -> Vec<u8> {
    Builder::with_addresses(
        ppp::v2::Version::Two | Command::Local,
        Protocol::Stream,
        IPv4::new([10, 0, 0, 1], [10, 0, 0, 2], 1, 2),
    )
    .build()
    .expect("a v2 header builds")
}

/// A version 2 header written from the specification (section 2.2), byte by byte: the
/// signature, version 2 and `command`, the family and protocol, the length, then the
/// addresses and each TLV (type, 16-bit length, value).
fn v2_by_hand(command: u8, family: u8, addresses: &[u8], tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut payload = addresses.to_vec();
    for (kind, value) in tlvs {
        payload.push(*kind);
        payload.extend_from_slice(&u16::try_from(value.len()).expect("short").to_be_bytes());
        payload.extend_from_slice(value);
    }
    let mut header = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A".to_vec();
    header.push(0x20 | command);
    header.push(family);
    header.extend_from_slice(&u16::try_from(payload.len()).expect("short").to_be_bytes());
    header.extend_from_slice(&payload);
    header
}

// ---------------------------------------------------------------------------------------
// The gateway and its clients

/// A gateway whose listener `public` is `listener`, in front of an echo backend: route
/// `open` and route `guarded`, whose policy denies [`DENIED`].
async fn gateway(listener: Listener) -> (RunningGateway, Backend) {
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .listener(listener)
        .admin()
        .raw(
            "policies",
            &format!("{{ office: {{ ip: {{ deny: [{DENIED}] }} }} }}"),
        )
        .upstream("app", &backend)
        .route_with(
            Route::prefix("/guarded")
                .named("guarded")
                .policies(&["office"])
                .to("app"),
        )
        .route_with(Route::prefix("/open").named("open").to("app"))
        .start()
        .await;
    (gw, backend)
}

/// Listener `public`, trusting the tests' own address, taking `mode`.
fn behind_balancer(mode: &str) -> Listener {
    Listener::public()
        .trusted_proxies(&["127.0.0.0/8"])
        .proxy_protocol(mode)
}

fn public(gw: &RunningGateway) -> SocketAddr {
    gw.listener_addr("public").expect("listener `public`")
}

/// A connection to `public` that has sent `header`.
async fn after_header(gw: &RunningGateway, header: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(public(gw)).await.expect("connects");
    tcp.write_all(header).await.expect("writes the header");
    tcp
}

/// The `X-Forwarded-For` an echo backend's answer reports, if the answer is one.
fn forwarded_for(body: &str) -> Option<String> {
    let echo: serde_json::Value = serde_json::from_str(body).ok()?;
    echo["headers"]["x-forwarded-for"][0]
        .as_str()
        .map(str::to_owned)
}

/// One HTTP/1.1 GET of `path` on `stream`: the status and the `X-Forwarded-For` the
/// upstream received.
async fn get<S>(stream: S, path: &str) -> (StatusCode, Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (_, status, body) = get_http1(stream, "example.com", path).await;
    (status, forwarded_for(&body))
}

/// What the upstream saw as `X-Forwarded-For` for a GET of `/open/x` sent after
/// `header`.
async fn client_seen_after(gw: &RunningGateway, header: &[u8]) -> Option<String> {
    let (status, forwarded) = get(after_header(gw, header).await, "/open/x").await;
    assert_eq!(status, StatusCode::OK);
    forwarded
}

/// One HTTP/1.1 response with a `Content-Length`, read off `tcp`: its head and body.
async fn read_response(tcp: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().expect("a length"))
                })
                .expect("a Content-Length");
            if received.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                return (head, body.into_owned());
            }
        }
        let read = within("the response", tcp.read(&mut buffer))
            .await
            .expect("reads");
        assert!(
            read > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..read]);
    }
}

/// Reads until the gateway closes `stream` and checks that it answered nothing. A reset
/// is a close too: the gateway closed with bytes it never read left behind.
async fn closed_without_an_answer(mut stream: TcpStream) {
    let mut received = Vec::new();
    let _ = within("the gateway closes", stream.read_to_end(&mut received)).await;
    assert!(
        received.is_empty(),
        "the gateway answered: {:?}",
        String::from_utf8_lossy(&received)
    );
}

/// Writes `bytes` one at a time, each read by the gateway before the next is sent.
async fn write_byte_by_byte(stream: &mut TcpStream, bytes: &[u8]) {
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let local = stream.local_addr().expect("local address");
    let peer = stream.peer_addr().expect("peer address");
    for byte in bytes {
        stream.write_all(&[*byte]).await.expect("writes");
        until_read_by_peer(local, peer).await;
    }
}

fn outcome(value: &str) -> String {
    format!(
        "portcullis_proxy_protocol_connections_total{{listener=\"public\",outcome=\"{value}\"}}"
    )
}

// ---------------------------------------------------------------------------------------
// The header names the client

#[tokio::test]
async fn v1_tcp4_tcp6_and_unknown_headers_name_the_client() {
    let (gw, _backend) = gateway(behind_balancer("v1")).await;
    assert_eq!(
        client_seen_after(&gw, &v1_tcp4(CLIENT)).await.as_deref(),
        Some("198.51.100.7")
    );
    let tcp6 = format!("PROXY TCP6 {CLIENT_V6} 2001:db8::1 56324 443\r\n");
    assert_eq!(
        client_seen_after(&gw, tcp6.as_bytes()).await.as_deref(),
        Some(CLIENT_V6)
    );
    // UNKNOWN: the balancer does not know the client; the TCP peer stands in.
    assert_eq!(
        client_seen_after(&gw, b"PROXY UNKNOWN\r\n")
            .await
            .as_deref(),
        Some("127.0.0.1")
    );
    metric_reaches(&gw, &outcome("accepted"), 2.0).await;
    metric_reaches(&gw, &outcome("unknown"), 1.0).await;
}

#[tokio::test]
async fn v2_headers_with_tlvs_name_the_client_and_local_ones_are_the_peer() {
    let (gw, _backend) = gateway(behind_balancer("v2")).await;
    assert_eq!(
        client_seen_after(&gw, &v2_tcp4(CLIENT)).await.as_deref(),
        Some("198.51.100.7")
    );
    assert_eq!(
        client_seen_after(&gw, &v2_tcp6(CLIENT_V6)).await.as_deref(),
        Some(CLIENT_V6)
    );
    // LOCAL: the balancer's own health check, served as coming from the balancer; its
    // dummy addresses are skipped, and the request after them is read intact.
    assert_eq!(
        client_seen_after(&gw, &v2_local()).await.as_deref(),
        Some("127.0.0.1")
    );
    // UNSPEC: no address.
    let unspec = v2_by_hand(0x1, 0x00, &[], &[(0x04, &[0; 3])]);
    assert_eq!(
        client_seen_after(&gw, &unspec).await.as_deref(),
        Some("127.0.0.1")
    );
    metric_reaches(&gw, &outcome("accepted"), 2.0).await;
    metric_reaches(&gw, &outcome("local"), 1.0).await;
    metric_reaches(&gw, &outcome("unknown"), 1.0).await;
    super::metrics::promtool_accepts(&metrics_text(&gw).await);
}

#[tokio::test]
async fn a_header_in_the_same_write_as_the_request_and_keep_alive_requests_after_it() {
    let (gw, backend) = gateway(behind_balancer("any")).await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n");
    // The header and the first request arrive in one segment.
    let first = [v2_tcp4(CLIENT), request("/open/1").into_bytes()].concat();
    let mut tcp = TcpStream::connect(public(&gw)).await.expect("connects");
    tcp.write_all(&first).await.expect("writes");
    let mut responses = vec![read_response(&mut tcp).await];
    // The connection is the client's for its whole life: the next requests on it come
    // from the same client, and are not mistaken for another header.
    for path in ["/open/2", "/open/3"] {
        tcp.write_all(request(path).as_bytes())
            .await
            .expect("writes");
        responses.push(read_response(&mut tcp).await);
    }
    for (head, body) in &responses {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(
            forwarded_for(body).as_deref(),
            Some("198.51.100.7"),
            "{body}"
        );
    }
    assert_eq!(backend.state.arrived(), 3);
    metric_reaches(&gw, &outcome("accepted"), 1.0).await;
}

#[tokio::test]
async fn headers_split_byte_by_byte_are_read_whole() {
    // Each byte waits for the gateway to have read the one before, which a loaded
    // machine can make slow: the header's timeout is not this test's subject.
    let listener = behind_balancer("any").proxy_protocol_timeout(Duration::from_secs(60));
    let (gw, _backend) = gateway(listener).await;
    // v2: the signature, the fixed part, the addresses and each TLV, all split.
    for header in [v1_tcp4(CLIENT), v2_tcp4(CLIENT)] {
        let mut tcp = TcpStream::connect(public(&gw)).await.expect("connects");
        write_byte_by_byte(&mut tcp, &header).await;
        let (status, forwarded) = get(tcp, "/open/x").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(forwarded.as_deref(), Some("198.51.100.7"));
    }
    metric_reaches(&gw, &outcome("accepted"), 2.0).await;
}

#[tokio::test]
async fn the_address_from_the_header_is_what_ip_lists_check() {
    let (gw, backend) = gateway(behind_balancer("v1")).await;
    let denied = Ipv4Addr::new(203, 0, 113, 9);
    let (status, _) = get(after_header(&gw, &v1_tcp4(denied)).await, "/guarded/x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(backend.state.arrived(), 0, "the upstream never saw it");
    let (status, forwarded) = get(after_header(&gw, &v1_tcp4(CLIENT)).await, "/guarded/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(forwarded.as_deref(), Some("198.51.100.7"));
}

#[tokio::test]
async fn the_forwarded_for_walk_goes_on_from_the_header_address() {
    // The header names a proxy inside the trusted ranges, whose `X-Forwarded-For` is
    // then believed, as it would be were that proxy the TCP peer.
    let listener = Listener::public()
        .trusted_proxies(&["127.0.0.0/8", "10.0.0.0/8"])
        .proxy_protocol("v2");
    let (gw, _backend) = gateway(listener).await;
    let send = async |client: Ipv4Addr, path: &str| {
        let mut tcp = after_header(&gw, &v2_tcp4(client)).await;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("writes");
        let mut response = Vec::new();
        within("the response", tcp.read_to_end(&mut response))
            .await
            .expect("reads");
        String::from_utf8_lossy(&response).into_owned()
    };
    let inner_proxy = Ipv4Addr::new(10, 1, 2, 3);
    assert!(send(inner_proxy, "/guarded/x")
        .await
        .starts_with("HTTP/1.1 403"));
    // An untrusted client's own `X-Forwarded-For` is not believed.
    assert!(send(CLIENT, "/guarded/x").await.starts_with("HTTP/1.1 200"));
    // Going upstream, the header's address is appended as the TCP peer's would be.
    let echoed = send(inner_proxy, "/open/x").await;
    assert!(
        echoed.contains(r#""x-forwarded-for":["203.0.113.9, 10.1.2.3"]"#),
        "{echoed}"
    );
}

// ---------------------------------------------------------------------------------------
// Before TLS, before h2c

#[tokio::test]
async fn a_tls_listener_reads_the_header_before_the_handshake() {
    let pki = Pki::new("test CA");
    let (certificate, key) = pki.write("localhost", &pki.issue(&["localhost"]));
    let listener = behind_balancer("v2").tls(Tls::certificate(certificate, key));
    let (gw, backend) = gateway(listener).await;
    let tcp = after_header(&gw, &v2_tcp4(CLIENT)).await;
    let connector = TlsConnector::from(Arc::new(client_config(pki.roots(), &[b"http/1.1"])));
    let name = ServerName::try_from("localhost").expect("a server name");
    let tls = within("the TLS handshake", connector.connect(name, tcp))
        .await
        .expect("the handshake succeeds after the header");
    let (status, forwarded) = get(tls, "/open/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(forwarded.as_deref(), Some("198.51.100.7"));
    let seen = backend.state.last_seen();
    assert_eq!(
        seen.headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok()),
        Some("https")
    );
    metric_reaches(&gw, &outcome("accepted"), 1.0).await;

    // A TLS client without the header is refused before its handshake.
    let tcp = TcpStream::connect(public(&gw)).await.expect("connects");
    let connector = TlsConnector::from(Arc::new(client_config(pki.roots(), &[b"http/1.1"])));
    let name = ServerName::try_from("localhost").expect("a server name");
    assert!(within("the refusal", connector.connect(name, tcp))
        .await
        .is_err());
    metric_reaches(&gw, &outcome("missing"), 1.0).await;
}

#[tokio::test]
async fn h2c_is_served_after_a_header() {
    let (gw, _backend) = gateway(behind_balancer("any")).await;
    for header in [v1_tcp4(CLIENT), v2_tcp4(CLIENT)] {
        let tcp = after_header(&gw, &header).await;
        let (version, status, body) = get_http2(tcp, "http", "example.com", "/open/x").await;
        assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));
        assert_eq!(forwarded_for(&body).as_deref(), Some("198.51.100.7"));
    }
}

// ---------------------------------------------------------------------------------------
// `optional`

#[tokio::test]
async fn an_optional_listener_serves_connections_with_and_without_a_header() {
    let (gw, _backend) = gateway(behind_balancer("optional")).await;
    assert_eq!(
        client_seen_after(&gw, &v1_tcp4(CLIENT)).await.as_deref(),
        Some("198.51.100.7")
    );
    assert_eq!(
        client_seen_after(&gw, &v2_tcp4(CLIENT)).await.as_deref(),
        Some("198.51.100.7")
    );
    assert_eq!(
        client_seen_after(&gw, b"").await.as_deref(),
        Some("127.0.0.1")
    );
    metric_reaches(&gw, &outcome("accepted"), 2.0).await;
    metric_reaches(&gw, &outcome("absent"), 1.0).await;
}

#[tokio::test]
async fn an_optional_listener_hands_on_bytes_that_only_began_like_a_header() {
    // `P` could begin `PROXY `: the gateway takes it off the socket to see what follows,
    // and gives it back to HTTP/1.1 (POST) or to the h2c sniffing (PRI) once it knows.
    let (gw, backend) = gateway(behind_balancer("optional")).await;
    let mut tcp = TcpStream::connect(public(&gw)).await.expect("connects");
    write_byte_by_byte(&mut tcp, b"P").await;
    tcp.write_all(b"OST /open/x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        .await
        .expect("writes");
    let mut response = Vec::new();
    within("the response", tcp.read_to_end(&mut response))
        .await
        .expect("reads");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""method":"POST""#), "{response}");
    assert_eq!(backend.state.arrived(), 1);

    let tcp = TcpStream::connect(public(&gw)).await.expect("connects");
    let (version, status, _) = get_http2(
        FirstBytesAlone::new(tcp, 1),
        "http",
        "example.com",
        "/open/x",
    )
    .await;
    assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));
    metric_reaches(&gw, &outcome("absent"), 2.0).await;
}

// ---------------------------------------------------------------------------------------
// Refusals: closed without an answer, counted

#[tokio::test]
async fn a_connection_without_a_header_is_closed_unanswered_where_one_is_required() {
    let (gw, backend) = gateway(behind_balancer("v1")).await;
    closed_without_an_answer(
        after_header(&gw, b"GET /open/x HTTP/1.1\r\nHost: example.com\r\n\r\n").await,
    )
    .await;
    metric_reaches(&gw, &outcome("missing"), 1.0).await;
    // A header of the other version is refused too.
    closed_without_an_answer(after_header(&gw, &v2_tcp4(CLIENT)).await).await;
    metric_reaches(&gw, &outcome("wrong_version"), 1.0).await;
    assert_eq!(backend.state.arrived(), 0);
}

#[tokio::test]
async fn malformed_headers_are_closed_unanswered() {
    let (gw, backend) = gateway(behind_balancer("any")).await;
    let request = b"GET /open/x HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let with_request = |header: &[u8]| [header, request].concat();
    let mut v2_over_the_cap =
        v2_by_hand(0x1, 0x11, &[198, 51, 100, 7, 192, 0, 2, 1, 0, 1, 0, 2], &[]);
    v2_over_the_cap[14..16].copy_from_slice(&(12 + 2048 + 1u16).to_be_bytes());
    // A NOOP TLV of 2 bytes whose length field says 9.
    let mut tlv_too_long = v2_by_hand(0x1, 0x11, &[0; 12], &[(0x04, &[0, 0])]);
    tlv_too_long[29..31].copy_from_slice(&9u16.to_be_bytes());
    let mut bad_version = v2_tcp4(CLIENT);
    bad_version[12] = 0x11;
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        (
            "v1 too long without CRLF",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(),
        ),
        (
            "v1 bad address",
            with_request(b"PROXY TCP4 198.51.100.300 192.0.2.1 1 2\r\n"),
        ),
        (
            "v1 IPv6 address in TCP4",
            with_request(b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n"),
        ),
        (
            "v1 bad port",
            with_request(b"PROXY TCP4 198.51.100.7 192.0.2.1 65536 2\r\n"),
        ),
        (
            "v1 bad family",
            with_request(b"PROXY UDP4 198.51.100.7 192.0.2.1 1 2\r\n"),
        ),
        ("v2 length over the cap", v2_over_the_cap),
        ("v2 bad version", with_request(&bad_version)),
        ("v2 TLV longer than the header", with_request(&tlv_too_long)),
    ];
    for (count, (what, bytes)) in malformed.iter().enumerate() {
        let tcp = after_header(&gw, bytes).await;
        closed_without_an_answer(tcp).await;
        metric_reaches(&gw, &outcome("malformed"), (count + 1) as f64).await;
        eprintln!("{what}: closed");
    }
    // Truncated: the client stops writing halfway through the header.
    let mut tcp = after_header(&gw, &v2_tcp4(CLIENT)[..20]).await;
    tcp.shutdown().await.expect("shuts down");
    closed_without_an_answer(tcp).await;
    metric_reaches(&gw, &outcome("malformed"), (malformed.len() + 1) as f64).await;
    // A bad signature is no header at all.
    let mut bad_signature = v2_tcp4(CLIENT);
    bad_signature[8] = b'X';
    closed_without_an_answer(after_header(&gw, &bad_signature).await).await;
    metric_reaches(&gw, &outcome("missing"), 1.0).await;
    assert_eq!(backend.state.arrived(), 0);
}

#[tokio::test]
async fn headers_from_untrusted_peers_are_refused() {
    // The balancer is elsewhere: the tests' own address may not speak for clients.
    let listener = Listener::public()
        .trusted_proxies(&["10.0.0.0/8"])
        .proxy_protocol("v2");
    let (gw, backend) = gateway(listener).await;
    closed_without_an_answer(after_header(&gw, &v2_tcp4(CLIENT)).await).await;
    metric_reaches(&gw, &outcome("untrusted"), 1.0).await;

    // On an optional listener, such a peer is served as itself, unless it sends a
    // header.
    let listener = Listener::public()
        .trusted_proxies(&["10.0.0.0/8"])
        .proxy_protocol("optional");
    let (gw, _backend) = gateway(listener).await;
    closed_without_an_answer(after_header(&gw, &v1_tcp4(CLIENT)).await).await;
    metric_reaches(&gw, &outcome("untrusted"), 1.0).await;
    assert_eq!(
        client_seen_after(&gw, b"").await.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(backend.state.arrived(), 0);
}

#[tokio::test]
async fn a_slow_header_is_closed_at_the_timeout() {
    // The smallest timeouts that keep the test's own steps well inside them: the rest
    // of a header gets `proxy_protocol_timeout`, the first byte `idle_timeout`.
    let timeout = Duration::from_millis(100);
    let listener = behind_balancer("v1")
        .proxy_protocol_timeout(timeout)
        .idle_timeout(timeout);
    let (gw, _backend) = gateway(listener).await;

    let started = Instant::now();
    closed_without_an_answer(after_header(&gw, b"PROXY TCP4 198.51.100.7 ").await).await;
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    metric_reaches(&gw, &outcome("timeout"), 1.0).await;

    let started = Instant::now();
    closed_without_an_answer(after_header(&gw, b"").await).await;
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    metric_reaches(&gw, &outcome("timeout"), 2.0).await;

    // A header in time is served. (Written with its request at once: on a loaded
    // machine, the client's own steps could take longer than these timeouts.)
    let request = b"GET /open/x HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let mut tcp = after_header(&gw, &[v1_tcp4(CLIENT), request.to_vec()].concat()).await;
    let (head, body) = read_response(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(forwarded_for(&body).as_deref(), Some("198.51.100.7"));
}

// ---------------------------------------------------------------------------------------
// Headers, configuration

#[test]
fn headers_built_by_ppp_and_by_hand_are_the_same_bytes() {
    let tlvs: [(u8, &[u8]); 4] = [
        (0x01, b"h2"),
        (0x02, b"api.example.com"),
        (0x05, b"conn-4711"),
        (0x04, &[0; 5]),
    ];
    let mut v4 = CLIENT.octets().to_vec();
    v4.extend_from_slice(&[192, 0, 2, 1]);
    v4.extend_from_slice(&56324u16.to_be_bytes());
    v4.extend_from_slice(&443u16.to_be_bytes());
    assert_eq!(v2_tcp4(CLIENT), v2_by_hand(0x1, 0x11, &v4, &tlvs));

    let client: Ipv6Addr = CLIENT_V6.parse().expect("v6");
    let server: Ipv6Addr = "2001:db8::1".parse().expect("v6");
    let mut v6 = client.octets().to_vec();
    v6.extend_from_slice(&server.octets());
    v6.extend_from_slice(&56324u16.to_be_bytes());
    v6.extend_from_slice(&443u16.to_be_bytes());
    assert_eq!(v2_tcp6(CLIENT_V6), v2_by_hand(0x1, 0x21, &v6, &tlvs));

    assert_eq!(
        v2_local(),
        v2_by_hand(0x0, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2], &[])
    );
    // And ppp reads the hand-made ones back as what was written.
    let header = v2_by_hand(0x1, 0x21, &v6, &tlvs);
    let parsed = ppp::v2::Header::try_from(&header[..]).expect("parses");
    assert_eq!(
        parsed.addresses,
        IPv6::new(client, server, 56324, 443).into()
    );
    assert_eq!(parsed.tlvs().count(), 4);

    let by_ppp = ppp::v1::Addresses::new_tcp4(CLIENT, Ipv4Addr::new(192, 0, 2, 1), 56324, 443);
    assert_eq!(by_ppp.to_string().into_bytes(), v1_tcp4(CLIENT));
}

#[test]
fn proxy_protocol_problems_are_located_config_errors() {
    let text = r#"
listeners:
  - name: a
    address: 127.0.0.1:0
    client_ip: { proxy_protocol: v2 }
  - name: b
    address: 127.0.0.1:0
    client_ip: { trusted_proxies: [10.0.0.0/8], proxy_protocol: any, proxy_protocol_timeout: 0s }
upstreams: {}
routes: []
"#;
    let errors = match Config::from_yaml(text, "gateway.yaml") {
        Ok(_) => panic!("the configuration should be rejected"),
        Err(error) => error.to_string(),
    };
    for expected in [
        "gateway.yaml:5:34: listeners[0].client_ip.proxy_protocol: needs `trusted_proxies`",
        "gateway.yaml:8:94: listeners[1].client_ip.proxy_protocol_timeout: must be longer than 0s",
    ] {
        assert!(
            errors.contains(expected),
            "{expected:?} missing from:\n{errors}"
        );
    }

    let unknown_mode = "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    client_ip: { trusted_proxies: [10.0.0.0/8], proxy_protocol: v3 }\n";
    let error = match Config::from_yaml(unknown_mode, "gateway.yaml") {
        Ok(_) => panic!("the configuration should be rejected"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("gateway.yaml:4:"), "{error}");
    assert!(
        error.contains("unknown variant `v3`, expected one of `v1`, `v2`, `any`, `optional`"),
        "{error}"
    );

    let without = "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    client_ip: { proxy_protocol_timeout: 2s }\n";
    let config = Config::from_yaml(without, "gateway.yaml").expect("valid, with a warning");
    assert!(
        config.warnings.iter().any(|w| w.to_string().contains(
            "listeners[0].client_ip.proxy_protocol_timeout: has no effect without `proxy_protocol`"
        )),
        "{:?}",
        config.warnings
    );
}

#[test]
fn check_lists_the_proxy_protocol_of_each_listener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - name: edge\n    address: 127.0.0.1:8080\n    client_ip: { trusted_proxies: [10.0.0.0/8, \"fd00::/8\"], proxy_protocol: v2 }\n",
    )
    .expect("writes");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("PROXY protocol v2 from 10.0.0.0/8 fd00::/8"),
        "{stdout}"
    );
}
