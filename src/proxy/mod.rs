//! Forwarding one request. The phases, in order:
//!
//! 1. **admit**: take the configuration snapshot, assign the request id, reject what is
//!    malformed or over a limit (414, 400, 413) before anything is sent, including HTTP/2
//!    requests an HTTP/1.1 upstream could read otherwise than they are routed
//!    ([`h2_request`]);
//! 2. **route**: find the route (404, 405) and compute the upstream path;
//! 3. **policies**: the route's policies ([`crate::policy`]): refuse the request, answer
//!    it, or change its headers; what they note for the answer is added to whatever
//!    answers the request, last;
//! 4. **limit**: take a permit from the upstream's limiter (503 when it is saturated);
//! 5. **send**: pick an endpoint, rewrite headers, stream the request over a pooled
//!    connection and wait for the response headers (502, 504);
//! 6. **stream back**: return the upstream's response with its body streaming (trailers
//!    included, for gRPC); the permit and the endpoint's load are released when the body
//!    ends or the client goes away. A WebSocket upgrade the upstream accepts with 101
//!    becomes a tunnel instead ([`websocket`]), holding a slot of its route's cap.
//!
//! Every failure becomes a [`ProxyError`], turned into a response in one place.

mod error;
mod forward;
mod h2_request;
pub mod headers;
pub mod respond;
mod snapshot;
pub mod websocket;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use ipnet::IpNet;
use prometheus::IntCounter;
use tokio::sync::watch;

pub use error::ProxyError;
pub use respond::{CloseConnection, Dialect, Rescued};
pub use snapshot::{RouteHandler, RouteRuntime, Snapshot};

use crate::access_log::{AccessLog, Entry, RequestFacts};
use crate::aggregate::{AggregateRuntime, Inputs};
use crate::body::ClientBody;
use crate::config::{ClientLimits, ErrorDetail, HostHeader, RouteTarget, UnderscoreHeaders};
use crate::http1::fields::may_be_folded;
use crate::http1::request::drop_foldable_names;
use crate::metrics::RequestCounters;
use crate::policy::{client_ip, Admission, Facts, Policies, Verdict};
use crate::request_id::{self, X_REQUEST_ID};
use crate::routing::Lookup;

pub use crate::upstream::ResponseBody;
use crate::upstream::{Endpoint, UpstreamBody};
use forward::Forward;

/// What the proxy knows of the client and the listener it came in on, borrowed from
/// the server's connection for one request.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    /// The listener's name; per-listener metric handles are found by it in each
    /// snapshot (a reload may add or remove listeners).
    pub listener: &'a str,
    pub limits: &'a ClientLimits,
    /// `X-Forwarded-Proto` for this listener's requests: `https` on TLS listeners.
    pub forwarded_proto: &'a HeaderValue,
    /// Answer every request with a redirect to `https://` on this port instead.
    pub redirect_to_https: Option<u16>,
    /// How much of a gateway error the client is told.
    pub error_detail: ErrorDetail,
    /// Request header fields dropped for their names (`headers_with_underscores`).
    pub header_fields_dropped: &'a IntCounter,
    /// The client's IP address, ready for `X-Forwarded-For`.
    pub peer_ip: &'a HeaderValue,
    /// The TCP peer's address.
    pub peer: IpAddr,
    /// The TCP peer's port (for the access log).
    pub peer_port: u16,
    /// The connection's TLS version, when it is a TLS one (for the access log).
    pub tls_version: Option<&'static str>,
    /// Peers whose `X-Forwarded-For` names the client (`client_ip.trusted_proxies`).
    pub trusted_proxies: &'a [IpNet],
    /// Turns true when the gateway closes what is left after its shutdown drain: ends
    /// this connection's upgraded (WebSocket) tunnels.
    pub close: &'a watch::Receiver<bool>,
    /// Turns true when the gateway starts draining: upgraded (WebSocket) tunnels then
    /// say Going Away.
    pub drain: &'a watch::Receiver<bool>,
}

/// Answers one request with `snapshot`, the configuration it started with; never fails
/// (errors become responses). Not an `async fn` of its own: the returned future is the
/// proxy's, so the request is not moved through one more future.
#[inline(always)]
pub fn handle<'a>(
    snapshot: Arc<Snapshot>,
    client: Client<'a>,
    request: Request<ClientBody>,
) -> impl Future<Output = Response<ResponseBody>> + Send + 'a {
    client.answer(snapshot, request)
}

