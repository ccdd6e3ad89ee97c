//! The reference side of the differential test: hyper 1.x's HTTP/1 server and client,
//! each over an in-memory duplex (no sockets), on the test's current-thread runtime.
//! The server records every request its service sees; the client records the one
//! response it reads. Each run is bounded by [`LIMIT`], so a hang is reported, not
//! waited for.

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::portcullis_side::{fields, Fields};

/// The longest one hyper run may take.
pub const LIMIT: Duration = Duration::from_secs(10);
/// The duplex's buffer: larger than any input, so that writing it never waits on hyper.
const PIPE: usize = 1 << 20;
/// hyper's read buffer cap, well above Portcullis's 64 KiB head limit, so that hyper is
/// never the one refusing a head for its size.
const MAX_BUF: usize = 1 << 20;

/// A request as hyper's service saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub fields: Fields,
    /// The body, or why reading it failed.
    pub body: Result<Vec<u8>, String>,
    pub trailers: Fields,
}

#[derive(Debug, Clone)]
pub struct HyperRequests {
    pub seen: Vec<SeenRequest>,
    /// Why the connection ended, when it ended on an error.
    pub error: Option<String>,
    pub timed_out: bool,
}

impl HyperRequests {
    /// How many requests hyper read whole, from the first.
    pub fn accepted(&self) -> usize {
        self.seen
            .iter()
            .take_while(|seen| seen.body.is_ok())
            .count()
    }
}

/// An error and its sources, outermost first: hyper's own message is general ("error
/// reading a body from connection"), its source says what was wrong.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a body to its end: data, trailers, or the error that stopped it.
async fn read_body(mut body: Incoming) -> (Result<Vec<u8>, String>, Fields) {
    let mut data = Vec::new();
    let mut trailers = Fields::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => {
                    if let Ok(map) = frame.into_trailers() {
                        trailers = fields(&map);
                    }
                }
            },
            Err(error) => return (Err(chain(&error)), trailers),
        }
    }
    (Ok(data), trailers)
}

/// Serves `input` (written whole, then the write half shut) through hyper's HTTP/1
/// server, answering every request `200` with an empty body.
pub async fn requests(input: &[u8]) -> HyperRequests {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (mut client, server) = tokio::io::duplex(PIPE);
    let record = Rc::clone(&seen);
    let service = service_fn(move |request: Request<Incoming>| {
        let record = Rc::clone(&record);
        async move {
            let (parts, body) = request.into_parts();
            let (body, trailers) = read_body(body).await;
            record.borrow_mut().push(SeenRequest {
                method: parts.method.as_str().to_owned(),
                target: parts.uri.to_string(),
                version: parts.version,
                fields: fields(&parts.headers),
                body,
                trailers,
            });
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // A client that has sent everything and shut its write half still gets its
        // answers (the test always shuts it after the input).
        .half_close(true)
        .max_buf_size(MAX_BUF)
        .serve_connection(TokioIo::new(server), service);
    let client_side = async move {
        // Errors here mean hyper closed first; what it saw is recorded either way.
        let _ = client.write_all(input).await;
        let _ = client.shutdown().await;
        let mut answers = Vec::new();
        let _ = client.read_to_end(&mut answers).await;
    };
    let run = async { tokio::join!(connection, client_side).0 };
    let (error, timed_out) = match tokio::time::timeout(LIMIT, run).await {
        Ok(Ok(())) => (None, false),
        Ok(Err(error)) => (Some(chain(&error)), false),
        Err(_) => (Some("timed out".to_owned()), true),
    };
    let seen = seen.borrow().clone();
    HyperRequests {
        seen,
        error,
        timed_out,
    }
}

/// A response as hyper's client read it.
#[derive(Debug, Clone)]
pub struct SeenResponse {
    pub status: u16,
    pub version: Version,
    pub fields: Fields,
    pub body: Result<Vec<u8>, String>,
    pub trailers: Fields,
}

#[derive(Debug, Clone)]
pub enum HyperResponse {
    Read(SeenResponse),
    /// hyper refused the response head (or the connection ended before one).
    Refused(String),
    TimedOut,
}

/// Sends one `method` request through hyper's HTTP/1 client; the test's server reads
/// it, answers with `input` and closes.
pub async fn response(input: &[u8], method: Method) -> HyperResponse {
    let (client, server) = tokio::io::duplex(PIPE);
    let run = async {
        let (mut sender, connection) = match hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_BUF)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(client))
            .await
        {
            Ok(parts) => parts,
            Err(error) => return HyperResponse::Refused(chain(&error)),
        };
        let request = Request::builder()
            .method(method)
            .uri("/")
            .header("host", "upstream.test")
            .body(Empty::new())
            .expect("a valid request");
        let client_side = async move {
            let answer = match sender.send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let (body, trailers) = read_body(body).await;
                    HyperResponse::Read(SeenResponse {
                        status: parts.status.as_u16(),
                        version: parts.version,
                        fields: fields(&parts.headers),
                        body,
                        trailers,
                    })
                }
                Err(error) => HyperResponse::Refused(chain(&error)),
            };
            drop(sender);
            answer
        };
        tokio::join!(connection, client_side, play_server(server, input)).1
    };
    tokio::time::timeout(LIMIT, run)
        .await
        .unwrap_or(HyperResponse::TimedOut)
}

/// The upstream: reads the request head, writes `input`, closes.
async fn play_server(mut io: DuplexStream, input: &[u8]) {
    let mut request = Vec::new();
    let mut chunk = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = io.write_all(input).await;
    let _ = io.shutdown().await;
}
