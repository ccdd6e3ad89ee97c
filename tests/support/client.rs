//! The test client: hyper-util's pooled client, one request on a given connection
//! (TCP or TLS, HTTP/1.1 or HTTP/2), and raw-socket helpers for what a well-behaved
//! client would never send.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