/// Counts a request the connection refused before it could be routed (malformed, or
/// its head too large), under the unmatched route.
pub fn count_refused(
    snapshot: &Snapshot,
    listener: &str,
    method: Option<&Method>,
    status: StatusCode,
) {
    let listener = snapshot.listener_index(listener);
    let unmatched = &snapshot.unmatched;
    if let Some(counters) = unmatched.for_listener(listener) {
        match method {
            Some(method) => counters.inc(method, status),
            None => counters.inc_unknown_method(status),
        }
    }
}

/// Writes the access-log line of a request the connection refused before it could be
/// routed, on a listener that has a log.
pub fn log_refused(snapshot: &Snapshot, refused: crate::access_log::RefusedFacts<'_>) {
    let log = snapshot
        .listener_index(refused.listener)
        .and_then(|listener| snapshot.access_logs.get(listener))
        .and_then(Option::as_ref);
    if let Some(log) = log {
        log.refused(refused);
    }
}

/// A request routed and ready to forward.
struct Routed {
    route: usize,
    /// The rewritten path and query, or `None` to forward the client's unchanged.
    path_and_query: Option<String>,
    /// The route's path parameters, kept only for aggregate routes.
    params: Vec<(String, String)>,
}

impl Client<'_> {
    async fn answer(
        self,
        snapshot: Arc<Snapshot>,
        mut request: Request<ClientBody>,
    ) -> Response<ResponseBody> {
        let snapshot = &*snapshot;
        let started = Instant::now();
        // HTTP/2 requests are checked here (the HTTP/1.1 server checks its own), then
        // lose names with `_` as the listener says, before anything is routed.
        let admitted = admit_http2(&request, self.limits);
        if admitted.is_ok()
            && request.version() == Version::HTTP_2
            && self.limits.headers_with_underscores == UnderscoreHeaders::Drop
        {
            let dropped = drop_foldable_names(request.headers_mut());
            if dropped > 0 {
                self.header_fields_dropped.inc_by(dropped as u64);
            }
        }
        let request_id = request_id::client_request_id(request.headers())
            .unwrap_or_else(request_id::generate_request_id);
        // gRPC runs over HTTP/2 only: HTTP/1.1 requests need no look at their type.
        let dialect = if request.version() == Version::HTTP_2 {
            Dialect::of(request.headers())
        } else {
            Dialect::Json
        };
        let listener = snapshot.listener_index(self.listener);
        if let Some(port) = self.redirect_to_https {
            let mut entry =
                self.log_entry(snapshot, listener, None, &request, &request_id, started);
            let (status, response) =
                match admitted.and_then(|()| redirect_to_https(&request, port, &request_id)) {
                    Ok(response) => {
                        if let Some(entry) = entry.as_deref_mut() {
                            entry.decision("redirect_to_https");
                        }
                        (response.status(), response)
                    }
                    Err(error) => self.fail(&error, &request_id, dialect, entry.as_deref_mut()),
                };
            let unmatched = &snapshot.unmatched;
            if let Some(counters) = unmatched.for_listener(listener) {
                counters.inc(request.method(), status);
            }
            unmatched.duration.observe(started.elapsed().as_secs_f64());
            return logged(response, entry);
        }
        let routed = admitted.and_then(|()| admit_and_route(snapshot, self.limits, &request));
        let routed_index = routed.as_ref().ok().map(|routed| routed.route);
        let mut entry = self.log_entry(
            snapshot,
            listener,
            routed_index,
            &request,
            &request_id,
            started,
        );
        let route_metrics = match &routed {
            Ok(routed) => &snapshot.routes[routed.route].metrics,
            Err(_) => &snapshot.unmatched,
        };
        let tally = Tally {
            counters: route_metrics.for_listener(listener),
            method: request.method().clone(),
            answered: false,
        };
        let route_index = routed.as_ref().ok().map(|routed| routed.route);
        let route = route_index.map(|index| &snapshot.routes[index]);
        let mut admission = Admission::default();
        // The server span, when tracing is on; what it says of the request is taken
        // only when it is sampled.
        let trace = snapshot.tracer.as_ref().map(|tracer| {
            let peer = client_ip::canonical(self.peer);
            let trusted = self.trusted_proxies.iter().any(|net| net.contains(&peer));
            tracer.begin(request.headers(), trusted)
        });
        let traced = trace
            .as_ref()
            .filter(|span| span.sampled())
            .map(|_| TracedRequest::of(&request, self.peer));
        let result = match &trace {
            None => {
                self.dispatch(
                    snapshot,
                    routed,
                    request,
                    &request_id,
                    started,
                    &mut admission,
                    entry.as_deref_mut(),
                )
                .await
            }
            // Boxed: an untraced request's future stays the size it was.
            Some(span) => {
                let work = self.dispatch(
                    snapshot,
                    routed,
                    request,
                    &request_id,
                    started,
                    &mut admission,
                    entry.as_deref_mut(),
                );
                Box::pin(crate::trace::in_context(span.context().clone(), work)).await
            }
        };
        let mut error_type = None;
        let (status, mut response) = match result {
            Ok(response) => (response.status(), response),
            Err(error) => {
                route_metrics
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                if traced.is_some() {
                    error_type = Some(respond::rescue(&error).code);
                }
                self.fail(&error, &request_id, dialect, entry.as_deref_mut())
            }
        };
        if let (Some(span), Some(traced)) = (trace, traced) {
            let http_route = route.map(|route| route.http_route.as_str());
            let route_name = route_index.map(|index| snapshot.config.routes[index].name.as_str());
            span.end(crate::trace::SpanKind::Server, || {
                traced.describe(http_route, route_name, status, error_type, &request_id)
            });
        }
        if let Some(route) = route {
            route.policies.finish(admission, response.headers_mut());
        }
        tally.answered(status);
        logged(response, entry)
    }

    /// The request's access-log line, when its listener has a log and its route (none
    /// when unmatched) is logged. Off, this is one branch.
    #[inline]
    fn log_entry(
        &self,
        snapshot: &Snapshot,
        listener: Option<usize>,
        route: Option<usize>,
        request: &Request<ClientBody>,
        request_id: &HeaderValue,
        started: Instant,
    ) -> Option<Box<Entry>> {
        let log = snapshot.access_logs.get(listener?)?.as_ref()?;
        if route.is_some_and(|route| !snapshot.routes[route].access_log) {
            return None;
        }
        Some(self.begin_entry(log, snapshot, route, request, request_id, started))
    }

    /// Starts the line with what the request's head says.
    #[inline(never)]
    fn begin_entry(
        &self,
        log: &std::sync::Arc<AccessLog>,
        snapshot: &Snapshot,
        route: Option<usize>,
        request: &Request<ClientBody>,
        request_id: &HeaderValue,
        started: Instant,
    ) -> Box<Entry> {
        let upstream = route.and_then(|route| match &snapshot.routes[route].handler {
            RouteHandler::Proxy { upstream, .. } => Some(upstream.name.as_str()),
            RouteHandler::Aggregate(_) => None,
        });
        log.begin(RequestFacts {
            started,
            request_id,
            listener: self.listener,
            client_ip: client_ip::client_ip(self.peer, self.trusted_proxies, request.headers()),
            peer: self.peer,
            peer_port: self.peer_port,
            tls: self.tls_version,
            version: request.version(),
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            route: route.map(|route| snapshot.config.routes[route].name.as_str()),
            upstream,
        })
    }

    /// Phases 3 to 6 for a routed request: its route's proxy or aggregate.
    // The request's parts as `forward` and `aggregate` take them (see their allows).
    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        snapshot: &Snapshot,
        routed: Result<Routed, ProxyError>,
        request: Request<ClientBody>,
        request_id: &HeaderValue,
        started: Instant,
        admission: &mut Admission,
        entry: Option<&mut Entry>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let routed = routed?;
        match &snapshot.routes[routed.route].handler {
            RouteHandler::Proxy {
                upstream,
                timeout,
                retry,
                websocket,
                hedge,
            } => {
                let target = Forward {
                    route: &snapshot.routes[routed.route],
                    upstream,
                    timeout: *timeout,
                    retry: retry.as_deref(),
                    websocket: websocket.as_ref(),
                    hedge: hedge.as_deref(),
                };
                self.forward(
                    target, routed, request, request_id, started, admission, entry,
                )
                .await
            }
            RouteHandler::Aggregate(aggregate) => {
                let policies = &snapshot.routes[routed.route].policies;
                self.aggregate(
                    aggregate, policies, routed, request, request_id, admission, entry,
                )
                .await
            }
        }
    }

    /// The answer to a failed request, logged, as [`respond`] decides it; and the
    /// status it counts under (for gRPC requests, the HTTP status the failure maps to,
    /// though the client is answered `200` with a `grpc-status`).
    fn fail(
        &self,
        error: &ProxyError,
        request_id: &HeaderValue,
        dialect: Dialect,
        entry: Option<&mut Entry>,
    ) -> (StatusCode, Response<ResponseBody>) {
        let rescued = respond::rescue(error);
        log_failure(&rescued, request_id);
        if let Some(entry) = entry {
            entry.gateway_error(rescued.code);
            if matches!(error, ProxyError::Policy(_)) {
                entry.decision(rescued.code);
            }
        }
        let response = respond::response(error, &rescued, request_id, self.error_detail, dialect);
        (rescued.status, response)
    }

    /// Fans out to the route's calls and answers with their merged (or streamed) JSON.
    // The request's parts as the proxy holds them, each borrowed for its own phase.
    #[allow(clippy::too_many_arguments)]
    async fn aggregate(
        &self,
        aggregate: &Arc<AggregateRuntime>,
        policies: &Policies,
        routed: Routed,
        request: Request<ClientBody>,
        request_id: &HeaderValue,
        admission: &mut Admission,
        entry: Option<&mut Entry>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (parts, _body) = request.into_parts();
        let client_host = client_host(parts.version, parts.uri.authority(), &parts.headers);
        // Phase 3, the policy step, on the headers every call sends.
        let client_ip = client_ip::client_ip(self.peer, self.trusted_proxies, &parts.headers);
        let mut base_headers = crate::aggregate::base_headers(&parts.headers);
        let facts = Facts {
            client_host,
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            params: &routed.params,
            client_headers: Some(&parts.headers),
            ..self.facts(client_ip, request_id)
        };
        if let Verdict::Answer(status) = policies.admit(&mut base_headers, facts, admission).await?
        {
            if let Some(entry) = entry {
                entry.decision(POLICY_ANSWER);
            }
            return Ok(policy_answer(status, request_id));
        }
        let calls = entry.map(|entry| entry.aggregate_calls(aggregate.call_names.clone()));
        let inputs = Arc::new(Inputs {
            calls,
            params: routed.params,
            query: parts.uri.query().map(str::to_owned),
            client_headers: parts.headers,
            base_headers,
            describe: respond::describe_calls(self.error_detail),
            trace: crate::trace::current(),
        });
        let mut response = if crate::aggregate::streams(&aggregate.config) {
            crate::aggregate::stream(aggregate.clone(), inputs)
        } else {
            // Its calls are not the forwarded exchange: their early hints are dropped.
            crate::interim::NotForwarded(Box::pin(crate::aggregate::respond(
                aggregate.clone(),
                inputs,
            )))
            .await
            .map_err(|error| ProxyError::Aggregate {
                route: aggregate.route.clone(),
                error,
            })?
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID, request_id.clone());
        Ok(response)
    }

    /// What the policies know of this request besides its headers.
    /// (The request's own facts are left empty, for the caller to fill in.)
    fn facts<'a>(&'a self, client_ip: IpAddr, request_id: &'a HeaderValue) -> Facts<'a> {
        Facts {
            client_ip,
            peer_ip: self.peer_ip,
            forwarded_proto: self.forwarded_proto,
            client_host: None,
            request_id,
            method: &Method::GET,
            path: "",
            query: None,
            params: &[],
            client_headers: None,
        }
    }

    /// The client's request made fit to forward (hop-by-hop headers out, HTTP/2 cookies
    /// joined, the `Host` chosen) and its route's policies applied (phase 3); not yet
    /// addressed to an endpoint. `None` when a policy answered the request itself.
    async fn prepare(
        &self,
        parts: http::request::Parts,
        routed: Routed,
        request_id: &HeaderValue,
        policies: &Policies,
        admission: &mut Admission,
    ) -> Result<Result<Prepared, StatusCode>, ProxyError> {
        let http::request::Parts {
            method,
            uri,
            version,
            mut headers,
            ..
        } = parts;
        // Before `Connection` may name `X-Forwarded-For` away.
        let client_ip = client_ip::client_ip(self.peer, self.trusted_proxies, &headers);
        headers::remove_hop_by_hop(&mut headers, true);
        if version == Version::HTTP_2 {
            h2_request::join_cookies(&mut headers);
        }
        let client_host = client_host(version, uri.authority(), &headers);
        if let Some(host) = &client_host {
            headers.insert(HOST, host.clone());
        }
        // Phase 3, the policy step: the route's policies, in order.
        let facts = Facts {
            client_host,
            method: &method,
            path: uri.path(),
            query: uri.query(),
            params: &routed.params,
            ..self.facts(client_ip, request_id)
        };
        if let Verdict::Answer(status) = policies.admit(&mut headers, facts, admission).await? {
            return Ok(Err(status));
        }
        let uri = uri.into_parts();
        let path = match routed.path_and_query {
            Some(rewritten) => PathAndQuery::from_maybe_shared(Bytes::from(rewritten))
                .map_err(|_| ProxyError::BadRequest("the rewritten path is not a valid URI"))?,
            None => uri
                .path_and_query
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        let path = match admission.strip_query() {
            Some(names) => without_credentials(path, names)?,
            None => path,
        };
        Ok(Ok(Prepared {
            method,
            path,
            headers,
        }))
    }
}

