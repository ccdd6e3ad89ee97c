//! An upstream's TLS client settings (`upstreams.NAME.tls`), read and checked when the
//! configuration loads: the roots that endpoint certificates must chain to (the built-in
//! web PKI roots, or the `ca` file), the server name to send and verify, and an optional
//! client certificate. They are built here into the rustls client configuration that
//! the upstream's pool (`crate::upstream`) connects with.
//!
//! Every problem names the file and what is wrong with it; the config compiler adds the
//! key path and its line and column.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::certificates::{self, CertificateFile, CertificateFiles};

/// How the gateway connects to an upstream's `https://` endpoints.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The `ca` file, resolved; the web PKI roots when `None`.
    pub ca: Option<PathBuf>,
    /// Sent (SNI) and verified instead of each endpoint's host.
    pub server_name: Option<ServerName<'static>>,
    /// Accept any certificate: for tests and trusted networks only.
    pub insecure_skip_verify: bool,
    pub client_certificate: Option<CertificateFiles>,
    /// Of the files' contents: a reload with changed files builds new connections.
    pub fingerprint: u64,
    /// Built from the settings above, without ALPN (the upstream's `protocol` adds it).
    pub client_config: Arc<ClientConfig>,
}

/// Settings are equal when they are written the same and the files hold the same bytes.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
            && self.server_name == other.server_name
            && self.insecure_skip_verify == other.insecure_skip_verify
            && self.client_certificate == other.client_certificate
            && self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTls {}

/// An upstream's `tls` mapping as written: paths relative to the config file.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsFiles {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
}

/// A problem with one key of the `tls` mapping.
#[derive(Debug)]
pub struct UpstreamTlsError {
    /// `ca`, `server_name`, `certificate`, `private_key` or `insecure_skip_verify`.
    pub field: &'static str,
    pub message: String,
}

fn problem(field: &'static str, message: impl Into<String>) -> UpstreamTlsError {
    UpstreamTlsError {
        field,
        message: message.into(),
    }
}

impl UpstreamTls {
    /// Reads the files `raw` names (relative to `base`) and builds the client
    /// configuration. Every problem found is reported, not only the first.
    pub fn load(raw: &UpstreamTlsFiles, base: &Path) -> Result<UpstreamTls, Vec<UpstreamTlsError>> {
        let provider = super::crypto_provider();
        let mut errors = Vec::new();
        let mut fingerprint_parts: Vec<Vec<u8>> = Vec::new();

        if raw.insecure_skip_verify && raw.ca.is_some() {
            errors.push(problem(
                "insecure_skip_verify",
                "give either `ca` or `insecure_skip_verify: true`, not both",
            ));
        }
        let ca = raw.ca.as_ref().map(|path| base.join(path));
        let roots = match &ca {
            None => Some(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
            Some(path) => match certificates::read_ca_roots(path) {
                Ok((roots, pem)) => {
                    fingerprint_parts.push(pem);
                    Some(roots)
                }
                Err(message) => {
                    errors.push(problem("ca", message));
                    None
                }
            },
        };

        let server_name = raw.server_name.as_ref().and_then(|name| {
            ServerName::try_from(name.clone())
                .map_err(|_| {
                    errors.push(problem(
                        "server_name",
                        format!("{name:?} is not a valid DNS name or IP address"),
                    ))
                })
                .ok()
        });

        let client_certificate = match (&raw.certificate, &raw.private_key) {
            (None, None) => None,
            (Some(certificate), Some(private_key)) => Some(CertificateFiles {
                certificate: base.join(certificate),
                private_key: base.join(private_key),
            }),
            (Some(_), None) => {
                errors.push(problem("certificate", "needs `private_key` beside it"));
                None
            }
            (None, Some(_)) => {
                errors.push(problem("private_key", "needs `certificate` beside it"));
                None
            }
        };
        let client_key =
            client_certificate
                .as_ref()
                .and_then(|files| match files.load(&provider) {
                    Ok(loaded) => {
                        fingerprint_parts.push(loaded.fingerprint.to_le_bytes().to_vec());
                        Some(loaded.key)
                    }
                    Err(problems) => {
                        for error in problems {
                            let field = match error.file {
                                CertificateFile::Certificate => "certificate",
                                CertificateFile::PrivateKey => "private_key",
                            };
                            errors.push(problem(field, error.message));
                        }
                        None
                    }
                });

        let Some(roots) = roots.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| vec![problem("ca", format!("cannot configure TLS: {e}"))])?;
        let builder = if raw.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        } else {
            builder.with_root_certificates(roots)
        };
        let client_config = match client_key {
            Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCertificate(key))),
            None => builder.with_no_client_auth(),
        };
        Ok(UpstreamTls {
            ca,
            server_name,
            insecure_skip_verify: raw.insecure_skip_verify,
            client_certificate,
            fingerprint: certificates::fingerprint(&fingerprint_parts.concat(), &[]),
            client_config: Arc::new(client_config),
        })
    }
}

