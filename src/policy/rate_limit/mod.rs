//! Rate limits: a policy's `rate_limit` entries, each a key (built from the request,
//! [`key`]) and a rate, decided by GCRA ([`gcra`]) in a store: the process's own
//! ([`local`]), or a shared one.
//!
//! Three levels, from the configuration down to a request:
//! - [`Limit`]: one entry of one policy, with its store. Built once per configuration
//!   for the whole gateway ([`RateLimits::build`]): every route that lists the policy
//!   shares the limit's buckets, so a limit's scope is what its key says (add `route`
//!   to the key for buckets per route). A limit that a reload leaves unchanged keeps
//!   its store, buckets included.
//! - [`RouteLimits`]: the limits of all the policies a route lists, in the route's
//!   order, with their metric handles and the route's `RateLimit-Policy` field, built
//!   once per route; the policy step runs it ([`RouteLimits::admit`]).
//! - per request: every limit is decided (each one that admits the request counts it,
//!   even when another refuses it); the request is refused when any limit that is not
//!   a shadow refuses it, with the longest `Retry-After` among those.
//!
//! # Response fields
//! draft-ietf-httpapi-ratelimit-headers-10 (the structured-field syntax of drafts 08 to
//! 10): every answer of a route with limits carries `RateLimit-Policy` (one item per
//! limit, `"name";q=COUNT;w=PERIOD_SECONDS`, static per configuration) and `RateLimit`
//! (`"name";r=REMAINING;t=SECONDS_UNTIL_FULL`, per request), both appended to any the
//! upstream sent for limits of its own. Shadow limits are left out: they are on trial,
//! and clients should not shape their traffic by them.

pub mod gcra;
pub mod key;
pub mod local;
pub mod redis;

pub use self::redis::{RedisStore, StoreError};

use std::hash::DefaultHasher;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use prometheus::IntCounter;

use crate::config::{OnStoreError, PolicyConfig, RateLimitConfig, RateLimitStoreRef};
use crate::metrics::{Metrics, RateLimitCounters, RateLimitDecision};
use gcra::{Decision, Rate};
use key::{KeySource, KeySpec};
use local::LocalStore;

use super::{Admission, PolicyError};

/// `RateLimit-Policy`: the limits a route applies.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of them for this client.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Where a limit's buckets are kept and decided.
#[derive(Clone)]
pub enum Store {
    /// This process's buckets, exact across its workers.
    Local(Arc<LocalStore>),
    /// A `rate_limit_stores` entry (Redis), shared by every gateway that uses it. Its
    /// keys are `prefix` (the policy's and the limit's names) and the key's hash.
    Shared {
        store: Arc<RedisStore>,
        prefix: Box<[u8]>,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Local(store) => f.debug_tuple("Local").field(store).finish(),
            Store::Shared { store, .. } => f.debug_tuple("Shared").field(&store.name()).finish(),
        }
    }
}

impl Store {
    /// A fresh hasher for the keys of this store ([`key::KeySpec::key`]): the local
    /// store's random keys; for a shared store fixed ones (`DefaultHasher::new()`), the
    /// same in every gateway process of one build.
    pub fn key_hasher(&self) -> DefaultHasher {
        match self {
            Store::Local(store) => store.key_hasher(),
            Store::Shared { .. } => DefaultHasher::new(),
        }
    }

    /// The decision for one request of `key` under `rate`.
    pub async fn decide(&self, key: u64, rate: &Rate) -> Result<Decision, StoreError> {
        match self {
            Store::Local(store) => Ok(store.decide(key, rate, store.now())),
            Store::Shared { store, prefix } => {
                let mut bytes = Vec::with_capacity(prefix.len() + 8);
                bytes.extend_from_slice(prefix);
                bytes.extend_from_slice(&key.to_be_bytes());
                store.decide(&bytes, rate).await
            }
        }
    }

    /// What a failed decision means: only shared stores fail.
    fn on_error(&self) -> OnStoreError {
        match self {
            Store::Local(_) => OnStoreError::Allow,
            Store::Shared { store, .. } => store.on_error(),
        }
    }
}

