//! The test client: hyper-util's pooled client, one request on a given connection
//! (TCP or TLS, HTTP/1.1 or HTTP/2), raw-socket helpers for what a well-behaved client
//! would never send, and writes in pieces that the gateway provably reads apart.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::within;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Body>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = Full::new(body.into())
            .map_err(|never| match never {})
            .boxed();
        self.request(request.body(body).expect("valid request"))
            .await
    }

    pub async fn request(&self, request: Request<Body>) -> Reply {
        let response = self
            .inner
            .request(request)
            .await
            .expect("the gateway answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body arrives")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends and returns the response with its body still streaming.
    pub async fn stream(&self, request: Request<Body>) -> http::Response<hyper::body::Incoming> {
        self.inner
            .request(request)
            .await
            .expect("the gateway answers")
    }
}

/// Writes `raw` on a new connection and reads until the peer closes or `until` appears.
pub async fn raw_exchange(addr: std::net::SocketAddr, raw: &[u8], until: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(raw).await.expect("writes");
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let read_all = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    received.extend_from_slice(&buffer[..n]);
                    if String::from_utf8_lossy(&received).contains(until) {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read_all).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// One GET over HTTP/1.1 on `stream` (TCP or TLS): the response's version, status and
/// body.
pub async fn get_http1<S>(stream: S, host: &str, path: &str) -> (Version, StatusCode, String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .expect("request");
    finish(sender.send_request(request)).await
}

/// One GET over HTTP/2 on `stream` (`scheme` `https` over TLS, `http` for h2c).
pub async fn get_http2<S>(
    stream: S,
    scheme: &str,
    host: &str,
    path: &str,
) -> (Version, StatusCode, String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = Request::get(format!("{scheme}://{host}{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    finish(sender.send_request(request)).await
}

async fn finish(
    response: impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
) -> (Version, StatusCode, String) {
    let response = within("the response", response)
        .await
        .expect("the gateway answers");
    let (version, status) = (response.version(), response.status());
    let body = within("the body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    (version, status, String::from_utf8_lossy(&body).into_owned())
}

// ---------------------------------------------------------------------------------------
// Bytes in pieces, each read by the gateway before the next is sent

/// The send and receive queues of the IPv4 TCP socket from `local` to `remote`, from
/// the kernel's socket table: bytes sent but not yet acknowledged, and bytes received
/// but not yet read by the application. `None` when there is no such socket.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u32, u32)> {
    fn hex(addr: SocketAddr) -> String {
        let SocketAddr::V4(addr) = addr else {
            panic!("{addr} is not IPv4");
        };
        // The kernel prints the address as the in-memory (network order) u32.
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(addr.ip().octets()),
            addr.port()
        )
    }
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reads /proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        Some((
            u32::from_str_radix(tx, 16).ok()?,
            u32::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Waits until the peer of the connection `local` → `peer` (on this host) has read
/// every byte written so far: they were acknowledged, so they left this socket, and
/// the peer's socket holds none unread, so its application took them. Proves that a
/// piece was read on its own, where a pause would only make it likely.
pub async fn until_read_by_peer(local: SocketAddr, peer: SocketAddr) {
    super::eventually("the peer has read every byte written", async || {
        let sent = tcp_queues(local, peer).is_some_and(|(unacknowledged, _)| unacknowledged == 0);
        let read = tcp_queues(peer, local).is_some_and(|(_, unread)| unread == 0);
        sent && read
    })
    .await;
}

/// A connection whose first `first` bytes are written alone (`TCP_NODELAY`); the
/// writes after them wait until the peer has read those ([`until_read_by_peer`]). For a
/// client such as hyper's that writes its own bytes.
pub struct FirstBytesAlone {
    inner: TcpStream,
    first: usize,
    read_by_peer: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl FirstBytesAlone {
    pub fn new(inner: TcpStream, first: usize) -> FirstBytesAlone {
        inner.set_nodelay(true).expect("TCP_NODELAY");
        FirstBytesAlone {
            inner,
            first,
            read_by_peer: None,
        }
    }
}

impl AsyncRead for FirstBytesAlone {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FirstBytesAlone {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.first > 0 {
            let n = buf.len().min(self.first);
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..n]))?;
            self.first -= written;
            if self.first == 0 {
                let local = self.inner.local_addr()?;
                let peer = self.inner.peer_addr()?;
                self.read_by_peer = Some(Box::pin(until_read_by_peer(local, peer)));
            }
            return Poll::Ready(Ok(written));
        }
        if let Some(read) = self.read_by_peer.as_mut() {
            ready!(read.as_mut().poll(cx));
            self.read_by_peer = None;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
