//! WebSocket through the gateway: the upgrade reaches the upstream, a 101 joins both
//! sides (and releases the upstream's request permit), a refused upgrade stays HTTP
//! (pipelined requests after it too), and upgraded connections are counted, capped per
//! route, closed when idle and closed on shutdown.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use portcullis::RunningGateway;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::client::raw_exchange;
use crate::support::{
    metric, metric_reaches, metrics_text, url, within, Backend, Client, Gateway, Reply, Route,
    Upstream, WebSocket,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Echoes WebSocket messages on any path but `/refuse` (403) and requests without
/// `Upgrade` (200 `plain`).
/// Also the access log's WebSocket test's upstream.
pub(super) async fn websocket_backend() -> Backend {
    websocket_backend_noting_closes(None).await
}

/// As [`websocket_backend`]; the close code of every Close frame a connection receives
/// goes to `closes`.
async fn websocket_backend_noting_closes(
    closes: Option<tokio::sync::mpsc::UnboundedSender<u16>>,
) -> Backend {
    Backend::start(move |mut request: Request<Incoming>, _| {
        let closes = closes.clone();
        async move {
            let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
                return Reply::ok("plain");
            };
            if request.uri().path() == "/refuse" {
                return Reply::text(StatusCode::FORBIDDEN, "no WebSocket here");
            }
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                while let Some(Ok(message)) = socket.next().await {
                    if let (Message::Close(frame), Some(closes)) = (&message, &closes) {
                        let _ = closes.send(frame.as_ref().map_or(0, |f| u16::from(f.code)));
                    }
                    if (message.is_text() || message.is_binary())
                        && socket.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
            let mut response = Reply::text(StatusCode::SWITCHING_PROTOCOLS, "");
            let headers = response.headers_mut();
            headers.insert("connection", "upgrade".parse().expect("value"));
            headers.insert("upgrade", "websocket".parse().expect("value"));
            headers.insert(
                "sec-websocket-accept",
                derive_accept_key(key.as_bytes()).parse().expect("value"),
            );
            response
        }
    })
    .await
}

/// Route `chat` to `backend` (one request in flight, no queue), with `websocket` limits
/// when given.
async fn websocket_gateway(backend: &Backend, websocket: Option<WebSocket>) -> RunningGateway {
    let route = Route::prefix("/").named("chat").to("app");
    let route = match websocket {
        Some(limits) => route.websocket(limits),
        None => route,
    };
    Gateway::new()
        .admin()
        .upstream("app", Upstream::new(backend).max_in_flight(1).max_queue(0))
        .route_with(route)
        .start()
        .await
}

fn addr(gw: &RunningGateway) -> SocketAddr {
    gw.listener_addr("public").expect("listener")
}

async fn connect(gw: &RunningGateway, path: &str) -> Result<Socket, WsError> {
    let url = format!("ws://{}{path}", addr(gw));
    within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .map(|(socket, _)| socket)
}

async fn echo(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).await.expect("sends");
    let reply = within("the echo", socket.next())
        .await
        .expect("a message")
        .expect("no error");
    assert_eq!(reply, Message::text(text));
}

/// Waits until the server side ends the connection.
async fn closed_by_gateway(socket: &mut Socket) {
    within("the gateway closes the connection", async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
}

const ACTIVE: &str = "portcullis_websocket_connections_active{route=\"chat\"}";

fn upgrades(outcome: &str) -> String {
    format!("portcullis_websocket_upgrades_total{{outcome=\"{outcome}\",route=\"chat\"}}")
}

fn closed(reason: &str) -> String {
    format!("portcullis_websocket_closed_total{{reason=\"{reason}\",route=\"chat\"}}")
}

#[tokio::test]
async fn websocket_messages_are_echoed_through_the_gateway() {
    let backend = websocket_backend().await;
    let gw = websocket_gateway(&backend, None).await;

    let mut socket = connect(&gw, "/chat").await.expect("upgraded");
    echo(&mut socket, "hello").await;
    echo(&mut socket, "again").await;
    let seen = backend.state.last_seen();
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["connection"], "upgrade");
    metric_reaches(&gw, ACTIVE, 1.0).await;
    assert_eq!(
        metric(&metrics_text(&gw).await, &upgrades("upgraded")),
        Some(1.0)
    );

    // The tunnel does not hold the upstream's only request permit.
    let reply = Client::new().get(&url(&gw, "/plain")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "plain");

    socket.close(None).await.expect("closes");
    metric_reaches(&gw, ACTIVE, 0.0).await;
    metric_reaches(&gw, &closed("closed"), 1.0).await;
}

