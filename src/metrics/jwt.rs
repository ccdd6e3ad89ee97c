//! `portcullis_jwt_*` and `portcullis_jwks_*`: what JWT verification refused and why,
//! the verified-token cache, and each issuer's JWKS key set (fetches, keys, last good
//! fetch, tokens whose `kid` the set lacked). Labels are policy names and issuers from
//! the configuration, never values from tokens.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{Metrics, Registrar};

/// The JWT families, registered once per process.
#[derive(Clone)]
pub(super) struct JwtFamilies {
    rejections: IntCounterVec,
    token_cache: IntCounterVec,
    fetches: IntCounterVec,
    keys: IntGaugeVec,
    last_success: IntGaugeVec,
    unknown_key: IntCounterVec,
}

impl JwtFamilies {
    pub(super) fn register(r: &Registrar) -> Self {
        JwtFamilies {
            rejections: r.counter(
                "portcullis_jwt_rejections_total",
                "Tokens a policy's jwt check refused, by policy and reason: malformed, algorithm (not one the issuer uses, or not its key's), issuer (unknown or wrong iss), audience, expired, not_yet_valid, signature, unknown_key (no key with its kid after a refetch), no_keys (the issuer has no key set yet: 503), claims (a claim has the wrong type), require (a required claim is missing: 403).",
                &["policy", "reason"],
            ),
            token_cache: r.counter(
                "portcullis_jwt_token_cache_lookups_total",
                "Lookups in a policy's verified-token cache, by policy and result (hit: no signature check; miss).",
                &["policy", "result"],
            ),
            fetches: r.counter(
                "portcullis_jwks_fetches_total",
                "JWKS document fetches, by policy, issuer and result: ok, error (the upstream failed, timed out, answered non-2xx or too large a body; the last good keys are kept), invalid (no usable key in the document; the last good keys are kept).",
                &["policy", "issuer", "result"],
            ),
            keys: r.gauge(
                "portcullis_jwks_keys",
                "Keys in an issuer's current JWKS key set (0: none fetched yet, its tokens are answered 503).",
                &["policy", "issuer"],
            ),
            last_success: r.gauge(
                "portcullis_jwks_last_success_timestamp_seconds",
                "When an issuer's key set was last fetched successfully, in Unix seconds (0: never); the set's age is time() minus this.",
                &["policy", "issuer"],
            ),
            unknown_key: r.counter(
                "portcullis_jwks_unknown_key_total",
                "Tokens whose kid the issuer's key set lacked, by policy, issuer and outcome: refetched (this token started a refetch), joined (it waited for one already running), rate_limited (a refetch ran less than refetch_interval ago: refused without one).",
                &["policy", "issuer", "outcome"],
            ),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtRejection {
    Malformed,
    Algorithm,
    Issuer,
    Audience,
    Expired,
    NotYetValid,
    Signature,
    UnknownKey,
    NoKeys,
    Claims,
    Require,
}

impl JwtRejection {
    pub const ALL: [JwtRejection; 11] = [
        JwtRejection::Malformed,
        JwtRejection::Algorithm,
        JwtRejection::Issuer,
        JwtRejection::Audience,
        JwtRejection::Expired,
        JwtRejection::NotYetValid,
        JwtRejection::Signature,
        JwtRejection::UnknownKey,
        JwtRejection::NoKeys,
        JwtRejection::Claims,
        JwtRejection::Require,
    ];

    pub fn label(self) -> &'static str {
        match self {
            JwtRejection::Malformed => "malformed",
            JwtRejection::Algorithm => "algorithm",
            JwtRejection::Issuer => "issuer",
            JwtRejection::Audience => "audience",
            JwtRejection::Expired => "expired",
            JwtRejection::NotYetValid => "not_yet_valid",
            JwtRejection::Signature => "signature",
            JwtRejection::UnknownKey => "unknown_key",
            JwtRejection::NoKeys => "no_keys",
            JwtRejection::Claims => "claims",
            JwtRejection::Require => "require",
        }
    }
}

/// One policy's JWT counters, resolved once per configuration.
#[derive(Debug, Clone)]
pub struct JwtMetrics {
    rejections: Vec<IntCounter>,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
}

impl JwtMetrics {
    pub fn rejected(&self, reason: JwtRejection) {
        self.rejections[reason as usize].inc();
    }
}

/// How a token with a `kid` the key set lacked was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownKeyOutcome {
    Refetched,
    Joined,
    RateLimited,
}

/// One issuer's key-set handles.
#[derive(Debug, Clone)]
pub struct JwksMetrics {
    pub fetch_ok: IntCounter,
    pub fetch_error: IntCounter,
    pub fetch_invalid: IntCounter,
    pub keys: IntGauge,
    pub last_success: IntGauge,
    unknown_key: [IntCounter; 3],
}

impl JwksMetrics {
    pub fn unknown_key(&self, outcome: UnknownKeyOutcome) {
        self.unknown_key[outcome as usize].inc();
    }
}

impl Metrics {
    /// The JWT counters of `policy`.
    pub fn jwt(&self, policy: &str) -> JwtMetrics {
        let f = &self.jwt;
        JwtMetrics {
            rejections: JwtRejection::ALL
                .iter()
                .map(|r| f.rejections.with_label_values(&[policy, r.label()]))
                .collect(),
            cache_hits: f.token_cache.with_label_values(&[policy, "hit"]),
            cache_misses: f.token_cache.with_label_values(&[policy, "miss"]),
        }
    }

    /// The key-set handles of `issuer` in `policy`.
    pub fn jwks(&self, policy: &str, issuer: &str) -> JwksMetrics {
        let f = &self.jwt;
        let labels = [policy, issuer];
        let fetch = |result: &str| f.fetches.with_label_values(&[policy, issuer, result]);
        let unknown = |outcome: &str| f.unknown_key.with_label_values(&[policy, issuer, outcome]);
        JwksMetrics {
            fetch_ok: fetch("ok"),
            fetch_error: fetch("error"),
            fetch_invalid: fetch("invalid"),
            keys: f.keys.with_label_values(&labels),
            last_success: f.last_success.with_label_values(&labels),
            unknown_key: [
                unknown("refetched"),
                unknown("joined"),
                unknown("rate_limited"),
            ],
        }
    }
}
