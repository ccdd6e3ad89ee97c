//! Upstream failures become 502/504 with a JSON body carrying the request id.

use http::StatusCode;

use std::time::Duration;

use crate::support::{closed_port, url, within, Backend, Client, Gateway, Route, Upstream};

#[tokio::test]
async fn connection_refused_is_502() {
    let gw = Gateway::new()
        .upstream("gone", closed_port())
        .route("/", "gone")
        .start()
        .await;
    let reply = within("the 502", Client::new().get(&url(&gw, "/x"))).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body = reply.json();
    assert_eq!(body["error"], "upstream_connect_failed");
    assert_eq!(body["request_id"].as_str(), reply.header("x-request-id"));
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("gone"),
        "{body}"
    );
}

#[tokio::test]
async fn an_upstream_slower_than_the_route_timeout_is_504_and_is_cancelled() {
    let held = Backend::holding().await;
    let gw = Gateway::new()
        .upstream(
            "slow",
            Upstream::new(&held).timeout(Duration::from_secs(30)),
        )
        .route_with(
            Route::prefix("/")
                .to("slow")
                .timeout(Duration::from_millis(100)),
        )
        .start()
        .await;
    let reply = within("the 504", Client::new().get(&url(&gw, "/x"))).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"], "upstream_timeout");
    crate::support::eventually("the upstream call is cancelled", async || {
        held.state
            .cancelled
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
    })
    .await;
}

#[tokio::test]
async fn a_malformed_upstream_response_is_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    let garbage = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(b"this is not HTTP\r\n\r\n").await;
        }
    });
    let gw = Gateway::new()
        .upstream("broken", addr)
        .route("/", "broken")
        .start()
        .await;
    let reply = within("the 502", Client::new().get(&url(&gw, "/x"))).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"], "upstream_bad_response");
    garbage.abort();
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_unchanged() {
    let backend = Backend::start(|_, _| async move {
        crate::support::Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "upstream says no")
    })
    .await;
    let gw = Gateway::new()
        .upstream("u", &backend)
        .route("/", "u")
        .start()
        .await;
    let reply = Client::new().get(&url(&gw, "/x")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.text(), "upstream says no");
}
