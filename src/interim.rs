//! `103 Early Hints` on their way from an upstream to the client while the final
//! response is awaited. The gateway's HTTP/1.1 server polls a request's handler with
//! the connection's [`Hints`] as this thread's sink ([`collect`]); the proxy polls the
//! exchange it forwards within [`forwarding`]; and the gateway's HTTP/1.1 client,
//! polled inside both, passes each `103` it reads to the sink ([`push`]). The server
//! then writes them to the client before the final response.
//!
//! Nothing is allocated or locked per request: the sink is moved into a thread-local
//! for the length of one synchronous poll and back out, so it is seen only by what
//! that poll runs (not by other connections' tasks, nor by calls an aggregate route
//! makes, which are not forwarded exchanges). A leaf: it knows neither side.
//!
//! Bounded: at most [`MAX_HINTS`] per request. RFC 8297 lets an intermediary drop them,
//! which is what happens where no sink is set (HTTP/1.0 and HTTP/2 clients).

use std::cell::Cell;

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
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `poll` (one poll of a request's handler) with `hints` as the sink for the
/// early hints of the exchange it forwards.
pub fn collect<R>(hints: &mut Hints, poll: impl FnOnce() -> R) -> R {
    let outer = SINK.replace(Some(std::mem::take(hints)));
    let result = poll();
    *hints = SINK.replace(outer).unwrap_or_default();
    result
}

/// Runs `poll` (one poll of an exchange whose response goes to the client as it is)
/// so that its early hints reach the client.
pub fn forwarding<R>(poll: impl FnOnce() -> R) -> R {
    let outer = FORWARDING.replace(true);
    let result = poll();
    FORWARDING.set(outer);
    result
}

/// Passes on one `103`'s fields to the client of the exchange being polled; `false`
/// when they were dropped (no forwarded exchange, a client that cannot take them, or
/// [`MAX_HINTS`] already passed on).
pub fn push(fields: HeaderMap) -> bool {
    if !FORWARDING.get() {
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
    fn hints_reach_the_sink_only_from_a_forwarded_exchange_and_are_bounded() {
        let mut hints = Hints::default();
        assert!(!push(HeaderMap::new()), "no sink");
        collect(&mut hints, || {
            assert!(!push(HeaderMap::new()), "not forwarded")
        });
        collect(&mut hints, || {
            forwarding(|| {
                for _ in 0..MAX_HINTS {
                    assert!(push(HeaderMap::new()));
                }
                assert!(!push(HeaderMap::new()), "over the bound");
            })
        });
        assert_eq!(hints.take().len(), MAX_HINTS);
        assert!(hints.is_empty());
        forwarding(|| assert!(!push(HeaderMap::new()), "the sink left with its poll"));
        hints.reset();
        collect(&mut hints, || {
            forwarding(|| assert!(push(HeaderMap::new())))
        });
        assert_eq!(hints.take().len(), 1);
    }
}