/// A request ready to be addressed to an endpoint (once, or once per try).
#[derive(Clone)]
struct Prepared {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
}

impl Prepared {
    /// The request for `endpoint`.
    fn addressed(
        self,
        endpoint: &Endpoint,
        host_header: HostHeader,
        version: Version,
        body: UpstreamBody,
    ) -> Result<Request<UpstreamBody>, ProxyError> {
        let mut request = Request::new(body);
        *request.uri_mut() = endpoint
            .uri(self.path)
            .map_err(|_| ProxyError::BadRequest("the request target is not a valid URI"))?;
        *request.method_mut() = self.method;
        *request.version_mut() = version;
        *request.headers_mut() = self.headers;
        if host_header == HostHeader::Endpoint {
            request
                .headers_mut()
                .insert(HOST, endpoint.host_value.clone());
        }
        Ok(request)
    }
}

/// Phases 1 and 2: checks that need no upstream, then the route lookup and rewrite.
fn admit_and_route(
    snapshot: &Snapshot,
    limits: &ClientLimits,
    request: &Request<ClientBody>,
) -> Result<Routed, ProxyError> {
    let uri = request.uri();
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri_length {
        return Err(ProxyError::UriTooLong {
            limit: limits.max_uri_length,
        });
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(ProxyError::BadRequest(
            "the request target must be a path starting with `/`",
        ));
    }
    if has_dot_segment(path) {
        return Err(ProxyError::BadRequest(
            "the path must not contain `.` or `..` segments",
        ));
    }
    if content_length(request.headers()).is_some_and(|len| len > limits.max_request_body) {
        return Err(ProxyError::BodyTooLarge {
            limit: limits.max_request_body,
        });
    }
    let host = request_host(request);
    let router = &snapshot.config.router;
    let lookup = match preflight_lookup(snapshot, host, request) {
        Some(matched) => matched,
        None => router.lookup(host, path, request.method(), request.headers()),
    };
    match lookup {
        Lookup::NotFound => Err(ProxyError::NoRoute),
        Lookup::MethodNotAllowed(allowed) => Err(ProxyError::MethodNotAllowed(allowed)),
        Lookup::Matched { route, params } => {
            let owned = || -> Vec<(String, String)> {
                params
                    .iter()
                    .flat_map(|p| p.iter())
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect()
            };
            Ok(match &snapshot.config.routes[route].target {
                RouteTarget::Proxy { rewrite, .. } => Routed {
                    route,
                    path_and_query: rewrite.apply(path, uri.query(), params.as_ref()),
                    params: if snapshot.routes[route].policies.needs_params() {
                        owned()
                    } else {
                        Vec::new()
                    },
                },
                RouteTarget::Aggregate(_) => Routed {
                    route,
                    path_and_query: None,
                    params: owned(),
                },
            })
        }
    }
}

