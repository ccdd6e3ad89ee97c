//! `listeners`: each client-facing listener's name, address, connection and request
//! limits and plain-HTTP redirect; its `tls` mapping is compiled by [`super::tls`].

use std::collections::HashSet;
use std::path::Path;

use super::tls::compile_tls;
use super::{check_name, Problems};
use crate::config::raw::{RawListener, RawRedirect};
use crate::config::{defaults, ClientLimits, ListenerConfig};

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
            ListenerConfig {
                name: listener.name.clone(),
                address: listener.address,
                max_connections,
                limits,
                tls,
                redirect_to_https,
                error_detail: listener.error_detail.unwrap_or_default(),
                client_ip: super::policies::compile_client_ip(
                    &key("client_ip"),
                    listener.client_ip.as_ref(),
                    problems,
                ),
            }
        })
        .collect()
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
