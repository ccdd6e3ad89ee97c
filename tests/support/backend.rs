//! Test backends: real hyper servers on 127.0.0.1:0 that record every request, count
//! connections, and can hold requests until the test releases them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

pub type Body = BoxBody<Bytes, std::io::Error>;
type Handler = dyn Fn(
        Request<Incoming>,
        Arc<State>,
    ) -> Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
    + Send
    + Sync;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: Version,
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
}

/// Shared state of a backend, visible to the test.
pub struct State {
    pub seen: Mutex<Vec<Seen>>,
    /// Requests that reached the handler.
    pub arrived: AtomicUsize,
    /// Requests whose handler future was dropped before it finished (the gateway
    /// cancelled the exchange).
    pub cancelled: AtomicUsize,
    pub connections_opened: AtomicUsize,
    pub connections_closed: AtomicUsize,
    /// Held requests wait for a permit here; the test adds permits to release them.
    pub gate: Semaphore,
    /// Bytes of request bodies read so far.
    pub body_bytes: AtomicUsize,
}

impl Default for State {
    fn default() -> Self {
        State {
            seen: Mutex::default(),
            arrived: AtomicUsize::default(),
            cancelled: AtomicUsize::default(),
            connections_opened: AtomicUsize::default(),
            connections_closed: AtomicUsize::default(),
            gate: Semaphore::new(0),
            body_bytes: AtomicUsize::default(),
        }
    }
}

impl State {
    /// Lets `n` held requests go on.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Waits at the gate.
    pub async fn hold(&self) {
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
    }

    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("the backend saw a request")
    }
}

/// A canned answer.
pub struct Reply;

impl Reply {
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
        let mut response = Response::new(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        );
        *response.status_mut() = status;
        response
    }

    pub fn ok(body: impl Into<Bytes>) -> Response<Body> {
        Self::text(StatusCode::OK, body)
    }
}

/// A running backend; stops (with all its connections) when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a handler future that is dropped before finishing.
struct CancelWatch {
    state: Arc<State>,
    finished: bool,
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A listening socket on 127.0.0.1 with a deep accept queue: a burst of thousands of
/// new upstream connections must not overflow it (tokio's default is 1,024), or some
/// would wait for a SYN retransmission and run into the gateway's connect timeout.
fn bind_backend() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("backend binds");
    socket.listen(4096).expect("backend listens")
}

impl Backend {
    /// A backend answering every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Request<Incoming>, Arc<State>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_with(handler, None).await
    }

    /// Like [`Backend::start`]; `idle_close` closes keep-alive connections idle that long.
    pub async fn start_with<F, Fut>(handler: F, idle_close: Option<Duration>) -> Backend
    where
        F: Fn(Request<Incoming>, Arc<State>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = bind_backend();
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(State::default());
        let handler: Arc<Handler> =
            Arc::new(move |request, state| Box::pin(handler(request, state)));
        let task = tokio::spawn(serve(listener, state.clone(), handler, idle_close, None));
        Backend { addr, state, task }
    }

    /// A backend behind TLS with `config` (HTTP/2 when its ALPN offers and the client
    /// picks `h2`), answering with `handler`.
    pub async fn start_tls<F, Fut>(config: rustls::ServerConfig, handler: F) -> Backend
    where
        F: Fn(Request<Incoming>, Arc<State>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = bind_backend();
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(State::default());
        let handler: Arc<Handler> =
            Arc::new(move |request, state| Box::pin(handler(request, state)));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let task = tokio::spawn(serve(
            listener,
            state.clone(),
            handler,
            None,
            Some(acceptor),
        ));
        Backend { addr, state, task }
    }

    /// `https://127.0.0.1:port`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Answers 200 with a JSON echo of the method, URI and headers it received.
    pub async fn echo() -> Backend {
        Self::start(|request, _| async move { Reply::ok(echo_json(&request)) }).await
    }

    /// Answers 200 with the HTTP version it received (`HTTP/1.1`, `HTTP/2.0`).
    pub async fn echo_version() -> Backend {
        Self::start(|request, _| async move { Reply::ok(format!("{:?}", request.version())) }).await
    }

    /// Holds every request at the gate, then answers 200 `released`.
    pub async fn holding() -> Backend {
        Self::start(|_, state| async move {
            state.hold().await;
            Reply::ok("released")
        })
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `{"method":..,"uri":..,"headers":{name: [values]}}`.
pub fn echo_json(request: &Request<Incoming>) -> String {
    let mut headers = serde_json::Map::new();
    for name in request.headers().keys() {
        let values: Vec<serde_json::Value> = request
            .headers()
            .get_all(name)
            .iter()
            .map(|v| serde_json::Value::String(v.to_str().unwrap_or("<binary>").to_owned()))
            .collect();
        headers.insert(name.as_str().to_owned(), serde_json::Value::Array(values));
    }
    serde_json::json!({
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "headers": headers,
    })
    .to_string()
}

async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    handler: Arc<Handler>,
    idle_close: Option<Duration>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.connections_opened.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let handler = handler.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let service_state = state.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let state = service_state.clone();
                let handler = handler.clone();
                async move {
                    state.arrived.fetch_add(1, Ordering::SeqCst);
                    state.seen.lock().expect("lock").push(Seen {
                        version: request.version(),
                        method: request.method().clone(),
                        uri: request.uri().to_string(),
                        headers: request.headers().clone(),
                    });
                    let mut watch = CancelWatch {
                        state: state.clone(),
                        finished: false,
                    };
                    let response = handler(request, state).await;
                    watch.finished = true;
                    Ok::<_, Infallible>(response)
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Some(idle) = idle_close {
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(idle);
            }
            match tls {
                None => {
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
            state.connections_closed.fetch_add(1, Ordering::SeqCst);
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
}

/// Reads a request body to the end, counting bytes into `state.body_bytes` as they come.
pub async fn drain_body(request: Request<Incoming>, state: &State) -> usize {
    let mut body = request.into_body();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            total += data.len();
            state.body_bytes.fetch_add(data.len(), Ordering::SeqCst);
        }
    }
    total
}
