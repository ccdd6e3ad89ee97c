//! One request's line, written as its facts become known: the request's own fields
//! when it is routed ([`AccessLog::begin`]), the upstream's when it answers, and the
//! rest (status, bytes, durations, outcome) when the line is emitted: when the
//! response body has been sent to its end or dropped (the client went away), or, for a
//! request dropped before it was answered, then (status `499`). Emitting is dropping
//! the [`Entry`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::header::{HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};

use super::json::Fields;
use super::{trace_id, AccessLog};

/// What is known of a request when it is routed.
pub struct RequestFacts<'a> {
    pub started: Instant,
    pub request_id: &'a HeaderValue,
    pub listener: &'a str,
    /// The trusted client address (see `policy::client_ip`).
    pub client_ip: IpAddr,
    /// The connection's peer (or the PROXY protocol header's client) and its port.
    pub peer: IpAddr,
    pub peer_port: u16,
    /// The TLS version of the connection, when it is one.
    pub tls: Option<&'static str>,
    pub version: Version,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// `None` when no route matched.
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
}

/// The request body's size, as far as it was read.
enum BytesIn {
    Known(u64),
    /// Counted by the body on its way upstream.
    Counted(Arc<AtomicU64>),
}

/// A request's line in the making; emitted when dropped.
pub struct Entry {
    log: Arc<AccessLog>,
    line: Vec<u8>,
    started: Instant,
    status: u16,
    bytes_in: BytesIn,
    bytes_out: u64,
    upstream_headers: Option<Duration>,
    queue_wait: Option<Duration>,
    retries: u32,
    redispatches: u32,
    endpoint_written: bool,
    decision: Option<&'static str>,
    error: Option<&'static str>,
    calls: Option<Arc<CallStatuses>>,
    completed: bool,
}

/// The outcome of each call of an aggregate request, recorded by the calls as they
/// finish (labels of `portcullis_aggregate_calls_total`'s `outcome`).
pub struct CallStatuses {
    names: Arc<[String]>,
    outcomes: Box<[OnceLock<&'static str>]>,
}

impl CallStatuses {
    pub fn new(names: Arc<[String]>) -> Self {
        let outcomes = names.iter().map(|_| OnceLock::new()).collect();
        CallStatuses { names, outcomes }
    }

    /// Call `call` ended with `outcome` (its first outcome counts).
    pub fn record(&self, call: usize, outcome: &'static str) {
        if let Some(slot) = self.outcomes.get(call) {
            let _ = slot.set(outcome);
        }
    }
}

impl AccessLog {
    /// Starts the line of a request: its own fields are written now, while its head is
    /// at hand, so nothing of it is copied.
    pub fn begin(self: &Arc<Self>, request: RequestFacts<'_>) -> Box<Entry> {
        let mut line = self.sink.buffer();
        let mut fields = Fields::continuing(&mut line);
        fields.display("time", humantime::format_rfc3339_millis(SystemTime::now()));
        fields.bytes("request_id", request.request_id.as_bytes());
        fields.opt_str("trace_id", trace_id(request.headers));
        fields.display("client_ip", request.client_ip);
        fields.display("peer_ip", request.peer);
        fields.uint("peer_port", u64::from(request.peer_port));
        fields.str("listener", request.listener);
        fields.str("protocol", protocol(request.version));
        fields.opt_str("tls", request.tls);
        fields.str("method", request.method.as_str());
        match request.uri.authority() {
            Some(authority) => fields.str("host", authority.as_str()),
            None => match request.headers.get(HOST) {
                Some(host) => fields.bytes("host", host.as_bytes()),
                None => fields.null("host"),
            },
        }
        fields.str("path", request.uri.path());
        if self.config.query {
            fields.opt_str("query", request.uri.query());
        }
        match request.headers.get(USER_AGENT) {
            Some(agent) => fields.bytes("user_agent", agent.as_bytes()),
            None => fields.null("user_agent"),
        }
        if !self.config.headers.is_empty() {
            fields.open_object("headers");
            for (i, header) in self.config.headers.iter().enumerate() {
                fields.member(i == 0, header.name.as_str());
                match request.headers.get(&header.name) {
                    None => fields.member_null(),
                    Some(_) if header.redacted => fields.member_str("[redacted]"),
                    Some(value) => fields.member_bytes(value.as_bytes()),
                }
            }
            fields.close();
        }
        fields.opt_str("route", request.route);
        fields.opt_str("upstream", request.upstream);
        Box::new(Entry {
            log: self.clone(),
            line,
            started: request.started,
            status: 499,
            bytes_in: BytesIn::Known(0),
            bytes_out: 0,
            upstream_headers: None,
            queue_wait: None,
            retries: 0,
            redispatches: 0,
            endpoint_written: false,
            decision: None,
            error: None,
            calls: None,
            completed: false,
        })
    }
}

/// What is known of a request the HTTP/1.1 server refused before it had a head to
/// route (malformed, too large): the connection, and the method when it was read.
pub struct RefusedFacts<'a> {
    pub request_id: &'a HeaderValue,
    pub listener: &'a str,
    pub peer: IpAddr,
    pub peer_port: u16,
    pub tls: Option<&'static str>,
    pub method: Option<&'a Method>,
    pub status: StatusCode,
    pub code: &'static str,
}

