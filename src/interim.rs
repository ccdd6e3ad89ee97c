//! `103 Early Hints` on their way from an upstream to the client, while the final
//! response is still awaited: the gateway's HTTP/1.1 server puts an [`EarlyHints`] in
//! the request's extensions, the proxy carries it to the upstream request, the
//! gateway's HTTP/1.1 client pushes each `103` it reads into it, and the server writes
//! them to the client before the final response. A leaf: it knows neither side.
//!
//! Bounded: at most [`MAX_HINTS`] per request; hints arriving after the final response
//! has started are dropped (RFC 8297 lets an intermediary drop them).

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};

use http::HeaderMap;

/// The most early hints passed on for one request.
pub const MAX_HINTS: usize = 8;

/// The hints of one request, shared by the client's connection and the upstream
/// exchange. Cloning shares them.
#[derive(Clone, Default)]
pub struct EarlyHints(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    pending: Vec<HeaderMap>,
    /// Hints pushed so far, taken or not.
    pushed: usize,
    /// The final response is under way: nothing more is taken.
    closed: bool,
    /// The client's connection, waiting for hints.
    waker: Option<Waker>,
}

impl EarlyHints {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Passes on one `103`'s fields; `false` when they were dropped (too many, or the
    /// final response has started).
    pub fn push(&self, fields: HeaderMap) -> bool {
        let mut slot = self.slot();
        if slot.closed || slot.pushed >= MAX_HINTS {
            return false;
        }
        slot.pushed += 1;
        slot.pending.push(fields);
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
        true
    }

    /// The hints pushed since the last call; registers `cx` to be woken by the next.
    pub fn take(&self, cx: &Context<'_>) -> Vec<HeaderMap> {
        let mut slot = self.slot();
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        std::mem::take(&mut slot.pending)
    }

    /// Ready for the next request on the connection.
    pub fn reset(&self) {
        let mut slot = self.slot();
        *slot = Slot::default();
    }

    /// The final response is being written: later hints are dropped.
    pub fn close(&self) {
        let mut slot = self.slot();
        slot.closed = true;
        slot.pending.clear();
        slot.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_bounded_and_stop_at_the_final_response() {
        let hints = EarlyHints::default();
        let cx = Context::from_waker(Waker::noop());
        for _ in 0..MAX_HINTS {
            assert!(hints.push(HeaderMap::new()));
        }
        assert!(!hints.push(HeaderMap::new()));
        assert_eq!(hints.take(&cx).len(), MAX_HINTS);
        assert!(hints.take(&cx).is_empty());
        let hints = EarlyHints::default();
        hints.close();
        assert!(!hints.push(HeaderMap::new()));
    }
}
