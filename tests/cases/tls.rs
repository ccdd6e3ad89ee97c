//! Downstream TLS: HTTPS end to end with a real rustls client, certificates chosen by SNI,
//! HTTP/2 by ALPN (and h2c on plain listeners), handshake failures counted without
//! disturbing the listener, client certificates, certificate reload, the redirect to
//! HTTPS, and certificate problems reported as configuration errors.
//!
//! Certificates are generated per test with rcgen into a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::{Config, RunningGateway};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::{
    gateway, gateway_in_front_of, metric, metrics_text, within, Backend, Client, Reply,
};

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

// ---------------------------------------------------------------------------------------
// Certificates

/// A test CA and the directory its certificates are written to.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate issued by a [`Pki`], with its key.
struct Issued {
    cert_pem: String,
    key: KeyPair,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
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

    /// A certificate for `names`, with `common_name` as subject, valid until `not_after`
    /// (year, month, day), signed with `key` (a new one when `None`).
    fn issue_with(
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
            der: cert.der().clone(),
            key,
        }
    }

    fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names[0], names, (2040, 1, 1), None)
    }

    /// Writes `issued` as `<stem>.pem` and `<stem>.key`; returns both paths.
    fn write(&self, stem: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let cert = self.path(&format!("{stem}.pem"));
        let key = self.path(&format!("{stem}.key"));
        std::fs::write(&cert, &issued.cert_pem).expect("writes certificate");
        std::fs::write(&key, issued.key.serialize_pem()).expect("writes key");
        (cert, key)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_ca(&self) -> PathBuf {
        let path = self.path("ca.pem");
        std::fs::write(&path, self.ca.pem()).expect("writes CA");
        path
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.der().clone())
            .expect("CA is a trust anchor");
        roots
    }
}

/// Replaces a file's contents in one step, as a deployment tool should.
fn replace_file(path: &Path, contents: &str) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, contents).expect("writes");
    std::fs::rename(&staging, path).expect("renames");
}

/// A YAML double-quoted string.
fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

// ---------------------------------------------------------------------------------------
// Client

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Accepts any server certificate: for looking at which certificate a server sends
/// when no name would verify (no SNI, an unknown name).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

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

fn accept_any_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
        .with_no_client_auth()
}

async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).expect("valid server name");
    within(
        "the TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
}

/// The DNS names and common name of the certificate the server sent.
fn served_certificate(stream: &TlsStream<TcpStream>) -> (Vec<String>, String) {
    let (_, connection) = stream.get_ref();
    let der = &connection.peer_certificates().expect("server certificate")[0];
    let (_, certificate) = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509");
    let names = certificate
        .subject_alternative_name()
        .expect("valid extensions")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    (names, common_name)
}

/// One GET over HTTP/1.1 on `stream`: the response's version, status, body and the
/// headers a test looks at.
async fn get_http1<S>(stream: S, host: &str, path: &str) -> (Version, StatusCode, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .expect("request");
    finish(sender.send_request(request)).await
}

