//! The Grafana dashboard (`deploy/grafana/portcullis.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) against a real Prometheus: every PromQL expression
//! in them (panel targets, annotations, the variables' `label_values` selectors, the
//! rules) is extracted, its Grafana variables replaced by concrete values, parsed by
//! `promtool check rules`, and evaluated by a Prometheus that scraped a gateway under a
//! known mix of traffic (successes, 5xx, a retry, a redispatch, a dead upstream, a
//! saturated upstream with a queue timeout, a rate limit, aggregate calls, TLS with a
//! certificate about to expire, a failed reload). Each must return data: so the
//! dashboard's panels have something to draw, and each alert's condition holds in a
//! mix built to trip it. The alerts' own unit tests are `alerts.test.yml`
//! (`promtool test rules`, run by `.ci/run`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::pki::Pki;
use crate::support::prometheus::PrometheusServer;
use crate::support::tls::{client_config, connect};
use crate::support::{
    client::get_http1, closed_port, metrics_text, replace_file, url, within, Aggregate, Backend,
    Call, Client, Endpoint, Gateway, Listener, Reply, Retry, Route, Tls, Upstream,
};

/// How often the test's Prometheus scrapes the gateway.
const SCRAPE_INTERVAL: Duration = Duration::from_millis(500);

/// What Grafana's variables stand for in the test's queries. `$__rate_interval` is at
/// least four scrapes, as Grafana makes it; `$instance` is the scraped gateway.
fn grafana_values(instance: &str) -> [(&'static str, String); 8] {
    [
        ("${DS_PROMETHEUS}", String::new()),
        ("$__rate_interval", "2s".into()),
        ("$__interval", "1s".into()),
        ("$__range", "1m".into()),
        ("${instance}", instance.into()),
        ("$instance", instance.into()),
        ("$route", ".*".into()),
        ("$upstream", ".*".into()),
    ]
}

/// Families the dashboard leaves out on purpose, each with the reason; every other
/// family of `/metrics` must appear in it, so a new metric is put on it or listed here.
const NOT_ON_THE_DASHBOARD: &[(&str, &str)] = &[
    (
        "portcullis_config_info",
        "a hash, for joins; /config shows it",
    ),
    (
        "portcullis_cors_requests_total",
        "per-policy detail, for CORS debugging",
    ),
    (
        "portcullis_header_fields_dropped_total",
        "a hardening counter",
    ),
    (
        "portcullis_header_transform_skipped_total",
        "per-policy detail",
    ),
    (
        "portcullis_http2_cancel_floods_total",
        "an attack counter, rarely non-zero",
    ),
    (
        "portcullis_proxy_protocol_connections_total",
        "only for listeners behind L4 balancers",
    ),
    (
        "portcullis_rate_limit_store_connections",
        "only with a shared (Redis) store",
    ),
    (
        "portcullis_rate_limit_store_duration_seconds",
        "only with a shared (Redis) store",
    ),
    (
        "portcullis_rate_limit_store_errors_total",
        "only with a shared (Redis) store",
    ),
    (
        "portcullis_upstream_connections_salvaged_total",
        "pool detail",
    ),
    ("portcullis_websocket_closed_total", "WebSocket detail"),
    ("portcullis_websocket_upgrades_total", "WebSocket detail"),
    (
        "portcullis_worker_connections_total",
        "the active gauge shows the balance",
    ),
];

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One PromQL expression and where it was found.
struct Expression {
    origin: String,
    promql: String,
}

/// Every `expr` in the dashboard (panel targets, annotations) and every query
/// variable's `label_values(selector, label)` selector.
fn dashboard_expressions(dashboard: &Value) -> Vec<Expression> {
    fn walk(value: &Value, origin: &str, found: &mut Vec<Expression>) {
        match value {
            Value::Object(object) => {
                let origin = object
                    .get("title")
                    .or_else(|| object.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or(origin);
                if let Some(Value::String(expr)) = object.get("expr") {
                    found.push(Expression {
                        origin: format!("dashboard: {origin}"),
                        promql: expr.clone(),
                    });
                }
                for inner in object.values() {
                    walk(inner, origin, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, origin, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&dashboard["panels"], "panels", &mut found);
    walk(&dashboard["annotations"], "annotations", &mut found);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().expect("a variable's name");
        let query = variable["query"]
            .as_str()
            .expect("a query variable's query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(selector, label)"));
        found.push(Expression {
            origin: format!("dashboard: variable {name}"),
            promql: inner.0.trim().to_owned(),
        });
    }
    found
}

fn alert_expressions(rules: &serde_yaml::Value) -> Vec<Expression> {
    let mut found = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alerting rules only");
            found.push(Expression {
                origin: format!("alert {name}"),
                promql: rule["expr"].as_str().expect("expr").trim().to_owned(),
            });
        }
    }
    found
}

fn substituted(expression: &str, values: &[(&str, String)]) -> String {
    let mut text = expression.to_owned();
    for (variable, value) in values {
        text = text.replace(variable, value);
    }
    assert!(
        !text.contains('$'),
        "an unknown Grafana variable is left in: {text}"
    );
    text
}

/// `promtool check rules` on `path`.
fn promtool_check_rules(path: &Path) {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); apt-get install prometheus"));
    assert!(
        output.status.success(),
        "promtool check rules {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The expressions as recording rules in a temporary file, parsed by promtool.
fn parse_with_promtool(expressions: &[Expression]) {
    let rules: Vec<Value> = expressions
        .iter()
        .enumerate()
        .map(|(index, e)| serde_json::json!({"record": format!("dashboard:expression_{index}"), "expr": e.promql}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, file.to_string()).expect("writes the rules");
    promtool_check_rules(&path);
}

/// The date `days` from now, as (year, month, day) (civil from days since 1970).
fn date_in(days: u64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let z = i64::try_from(now / 86_400 + days).expect("days") + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).expect("year"),
        u8::try_from(month).expect("month"),
        u8::try_from(day).expect("day"),
    )
}

/// `/ok` 200, `/fail` 500, `/hold` waits at the gate, `/flaky` 503 to every odd
/// request.
async fn service() -> Backend {
    let flaky = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Backend::start(move |request, state| {
        let flaky = flaky.clone();
        async move {
            match request.uri().path() {
                "/hold" => {
                    state.hold().await;
                    Reply::ok("{}")
                }
                "/fail" => Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "boom"),
                "/flaky"
                    if flaky
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                        .is_multiple_of(2) =>
                {
                    Reply::text(StatusCode::SERVICE_UNAVAILABLE, "busy")
                }
                _ => Reply::ok("{\"ok\":true}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn every_dashboard_and_alert_expression_parses_and_returns_data() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repository().join("deploy/grafana/portcullis.json"))
            .expect("reads the dashboard"),
    )
    .expect("the dashboard is JSON");
    let alerts_file = repository().join("deploy/prometheus/alerts.yml");
    let alerts: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&alerts_file).expect("reads the alerts"))
            .expect("the alerts are YAML");
    check_dashboard_shape(&dashboard);
    promtool_check_rules(&alerts_file);

    // The gateway, reloadable from a file so that a reload can fail.
    let app = service().await;
    let narrow = service().await;
    let pair = service().await;
    let pki = Pki::new("Test CA");
    let expiring = pki.issue_with("api.example.com", &["api.example.com"], date_in(7), None);
    let (cert, key) = pki.write("api", &expiring);
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config_file = config_dir.path().join("gateway.yaml");
    let gateway = Gateway::new()
        .listener(Listener::public())
        .listener(Listener::named("secure").tls(Tls::certificate(&cert, &key)))
        .admin()
        .raw(
            "policies",
            "{ limited: { rate_limit: [ { key: client_ip, rate: 60/h, burst: 1 } ] } }",
        )
        .upstream(
            "app",
            Upstream::new(&app).retry(Retry::attempts(2).on(&["503"]).backoff("1ms..2ms")),
        )
        .upstream(
            "narrow",
            Upstream::new(&narrow)
                .max_in_flight(1)
                .max_queue(1)
                .queue_timeout(Duration::from_millis(50)),
        )
        .upstream("dead", Upstream::new(closed_port().endpoint()))
        .upstream(
            "pair",
            Upstream::endpoints([closed_port().endpoint(), pair.endpoint()]),
        )
        .route_with(
            Route::prefix("/narrow")
                .strip_prefix("/narrow")
                .named("narrow")
                .to("narrow"),
        )
        .route_with(Route::prefix("/dead").named("dead").to("dead"))
        .route_with(
            Route::prefix("/pair")
                .strip_prefix("/pair")
                .named("pair")
                .to("pair"),
        )
        .route_with(
            Route::prefix("/limited")
                .strip_prefix("/limited")
                .named("limited")
                .policies(&["limited"])
                .to("app"),
        )
        .route_with(
            Route::path("/both").named("both").aggregate(
                Aggregate::new().call("fast", Call::new("app", "/ok")).call(
                    "slow",
                    Call::new("app", "/hold")
                        .optional()
                        .timeout(Duration::from_millis(50)),
                ),
            ),
        )
        .route_with(Route::prefix("/").named("app").to("app"));
    let good_config = gateway.yaml();
    let gw = gateway.start_reloadable(&config_file).await;
    let admin = gw.admin_addr().expect("admin listener");

    let prometheus = PrometheusServer::start(&[admin], SCRAPE_INTERVAL).await;
    // Traffic after a first scrape, so that every counter's increase is seen.
    prometheus.scraped(1).await;
    let client = Client::new();
    let get = async |path: &str| within(path, client.get(&url(&gw, path))).await.status;
    // Twice, a scrape between: series the first round creates rise in the second.
    // Enough 5xx for the error-ratio alert's floor (0.1/s over 5 minutes: 30).
    for round in 0..2 {
        for _ in 0..20 {
            assert_eq!(get("/ok").await, StatusCode::OK);
            assert_eq!(get("/fail").await, StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(get("/flaky").await, StatusCode::OK, "retried once");
        assert_eq!(get("/pair/ok").await, StatusCode::OK, "redispatched");
        assert_eq!(get("/both").await, StatusCode::OK, "one call timed out");
        assert_eq!(get("/dead/x").await, StatusCode::BAD_GATEWAY);
        let answers = [get("/limited/ok").await, get("/limited/ok").await];
        assert_eq!(answers[1], StatusCode::TOO_MANY_REQUESTS, "{answers:?}");
        let stream = connect(
            gw.listener_addr("secure").expect("listener `secure`"),
            "api.example.com",
            client_config(pki.roots(), &[]),
        )
        .await
        .expect("TLS handshake");
        let (_, status, _) = get_http1(stream, "api.example.com", "/ok").await;
        assert_eq!(status, StatusCode::OK);
        if round == 0 {
            prometheus.next_scrape().await;
        }
    }
    let admin_url = |path: &str| format!("http://{admin}{path}");
    // A reload that succeeds, then one that fails (and leaves the file broken).
    let reload = client
        .send(Method::POST, &admin_url("/reload"), &[], "")
        .await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.text());
    // `narrow` saturated: one request holds its only permit, the next times out in
    // its queue.
    let held = tokio::spawn({
        let target = url(&gw, "/narrow/hold");
        async move { Client::new().get(&target).await.status }
    });
    crate::support::eventually("the held request reached narrow", async || {
        narrow.state.arrived() == 1
    })
    .await;
    assert_eq!(get("/narrow/ok").await, StatusCode::SERVICE_UNAVAILABLE);
    // A reload that fails (and leaves the file broken).
    replace_file(
        &config_file,
        &good_config.replace("upstream: app", "upstream: missing"),
    );
    let reload = client
        .send(Method::POST, &admin_url("/reload"), &[], "")
        .await;
    assert_eq!(reload.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Every family of the gateway is on the dashboard, or left out with a reason.
    let exposition = metrics_text(&gw).await;
    let dashboard_text = dashboard.to_string();
    let families: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let missing: Vec<&&str> = families
        .iter()
        .filter(|family| !dashboard_text.contains(**family))
        .filter(|family| !NOT_ON_THE_DASHBOARD.iter().any(|(f, _)| f == *family))
        .collect();
    assert!(
        missing.is_empty(),
        "families neither on the dashboard nor in NOT_ON_THE_DASHBOARD: {missing:?}"
    );

    // Every expression parses, then returns data once Prometheus has scraped enough.
    let values = grafana_values(&admin.to_string());
    let mut expressions = dashboard_expressions(&dashboard);
    let on_the_dashboard = expressions.len();
    expressions.extend(alert_expressions(&alerts));
    assert!(
        on_the_dashboard >= 40,
        "only {on_the_dashboard} expressions"
    );
    for expression in &mut expressions {
        expression.promql = substituted(&expression.promql, &values);
    }
    parse_with_promtool(&expressions);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut empty: Vec<&Expression> = expressions.iter().collect();
    while !empty.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still_empty = Vec::new();
        for expression in empty {
            if prometheus.results(&expression.promql).await.is_empty() {
                still_empty.push(expression);
            }
        }
        empty = still_empty;
        if !empty.is_empty() {
            tokio::time::sleep(SCRAPE_INTERVAL).await;
        }
    }
    let report: Vec<String> = empty
        .iter()
        .map(|e| format!("{}: {}", e.origin, e.promql))
        .collect();
    assert!(
        report.is_empty(),
        "{} of {} expressions returned no data:\n{}",
        report.len(),
        expressions.len(),
        report.join("\n")
    );

    narrow.state.release(1);
    app.state.release(10);
    assert_eq!(
        within("the held request", held).await.ok(),
        Some(StatusCode::OK)
    );
}

/// The dashboard's shape: a templated Prometheus data source used by every panel and
/// query, the instance, route and upstream variables, and targets on every panel.
fn check_dashboard_shape(dashboard: &Value) {
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let names: Vec<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["DS_PROMETHEUS", "instance", "route", "upstream"]);
    assert_eq!(variables[0]["type"], "datasource");
    assert_eq!(variables[0]["query"], "prometheus");
    let source = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], source, "panel {title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            assert_eq!(target["datasource"], source, "panel {title}");
        }
    }
    for variable in &variables[1..] {
        assert_eq!(
            variable["datasource"], source,
            "variable {}",
            variable["name"]
        );
    }
}
