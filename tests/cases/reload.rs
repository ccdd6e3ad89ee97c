//! Hot reload: changes take effect whole or not at all, broken files are reported and
//! change nothing, traffic never fails because of a reload, and state that must
//! survive (limiter, pooled connections) does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Method, StatusCode};

use crate::support::{eventually, metric, url, within, Backend, Client, Reply};

/// Writes `text` as the config file the way editors do: a new file renamed over it.
fn write_config(path: &Path, text: &str) {
    let temporary = path.with_extension("yaml.tmp");
    std::fs::write(&temporary, text).expect("writes");
    std::fs::rename(&temporary, path).expect("renames");
}

async fn reloadable(path: &Path, text: &str) -> portcullis::RunningGateway {
    write_config(path, text);
    let config = portcullis::Config::load(path).expect("valid config");
    portcullis::gateway::start_reloadable(
        config,
        path.to_owned(),
        portcullis::reload::content_hash(text),
    )
    .await
    .expect("starts")
}

fn config_text(backend: &Backend, watch: bool, extra_routes: &str, upstream_extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
reload: {{ watch: {watch}, poll_interval: 50ms }}
upstreams:
  u: {{ endpoints: ["{url}"] {upstream_extra} }}
routes:
  - {{ name: old, match: {{ path_prefix: /old }}, upstream: u }}
{extra_routes}
"#,
        url = backend.url()
    )
}

fn admin(gw: &portcullis::RunningGateway, path: &str) -> String {
    format!("http://{}{path}", gw.admin_addr().expect("admin"))
}

async fn post_reload(
    client: &Client,
    gw: &portcullis::RunningGateway,
) -> crate::support::client::Reply {
    client
        .send(Method::POST, &admin(gw, "/reload"), &[], "")
        .await
}

fn temp_config() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    (dir, path)
}

