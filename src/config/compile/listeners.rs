//! `listeners`: each client-facing listener's name, address, connection and request
//! limits, plain-HTTP redirect and PROXY protocol; its `tls` mapping is compiled by
//! [`super::tls`], the ranges of its `client_ip` by [`super::policies`].

use std::collections::HashSet;
use std::path::Path;

use super::tls::compile_tls;
use super::{check_name, Problems};
use crate::config::raw::{RawClientIp, RawListener, RawRedirect};
use crate::config::{defaults, ClientLimits, ListenerConfig, ProxyProtocolConfig};

pub(super) fn compile_listeners(
    raw: &[RawListener],
    base: &Path,
    problems: &mut Problems,
) -> Vec<ListenerConfig> {
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, listener)| {
            let key = |field: &str| format!("listeners[{i}].{field}");
            check_name("listener", &listener.name, key("name"), problems);
            if !names.insert(listener.name.as_str()) {
                problems.add(
                    key("name"),
                    format!("listener name {:?} is used twice", listener.name),
                );
            }
            // Port 0 asks the system for a free port: never a clash.
            if listener.address.port() != 0 && !addresses.insert(listener.address) {
                problems.add(
                    key("address"),
                    format!("address {} is used by two listeners", listener.address),
                );
            }
            let max_connections = listener
                .max_connections
                .unwrap_or(defaults::MAX_CONNECTIONS);
            if max_connections == 0 {
                problems.add(key("max_connections"), "must be at least 1");
            }
            let limits = compile_client_limits(i, listener, problems);
            let tls = listener
                .tls
                .as_ref()
                .and_then(|raw| compile_tls(&key("tls"), raw, base, problems));
            let redirect_to_https = compile_redirect(i, listener, problems);
            let mut client_ip = super::policies::compile_client_ip(
                &key("client_ip"),
                listener.client_ip.as_ref(),
                problems,
            );
            if let Some(raw) = &listener.client_ip {
                client_ip.proxy_protocol = compile_proxy_protocol(&key("client_ip"), raw, problems);
            }
            ListenerConfig {
                name: listener.name.clone(),
                address: listener.address,
                max_connections,
                limits,
                tls,
                redirect_to_https,
                error_detail: listener.error_detail.unwrap_or_default(),
                client_ip,
            }
        })
        .collect()
}

/// `client_ip.proxy_protocol` and its timeout. A header is believed only from a peer in
/// `trusted_proxies`, so the list must name the balancers: a listener that believed any
/// peer would let every client choose its own address.
fn compile_proxy_protocol(
    key: &str,
    raw: &RawClientIp,
    problems: &mut Problems,
) -> Option<ProxyProtocolConfig> {
    let Some(mode) = raw.proxy_protocol else {
        if raw.proxy_protocol_timeout.is_some() {
            problems.warn(
                format!("{key}.proxy_protocol_timeout"),
                "has no effect without `proxy_protocol`",
            );
        }
        return None;
    };
    // Ranges that failed to parse are reported on their own; only a list written
    // empty is this mistake.
    if raw.trusted_proxies.is_empty() {
        problems.add(
            format!("{key}.proxy_protocol"),
            "needs `trusted_proxies`: the addresses of the balancers whose PROXY headers \
             are believed (connections from other peers are closed); write \
             [0.0.0.0/0, \"::/0\"] to believe any peer",
        );
    }
    let timeout = problems.positive_duration(
        format!("{key}.proxy_protocol_timeout"),
        raw.proxy_protocol_timeout,
        defaults::PROXY_PROTOCOL_TIMEOUT,
    );
    Some(ProxyProtocolConfig { mode, timeout })
}

/// What a listener allows a client: header and URI sizes, request body size, idle time
/// and header names with `_`.
fn compile_client_limits(
    i: usize,
    listener: &RawListener,
    problems: &mut Problems,
) -> ClientLimits {
    let key = |field: &str| format!("listeners[{i}].{field}");
    let defaults = ClientLimits::default();
    let max_header_size = listener
        .max_header_size
        .map_or(defaults.max_header_size, |s| {
            usize::try_from(s.0).unwrap_or(usize::MAX)
        });
    if max_header_size < 8192 {
        problems.add(key("max_header_size"), "must be at least 8KiB (8192 bytes)");
    }
    let max_headers = listener.max_headers.unwrap_or(defaults.max_headers);
    if max_headers == 0 {
        problems.add(key("max_headers"), "must be at least 1");
    }
    let max_uri_length = listener.max_uri_length.unwrap_or(defaults.max_uri_length);
    if max_uri_length < 16 {
        problems.add(key("max_uri_length"), "must be at least 16");
    }
    let idle_timeout = listener.idle_timeout.map_or(defaults.idle_timeout, |d| d.0);
    if idle_timeout.is_zero() {
        problems.add(key("idle_timeout"), "must be longer than 0s");
    }
    ClientLimits {
        idle_timeout,
        max_header_size,
        max_headers,
        max_uri_length,
        max_request_body: listener
            .max_request_body
            .map_or(defaults.max_request_body, |s| s.0),
        headers_with_underscores: listener.headers_with_underscores.unwrap_or_default(),
    }
}

/// `redirect_to_https` of a plain listener: the HTTPS port to send clients to.
fn compile_redirect(i: usize, listener: &RawListener, problems: &mut Problems) -> Option<u16> {
    let key = |field: &str| format!("listeners[{i}].{field}");
    let redirect_to_https = match &listener.redirect_to_https {
        None | Some(RawRedirect::Enabled(false)) => None,
        Some(RawRedirect::Enabled(true)) => Some(443),
        Some(RawRedirect::Port(port)) => {
            if port.port == 0 {
                problems.add(
                    key("redirect_to_https.port"),
                    "must be a port between 1 and 65535",
                );
            }
            Some(port.port)
        }
    };
    if redirect_to_https.is_some() && listener.tls.is_some() {
        problems.add(
            key("redirect_to_https"),
            "is for plain HTTP listeners; this one already serves HTTPS",
        );
    }
    redirect_to_https
}
