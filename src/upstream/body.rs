//! The bodies on both sides of an exchange, built where they are produced.
//!
//! [`UpstreamBody`] streams the client's request body upstream, enforcing the
//! listener's size limit as bytes pass (or replays one the gateway kept for a retry).
//! [`ResponseBody`] streams the upstream's response to the client, carrying the
//! exchange's guard (its concurrency permit, endpoint load and timer) until the last
//! byte is sent or the client goes away; or streams what the gateway itself produces.
//! Nothing is buffered.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Exchange, ReceivedBody};
use crate::access_log::Entry;
use crate::body::{BodyError, BoxError, ClientBody};

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
        /// Told the bytes seen, for the access log (only when the request is logged).
        counted: Option<Arc<AtomicU64>>,
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
            counted: None,
        }
    }

    /// Like [`UpstreamBody::client`], telling `counted` the bytes as they pass.
    pub fn counted(inner: ClientBody, limit: u64, counted: Option<Arc<AtomicU64>>) -> Self {
        UpstreamBody::Client {
            inner,
            limit,
            seen: 0,
            counted,
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
            UpstreamBody::Client {
                inner,
                limit,
                seen,
                counted,
            } => match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        *seen += data.len() as u64;
                        if let Some(counted) = counted {
                            counted.store(*seen, Ordering::Relaxed);
                        }
                        if *seen > *limit {
                            return Poll::Ready(Some(Err(BodyError::TooLarge { limit: *limit })));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(error)) => Poll::Ready(Some(Err(BodyError::Client(error)))),
                None => Poll::Ready(None),
            },
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
    /// A body whose request is in the access log: its line is emitted when the body
    /// ends or is dropped.
    Logged(Box<Logged>),
}

/// A response body and its request's access-log line.
pub struct Logged {
    inner: ResponseBody,
    entry: Box<Entry>,
}

impl Drop for Logged {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.entry.completed();
        }
    }
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

    /// `inner`, counted and ended in `entry`'s line.
    pub fn logged(inner: ResponseBody, entry: Box<Entry>) -> Self {
        ResponseBody::Logged(Box::new(Logged { inner, entry }))
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
            ResponseBody::Logged(logged) => {
                let polled = ready!(Pin::new(&mut logged.inner).poll_frame(cx));
                match &polled {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            logged.entry.sent(data.len());
                        }
                    }
                    Some(Err(_)) => {}
                    None => logged.entry.completed(),
                }
                Poll::Ready(polled)
            }
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
            ResponseBody::Logged(logged) => logged.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::Stream(_) => SizeHint::default(),
            ResponseBody::Logged(logged) => logged.inner.size_hint(),
        }
    }
}