/// One entry of a policy's `rate_limit`, ready to decide.
#[derive(Debug)]
pub struct Limit {
    pub policy: Arc<str>,
    pub config: RateLimitConfig,
    pub rate: Rate,
    pub store: Store,
}

impl Limit {
    /// Whether `config` may keep this limit's buckets: everything but `shadow` and
    /// `advertise` (which change what is done with a decision, not the decision) is the
    /// same.
    fn keeps_buckets(&self, config: &RateLimitConfig) -> bool {
        let (mut old, mut new) = (self.config.clone(), config.clone());
        (old.shadow, new.shadow) = (false, false);
        (old.advertise, new.advertise) = (true, true);
        old == new
    }

    /// Whether the limit has an item in the response fields.
    fn advertised(&self) -> bool {
        self.config.advertise && !self.config.shadow
    }
}

/// Every policy's limits in one configuration, indexed like `Config::policies`.
#[derive(Debug, Default)]
pub struct RateLimits {
    policies: Vec<(Arc<str>, Vec<Arc<Limit>>)>,
}

impl RateLimits {
    /// The limits of `policies`. With `previous` (the snapshot before a reload), a limit
    /// of the same policy with the same label, key, rate, burst, store and `max_keys`
    /// keeps its store, so its clients keep their buckets.
    ///
    /// A limit on a shared store uses the store of this snapshot from `stores` (the
    /// state is in Redis; the store itself is carried over by the snapshot).
    pub fn build(
        policies: &[PolicyConfig],
        stores: &[Arc<RedisStore>],
        metrics: &Metrics,
        previous: Option<&RateLimits>,
    ) -> RateLimits {
        let policies = policies
            .iter()
            .map(|policy| {
                let name: Arc<str> = policy.name.as_str().into();
                let before = previous
                    .and_then(|p| p.policies.iter().find(|(n, _)| *n == name))
                    .map_or(&[][..], |(_, limits)| limits.as_slice());
                let limits = policy
                    .rate_limits
                    .iter()
                    .filter_map(|config| {
                        let kept = before.iter().find(|old| old.keeps_buckets(config));
                        Limit::carry_over(&name, config, kept.map(|k| &**k), stores, metrics)
                    })
                    .map(Arc::new)
                    .collect();
                (name, limits)
            })
            .collect();
        RateLimits { policies }
    }

    /// The limits of the policy at `index` in `Config::policies`.
    pub fn of_policy(&self, index: usize) -> &[Arc<Limit>] {
        self.policies
            .get(index)
            .map_or(&[][..], |(_, limits)| limits.as_slice())
    }
}

impl Limit {
    /// The limit `config` of `policy`, with the store of `kept` when there is one.
    fn carry_over(
        policy: &Arc<str>,
        config: &RateLimitConfig,
        kept: Option<&Limit>,
        stores: &[Arc<RedisStore>],
        metrics: &Metrics,
    ) -> Option<Limit> {
        let Some(rate) = Rate::new(config.count, config.period, config.burst) else {
            // `check` refuses such rates; not reachable with a compiled configuration.
            tracing::error!(policy = &**policy, limit = config.label, "invalid rate");
            return None;
        };
        let store = match (&config.store, kept) {
            (RateLimitStoreRef::Local, Some(kept)) => kept.store.clone(),
            (RateLimitStoreRef::Local, None) => {
                let (keys, evictions) = metrics.rate_limit_local_store(policy, &config.label);
                Store::Local(Arc::new(LocalStore::new(config.max_keys, keys, evictions)))
            }
            (RateLimitStoreRef::Named(name), _) => {
                let Some(store) = stores.iter().find(|s| s.name() == name) else {
                    // `check` refuses names that `rate_limit_stores` does not define.
                    tracing::error!(policy = &**policy, store = name, "unknown rate-limit store");
                    return None;
                };
                Store::Shared {
                    store: store.clone(),
                    prefix: format!("{policy}:{}:", config.label).into_bytes().into(),
                }
            }
        };
        Some(Limit {
            policy: policy.clone(),
            config: config.clone(),
            rate,
            store,
        })
    }
}