impl AccessLog {
    /// The line of a refused request: the same fields, null where nothing is known.
    pub fn refused(&self, refused: RefusedFacts<'_>) {
        let mut line = self.sink.buffer();
        let mut fields = Fields::continuing(&mut line);
        fields.display("time", humantime::format_rfc3339_millis(SystemTime::now()));
        fields.bytes("request_id", refused.request_id.as_bytes());
        fields.null("trace_id");
        // Behind trusted proxies the client is not known without the headers.
        fields.display("client_ip", refused.peer);
        fields.display("peer_ip", refused.peer);
        fields.uint("peer_port", u64::from(refused.peer_port));
        fields.str("listener", refused.listener);
        fields.null("protocol");
        fields.opt_str("tls", refused.tls);
        fields.opt_str("method", refused.method.map(Method::as_str));
        for key in ["host", "path"] {
            fields.null(key);
        }
        if self.config.query {
            fields.null("query");
        }
        fields.null("user_agent");
        if !self.config.headers.is_empty() {
            fields.open_object("headers");
            for (i, header) in self.config.headers.iter().enumerate() {
                fields.member(i == 0, header.name.as_str());
                fields.member_null();
            }
            fields.close();
        }
        for key in ["route", "upstream", "endpoint"] {
            fields.null(key);
        }
        fields.uint("status", u64::from(refused.status.as_u16()));
        fields.uint("bytes_in", 0);
        fields.uint("bytes_out", 0);
        fields.millis("duration_ms", Duration::ZERO);
        for key in ["upstream_headers_ms", "queue_wait_ms"] {
            fields.null(key);
        }
        fields.uint("retries", 0);
        fields.uint("redispatches", 0);
        fields.null("decision");
        fields.str("error", refused.code);
        fields.bool("completed", false);
        fields.end();
        self.sink.send(line);
    }
}

impl Entry {
    /// The upstream's response headers arrived from `endpoint`, after `queue_wait` for
    /// a permit, `retries` tries after the first and `redispatches` to other endpoints.
    pub fn upstream_answered(
        &mut self,
        endpoint: &str,
        queue_wait: Duration,
        retries: u32,
        redispatches: u32,
    ) {
        self.upstream_headers = Some(self.started.elapsed());
        self.queue_wait = Some(queue_wait);
        self.retries = retries;
        self.redispatches = redispatches;
        if !self.endpoint_written {
            Fields::continuing(&mut self.line).str("endpoint", endpoint);
            self.endpoint_written = true;
        }
    }

    /// The status the client is answered with.
    pub fn status(&mut self, status: StatusCode) {
        self.status = status.as_u16();
    }

    /// The gateway answered with an error: its code (the JSON body's `code`).
    pub fn gateway_error(&mut self, code: &'static str) {
        self.error = Some(code);
    }

    /// The gateway decided the request itself: a policy refused it (`ip_denied`,
    /// `rate_limited`, ...) or answered it (`cors_preflight`), or the listener
    /// redirected it (`redirect_to_https`).
    pub fn decision(&mut self, decision: &'static str) {
        self.decision = Some(decision);
    }

    /// A counter for the request body's bytes as they go upstream.
    pub fn count_bytes_in(&mut self) -> Arc<AtomicU64> {
        let counter = Arc::new(AtomicU64::new(0));
        self.bytes_in = BytesIn::Counted(counter.clone());
        counter
    }

    /// The request body was read whole: `bytes` long.
    pub fn bytes_in(&mut self, bytes: u64) {
        self.bytes_in = BytesIn::Known(bytes);
    }

    /// `bytes` more of the response body went to the client.
    #[inline]
    pub fn sent(&mut self, bytes: usize) {
        self.bytes_out += bytes as u64;
    }

    /// The response body was sent to its end.
    pub fn completed(&mut self) {
        self.completed = true;
    }

    /// The aggregate route's calls record their outcomes here.
    pub fn aggregate_calls(&mut self, names: Arc<[String]>) -> Arc<CallStatuses> {
        let statuses = Arc::new(CallStatuses::new(names));
        self.calls = Some(statuses.clone());
        statuses
    }

    /// Whether the line is kept: always for errors, gateway answers and slow requests;
    /// successful ones by the log's `sample`.
    fn kept(&self, duration: Duration) -> bool {
        let sample = self.log.config.sample;
        sample >= 1.0
            || self.status >= 400
            || self.error.is_some()
            || self.decision.is_some()
            || duration >= self.log.config.slow_over
            || fastrand::f64() < sample
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        let mut line = std::mem::take(&mut self.line);
        if !self.kept(duration) {
            self.log.sink.recycle(line);
            return;
        }
        let mut fields = Fields::continuing(&mut line);
        if !self.endpoint_written {
            fields.null("endpoint");
        }
        fields.uint("status", u64::from(self.status));
        fields.uint(
            "bytes_in",
            match &self.bytes_in {
                BytesIn::Known(bytes) => *bytes,
                BytesIn::Counted(counter) => counter.load(Ordering::Relaxed),
            },
        );
        fields.uint("bytes_out", self.bytes_out);
        fields.millis("duration_ms", duration);
        fields.opt_millis("upstream_headers_ms", self.upstream_headers);
        fields.opt_millis("queue_wait_ms", self.queue_wait);
        fields.uint("retries", u64::from(self.retries));
        fields.uint("redispatches", u64::from(self.redispatches));
        fields.opt_str("decision", self.decision);
        fields.opt_str("error", self.error);
        if let Some(calls) = &self.calls {
            fields.open_object("aggregate_calls");
            for (i, (name, outcome)) in calls.names.iter().zip(calls.outcomes.iter()).enumerate() {
                fields.member(i == 0, name);
                match outcome.get() {
                    Some(outcome) => fields.member_str(outcome),
                    None => fields.member_null(),
                }
            }
            fields.close();
        }
        fields.bool("completed", self.completed);
        fields.end();
        self.log.sink.send(line);
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}
