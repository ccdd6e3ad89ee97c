//! What the server knows of a listener and of one of its connections, and the one
//! place a request crosses from the server into the proxy ([`ConnectionContext::handle`]).

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use ipnet::IpNet;
use prometheus::IntCounter;
use tokio::sync::watch;

use super::ProxyProtocol;
use crate::body::ClientBody;
use crate::config::{ClientLimits, ErrorDetail};
use crate::metrics::ClientTimeouts;
use crate::proxy::{self, ResponseBody, Snapshot};

/// What every connection of one listener shares.
pub struct ListenerContext {
    /// The listener's name; per-listener metric handles are found by it in each
    /// snapshot (a reload may add or remove listeners).
    pub name: String,
    pub limits: ClientLimits,
    pub state: Arc<ArcSwap<Snapshot>>,
    /// `X-Forwarded-Proto` for this listener's requests: `https` on TLS listeners.
    pub forwarded_proto: HeaderValue,
    /// Answer every request with a redirect to `https://` on this port instead.
    pub redirect_to_https: Option<u16>,
    /// How much of a gateway error the clients are told.
    pub error_detail: ErrorDetail,
    /// Connections (HTTP/2: streams) closed because the client was too slow.
    pub timeouts: ClientTimeouts,
    /// Request header fields dropped for their names (`headers_with_underscores`).
    pub header_fields_dropped: IntCounter,
    /// HTTP/2 connections closed because the client cancelled most of its streams.
    pub cancel_floods: IntCounter,
    /// Peers whose `X-Forwarded-For` names the client (`client_ip.trusted_proxies`),
    /// and whose PROXY protocol headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Set when connections start with a PROXY protocol header
    /// (`client_ip.proxy_protocol`).
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// One client connection.
pub struct ConnectionContext {
    pub listener: Arc<ListenerContext>,
    /// The client's IP address, ready for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// The TCP peer's address, or the client's from a PROXY protocol header.
    pub peer: IpAddr,
    /// `peer`'s port, for the access log.
    pub peer_port: u16,
    /// The TLS version of a TLS connection (`TLSv1.3`), for the access log.
    pub tls_version: Option<&'static str>,
    /// Turns true when the gateway closes what is left after its shutdown drain: ends
    /// this connection's upgraded (WebSocket) tunnels.
    pub close: watch::Receiver<bool>,
    /// Turns true when the gateway starts draining: this connection's tunnels send
    /// WebSocket Close frames (1001 Going Away).
    pub drain: watch::Receiver<bool>,
}

impl ConnectionContext {
    /// Answers one request with the configuration current when it arrived; never fails
    /// (errors become responses).
    #[inline(always)]
    pub fn handle(
        &self,
        request: Request<ClientBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + '_ {
        proxy::handle(self.listener.state.load_full(), self.client(), request)
    }

    /// Counts a request the connection refused before it could be routed (malformed,
    /// or its head too large), under the unmatched route.
    pub fn count_refused(&self, method: Option<&Method>, status: StatusCode) {
        let snapshot = self.listener.state.load();
        proxy::count_refused(&snapshot, &self.listener.name, method, status);
    }

    /// Counts a refused request (see [`ConnectionContext::count_refused`]) and writes
    /// its access-log line: `code` is the error's, `request_id` the answer's.
    pub fn refused(
        &self,
        method: Option<&Method>,
        status: StatusCode,
        code: &'static str,
        request_id: &HeaderValue,
    ) {
        let snapshot = self.listener.state.load();
        proxy::count_refused(&snapshot, &self.listener.name, method, status);
        proxy::log_refused(
            &snapshot,
            crate::access_log::RefusedFacts {
                request_id,
                listener: &self.listener.name,
                peer: self.peer,
                peer_port: self.peer_port,
                tls: self.tls_version,
                method,
                status,
                code,
            },
        );
    }

    /// The proxy's view of this connection.
    #[inline(always)]
    fn client(&self) -> proxy::Client<'_> {
        let listener = &*self.listener;
        proxy::Client {
            listener: &listener.name,
            limits: &listener.limits,
            forwarded_proto: &listener.forwarded_proto,
            redirect_to_https: listener.redirect_to_https,
            error_detail: listener.error_detail,
            header_fields_dropped: &listener.header_fields_dropped,
            peer_ip: &self.peer_ip,
            peer: self.peer,
            peer_port: self.peer_port,
            tls_version: self.tls_version,
            trusted_proxies: &listener.trusted_proxies,
            close: &self.close,
            drain: &self.drain,
        }
    }
}
