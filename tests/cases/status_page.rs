//! The admin listener's status page (`GET /`) and its JSON (`GET /status`): rendered
//! by a real headless Chromium while the gateway serves traffic, an endpoint's death
//! seen on the rendered page, configuration values shown as text (never markup), and
//! nothing secret in either.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::chromium::Chromium;
use crate::support::pki::Pki;
use crate::support::{
    closed_port, eventually, reloadable_from_file, replace_file, url, Backend, Client, Gateway,
    HealthCheck, Listener, Outlier, Reply, Route, Tls, Upstream,
};
use portcullis::RunningGateway;

/// A header value a route matches on, which a page that inserted configuration as
/// markup would turn into an element.
const HOSTILE: &str = "<img id=injected src=x onerror=alert(1)>";

/// Virtual time the page's script gets in the browser: the initial render and at
/// least one refresh from `GET /status` (every 2 s).
const PAGE_TIME: Duration = Duration::from_millis(4500);

fn admin_url(gateway: &RunningGateway, path: &str) -> String {
    format!(
        "http://{}{path}",
        gateway.admin_addr().expect("an admin listener")
    )
}

async fn status(gateway: &RunningGateway) -> serde_json::Value {
    Client::new()
        .get(&admin_url(gateway, "/status"))
        .await
        .json()
}

/// The `state` of endpoint `address` of upstream `name` in a status document.
fn endpoint_state(status: &serde_json::Value, name: &str, address: &str) -> Option<String> {
    status["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["name"] == name)?["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == address)
        .and_then(|e| e["state"].as_str().map(str::to_owned))
}

/// The opening tag of the row the page's script renders for an endpoint.
fn endpoint_row(upstream: &str, address: &str, state: &str) -> String {
    format!(
        "<tr class=\"endpoint\" data-upstream=\"{upstream}\" data-endpoint=\"{address}\" data-state=\"{state}\">"
    )
}