/// A CORS preflight is routed by the method it asks for (`Access-Control-Request-Method`,
/// the request the browser is about to make), so that a route whose `match.methods`
/// leaves out `OPTIONS` still gets its preflights; only when that route has a CORS
/// policy, which answers them. `None` (routed as any other request) otherwise.
fn preflight_lookup<'a>(
    snapshot: &'a Snapshot,
    host: Option<&str>,
    request: &'a Request<ClientBody>,
) -> Option<Lookup<'a, 'a>> {
    if request.method() != Method::OPTIONS {
        return None;
    }
    let asked = crate::policy::cors::preflight_method(request.method(), request.headers())?;
    let router = &snapshot.config.router;
    match router.lookup(host, request.uri().path(), &asked, request.headers()) {
        matched @ Lookup::Matched { route, .. }
            if snapshot
                .routes
                .get(route)
                .is_some_and(|r| r.policies.answers_preflights()) =>
        {
            Some(matched)
        }
        _ => None,
    }
}

/// What the access log names a policy's own answer: a CORS preflight is the only one.
const POLICY_ANSWER: &str = "cors_preflight";

/// The response, carrying its request's access-log line (when it has one) to the end
/// of its body.
#[inline]
fn logged(response: Response<ResponseBody>, entry: Option<Box<Entry>>) -> Response<ResponseBody> {
    match entry {
        None => response,
        Some(mut entry) => {
            entry.status(response.status());
            response.map(|body| ResponseBody::logged(body, entry))
        }
    }
}

