//! One configuration compiled for serving: routes with their upstreams (or aggregate
//! plans) and metric handles. A request holds the snapshot it started with, so a reload never changes a
//! request halfway.

use std::sync::Arc;
use std::time::Duration;

use super::websocket::WebSockets;
use crate::access_log::{self, AccessLog};
use crate::aggregate::AggregateRuntime;
use crate::config::{Config, RetryConfig, RouteTarget};
use crate::metrics::{Metrics, RouteMetrics, UNMATCHED_ROUTE};
use crate::policy::auth::jwt::JwtKeySets;
use crate::policy::auth::Authenticators;
use crate::policy::rate_limit::{RateLimits, RedisStore};
use crate::policy::Policies;
use crate::routing::PathPattern;
use crate::trace::Tracer;
use crate::upstream::{Hedge, Upstream};

/// A route as the proxy uses it.
pub struct RouteRuntime {
    pub metrics: RouteMetrics,
    /// The route's requests go to the listener's access log (`access_log: off`: not).
    pub access_log: bool,
    /// What runs between route and limit, in order.
    pub policies: Policies,
    pub handler: RouteHandler,
    /// The route's path pattern as traces name it (`http.route`): `/api/users/{id}`.
    pub http_route: String,
}

/// What answers a route, ready to serve.
pub enum RouteHandler {
    Proxy {
        upstream: Arc<Upstream>,
        /// The route's timeout, or its upstream's.
        timeout: Duration,
        /// The route's retry policy, or its upstream's.
        retry: Option<Arc<RetryConfig>>,
        /// WebSocket upgrades; `None` when the upstream speaks HTTP/2 only.
        websocket: Option<Arc<WebSockets>>,
        /// The route's hedged requests.
        hedge: Option<Arc<Hedge>>,
    },
    Aggregate(Arc<AggregateRuntime>),
}

/// Everything a request needs, from one configuration.
pub struct Snapshot {
    pub config: Config,
    /// Indexed like `config.routes`.
    pub routes: Vec<RouteRuntime>,
    /// Indexed like `config.upstreams`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The shared rate-limit stores, indexed like `config.rate_limit_stores`; a store
    /// whose configuration a reload left unchanged is the same store (its connections
    /// kept): see [`RedisStore::carry_over`].
    pub rate_limit_stores: Vec<Arc<RedisStore>>,
    /// Counters for requests that matched no route.
    pub unmatched: RouteMetrics,
    /// Every policy's rate limits and their stores, which routes share and a reload
    /// carries over (see [`RateLimits::build`]).
    pub rate_limits: RateLimits,
    /// Each listener's access log, indexed like `config.listeners`; a destination a
    /// reload keeps keeps its writer (see [`access_log::build`]).
    pub access_logs: Vec<Option<Arc<AccessLog>>>,
    /// Every policy's JWT verifiers with their JWKS key sets and tasks, which routes
    /// share; a reload seeds them from the previous configuration's and stops those
    /// (see [`JwtKeySets::build`]).
    pub jwt: JwtKeySets,
    /// The tracer, when `tracing` is configured; a reload that leaves `tracing`
    /// unchanged keeps it (and its exporter's queue).
    pub tracer: Option<Arc<Tracer>>,
}

