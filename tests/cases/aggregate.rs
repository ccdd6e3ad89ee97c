//! Aggregate routes: calls run concurrently (proven with a barrier), dependencies are
//! respected, failures and timeouts are reported per call, cancellation reaches the
//! upstreams, and the NDJSON mode streams each call as it completes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Barrier;

use crate::support::{
    eventually, metric, url, within, Aggregate, Backend, Call, Client, Gateway, Reply, Route,
    Upstream,
};

fn json_reply(value: serde_json::Value) -> http::Response<crate::support::backend::Body> {
    Reply::ok(value.to_string())
}

/// A gateway with upstreams `a` (one request in flight, no queue), `b` and `c`, and
/// `route`.
async fn aggregate_gateway(
    a: &Backend,
    b: &Backend,
    c: &Backend,
    route: Route,
) -> portcullis::RunningGateway {
    aggregate_gateway_with(a, b, c, Gateway::new().route_with(route)).await
}

async fn aggregate_gateway_with(
    a: &Backend,
    b: &Backend,
    c: &Backend,
    routes: Gateway,
) -> portcullis::RunningGateway {
    routes
        .admin()
        .upstream("a", Upstream::new(a).max_in_flight(1).max_queue(0))
        .upstream("b", b)
        .upstream("c", c)
        .start()
        .await
}

