//! Phases 3 to 6 of a proxied route: the policy step (in [`Client::prepare`]), a permit
//! of the upstream and the exchange (retried under a retry policy), then the response
//! streamed back, or a WebSocket tunnel once the upstream switches protocols.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::headers;
use super::websocket::{self, WebSockets};
use super::{content_length, Client, Prepared, ProxyError, RouteRuntime, Routed};
use crate::access_log::Entry;
use crate::body::ClientBody;
use crate::config::{HostHeader, RetryConfig};
use crate::policy::Admission;
use crate::request_id::X_REQUEST_ID;
use crate::upstream::{
    Exchange, ExchangeError, Hedge, ReceivedBody, ResponseBody, Upstream, UpstreamBody,
    UpstreamUpgrade,
};

impl Client<'_> {
    /// Phases 3 to 6 for a proxied route: the policy step, then the upstream's permit,
    /// the exchange, and the response streamed back (or a WebSocket tunnel).
    // The request's parts as the proxy holds them, each borrowed for its own phase.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward(
        &self,
        target: Forward<'_>,
        routed: Routed,
        mut request: Request<ClientBody>,
        request_id: &HeaderValue,
        started: Instant,
        admission: &mut Admission,
        mut entry: Option<&mut Entry>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // A WebSocket upgrade takes a slot of the route's cap before anything is sent.
        let upgrade = target.admit_upgrade(&mut request)?;
        // Hedged: no body to send twice, a method the route hedges, and a delay known.
        let hedged = target
            .hedge
            .filter(|hedge| {
                upgrade.is_none()
                    && request.body().is_end_stream()
                    && hedge.config.methods.contains(request.method())
            })
            .and_then(|hedge| Some((hedge, hedge.delay()?)));
        let replayable = target
            .retry
            .filter(|policy| hedged.is_none() && upgrade.is_none() && may_replay(policy, &request));
        let (parts, body) = request.into_parts();
        let prepared = self
            .prepare(parts, routed, request_id, &target.route.policies, admission)
            .await?;
        let mut prepared = match prepared {
            Ok(prepared) => prepared,
            Err(status) => {
                if let Some(entry) = entry {
                    entry.decision(super::POLICY_ANSWER);
                }
                return Ok(super::policy_answer(status, request_id));
            }
        };
        if let Some(upgrade) = &upgrade {
            websocket::keep_upgrade_headers(&mut prepared.headers, upgrade.protocol.clone());
        }
        let (response, exchange) = match (hedged, replayable) {
            // Hedged tries, each a request built again (there is no body).
            (Some((hedge, delay)), _) => {
                let (host_header, version) = target.addressing();
                Box::pin(target.upstream.exchange_hedged(
                    &hedge.config,
                    delay,
                    target.timeout,
                    |endpoint| {
                        prepared.clone().addressed(
                            endpoint,
                            host_header,
                            version,
                            UpstreamBody::Empty,
                        )
                    },
                ))
                .await
                .map_err(|error| target.failed(error))?
            }
            // Phase 4: a permit of the upstream (phase *limit*), then one exchange. In
            // this future, not one of its own: the request is not moved once more.
            (None, None) => {
                let counted = entry
                    .as_deref_mut()
                    .filter(|_| !body.is_end_stream())
                    .map(Entry::count_bytes_in);
                let body = UpstreamBody::counted(body, self.limits.max_request_body, counted);
                let (host_header, version) = target.addressing();
                target
                    .upstream
                    .exchange(target.timeout, |endpoint| {
                        prepared.addressed(endpoint, host_header, version, body)
                    })
                    .await
                    .map_err(|error| target.failed(error))?
            }
            // Boxed: keeping the body and retrying takes more state than one exchange,
            // and every request's future would otherwise be sized for it.
            (None, Some(policy)) => {
                Box::pin(target.send_retrying(policy, prepared, body, entry.as_deref_mut())).await?
            }
        };
        if let Some(entry) = entry {
            entry.upstream_answered(
                exchange.endpoint_label(),
                exchange.queue_wait(),
                exchange.retries(),
                exchange.redispatches(),
            );
        }
        match upgrade {
            Some(upgrade) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                // The tunnel holds the route's slot, not the upstream's permit.
                drop(exchange);
                let duration = &target.route.metrics.duration;
                duration.observe(started.elapsed().as_secs_f64());
                Ok(upgrade.tunnel(response, request_id, self.close.clone(), self.drain.clone()))
            }
            upgrade => {
                if let Some(upgrade) = upgrade {
                    upgrade.upgrading.refused();
                }
                let exchange = exchange.timed(target.route.metrics.duration.clone(), started);
                Ok(stream_back(response, exchange, request_id))
            }
        }
    }
}