/// One GET over HTTP/2 on `stream` (`scheme` `https` over TLS, `http` for h2c).
async fn get_http2<S>(
    stream: S,
    scheme: &str,
    host: &str,
    path: &str,
) -> (Version, StatusCode, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = Request::get(format!("{scheme}://{host}{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    finish(sender.send_request(request)).await
}

async fn finish(
    response: impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
) -> (Version, StatusCode, String) {
    let response = within("the response", response)
        .await
        .expect("the gateway answers");
    let (version, status) = (response.version(), response.status());
    let body = within("the body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    (version, status, String::from_utf8_lossy(&body).into_owned())
}

// ---------------------------------------------------------------------------------------
// Gateway

/// A backend that answers with the HTTP version it received.
async fn version_backend() -> Backend {
    Backend::start(|request, _| async move { Reply::ok(format!("{:?}", request.version())) }).await
}

/// A gateway whose listener `public` has `tls` (a YAML flow mapping) in front of `backend`.
async fn tls_gateway(tls: &str, backend: &Backend) -> RunningGateway {
    gateway(&format!(
        r#"
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: {tls}
admin: {{ address: "127.0.0.1:0" }}
upstreams:
  app: {{ endpoints: ["{url}"] }}
routes:
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#,
        url = backend.url()
    ))
    .await
}

fn single(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "{{ certificate: {}, private_key: {}{extra} }}",
        quoted(cert),
        quoted(key)
    )
}

fn public(gw: &RunningGateway) -> SocketAddr {
    gw.listener_addr("public").expect("listener `public`")
}

/// Waits until the metric `series` has `value`.
async fn metric_reaches(gw: &RunningGateway, series: &str, value: f64) {
    within(&format!("{series} reaches {value}"), async {
        loop {
            if metric(&metrics_text(gw).await, series) == Some(value) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn failures(reason: &str) -> String {
    format!("portcullis_tls_handshake_failures_total{{listener=\"public\",reason=\"{reason}\"}}")
}

// ---------------------------------------------------------------------------------------
// Serving

#[tokio::test]
async fn https_request_reaches_an_http1_backend_with_forwarded_proto_https() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(&single(&cert, &key, ""), &backend).await;

    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[b"http/1.1"]),
    )
    .await
    .expect("the client trusts the gateway's certificate");
    let (version, status, body) = get_http1(stream, "api.example.com", "/orders/7").await;
    assert_eq!((version, status), (Version::HTTP_11, StatusCode::OK));
    let echoed: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    assert_eq!(echoed["uri"], "/orders/7");
    let seen = backend.state.last_seen();
    assert_eq!(
        seen.headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("https")
    );
    assert_eq!(
        seen.headers
            .get("x-forwarded-host")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("api.example.com")
    );
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            "portcullis_tls_handshakes_total{alpn=\"http/1.1\",listener=\"public\",version=\"1.3\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn http2_over_tls_is_negotiated_by_alpn_and_reaches_an_http1_backend() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = version_backend().await;
    let gw = tls_gateway(&single(&cert, &key, ""), &backend).await;

    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[b"h2", b"http/1.1"]),
    )
    .await
    .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, status, body) = get_http2(stream, "https", "api.example.com", "/x").await;
    assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));
    assert_eq!(body, "HTTP/1.1", "the upstream side stays HTTP/1.1");
    assert_eq!(
        backend
            .state
            .last_seen()
            .headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("https")
    );
}

#[tokio::test]
async fn the_active_gauge_counts_open_tls_connections_by_version_and_alpn() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = version_backend().await;
    let gw = tls_gateway(&single(&cert, &key, ""), &backend).await;
    let h2 = "portcullis_tls_connections_active{alpn=\"h2\",listener=\"public\",version=\"1.3\"}";
    let tls12 =
        "portcullis_tls_connections_active{alpn=\"http/1.1\",listener=\"public\",version=\"1.2\"}";

    let first = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[b"h2"]),
    )
    .await
    .expect("handshake");
    let tls12_only = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    let mut tls12_config = tls12_only;
    tls12_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let second = connect(public(&gw), "api.example.com", tls12_config)
        .await
        .expect("TLS 1.2 is accepted");
    assert_eq!(
        second.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    metric_reaches(&gw, h2, 1.0).await;
    metric_reaches(&gw, tls12, 1.0).await;

    let (version, _, _) = get_http1(second, "api.example.com", "/").await;
    assert_eq!(version, Version::HTTP_11);
    drop(first);
    metric_reaches(&gw, h2, 0.0).await;
}