/// One limit as a route applies it.
#[derive(Debug, Clone)]
struct RouteLimit {
    limit: Arc<Limit>,
    /// `"name";r=`, the start of its item in the `RateLimit` field.
    item_prefix: Box<[u8]>,
    key: KeySpec,
    counters: RateLimitCounters,
    /// `portcullis_policy_rejections_total{reason="rate_limited"}`.
    rejected: IntCounter,
}

/// The rate limits of every policy a route lists, in the route's order.
#[derive(Debug, Clone)]
pub struct RouteLimits {
    limits: Box<[RouteLimit]>,
    /// `RateLimit-Policy`, the same on every answer; `None` when every limit is a shadow.
    policy_field: Option<HeaderValue>,
    /// Bytes a `RateLimit` value takes at most, to allocate it once.
    field_capacity: usize,
}

impl RouteLimits {
    /// The limits of `policies` (their `Limit`s and configurations) on route `route`;
    /// `None` when they have none.
    pub fn for_route<'a>(
        route: &str,
        limits: impl IntoIterator<Item = &'a Arc<Limit>>,
        metrics: &Metrics,
    ) -> Option<RouteLimits> {
        let limits: Vec<&Arc<Limit>> = limits.into_iter().collect();
        let names = field_names(&limits);
        let limits: Box<[RouteLimit]> = limits
            .into_iter()
            .zip(&names)
            .map(|(limit, name)| RouteLimit {
                item_prefix: format!("\"{name}\";r=").into_bytes().into_boxed_slice(),
                key: KeySpec::new(&limit.config.key, route),
                counters: metrics.rate_limit_decisions(route, &limit.policy, &limit.config.label),
                rejected: metrics.policy_rejections(route, &limit.policy, "rate_limited"),
                limit: limit.clone(),
            })
            .collect();
        if limits.is_empty() {
            return None;
        }
        let shown = || {
            limits
                .iter()
                .zip(&names)
                .filter(|(l, _)| l.limit.advertised())
        };
        let mut policy_field = Vec::new();
        for (limit, name) in shown() {
            let config = &limit.limit.config;
            if !policy_field.is_empty() {
                Out::extend_from_slice(&mut policy_field, b", ");
            }
            push_name(&mut policy_field, name);
            Out::extend_from_slice(&mut policy_field, b";q=");
            push_u64(&mut policy_field, u64::from(config.count));
            Out::extend_from_slice(&mut policy_field, b";w=");
            push_u64(&mut policy_field, config.period.as_secs());
        }
        // `, "name";r=4294967295;t=18446744073709551615` at most per limit.
        let field_capacity = shown().map(|(_, name)| name.len() + 48).sum();
        Some(RouteLimits {
            policy_field: HeaderValue::from_maybe_shared(Bytes::from(policy_field))
                .ok()
                .filter(|value| !value.is_empty()),
            field_capacity,
            limits,
        })
    }

    /// Whether a limit is keyed by a path parameter.
    pub fn needs_params(&self) -> bool {
        self.limits.iter().any(|l| l.key.needs_params())
    }

    /// Decides every limit for the request; notes `RateLimit-Policy` and `RateLimit`
    /// for the answer; refuses the request (429) when a limit that is not a shadow is
    /// exhausted.
    pub async fn admit(
        &self,
        source: KeySource<'_>,
        admission: &mut Admission,
    ) -> Result<(), PolicyError> {
        let mut field = FieldValue::new(self.field_capacity);
        let mut refused: Option<(&RouteLimit, Duration)> = None;
        for route_limit in self.limits.iter() {
            let limit = &*route_limit.limit;
            let key = route_limit.key.key(&source, limit.store.key_hasher());
            let decision = match limit.store.decide(key, &limit.rate).await {
                Ok(decision) => decision,
                Err(error) => {
                    // The store counts and logs its failures (rate-limited); here the
                    // decision is counted and the store's `on_error` followed.
                    route_limit.counters.inc(RateLimitDecision::StoreError);
                    match limit.store.on_error() {
                        OnStoreError::Allow => continue,
                        OnStoreError::Deny => {
                            return Err(PolicyError::RateLimitStoreFailed {
                                policy: limit.policy.clone(),
                                limit: limit.config.label.as_str().into(),
                                error,
                            })
                        }
                    }
                }
            };
            let shadow = limit.config.shadow;
            let counted = match (decision.allowed, shadow) {
                (true, _) => RateLimitDecision::Allowed,
                (false, true) => RateLimitDecision::ShadowLimited,
                (false, false) => RateLimitDecision::Limited,
            };
            route_limit.counters.inc(counted);
            if !decision.allowed {
                tracing::debug!(
                    policy = &*limit.policy,
                    limit = limit.config.label,
                    shadow,
                    client_ip = %source.client_ip,
                    retry_after_ms = decision.retry_after.as_millis() as u64,
                    "over the rate limit"
                );
                let longer = refused.is_none_or(|(_, after)| decision.retry_after > after);
                if !shadow && longer {
                    refused = Some((route_limit, decision.retry_after));
                }
            }
            if limit.advertised() {
                push_item(&mut field, &route_limit.item_prefix, &decision);
            }
        }
        // Both fields are lists: the gateway's items join any the upstream sent for
        // limits of its own (appending is also cheaper than replacing).
        if let Some(policy_field) = &self.policy_field {
            admission.append_response_header(RATELIMIT_POLICY.clone(), policy_field.clone());
            if let Ok(value) = HeaderValue::from_bytes(field.as_bytes()) {
                admission.append_response_header(RATELIMIT.clone(), value);
            }
        }
        match refused {
            None => Ok(()),
            Some((route_limit, retry_after)) => {
                route_limit.rejected.inc();
                Err(PolicyError::RateLimited {
                    policy: route_limit.limit.policy.clone(),
                    limit: route_limit.limit.config.label.as_str().into(),
                    retry_after_secs: whole_seconds_up(retry_after).max(1),
                })
            }
        }
    }
}