#[tokio::test]
async fn a_refused_upgrade_stays_http_and_pipelined_requests_are_answered_as_http() {
    let backend = websocket_backend().await;
    let gw = websocket_gateway(&backend, None).await;

    let raw = "GET /refuse HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\
               GET /after HTTP/1.1\r\nHost: chat\r\n\r\n";
    let received = raw_exchange(addr(&gw), raw.as_bytes(), "plain").await;
    let refused = received.find("HTTP/1.1 403").expect("the refusal");
    let after = received
        .find("HTTP/1.1 200")
        .expect("the pipelined request's answer");
    assert!(refused < after, "{received}");
    assert!(received.contains("no WebSocket here"), "{received}");
    assert!(received.ends_with("plain"), "{received}");
    let seen = backend.state.last_seen();
    assert_eq!(seen.uri, "/after");
    assert!(!seen.headers.contains_key("upgrade"));
    assert_eq!(backend.state.arrived(), 2);
    metric_reaches(&gw, &upgrades("refused"), 1.0).await;
    assert_eq!(metric(&metrics_text(&gw).await, ACTIVE), Some(0.0));

    // A WebSocket client sees the refusal as an HTTP error.
    match connect(&gw, "/refuse").await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("the upgrade should be refused"),
    }
}

#[tokio::test]
async fn upgraded_connections_are_capped_per_route() {
    let backend = websocket_backend().await;
    let gw = websocket_gateway(&backend, Some(WebSocket::new().max_connections(1))).await;

    let mut first = connect(&gw, "/a").await.expect("upgraded");
    echo(&mut first, "one").await;
    match connect(&gw, "/b").await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("the second connection should be refused"),
    }
    assert_eq!(
        metric(&metrics_text(&gw).await, &upgrades("rejected")),
        Some(1.0)
    );

    first.close(None).await.expect("closes");
    metric_reaches(&gw, ACTIVE, 0.0).await;
    let mut second = connect(&gw, "/c").await.expect("a slot is free again");
    echo(&mut second, "two").await;
}

#[tokio::test]
async fn idle_upgraded_connections_are_closed() {
    let backend = websocket_backend().await;
    let gw = websocket_gateway(
        &backend,
        Some(WebSocket::new().idle_timeout(std::time::Duration::from_millis(100))),
    )
    .await;

    let mut socket = connect(&gw, "/idle").await.expect("upgraded");
    closed_by_gateway(&mut socket).await;
    metric_reaches(&gw, &closed("idle_timeout"), 1.0).await;
    metric_reaches(&gw, ACTIVE, 0.0).await;
}

#[tokio::test]
async fn a_drain_says_going_away_to_both_sides_of_a_tunnel() {
    let (closes_tx, mut closes) = tokio::sync::mpsc::unbounded_channel();
    let backend = websocket_backend_noting_closes(Some(closes_tx)).await;
    let gw = websocket_gateway(&backend, None).await;
    let mut socket = connect(&gw, "/chat").await.expect("upgraded");
    echo(&mut socket, "before the drain").await;

    let shutdown = tokio::spawn(gw.shutdown());
    let frame = within("the client's Close frame", async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("the connection ended without a Close frame: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001), "Going Away");
    // The client answers (tungstenite does as it reads the Close) and the upstream got
    // its own Close, 1001 as well, as a client's masked frame.
    let _ = socket.close(None).await;
    assert_eq!(
        within("the upstream's Close frame", closes.recv()).await,
        Some(1001)
    );
    // Both answered: the tunnel ends without waiting for the end of the drain.
    within("the gateway shuts down", shutdown)
        .await
        .expect("joins");
}

#[tokio::test]
async fn shutdown_closes_upgraded_connections_after_the_drain() {
    let backend = websocket_backend().await;
    let gw = websocket_gateway(&backend, None).await;
    let mut socket = connect(&gw, "/chat").await.expect("upgraded");
    echo(&mut socket, "before shutdown").await;

    within("the gateway shuts down", gw.shutdown()).await;
    closed_by_gateway(&mut socket).await;
}
