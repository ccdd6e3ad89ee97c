//! `portcullis demo`: small sample services on loopback for the repository's
//! `gateway.yaml` to route to, so the gateway can be tried with nothing else installed.
//!
//! - users, two instances (127.0.0.1:9101 and :9102): `GET /users`, `GET /users/{id}`,
//!   `POST /users`, `GET /teams/{id}`, `GET /slow` (answers after 3 s), `GET /fail` (500);
//! - orders (127.0.0.1:9201): `GET /orders?user={id}`, `GET /orders/{id}`.
//!
//! Every service answers `GET /health` and names itself in `x-served-by`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A sample service: which one, and where it listens.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub name: &'static str,
    pub kind: Kind,
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Users,
    Orders,
}

/// The services `gateway.yaml` expects.
pub fn services() -> [Service; 3] {
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    [
        Service {
            name: "users-1",
            kind: Kind::Users,
            address: at(9101),
        },
        Service {
            name: "users-2",
            kind: Kind::Users,
            address: at(9102),
        },
        Service {
            name: "orders-1",
            kind: Kind::Orders,
            address: at(9201),
        },
    ]
}

/// Binds every service, then serves them on `tasks`.
pub async fn start(
    services: &[Service],
    tasks: &mut JoinSet<()>,
) -> std::io::Result<Vec<SocketAddr>> {
    let mut bound = Vec::with_capacity(services.len());
    for service in services {
        let listener = TcpListener::bind(service.address).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "demo service {} cannot listen on {}: {e}",
                    service.name, service.address
                ),
            )
        })?;
        bound.push((listener, *service));
    }
    let mut addresses = Vec::with_capacity(bound.len());
    for (listener, service) in bound {
        addresses.push(listener.local_addr()?);
        tasks.spawn(serve(listener, service));
    }
    Ok(addresses)
}

async fn serve(listener: TcpListener, service: Service) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let handler = service_fn(move |request| async move {
                Ok::<_, Infallible>(answer(service, request).await)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

const USERS: [(u64, &str, u64); 5] = [
    (1, "Ada Lovelace", 10),
    (2, "Grace Hopper", 10),
    (3, "Edsger Dijkstra", 20),
    (4, "Barbara Liskov", 20),
    (5, "Ken Thompson", 30),
];

fn user(id: u64) -> Option<Value> {
    USERS
        .iter()
        .find(|(uid, _, _)| *uid == id)
        .map(|(id, name, team)| json!({"id": id, "name": name, "team_id": team}))
}

async fn answer(service: Service, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // HEAD is answered like GET; hyper leaves the body out.
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    let (status, body) = match (service.kind, &method, segments.as_slice()) {
        (_, &Method::GET, ["health"]) => (StatusCode::OK, json!({"status": "ok"})),
        (Kind::Users, &Method::GET, ["users"]) => (
            StatusCode::OK,
            Value::Array(USERS.iter().filter_map(|(id, _, _)| user(*id)).collect()),
        ),
        (Kind::Users, &Method::GET, ["users", id]) => match id.parse().ok().and_then(user) {
            Some(user) => (StatusCode::OK, user),
            None => (StatusCode::NOT_FOUND, json!({"error": "no such user"})),
        },
        (Kind::Users, &Method::POST, ["users"]) => {
            match Limited::new(request.into_body(), 64 * 1024).collect().await {
                Ok(collected) => match serde_json::from_slice::<Value>(&collected.to_bytes()) {
                    Ok(mut new_user) => {
                        new_user["id"] = json!(100 + fastrand::u64(..900));
                        (StatusCode::CREATED, new_user)
                    }
                    Err(e) => (
                        StatusCode::BAD_REQUEST,
                        json!({"error": format!("invalid JSON: {e}")}),
                    ),
                },
                Err(e) => (StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
            }
        }
        (Kind::Users, &Method::GET, ["teams", id]) => match id.parse::<u64>() {
            Ok(team) => (
                StatusCode::OK,
                json!({
                    "id": team,
                    "name": format!("Team {team}"),
                    "members": USERS.iter().filter(|(_, _, t)| *t == team).map(|(id, _, _)| id).collect::<Vec<_>>(),
                }),
            ),
            Err(_) => (StatusCode::NOT_FOUND, json!({"error": "no such team"})),
        },
        (Kind::Users, &Method::GET, ["slow"]) => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, json!({"slow": true}))
        }
        (Kind::Users, &Method::GET, ["fail"]) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "this endpoint always fails"}),
        ),
        (Kind::Orders, &Method::GET, ["orders"]) => {
            let user: u64 = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("user="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let orders: Vec<Value> = (1..=3)
                .map(|n| json!({"id": user * 100 + n, "user_id": user, "total_cents": 1250 * n}))
                .collect();
            (StatusCode::OK, Value::Array(orders))
        }
        (Kind::Orders, &Method::GET, ["orders", id]) => match id.parse::<u64>() {
            Ok(id) => (
                StatusCode::OK,
                json!({"id": id, "user_id": id / 100, "total_cents": 1250}),
            ),
            Err(_) => (StatusCode::NOT_FOUND, json!({"error": "no such order"})),
        },
        _ => (
            StatusCode::NOT_FOUND,
            json!({"error": format!("{} has no {method} {path}", service.name)}),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-served-by", HeaderValue::from_static(service.name));
    response
}