/// The names the route's limits have in its `RateLimit-Policy` and `RateLimit` fields:
/// each limit's `field_name`, qualified by its policy's name (`policy.name`) where two
/// policies of the route name limits alike, so that a client can tell their items apart.
fn field_names(limits: &[&Arc<Limit>]) -> Vec<String> {
    limits
        .iter()
        .map(|limit| {
            let name = &limit.config.field_name;
            let shared = limits
                .iter()
                .filter(|other| &other.config.field_name == name)
                .count()
                > 1;
            if shared {
                format!("{}.{name}", limit.policy)
            } else {
                name.clone()
            }
        })
        .collect()
}

/// Where a field's value is written.
trait Out {
    fn extend_from_slice(&mut self, bytes: &[u8]);
    fn is_empty(&self) -> bool;
}

impl Out for Vec<u8> {
    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
    #[inline]
    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}

/// A `RateLimit` value being written: on the stack when it fits, so that the header
/// value is the request's one allocation for it.
struct FieldValue {
    stack: [u8; 160],
    len: usize,
    /// Everything written, once it outgrew the stack.
    heap: Vec<u8>,
}

impl FieldValue {
    #[inline]
    fn new(capacity: usize) -> FieldValue {
        FieldValue {
            stack: [0; 160],
            len: 0,
            heap: if capacity > 160 {
                Vec::with_capacity(capacity)
            } else {
                Vec::new()
            },
        }
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

impl Out for FieldValue {
    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.stack.get_mut(self.len..end) {
            Some(room) if self.heap.is_empty() => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            _ => {
                if self.heap.is_empty() {
                    self.heap.extend_from_slice(&self.stack[..self.len]);
                }
                self.heap.extend_from_slice(bytes);
            }
        }
    }
    #[inline]
    fn is_empty(&self) -> bool {
        self.len == 0 && self.heap.is_empty()
    }
}

/// `"name";r=REMAINING;t=RESET` (`prefix` is `"name";r=`), after a `, ` when `field`
/// has items already.
#[inline]
fn push_item(field: &mut impl Out, prefix: &[u8], decision: &Decision) {
    if !field.is_empty() {
        field.extend_from_slice(b", ");
    }
    field.extend_from_slice(prefix);
    push_u64(field, u64::from(decision.remaining));
    field.extend_from_slice(b";t=");
    push_u64(field, whole_seconds_up(decision.reset));
}

/// A structured-field string: names are checked to be letters, digits, `-`, `_` and
/// `.`, so nothing needs escaping.
#[inline]
fn push_name(field: &mut impl Out, name: &str) {
    field.extend_from_slice(b"\"");
    field.extend_from_slice(name.as_bytes());
    field.extend_from_slice(b"\"");
}

/// `n` in decimal, without `format!`.
#[inline]
fn push_u64(field: &mut impl Out, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    field.extend_from_slice(&digits[at..]);
}

/// Seconds, rounded up: a client that waits that long is admitted.
pub fn whole_seconds_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use http::HeaderMap;