/// Writes its first `first` bytes alone, then the rest once `pause` has passed: the
/// gateway may see a prefix of the HTTP/2 preface before the rest of it.
struct SplitFirstWrite {
    inner: TcpStream,
    first: usize,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio::io::AsyncRead for SplitFirstWrite {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SplitFirstWrite {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.first > 0 {
            let n = buf.len().min(self.first);
            let written =
                std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_write(cx, &buf[..n]))?;
            self.first -= written;
            if self.first == 0 {
                self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
            }
            return std::task::Poll::Ready(Ok(written));
        }
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(std::future::Future::poll(pause.as_mut(), cx));
            self.pause = None;
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn h2c_is_served_when_the_preface_arrives_in_pieces() {
    let backend = version_backend().await;
    let gw = gateway_in_front_of(&backend.url()).await;
    let tcp = TcpStream::connect(public(&gw)).await.expect("connects");
    let split = SplitFirstWrite {
        inner: tcp,
        first: 10,
        pause: None,
    };
    let (version, status, body) = get_http2(split, "http", "example.com", "/x").await;
    assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));
    assert_eq!(body, "HTTP/1.1");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_on_a_plain_listener() {
    let backend = version_backend().await;
    let gw = gateway_in_front_of(&backend.url()).await;
    let tcp = TcpStream::connect(public(&gw)).await.expect("connects");
    let (version, status, body) = get_http2(tcp, "http", "example.com", "/x").await;
    assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));
    assert_eq!(body, "HTTP/1.1");
    assert_eq!(
        backend
            .state
            .last_seen()
            .headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("http")
    );
}

// ---------------------------------------------------------------------------------------
// Certificate choice

#[tokio::test]
async fn sni_picks_the_certificate_for_the_requested_host() {
    let pki = Pki::new("Test CA");
    let (api_cert, api_key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let (wild_cert, wild_key) = pki.write("wild", &pki.issue(&["*.example.com"]));
    let (shop_cert, shop_key) = pki.write("shop", &pki.issue(&["shop.example.org"]));
    let backend = Backend::echo().await;
    let tls = format!(
        r#"{{ certificates: [
            {{ hosts: [api.example.com], certificate: {}, private_key: {} }},
            {{ hosts: ["*.example.com"], certificate: {}, private_key: {} }},
            {{ hosts: [shop.example.org], certificate: {}, private_key: {} }} ],
          default: shop.example.org }}"#,
        quoted(&api_cert),
        quoted(&api_key),
        quoted(&wild_cert),
        quoted(&wild_key),
        quoted(&shop_cert),
        quoted(&shop_key),
    );
    let gw = tls_gateway(&tls, &backend).await;
    let addr = public(&gw);

    for (server_name, expected) in [
        ("api.example.com", "api.example.com"),
        ("www.example.com", "*.example.com"),
        ("shop.example.org", "shop.example.org"),
    ] {
        let stream = connect(addr, server_name, client_config(pki.roots(), &[]))
            .await
            .unwrap_or_else(|e| panic!("{server_name}: {e}"));
        assert_eq!(
            served_certificate(&stream).0,
            vec![expected.to_owned()],
            "{server_name}"
        );
        let (_, status, _) = get_http1(stream, server_name, "/").await;
        assert_eq!(status, StatusCode::OK);
    }

    // A name no certificate lists, and no name at all (rustls sends no SNI for an IP
    // address), get the default certificate.
    for server_name in ["unknown.test", "127.0.0.1", "a.b.example.com"] {
        let stream = connect(addr, server_name, accept_any_config())
            .await
            .unwrap_or_else(|e| panic!("{server_name}: {e}"));
        assert_eq!(
            served_certificate(&stream).0,
            vec!["shop.example.org".to_owned()],
            "{server_name}"
        );
    }
}

#[tokio::test]
async fn certificate_expiry_is_exported_per_host() {
    let pki = Pki::new("Test CA");
    let (api_cert, api_key) = pki.write(
        "api",
        &pki.issue_with("api", &["api.example.com"], (2031, 5, 17), None),
    );
    let (wild_cert, wild_key) = pki.write(
        "wild",
        &pki.issue_with("wild", &["*.example.com"], (2032, 1, 1), None),
    );
    let backend = Backend::echo().await;
    let tls = format!(
        r#"{{ certificates: [
            {{ hosts: [api.example.com], certificate: {}, private_key: {} }},
            {{ hosts: ["*.example.com"], certificate: {}, private_key: {} }} ] }}"#,
        quoted(&api_cert),
        quoted(&api_key),
        quoted(&wild_cert),
        quoted(&wild_key),
    );
    let gw = tls_gateway(&tls, &backend).await;
    let text = metrics_text(&gw).await;
    let expiry = |host: &str| {
        metric(
            &text,
            &format!("portcullis_tls_certificate_expiry_timestamp_seconds{{host=\"{host}\",listener=\"public\"}}"),
        )
    };
    assert_eq!(
        expiry("api.example.com"),
        Some(rcgen::date_time_ymd(2031, 5, 17).unix_timestamp() as f64)
    );
    assert_eq!(
        expiry("*.example.com"),
        Some(rcgen::date_time_ymd(2032, 1, 1).unix_timestamp() as f64)
    );
}

