//! Certificate files that change are reloaded (and broken ones rejected, the last good
//! certificate serving on), and a configuration reload that only renews certificates is
//! not a listener change.

use std::time::Duration;

use http::StatusCode;
use rcgen::KeyPair;

use super::{public, tls_gateway};
use crate::support::client::get_http1;
use crate::support::pki::Pki;
use crate::support::tls::{client_config, connect, served_certificate};
use crate::support::{
    eventually, metric, metric_reaches, metrics_text, replace_file, Backend, Client, Gateway,
    Listener, Tls,
};

#[tokio::test]
async fn changed_certificate_files_are_reloaded_and_bad_ones_rejected() {
    let pki = Pki::new("Test CA");
    let first = pki.issue_with("first", &["api.example.com"], (2031, 1, 1), None);
    let (cert, key) = pki.write("api", &first);
    let backend = Backend::echo().await;
    let tls = Tls::per_host()
        .host(&["api.example.com"], &cert, &key)
        .reload_interval(Duration::from_millis(20));
    let gw = tls_gateway(tls, &backend).await;
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
        Some(first.key_pair()),
    );
    replace_file(&cert, &second.cert_pem);
    eventually("the new certificate is served", async || {
        served().await == "second"
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
    // The certificate files are named relative to the configuration file.
    let listener_tls = || Tls::certificate("api.pem", "api.key");
    let text = |tls: Tls, prefix: &str| {
        Gateway::new()
            .listener(Listener::public().tls(tls))
            .admin()
            .watch_config(false)
            .upstream("app", &backend)
            .route(prefix, "app")
            .yaml()
    };
    let gw = crate::support::reloadable_from_file(&path, &text(listener_tls(), "/v1")).await;
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
        Some(first.key_pair()),
    );
    replace_file(&cert, &renewed.cert_pem);
    replace_file(&path, &text(listener_tls(), "/v2"));
    let reply = reload().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(get("/v2/x").await, StatusCode::OK);

    // Changed TLS settings are a listener change: the reload rebuilds the listener
    // (handshakes use the new settings) and serves the new routes.
    for (change, tls) in [
        (
            "handshake_timeout: 5s",
            listener_tls().handshake_timeout(Duration::from_secs(5)),
        ),
        (
            "reload_interval: 1m",
            listener_tls().reload_interval(Duration::from_secs(60)),
        ),
        (
            "client_ca, client_auth: optional",
            listener_tls()
                .client_ca(&client_ca)
                .client_auth(crate::support::ClientAuth::Optional),
        ),
    ] {
        replace_file(&path, &text(tls, "/v3"));
        let reply = reload().await;
        assert_eq!(reply.status, StatusCode::OK, "{change}: {}", reply.text());
        assert_eq!(get("/v3/x").await, StatusCode::OK, "{change}");
    }
    replace_file(&path, &text(listener_tls(), "/v2"));
    assert_eq!(reload().await.status, StatusCode::OK);
    assert_eq!(get("/v2/x").await, StatusCode::OK);
}
