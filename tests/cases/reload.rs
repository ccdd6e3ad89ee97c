//! Hot reload: changes take effect whole or not at all, broken files are reported and
//! change nothing, traffic never fails because of a reload, and state that must
//! survive (limiter, pooled connections) does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::support::{
    eventually, metric, replace_file, url, within, Backend, Client, Gateway, Listener, Reply,
    Route, Upstream,
};

/// Writes `text` as the config file the way editors do: a new file renamed over it.
fn write_config(path: &Path, text: &str) {
    replace_file(path, text);
}

/// Upstream `u` (`backend`, with what `upstream` adds) behind route `old` (`/old`), the
/// admin listener, and the file watched (polled every 50 ms) when `watch`.
fn config(backend: &Backend, watch: bool, upstream: impl FnOnce(Upstream) -> Upstream) -> Gateway {
    Gateway::new()
        .admin()
        .watch_config(watch)
        .reload_poll_interval(Duration::from_millis(50))
        .upstream("u", upstream(Upstream::new(backend)))
        .route_with(Route::prefix("/old").named("old").to("u"))
}

/// [`config`], unchanged.
fn plain(backend: &Backend, watch: bool) -> Gateway {
    config(backend, watch, |u| u)
}

/// A route `new` (`/new`) to `upstream`.
fn new_route(upstream: &str) -> Route {
    Route::prefix("/new").named("new").to(upstream)
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
    let gw = plain(&backend, true).start_reloadable(&path).await;
    let client = Client::new();
    assert_eq!(
        client.get(&url(&gw, "/new")).await.status,
        StatusCode::NOT_FOUND
    );

    write_config(
        &path,
        &plain(&backend, true).route_with(new_route("u")).yaml(),
    );
    eventually(
        "the renamed-in file was picked up (/new answers 200)",
        async || client.get(&url(&gw, "/new")).await.status == StatusCode::OK,
    )
    .await;
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
    let gw = plain(&backend, true).start_reloadable(&path).await;
    let client = Client::new();
    let before = client.get(&admin(&gw, "/config")).await.json();

    // Literal text: the error's line and column in it are asserted below.
    write_config(
        &path,
        &format!(
            r#"
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
reload: {{ watch: true, poll_interval: 50ms }}
upstreams:
  u: {{ endpoints: ["{url}"] }}
routes:
  - {{ name: old, match: {{ path_prefix: /old }}, upstream: u }}
  - {{ name: new, match: {{ path_prefix: /new }}, upstream: missing }}
"#,
            url = backend.url()
        ),
    );
    eventually("the reload is reported", async || {
        !client.get(&admin(&gw, "/config")).await.json()["last_reload"].is_null()
    })
    .await;
    let status = client.get(&admin(&gw, "/config")).await.json();
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
    assert_eq!(
        metric(&text, "portcullis_config_last_reload_successful"),
        Some(0.0)
    );

    let reply = post_reload(&client, &gw).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["result"], "failure");
}

#[tokio::test]
async fn restoring_the_file_clears_a_stale_failure() {
    let backend = Backend::echo().await;
    let (_dir, path) = temp_config();
    let good = plain(&backend, true).yaml();
    let gw = plain(&backend, true).start_reloadable(&path).await;
    let client = Client::new();
    let serving = client.get(&admin(&gw, "/config")).await.json()["hash"].clone();
    let broken = good.replace("upstream: u", "upstream: missing");
    assert_ne!(broken, good);
    write_config(&path, &broken);
    eventually("the broken file is reported", async || {
        client.get(&admin(&gw, "/config")).await.json()["last_reload"]["result"] == "failure"
    })
    .await;

    write_config(&path, &good);
    eventually("the restored file clears the failure", async || {
        client.get(&admin(&gw, "/config")).await.json()["last_reload"]["result"] == "unchanged"
    })
    .await;
    let status = client.get(&admin(&gw, "/config")).await.json();
    assert_eq!(status["hash"], serving, "{status}");
    assert_eq!(status["last_reload"]["errors"], serde_json::json!([]));
    assert_eq!(status["last_reload"]["trigger"], "filechange");
    let text = client.get(&admin(&gw, "/metrics")).await.text();
    assert_eq!(
        metric(&text, "portcullis_config_last_reload_successful"),
        Some(1.0),
        "the file in use loads again"
    );

    // The same broken content again is a new failure, reported again.
    write_config(&path, &broken);
    eventually("the broken file is reported again", async || {
        client.get(&admin(&gw, "/config")).await.json()["last_reload"]["result"] == "failure"
    })
    .await;
}

