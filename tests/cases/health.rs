//! Endpoint health over real sockets: active checks take a failing endpoint out of
//! rotation and bring it back; consecutive failures on real traffic eject it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::StatusCode;

use std::time::Duration;

use crate::support::{
    metric, metric_reaches, metrics_text, url, Backend, Client, Gateway, HealthCheck, Outlier,
    Reply, Upstream,
};

/// A backend whose `/health` answers 200 while `healthy` holds, 503 otherwise, and
/// whose other paths answer `status`.
async fn backend(healthy: Arc<AtomicBool>, status: StatusCode) -> Backend {
    Backend::start(move |request, _| {
        let healthy = healthy.clone();
        async move {
            if request.uri().path() == "/health" {
                let code = if healthy.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Reply::text(code, "")
            } else {
                Reply::text(status, "served")
            }
        }
    })
    .await
}

fn traffic(backend: &Backend) -> usize {
    backend
        .state
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|seen| seen.uri != "/health")
        .count()
}

#[tokio::test]
async fn failing_health_checks_take_an_endpoint_out_and_passing_ones_bring_it_back() {
    let a_healthy = Arc::new(AtomicBool::new(true));
    let b_healthy = Arc::new(AtomicBool::new(true));
    let a = backend(a_healthy.clone(), StatusCode::OK).await;
    let b = backend(b_healthy.clone(), StatusCode::OK).await;
    let gw = Gateway::new()
        .admin()
        .upstream(
            "u",
            Upstream::endpoints([&a, &b]).health_check(
                HealthCheck::path("/health")
                    .interval(Duration::from_millis(20))
                    .timeout(Duration::from_secs(1))
                    .healthy_threshold(2)
                    .unhealthy_threshold(2),
            ),
        )
        .route("/", "u")
        .start()
        .await;
    let client = Client::new();
    let healthy_b = format!(
        "portcullis_upstream_endpoint_healthy{{endpoint=\"{}\",upstream=\"u\"}}",
        b.url()
    );

    b_healthy.store(false, Ordering::SeqCst);
    metric_reaches(&gw, &healthy_b, 0.0).await;
    let text = metrics_text(&gw).await;
    assert_eq!(metric(&text, &healthy_b), Some(0.0));
    let ejections = format!(
        "portcullis_upstream_ejections_total{{endpoint=\"{}\",reason=\"health_check\",upstream=\"u\"}}",
        b.url()
    );
    assert_eq!(metric(&text, &ejections), Some(1.0));
    let before = traffic(&b);
    for _ in 0..10 {
        assert_eq!(client.get(&url(&gw, "/x")).await.status, StatusCode::OK);
    }
    assert_eq!(traffic(&b), before, "no traffic to the unhealthy endpoint");

    // Every endpoint failing: 503 at once, with a clear reason.
    a_healthy.store(false, Ordering::SeqCst);
    let healthy_a = format!(
        "portcullis_upstream_endpoint_healthy{{endpoint=\"{}\",upstream=\"u\"}}",
        a.url()
    );
    metric_reaches(&gw, &healthy_a, 0.0).await;
    let none = client.get(&url(&gw, "/x")).await;
    assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(none.json()["error"], "upstream_unavailable");

    a_healthy.store(true, Ordering::SeqCst);
    b_healthy.store(true, Ordering::SeqCst);
    metric_reaches(&gw, &healthy_b, 1.0).await;
    for _ in 0..10 {
        assert_eq!(client.get(&url(&gw, "/x")).await.status, StatusCode::OK);
    }
    assert!(traffic(&b) > before, "b is back in rotation");
}

#[tokio::test]
async fn consecutive_failures_eject_an_endpoint() {
    let always = Arc::new(AtomicBool::new(true));
    let good = backend(always.clone(), StatusCode::OK).await;
    let bad = backend(always, StatusCode::INTERNAL_SERVER_ERROR).await;
    let gw = Gateway::new()
        .admin()
        .upstream(
            "u",
            Upstream::endpoints([&good, &bad]).outlier(
                Outlier::consecutive_failures(3).base_ejection_time(Duration::from_secs(300)),
            ),
        )
        .route("/", "u")
        .start()
        .await;
    let client = Client::new();
    // Round robin: the bad endpoint gets every other request until its third 500.
    for _ in 0..6 {
        client.get(&url(&gw, "/x")).await;
    }
    assert_eq!(traffic(&bad), 3);
    for _ in 0..10 {
        assert_eq!(client.get(&url(&gw, "/x")).await.status, StatusCode::OK);
    }
    assert_eq!(traffic(&bad), 3, "ejected: no more traffic");
    let text = metrics_text(&gw).await;
    let series = |name: &str| {
        format!(
            "{name}{{endpoint=\"{}\",reason=\"consecutive_failures\",upstream=\"u\"}}",
            bad.url()
        )
    };
    assert_eq!(
        metric(&text, &series("portcullis_upstream_ejections_total")),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "portcullis_upstream_endpoint_healthy{{endpoint=\"{}\",upstream=\"u\"}}",
                bad.url()
            )
        ),
        Some(0.0)
    );
}
