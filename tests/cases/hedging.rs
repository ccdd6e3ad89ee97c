//! Hedged requests (`hedge` on a route): a try that has not answered after the delay
//! gets a second one on another endpoint; the first response wins and the slow try is
//! cancelled (the backend sees its request dropped); counted in
//! `portcullis_upstream_hedges_total`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::support::{
    eventually, metric, metrics_text, url, within, Backend, Client, Gateway, Reply, Route, Upstream,
};

fn hedges(text: &str, outcome: &str) -> f64 {
    metric(
        text,
        &format!("portcullis_upstream_hedges_total{{outcome=\"{outcome}\",upstream=\"app\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_stalled_endpoint_is_hedged_around_and_its_try_cancelled() {
    // One endpoint never answers (it holds every request), the other answers at once.
    let stalled = Backend::holding().await;
    let fast = Backend::start(|_, _| async move { Reply::ok("fast") }).await;
    let gw = Gateway::new()
        .admin()
        .upstream("app", Upstream::endpoints([&stalled, &fast]))
        .route_with(
            Route::prefix("/")
                .named("hedged")
                .to("app")
                .timeout(Duration::from_secs(30))
                .raw("hedge", "{ after: 50ms }"),
        )
        .start()
        .await;
    let client = Client::new();
    for _ in 0..6 {
        // Without the hedge, a request that went to the stalled endpoint would wait for
        // the route's 30 s timeout: `within` fails long before.
        let reply = within("a hedged answer", client.get(&url(&gw, "/x"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "fast");
    }
    // Every try that went to the stalled endpoint was hedged to the other one (round
    // robin counts hedges too, so here that is every first try), and cancelled once the
    // hedge answered.
    let stalled_tries = stalled.state.arrived();
    assert!(stalled_tries >= 1, "no try went to the stalled endpoint");
    eventually("the stalled tries are cancelled", async || {
        stalled.state.cancelled.load(Ordering::SeqCst) == stalled_tries
    })
    .await;
    assert_eq!(fast.state.arrived(), 6);
    let text = metrics_text(&gw).await;
    assert_eq!(hedges(&text, "won"), stalled_tries as f64, "{text}");
    assert_eq!(hedges(&text, "lost"), 0.0, "{text}");
}

#[tokio::test]
async fn methods_the_route_does_not_hedge_are_sent_once() {
    let stalled = Backend::holding().await;
    let gw = Gateway::new()
        .admin()
        .upstream("app", Upstream::new(&stalled))
        .route_with(
            Route::prefix("/")
                .named("hedged")
                .to("app")
                .timeout(Duration::from_millis(300))
                .raw("hedge", "{ after: 20ms, max: 2 }"),
        )
        .start()
        .await;
    // POST is not idempotent: never hedged; it times out after one try.
    let reply = within(
        "the answer",
        Client::new().send(Method::POST, &url(&gw, "/x"), &[], ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(stalled.state.arrived(), 1);
    // GET is: two hedges on the one endpoint, all three tries timing out together.
    let reply = within("the answer", Client::new().get(&url(&gw, "/y"))).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(stalled.state.arrived(), 4);
    let text = metrics_text(&gw).await;
    assert_eq!(hedges(&text, "lost"), 2.0, "{text}");
}