// ---------------------------------------------------------------------------------------
// Failed handshakes

#[tokio::test]
async fn plain_http_on_the_tls_port_is_a_counted_failure_and_the_listener_goes_on() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(&single(&cert, &key, ""), &backend).await;

    let answer = crate::support::client::raw_exchange(
        public(&gw),
        b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
        "\u{0}never",
    )
    .await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
    metric_reaches(&gw, &failures("not_tls"), 1.0).await;

    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[]),
    )
    .await
    .expect("the listener still serves TLS");
    let (_, status, _) = get_http1(stream, "api.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_counted() {
    let pki = Pki::new("Test CA");
    let stranger = Pki::new("Another CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(&single(&cert, &key, ""), &backend).await;

    let refused = connect(
        public(&gw),
        "api.example.com",
        client_config(stranger.roots(), &[]),
    )
    .await;
    assert!(refused.is_err(), "the client must refuse an unknown issuer");
    metric_reaches(&gw, &failures("certificate_rejected"), 1.0).await;

    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[]),
    )
    .await
    .expect("a trusting client still gets in");
    let (_, status, _) = get_http1(stream, "api.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(backend.state.arrived(), 1);
}

#[tokio::test]
async fn silent_clients_do_not_hold_up_other_handshakes() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(&single(&cert, &key, ", handshake_timeout: 1h"), &backend).await;
    // Connections that never send a ClientHello, accepted before the real client.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(public(&gw)).await.expect("connects"));
    }
    let stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[]),
    )
    .await
    .expect("handshake while others stall");
    let (_, status, _) = get_http1(stream, "api.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);
    metric_reaches(
        &gw,
        "portcullis_connections_active{listener=\"public\"}",
        8.0,
    )
    .await;
}

#[tokio::test]
async fn a_handshake_that_does_not_finish_in_time_is_closed_and_counted() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = tls_gateway(&single(&cert, &key, ", handshake_timeout: 50ms"), &backend).await;
    let mut silent = TcpStream::connect(public(&gw)).await.expect("connects");
    let mut buffer = [0u8; 64];
    let read = within(
        "the gateway closes the silent connection",
        silent.read(&mut buffer),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    metric_reaches(&gw, &failures("timeout"), 1.0).await;
}