impl Snapshot {
    /// The position of listener `name` in this configuration, which indexes the
    /// per-listener metric handles; `None` for a listener that a reload removed (it is
    /// draining).
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.config.listeners.iter().position(|l| l.name == name)
    }

    /// Builds clients, limiters and metric handles for `config`. With `previous`, each
    /// upstream that keeps its name keeps its limiter (and its pool, if its endpoints
    /// did not change): see [`Upstream::carry_over`]; so does each shared rate-limit
    /// store whose configuration did not change, and each rate limit a reload leaves
    /// unchanged keeps its buckets (see [`RateLimits::build`]).
    pub fn build(config: Config, metrics: &Metrics, previous: Option<&Snapshot>) -> Snapshot {
        let listener_names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                let before =
                    previous.and_then(|p| p.upstreams.iter().find(|old| old.name == u.name));
                Arc::new(Upstream::carry_over(
                    u,
                    before.map(|b| &**b),
                    metrics,
                    config.per_core_workers(),
                ))
            })
            .collect();
        let rate_limit_stores: Vec<Arc<RedisStore>> = config
            .rate_limit_stores
            .iter()
            .map(|store| {
                let before = previous.and_then(|p| {
                    p.rate_limit_stores
                        .iter()
                        .find(|old| old.name() == store.name)
                });
                RedisStore::carry_over(store, before, metrics, config.per_core_workers())
            })
            .collect();
        let rate_limits = RateLimits::build(
            &config.policies,
            &rate_limit_stores,
            metrics,
            previous.map(|p| &p.rate_limits),
        );
        let jwt = JwtKeySets::build(
            crate::policy::auth::jwt_methods(&config),
            &upstreams,
            metrics,
            previous.map(|p| &p.jwt),
        );
        let authenticators = Authenticators::build(&config, metrics, &jwt);
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let route_metrics = metrics.route(&route.name, &listener_names);
                let latency = route_metrics.duration.clone();
                RouteRuntime {
                    http_route: match &route.spec.path {
                        PathPattern::Exact(path) | PathPattern::Template(path) => path.clone(),
                        PathPattern::Prefix(prefix) => format!("{prefix}/*"),
                    },
                    metrics: route_metrics,
                    access_log: route.access_log,
                    policies: Policies::for_route(
                        route,
                        &config.policies,
                        &rate_limits,
                        &authenticators,
                        metrics,
                    ),
                    handler: match &route.target {
                        RouteTarget::Proxy {
                            upstream,
                            timeout,
                            retry,
                            websocket,
                            hedge,
                            ..
                        } => {
                            let upstream = upstreams[*upstream].clone();
                            let previous_websockets =
                                previous.and_then(|p| p.websockets_of(&route.name));
                            RouteHandler::Proxy {
                                websocket: websocket.map(|config| {
                                    WebSockets::carry_over(
                                        &route.name,
                                        config,
                                        previous_websockets,
                                        metrics.websocket(&route.name),
                                    )
                                }),
                                timeout: timeout.unwrap_or(upstream.timeout),
                                hedge: hedge
                                    .clone()
                                    .map(|hedge| Arc::new(Hedge::new(*hedge, latency))),
                                retry: retry
                                    .clone()
                                    .map(Arc::new)
                                    .or_else(|| upstream.retry.clone()),
                                upstream,
                            }
                        }
                        RouteTarget::Aggregate(aggregate) => RouteHandler::Aggregate(Arc::new(
                            AggregateRuntime::new(&route.name, aggregate, &upstreams, metrics),
                        )),
                    },
                }
            })
            .collect();
        let access_logs = access_log::build(
            &config.access_logs,
            previous.map_or(&[], |p| &p.access_logs),
            metrics,
        );
        let tracer = config.tracing.as_ref().and_then(|settings| {
            let before = previous
                .and_then(|p| p.tracer.as_ref())
                .filter(|t| t.settings == *settings);
            match before {
                Some(tracer) => Some(tracer.clone()),
                None => Tracer::start(settings.clone(), metrics.tracing())
                    .map_err(|e| tracing::error!("tracing is off: its exporter did not start: {e}"))
                    .ok(),
            }
        });
        Snapshot {
            access_logs,
            tracer,
            unmatched: metrics.route(UNMATCHED_ROUTE, &listener_names),
            routes,
            upstreams,
            rate_limits,
            rate_limit_stores,
            jwt,
            config,
        }
    }
}

impl Snapshot {
    /// The WebSocket state of the route called `name`, if it has one.
    /// WebSocket tunnels open on this configuration's routes.
    pub fn open_tunnels(&self) -> usize {
        self.routes
            .iter()
            .filter_map(|route| match &route.handler {
                RouteHandler::Proxy { websocket, .. } => websocket.as_ref(),
                RouteHandler::Aggregate(_) => None,
            })
            .map(|websockets| websockets.open())
            .sum()
    }

    fn websockets_of(&self, name: &str) -> Option<&Arc<WebSockets>> {
        self.config
            .routes
            .iter()
            .position(|route| route.name == name)
            .and_then(|index| match &self.routes[index].handler {
                RouteHandler::Proxy { websocket, .. } => websocket.as_ref(),
                RouteHandler::Aggregate(_) => None,
            })
    }
}
