//! The upstream families add up: after a known mix of proxied, retried, redispatched,
//! timed-out, cancelled and aggregate requests (hedged requests do not exist yet),
//! `portcullis_upstream_requests_total`
//! counts every exchange once whoever made it, its sum equals the duration histogram's
//! count and what the backends saw, and retries, redispatches and aggregate calls
//! match the mix. Counted at the backends and in `/metrics`, never timed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::support::{
    closed_port, eventually, metrics_text, url, within, Aggregate, Backend, Call, Client, Endpoint,
    Gateway, Reply, Retry, Route, Upstream,
};

/// The sum of a family's samples whose labels include every pair of `labels`.
fn sum(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?;
            let (series, value) = rest.rsplit_once(' ')?;
            let series = series.strip_prefix('{').unwrap_or(series);
            if !(series.is_empty() || series.ends_with('}')) {
                return None; // another family sharing the prefix
            }
            labels
                .iter()
                .all(|(name, value)| series.contains(&format!("{name}=\"{value}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A backend: `/ok` answers 200, `/hold` waits at the gate (until the test releases it
/// or the gateway gives up), `/flaky` answers 503 to every odd request and 200 to
/// every even one.
async fn service() -> Backend {
    let flaky = Arc::new(AtomicUsize::new(0));
    Backend::start(move |request, state| {
        let flaky = flaky.clone();
        async move {
            match request.uri().path() {
                "/hold" => {
                    state.hold().await;
                    Reply::ok("{}")
                }
                "/flaky" if flaky.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) => {
                    Reply::text(StatusCode::SERVICE_UNAVAILABLE, "busy")
                }
                _ => Reply::ok("{}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn every_upstream_exchange_counts_once_whoever_made_it() {
    let svc = service().await;
    let retried = service().await;
    let pair = service().await;
    let dead = closed_port();
    let gw = Gateway::new()
        .admin()
        .upstream("svc", Upstream::new(&svc).timeout(Duration::from_secs(10)))
        .upstream(
            "retried",
            Upstream::new(&retried).retry(Retry::attempts(2).on(&["503"]).backoff("1ms..2ms")),
        )
        .upstream(
            "pair",
            Upstream::endpoints([dead.endpoint(), pair.endpoint()]),
        )
        .route_with(
            Route::path("/proxied/timeout")
                .named("timeout")
                .rewrite_path("/hold")
                .timeout(Duration::from_millis(100))
                .to("svc"),
        )
        .route_with(
            Route::path("/both").named("both").aggregate(
                Aggregate::new().call("fast", Call::new("svc", "/ok")).call(
                    "slow",
                    Call::new("svc", "/hold")
                        .optional()
                        .timeout(Duration::from_millis(100)),
                ),
            ),
        )
        .route_with(
            Route::path("/cut").named("cut").aggregate(
                Aggregate::new()
                    .timeout(Duration::from_millis(100))
                    .call("held", Call::new("svc", "/hold")),
            ),
        )
        .route_with(Route::prefix("/svc").strip_prefix("/svc").to("svc"))
        .route_with(
            Route::prefix("/retried")
                .strip_prefix("/retried")
                .to("retried"),
        )
        .route_with(Route::prefix("/pair").strip_prefix("/pair").to("pair"))
        .start()
        .await;
    let client = Client::new();
    let get = async |path: &str| within(path, client.get(&url(&gw, path))).await;

    // 5 proxied: 5 × 2xx at svc.
    for _ in 0..5 {
        assert_eq!(get("/svc/ok").await.status, StatusCode::OK);
    }
    // 1 proxied timeout: 1 × timeout at svc.
    assert_eq!(
        get("/proxied/timeout").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    // 2 aggregates, each a success and a call cut off by its own timeout: 2 × 2xx and
    // 2 × timeout at svc.
    for _ in 0..2 {
        let reply = get("/both").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("portcullis-partial"), Some("slow"));
    }
    // 1 aggregate cut off by the route's timeout, its call still running: cancelled.
    assert_eq!(get("/cut").await.status, StatusCode::GATEWAY_TIMEOUT);
    // 3 retried: each a 503 then a 200 at `retried`.
    for _ in 0..3 {
        assert_eq!(get("/retried/flaky").await.status, StatusCode::OK);
    }
    // 2 to `pair`: one of them first tries the closed endpoint (round robin), is
    // redispatched, and the closed endpoint is then marked down.
    for _ in 0..2 {
        assert_eq!(get("/pair/ok").await.status, StatusCode::OK);
    }
    // 1 proxied request whose client goes away while the upstream holds it: cancelled.
    let abandoned = tokio::spawn({
        let target = url(&gw, "/svc/hold");
        async move { Client::new().get(&target).await }
    });
    let arrivals = svc.state.arrived();
    eventually("the held request reached svc", async || {
        svc.state.arrived() > arrivals
    })
    .await;
    abandoned.abort();
    let _ = abandoned.await;

    let requests = "portcullis_upstream_requests_total";
    let durations = "portcullis_upstream_request_duration_seconds_count";
    let on = |upstream| [("upstream", upstream)];
    eventually("the abandoned exchange is counted", async || {
        sum(
            &metrics_text(&gw).await,
            requests,
            &[("outcome", "cancelled")],
        ) == 2.0
    })
    .await;
    let text = metrics_text(&gw).await;
    let count = |upstream, outcome| {
        sum(
            &text,
            requests,
            &[("upstream", upstream), ("outcome", outcome)],
        )
    };

    // svc: 5 + 2 proxied answers, 1 + 2 timeouts (the proxied one and both aggregate
    // calls), 2 cancelled (the route's timeout, the client gone); 12 exchanges, every
    // one of which svc saw.
    assert_eq!(count("svc", "2xx"), 7.0, "{text}");
    assert_eq!(count("svc", "timeout"), 3.0, "{text}");
    assert_eq!(count("svc", "cancelled"), 2.0, "{text}");
    assert_eq!(sum(&text, requests, &on("svc")), 12.0, "{text}");
    assert_eq!(svc.state.arrived(), 12);
    // retried: 3 × 503 and 3 × 200, 3 retries.
    assert_eq!(count("retried", "5xx"), 3.0, "{text}");
    assert_eq!(count("retried", "2xx"), 3.0, "{text}");
    assert_eq!(sum(&text, requests, &on("retried")), 6.0, "{text}");
    assert_eq!(retried.state.arrived(), 6);
    assert_eq!(
        sum(&text, "portcullis_upstream_retries_total", &on("retried")),
        3.0
    );
    // pair: one refused connect, redispatched; two answers.
    assert_eq!(count("pair", "connect_failure"), 1.0, "{text}");
    assert_eq!(count("pair", "2xx"), 2.0, "{text}");
    assert_eq!(pair.state.arrived(), 2);
    assert_eq!(
        sum(&text, "portcullis_upstream_redispatches_total", &on("pair")),
        1.0
    );
    // One duration observation per exchange, on every upstream.
    for upstream in ["svc", "retried", "pair"] {
        assert_eq!(
            sum(&text, durations, &on(upstream)),
            sum(&text, requests, &on(upstream)),
            "{upstream}: {text}"
        );
    }
    // The aggregate calls: each call once, in both families.
    let calls = "portcullis_aggregate_calls_total";
    assert_eq!(
        sum(&text, calls, &[("call", "fast"), ("outcome", "success")]),
        2.0
    );
    assert_eq!(
        sum(&text, calls, &[("call", "slow"), ("outcome", "timeout")]),
        2.0
    );
    assert_eq!(sum(&text, calls, &[("route", "both")]), 4.0);
    assert_eq!(
        sum(&text, calls, &[("route", "cut"), ("outcome", "cancelled")]),
        1.0,
        "a call cut off by the route's timeout is cancelled in both families"
    );
    svc.state.release(100);
}