    use super::*;
    use crate::config::RateLimitKeyPart;

    fn config(label: &str, count: u32, burst: u32, shadow: bool) -> RateLimitConfig {
        RateLimitConfig {
            label: label.into(),
            field_name: format!("p.{label}"),
            key: vec![RateLimitKeyPart::ClientIp],
            count,
            period: Duration::from_secs(60),
            burst,
            store: RateLimitStoreRef::Local,
            shadow,
            advertise: true,
            max_keys: 100,
        }
    }

    fn policy(limits: Vec<RateLimitConfig>) -> PolicyConfig {
        PolicyConfig {
            name: "p".into(),
            ip: None,
            cors: None,
            headers: None,
            rate_limits: limits,
            auth: None,
        }
    }

    /// The request's result and the answer's headers.
    async fn admit(limits: &RouteLimits) -> (Result<(), PolicyError>, HeaderMap) {
        let mut admission = Admission::default();
        let headers = HeaderMap::new();
        let source = KeySource {
            client_ip: IpAddr::from([192, 0, 2, 1]),
            headers: &headers,
            query: None,
            params: &[],
            consumer: None,
            claims: None,
        };
        let result = limits.admit(source, &mut admission).await;
        let mut answer = HeaderMap::new();
        super::super::Policies::header_rules().finish(admission, &mut answer);
        (result, answer)
    }

