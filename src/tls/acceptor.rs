//! Downstream TLS, between accept and HTTP: a listener's rustls configuration (TLS 1.2
//! and 1.3, ALPN `h2` and `http/1.1`, the ring provider passed explicitly), the choice
//! of certificate by server name (SNI), the handshake with its timeout and metrics, and
//! reloading certificates when their files change.
//!
//! The handshake runs in the connection's own task, never in the accept loop, so a slow
//! or hostile client holds only its own connection slot, and for at most
//! `handshake_timeout`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, InvalidMessage, ProtocolVersion, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::certificates::{
    covers, fingerprint, host_pattern_text, join_errors, CertificateConfig, ListenerTls,
};
use super::crypto_provider;
use crate::metrics::{HandshakeFailure, Metrics, TlsMetrics};
use crate::routing::HostPattern;

/// ALPN protocols offered, in order of preference (and in the order of
/// `crate::metrics::TLS_ALPNS`).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS side of one listener.
pub struct TlsListener {
    name: Arc<str>,
    acceptor: TlsAcceptor,
    resolver: Arc<SniResolver>,
    handshake_timeout: std::time::Duration,
    metrics: TlsMetrics,
}

/// A connection whose handshake succeeded, counted as active until dropped.
pub struct TlsConnection {
    pub stream: TlsStream<TcpStream>,
    pub active: ActiveTls,
}

