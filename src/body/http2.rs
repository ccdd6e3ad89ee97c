//! An HTTP/2 client's request body as hyper reads it, held back at its declared length
//! until the client ends its stream.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::ClientBodyError;

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
