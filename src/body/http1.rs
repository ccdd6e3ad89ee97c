//! An HTTP/1.1 request body read from the client's connection only as fast as its
//! consumer asks for it. The connection's task decodes the body (length or chunked) and hands over
//! one frame at a time through a slot; the consumer ([`RequestBody`]) may run in the
//! same task (the gateway's HTTP/1.1 client) or another (hyper's HTTP/2 client). Each
//! side wakes the other only when that other side is a different task.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::http1::{Decoded, Decoder, WireError};

/// Why the client's request body could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestBodyError {
    #[error("the client closed the connection before the request body ended")]
    Truncated,
    #[error("malformed chunked request body: {0}")]
    Malformed(&'static str),
    #[error("reading the request body failed: {0}")]
    Io(String),
}

/// The consumer's end: an [`http_body::Body`].
pub struct RequestBody {
    shared: Arc<Mutex<Slot>>,
    /// The declared `Content-Length`, when there is one.
    declared: Option<u64>,
}

/// The connection's end: decodes the body and fills the slot when it is wanted.
pub struct BodyFeed {
    shared: Arc<Mutex<Slot>>,
    decoder: Decoder,
    /// `Expect: 100-continue` and no `100 Continue` written yet.
    pub owes_continue: bool,
    /// Bytes of `100 Continue` written so far.
    pub continue_written: usize,
}

#[derive(Default)]
struct Slot {
    frame: Option<Result<Frame<Bytes>, RequestBodyError>>,
    /// The consumer is waiting for the next frame.
    wanted: bool,
    /// The last frame has been put in the slot.
    ended: bool,
    /// The consumer dropped the body.
    abandoned: bool,
    delivered: u64,
    consumer: Option<Waker>,
    connection: Option<Waker>,
}

fn lock(shared: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes `waker` unless it is the current task's (which polls again by itself).
fn wake_other(waker: Option<Waker>, current: &Waker) {
    if let Some(waker) = waker {
        if !waker.will_wake(current) {
            waker.wake();
        }
    }
}

/// What the consumer is doing, as the connection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// Waiting for the next frame.
    Wanted,
    /// Not asking now; the connection is woken when it does.
    NotYet,
    /// Dropped the body before its end.
    Abandoned,
    /// Every frame has been handed over.
    Finished,
}

/// The body with `decoder`'s framing, and the connection's end that feeds it.
pub fn channel(
    decoder: Decoder,
    declared: Option<u64>,
    expects_continue: bool,
) -> (BodyFeed, RequestBody) {
    let shared = Arc::new(Mutex::new(Slot::default()));
    (
        BodyFeed {
            shared: shared.clone(),
            decoder,
            owes_continue: expects_continue,
            continue_written: 0,
        },
        RequestBody { shared, declared },
    )
}

impl BodyFeed {
    /// Whether every byte of the body has been read off the connection.
    pub fn is_read(&self) -> bool {
        self.decoder.is_done()
    }

    /// Whether the body's framing broke (or the connection ended within it): where the
    /// body ends cannot be told, so the connection must close after its response.
    pub fn is_broken(&self) -> bool {
        self.decoder.is_failed()
    }

    /// Whether the consumer dropped the body before its end.
    pub fn is_abandoned(&self) -> bool {
        let slot = lock(&self.shared);
        slot.abandoned && !slot.ended
    }

