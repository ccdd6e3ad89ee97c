//! A test certificate authority (rcgen): certificates for backends, listeners and
//! clients, written to a temporary directory for configurations to name, and rustls
//! server configurations that present them. The client side is in [`super::tls`].

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// A CA and the directory its files go to.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate issued by a [`Pki`], with its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Issued {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The key again, to issue a renewed certificate for it.
    pub fn key_pair(&self) -> KeyPair {
        KeyPair::from_pem(&self.key_pem).expect("the key parses")
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            ca,
            ca_key,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), valid until 2040-01-01.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names[0], names, (2040, 1, 1), None)
    }

    /// A certificate for `names`, with `common_name` as subject, valid until `not_after`
    /// (year, month, day), for `key` (a new one when `None`).
    pub fn issue_with(
        &self,
        common_name: &str,
        names: &[&str],
        not_after: (i32, u8, u8),
        key: Option<KeyPair>,
    ) -> Issued {
        let key = key.unwrap_or_else(|| KeyPair::generate().expect("key"));
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("signs");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the CA certificate as `ca.pem`.
    pub fn write_ca(&self) -> PathBuf {
        let path = self.path("ca.pem");
        std::fs::write(&path, self.ca.pem()).expect("writes CA");
        path
    }

    /// Writes `issued` as `<stem>.pem` and `<stem>.key`.
    pub fn write(&self, stem: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let cert = self.path(&format!("{stem}.pem"));
        let key = self.path(&format!("{stem}.key"));
        std::fs::write(&cert, &issued.cert_pem).expect("writes certificate");
        std::fs::write(&key, &issued.key_pem).expect("writes key");
        (cert, key)
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("trust anchor");
        roots
    }

    /// A server configuration presenting a certificate for `names`, offering `alpn`,
    /// and requiring client certificates from this CA when `client_auth`.
    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]], client_auth: bool) -> ServerConfig {
        let issued = self.issue(names);
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if client_auth {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), provider())
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(vec![issued.der.clone()], issued.key())
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

/// A YAML double-quoted string of a path.
pub fn quoted(path: &std::path::Path) -> String {
    format!("{:?}", path.display().to_string())
}