    fn field(headers: &HeaderMap, name: &HeaderName) -> String {
        headers
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
        assert_eq!(whole_seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_up(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds_up(Duration::from_millis(2001)), 3);
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        push_u64(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, b"018446744073709551615");
        // A value longer than the stack buffer moves to the heap whole.
        let mut field = FieldValue::new(0);
        for _ in 0..50 {
            field.extend_from_slice(b"abcde");
        }
        assert_eq!(field.as_bytes(), "abcde".repeat(50).as_bytes());
    }

    #[tokio::test]
    async fn the_most_restrictive_limit_wins_and_every_limit_is_shown() {
        let metrics = Metrics::new();
        let limits = RateLimits::build(
            &[policy(vec![
                config("wide", 100, 5, false),
                config("narrow", 1, 2, false),
            ])],
            &[],
            &metrics,
            None,
        );
        let route = RouteLimits::for_route("r", limits.of_policy(0), &metrics).expect("limits");
        let (first, admission) = admit(&route).await;
        assert!(first.is_ok());
        assert_eq!(
            field(&admission, &RATELIMIT_POLICY),
            r#""p.wide";q=100;w=60, "p.narrow";q=1;w=60"#
        );
        assert_eq!(
            field(&admission, &RATELIMIT),
            r#""p.wide";r=4;t=1, "p.narrow";r=1;t=60"#
        );
        assert!(admit(&route).await.0.is_ok());
        let (third, admission) = admit(&route).await;
        match third {
            Err(PolicyError::RateLimited {
                limit,
                retry_after_secs,
                ..
            }) => {
                assert_eq!(&*limit, "narrow");
                // Narrow: TAT 120 s, tolerance 60 s: one more fits in 60 s.
                assert_eq!(retry_after_secs, 60);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            field(&admission, &RATELIMIT),
            r#""p.wide";r=2;t=2, "p.narrow";r=0;t=120"#
        );
    }

    #[tokio::test]
    async fn limits_of_two_policies_named_alike_are_told_apart_in_the_fields() {
        let metrics = Metrics::new();
        let named = |policy_name: &str, count| {
            let mut limit = config("per-client", count, count, false);
            limit.field_name = "per-client".into();
            PolicyConfig {
                name: policy_name.into(),
                ..policy(vec![limit])
            }
        };
        let limits = RateLimits::build(&[named("a", 10), named("b", 5)], &[], &metrics, None);
        let route = RouteLimits::for_route(
            "r",
            limits.of_policy(0).iter().chain(limits.of_policy(1)),
            &metrics,
        )
        .expect("limits");
        let (result, answer) = admit(&route).await;
        assert!(result.is_ok());
        assert_eq!(
            field(&answer, &RATELIMIT_POLICY),
            r#""a.per-client";q=10;w=60, "b.per-client";q=5;w=60"#
        );
        assert_eq!(
            field(&answer, &RATELIMIT),
            r#""a.per-client";r=9;t=6, "b.per-client";r=4;t=12"#
        );
        // Alone on a route, a limit keeps its own name.
        let alone = RouteLimits::for_route("r", limits.of_policy(0), &metrics).expect("limits");
        let (_, answer) = admit(&alone).await;
        assert_eq!(
            field(&answer, &RATELIMIT_POLICY),
            r#""per-client";q=10;w=60"#
        );
    }

    #[tokio::test]
    async fn a_limit_not_advertised_refuses_without_showing_in_the_fields() {
        let metrics = Metrics::new();
        let mut quiet = config("quiet", 1, 1, false);
        quiet.advertise = false;
        let limits = RateLimits::build(&[policy(vec![quiet])], &[], &metrics, None);
        let route = RouteLimits::for_route("r", limits.of_policy(0), &metrics).expect("limits");
        let (first, answer) = admit(&route).await;
        assert!(first.is_ok());
        assert_eq!(field(&answer, &RATELIMIT_POLICY), "");
        assert_eq!(field(&answer, &RATELIMIT), "");
        let (second, answer) = admit(&route).await;
        assert!(
            matches!(second, Err(PolicyError::RateLimited { .. })),
            "{second:?}"
        );
        assert_eq!(field(&answer, &RATELIMIT), "");
    }

    #[tokio::test]
    async fn shadow_limits_count_but_never_refuse_nor_show() {
        let metrics = Metrics::new();
        let limits = RateLimits::build(
            &[policy(vec![config("s", 1, 1, true)])],
            &[],
            &metrics,
            None,
        );
        let route = RouteLimits::for_route("r", limits.of_policy(0), &metrics).expect("limits");
        for _ in 0..3 {
            let (result, admission) = admit(&route).await;
            assert!(result.is_ok());
            assert_eq!(field(&admission, &RATELIMIT), "");
            assert_eq!(field(&admission, &RATELIMIT_POLICY), "");
        }
        let text = String::from_utf8(metrics.encode()).expect("utf-8");
        assert!(
            text.contains(r#"decision="shadow_limited",limit="s",policy="p",route="r"} 2"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_reload_keeps_the_buckets_of_an_unchanged_limit_only() {
        let metrics = Metrics::new();
        let first = RateLimits::build(
            &[policy(vec![config("a", 1, 1, false)])],
            &[],
            &metrics,
            None,
        );
        let route = RouteLimits::for_route("r", first.of_policy(0), &metrics).expect("limits");
        assert!(admit(&route).await.0.is_ok());
        // Unchanged (shadow aside): the same store, still empty.
        let kept = RateLimits::build(
            &[policy(vec![config("a", 1, 1, false)])],
            &[],
            &metrics,
            Some(&first),
        );
        let route = RouteLimits::for_route("r", kept.of_policy(0), &metrics).expect("limits");
        assert!(admit(&route).await.0.is_err(), "the bucket was kept");
        // A new rate is a new limit: fresh buckets.
        let changed = RateLimits::build(
            &[policy(vec![config("a", 2, 1, false)])],
            &[],
            &metrics,
            Some(&kept),
        );
        let route = RouteLimits::for_route("r", changed.of_policy(0), &metrics).expect("limits");
        assert!(admit(&route).await.0.is_ok(), "fresh buckets");
    }
}
