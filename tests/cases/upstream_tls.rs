//! Upstream TLS: `https://` endpoints verified against a configured CA (a wrong CA is a
//! 502), a fixed server name, client certificates, and TLS problems reported as
//! configuration errors with their location.

use http::StatusCode;
use portcullis::{Config, RunningGateway};

use std::time::Duration;

use crate::support::pki::{quoted, Pki};
use crate::support::{url, Backend, Client, Gateway, Protocol, Reply, Upstream, UpstreamTls};

/// A TLS backend answering with the HTTP version it received.
async fn tls_backend(config: rustls::ServerConfig) -> Backend {
    Backend::start_tls(config, |request, _| async move {
        Reply::ok(format!("{:?}", request.version()))
    })
    .await
}

/// A gateway with one route to the upstream `app` at `endpoint`, with `tls` when given.
fn upstream_config(endpoint: &str, tls: Option<UpstreamTls>) -> Gateway {
    let upstream = Upstream::new(endpoint).connect_timeout(Duration::from_secs(5));
    let upstream = match tls {
        Some(tls) => upstream.tls(tls),
        None => upstream,
    };
    Gateway::new().upstream("app", upstream).route("/", "app")
}

async fn upstream_gateway(endpoint: &str, tls: Option<UpstreamTls>) -> RunningGateway {
    upstream_config(endpoint, tls).start().await
}

/// The same configuration as text, with `extra` (YAML flow mapping entries) on the
/// upstream: the configuration-error tests assert locations in it.
fn upstream_yaml(endpoint: &str, extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
upstreams:
  app: {{ endpoints: ["{endpoint}"], connect_timeout: 5s {extra} }}
routes:
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#
    )
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_configured_ca() {
    let pki = Pki::new("upstream CA");
    let backend = tls_backend(pki.server_config(&["127.0.0.1"], &[], false)).await;
    let ca = pki.write_ca();
    let gw = upstream_gateway(&backend.https_url(), Some(UpstreamTls::ca(&ca))).await;

    let reply = Client::new().get(&url(&gw, "/hello")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "HTTP/1.1");
    assert_eq!(backend.state.last_seen().uri, "/hello");
}

