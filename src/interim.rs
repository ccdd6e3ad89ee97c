//! `103 Early Hints` on their way from an upstream to the client while the final
//! response is awaited. The gateway's HTTP/1.1 server polls a request's handler with
//! the connection's [`Hints`] as this thread's sink ([`Collecting`]), and the gateway's
//! HTTP/1.1 client, polled inside, passes each `103` it reads to the sink ([`push`]).
//! The server then writes them to the client before the final response.
//!
//! Nothing is allocated or locked per request: the sink is moved into a thread-local
//! for the length of one synchronous poll and back out, so it is seen only by what
//! that poll runs, never by other connections' tasks. Exchanges polled within a
//! handler whose responses are not forwarded as they are (an aggregate route's calls;
//! any future sub-request) must run inside [`NotForwarded`]. A leaf: it knows neither
//! side.
//!
//! Bounded: at most [`MAX_HINTS`] per request. RFC 8297 lets an intermediary drop them,
//! which is what happens where no sink is set (HTTP/1.0 and HTTP/2 clients).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;

/// The most early hints passed on for one request.
pub const MAX_HINTS: usize = 8;

/// One connection's early hints for its current request: taken by the server after
/// each poll, emptied for the next request.
#[derive(Default)]
pub struct Hints {
    pending: Vec<HeaderMap>,
    /// Hints pushed for the current request, taken or not.
    pushed: usize,
}

impl Hints {
    /// Hints pushed since the last call.
    pub fn take(&mut self) -> Vec<HeaderMap> {
        std::mem::take(&mut self.pending)
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Ready for the next request on the connection.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.pushed = 0;
    }
}

thread_local! {
    static SINK: Cell<Option<Hints>> = const { Cell::new(None) };
    static SUPPRESSED: Cell<bool> = const { Cell::new(false) };
}

/// While it lives (one poll of a request's handler), `hints` is the sink for the early
/// hints of the exchange that poll forwards; they are back in `hints` when it drops.
/// A guard rather than a closure: the handler's poll result is not moved through it.
pub struct Collecting<'a> {
    hints: &'a mut Hints,
    outer: Option<Hints>,
}

impl<'a> Collecting<'a> {
    pub fn start(hints: &'a mut Hints) -> Self {
        let outer = SINK.replace(Some(std::mem::take(hints)));
        Collecting { hints, outer }
    }
}

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        *self.hints = SINK.replace(self.outer.take()).unwrap_or_default();
    }
}

/// A future whose upstream exchanges are not the one forwarded to the client (an
/// aggregate route's calls): their early hints are dropped.
pub struct NotForwarded<F>(pub Pin<Box<F>>);

impl<F: Future> Future for NotForwarded<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let outer = SUPPRESSED.replace(true);
        let polled = self.0.as_mut().poll(cx);
        SUPPRESSED.set(outer);
        polled
    }
}

/// Passes on one `103`'s fields to the client of the exchange being polled; `false`
/// when they were dropped (a client that cannot take them, an exchange that is not
/// forwarded, or [`MAX_HINTS`] already passed on).
pub fn push(fields: HeaderMap) -> bool {
    if SUPPRESSED.get() {
        return false;
    }
    let Some(mut hints) = SINK.take() else {
        return false;
    };
    let taken = hints.pushed < MAX_HINTS;
    if taken {
        hints.pushed += 1;
        hints.pending.push(fields);
    }
    SINK.set(Some(hints));
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_reach_the_sink_only_while_collecting_and_are_bounded() {
        let mut hints = Hints::default();
        assert!(!push(HeaderMap::new()), "no sink");
        {
            let _collecting = Collecting::start(&mut hints);
            for _ in 0..MAX_HINTS {
                assert!(push(HeaderMap::new()));
            }
            assert!(!push(HeaderMap::new()), "over the bound");
        }
        assert_eq!(hints.take().len(), MAX_HINTS);
        assert!(hints.is_empty());
        assert!(!push(HeaderMap::new()), "the sink left with its guard");
        hints.reset();
        {
            let _collecting = Collecting::start(&mut hints);
            let mut aggregate = NotForwarded(Box::pin(async { push(HeaderMap::new()) }));
            let cx = &mut Context::from_waker(std::task::Waker::noop());
            assert_eq!(Pin::new(&mut aggregate).poll(cx), Poll::Ready(false));
            assert!(push(HeaderMap::new()));
        }
        assert_eq!(hints.take().len(), 1);
    }
}
