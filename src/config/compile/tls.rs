//! TLS in both directions: a listener's `tls` (certificates read and checked now, which
//! names each serves, client authentication) and an upstream's `tls` (how the gateway
//! verifies `https://` endpoints and which client certificate it shows them).

use std::collections::HashMap;
use std::path::Path;

use http::uri::Scheme;

use super::Problems;
use crate::config::raw::{RawTls, RawUpstream, RawUpstreamTls};
use crate::config::{defaults, EndpointAddress, UpstreamTls};
use crate::routing::HostPattern;
use crate::tls::{
    self, CertificateConfig, CertificateFile, CertificateFiles, ListenerTls, UpstreamTlsFiles,
};

/// A listener's `tls`: which certificates, read and checked now, serve which names.
/// `prefix` is the key path of the `tls` mapping.
pub(super) fn compile_tls(
    prefix: &str,
    raw: &RawTls,
    base: &Path,
    problems: &mut Problems,
) -> Option<ListenerTls> {
    let key = |field: &str| format!("{prefix}.{field}");
    let provider = tls::crypto_provider();
    // (key path of the entry, hosts as written, certificate, private key)
    let entries: Vec<(String, &[String], &Path, &Path)> = match (
        &raw.certificate,
        &raw.private_key,
        &raw.certificates,
    ) {
        (Some(certificate), Some(private_key), None) => {
            vec![(prefix.to_owned(), &[][..], certificate, private_key)]
        }
        (None, None, Some(list)) => {
            if list.is_empty() {
                problems.add(key("certificates"), "list at least one certificate");
            }
            list.iter()
                .enumerate()
                .map(|(i, entry)| {
                    (
                        format!("{prefix}.certificates[{i}]"),
                        &entry.hosts[..],
                        entry.certificate.as_path(),
                        entry.private_key.as_path(),
                    )
                })
                .collect()
        }
        (_, _, Some(_)) => {
            problems.add(
                prefix,
                "give either `certificate` and `private_key`, or `certificates`, not both",
            );
            return None;
        }
        (Some(_), None, None) => {
            problems.add(key("certificate"), "needs `private_key` beside it");
            return None;
        }
        (None, Some(_), None) => {
            problems.add(key("private_key"), "needs `certificate` beside it");
            return None;
        }
        (None, None, None) => {
            problems.add(
                    prefix,
                    "needs `certificate` and `private_key`, or `certificates` (one entry per set of host names)",
                );
            return None;
        }
    };
    let by_sni = raw.certificates.is_some();

    let mut certificates = Vec::with_capacity(entries.len());
    let mut claimed: HashMap<String, usize> = HashMap::new();
    for (index, (entry_key, hosts, certificate, private_key)) in entries.into_iter().enumerate() {
        let mut patterns = Vec::with_capacity(hosts.len());
        if by_sni && hosts.is_empty() {
            problems.add(
                format!("{entry_key}.hosts"),
                "list the server names this certificate is for, e.g. [api.example.com, \"*.example.com\"]",
            );
        }
        for (h, host) in hosts.iter().enumerate() {
            let host_key = format!("{entry_key}.hosts[{h}]");
            match HostPattern::parse(host) {
                Ok(pattern) => {
                    let text = tls::host_pattern_text(&pattern);
                    if let Some(first) = claimed.insert(text, index) {
                        problems.add(
                            host_key,
                            format!(
                                "host {host:?} is already served by {prefix}.certificates[{first}]"
                            ),
                        );
                    } else {
                        patterns.push((h, pattern));
                    }
                }
                Err(message) => problems.add(host_key, message),
            }
        }
        let files = CertificateFiles {
            certificate: base.join(certificate),
            private_key: base.join(private_key),
        };
        match files.load(&provider) {
            Ok(loaded) => {
                for (h, pattern) in &patterns {
                    if !tls::covers(&loaded.names, pattern) {
                        let names = if loaded.names.is_empty() {
                            "it has no DNS names (subjectAltName)".to_owned()
                        } else {
                            format!("its names are {}", loaded.names.join(", "))
                        };
                        problems.add(
                            format!("{entry_key}.hosts[{h}]"),
                            format!(
                                "certificate {} is not valid for {}; {names}",
                                files.certificate.display(),
                                tls::host_pattern_text(pattern)
                            ),
                        );
                    }
                }
                certificates.push(CertificateConfig {
                    hosts: patterns.into_iter().map(|(_, p)| p).collect(),
                    files,
                    loaded,
                });
            }
            Err(errors) => {
                for error in errors {
                    let field = match error.file {
                        CertificateFile::Certificate => "certificate",
                        CertificateFile::PrivateKey => "private_key",
                    };
                    problems.add(format!("{entry_key}.{field}"), error.message);
                }
            }
        }
    }

    let default = match &raw.default {
        None => 0,
        Some(_) if !by_sni => {
            problems.add(
                key("default"),
                "applies to `certificates` only; a single `certificate` answers every name",
            );
            0
        }
        Some(name) => match HostPattern::parse(name)
            .ok()
            .and_then(|p| claimed.get(&tls::host_pattern_text(&p)).copied())
        {
            Some(index) => index,
            None => {
                problems.add(
                    key("default"),
                    format!("{name:?} is not one of the hosts listed in `certificates`"),
                );
                0
            }
        },
    };

    let positive = |value: Option<crate::config::units::HumanDuration>,
                    default,
                    field: &str,
                    problems: &mut Problems| {
        problems.positive_duration(key(field), value, default)
    };
    let handshake_timeout = positive(
        raw.handshake_timeout,
        defaults::TLS_HANDSHAKE_TIMEOUT,
        "handshake_timeout",
        problems,
    );
    let reload_interval = positive(
        raw.reload_interval,
        defaults::TLS_RELOAD_INTERVAL,
        "reload_interval",
        problems,
    );

    let client_auth = match (&raw.client_ca, raw.client_auth) {
        (Some(path), mode) => {
            let ca = base.join(path);
            let mode = mode.unwrap_or_default();
            match tls::client_verifier(&ca, mode, provider) {
                Ok(verifier) => Some(tls::ClientAuth { ca, mode, verifier }),
                Err(message) => {
                    problems.add(key("client_ca"), message);
                    None
                }
            }
        }
        (None, Some(_)) => {
            problems.add(
                key("client_auth"),
                "needs `client_ca`: the CA certificates that client certificates must chain to",
            );
            None
        }
        (None, None) => None,
    };

    // The entry count matches only when every certificate loaded; errors were recorded.
    let complete = certificates.len() == raw.certificates.as_ref().map_or(1, Vec::len);
    (complete && !certificates.is_empty()).then(|| ListenerTls {
        default: default.min(certificates.len() - 1),
        certificates,
        handshake_timeout,
        reload_interval,
        client_auth,
    })
}