/// `path` without the query parameters an auth policy read (its credentials).
fn without_credentials(path: PathAndQuery, names: &[Box<str>]) -> Result<PathAndQuery, ProxyError> {
    let Some(query) = path.query() else {
        return Ok(path);
    };
    let Some(kept) = crate::policy::auth::credentials::strip_query(query, names) else {
        return Ok(path);
    };
    let target = if kept.is_empty() {
        path.path().to_owned()
    } else {
        format!("{}?{kept}", path.path())
    };
    PathAndQuery::from_maybe_shared(Bytes::from(target))
        .map_err(|_| ProxyError::BadRequest("the request target is not a valid URI"))
}

/// A policy's own answer ([`Verdict::Answer`]): its status, no body, the request id;
/// the headers the policy noted are added with the others.
fn policy_answer(status: StatusCode, request_id: &HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(X_REQUEST_ID, request_id.clone());
    response
}

/// The checks only HTTP/2 requests need ([`h2_request`]); nothing for HTTP/1.1.
fn admit_http2(request: &Request<ClientBody>, limits: &ClientLimits) -> Result<(), ProxyError> {
    if request.version() != Version::HTTP_2 {
        return Ok(());
    }
    if limits.headers_with_underscores == UnderscoreHeaders::Reject
        && request.headers().keys().any(may_be_folded)
    {
        return Err(ProxyError::BadRequest("a header field name contains `_`"));
    }
    h2_request::check(request)
}

