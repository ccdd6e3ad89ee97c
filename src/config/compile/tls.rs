//! TLS in both directions: a listener's `tls` (certificates read and checked now, which
//! names each serves, client authentication) and an upstream's `tls` (how the gateway
//! verifies `https://` endpoints and which client certificate it shows them).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::uri::Scheme;
use rustls::crypto::CryptoProvider;

use super::Problems;
use crate::config::raw::{RawTls, RawUpstream, RawUpstreamTls};
use crate::config::{defaults, EndpointAddress, UpstreamTls};
use crate::routing::HostPattern;
use crate::tls::{
    self, CertificateConfig, CertificateFile, CertificateFiles, ClientAuth, ListenerTls,
    UpstreamTlsFiles,
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
    let entries = certificate_entries(prefix, raw, problems)?;
    let by_sni = raw.certificates.is_some();

    let mut certificates = Vec::with_capacity(entries.len());
    let mut claimed: HashMap<String, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let patterns = claim_hosts(prefix, index, entry, by_sni, &mut claimed, problems);
        if let Some(certificate) = load_certificate(entry, patterns, base, &provider, problems) {
            certificates.push(certificate);
        }
    }

    let default = default_certificate(prefix, raw, by_sni, &claimed, problems);

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

    let client_auth = compile_client_auth(prefix, raw, base, provider, problems);

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

/// One certificate of a listener's `tls`, as written.
struct CertificateEntry<'a> {
    /// The key path of the entry: the `tls` mapping, or `tls.certificates[i]`.
    key: String,
    /// The server names it is for, as written; none for a single `certificate`.
    hosts: &'a [String],
    certificate: &'a Path,
    private_key: &'a Path,
}

/// The certificates the `tls` mapping lists: `certificate` with `private_key`, or the
/// `certificates` list. `None` when it gives neither or both (the problem is recorded).
fn certificate_entries<'a>(
    prefix: &str,
    raw: &'a RawTls,
    problems: &mut Problems,
) -> Option<Vec<CertificateEntry<'a>>> {
    let key = |field: &str| format!("{prefix}.{field}");
    let entries = match (&raw.certificate, &raw.private_key, &raw.certificates) {
        (Some(certificate), Some(private_key), None) => {
            vec![CertificateEntry {
                key: prefix.to_owned(),
                hosts: &[],
                certificate,
                private_key,
            }]
        }
        (None, None, Some(list)) => {
            if list.is_empty() {
                problems.add(key("certificates"), "list at least one certificate");
            }
            list.iter()
                .enumerate()
                .map(|(i, entry)| CertificateEntry {
                    key: format!("{prefix}.certificates[{i}]"),
                    hosts: &entry.hosts[..],
                    certificate: entry.certificate.as_path(),
                    private_key: entry.private_key.as_path(),
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
    Some(entries)
}

/// The entry's host patterns, paired with their index in `hosts`. Each is claimed for
/// entry `index` in `claimed` (host → entry); a host that another entry claimed first
/// is a problem, and left out.
fn claim_hosts(
    prefix: &str,
    index: usize,
    entry: &CertificateEntry,
    by_sni: bool,
    claimed: &mut HashMap<String, usize>,
    problems: &mut Problems,
) -> Vec<(usize, HostPattern)> {
    let (entry_key, hosts) = (&entry.key, entry.hosts);
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
    patterns
}

/// Reads and checks the entry's certificate and private key; the certificate must be
/// valid for each of the entry's hosts.
fn load_certificate(
    entry: &CertificateEntry,
    patterns: Vec<(usize, HostPattern)>,
    base: &Path,
    provider: &CryptoProvider,
    problems: &mut Problems,
) -> Option<CertificateConfig> {
    let entry_key = &entry.key;
    let files = CertificateFiles {
        certificate: base.join(entry.certificate),
        private_key: base.join(entry.private_key),
    };
    match files.load(provider) {
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
            Some(CertificateConfig {
                hosts: patterns.into_iter().map(|(_, p)| p).collect(),
                files,
                loaded,
            })
        }
        Err(errors) => {
            for error in errors {
                let field = match error.file {
                    CertificateFile::Certificate => "certificate",
                    CertificateFile::PrivateKey => "private_key",
                };
                problems.add(format!("{entry_key}.{field}"), error.message);
            }
            None
        }
    }
}

/// `default`: the index of the entry that lists this host, for clients that send no
/// server name or one no certificate lists; the first entry when not given.
fn default_certificate(
    prefix: &str,
    raw: &RawTls,
    by_sni: bool,
    claimed: &HashMap<String, usize>,
    problems: &mut Problems,
) -> usize {
    let key = |field: &str| format!("{prefix}.{field}");
    match &raw.default {
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
    }
}

/// `client_ca` and `client_auth` (mTLS): the CA certificates that client certificates
/// must chain to, read now, and whether clients must present one.
fn compile_client_auth(
    prefix: &str,
    raw: &RawTls,
    base: &Path,
    provider: Arc<CryptoProvider>,
    problems: &mut Problems,
) -> Option<ClientAuth> {
    let key = |field: &str| format!("{prefix}.{field}");
    match (&raw.client_ca, raw.client_auth) {
        (Some(path), mode) => {
            let ca = base.join(path);
            let mode = mode.unwrap_or_default();
            match tls::client_verifier(&ca, mode, provider) {
                Ok(verifier) => Some(ClientAuth { ca, mode, verifier }),
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
    }
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
