//! The access log: one JSON line per request, per listener (on unless `off`; stdout or
//! a file), kept off the request's critical path.
//!
//! - [`entry`]: a request's line, written into a reused buffer as its facts become
//!   known and emitted when the response ends (or the request is dropped);
//! - [`json`]: the field writer (strings escaped by serde_json);
//! - [`writer`]: one thread per destination behind a bounded queue; a full queue drops
//!   lines and counts them, never blocking a request; files reopen on `SIGUSR1`.
//!
//! [`build`] makes each listener's [`AccessLog`] once per configuration; a destination
//! that a reload keeps keeps its writer (and its queue). A request on a route with
//! `access_log: off`, or on a listener without a log, costs one branch.

pub mod entry;
mod json;
pub mod writer;

use std::sync::Arc;

use http::HeaderMap;

pub use entry::{CallStatuses, Entry, RefusedFacts, RequestFacts};
use writer::Sink;

use crate::config::AccessLogConfig;
use crate::metrics::Metrics;

/// A listener's access log: its settings and its destination's writer.
pub struct AccessLog {
    pub config: AccessLogConfig,
    sink: Arc<Sink>,
}

impl AccessLog {
    /// Reopens the destination's file before its next line (logrotate's `SIGUSR1`).
    pub fn reopen(&self) {
        self.sink.reopen();
    }
}

/// Each listener's access log for `configs` (indexed like the listeners), sharing the
/// writers of `previous` (the running configuration's logs) for the destinations it
/// keeps, and one writer per destination among themselves.
pub fn build(
    configs: &[Option<AccessLogConfig>],
    previous: &[Option<Arc<AccessLog>>],
    metrics: &Metrics,
) -> Vec<Option<Arc<AccessLog>>> {
    let mut sinks: Vec<Arc<Sink>> = Vec::new();
    configs
        .iter()
        .map(|config| {
            let config = config.as_ref()?;
            let known = sinks
                .iter()
                .chain(previous.iter().flatten().map(|log| &log.sink))
                .find(|sink| sink.destination == config.destination)
                .cloned();
            let sink = match known {
                Some(sink) => sink,
                None => match Sink::start(
                    config.destination.clone(),
                    config.queue,
                    metrics.access_log(),
                ) {
                    Ok(sink) => sink,
                    Err(error) => {
                        tracing::error!("cannot start the access log's writer thread: {error}");
                        return None;
                    }
                },
            };
            if !sinks.iter().any(|s| Arc::ptr_eq(s, &sink)) {
                sinks.push(sink.clone());
            }
            Some(Arc::new(AccessLog {
                config: config.clone(),
                sink,
            }))
        })
        .collect()
}

/// The trace id of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not
/// all zeros); `None` for anything else. A placeholder until the gateway traces.
pub fn trace_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let bytes = value.as_bytes();
    let hex = |part: &[u8]| {
        part.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    // Version 00 is exactly 55 bytes; later versions may append fields after a `-`.
    let fits = bytes.len() == 55 || (bytes.len() > 55 && bytes[55] == b'-' && &bytes[..2] != b"00");
    if !fits
        || bytes[2] != b'-'
        || bytes[35] != b'-'
        || bytes[52] != b'-'
        || !hex(&bytes[..2])
        || &bytes[..2] == b"ff"
        || !hex(&bytes[3..35])
        || !hex(&bytes[36..52])
        || !hex(&bytes[53..55])
    {
        return None;
    }
    let trace = &value[3..35];
    let parent = &value[36..52];
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traceparent(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_str(value).expect("a valid header value"),
        );
        headers
    }

    #[test]
    fn only_valid_traceparents_give_a_trace_id() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(&traceparent(good)),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "",
        ] {
            assert_eq!(trace_id(&traceparent(bad)), None, "{bad}");
        }
        assert_eq!(trace_id(&HeaderMap::new()), None);
    }
}