/// The `Host` to forward: over HTTP/2 the `:authority` (RFC 9113, 8.3.1), else the
/// `Host` header, else the target's authority (absolute form).
fn client_host(
    version: Version,
    authority: Option<&http::uri::Authority>,
    headers: &HeaderMap,
) -> Option<HeaderValue> {
    if version == Version::HTTP_2 {
        return h2_request::forwarded_host(authority, headers);
    }
    headers
        .get(HOST)
        .cloned()
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()))
}

/// The same URL with `https://` (and `port`, unless 443): 301 for GET and HEAD, 308 for
/// other methods so that clients repeat them unchanged.
fn redirect_to_https(
    request: &Request<ClientBody>,
    port: u16,
    request_id: &HeaderValue,
) -> Result<Response<ResponseBody>, ProxyError> {
    let host = request_host(request)
        .filter(|host| !host.contains('@') && host.parse::<http::uri::Authority>().is_ok());
    let Some(host) = host else {
        return Err(ProxyError::BadRequest(
            "a redirect to HTTPS needs a valid Host header",
        ));
    };
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    let Ok(location) = HeaderValue::try_from(location) else {
        return Err(ProxyError::BadRequest(
            "the request target cannot be redirected",
        ));
    };
    let status = if matches!(*request.method(), Method::GET | Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::LOCATION, location);
    headers.insert(X_REQUEST_ID, request_id.clone());
    Ok(response)
}

