//! `portcullis_http_requests_total` and `portcullis_http_request_duration_seconds`: the
//! requests the gateway answered, counted per listener, route, method and status when
//! the response is sent, and timed per route.

use std::sync::{Arc, OnceLock};

use http::{Method, StatusCode};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use super::{Metrics, Registrar};

/// Method label values; anything else is counted as `OTHER` so labels stay bounded.
const METHOD_LABELS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "OTHER",
];

/// Status codes whose counters are cached per route; others take the slower labelled path.
const CACHED_STATUSES: [u16; 30] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413,
    414, 415, 422, 429, 431, 499, 500, 501, 502, 503, 504,
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        _ => 8,
    }
}

/// The label value for the pseudo-route of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "_unmatched";

/// The request families, registered once per process.
#[derive(Clone)]
pub(super) struct RequestFamilies {
    pub(super) http_requests: IntCounterVec,
    http_duration: HistogramVec,
}

impl RequestFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        RequestFamilies {
            http_requests: r.counter(
                "portcullis_http_requests_total",
                "Requests answered, by listener, route, method and status.",
                &["listener", "route", "method", "status"],
            ),
            http_duration: r.histogram(
                "portcullis_http_request_duration_seconds",
                "Time from a request's arrival until its response body was sent, by route.",
                &["route"],
            ),
        }
    }
}

impl Metrics {
    /// Handles for one route on every listener (`listeners` in configuration order).
    pub fn route(&self, route: &str, listeners: &[String]) -> RouteMetrics {
        let route: Arc<str> = route.into();
        RouteMetrics {
            requests: listeners
                .iter()
                .map(|listener| RequestCounters {
                    family: self.requests.http_requests.clone(),
                    listener: listener.as_str().into(),
                    route: route.clone(),
                    cells: OnceLock::new(),
                })
                .collect(),
            duration: self.requests.http_duration.with_label_values(&[&*route]),
        }
    }
}

/// Counters of one route on one listener, by method and status, created on first use.
pub struct RequestCounters {
    family: IntCounterVec,
    listener: Arc<str>,
    route: Arc<str>,
    cells: OnceLock<Box<[OnceLock<IntCounter>]>>,
}

impl RequestCounters {
    pub fn inc(&self, method: &Method, status: StatusCode) {
        let m = method_index(method);
        match CACHED_STATUSES.binary_search(&status.as_u16()) {
            Ok(s) => {
                let cells = self.cells.get_or_init(|| {
                    (0..METHOD_LABELS.len() * CACHED_STATUSES.len())
                        .map(|_| OnceLock::new())
                        .collect()
                });
                cells[m * CACHED_STATUSES.len() + s]
                    .get_or_init(|| self.labelled(m, status))
                    .inc();
            }
            Err(_) => self.labelled(m, status).inc(),
        }
    }

    /// Counts a request whose method could not be read (label `OTHER`).
    pub fn inc_unknown_method(&self, status: StatusCode) {
        self.labelled(METHOD_LABELS.len() - 1, status).inc();
    }

    fn labelled(&self, method: usize, status: StatusCode) -> IntCounter {
        self.family.with_label_values(&[
            &*self.listener,
            &*self.route,
            METHOD_LABELS[method],
            status.as_str(),
        ])
    }
}

/// Handles for one route.
pub struct RouteMetrics {
    /// Indexed by listener, in configuration order.
    pub requests: Vec<RequestCounters>,
    pub duration: Histogram,
}

impl RouteMetrics {
    /// The counters for the listener at `index` (see `Snapshot::listener_index`).
    pub fn for_listener(&self, index: Option<usize>) -> Option<&RequestCounters> {
        index.and_then(|i| self.requests.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_for_binary_search() {
        assert!(CACHED_STATUSES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn request_counters_count_by_method_and_status() {
        let metrics = Metrics::new();
        let route = metrics.route("users", &["public".to_owned()]);
        route.requests[0].inc(&Method::GET, StatusCode::OK);
        route.requests[0].inc(&Method::GET, StatusCode::OK);
        route.requests[0].inc(
            &Method::from_bytes(b"PURGE").expect("valid"),
            StatusCode::IM_A_TEAPOT,
        );
        let text = String::from_utf8(metrics.encode()).expect("utf-8");
        assert!(text.contains(
            "portcullis_http_requests_total{listener=\"public\",method=\"GET\",route=\"users\",status=\"200\"} 2"
        ), "{text}");
        assert!(
            text.contains("method=\"OTHER\",route=\"users\",status=\"418\"} 1"),
            "{text}"
        );
    }
}
