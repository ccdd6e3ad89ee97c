//! Body types of both directions of the proxy.
//!
//! [`ClientBody`] is a request body as the client's connection delivers it: read by the
//! gateway's own HTTP/1.1 server, or by hyper's HTTP/2 server.
//! [`UpstreamBody`] streams the client's request body upstream, enforcing the
//! listener's size limit as bytes pass. [`ResponseBody`] streams the upstream's response
//! to the client, carrying the exchange's guard (its concurrency permit, endpoint load
//! and timer) until the last byte is sent or the client goes away; or streams what the
//! gateway itself produces. Nothing is buffered.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::server::http1::{RequestBody, RequestBodyError};
use crate::upstream::{Exchange, ReceivedBody};

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

/// An HTTP/2 client's request body as hyper reads it, except that the frame which
/// completes a declared `Content-Length` is held back until the client ends its stream.
/// h2 checks the length only as DATA arrives, so a body longer than declared would
/// otherwise reach an HTTP/1.1 upstream as a complete request (the first
/// `Content-Length` bytes) before h2 resets the stream: a request the client may then
/// send again. Held back, such a body never completes upstream (RFC 9113 §8.1.1).
pub struct Http2Body {
    inner: Incoming,
    /// Declared bytes not seen yet, when the client declared a length.
    left: Option<u64>,
    /// The frame that completed the declared length, until the stream ends.
    held: Option<Bytes>,
    /// Trailers that arrived while a frame was held: handed out after it.
    trailers: Option<http::HeaderMap>,
    /// The client ended its stream.
    ended: bool,
}

impl Http2Body {
    pub fn new(inner: Incoming, declared: Option<u64>) -> Self {
        Http2Body {
            inner,
            left: declared,
            held: None,
            trailers: None,
            ended: false,
        }
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                if let Some(data) = this.held.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.ended = true;
                    continue;
                }
                Some(Err(error)) => {
                    this.held = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    if this.held.is_some() && !data.is_empty() {
                        this.held = None;
                        return Poll::Ready(Some(Err(ClientBodyError::LongerThanDeclared)));
                    }
                    if let Some(left) = &mut this.left {
                        *left = left.saturating_sub(data.len() as u64);
                        if *left == 0 && !this.inner.is_end_stream() {
                            if !data.is_empty() {
                                this.held = Some(data);
                            }
                            continue;
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) if this.held.is_some() => this.trailers = Some(trailers),
                    Ok(trailers) => return Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    Err(_) => {}
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.trailers.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.held {
            Some(held) => SizeHint::with_exact(held.len() as u64),
            None => self.inner.size_hint(),
        }
    }
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

/// The body of a request sent upstream.
pub enum UpstreamBody {
    Empty,
    /// A body kept in memory so that a retry can send it again.
    Full(Option<Bytes>),
    /// The client's body, streamed as it arrives, cut off beyond `limit` bytes.
    Client {
        inner: ClientBody,
        limit: u64,
        seen: u64,
    },
}

impl UpstreamBody {
    /// A copy to send again, for a body the gateway holds or an empty one (none for a
    /// streamed one).
    pub fn replayable(&self) -> Option<UpstreamBody> {
        match self {
            UpstreamBody::Empty => Some(UpstreamBody::Empty),
            UpstreamBody::Full(bytes) => Some(UpstreamBody::Full(bytes.clone())),
            UpstreamBody::Client { inner, .. } if inner.is_end_stream() => {
                Some(UpstreamBody::Empty)
            }
            UpstreamBody::Client { .. } => None,
        }
    }

    pub fn client(inner: ClientBody, limit: u64) -> Self {
        UpstreamBody::Client {
            inner,
            limit,
            seen: 0,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Client { inner, limit, seen } => {
                match ready!(Pin::new(inner).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            *seen += data.len() as u64;
                            if *seen > *limit {
                                return Poll::Ready(Some(Err(BodyError::TooLarge {
                                    limit: *limit,
                                })));
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(error)) => Poll::Ready(Some(Err(BodyError::Client(error)))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Full(bytes) => bytes.is_none(),
            UpstreamBody::Client { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpstreamBody::Client { inner, .. } => inner.size_hint(),
        }
    }
}

/// The body of a response sent to the client.
pub enum ResponseBody {
    /// A body the gateway made itself (errors, admin pages).
    Full(Option<Bytes>),
    /// An upstream's body, streamed; `guard` is dropped at its end.
    Upstream {
        inner: ReceivedBody,
        guard: Option<Exchange>,
    },
    /// Chunks the gateway produces as it goes (aggregate NDJSON).
    Stream(Pin<Box<dyn Stream<Item = Bytes> + Send>>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    pub fn stream(chunks: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        ResponseBody::Stream(Box::pin(chunks))
    }

    pub fn upstream(inner: ReceivedBody, guard: Exchange) -> Self {
        ResponseBody::Upstream {
            inner,
            guard: Some(guard),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ResponseBody::Stream(chunks) => chunks
                .as_mut()
                .poll_next(cx)
                .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes)))),
            ResponseBody::Upstream { inner, guard } => {
                let polled = ready!(Pin::new(&mut *inner).poll_frame(cx));
                match polled {
                    Some(Ok(frame)) => {
                        if inner.is_end_stream() {
                            guard.take();
                        }
                        // Trailers from any upstream (HTTP/2 ones too) lose the fields a
                        // trailer section may not carry.
                        let frame = if frame.is_trailers() {
                            match frame.into_trailers() {
                                Ok(mut trailers) => {
                                    crate::http1::fields::remove_forbidden_trailers(&mut trailers);
                                    Frame::trailers(trailers)
                                }
                                Err(frame) => frame,
                            }
                        } else {
                            frame
                        };
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(error)) => {
                        if let Some(mut guard) = guard.take() {
                            guard.body_failed(&error);
                        }
                        Poll::Ready(Some(Err(error)))
                    }
                    None => {
                        guard.take();
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResponseBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}