/// The TLS client settings of an upstream with `https://` endpoints: its `tls` mapping,
/// or the defaults (web PKI roots, the endpoint's host as server name).
pub(super) fn compile_upstream_tls(
    name: &str,
    raw: &RawUpstream,
    endpoints: &[EndpointAddress],
    base: &Path,
    problems: &mut Problems,
) -> Option<UpstreamTls> {
    let key = |field: &str| format!("upstreams.{name}.tls.{field}");
    let https = endpoints.iter().any(|e| e.scheme == Scheme::HTTPS);
    if !https {
        if raw.tls.is_some() {
            problems.warn(
                format!("upstreams.{name}.tls"),
                "has no effect: none of the upstream's endpoints is https://",
            );
        }
        return None;
    }
    let defaults = RawUpstreamTls::default();
    let settings = raw.tls.as_ref().unwrap_or(&defaults);
    if settings.insecure_skip_verify {
        problems.warn(
            key("insecure_skip_verify"),
            "the endpoints' certificates are not verified: the connection is encrypted but anyone on the path can impersonate the upstream",
        );
    }
    let files = UpstreamTlsFiles {
        ca: settings.ca.clone(),
        server_name: settings.server_name.clone(),
        insecure_skip_verify: settings.insecure_skip_verify,
        certificate: settings.certificate.clone(),
        private_key: settings.private_key.clone(),
    };
    match UpstreamTls::load(&files, base) {
        Ok(tls) => Some(tls),
        Err(errors) => {
            for error in errors {
                problems.add(key(error.field), error.message);
            }
            None
        }
    }
}
