//! Certificates chosen by the name the client asks for (SNI), a default for the rest,
//! and each certificate's expiry exported per host.

use http::StatusCode;

use super::{public, tls_gateway};
use crate::support::client::get_http1;
use crate::support::pki::Pki;
use crate::support::tls::{accept_any_config, client_config, connect, served_certificate};
use crate::support::{metric, metrics_text, Backend, Tls};

#[tokio::test]
async fn sni_picks_the_certificate_for_the_requested_host() {
    let pki = Pki::new("Test CA");
    let (api_cert, api_key) = pki.write("api", &pki.issue(&["api.example.com"]));
    let (wild_cert, wild_key) = pki.write("wild", &pki.issue(&["*.example.com"]));
    let (shop_cert, shop_key) = pki.write("shop", &pki.issue(&["shop.example.org"]));
    let backend = Backend::echo().await;
    let tls = Tls::per_host()
        .host(&["api.example.com"], &api_cert, &api_key)
        .host(&["*.example.com"], &wild_cert, &wild_key)
        .host(&["shop.example.org"], &shop_cert, &shop_key)
        .default_host("shop.example.org");
    let gw = tls_gateway(tls, &backend).await;
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
    let tls = Tls::per_host()
        .host(&["api.example.com"], &api_cert, &api_key)
        .host(&["*.example.com"], &wild_cert, &wild_key);
    let gw = tls_gateway(tls, &backend).await;
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
