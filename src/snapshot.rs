//! One configuration compiled for serving: routes with their upstreams and metric
//! handles. A request holds the snapshot it started with, so a reload never changes a
//! request halfway.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::metrics::{Metrics, RouteMetrics, UNMATCHED_ROUTE};
use crate::upstream::Upstream;

/// A route as the proxy uses it.
pub struct RouteRuntime {
    pub upstream: Arc<Upstream>,
    pub metrics: RouteMetrics,
    /// The route's timeout, or its upstream's.
    pub timeout: Duration,
}

/// Everything a request needs, from one configuration.
pub struct Snapshot {
    pub config: Config,
    /// Indexed like `config.routes`.
    pub routes: Vec<RouteRuntime>,
    /// Indexed like `config.upstreams`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Counters for requests that matched no route.
    pub unmatched: RouteMetrics,
}

impl Snapshot {
    /// Builds clients, limiters and metric handles for `config`.
    pub fn build(config: Config, metrics: &Metrics) -> Snapshot {
        let listener_names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u, metrics)))
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let upstream = upstreams[route.upstream].clone();
                RouteRuntime {
                    timeout: route.timeout.unwrap_or(upstream.timeout),
                    metrics: metrics.route(&route.name, &listener_names),
                    upstream,
                }
            })
            .collect();
        Snapshot {
            unmatched: metrics.route(UNMATCHED_ROUTE, &listener_names),
            routes,
            upstreams,
            config,
        }
    }
}
