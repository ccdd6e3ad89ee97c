//! A listener's TLS material, read and checked when the configuration loads: certificate
//! chains and private keys from PEM files, each certificate's names and expiry, and the
//! CAs that client certificates must chain to (mTLS).
//!
//! Every problem names the file and what is wrong with it; the config compiler adds the
//! key path and its line and column. The acceptor loads certificates again with the
//! same functions when their files change ([`super::acceptor`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{InconsistentKeys, RootCertStore};

use crate::routing::HostPattern;

/// Whether clients of an mTLS listener must present a certificate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// Clients without a valid certificate are refused during the handshake.
    #[default]
    Required,
    /// A certificate is checked when a client presents one; clients without one are let in.
    Optional,
}

/// How a listener terminates TLS.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// In configuration order; at least one.
    pub certificates: Vec<CertificateConfig>,
    /// Index of the certificate for clients that send no server name (SNI) or one that
    /// no certificate lists.
    pub default: usize,
    /// Time allowed for a client's handshake, from accept.
    pub handshake_timeout: Duration,
    /// How often certificate and key files are checked for changes.
    pub reload_interval: Duration,
    /// Client certificate checks (mTLS), when configured.
    pub client_auth: Option<ClientAuth>,
}

/// Client certificate checks of a listener.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// The `client_ca` file, resolved.
    pub ca: PathBuf,
    pub mode: ClientAuthMode,
    /// Built from `ca` at load time.
    pub verifier: Arc<dyn ClientCertVerifier>,
}

/// Settings are equal when they name the same files for the same hosts with the same
/// options. What the files hold is not compared: the listener's watcher reloads changed
/// certificate files by itself (see [`super::acceptor`]), so a renewed certificate must
/// not make a configuration reload look like a listener change.
impl PartialEq for ListenerTls {
    fn eq(&self, other: &Self) -> bool {
        self.default == other.default
            && self.handshake_timeout == other.handshake_timeout
            && self.reload_interval == other.reload_interval
            && client_auth_settings(self) == client_auth_settings(other)
            && self.certificates.len() == other.certificates.len()
            && self
                .certificates
                .iter()
                .zip(&other.certificates)
                .all(|(a, b)| a.hosts == b.hosts && a.files == b.files)
    }
}

fn client_auth_settings(tls: &ListenerTls) -> Option<(&Path, ClientAuthMode)> {
    tls.client_auth.as_ref().map(|c| (c.ca.as_path(), c.mode))
}

/// One certificate of a listener and the names it is served for.
#[derive(Debug, Clone)]
pub struct CertificateConfig {
    /// The server names (SNI) this certificate answers; empty for a listener's only
    /// certificate, which answers every name.
    pub hosts: Vec<HostPattern>,
    pub files: CertificateFiles,
    /// As read at load time.
    pub loaded: LoadedCertificate,
}

impl CertificateConfig {
    /// The label values of `host` for this certificate's metrics: its hosts as written,
    /// or `*` for a listener's only certificate.
    pub fn host_labels(&self) -> Vec<String> {
        if self.hosts.is_empty() {
            return vec!["*".to_owned()];
        }
        self.hosts.iter().map(host_pattern_text).collect()
    }
}

/// `api.example.com` or `*.example.com`.
pub fn host_pattern_text(host: &HostPattern) -> String {
    match host {
        HostPattern::Exact(name) => name.clone(),
        HostPattern::Wildcard(suffix) => format!("*.{suffix}"),
    }
}

/// Where a certificate and its key live, resolved against the configuration file's
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// A certificate chain and its key, ready for rustls, with what the gateway needs to know
/// about the end-entity certificate.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the end-entity certificate (subjectAltName), lower case.
    pub names: Vec<String>,
    /// The end of the certificate's validity (notAfter), in Unix seconds.
    pub not_after: i64,
    /// Of the two files' contents, to notice when they change.
    pub fingerprint: u64,
}

/// Which of the two files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateFile {
    Certificate,
    PrivateKey,
}

/// Why a certificate and key could not be loaded; the message names the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CertificateError {
    pub file: CertificateFile,
    pub message: String,
}