#[tokio::test]
async fn a_client_that_sends_nothing_after_the_handshake_is_closed_after_the_idle_timeout() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let backend = Backend::echo().await;
    let gw = gateway(&format!(
        r#"
listeners:
  - {{ name: public, address: "127.0.0.1:0", idle_timeout: 100ms, tls: {tls} }}
upstreams:
  app: {{ endpoints: ["{url}"] }}
routes:
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#,
        tls = single(&cert, &key, ""),
        url = backend.url()
    ))
    .await;
    let mut stream = connect(
        public(&gw),
        "api.example.com",
        client_config(pki.roots(), &[]),
    )
    .await
    .expect("handshake");
    let mut buffer = [0u8; 64];
    let read = within(
        "the gateway closes the idle TLS connection",
        stream.read(&mut buffer),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

// ---------------------------------------------------------------------------------------
// Client certificates (mTLS)

fn client_with_certificate(pki: &Pki, issued: &Issued) -> ClientConfig {
    let key = PrivateKeyDer::try_from(issued.key.serialize_der()).expect("key DER");
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(pki.roots())
        .with_client_auth_cert(vec![issued.der.clone()], key)
        .expect("client certificate")
}

/// Sends one request; `None` when the connection fails at any point (with TLS 1.3 a
/// refused client certificate shows only after the client's handshake completed).
async fn try_get(addr: SocketAddr, config: ClientConfig) -> Option<StatusCode> {
    let stream = connect(addr, "api.example.com", config).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get("/")
        .header(http::header::HOST, "api.example.com")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = within("an answer or an error", sender.send_request(request))
        .await
        .ok()?;
    Some(response.status())
}

#[tokio::test]
async fn client_certificates_are_required_and_checked_when_client_ca_is_set() {
    let pki = Pki::new("Test CA");
    let clients = Pki::new("Client CA");
    let strangers = Pki::new("Stranger CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let client_ca = clients.write_ca();
    let backend = Backend::echo().await;
    let gw = tls_gateway(
        &single(
            &cert,
            &key,
            &format!(", client_ca: {}, client_auth: required", quoted(&client_ca)),
        ),
        &backend,
    )
    .await;
    let addr = public(&gw);

    let trusted = clients.issue(&["client-1"]);
    assert_eq!(
        try_get(addr, client_with_certificate(&pki, &trusted)).await,
        Some(StatusCode::OK)
    );
    assert_eq!(
        try_get(addr, client_config(pki.roots(), &[])).await,
        None,
        "no client certificate"
    );
    metric_reaches(&gw, &failures("client_certificate"), 1.0).await;
    let untrusted = strangers.issue(&["client-2"]);
    assert_eq!(
        try_get(addr, client_with_certificate(&pki, &untrusted)).await,
        None,
        "a client certificate from another CA"
    );
    metric_reaches(&gw, &failures("client_certificate"), 2.0).await;
    assert_eq!(backend.state.arrived(), 1);
    crate::cases::metrics::promtool_accepts(&metrics_text(&gw).await);
}

#[tokio::test]
async fn optional_client_certificates_let_clients_without_one_in() {
    let pki = Pki::new("Test CA");
    let clients = Pki::new("Client CA");
    let strangers = Pki::new("Stranger CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let client_ca = clients.write_ca();
    let backend = Backend::echo().await;
    let gw = tls_gateway(
        &single(
            &cert,
            &key,
            &format!(", client_ca: {}, client_auth: optional", quoted(&client_ca)),
        ),
        &backend,
    )
    .await;
    let addr = public(&gw);
    assert_eq!(
        try_get(addr, client_config(pki.roots(), &[])).await,
        Some(StatusCode::OK)
    );
    let trusted = clients.issue(&["client-1"]);
    assert_eq!(
        try_get(addr, client_with_certificate(&pki, &trusted)).await,
        Some(StatusCode::OK)
    );
    let untrusted = strangers.issue(&["client-2"]);
    assert_eq!(
        try_get(addr, client_with_certificate(&pki, &untrusted)).await,
        None,
        "a certificate that is presented must verify"
    );
}

// ---------------------------------------------------------------------------------------
// Reload

#[tokio::test]
async fn changed_certificate_files_are_reloaded_and_bad_ones_rejected() {
    let pki = Pki::new("Test CA");
    let first = pki.issue_with("first", &["api.example.com"], (2031, 1, 1), None);
    let (cert, key) = pki.write("api", &first);
    let backend = Backend::echo().await;
    let tls = format!(
        "{{ certificates: [{{ hosts: [api.example.com], certificate: {}, private_key: {} }}], reload_interval: 20ms }}",
        quoted(&cert),
        quoted(&key)
    );
    let gw = tls_gateway(&tls, &backend).await;
    let addr = public(&gw);
    let served = || async {
        let stream = connect(addr, "api.example.com", client_config(pki.roots(), &[]))
            .await
            .expect("handshake");
        served_certificate(&stream).1
    };
    assert_eq!(served().await, "first");
    // A connection opened before the reload keeps working on its certificate.
    let before = connect(addr, "api.example.com", client_config(pki.roots(), &[]))
        .await
        .expect("handshake");

    // Renewed with the same key: only the certificate file changes, in one step.
    let second = pki.issue_with(
        "second",
        &["api.example.com"],
        (2033, 1, 1),
        Some(first.key),
    );
    replace_file(&cert, &second.cert_pem);
    within("the new certificate is served", async {
        while served().await != "second" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            "portcullis_tls_certificate_reloads_total{listener=\"public\",outcome=\"loaded\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "portcullis_tls_certificate_expiry_timestamp_seconds{host=\"api.example.com\",listener=\"public\"}"
        ),
        Some(rcgen::date_time_ymd(2033, 1, 1).unix_timestamp() as f64)
    );
    let (_, status, _) = get_http1(before, "api.example.com", "/").await;
    assert_eq!(status, StatusCode::OK);

    // A broken file is rejected; the last good certificate keeps serving.
    replace_file(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    metric_reaches(
        &gw,
        "portcullis_tls_certificate_reloads_total{listener=\"public\",outcome=\"rejected\"}",
        1.0,
    )
    .await;
    assert_eq!(served().await, "second");
    // A certificate that no longer covers the listed host is rejected too: clients
    // asking for that name would refuse it.
    let same_key =
        KeyPair::from_pem(&std::fs::read_to_string(&key).expect("reads key")).expect("parses key");
    let other = pki.issue_with(
        "other",
        &["other.example.com"],
        (2034, 1, 1),
        Some(same_key),
    );
    replace_file(&cert, &other.cert_pem);
    metric_reaches(
        &gw,
        "portcullis_tls_certificate_reloads_total{listener=\"public\",outcome=\"rejected\"}",
        2.0,
    )
    .await;
    assert_eq!(served().await, "second");
    crate::cases::metrics::promtool_accepts(&metrics_text(&gw).await);
}

#[tokio::test]
async fn a_config_reload_is_not_a_listener_change_when_only_certificate_files_changed() {
    let pki = Pki::new("Test CA");
    let first = pki.issue_with("first", &["api.example.com"], (2031, 1, 1), None);
    let (cert, _) = pki.write("api", &first);
    let client_ca = pki.write_ca();
    let backend = Backend::echo().await;
    let path = pki.path("gateway.yaml");
    let text = |tls_extra: &str, prefix: &str| {
        format!(
            r#"
listeners:
  - name: public
    address: "127.0.0.1:0"
    tls: {{ certificate: api.pem, private_key: api.key{tls_extra} }}
admin: {{ address: "127.0.0.1:0" }}
reload: {{ watch: false }}
upstreams:
  app: {{ endpoints: ["{url}"] }}
routes:
  - {{ name: app, match: {{ path_prefix: {prefix} }}, upstream: app }}
"#,
            url = backend.url()
        )
    };
    let initial = text("", "/v1");
    replace_file(&path, &initial);
    let config = Config::load(&path).expect("valid config");
    let gw = portcullis::gateway::start_reloadable(
        config,
        path.clone(),
        portcullis::reload::content_hash(&initial),
    )
    .await
    .expect("starts");
    let client = Client::new();
    let reload = || async {
        client
            .send(
                http::Method::POST,
                &format!("http://{}/reload", gw.admin_addr().expect("admin")),
                &[],
                "",
            )
            .await
    };
    let get = |path: &'static str| async {
        let stream = connect(
            public(&gw),
            "api.example.com",
            client_config(pki.roots(), &[]),
        )
        .await
        .expect("handshake");
        get_http1(stream, "api.example.com", path).await.1
    };

    // A renewed certificate and a new route: the listener is unchanged, the reload applies.
    let renewed = pki.issue_with(
        "renewed",
        &["api.example.com"],
        (2033, 1, 1),
        Some(first.key),
    );
    replace_file(&cert, &renewed.cert_pem);
    replace_file(&path, &text("", "/v2"));
    let reply = reload().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(get("/v2/x").await, StatusCode::OK);

    // Changed TLS settings are a listener change: the reload rebuilds the listener
    // (handshakes use the new settings) and serves the new routes.
    for extra in [
        ", handshake_timeout: 5s".to_owned(),
        ", reload_interval: 1m".to_owned(),
        format!(", client_ca: {}, client_auth: optional", quoted(&client_ca)),
    ] {
        replace_file(&path, &text(&extra, "/v3"));
        let reply = reload().await;
        assert_eq!(reply.status, StatusCode::OK, "{extra}: {}", reply.text());
        assert_eq!(get("/v3/x").await, StatusCode::OK, "{extra}");
    }
    replace_file(&path, &text("", "/v2"));
    assert_eq!(reload().await.status, StatusCode::OK);
    assert_eq!(get("/v2/x").await, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Redirect

#[tokio::test]
async fn a_plain_listener_can_redirect_to_https() {
    let backend = Backend::echo().await;
    let gw = gateway(&format!(
        r#"
listeners:
  - {{ name: public, address: "127.0.0.1:0", redirect_to_https: {{ port: 8443 }} }}
  - {{ name: standard, address: "127.0.0.1:0", redirect_to_https: true }}
upstreams:
  app: {{ endpoints: ["{url}"] }}
routes:
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#,
        url = backend.url()
    ))
    .await;
    let client = Client::new();
    let on = |listener: &str, path: &str| {
        format!(
            "http://{}{path}",
            gw.listener_addr(listener).expect("listener")
        )
    };
    let reply = client
        .send(
            http::Method::GET,
            &on("public", "/a/b?c=1"),
            &[("host", "api.example.com:8080")],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.header("location"),
        Some("https://api.example.com:8443/a/b?c=1")
    );
    let reply = client
        .send(
            http::Method::POST,
            &on("standard", "/submit"),
            &[("host", "api.example.com")],
            "x",
        )
        .await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.header("location"),
        Some("https://api.example.com/submit")
    );
    assert_eq!(backend.state.arrived(), 0);
}

// ---------------------------------------------------------------------------------------
// Configuration errors

fn tls_config_text(tls: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:8443\n    tls: {tls}\nupstreams:\n  app: {{ endpoints: [\"http://127.0.0.1:9000\"] }}\nroutes:\n  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}\n"
    )
}

fn config_errors(text: &str) -> String {
    match Config::from_yaml(text, "gw.yaml") {
        Ok(_) => panic!("expected configuration errors for:\n{text}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn certificate_problems_are_config_errors_naming_the_file() {
    let pki = Pki::new("Test CA");
    let (cert, key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let (_, other_key) = pki.write("other", &pki.issue(&["other.example.com"]));
    let missing = pki.path("missing.pem");
    let truncated = pki.path("truncated.pem");
    std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("writes");
    let empty = pki.path("empty.pem");
    std::fs::write(&empty, "nothing to see\n").expect("writes");
    let show = |p: &Path| p.display().to_string();

    let cases = [
        (
            single(&missing, &key, ""),
            format!(
                "gw.yaml:4:25: listeners[0].tls.certificate: cannot read {}: No such file",
                show(&missing)
            ),
        ),
        (
            single(&key, &key, ""),
            format!(
                "listeners[0].tls.certificate: {} contains no certificate (it holds a private key",
                show(&key)
            ),
        ),
        (
            single(&empty, &key, ""),
            format!(
                "listeners[0].tls.certificate: {} contains no certificate",
                show(&empty)
            ),
        ),
        (
            single(&truncated, &key, ""),
            format!(
                "listeners[0].tls.certificate: {} is not valid PEM",
                show(&truncated)
            ),
        ),
        (
            single(&cert, &cert, ""),
            format!(
                "listeners[0].tls.private_key: {} contains no private key (it holds a certificate",
                show(&cert)
            ),
        ),
        (
            single(&cert, &other_key, ""),
            format!(
                "listeners[0].tls.private_key: private key {} does not match the certificate {}",
                show(&other_key),
                show(&cert)
            ),
        ),
        (
            format!(
                "{{ certificates: [{{ hosts: [shop.example.org], certificate: {}, private_key: {} }}] }}",
                quoted(&cert),
                quoted(&key)
            ),
            format!(
                "listeners[0].tls.certificates[0].hosts[0]: certificate {} is not valid for shop.example.org; its names are api.example.com",
                show(&cert)
            ),
        ),
        (
            format!(
                "{{ certificates: [{{ hosts: [], certificate: {}, private_key: {} }}] }}",
                quoted(&cert),
                quoted(&key)
            ),
            "listeners[0].tls.certificates[0].hosts: list the server names".to_owned(),
        ),
        (
            format!(
                "{{ certificates: [{{ hosts: [api.example.com], certificate: {}, private_key: {} }}], default: www.example.com }}",
                quoted(&cert),
                quoted(&key)
            ),
            "listeners[0].tls.default: \"www.example.com\" is not one of the hosts".to_owned(),
        ),
        (
            format!(
                "{{ certificate: {}, private_key: {}, certificates: [] }}",
                quoted(&cert),
                quoted(&key)
            ),
            "listeners[0].tls: give either `certificate` and `private_key`, or `certificates`"
                .to_owned(),
        ),
        (
            format!("{{ certificate: {} }}", quoted(&cert)),
            "listeners[0].tls.certificate: needs `private_key` beside it".to_owned(),
        ),
        (
            single(&cert, &key, ", client_auth: optional"),
            "listeners[0].tls.client_auth: needs `client_ca`".to_owned(),
        ),
        (
            single(&cert, &key, &format!(", client_ca: {}", quoted(&missing))),
            format!(
                "listeners[0].tls.client_ca: cannot read {}",
                show(&missing)
            ),
        ),
        (
            single(&cert, &key, ", handshake_timeout: 0s"),
            "listeners[0].tls.handshake_timeout: must be longer than 0s".to_owned(),
        ),
        (
            single(&cert, &key, ", ciphers: [x]"),
            "unknown field `ciphers`".to_owned(),
        ),
    ];
    for (tls, expected) in cases {
        let errors = config_errors(&tls_config_text(&tls));
        assert!(
            errors.contains(&expected),
            "missing {expected:?} in:\n{errors}"
        );
    }

    // Every problem in one pass: both files of one entry, and other entries.
    let empty_key = pki.path("empty.key");
    std::fs::write(&empty_key, "").expect("writes");
    let errors = config_errors(&tls_config_text(&format!(
        "{{ certificates: [{{ hosts: [a.example.com], certificate: {m}, private_key: {e} }}, {{ hosts: [a.example.com], certificate: {c}, private_key: {m} }}] }}",
        m = quoted(&missing),
        e = quoted(&empty_key),
        c = quoted(&cert),
    )));
    for expected in [
        format!("certificates[0].certificate: cannot read {}", show(&missing)),
        format!(
            "certificates[0].private_key: {} contains no private key",
            show(&empty_key)
        ),
        "certificates[1].hosts[0]: host \"a.example.com\" is already served by listeners[0].tls.certificates[0]".to_owned(),
        format!("certificates[1].private_key: cannot read {}", show(&missing)),
        "4 errors in configuration".to_owned(),
    ] {
        assert!(
            errors.contains(&expected),
            "missing {expected:?} in:\n{errors}"
        );
    }

    let errors = config_errors(&format!(
        "listeners:\n  - {{ name: public, address: 127.0.0.1:8443, redirect_to_https: true, tls: {} }}\n",
        single(&cert, &key, "")
    ));
    assert!(
        errors.contains("listeners[0].redirect_to_https: is for plain HTTP listeners"),
        "{errors}"
    );
}

#[test]
fn check_exits_2_for_a_bad_certificate_and_resolves_relative_paths() {
    let pki = Pki::new("Test CA");
    pki.write("api", &pki.issue(&["api.example.com"]));
    std::fs::write(pki.path("broken.pem"), "not a certificate\n").expect("writes");
    let config = pki.path("gateway.yaml");

    std::fs::write(
        &config,
        tls_config_text("{ certificate: broken.pem, private_key: api.key }"),
    )
    .expect("writes config");
    let output = std::process::Command::new(BINARY)
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "{}:4:25: listeners[0].tls.certificate: {} contains no certificate",
        config.display(),
        pki.path("broken.pem").display()
    );
    assert!(
        stderr.contains(&expected),
        "missing {expected:?} in:\n{stderr}"
    );

    // Relative to the configuration file, not to the working directory.
    std::fs::write(
        &config,
        tls_config_text("{ certificate: api.pem, private_key: api.key }"),
    )
    .expect("writes config");
    let output = std::process::Command::new(BINARY)
        .args(["check", "-c"])
        .arg(&config)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("TLS 1.2/1.3"), "{stdout}");
    assert!(stdout.contains("expires 2040-01-01T00:00:00Z"), "{stdout}");
}