#[tokio::test]
async fn server_name_is_sent_and_verified_instead_of_the_endpoint_host() {
    let pki = Pki::new("upstream CA");
    let backend = tls_backend(pki.server_config(&["backend.internal"], &[], false)).await;
    let ca = pki.write_ca();
    let gw = upstream_gateway(
        &backend.https_url(),
        Some(UpstreamTls::ca(&ca).server_name("backend.internal")),
    )
    .await;
    let reply = Client::new().get(&url(&gw, "/")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // Without the name, the certificate does not match 127.0.0.1.
    let gw = upstream_gateway(&backend.https_url(), Some(UpstreamTls::ca(&ca))).await;
    let reply = Client::new().get(&url(&gw, "/")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_502() {
    let trusted = Pki::new("trusted CA");
    let other = Pki::new("other CA");
    let backend = tls_backend(other.server_config(&["127.0.0.1"], &[], false)).await;
    let ca = trusted.write_ca();
    let gw = upstream_gateway(&backend.https_url(), Some(UpstreamTls::ca(&ca))).await;

    let reply = Client::new().get(&url(&gw, "/")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.json()["error"], "upstream_connect_failed");
    assert_eq!(backend.state.arrived(), 0);

    // The default roots (web PKI) do not trust a private CA either.
    let gw = upstream_gateway(&backend.https_url(), None).await;
    let reply = Client::new().get(&url(&gw, "/")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());

    // insecure_skip_verify accepts it.
    let gw = upstream_gateway(
        &backend.https_url(),
        Some(UpstreamTls::new().insecure_skip_verify()),
    )
    .await;
    let reply = Client::new().get(&url(&gw, "/")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_upstreams_that_require_one() {
    let pki = Pki::new("upstream CA");
    let backend = tls_backend(pki.server_config(&["127.0.0.1"], &[], true)).await;
    let ca = pki.write_ca();
    let (cert, key) = pki.write("gateway", &pki.issue(&["gateway.internal"]));

    let without = upstream_gateway(&backend.https_url(), Some(UpstreamTls::ca(&ca))).await;
    let reply = Client::new().get(&url(&without, "/")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());

    let with = upstream_gateway(
        &backend.https_url(),
        Some(UpstreamTls::ca(&ca).client_certificate(&cert, &key)),
    )
    .await;
    let reply = Client::new().get(&url(&with, "/")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

fn config_errors(text: &str) -> String {
    match Config::from_yaml(text, "/etc/portcullis/gateway.yaml") {
        Ok(_) => panic!("the configuration should be rejected"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn upstream_tls_problems_are_config_errors_with_their_location() {
    let pki = Pki::new("CA");
    let not_pem = pki.path("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").expect("writes");
    let text = upstream_yaml(
        "https://127.0.0.1:8443",
        &format!(
            ", tls: {{ ca: {}, server_name: \"not a name\", certificate: {} }}",
            quoted(&not_pem),
            quoted(&pki.path("missing.pem"))
        ),
    );
    let errors = config_errors(&text);
    assert!(
        errors.contains("upstreams.app.tls.ca") && errors.contains("contains no certificate"),
        "{errors}"
    );
    assert!(
        errors.contains("upstreams.app.tls.server_name") && errors.contains("\"not a name\""),
        "{errors}"
    );
    assert!(
        errors.contains("upstreams.app.tls.certificate")
            && errors.contains("needs `private_key` beside it"),
        "{errors}"
    );
    assert!(errors.contains("gateway.yaml:4:"), "{errors}");

    let errors = config_errors(&upstream_yaml("ftp://127.0.0.1:21", ""));
    assert!(
        errors.contains("needs the http:// or https:// scheme"),
        "{errors}"
    );
}

#[test]
fn relative_upstream_tls_paths_resolve_against_the_config_file() {
    let pki = Pki::new("CA");
    pki.write_ca();
    let file = pki.path("gateway.yaml");
    std::fs::write(
        &file,
        upstream_config("https://127.0.0.1:8443", Some(UpstreamTls::ca("ca.pem"))).yaml(),
    )
    .expect("writes");
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let tls = config.upstreams[0].tls.as_ref().expect("tls");
    assert_eq!(tls.ca.as_deref(), Some(pki.path("ca.pem").as_path()));
    assert_eq!(
        config.upstreams[0].endpoints[0].label,
        "https://127.0.0.1:8443"
    );
}

#[tokio::test]
async fn a_ca_certificate_served_as_the_endpoints_own_is_explained_in_words() {
    // What `openssl req -x509` makes by default: a self-signed certificate with
    // basicConstraints CA:TRUE, here served by the endpoint itself and trusted as `ca`.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let certificate = params.self_signed(&key).expect("self-signed");
    let mut config = rustls::ServerConfig::builder_with_provider(crate::support::pki::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let backend = tls_backend(config).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("self-signed.pem");
    std::fs::write(&ca, certificate.pem()).expect("writes");
    // Over the gateway's own HTTP/1.1 client and over hyper's (HTTP/2, ALPN).
    for protocol in [Protocol::Http1, Protocol::Http2, Protocol::Auto] {
        let gw = Gateway::new()
            .listener(crate::support::Listener::public().verbose_errors())
            .upstream(
                "app",
                Upstream::new(backend.https_url())
                    .protocol(protocol)
                    .tls(UpstreamTls::ca(&ca)),
            )
            .route("/", "app")
            .start()
            .await;
        let reply = Client::new().get(&url(&gw, "/")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{protocol}: {}",
            reply.text()
        );
        let message = reply.json()["message"]
            .as_str()
            .expect("message")
            .to_owned();
        assert!(
            message.contains(
                "the endpoint presents a CA certificate (basicConstraints CA:TRUE) as its own, \
                 which verification refuses: give the endpoint a leaf certificate signed by \
                 that CA, and name the CA in `tls.ca`"
            ),
            "{protocol}: {message}"
        );
    }
}