/// Presents the one configured client certificate to every upstream that asks.
#[derive(Debug)]
struct ClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `insecure_skip_verify: true`: any certificate is accepted (the handshake's signatures
/// are still checked, so the connection is encrypted, but not authenticated).
/// Used for upstreams with that setting, and by tests that look at whichever
/// certificate a server sends.
#[derive(Debug)]
pub struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl AcceptAnyCertificate {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        AcceptAnyCertificate(provider)
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why an upstream's certificate failed verification, in words, when `error` (from a
/// TLS client handshake, anywhere in its source chain, or wrapped in an
/// [`std::io::Error`] as tokio-rustls and hyper-rustls wrap it) says it did; `None` for
/// any other handshake failure.
pub fn verify_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(rustls::Error::InvalidCertificate(certificate)) =
            error.downcast_ref::<rustls::Error>()
        {
            return Some(explain(certificate));
        }
        // An `io::Error`'s `source` skips the error it wraps: look inside it instead
        // (hyper-util's client wraps one `io::Error` in another).
        current = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

/// What to do about the certificate failures a new setup meets first (a CA served as
/// the endpoint's own, an unknown CA, a name mismatch, expiry); `None` for the others.
fn advice(certificate: &rustls::CertificateError) -> Option<&'static str> {
    use rustls::CertificateError;
    Some(match certificate {
        // webpki's CaUsedAsEndEntity reaches rustls as an `Other` error.
        CertificateError::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the endpoint presents a CA certificate (basicConstraints CA:TRUE) as its own, \
             which verification refuses: give the endpoint a leaf certificate signed by \
             that CA, and name the CA in `tls.ca` (docs/tls.md, \"A certificate that verifies\")"
        }
        CertificateError::UnknownIssuer => {
            "the endpoint's certificate does not chain to a trusted CA: name the CA that \
             signed it in the upstream's `tls.ca`"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the endpoint's certificate is not valid for the name the gateway checks (the \
             endpoint's host, or `tls.server_name`): set `tls.server_name` to a name the \
             certificate lists"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the endpoint's certificate has expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the endpoint's certificate is not valid yet (check the clocks)"
        }
        _ => return None,
    })
}

/// A certificate failure in words: the advice for it when there is one, then what
/// rustls calls it.
fn explain(certificate: &rustls::CertificateError) -> String {
    let words = describe_certificate_error(certificate);
    match advice(certificate) {
        Some(advice) => format!("{advice} ({words})"),
        None => words,
    }
}

/// A certificate error in words, with rustls's name for it in parentheses.
pub fn describe_certificate_error(error: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    let words = match error {
        E::UnknownIssuer => "certificate is not issued by a trusted CA",
        E::BadSignature => "certificate is not correctly signed by its issuer",
        E::BadEncoding => "certificate is not correctly encoded",
        E::Expired | E::ExpiredContext { .. } => "certificate has expired",
        E::NotValidYet | E::NotValidYetContext { .. } => "certificate is not valid yet",
        E::Revoked => "certificate has been revoked",
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "certificate is not valid for the server name"
        }
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
            "certificate may not be used for a TLS server"
        }
        E::UnhandledCriticalExtension => "certificate has an unknown critical extension",
        E::Other(other) => {
            let name = other.to_string();
            let words = match name.as_str() {
                "CaUsedAsEndEntity" => {
                    "certificate is a CA certificate used as a server certificate"
                }
                "EndEntityUsedAsCa" => "a server certificate is used as a CA certificate",
                "PathLenConstraintViolated" => "certificate chain is longer than a CA allows",
                _ => "certificate failed verification",
            };
            return format!("{words} ({name})");
        }
        _ => "certificate failed verification",
    };
    format!("{words} ({error})")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// webpki's error, as rustls passes it on: its name is its `Display`.
    #[derive(Debug)]
    struct Named(&'static str);

    impl std::fmt::Display for Named {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Named {}

    #[test]
    fn a_failed_verification_is_found_inside_nested_io_errors_and_said_in_words() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let outer = std::io::Error::other(inner);
        let words = verify_failure(&outer).expect("a verification failure");
        assert!(
            words.contains("does not chain to a trusted CA")
                && words.contains("certificate is not issued by a trusted CA (UnknownIssuer)"),
            "{words}"
        );
        let other = rustls::Error::General("handshake failed".into());
        assert_eq!(verify_failure(&std::io::Error::other(other)), None);
    }

    #[test]
    fn webpki_s_own_errors_are_said_in_words_too() {
        let error = rustls::CertificateError::Other(rustls::OtherError(Arc::new(Named(
            "CaUsedAsEndEntity",
        ))));
        assert_eq!(
            describe_certificate_error(&error),
            "certificate is a CA certificate used as a server certificate (CaUsedAsEndEntity)"
        );
    }
}