/// How many times the page's script rendered a document it fetched from `/status`.
fn refreshes(dom: &str) -> u32 {
    let marker = "data-refreshes=\"";
    dom.find(marker)
        .and_then(|at| {
            let rest = &dom[at + marker.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .unwrap_or(0)
}

/// Requests to `path` every few milliseconds until `stop` (at most 3,000 of them, or
/// 60 s).
fn traffic(address: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for _ in 0..3_000 {
            if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                break;
            }
            let _ = client.get(&address).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_renders_the_upstreams_and_sees_a_dead_endpoint_go_down() {
    let browser = Chromium::new();
    let a = Backend::start(|_, _| async { Reply::ok("a") }).await;
    let b = Backend::start(|_, _| async { Reply::ok("b") }).await;
    let (a_url, b_url) = (a.url(), b.url());
    let gw = Gateway::new()
        .admin()
        .upstream(
            "app",
            Upstream::endpoints([&a, &b]).health_check(
                HealthCheck::path("/health")
                    .interval(Duration::from_millis(100))
                    .timeout(Duration::from_millis(500))
                    .unhealthy_threshold(1),
            ),
        )
        .route_with(Route::prefix("/").named("everything").to("app"))
        .route_with(
            Route::path("/probe")
                .named("probe")
                .to("app")
                .header("x-probe", HOSTILE),
        )
        .start()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(url(&gw, "/"), stop.clone());
    eventually("the traffic is counted", async || {
        status(&gw).await["upstreams"][0]["requests_total"]
            .as_u64()
            .unwrap_or(0)
            >= 10
    })
    .await;

    let page = admin_url(&gw, "/");
    let dom = browser.dump_dom(&page, PAGE_TIME).await;
    for address in [&a_url, &b_url] {
        assert!(
            dom.contains(&endpoint_row("app", address, "up")),
            "no row for {address} up in the rendered page:\n{dom}"
        );
    }
    assert!(
        refreshes(&dom) >= 1,
        "the page's script never rendered a fetched /status:\n{dom}"
    );
    assert!(dom.contains("data-route=\"probe\""), "{dom}");
    assert!(
        dom.contains("x-probe: &lt;img id=injected src=x onerror=alert(1)&gt;"),
        "the header value is not shown as text:\n{dom}"
    );
    assert!(!dom.contains("<img"), "configuration became markup:\n{dom}");

    drop(b);
    eventually("/status shows the killed endpoint down", async || {
        endpoint_state(&status(&gw).await, "app", &b_url).as_deref() == Some("down")
    })
    .await;
    let dom = browser.dump_dom(&page, PAGE_TIME).await;
    assert!(
        dom.contains(&endpoint_row("app", &b_url, "down")),
        "the rendered page does not show {b_url} down:\n{dom}"
    );
    assert!(dom.contains(&endpoint_row("app", &a_url, "up")), "{dom}");

    let shots = tempfile::tempdir().expect("temp dir");
    let screenshot = shots.path().join("status.png");
    browser.screenshot(&page, &screenshot, PAGE_TIME).await;
    // Kept for a person to look at: the temp dir is left in place.
    let kept = shots.keep();
    println!(
        "status page screenshot: {}",
        kept.join("status.png").display()
    );

    stop.store(true, Ordering::Relaxed);
    load.await.expect("the traffic task ends");
}

#[tokio::test]
async fn neither_page_nor_json_shows_a_password_or_key_material() {
    let pki = Pki::new("status page CA");
    let issued = pki.issue(&["localhost"]);
    let (cert, key) = pki.write("listener", &issued);
    let backend = Backend::echo().await;
    let redis = closed_port();
    let password = "s3cret-hunter2";
    let gw = Gateway::new()
        .listener(Listener::public().tls(Tls::certificate(&cert, &key)))
        .admin()
        .upstream("app", &backend)
        .raw(
            "rate_limit_stores",
            &format!("{{ shared: {{ redis: {{ url: \"redis://gw:{password}@{redis}/2\" }} }} }}"),
        )
        .raw(
            "policies",
            "{ limited: { rate_limit: [ { key: client_ip, rate: 10/s, store: shared } ] } }",
        )
        .route_with(Route::prefix("/").to("app").policies(&["limited"]))
        .start()
        .await;

    let page = Client::new().get(&admin_url(&gw, "/")).await;
    let json = Client::new().get(&admin_url(&gw, "/status")).await;
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(json.header("content-type"), Some("application/json"));
    let key_lines: Vec<&str> = issued
        .key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    assert!(!key_lines.is_empty());
    for (what, text) in [("GET /", page.text()), ("GET /status", json.text())] {
        assert!(!text.contains(password), "{what} shows the Redis password");
        assert!(!text.contains("gw:"), "{what} shows the Redis user");
        assert!(!text.contains("PRIVATE KEY"), "{what} shows key material");
        for line in &key_lines {
            assert!(!text.contains(line), "{what} shows a line of the key");
        }
    }
    let status = json.json();
    assert_eq!(
        status["rate_limit_stores"][0]["url"],
        format!("redis://{}:{}/2", redis.ip(), redis.port())
    );
    assert_eq!(status["listeners"][0]["scheme"], "https");
    assert_eq!(
        status["listeners"][0]["tls"]["certificates"][0]["names"][0],
        "localhost"
    );
    assert_eq!(status["routes"][0]["policies"][0]["kinds"][0], "rate_limit");
}

#[tokio::test]
async fn the_json_lists_routes_in_match_order_limits_and_recent_reloads() {
    let backend = Backend::echo().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("gateway.yaml");
    let text = Gateway::new()
        .admin()
        .watch_config(false)
        .upstream(
            "fixed",
            Upstream::new(&backend).max_in_flight(7).max_queue(3),
        )
        .upstream(
            "adaptive",
            Upstream::new(&backend).adaptive_max_in_flight(2, 40),
        )
        .route_with(Route::prefix("/").named("fallback").to("fixed"))
        .route_with(Route::prefix("/api").named("api").to("adaptive"))
        .route_with(Route::path("/api/users/{id}").named("user").to("adaptive"))
        .route_with(Route::path("/api/users/me").named("me").to("fixed"))
        .yaml();
    let gw = reloadable_from_file(&file, &text).await;
    let client = Client::new();
    assert_eq!(client.get(&url(&gw, "/api/users/me")).await.status, 200);

    replace_file(&file, "listeners: [ { name: public");
    let reload = client
        .send(
            http::Method::POST,
            &admin_url(&gw, "/reload"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(reload.status, 422);

    let status = status(&gw).await;
    let routes: Vec<&str> = status["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(routes, ["me", "user", "api", "fallback"]);
    assert_eq!(status["routes"][0]["match"]["path_kind"], "exact");
    assert_eq!(status["routes"][0]["target"]["kind"], "proxy");
    assert_eq!(status["routes"][0]["target"]["upstream"], "fixed");
    assert_eq!(status["routes"][0]["requests_total"], 1);
    assert_eq!(status["routes"][0]["errors_total"], 0);
    assert_eq!(status["routes"][2]["match"]["path"], "/api");
    assert_eq!(status["routes"][2]["match"]["path_kind"], "prefix");

    let upstream = |name: &str| {
        status["upstreams"]
            .as_array()
            .expect("upstreams")
            .iter()
            .find(|u| u["name"] == name)
            .cloned()
            .expect("the upstream")
    };
    let fixed = upstream("fixed");
    assert_eq!(fixed["limit"]["kind"], "fixed");
    assert_eq!(fixed["limit"]["current"], 7);
    assert_eq!(fixed["max_queue"], 3);
    assert_eq!(fixed["in_flight"], 0);
    assert_eq!(fixed["queued"], 0);
    assert_eq!(fixed["requests_total"], 1);
    assert_eq!(fixed["endpoints"][0]["address"], backend.url());
    assert_eq!(fixed["endpoints"][0]["state"], "up");
    let adaptive = upstream("adaptive");
    assert_eq!(adaptive["limit"]["kind"], "adaptive");
    assert_eq!(adaptive["limit"]["min"], 2);
    assert_eq!(adaptive["limit"]["max"], 40);

    assert_eq!(status["config"]["file"], file.display().to_string());
    assert_eq!(status["config"]["reloadable"], true);
    let reloads = status["reloads"].as_array().expect("reloads");
    assert_eq!(reloads.len(), 1);
    assert_eq!(reloads[0]["trigger"], "admin");
    assert_eq!(reloads[0]["result"], "failure");
    assert!(
        reloads[0]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("gateway.yaml")),
        "{reloads:?}"
    );
    assert!(status["listeners"][0]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:") && !a.ends_with(":0")));
}

#[tokio::test]
async fn an_endpoint_ejected_by_outlier_detection_is_shown_ejected_with_its_errors() {
    let good = Backend::start(|_, _| async { Reply::ok("good") }).await;
    let bad = Backend::start(|_, _| async {
        Reply::text(http::StatusCode::INTERNAL_SERVER_ERROR, "bad")
    })
    .await;
    let gw = Gateway::new()
        .admin()
        .upstream(
            "app",
            Upstream::endpoints([&good, &bad]).outlier(
                Outlier::consecutive_failures(2).base_ejection_time(Duration::from_secs(60)),
            ),
        )
        .route("/", "app")
        .start()
        .await;
    let client = Client::new();
    eventually("the failing endpoint is ejected", async || {
        let _ = client.get(&url(&gw, "/")).await;
        endpoint_state(&status(&gw).await, "app", &bad.url()).as_deref() == Some("ejected")
    })
    .await;
    let status = status(&gw).await;
    let endpoints = status["upstreams"][0]["endpoints"]
        .as_array()
        .expect("endpoints");
    let bad_row = endpoints
        .iter()
        .find(|e| e["address"] == bad.url())
        .expect("the bad endpoint");
    assert_eq!(bad_row["reason"], "consecutive_failures");
    assert!(bad_row["errors_total"].as_u64() >= Some(2), "{bad_row}");
    assert_eq!(bad_row["errors_total"], bad_row["requests_total"]);
    assert_eq!(status["upstreams"][0]["outlier_detection"], true);
    assert!(
        status["routes"][0]["errors_total"].as_u64() >= Some(2),
        "{status}"
    );
}