impl TlsListener {
    /// Builds the listener's rustls configuration from certificates already loaded and
    /// checked with the configuration, and a watcher that reloads them on change.
    pub fn new(
        name: &str,
        tls: &ListenerTls,
        metrics: &Metrics,
    ) -> Result<(Arc<TlsListener>, CertificateWatcher), rustls::Error> {
        let resolver = Arc::new(SniResolver {
            table: ArcSwap::from_pointee(SniTable::build(&tls.certificates, tls.default)),
        });
        let builder = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &tls.client_auth {
            Some(client_auth) => builder.with_client_cert_verifier(client_auth.verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();

        let metrics = metrics.tls(name);
        for certificate in &tls.certificates {
            for host in certificate.host_labels() {
                metrics.set_expiry(&host, certificate.loaded.not_after);
            }
            warn_if_expired(name, certificate);
        }
        let listener = Arc::new(TlsListener {
            name: name.into(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            handshake_timeout: tls.handshake_timeout,
            metrics,
        });
        let watcher = CertificateWatcher {
            listener: listener.clone(),
            certificates: tls.certificates.clone(),
            default: tls.default,
            interval: tls.reload_interval,
        };
        Ok((listener, watcher))
    }

    /// Runs the server side of the handshake, for at most `handshake_timeout`. A failure
    /// is counted by reason and logged at debug level: it is the client's problem, and a
    /// scanner or a confused client must not flood the log.
    pub async fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> Option<TlsConnection> {
        let result =
            tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await;
        let (reason, error) = match result {
            Ok(Ok(stream)) => {
                let (_, connection) = stream.get_ref();
                // Indexes into TLS_VERSIONS and TLS_ALPNS.
                let version = match connection.protocol_version() {
                    Some(ProtocolVersion::TLSv1_2) => 0,
                    _ => 1,
                };
                let alpn = connection
                    .alpn_protocol()
                    .and_then(|protocol| ALPN.iter().position(|p| *p == protocol))
                    .unwrap_or(2);
                self.metrics.handshakes[version][alpn].inc();
                let gauge = self.metrics.active[version][alpn].clone();
                gauge.inc();
                return Some(TlsConnection {
                    stream,
                    active: ActiveTls(gauge),
                });
            }
            Ok(Err(error)) => (classify(&error), error.to_string()),
            Err(_) => (
                HandshakeFailure::Timeout,
                format!("no handshake within {:?}", self.handshake_timeout),
            ),
        };
        self.metrics.failed(reason);
        tracing::debug!(
            listener = %self.name,
            %peer,
            reason = reason.label(),
            "TLS handshake failed: {error}"
        );
        None
    }
}

/// An expired certificate still loads (clients decide), but the operator should know.
fn warn_if_expired(listener: &str, certificate: &CertificateConfig) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if certificate.loaded.not_after < now {
        tracing::warn!(
            listener,
            certificate = %certificate.files.certificate.display(),
            "certificate has expired; clients will refuse it"
        );
    }
}

/// Keeps a TLS connection counted in `portcullis_tls_connections_active`.
pub struct ActiveTls(prometheus::IntGauge);

impl Drop for ActiveTls {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Sorts a failed handshake into one of a few reasons, for the metric.
fn classify(error: &io::Error) -> HandshakeFailure {
    use rustls::Error as E;
    if let Some(error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match error {
            // The first byte is not a TLS record type: typically `GET ...`.
            E::InvalidMessage(InvalidMessage::InvalidContentType) => HandshakeFailure::NotTls,
            E::InvalidMessage(_)
            | E::PeerMisbehaved(_)
            | E::DecryptError
            | E::PeerSentOversizedRecord => HandshakeFailure::Protocol,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => HandshakeFailure::Incompatible,
            E::NoCertificatesPresented | E::InvalidCertificate(_) => {
                HandshakeFailure::ClientCertificate
            }
            E::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA,
            ) => HandshakeFailure::CertificateRejected,
            _ => HandshakeFailure::Other,
        };
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => HandshakeFailure::Closed,
        _ => HandshakeFailure::Other,
    }
}

/// Picks the certificate for a client's server name; swapped whole on reload.
#[derive(Debug)]
struct SniResolver {
    table: ArcSwap<SniTable>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        Some(match hello.server_name() {
            Some(name) => table.lookup(name).clone(),
            None => table.default.clone(),
        })
    }
}

/// Certificates by server name: exact names first, then `*.` wildcards (one label, as a
/// client checks them), then the default.
#[derive(Debug)]
struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniTable {
    fn build(certificates: &[CertificateConfig], default: usize) -> SniTable {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for certificate in certificates {
            for host in &certificate.hosts {
                let key = certificate.loaded.key.clone();
                match host {
                    HostPattern::Exact(name) => exact.insert(name.clone(), key),
                    HostPattern::Wildcard(suffix) => wildcard.insert(suffix.clone(), key),
                };
            }
        }
        SniTable {
            exact,
            wildcard,
            default: certificates[default].loaded.key.clone(),
        }
    }

    fn lookup(&self, name: &str) -> &Arc<CertifiedKey> {
        // rustls hands over server names in lower case already; be sure without allocating
        // in the common case.
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(key) = self.exact.get(name) {
            return key;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

/// Checks a listener's certificate and key files every `reload_interval` and swaps in
/// certificates whose files changed. A changed pair that does not load (unreadable, not
/// PEM, key and certificate that do not match, no longer valid for its hosts) is
/// rejected with a warning and a metric, and the previous certificate keeps serving.
/// Connections keep the certificate they shook hands with.
pub struct CertificateWatcher {
    listener: Arc<TlsListener>,
    certificates: Vec<CertificateConfig>,
    default: usize,
    interval: std::time::Duration,
}

impl CertificateWatcher {
    /// Runs until `drain` turns true.
    pub async fn run(mut self, mut drain: watch::Receiver<bool>) {
        let provider = crypto_provider();
        // What each entry's files held when last looked at, loaded or not: a bad file
        // is reported once, not at every interval.
        let mut seen: Vec<u64> = self
            .certificates
            .iter()
            .map(|c| c.loaded.fingerprint)
            .collect();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = crate::shutdown::signalled(&mut drain) => return,
            }
            let mut changed = false;
            for (index, certificate) in self.certificates.iter_mut().enumerate() {
                let files = certificate.files.clone();
                let Ok(read) = tokio::task::spawn_blocking(move || files.read()).await else {
                    continue;
                };
                let fingerprint = match &read {
                    Ok((cert, key)) => fingerprint(cert, key),
                    Err(errors) => fingerprint(join_errors(errors).as_bytes(), b""),
                };
                if fingerprint == seen[index] {
                    continue;
                }
                seen[index] = fingerprint;
                let loaded =
                    read.and_then(|(cert, key)| certificate.files.parse(&cert, &key, &provider));
                let loaded =
                    loaded.map_err(|e| join_errors(&e)).and_then(|loaded| {
                        match certificate.hosts.iter().find(|h| !covers(&loaded.names, h)) {
                            Some(host) => Err(format!(
                                "certificate {} is not valid for {}",
                                certificate.files.certificate.display(),
                                host_pattern_text(host)
                            )),
                            None => Ok(loaded),
                        }
                    });
                let metrics = &self.listener.metrics;
                match loaded {
                    Ok(loaded) => {
                        tracing::info!(
                            listener = %self.listener.name,
                            certificate = %certificate.files.certificate.display(),
                            not_after = loaded.not_after,
                            "certificate reloaded"
                        );
                        for host in certificate.host_labels() {
                            metrics.set_expiry(&host, loaded.not_after);
                        }
                        metrics.reloaded.inc();
                        certificate.loaded = loaded;
                        warn_if_expired(&self.listener.name, certificate);
                        changed = true;
                    }
                    Err(message) => {
                        tracing::warn!(
                            listener = %self.listener.name,
                            "certificate change rejected, still serving the previous certificate: {message}"
                        );
                        metrics.reload_rejected.inc();
                    }
                }
            }
            if changed {
                self.listener
                    .resolver
                    .table
                    .store(Arc::new(SniTable::build(&self.certificates, self.default)));
            }
        }
    }
}