#[tokio::test]
async fn calls_run_concurrently_and_are_merged_by_name() {
    // Each backend answers only once all three requests have arrived: the route can
    // only succeed if the gateway made the three calls at the same time.
    let barrier = Arc::new(Barrier::new(3));
    let backend = |name: &'static str| {
        let barrier = barrier.clone();
        Backend::start(move |request, _| {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                json_reply(json!({"from": name, "path": request.uri().to_string()}))
            }
        })
    };
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let gw = aggregate_gateway(
        &a,
        &b,
        &c,
        Route::path("/three/{id}").named("three").aggregate(
            Aggregate::new()
                .call("first", Call::new("a", "/x/{id}"))
                .call("second", Call::new("b", "/y?id={id}&page={query.page}"))
                .call("third", Call::new("c", "/z").select(&["from"])),
        ),
    )
    .await;
    let reply = within(
        "the aggregate",
        Client::new().get(&url(&gw, "/three/7?page=2")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("portcullis-partial"), None);
    assert_eq!(
        reply.json(),
        json!({
            "first": {"from": "a", "path": "/x/7"},
            "second": {"from": "b", "path": "/y?id=7&page=2"},
            "third": {"from": "c"},
        })
    );
    let seen = a.state.last_seen();
    assert_eq!(
        seen.headers["x-request-id"],
        reply.header("x-request-id").expect("id")
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");

    let text = Client::new()
        .get(&format!(
            "http://{}/metrics",
            gw.admin_addr().expect("admin")
        ))
        .await
        .text();
    assert_eq!(
        metric(
            &text,
            "portcullis_aggregate_calls_total{call=\"first\",outcome=\"success\",route=\"three\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "portcullis_aggregate_call_duration_seconds_count{call=\"second\",route=\"three\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, &format!("portcullis_upstream_requests_total{{endpoint=\"{}\",outcome=\"2xx\",upstream=\"c\"}}", c.url())),
        Some(1.0),
        "calls count in the upstream families like proxied requests"
    );
}

#[tokio::test]
async fn a_dependent_call_uses_its_dependency_s_result() {
    let users =
        Backend::start(|_, _| async move { json_reply(json!({"id": 1, "team_id": 42})) }).await;
    let teams = Backend::start(|request, _| async move {
        json_reply(json!({"team_path": request.uri().path()}))
    })
    .await;
    let unused = Backend::echo().await;
    let gw = aggregate_gateway(
        &users,
        &teams,
        &unused,
        Route::path("/u/{id}").named("user-team").aggregate(
            Aggregate::new()
                .call("user", Call::new("a", "/users/{id}"))
                .call("team", Call::new("b", "/teams/{user.team_id}")),
        ),
    )
    .await;
    let reply = within("the aggregate", Client::new().get(&url(&gw, "/u/1"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["team"]["team_path"], "/teams/42");
    assert_eq!(teams.state.last_seen().uri, "/teams/42");
}

#[tokio::test]
async fn optional_failures_and_timeouts_leave_null_and_say_why() {
    let ok = Backend::start(|_, _| async move { json_reply(json!({"ok": true})) }).await;
    let failing =
        Backend::start(
            |_, _| async move { Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "boom") },
        )
        .await;
    let held = Backend::holding().await;
    let gw = aggregate_gateway(
        &ok,
        &failing,
        &held,
        Route::path("/partial").named("partial").aggregate(
            Aggregate::new()
                .call("main", Call::new("a", "/"))
                .call("broken", Call::new("b", "/").optional())
                .call(
                    "slow",
                    Call::new("c", "/")
                        .optional()
                        .timeout(Duration::from_millis(100)),
                ),
        ),
    )
    .await;
    let reply = within("the aggregate", Client::new().get(&url(&gw, "/partial"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("portcullis-partial"), Some("broken, slow"));
    let body = reply.json();
    assert_eq!(body["main"], json!({"ok": true}));
    assert_eq!(body["broken"], serde_json::Value::Null);
    assert_eq!(body["slow"], serde_json::Value::Null);
    assert_eq!(body["_errors"]["broken"]["status"], 500);
    assert_eq!(body["_errors"]["broken"]["error"], "upstream_status");
    assert_eq!(body["_errors"]["slow"]["status"], 504);
    assert_eq!(body["_errors"]["slow"]["error"], "timeout");
    eventually("the timed-out call is cancelled upstream", async || {
        held.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_failed_required_call_fails_the_route_and_cancels_the_others() {
    let failing =
        Backend::start(|_, _| async move { Reply::text(StatusCode::SERVICE_UNAVAILABLE, "down") })
            .await;
    let held = Backend::holding().await;
    let unused = Backend::echo().await;
    let gw = aggregate_gateway(
        &held,
        &failing,
        &unused,
        Route::path("/required").named("required").aggregate(
            Aggregate::new()
                .call("slow", Call::new("a", "/"))
                .call("user", Call::new("b", "/")),
        ),
    )
    .await;
    let reply = within("the aggregate", Client::new().get(&url(&gw, "/required"))).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body = reply.json();
    assert_eq!(body["call"], "user");
    assert_eq!(body["error"], "upstream_status");
    assert_eq!(body["request_id"].as_str(), reply.header("x-request-id"));
    eventually("the outstanding call is cancelled", async || {
        held.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn the_route_timeout_cancels_outstanding_calls_and_answers_504() {
    let held = Backend::holding().await;
    let ok = Backend::start(|_, _| async move { json_reply(json!(1)) }).await;
    let unused = Backend::echo().await;
    let gw = aggregate_gateway(
        &held,
        &ok,
        &unused,
        Route::path("/slow").named("slow").aggregate(
            Aggregate::new()
                .timeout(Duration::from_millis(100))
                .call("fast", Call::new("b", "/"))
                .call("slow", Call::new("a", "/")),
        ),
    )
    .await;
    let reply = within("the aggregate", Client::new().get(&url(&gw, "/slow"))).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"], "aggregate_timeout");
    assert_eq!(reply.json()["call"], "slow");
    eventually("the outstanding call is cancelled", async || {
        held.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_every_call() {
    let first = Backend::holding().await;
    let second = Backend::holding().await;
    let unused = Backend::echo().await;
    let gw = aggregate_gateway(
        &first,
        &second,
        &unused,
        Route::path("/both").named("both").aggregate(
            Aggregate::new()
                .call("one", Call::new("a", "/"))
                .call("two", Call::new("b", "/")),
        ),
    )
    .await;
    let mut socket = tokio::net::TcpStream::connect(gw.listener_addr("public").expect("listener"))
        .await
        .expect("connects");
    socket
        .write_all(b"GET /both HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("writes");
    eventually("both calls are made", async || {
        first.state.arrived() == 1 && second.state.arrived() == 1
    })
    .await;
    drop(socket);
    eventually("both calls are cancelled", async || {
        first.state.cancelled.load(Ordering::SeqCst) == 1
            && second.state.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn flat_merges_report_conflicts_instead_of_overwriting() {
    let a =
        Backend::start(|_, _| async move { json_reply(json!({"id": 1, "name": "user"})) }).await;
    let b = Backend::start(|_, _| async move { json_reply(json!({"id": 2, "orders": 3})) }).await;
    let unused = Backend::echo().await;
    let gw = aggregate_gateway(
        &a,
        &b,
        &unused,
        Route::path("/flat").named("flat").aggregate(
            Aggregate::new()
                .merge_flat()
                .call("a_user", Call::new("a", "/"))
                .call("b_orders", Call::new("b", "/")),
        ),
    )
    .await;
    let reply = within("the aggregate", Client::new().get(&url(&gw, "/flat"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["id"], 1, "the first call's value is kept");
    assert_eq!(body["name"], "user");
    assert_eq!(body["orders"], 3);
    assert_eq!(body["_errors"]["b_orders"]["error"], "conflict");
    assert_eq!(body["_errors"]["b_orders"]["fields"], json!(["id"]));
}

#[tokio::test]
async fn bodies_that_are_not_json_or_too_large_are_that_call_s_error() {
    let text = Backend::start(|_, _| async move { Reply::ok("<html>not json</html>") }).await;
    let big =
        Backend::start(|_, _| async move { Reply::ok(format!("\"{}\"", "x".repeat(4096))) }).await;
    let ok = Backend::start(|_, _| async move { json_reply(json!({"fine": true})) }).await;
    let gw = aggregate_gateway(
        &text,
        &big,
        &ok,
        Route::path("/bodies").named("bodies").aggregate(
            Aggregate::new()
                .max_body_size(1024)
                .call("html", Call::new("a", "/").optional())
                .call("huge", Call::new("b", "/").optional())
                .call("fine", Call::new("c", "/")),
        ),
    )
    .await;
    let reply = within("the aggregate", Client::new().get(&url(&gw, "/bodies"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["fine"], json!({"fine": true}));
    assert_eq!(body["_errors"]["html"]["error"], "invalid_body");
    assert_eq!(body["_errors"]["huge"]["error"], "body_too_large");
}

#[tokio::test]
async fn calls_share_the_upstream_s_limit_with_proxied_traffic() {
    let held = Backend::holding().await;
    let ok = Backend::echo().await;
    let unused = Backend::echo().await;
    // Upstream `a` allows one request in flight and no queue.
    let gw = aggregate_gateway_with(
        &held,
        &ok,
        &unused,
        Gateway::new()
            .route_with(Route::prefix("/proxied").named("proxied").to("a"))
            .route_with(
                Route::path("/agg")
                    .named("agg")
                    .aggregate(Aggregate::new().call("from_a", Call::new("a", "/"))),
            ),
    )
    .await;
    let proxied = {
        let u = url(&gw, "/proxied");
        tokio::spawn(async move { Client::new().get(&u).await })
    };
    eventually("the proxied request holds the permit", async || {
        held.state.arrived() == 1
    })
    .await;
    let reply = within("the aggregate", Client::new().get(&url(&gw, "/agg"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"], "upstream_overloaded");
    assert_eq!(reply.json()["call"], "from_a");
    held.state.release(1);
    assert_eq!(
        within("the proxied request", proxied)
            .await
            .expect("joins")
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn ndjson_streams_each_call_as_it_completes() {
    let fast = Backend::start(|_, _| async move { json_reply(json!({"fast": true})) }).await;
    let held = Backend::start(|_, state| async move {
        state.hold().await;
        json_reply(json!({"slow": true}))
    })
    .await;
    let unused = Backend::echo().await;
    let gw = aggregate_gateway(
        &fast,
        &held,
        &unused,
        Route::path("/stream").named("stream").aggregate(
            Aggregate::new()
                .stream_ndjson()
                .call("quick", Call::new("a", "/"))
                .call("slow", Call::new("b", "/")),
        ),
    )
    .await;
    let request = http::Request::get(url(&gw, "/stream"))
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("request");
    let response = within("headers", Client::new().stream(request)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    let mut buffer = String::new();
    let mut next_line = async || loop {
        if let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            return serde_json::from_str::<serde_json::Value>(&line).expect("a JSON line");
        }
        let frame = body.frame().await.expect("more lines").expect("data");
        buffer.push_str(std::str::from_utf8(frame.data_ref().expect("data")).expect("utf-8"));
    };
    // The quick call's line arrives while the slow call is still held upstream.
    let first = within("the first line", next_line()).await;
    assert_eq!(
        first,
        json!({"call": "quick", "status": 200, "body": {"fast": true}})
    );
    assert_eq!(held.state.arrived(), 1);
    held.state.release(1);
    let second = within("the second line", next_line()).await;
    assert_eq!(
        second,
        json!({"call": "slow", "status": 200, "body": {"slow": true}})
    );
    let summary = within("the summary", next_line()).await;
    assert_eq!(summary, json!({"summary": {"status": 200, "failed": []}}));
}

#[test]
fn aggregate_config_errors_are_located() {
    let base = r#"listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  users: { endpoints: ["http://127.0.0.1:1"] }
routes:
  - name: agg
    match: { path: "/agg/{id}" }
    aggregate:
      calls:
"#;
    let cases = [
        (
            "        user: { upstream: usres, path: \"/u/{id}\" }\n",
            "test.yaml:9:27: routes[0].aggregate.calls.user.upstream: unknown upstream \"usres\" (did you mean \"users\"?)",
        ),
        (
            "        user: { upstream: users, path: \"/u/{id}\" }\n        team: { upstream: users, path: \"/t/{usr.team}\" }\n",
            "test.yaml:10:40: routes[0].aggregate.calls.team.path: unknown call `usr` (did you mean `user`?)",
        ),
        (
            "        a: { upstream: users, path: \"/a/{b.x}\" }\n        b: { upstream: users, path: \"/b/{a.y}\" }\n",
            "routes[0].aggregate.calls.a.path: calls depend on each other in a cycle: a -> b -> a",
        ),
        (
            "        a: { upstream: users, path: \"/a/{nope}\" }\n",
            "routes[0].aggregate.calls.a.path: `{nope}` is not a parameter of the route's path (it captures: id)",
        ),
    ];
    for (calls, expected) in cases {
        let text = format!("{base}{calls}");
        let error = match portcullis::Config::from_yaml(&text, "test.yaml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(expected),
            "missing {expected:?} in:\n{error}"
        );
    }
}

#[test]
fn check_warns_when_a_flat_merge_must_collide() {
    let text = r#"listeners: [{ name: public, address: "127.0.0.1:0" }]
upstreams:
  users: { endpoints: ["http://127.0.0.1:1"] }
routes:
  - name: flat
    match: { path: /flat }
    aggregate:
      merge: flat
      calls:
        a: { upstream: users, path: "/a", select: [id, name] }
        b: { upstream: users, path: "/b", select: [id, total] }
"#;
    let config = portcullis::Config::from_yaml(text, "test.yaml").expect("valid, with a warning");
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let warning = config.warnings[0].to_string();
    assert!(
        warning.starts_with("test.yaml:11:51: routes[0].aggregate.calls.b.select: with `merge: flat`, field `id` comes from both `a` and `b`"),
        "{warning}"
    );
}
