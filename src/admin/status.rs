//! `GET /status`: a read-only picture of the running gateway, as JSON: its listeners,
//! its routes in match order, its upstreams with their endpoints' health, load and
//! limits, request and error counters, the recent reloads and the configuration's
//! source. The status page (`GET /`, [`super::page`]) renders the same document.
//!
//! Everything is read from state that already exists (the configuration snapshot, the
//! limiters' and endpoints' atomics, the counter families, the reloader's history),
//! on the admin request, without touching the request path. Nothing secret is shown:
//! no key material and no credentials (a Redis password, userinfo in a URL); TLS is
//! described by its server names and expiry only.
//!
//! Counters are totals since the process started; the page derives rates from two
//! successive documents (`generated_at` says when each was taken). The schema is in
//! `docs/status-page.md`.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{
    Balance, Config, ListenerConfig, PolicyConfig, RouteConfig, RouteTarget, UpstreamConfig,
    UpstreamProtocol,
};
use crate::metrics::{Count, Totals};
use crate::proxy::Snapshot;
use crate::reload;
use crate::routing::{match_order, HostPattern, PathPattern};
use crate::upstream::health::{now_ms, HealthState};
use crate::upstream::Upstream;

/// Errors shown per reload attempt at most (a broken file can have hundreds).
const ERRORS_PER_RELOAD: usize = 20;

/// The whole document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Unix seconds when this document was taken.
    pub generated_at: f64,
    pub version: &'static str,
    pub config: ConfigSource,
    pub reloads: Vec<ReloadAttempt>,
    pub listeners: Vec<ListenerStatus>,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<UpstreamStatus>,
    pub rate_limit_stores: Vec<StoreStatus>,
}

#[derive(Debug, Serialize)]
pub struct ConfigSource {
    /// The file the configuration was loaded from; `null` when it was not.
    pub file: Option<String>,
    pub hash: Option<String>,
    pub loaded_at: Option<f64>,
    /// Whether the file is reloaded (on change, SIGHUP, `POST /reload`).
    pub reloadable: bool,
}

#[derive(Debug, Serialize)]
pub struct ReloadAttempt {
    pub at: f64,
    /// `file_change`, `signal` or `admin`.
    pub trigger: &'static str,
    /// `success`, `unchanged` or `failure`.
    pub result: &'static str,
    pub errors: Vec<String>,
    /// Errors left out beyond the first [`ERRORS_PER_RELOAD`].
    pub more_errors: usize,
}

#[derive(Debug, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    /// The bound address (the configured one until it is bound).
    pub address: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// What clients may speak on it.
    pub protocols: &'static [&'static str],
    pub tls: Option<ListenerTlsStatus>,
    /// The PROXY protocol mode, when the listener reads PROXY headers.
    pub proxy_protocol: Option<&'static str>,
    /// The HTTPS port a plain listener redirects every request to.
    pub redirect_to_https: Option<u16>,
    pub max_connections: usize,
}