    /// What the consumer wants; registers `cx` to be woken when it asks.
    pub fn demand(&self, cx: &Context<'_>) -> Demand {
        let mut slot = lock(&self.shared);
        if slot.ended {
            Demand::Finished
        } else if slot.abandoned {
            Demand::Abandoned
        } else if slot.wanted && slot.frame.is_none() {
            Demand::Wanted
        } else {
            if !slot
                .connection
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                slot.connection = Some(cx.waker().clone());
            }
            Demand::NotYet
        }
    }

    /// Decodes the next frame from `buf` into the slot. `Ok(false)`: more bytes needed.
    pub fn decode_into_slot(&mut self, buf: &mut BytesMut, cx: &Context<'_>) -> bool {
        let decoded = match self.decoder.decode(buf) {
            Ok(None) => return false,
            Ok(Some(decoded)) => Ok(decoded),
            Err(error) => Err(error),
        };
        let mut slot = lock(&self.shared);
        match decoded {
            Ok(Decoded::Data(data)) => {
                slot.delivered += data.len() as u64;
                slot.frame = Some(Ok(Frame::data(data)));
                slot.ended = self.decoder.is_done();
            }
            Ok(Decoded::Trailers(trailers)) => {
                slot.frame = Some(Ok(Frame::trailers(trailers)));
                slot.ended = true;
            }
            Ok(Decoded::End) => slot.ended = true,
            Err(error) => {
                slot.frame = Some(Err(match error {
                    WireError::Chunked(what) => RequestBodyError::Malformed(what),
                    _ => RequestBodyError::Truncated,
                }));
                // The decoder stays failed: nothing after the error is read as body or
                // as a next request, and the connection closes after its response.
                slot.ended = true;
            }
        }
        slot.wanted = false;
        let consumer = slot.consumer.take();
        drop(slot);
        wake_other(consumer, cx.waker());
        true
    }

    /// The connection ended (the client closed it, or reading failed) before the body
    /// did: the consumer gets `error`.
    pub fn fail(&mut self, error: RequestBodyError, cx: &Context<'_>) {
        if self.decoder.is_done() || self.decoder.is_failed() {
            return;
        }
        self.decoder = Decoder::Failed;
        let mut slot = lock(&self.shared);
        slot.frame = Some(Err(error));
        slot.ended = true;
        let consumer = slot.consumer.take();
        drop(slot);
        wake_other(consumer, cx.waker());
    }

    /// Throws away the body bytes already buffered, for a body nobody reads; `true` once
    /// the whole body has been passed over.
    pub fn discard_buffered(&mut self, buf: &mut BytesMut) -> bool {
        while !self.decoder.is_done() {
            match self.decoder.decode(buf) {
                Ok(Some(_)) => {}
                Ok(None) => return false,
                Err(_) => return false,
            }
        }
        true
    }
}

impl Drop for BodyFeed {
    fn drop(&mut self) {
        if self.decoder.is_done() || self.decoder.is_failed() {
            return;
        }
        // The connection is gone with the body unfinished.
        let mut slot = lock(&self.shared);
        if !slot.ended {
            slot.frame = Some(Err(RequestBodyError::Truncated));
            slot.ended = true;
            if let Some(consumer) = slot.consumer.take() {
                consumer.wake();
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let mut slot = lock(&self.shared);
        if let Some(frame) = slot.frame.take() {
            return Poll::Ready(Some(frame));
        }
        if slot.ended {
            return Poll::Ready(None);
        }
        slot.wanted = true;
        if !slot
            .consumer
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            slot.consumer = Some(cx.waker().clone());
        }
        let connection = slot.connection.take();
        drop(slot);
        wake_other(connection, cx.waker());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let slot = lock(&self.shared);
        slot.ended && slot.frame.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(declared) => {
                SizeHint::with_exact(declared.saturating_sub(lock(&self.shared).delivered))
            }
            None => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut slot = lock(&self.shared);
        slot.abandoned = true;
        slot.consumer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_are_handed_over_as_they_are_asked_for() {
        let (mut feed, body) = channel(Decoder::chunked(), None, false);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 5\r\n\r\n"[..]);
        let consumer = tokio::spawn(async move { body.collect().await });
        let feeder = std::future::poll_fn(|cx| loop {
            match feed.demand(cx) {
                Demand::Finished => return Poll::Ready(()),
                Demand::Wanted => assert!(feed.decode_into_slot(&mut buf, cx)),
                Demand::NotYet => return Poll::Pending,
                Demand::Abandoned => panic!("the consumer is reading"),
            }
        });
        feeder.await;
        let collected = consumer.await.expect("joins").expect("complete body");
        assert_eq!(
            collected.trailers().map(|t| t["x-sum"].clone()),
            Some("5".parse().expect("value"))
        );
        assert_eq!(collected.to_bytes(), "abcde");
    }

    #[tokio::test]
    async fn a_connection_gone_mid_body_is_an_error_for_the_consumer() {
        let (feed, body) = channel(Decoder::Length(10), Some(10), false);
        assert_eq!(body.size_hint().exact(), Some(10));
        drop(feed);
        let error = body.collect().await.err();
        assert_eq!(error, Some(RequestBodyError::Truncated));
    }
}
