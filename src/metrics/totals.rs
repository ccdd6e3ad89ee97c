//! Running totals read back from the counter families, for the admin listener's
//! status page: requests and errors per route and per upstream endpoint. Read on an
//! admin request (a walk over the families' series), never on the request path.

use std::collections::HashMap;

use prometheus::core::Collector;

use super::{Metrics, UpstreamOutcome};

/// Requests counted, and how many of them failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub requests: u64,
    pub errors: u64,
}

impl Count {
    fn add(&mut self, value: f64, failed: bool) {
        // Counters hold whole numbers; the float is how the exposition carries them.
        let value = value.max(0.0) as u64;
        self.requests += value;
        if failed {
            self.errors += value;
        }
    }
}

/// Totals since the process started.
#[derive(Debug, Default)]
pub struct Totals {
    /// By route name: requests answered, and those answered with a 5xx status.
    pub routes: HashMap<String, Count>,
    /// By (upstream, endpoint label): requests sent, and those that failed (a 5xx
    /// answer, a connect or TLS failure, a timeout, a broken exchange).
    pub endpoints: HashMap<(String, String), Count>,
}

impl Metrics {
    /// Reads the request counters of every route and endpoint.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for family in self.requests.http_requests.collect() {
            for metric in family.get_metric() {
                let (mut route, mut status) = (None, None);
                for pair in metric.get_label() {
                    match pair.name() {
                        "route" => route = Some(pair.value()),
                        "status" => status = Some(pair.value()),
                        _ => {}
                    }
                }
                let (Some(route), Some(status)) = (route, status) else {
                    continue;
                };
                let failed = status.starts_with('5');
                totals
                    .routes
                    .entry(route.to_owned())
                    .or_default()
                    .add(metric.get_counter().get_value(), failed);
            }
        }
        for family in self.upstreams.requests.collect() {
            for metric in family.get_metric() {
                let (mut upstream, mut endpoint, mut outcome) = (None, None, None);
                for pair in metric.get_label() {
                    match pair.name() {
                        "upstream" => upstream = Some(pair.value()),
                        "endpoint" => endpoint = Some(pair.value()),
                        "outcome" => outcome = Some(pair.value()),
                        _ => {}
                    }
                }
                let (Some(upstream), Some(endpoint), Some(outcome)) = (upstream, endpoint, outcome)
                else {
                    continue;
                };
                totals
                    .endpoints
                    .entry((upstream.to_owned(), endpoint.to_owned()))
                    .or_default()
                    .add(metric.get_counter().get_value(), failed_outcome(outcome));
            }
        }
        totals
    }
}

/// Whether an outcome label of `portcullis_upstream_requests_total` is a failure.
fn failed_outcome(label: &str) -> bool {
    ![
        UpstreamOutcome::Status1xx,
        UpstreamOutcome::Status2xx,
        UpstreamOutcome::Status3xx,
        UpstreamOutcome::Status4xx,
    ]
    .iter()
    .any(|ok| ok.label() == label)
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};

    use super::*;

    #[test]
    fn totals_add_up_requests_and_errors_by_route_and_endpoint() {
        let metrics = Metrics::new();
        let route = metrics.route("users", &["public".to_owned(), "admin".to_owned()]);
        route.requests[0].inc(&Method::GET, StatusCode::OK);
        route.requests[1].inc(&Method::POST, StatusCode::NOT_FOUND);
        route.requests[0].inc(&Method::GET, StatusCode::BAD_GATEWAY);
        let endpoint = metrics.endpoint("u", "http://127.0.0.1:1");
        endpoint.record(UpstreamOutcome::Status2xx);
        endpoint.record(UpstreamOutcome::ConnectFailure);
        endpoint.record(UpstreamOutcome::Status5xx);

        let totals = metrics.totals();
        assert_eq!(
            totals.routes["users"],
            Count {
                requests: 3,
                errors: 1
            }
        );
        assert_eq!(
            totals.endpoints[&("u".to_owned(), "http://127.0.0.1:1".to_owned())],
            Count {
                requests: 3,
                errors: 2
            }
        );
    }
}