/// The host the client asked for, without port: from the URI (HTTP/2, absolute form)
/// or the `Host` header.
fn request_host(request: &Request<ClientBody>) -> Option<&str> {
    request.uri().host().or_else(|| {
        request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(strip_port)
    })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether the path has a `.` or `..` segment, also percent-encoded. Such paths could
/// reach a different route's upstream path after the upstream normalises them.
fn has_dot_segment(path: &str) -> bool {
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    path.split('/').any(is_dot_segment)
}

/// `.`, `..`, or either spelled with `%2e`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while let Some(&first) = rest.first() {
        if first == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && first == b'%' && rest[1] == b'2' && rest[2] | 0x20 == b'e' {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

fn log_failure(rescued: &Rescued, request_id: &HeaderValue) {
    let id = request_id.to_str().unwrap_or_default();
    let status = rescued.status.as_u16();
    let detail = &rescued.detail;
    if rescued.status.is_server_error() {
        tracing::warn!(request_id = id, status, code = rescued.code, "{detail}");
    } else {
        tracing::debug!(request_id = id, status, code = rescued.code, "{detail}");
    }
}

/// What a sampled request's server span says of it, taken before the request is
/// forwarded.
struct TracedRequest {
    method: Method,
    path: String,
    version: Version,
    peer: IpAddr,
}

impl TracedRequest {
    fn of(request: &Request<ClientBody>, peer: IpAddr) -> Self {
        TracedRequest {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            version: request.version(),
            peer,
        }
    }

    /// The span's name (the route's pattern, never the raw path), attributes (OTel HTTP
    /// semantic conventions) and whether it failed (a 5xx answer).
    fn describe(
        self,
        http_route: Option<&str>,
        route_name: Option<&str>,
        status: StatusCode,
        error_type: Option<&'static str>,
        request_id: &HeaderValue,
    ) -> (String, Vec<(&'static str, crate::trace::AttrValue)>, bool) {
        use crate::trace::AttrValue;
        let name = match http_route {
            Some(pattern) => format!("{} {pattern}", self.method),
            None => UNMATCHED_SPAN.to_owned(),
        };
        let mut attributes: Vec<(&'static str, AttrValue)> = Vec::with_capacity(10);
        attributes.push(("http.request.method", self.method.as_str().into()));
        attributes.push(("url.path", self.path.into()));
        if let Some(pattern) = http_route {
            attributes.push(("http.route", pattern.into()));
        }
        if let Some(route) = route_name {
            attributes.push(("portcullis.route", route.into()));
        }
        attributes.push(("http.response.status_code", status.as_u16().into()));
        attributes.push(("network.peer.address", self.peer.to_string().into()));
        let version = match self.version {
            Version::HTTP_2 => "2",
            Version::HTTP_10 => "1.0",
            _ => "1.1",
        };
        attributes.push(("network.protocol.version", version.into()));
        if let Some(code) = error_type {
            attributes.push(("error.type", code.into()));
        }
        if let Ok(id) = request_id.to_str() {
            attributes.push(("portcullis.request_id", id.into()));
        }
        (name, attributes, status.is_server_error())
    }
}

/// The name of the server span of a request that matched no route.
const UNMATCHED_SPAN: &str = "unmatched route";

/// Counts the request once answered; a request dropped before (the client went away)
/// counts as 499, as nginx does.
struct Tally<'a> {
    /// `None` on a listener that a reload removed (it is draining): not counted.
    counters: Option<&'a RequestCounters>,
    method: Method,
    answered: bool,
}

impl Tally<'_> {
    fn answered(mut self, status: StatusCode) {
        self.answered = true;
        if let Some(counters) = self.counters {
            counters.inc(&self.method, status);
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if !self.answered {
            if let (Some(counters), Ok(status)) = (self.counters, StatusCode::from_u16(499)) {
                counters.inc(&self.method, status);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_also_encoded() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/%2e%2e/x",
            "/a/.%2E/b",
            "/..",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for good in ["/a/b.json", "/a/...", "/v1.2/x", "/a/%2e%2e%2e", "/"] {
            assert!(!has_dot_segment(good), "{good}");
        }
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
    }
}