#[derive(Debug, Serialize)]
pub struct ListenerTlsStatus {
    pub certificates: Vec<CertificateStatus>,
    /// `required`, `optional`, or `null` without client certificates.
    pub client_auth: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct CertificateStatus {
    /// The server names it is chosen for (`*`: every name).
    pub hosts: Vec<String>,
    /// The certificate's own DNS names.
    pub names: Vec<String>,
    /// The end of its validity, in Unix seconds, as loaded with the configuration.
    pub not_after: i64,
}

#[derive(Debug, Serialize)]
pub struct RouteStatus {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    pub target: RouteTargetStatus,
    pub policies: Vec<PolicyStatus>,
    /// Requests answered on this route, since start.
    pub requests_total: u64,
    /// Those answered with a 5xx status.
    pub errors_total: u64,
}

#[derive(Debug, Serialize)]
pub struct RouteMatch {
    pub host: Option<String>,
    pub path: String,
    /// `exact`, `template` or `prefix`.
    pub path_kind: &'static str,
    /// `null`: any method.
    pub methods: Option<Vec<String>>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Serialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteTargetStatus {
    Proxy { upstream: String },
    Aggregate { calls: Vec<CallStatus> },
}

#[derive(Debug, Serialize)]
pub struct CallStatus {
    pub name: String,
    pub upstream: String,
    pub depends_on: Vec<String>,
    pub optional: bool,
}

#[derive(Debug, Serialize)]
pub struct PolicyStatus {
    pub name: String,
    /// What the policy does: `ip`, `cors`, `headers`, `rate_limit`.
    pub kinds: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub balance: &'static str,
    pub protocol: &'static str,
    pub limit: LimitStatus,
    pub in_flight: usize,
    pub queued: usize,
    pub max_queue: usize,
    pub health_check: Option<String>,
    /// Whether outlier detection can eject endpoints.
    pub outlier_detection: bool,
    pub requests_total: u64,
    pub errors_total: u64,
    pub endpoints: Vec<EndpointStatus>,
}

#[derive(Debug, Serialize)]
pub struct LimitStatus {
    /// `fixed` or `adaptive`.
    pub kind: &'static str,
    /// The limit now: `max_in_flight`, or where the adaptive limit stands.
    pub current: usize,
    /// The adaptive limit's bounds.
    pub min: Option<usize>,
    pub max: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct EndpointStatus {
    /// As configured, without credentials.
    pub address: String,
    /// `up`, `down` or `ejected`.
    pub state: &'static str,
    /// Why it is not up: `connect_failure`, `health_check` or `consecutive_failures`.
    pub reason: Option<&'static str>,
    pub in_flight: usize,
    pub requests_total: u64,
    /// Failed exchanges: 5xx answers, connect and TLS failures, timeouts.
    pub errors_total: u64,
}

#[derive(Debug, Serialize)]
pub struct StoreStatus {
    pub name: String,
    /// Without credentials.
    pub url: String,
    /// `allow` (fail open) or `deny` (fail closed).
    pub on_error: &'static str,
}

/// What the status is taken from.
pub struct Sources<'a> {
    pub snapshot: &'a Snapshot,
    /// Running listeners' bound addresses, by name.
    pub bound: &'a [(String, SocketAddr)],
    pub reload: Option<reload::Status>,
    pub totals: Totals,
}

impl Status {
    pub fn take(sources: Sources<'_>) -> Status {
        let Sources {
            snapshot,
            bound,
            reload,
            totals,
        } = sources;
        let config = &snapshot.config;
        let now = now_ms();
        Status {
            generated_at: unix(SystemTime::now()),
            version: env!("CARGO_PKG_VERSION"),
            config: ConfigSource {
                file: reload.as_ref().map(|r| r.source.display().to_string()),
                hash: reload.as_ref().map(|r| r.hash.clone()),
                loaded_at: reload.as_ref().map(|r| unix(r.loaded_at)),
                reloadable: reload.is_some(),
            },
            reloads: reload
                .iter()
                .flat_map(|r| r.recent.iter().rev())
                .map(reload_attempt)
                .collect(),
            listeners: config
                .listeners
                .iter()
                .map(|listener| listener_status(listener, bound))
                .collect(),
            routes: match_order(&config.routes.iter().map(|r| &r.spec).collect::<Vec<_>>())
                .into_iter()
                .map(|index| route_status(config, &config.routes[index], &totals))
                .collect(),
            upstreams: config
                .upstreams
                .iter()
                .zip(&snapshot.upstreams)
                .map(|(upstream_config, upstream)| {
                    upstream_status(upstream_config, upstream, &totals, now)
                })
                .collect(),
            rate_limit_stores: config
                .rate_limit_stores
                .iter()
                .map(|store| StoreStatus {
                    name: store.name.clone(),
                    url: redis_url_without_credentials(&store.redis.url),
                    on_error: store.on_error.as_str(),
                })
                .collect(),
        }
    }
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

fn reload_attempt(attempt: &reload::Attempt) -> ReloadAttempt {
    ReloadAttempt {
        at: unix(attempt.at),
        trigger: attempt.trigger.as_str(),
        result: attempt.result(),
        errors: attempt
            .errors
            .iter()
            .take(ERRORS_PER_RELOAD)
            .cloned()
            .collect(),
        more_errors: attempt.errors.len().saturating_sub(ERRORS_PER_RELOAD),
    }
}

fn listener_status(listener: &ListenerConfig, bound: &[(String, SocketAddr)]) -> ListenerStatus {
    let address = bound
        .iter()
        .find(|(name, _)| *name == listener.name)
        .map_or(listener.address, |(_, address)| *address);
    ListenerStatus {
        name: listener.name.clone(),
        address: address.to_string(),
        scheme: if listener.tls.is_some() {
            "https"
        } else {
            "http"
        },
        protocols: if listener.tls.is_some() {
            &["HTTP/1.1", "HTTP/2 (ALPN h2)"]
        } else {
            &["HTTP/1.1", "HTTP/2 (h2c)"]
        },
        tls: listener.tls.as_ref().map(|tls| ListenerTlsStatus {
            certificates: tls
                .certificates
                .iter()
                .map(|certificate| CertificateStatus {
                    hosts: certificate.host_labels(),
                    names: certificate.loaded.names.clone(),
                    not_after: certificate.loaded.not_after,
                })
                .collect(),
            client_auth: tls.client_auth.as_ref().map(|auth| match auth.mode {
                crate::tls::ClientAuthMode::Required => "required",
                crate::tls::ClientAuthMode::Optional => "optional",
            }),
        }),
        proxy_protocol: listener
            .client_ip
            .proxy_protocol
            .map(|proxy| proxy.mode.as_str()),
        redirect_to_https: listener.redirect_to_https,
        max_connections: listener.max_connections,
    }
}

fn route_status(config: &Config, route: &RouteConfig, totals: &Totals) -> RouteStatus {
    let spec = &route.spec;
    let (path, path_kind) = match &spec.path {
        PathPattern::Exact(path) => (path.clone(), "exact"),
        PathPattern::Template(template) => (template.clone(), "template"),
        PathPattern::Prefix(prefix) if prefix.is_empty() => ("/".to_owned(), "prefix"),
        PathPattern::Prefix(prefix) => (prefix.clone(), "prefix"),
    };
    let upstream_name = |index: usize| {
        config
            .upstreams
            .get(index)
            .map_or_else(String::new, |u| u.name.clone())
    };
    let target = match &route.target {
        RouteTarget::Proxy { upstream, .. } => RouteTargetStatus::Proxy {
            upstream: upstream_name(*upstream),
        },
        RouteTarget::Aggregate(aggregate) => RouteTargetStatus::Aggregate {
            calls: aggregate
                .calls
                .iter()
                .map(|call| CallStatus {
                    name: call.name.clone(),
                    upstream: upstream_name(call.upstream),
                    depends_on: call
                        .depends_on
                        .iter()
                        .filter_map(|&i| aggregate.calls.get(i).map(|c| c.name.clone()))
                        .collect(),
                    optional: call.optional,
                })
                .collect(),
        },
    };
    let count = totals.routes.get(&route.name).copied().unwrap_or_default();
    RouteStatus {
        name: route.name.clone(),
        matches: RouteMatch {
            host: spec.host.as_ref().map(|host| match host {
                HostPattern::Exact(host) => host.clone(),
                HostPattern::Wildcard(suffix) => format!("*.{suffix}"),
            }),
            path,
            path_kind,
            methods: spec
                .methods
                .as_ref()
                .map(|methods| methods.iter().map(|m| m.as_str().to_owned()).collect()),
            headers: spec
                .headers
                .iter()
                .map(|(name, value)| HeaderMatch {
                    name: name.as_str().to_owned(),
                    value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                })
                .collect(),
        },
        target,
        policies: route
            .policies
            .iter()
            .filter_map(|&i| config.policies.get(i))
            .map(policy_status)
            .collect(),
        requests_total: count.requests,
        errors_total: count.errors,
    }
}

fn policy_status(policy: &PolicyConfig) -> PolicyStatus {
    let mut kinds = Vec::new();
    if policy.ip.is_some() {
        kinds.push("ip");
    }
    if policy.cors.is_some() {
        kinds.push("cors");
    }
    if !policy.rate_limits.is_empty() {
        kinds.push("rate_limit");
    }
    if policy.headers.is_some() {
        kinds.push("headers");
    }
    PolicyStatus {
        name: policy.name.clone(),
        kinds,
    }
}

fn upstream_status(
    config: &UpstreamConfig,
    upstream: &Upstream,
    totals: &Totals,
    now: u64,
) -> UpstreamStatus {
    let limiter = &upstream.limiter;
    let mut sum = Count::default();
    let endpoints = upstream
        .endpoints()
        .iter()
        .map(|endpoint| {
            let count = totals
                .endpoints
                .get(&(config.name.clone(), endpoint.address.label.clone()))
                .copied()
                .unwrap_or_default();
            sum.requests += count.requests;
            sum.errors += count.errors;
            let (state, reason) = match endpoint.health.state(now) {
                HealthState::Up => ("up", None),
                HealthState::MarkedDown => ("down", Some("connect_failure")),
                HealthState::FailingChecks => ("down", Some("health_check")),
                HealthState::Ejected => ("ejected", Some("consecutive_failures")),
            };
            EndpointStatus {
                address: without_userinfo(&endpoint.address.label),
                state,
                reason,
                in_flight: endpoint.in_flight(),
                requests_total: count.requests,
                errors_total: count.errors,
            }
        })
        .collect();
    UpstreamStatus {
        name: config.name.clone(),
        balance: match config.balance {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::Random => "random",
        },
        protocol: match config.protocol {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
            UpstreamProtocol::Auto => "auto",
        },
        limit: LimitStatus {
            kind: if config.adaptive.is_some() {
                "adaptive"
            } else {
                "fixed"
            },
            current: limiter.limit(),
            min: config.adaptive.map(|bounds| bounds.min),
            max: config.adaptive.map(|bounds| bounds.max),
        },
        in_flight: limiter.in_flight(),
        queued: limiter.queued(),
        max_queue: limiter.max_queue(),
        health_check: config
            .health_check
            .as_ref()
            .map(|check| format!("{} every {:?}", check.path, check.interval)),
        outlier_detection: config.outlier.is_some(),
        requests_total: sum.requests,
        errors_total: sum.errors,
        endpoints,
    }
}

/// A Redis URL with neither user name nor password.
fn redis_url_without_credentials(url: &crate::config::RedisUrl) -> String {
    if url.host.contains(':') {
        format!("redis://[{}]:{}/{}", url.host, url.port, url.db)
    } else {
        format!("redis://{}:{}/{}", url.host, url.port, url.db)
    }
}

/// `scheme://user:password@host/…` without `user:password@`; anything else as it is.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    const CONFIG: &str = r#"
listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  users: { endpoints: ["http://127.0.0.1:9"], max_in_flight: { adaptive: { min: 2, max: 50 } } }
  teams: { endpoints: ["http://127.0.0.1:10", "http://127.0.0.1:11"], max_in_flight: 9 }
rate_limit_stores:
  shared: { redis: { url: "redis://gw:hunter2@cache.internal:6380/1" } }
policies:
  limited: { rate_limit: [ { key: client_ip, rate: 10/s, store: shared } ] }
routes:
  - name: everything
    match: { path_prefix: / }
    upstream: teams
  - name: dashboard
    match: { path: "/dashboard/{id}", methods: [GET], headers: { x-tag: "<b>&" } }
    policies: [limited]
    aggregate:
      calls:
        user: { upstream: users, path: "/users/{id}" }
        team: { upstream: teams, path: "/teams/{user.team_id}", optional: true }
"#;