impl CertificateError {
    fn certificate(message: String) -> Self {
        CertificateError {
            file: CertificateFile::Certificate,
            message,
        }
    }

    fn private_key(message: String) -> Self {
        CertificateError {
            file: CertificateFile::PrivateKey,
            message,
        }
    }
}

impl CertificateFiles {
    /// Reads both files as they are now; a problem with each is reported.
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), Vec<CertificateError>> {
        both(self.read_certificate(), self.read_private_key())
    }

    fn read_certificate(&self) -> Result<Vec<u8>, CertificateError> {
        std::fs::read(&self.certificate).map_err(|e| {
            CertificateError::certificate(format!(
                "cannot read {}: {e}",
                self.certificate.display()
            ))
        })
    }

    fn read_private_key(&self) -> Result<Vec<u8>, CertificateError> {
        std::fs::read(&self.private_key).map_err(|e| {
            CertificateError::private_key(format!(
                "cannot read {}: {e}",
                self.private_key.display()
            ))
        })
    }

    /// Reads and parses both files. Each file is checked even when the other cannot be
    /// read, so that one pass reports every problem.
    pub fn load(
        &self,
        provider: &CryptoProvider,
    ) -> Result<LoadedCertificate, Vec<CertificateError>> {
        let certificate = self
            .read_certificate()
            .and_then(|pem| Ok((self.parse_certificate(&pem)?, pem)));
        let private_key = self
            .read_private_key()
            .and_then(|pem| Ok((self.parse_private_key(&pem, provider)?, pem)));
        let ((certificate, certificate_pem), (private_key, private_key_pem)) =
            both(certificate, private_key)?;
        self.assemble(
            certificate,
            private_key,
            fingerprint(&certificate_pem, &private_key_pem),
        )
    }

    /// Parses the contents of the certificate file (a PEM chain, end-entity certificate
    /// first) and of the key file (PKCS#8, PKCS#1 or SEC1 PEM), and checks that the key
    /// belongs to the certificate. A problem with each file is reported.
    pub fn parse(
        &self,
        certificate_pem: &[u8],
        private_key_pem: &[u8],
        provider: &CryptoProvider,
    ) -> Result<LoadedCertificate, Vec<CertificateError>> {
        let (certificate, private_key) = both(
            self.parse_certificate(certificate_pem),
            self.parse_private_key(private_key_pem, provider),
        )?;
        self.assemble(
            certificate,
            private_key,
            fingerprint(certificate_pem, private_key_pem),
        )
    }

    /// Pairs a parsed chain with its key, checking that they belong together.
    fn assemble(
        &self,
        (chain, names, not_after): (Vec<CertificateDer<'static>>, Vec<String>, i64),
        signing_key: Arc<dyn SigningKey>,
        fingerprint: u64,
    ) -> Result<LoadedCertificate, Vec<CertificateError>> {
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // A key type whose public half rustls cannot derive: nothing to compare.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(vec![CertificateError::private_key(format!(
                    "private key {} does not match the certificate {}",
                    self.private_key.display(),
                    self.certificate.display()
                ))])
            }
            Err(e) => {
                return Err(vec![CertificateError::certificate(format!(
                    "{}: unusable certificate: {e}",
                    self.certificate.display()
                ))])
            }
        }
        Ok(LoadedCertificate {
            key: Arc::new(certified),
            names,
            not_after,
            fingerprint,
        })
    }

    /// The chain, and the end-entity certificate's DNS names and notAfter.
    fn parse_certificate(
        &self,
        pem: &[u8],
    ) -> Result<(Vec<CertificateDer<'static>>, Vec<String>, i64), CertificateError> {
        let path = self.certificate.display();
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertificateError::certificate(format!("{path} is not valid PEM: {e}")))?;
        let Some(end_entity) = chain.first() else {
            let hint = if contains(pem, b"PRIVATE KEY-----") {
                "it holds a private key; are `certificate` and `private_key` swapped?"
            } else {
                "expected a `-----BEGIN CERTIFICATE-----` block"
            };
            return Err(CertificateError::certificate(format!(
                "{path} contains no certificate ({hint})"
            )));
        };
        let (names, not_after) = describe(end_entity).map_err(|e| {
            CertificateError::certificate(format!(
                "{path}: the first certificate is not valid X.509: {e}"
            ))
        })?;
        Ok((chain, names, not_after))
    }

    fn parse_private_key(
        &self,
        pem: &[u8],
        provider: &CryptoProvider,
    ) -> Result<Arc<dyn SigningKey>, CertificateError> {
        let path = self.private_key.display();
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            pem::Error::NoItemsFound => {
                let hint = if contains(pem, b"CERTIFICATE-----") {
                    "it holds a certificate; are `certificate` and `private_key` swapped?"
                } else {
                    "expected a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block"
                };
                CertificateError::private_key(format!("{path} contains no private key ({hint})"))
            }
            e => CertificateError::private_key(format!("{path} is not valid PEM: {e}")),
        })?;
        provider.key_provider.load_private_key(key).map_err(|e| {
            CertificateError::private_key(format!("{path}: unsupported private key: {e}"))
        })
    }
}

