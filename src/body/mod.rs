//! The client's request body, a leaf: the one body type that crosses every layer, from
//! the server that reads it to the upstream client that sends it on.
//!
//! [`ClientBody`] is a request body as the client's connection delivers it: read by the
//! gateway's own HTTP/1.1 server through a slot ([`http1`]), or by hyper's HTTP/2 server
//! ([`http2`]). Beside it, the errors every layer shares ([`BodyError`], [`BoxError`]).
//! The bodies built from it live with their producers: what goes upstream and what
//! streams back to the client in `crate::upstream::body`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub mod http1;
pub mod http2;

pub use http1::{RequestBody, RequestBodyError};
pub use http2::Http2Body;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body could not be streamed upstream.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the client's request body failed: {0}")]
    Client(#[source] ClientBodyError),
}

/// Why a client's request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error(transparent)]
    Http1(#[from] RequestBodyError),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("the HTTP/2 request body is longer than its Content-Length")]
    LongerThanDeclared,
}

/// A request body from the client.
pub enum ClientBody {
    /// The request declared none.
    Empty,
    /// Read by the gateway's HTTP/1.1 server as it is asked for.
    Http1(RequestBody),
    /// Read by hyper (HTTP/2). Boxed: its state would triple the size of every request,
    /// HTTP/1.1 ones included, and requests are moved through the proxy's futures.
    Hyper(Box<Http2Body>),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Hyper(body) => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Hyper(body) => body.size_hint(),
        }
    }
}