#[tokio::test]
async fn post_reload_applies_the_file_now() {
    let backend = Backend::echo().await;
    let (_dir, path) = temp_config();
    let gw = plain(&backend, false).start_reloadable(&path).await;
    let client = Client::new();
    write_config(
        &path,
        &plain(&backend, false).route_with(new_route("u")).yaml(),
    );
    let reply = post_reload(&client, &gw).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["result"], "success");
    assert_eq!(client.get(&url(&gw, "/new")).await.status, StatusCode::OK);
    let status = client.get(&admin(&gw, "/config")).await.json();
    assert_eq!(status["hash"], reply.json()["hash"]);
    assert_eq!(status["last_reload"]["trigger"], "admin");

    // The admin listener is bound at start: changing it needs a restart.
    let moved = plain(&backend, false).admin_at("127.0.0.2:0").yaml();
    write_config(&path, &moved);
    let refused = post_reload(&client, &gw).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().contains("restart"), "{}", refused.text());
    assert_eq!(client.get(&url(&gw, "/new")).await.status, StatusCode::OK);

    // So are the workers.
    let more_workers = plain(&backend, false).workers(97).yaml();
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
        eventually("traffic flows", async || {
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
        config(&backend, false, |u| u.max_in_flight(100 + n)).route_with(
            Route::prefix(&format!("/extra{n}"))
                .named(&format!("extra{n}"))
                .to("u"),
        )
    };
    let gw = variant(0).start_reloadable(&path).await;
    let traffic = Traffic::start(4, &url(&gw, "/old/item"), &[], Some("/old/item"));
    let client = Client::new();
    for n in 1..=30 {
        write_config(&path, &variant(n).yaml());
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
    let limits = |n: usize| config(&held, false, |u| u.max_in_flight(n).max_queue(0)).yaml();
    let gw = crate::support::reloadable_from_file(&path, &limits(2)).await;
    let client = Client::new();
    let send = || {
        let (client, target) = (client.clone(), url(&gw, "/old"));
        tokio::spawn(async move { client.get(&target).await.status })
    };
    let first = send();
    let second = send();
    eventually("two requests in flight", async || held.state.arrived() == 2).await;
    assert_eq!(
        client.get(&url(&gw, "/old")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Raise to 3: exactly one more fits beside the two still in flight.
    write_config(&path, &limits(3));
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    let third = send();
    eventually("a third request in flight", async || {
        held.state.arrived() == 3
    })
    .await;
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
    eventually("one request in flight", async || held.state.arrived() == 4).await;
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
    let gw = plain(&backend, false).start_reloadable(&path).await;
    let client = Client::new();
    assert_eq!(client.get(&url(&gw, "/old")).await.status, StatusCode::OK);

    write_config(
        &path,
        &config(&backend, false, |u| {
            u.max_in_flight(7).timeout(Duration::from_secs(9))
        })
        .yaml(),
    );
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    assert_eq!(client.get(&url(&gw, "/old")).await.status, StatusCode::OK);
    assert_eq!(
        backend.state.connections_opened.load(Ordering::SeqCst),
        1,
        "the second request reused the pooled connection"
    );

    // New endpoints: the traffic moves to them.
    write_config(&path, &plain(&other, false).yaml());
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    assert_eq!(client.get(&url(&gw, "/old")).await.status, StatusCode::OK);
    assert_eq!(other.state.arrived(), 1);
    assert_eq!(backend.state.arrived(), 2);
}

/// [`plain`] with listener `public` (`public`, on `public_port`) and, optionally,
/// `second`.
fn with_listeners(
    backend: &Backend,
    public_port: u16,
    public: impl FnOnce(Listener) -> Listener,
    second: Option<u16>,
) -> String {
    let gateway = plain(backend, false).listener(public(Listener::public().port(public_port)));
    match second {
        Some(port) => gateway.listener(Listener::named("second").port(port)),
        None => gateway,
    }
    .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_changed_and_removed_by_a_reload() {
    let backend = Backend::echo().await;
    let (_dir, path) = temp_config();
    let (public_port, second_port) = (
        crate::support::port_to_listen_on_later(),
        crate::support::port_to_listen_on_later(),
    );
    let gw = crate::support::reloadable_from_file(
        &path,
        &with_listeners(&backend, public_port, |l| l, None),
    )
    .await;
    let client = Client::new();
    let public = format!("http://127.0.0.1:{public_port}/old/x");
    let second = format!("http://127.0.0.1:{second_port}/old/x");
    assert_eq!(client.get(&public).await.status, StatusCode::OK);

    // Added.
    write_config(
        &path,
        &with_listeners(&backend, public_port, |l| l, Some(second_port)),
    );
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    assert_eq!(client.get(&second).await.status, StatusCode::OK);

    // Changed in place, under traffic on new connections: the socket is handed over,
    // so no connection is refused, and new connections get the new limits.
    let traffic = Traffic::start(2, &public, &[("connection", "close")], None);
    for n in 0..10 {
        write_config(
            &path,
            &with_listeners(
                &backend,
                public_port,
                |l| l.max_uri_length(100 + n),
                Some(second_port),
            ),
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
        &with_listeners(&backend, public_port, |l| l, Some(taken)),
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
    write_config(&path, &with_listeners(&backend, public_port, |l| l, None));
    assert_eq!(post_reload(&client, &gw).await.status, StatusCode::OK);
    let second_addr: std::net::SocketAddr =
        format!("127.0.0.1:{second_port}").parse().expect("address");
    eventually("the removed listener's address is closed", async || {
        tokio::net::TcpStream::connect(second_addr).await.is_err()
    })
    .await;
    assert_eq!(client.get(&public).await.status, StatusCode::OK);
}