/// A proxied route's upstream and the settings of its exchange.
pub(super) struct Forward<'a> {
    pub route: &'a RouteRuntime,
    pub upstream: &'a Arc<Upstream>,
    pub timeout: Duration,
    pub retry: Option<&'a RetryConfig>,
    pub websocket: Option<&'a Arc<WebSockets>>,
    pub hedge: Option<&'a Hedge>,
}

/// A WebSocket upgrade holding a slot of its route's cap until the upstream answers.
struct Upgrade {
    upgrading: websocket::Upgrading,
    protocol: HeaderValue,
    client: websocket::ClientSwitch,
}

impl Forward<'_> {
    /// The request's WebSocket upgrade, if it asks for one and the route allows them
    /// (503 when the route's cap is reached).
    #[inline]
    fn admit_upgrade(
        &self,
        request: &mut Request<ClientBody>,
    ) -> Result<Option<Upgrade>, ProxyError> {
        let Some(websockets) = self.websocket.filter(|_| self.upstream.speaks_http1()) else {
            return Ok(None);
        };
        let Some(protocol) = websocket::requested(request) else {
            return Ok(None);
        };
        let Some(upgrading) = websockets.admit() else {
            return Err(ProxyError::WebSocketLimit {
                route: websockets.route.to_string(),
                limit: websockets.config.max_connections,
            });
        };
        Ok(Some(Upgrade {
            upgrading,
            protocol,
            client: websocket::ClientSwitch::take(request),
        }))
    }

    /// How requests are addressed to this upstream: its `Host` rule and HTTP version.
    fn addressing(&self) -> (HostHeader, Version) {
        (self.upstream.host_header, self.upstream.request_version())
    }

    /// Phase 4 under a retry policy: the body is kept (up to the policy's size) so that
    /// each try can send it again.
    async fn send_retrying(
        &self,
        policy: &RetryConfig,
        prepared: Prepared,
        body: ClientBody,
        entry: Option<&mut Entry>,
    ) -> Result<(Response<ReceivedBody>, Exchange), ProxyError> {
        let kept = if body.is_end_stream() {
            None
        } else {
            let limit = usize::try_from(policy.max_body_size).unwrap_or(usize::MAX);
            let collected = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|_| ProxyError::BadRequest("the request body could not be read"))?;
            Some(collected.to_bytes())
        };
        if let Some(entry) = entry {
            entry.bytes_in(kept.as_ref().map_or(0, |kept| kept.len() as u64));
        }
        let (host_header, version) = self.addressing();
        let exchanged = self
            .upstream
            .exchange_retrying(policy, self.timeout, |endpoint| {
                prepared.clone().addressed(
                    endpoint,
                    host_header,
                    version,
                    UpstreamBody::Full(kept.clone()),
                )
            })
            .await;
        exchanged.map_err(|error| self.failed(error))
    }

    fn failed(&self, error: ExchangeError<ProxyError>) -> ProxyError {
        match error {
            ExchangeError::Overloaded(reason) => ProxyError::Overloaded {
                upstream: self.upstream.name.clone(),
                reason,
            },
            ExchangeError::Build(error) => error,
            ExchangeError::Upstream(error) => ProxyError::Upstream {
                upstream: self.upstream.name.clone(),
                error,
            },
        }
    }
}

impl Upgrade {
    /// The upstream switched protocols: the `101` goes to the client, and the two
    /// connections are joined in a task of their own.
    fn tunnel(
        self,
        mut response: Response<ReceivedBody>,
        request_id: &HeaderValue,
        close: watch::Receiver<bool>,
        drain: watch::Receiver<bool>,
    ) -> Response<ResponseBody> {
        let upstream_io = UpstreamUpgrade::of(&mut response);
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(UPGRADE).cloned();
        headers::remove_hop_by_hop(&mut parts.headers, false);
        if let Some(protocol) = protocol {
            websocket::keep_upgrade_headers(&mut parts.headers, protocol);
        }
        parts.headers.insert(X_REQUEST_ID, request_id.clone());
        self.upgrading.join(self.client, upstream_io, close, drain);
        Response::from_parts(parts, ResponseBody::empty())
    }
}

/// Whether a request may be sent again under `policy`: its method is listed, and its
/// body is empty or small enough to keep.
fn may_replay(policy: &RetryConfig, request: &Request<ClientBody>) -> bool {
    policy.methods.contains(request.method())
        && (request.body().is_end_stream()
            || content_length(request.headers()).is_some_and(|len| len <= policy.max_body_size))
}

/// Phase 5: the upstream's response with its body streaming, holding `exchange` (the
/// permit, the endpoint's load, the timer) until the body ends.
#[inline]
fn stream_back(
    response: Response<ReceivedBody>,
    exchange: Exchange,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, false);
    if crate::http1::response::is_bodiless(parts.status) {
        // RFC 9110 §8.6: no length on a response that cannot have a body.
        parts.headers.remove(CONTENT_LENGTH);
    }
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    Response::from_parts(parts, ResponseBody::upstream(body, exchange))
}