#[tokio::test]
async fn an_edited_file_takes_effect_without_a_restart() {
    let backend = Backend::echo().await;
    let (_dir, path) = temp_config();
    let gw = reloadable(&path, &config_text(&backend, true, "", "")).await;
    let client = Client::new();
    assert_eq!(
        client.get(&url(&gw, "/new")).await.status,
        StatusCode::NOT_FOUND
    );

    write_config(
        &path,
        &config_text(
            &backend,
            true,
            "  - { name: new, match: { path_prefix: /new }, upstream: u }",
            "",
        ),
    );
    let mut status = StatusCode::NOT_FOUND;
    for _ in 0..2000 {
        status = client.get(&url(&gw, "/new")).await.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(status, StatusCode::OK, "the renamed-in file was picked up");
    let text = client.get(&admin(&gw, "/metrics")).await.text();
    assert_eq!(
        metric(&text, "portcullis_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_says_why() {
    let backend = Backend::echo().await;
    let (_dir, path) = temp_config();
    let gw = reloadable(&path, &config_text(&backend, true, "", "")).await;
    let client = Client::new();
    let before = client.get(&admin(&gw, "/config")).await.json();

    write_config(
        &path,
        &config_text(
            &backend,
            true,
            "  - { name: new, match: { path_prefix: /new }, upstream: missing }",
            "",
        ),
    );
    let mut status = serde_json::Value::Null;
    for _ in 0..2000 {
        status = client.get(&admin(&gw, "/config")).await.json();
        if !status["last_reload"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(status["last_reload"]["result"], "failure", "{status}");
    let error = status["last_reload"]["errors"][0]
        .as_str()
        .expect("an error")
        .to_owned();
    assert!(
        error.ends_with("gateway.yaml:9:58: routes[1].upstream: unknown upstream \"missing\"; defined upstreams: u"),
        "{error}"
    );
    assert_eq!(
        status["hash"], before["hash"],
        "the old configuration is still in use"
    );
    assert_eq!(client.get(&url(&gw, "/old")).await.status, StatusCode::OK);
    assert_eq!(
        client.get(&url(&gw, "/new")).await.status,
        StatusCode::NOT_FOUND
    );
    let text = client.get(&admin(&gw, "/metrics")).await.text();
    assert_eq!(
        metric(&text, "portcullis_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );

    let reply = post_reload(&client, &gw).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["result"], "failure");
}

#[tokio::test]
async fn post_reload_applies_the_file_now() {
    let backend = Backend::echo().await;
    let (_dir, path) = temp_config();
    let gw = reloadable(&path, &config_text(&backend, false, "", "")).await;
    let client = Client::new();
    write_config(
        &path,
        &config_text(
            &backend,
            false,
            "  - { name: new, match: { path_prefix: /new }, upstream: u }",
            "",
        ),
    );
    let reply = post_reload(&client, &gw).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["result"], "success");
    assert_eq!(client.get(&url(&gw, "/new")).await.status, StatusCode::OK);
    let status = client.get(&admin(&gw, "/config")).await.json();
    assert_eq!(status["hash"], reply.json()["hash"]);
    assert_eq!(status["last_reload"]["trigger"], "admin");

    // The admin listener is bound at start: changing it needs a restart.
    let moved = config_text(&backend, false, "", "").replace(
        "admin: { address: \"127.0.0.1:0\" }",
        "admin: { address: \"127.0.0.2:0\" }",
    );
    write_config(&path, &moved);
    let refused = post_reload(&client, &gw).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().contains("restart"), "{}", refused.text());
    assert_eq!(client.get(&url(&gw, "/new")).await.status, StatusCode::OK);

    // So are the workers.
    let more_workers = format!("workers: 97\n{}", config_text(&backend, false, "", ""));
    write_config(&path, &more_workers);
    let refused = post_reload(&client, &gw).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.text().contains("workers changed"),
        "{}",
        refused.text()
    );
    assert_eq!(client.get(&url(&gw, "/new")).await.status, StatusCode::OK);
}

/// Client loops that request `target` until stopped, counting answers that are 200
/// (with `expect_body`, when given) as served and everything else as failures.
struct Traffic {
    served: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    stop: Arc<tokio::sync::Notify>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(
        workers: usize,
        target: &str,
        headers: &'static [(&'static str, &'static str)],
        expect_body: Option<&'static str>,
    ) -> Traffic {
        let served = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(tokio::sync::Notify::new());
        let workers = (0..workers)
            .map(|_| {
                let (target, served, failures, stop) = (
                    target.to_owned(),
                    served.clone(),
                    failures.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let client = Client::new();
                    let stopped = stop.notified();
                    tokio::pin!(stopped);
                    for _ in 0..5000 {
                        tokio::select! {
                            reply = client.send(Method::GET, &target, headers, "") => {
                                let good = reply.status == StatusCode::OK
                                    && expect_body.is_none_or(|body| reply.text() == body);
                                let counter = if good { &served } else { &failures };
                                counter.fetch_add(1, Ordering::SeqCst);
                            }
                            _ = &mut stopped => break,
                        }
                    }
                })
            })
            .collect();
        Traffic {
            served,
            failures,
            stop,
            workers,
        }
    }

    /// Waits until at least one more request has been served.
    async fn flows(&self) {
        let before = self.served.load(Ordering::SeqCst);
        eventually("traffic flows", || {
            self.served.load(Ordering::SeqCst) > before
        })
        .await;
    }

    /// Stops the loops; returns (served, failures).
    async fn finish(self) -> (usize, usize) {
        self.stop.notify_waiters();
        for worker in self.workers {
            within("a traffic worker", worker).await.expect("joins");
        }
        (
            self.served.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_the_configuration_is_reloaded_again_and_again() {
    let backend =
        Backend::start(|request, _| async move { Reply::ok(request.uri().path().to_owned()) })
            .await;
    let (_dir, path) = temp_config();
    let variant = |n: usize| {
        config_text(
            &backend,
            false,
            &format!("  - {{ name: extra{n}, match: {{ path_prefix: /extra{n} }}, upstream: u }}"),
            &format!(", max_in_flight: {}", 100 + n),
        )
    };
    let gw = reloadable(&path, &variant(0)).await;
    let traffic = Traffic::start(4, &url(&gw, "/old/item"), &[], Some("/old/item"));
    let client = Client::new();
    for n in 1..=30 {
        write_config(&path, &variant(n));
        let reply = post_reload(&client, &gw).await;
        assert_eq!(reply.status, StatusCode::OK, "reload {n}: {}", reply.text());
        traffic.flows().await;
    }
    let (served, failures) = traffic.finish().await;
    assert_eq!(failures, 0, "requests failed during reloads");
    assert!(served >= 30);
    assert_eq!(
        client.get(&url(&gw, "/extra30")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn in_flight_requests_stay_counted_when_max_in_flight_changes() {
    let held = Backend::holding().await;
    let (_dir, path) = temp_config();
    let limits = |n: usize| {
        config_text(
            &held,
            false,
            "",
            &format!(", max_in_flight: {n}, max_queue: 0"),
        )
    };
    let gw = reloadable(&path, &limits(2)).await;
    let client = Client::new();
    let send = || {
        let (client, target) = (client.clone(), url(&gw, "/old"));
        tokio::spawn(async move { client.get(&target).await.status })
    };
    let first = send();
    let second = send();
    eventually("two requests in flight", || held.state.arrived() == 2).await;
    assert_eq!(
        client.get(&url(&gw, "/old")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Raise to 3: exactly one more fits beside the two still in flight.
    write_config(&path, &limits(3));
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    let third = send();
    eventually("a third request in flight", || held.state.arrived() == 3).await;
    assert_eq!(
        client.get(&url(&gw, "/old")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Lower to 1 while 3 are in flight, then let them finish: only one fits after.
    write_config(&path, &limits(1));
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    held.state.release(3);
    for request in [first, second, third] {
        assert_eq!(
            within("a held request", request).await.expect("joins"),
            StatusCode::OK
        );
    }
    let text = client.get(&admin(&gw, "/metrics")).await.text();
    assert_eq!(
        metric(&text, "portcullis_upstream_in_flight{upstream=\"u\"}"),
        Some(0.0)
    );
    let fourth = send();
    eventually("one request in flight", || held.state.arrived() == 4).await;
    assert_eq!(
        client.get(&url(&gw, "/old")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    held.state.release(1);
    assert_eq!(
        within("the last request", fourth).await.expect("joins"),
        StatusCode::OK
    );
}

#[tokio::test]
async fn pooled_connections_survive_a_reload_that_keeps_the_endpoints() {
    let backend = Backend::echo().await;
    let other = Backend::echo().await;
    let (_dir, path) = temp_config();
    let gw = reloadable(&path, &config_text(&backend, false, "", "")).await;
    let client = Client::new();
    assert_eq!(client.get(&url(&gw, "/old")).await.status, StatusCode::OK);

    write_config(
        &path,
        &config_text(&backend, false, "", ", max_in_flight: 7, timeout: 9s"),
    );
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    assert_eq!(client.get(&url(&gw, "/old")).await.status, StatusCode::OK);
    assert_eq!(
        backend.state.connections_opened.load(Ordering::SeqCst),
        1,
        "the second request reused the pooled connection"
    );

    // New endpoints: the traffic moves to them.
    write_config(&path, &config_text(&other, false, "", ""));
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    assert_eq!(client.get(&url(&gw, "/old")).await.status, StatusCode::OK);
    assert_eq!(other.state.arrived(), 1);
    assert_eq!(backend.state.arrived(), 2);
}

/// A listener section with `public` on a fixed port and, optionally, `second`.
fn with_listeners(
    backend: &Backend,
    public_port: u16,
    public_extra: &str,
    second: Option<u16>,
) -> String {
    let second = second.map_or(String::new(), |port| {
        format!("\n  - {{ name: second, address: \"127.0.0.1:{port}\" }}")
    });
    config_text(backend, false, "", "").replace(
        "listeners: [{ name: public, address: \"127.0.0.1:0\" }]",
        &format!("listeners:\n  - {{ name: public, address: \"127.0.0.1:{public_port}\" {public_extra} }}{second}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_changed_and_removed_by_a_reload() {
    let backend = Backend::echo().await;
    let (_dir, path) = temp_config();
    let (public_port, second_port) = (
        crate::support::port_to_listen_on_later(),
        crate::support::port_to_listen_on_later(),
    );
    let gw = reloadable(&path, &with_listeners(&backend, public_port, "", None)).await;
    let client = Client::new();
    let public = format!("http://127.0.0.1:{public_port}/old/x");
    let second = format!("http://127.0.0.1:{second_port}/old/x");
    assert_eq!(client.get(&public).await.status, StatusCode::OK);

    // Added.
    write_config(
        &path,
        &with_listeners(&backend, public_port, "", Some(second_port)),
    );
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    assert_eq!(client.get(&second).await.status, StatusCode::OK);

    // Changed in place, under traffic on new connections: the socket is handed over,
    // so no connection is refused, and new connections get the new limits.
    let traffic = Traffic::start(2, &public, &[("connection", "close")], None);
    for n in 0..10 {
        let extra = format!(", max_uri_length: {}", 100 + n);
        write_config(
            &path,
            &with_listeners(&backend, public_port, &extra, Some(second_port)),
        );
        assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
        traffic.flows().await;
    }
    let (_, failures) = traffic.finish().await;
    assert_eq!(failures, 0, "requests failed while the listener changed");
    let long = format!("http://127.0.0.1:{public_port}/old/{}", "x".repeat(200));
    // A new connection gets the new limits (connections opened before the change keep
    // theirs until they close).
    assert_eq!(
        Client::new()
            .send(Method::GET, &long, &[("connection", "close")], "")
            .await
            .status,
        StatusCode::URI_TOO_LONG,
        "the new limits apply"
    );

    // An address that cannot be bound fails that reload only.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let taken = squatter.local_addr().expect("address").port();
    write_config(
        &path,
        &with_listeners(&backend, public_port, "", Some(taken)),
    );
    let refused = post_reload(&client, &gw).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.text().contains(&format!("127.0.0.1:{taken}")),
        "{}",
        refused.text()
    );
    assert_eq!(
        client.get(&second).await.status,
        StatusCode::OK,
        "nothing changed"
    );

    // Removed: the address stops accepting.
    write_config(&path, &with_listeners(&backend, public_port, "", None));
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    let second_addr: std::net::SocketAddr =
        format!("127.0.0.1:{second_port}").parse().expect("address");
    let mut closed = false;
    for _ in 0..2000 {
        if tokio::net::TcpStream::connect(second_addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(closed, "the removed listener's address is closed");
    assert_eq!(client.get(&public).await.status, StatusCode::OK);
}