    #[tokio::test]
    async fn the_document_has_the_documented_shape() {
        let config = Config::from_yaml(CONFIG, "test.yaml").expect("valid");
        let metrics = Metrics::new();
        let snapshot = Snapshot::build(config, &metrics, None);
        snapshot.routes[0].metrics.requests[0].inc(&http::Method::GET, http::StatusCode::OK);
        let status = Status::take(Sources {
            snapshot: &snapshot,
            bound: &[("public".to_owned(), "127.0.0.1:4321".parse().expect("addr"))],
            reload: None,
            totals: metrics.totals(),
        });
        let json = serde_json::to_value(&status).expect("serializes");
        let keys = |value: &serde_json::Value| -> Vec<String> {
            let mut keys: Vec<String> = value
                .as_object()
                .expect("an object")
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(&json),
            [
                "config",
                "generated_at",
                "listeners",
                "rate_limit_stores",
                "reloads",
                "routes",
                "upstreams",
                "version"
            ]
        );
        assert_eq!(json["config"]["reloadable"], false);
        assert_eq!(json["config"]["file"], serde_json::Value::Null);
        assert_eq!(json["listeners"][0]["address"], "127.0.0.1:4321");
        assert_eq!(json["listeners"][0]["tls"], serde_json::Value::Null);

        // The exact-path template comes before the prefix, whatever the file order.
        let dashboard = &json["routes"][0];
        assert_eq!(dashboard["name"], "dashboard");
        assert_eq!(
            dashboard["match"],
            serde_json::json!({
                "host": null, "path": "/dashboard/{id}", "path_kind": "template",
                "methods": ["GET"], "headers": [{"name": "x-tag", "value": "<b>&"}],
            })
        );
        assert_eq!(dashboard["target"]["kind"], "aggregate");
        let calls = dashboard["target"]["calls"].as_array().expect("calls");
        let team = calls.iter().find(|c| c["name"] == "team").expect("team");
        assert_eq!(
            *team,
            serde_json::json!({"name": "team", "upstream": "teams", "depends_on": ["user"], "optional": true})
        );
        assert_eq!(
            dashboard["policies"],
            serde_json::json!([{"name": "limited", "kinds": ["rate_limit"]}])
        );
        let everything = &json["routes"][1];
        assert_eq!(everything["match"]["path"], "/");
        assert_eq!(
            everything["target"],
            serde_json::json!({"kind": "proxy", "upstream": "teams"})
        );
        assert_eq!(everything["requests_total"], 1);
        assert_eq!(everything["errors_total"], 0);

        let teams = &json["upstreams"][0];
        assert_eq!(teams["name"], "teams");
        assert_eq!(
            teams["limit"],
            serde_json::json!({"kind": "fixed", "current": 9, "min": null, "max": null})
        );
        assert_eq!(
            teams["endpoints"][1],
            serde_json::json!({
                "address": "http://127.0.0.1:11", "state": "up", "reason": null,
                "in_flight": 0, "requests_total": 0, "errors_total": 0,
            })
        );
        let users = &json["upstreams"][1];
        assert_eq!(users["limit"]["kind"], "adaptive");
        assert_eq!(
            (
                users["limit"]["min"].as_u64(),
                users["limit"]["max"].as_u64()
            ),
            (Some(2), Some(50))
        );

        assert_eq!(
            json["rate_limit_stores"],
            serde_json::json!([{"name": "shared", "url": "redis://cache.internal:6380/1", "on_error": "allow"}])
        );
        let text = json.to_string();
        assert!(!text.contains("hunter2") && !text.contains("gw:"), "{text}");

        // Embedded in the page, the header value is JSON-escaped, never markup.
        let page = super::super::page::render(&status);
        assert!(page.contains(r#""value":"\u003cb\u003e\u0026""#), "{page}");
        assert!(!page.contains("<b>&") && !page.contains("hunter2"));
    }

    #[test]
    fn userinfo_is_taken_out_of_urls() {
        assert_eq!(
            without_userinfo("http://user:secret@10.0.0.1:80/x@y"),
            "http://10.0.0.1:80/x@y"
        );
        assert_eq!(without_userinfo("http://10.0.0.1:80"), "http://10.0.0.1:80");
        assert_eq!(without_userinfo("not a url"), "not a url");
    }
}