/// Both values, or every error of the two.
fn both<A, B>(
    a: Result<A, CertificateError>,
    b: Result<B, CertificateError>,
) -> Result<(A, B), Vec<CertificateError>> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(a.err().into_iter().chain(b.err()).collect()),
    }
}

/// The messages of `errors`, for one log line.
pub fn join_errors(errors: &[CertificateError]) -> String {
    errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A fingerprint of a certificate file's and a key file's contents, to notice changes
/// (not a security measure: the files are trusted).
pub fn fingerprint(certificate: &[u8], private_key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    certificate.hash(&mut hasher);
    private_key.hash(&mut hasher);
    hasher.finish()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The DNS names (subjectAltName) and notAfter of a certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, certificate) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let names = match certificate
        .subject_alternative_name()
        .map_err(|e| e.to_string())?
    {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    Some(dns.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    Ok((names, certificate.validity().not_after.timestamp()))
}

/// Whether a certificate with these DNS names is valid for `host`, as a client would
/// check it: exact names, and a `*.` name for exactly one more label.
pub fn covers(names: &[String], host: &HostPattern) -> bool {
    match host {
        HostPattern::Exact(host) => names.iter().any(|name| {
            name == host
                || name.strip_prefix("*.").is_some_and(|suffix| {
                    host.split_once('.')
                        .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
                })
        }),
        HostPattern::Wildcard(suffix) => names
            .iter()
            .any(|name| name.strip_prefix("*.") == Some(suffix.as_str())),
    }
}

/// Reads the CA certificates of `client_ca` and builds the verifier for client
/// certificates.
pub fn client_verifier(
    path: &Path,
    mode: ClientAuthMode,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let shown = path.display();
    let (roots, _) = read_ca_roots(path)?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| format!("{shown}: cannot verify client certificates with it: {e}"))
}

/// Reads the CA certificates of `path` into a root store (for verifying clients or
/// upstreams); also returns the file's bytes. Errors name the file and what is wrong.
pub(crate) fn read_ca_roots(path: &Path) -> Result<(RootCertStore, Vec<u8>), String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown} is not valid PEM: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "{shown} contains no certificate (expected one or more `-----BEGIN CERTIFICATE-----` blocks)"
        ));
    }
    let mut roots = RootCertStore::empty();
    for (i, certificate) in certificates.into_iter().enumerate() {
        roots.add(certificate).map_err(|e| {
            format!(
                "{shown}: certificate {} is not a usable CA certificate: {e}",
                i + 1
            )
        })?;
    }
    Ok((roots, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn host(text: &str) -> HostPattern {
        HostPattern::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn coverage_follows_client_rules() {
        let wildcard = names(&["*.example.com", "example.com"]);
        assert!(covers(&wildcard, &host("api.example.com")));
        assert!(covers(&wildcard, &host("example.com")));
        assert!(covers(&wildcard, &host("*.example.com")));
        assert!(!covers(&wildcard, &host("a.b.example.com")));
        assert!(!covers(&wildcard, &host("api.example.org")));
        let exact = names(&["api.example.com"]);
        assert!(covers(&exact, &host("API.example.com")));
        assert!(!covers(&exact, &host("*.example.com")));
        assert!(!covers(&[], &host("api.example.com")));
    }
}
