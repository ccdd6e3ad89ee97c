//! The `portcullis` binary as users run it: `check` and its errors, SIGTERM, SIGHUP,
//! and both worker models.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use http::StatusCode;

use crate::support::{
    eventually, metric, within, Backend, Client, Gateway, Listener, Reply, Route, Upstream,
    WorkerModel,
};

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, text).expect("writes config");
    path
}

fn check(path: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_repository_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr, "",
        "the demo's configuration passes without warnings"
    );
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(stdout.contains("routes, in match order"), "{stdout}");
}

#[test]
fn check_lists_rate_limit_stores_without_their_passwords() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        r#"listeners: [{ name: public, address: "127.0.0.1:8080" }]
upstreams: { app: { endpoints: ["http://127.0.0.1:9201"] } }
routes: [{ name: app, match: { path_prefix: / }, upstream: app }]
rate_limit_stores:
  shared: { redis: { url: "redis://gw:hunter2@cache.internal:6380/1", timeout: 20ms }, on_error: deny }
"#,
    );
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("shared       redis://gw:***@cache.internal:6380/1, timeout 20ms, pool 4, on_error deny"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn every_config_error_is_reported_with_its_location_and_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        r#"listeners:
  - name: public
    address: 127.0.0.1:8080
upstreams:
  orders:
    endpoints: ["http://127.0.0.1:9201", "ftp://nowhere"]
    max_in_flight: 0
routes:
  - name: orders
    match: { path_prefix: orders }
    upstream: ordres
  - name: orders
    match: { path: /x }
    upstream: orders
    rewrite: { path: "/y/{id}" }
"#,
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2, "{stderr}");
    let file = path.display().to_string();
    for expected in [
        format!("{file}:6:42: upstreams.orders.endpoints[1]: endpoint \"ftp://nowhere\" needs the http:// or https:// scheme"),
        format!("{file}:7:20: upstreams.orders.max_in_flight: must be at least 1"),
        format!("{file}:10:27: routes[0].match.path_prefix: path_prefix \"orders\" must start with `/`"),
        format!("{file}:11:15: routes[0].upstream: unknown upstream \"ordres\" (did you mean \"orders\"?)"),
        format!("{file}:12:11: routes[1].name: route name \"orders\" is already used by routes[0]"),
        format!("{file}:15:22: routes[1].rewrite.path: template \"/y/{{id}}\" uses `{{id}}`"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("6 errors in configuration"), "{stderr}");
}

#[test]
fn type_errors_and_unknown_keys_are_located() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "listeners: [{ name: p, address: 127.0.0.1:1 }]\nupstreams:\n  u: { endpoints: [\"http://a:1\"], timeout: 5 }\n",
            ":3:44: upstreams.u.timeout: duration 5 has no unit",
        ),
        (
            "listeners: [{ name: p, address: 127.0.0.1:1, max_conections: 5 }]\n",
            "listeners[0]: unknown field `max_conections`",
        ),
        (
            "listeners: [{ name: p, address: 127.0.0.1:1 }]\nupstreams:\n  u: { endpoints: [\"http://a:1\"], balance: fastest }\n",
            "unknown variant `fastest`, expected one of `round_robin`, `least_request`, `random`",
        ),
        ("listeners: [\n", "did not find expected"),
    ];
    for (text, expected) in cases {
        let path = write_config(&dir, text);
        let (code, _, stderr) = check(&path);
        assert_eq!(code, 2, "{text}\n{stderr}");
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let (code, _, stderr) = check(&dir.path().join("missing.yaml"));
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

/// The real binary, serving a config file, with its JSON log lines readable.
struct RunningBinary {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// The `public` listener's address, from the "listening" log line.
    address: String,
}

impl RunningBinary {
    async fn start(config: &std::path::Path) -> RunningBinary {
        RunningBinary::start_with(config, &[]).await
    }

    /// Started with `arguments` after `run -c CONFIG`.
    async fn start_with(config: &std::path::Path, arguments: &[&std::ffi::OsStr]) -> RunningBinary {
        let mut command = Command::new(BINARY);
        command
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .args(arguments);
        RunningBinary::spawn(command).await
    }

    /// Started with an open-files limit (soft and hard) of `limit`.
    async fn start_with_open_files(config: &std::path::Path, limit: u32) -> RunningBinary {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -n {limit} && exec \"$0\" --log-format json run -c \"$1\""
            ))
            .arg(BINARY)
            .arg(config);
        RunningBinary::spawn(command).await
    }

    async fn spawn(mut command: Command) -> RunningBinary {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starts");
        let stderr = child.stderr.take().expect("stderr");
        let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = RunningBinary {
            child,
            lines,
            address: String::new(),
        };
        let line = running.wait_for_log("\"message\":\"listening\"").await;
        let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        running.address = entry["fields"]["address"]
            .as_str()
            .expect("address")
            .to_owned();
        running
    }

    /// Waits for a log line containing `text` and returns it.
    async fn wait_for_log(&mut self, text: &str) -> String {
        within(&format!("a log line with {text}"), async {
            loop {
                let line = self.lines.recv().await.expect("the gateway is running");
                if line.contains(text) {
                    return line;
                }
            }
        })
        .await
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    async fn exit_code(self) -> Option<i32> {
        let mut child = self.child;
        within(
            "the gateway exits",
            tokio::task::spawn_blocking(move || child.wait()),
        )
        .await
        .expect("joins")
        .expect("waits")
        .code()
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let held = Backend::holding().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        &Gateway::new()
            .shutdown_timeout(std::time::Duration::from_secs(30))
            .upstream("u", &held)
            .route("/", "u")
            .yaml(),
    );
    let mut gateway = RunningBinary::start(&path).await;
    let address = gateway.address.clone();
    let in_flight =
        tokio::spawn(async move { Client::new().get(&format!("http://{address}/x")).await });
    eventually("the request is in flight", async || {
        held.state.arrived() == 1
    })
    .await;
    gateway.signal("-TERM");
    gateway.wait_for_log("shutting down").await;
    held.state.release(1);
    let reply = within("the in-flight request", in_flight)
        .await
        .expect("joins");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(gateway.exit_code().await, Some(0));
}

#[tokio::test]
async fn sighup_reloads_the_configuration_file() {
    let backend = Backend::echo().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || {
        Gateway::new()
            .watch_config(false)
            .upstream("u", &backend)
            .route_with(Route::prefix("/a").named("a").to("u"))
    };
    let path = write_config(&dir, &config().yaml());
    let mut gateway = RunningBinary::start(&path).await;
    let client = Client::new();
    let url = format!("http://{}/b", gateway.address);
    assert_eq!(client.get(&url).await.status, StatusCode::NOT_FOUND);

    write_config(
        &dir,
        &config()
            .route_with(Route::prefix("/b").named("b").to("u"))
            .yaml(),
    );
    gateway.signal("-HUP");
    gateway.wait_for_log("configuration reloaded").await;
    assert_eq!(client.get(&url).await.status, StatusCode::OK);
    gateway.signal("-TERM");
    assert_eq!(gateway.exit_code().await, Some(0));
}

#[tokio::test]
async fn the_binary_serves_and_stops_with_either_worker_model() {
    let backend = Backend::start(|_, _| async move { Reply::ok("pong") }).await;
    for (workers, worker_model) in [(3, WorkerModel::PerCore), (2, WorkerModel::WorkStealing)] {
        let model = worker_model.as_str();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(
            &dir,
            &Gateway::new()
                .workers(workers)
                .worker_model(worker_model)
                .admin()
                .upstream("u", &backend)
                .route("/", "u")
                .yaml(),
        );
        let mut gateway = RunningBinary::start(&path).await;
        let admin_line = gateway.wait_for_log("admin listening").await;
        let entry: serde_json::Value = serde_json::from_str(&admin_line).expect("JSON");
        let admin = entry["fields"]["address"]
            .as_str()
            .expect("address")
            .to_owned();
        for _ in 0..20 {
            let reply = Client::new()
                .send(
                    http::Method::GET,
                    &format!("http://{}/x", gateway.address),
                    &[("connection", "close")],
                    "",
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{model}");
            assert_eq!(reply.text(), "pong");
        }
        // Per core: each worker accepts on its own socket. Work stealing: one runtime,
        // whose threads share one socket.
        let text = Client::new()
            .get(&format!("http://{admin}/metrics"))
            .await
            .text();
        let accepted: Vec<f64> = (0..workers)
            .map_while(|worker| {
                metric(
                    &text,
                    &format!("portcullis_worker_connections_total{{worker=\"{worker}\"}}"),
                )
            })
            .collect();
        assert_eq!(accepted.iter().sum::<f64>(), 20.0, "{model}: {text}");
        let sockets = if model == "per_core" { workers } else { 1 };
        assert_eq!(accepted.len(), sockets, "{model}: {text}");
        gateway.signal("-TERM");
        assert_eq!(gateway.exit_code().await, Some(0), "{model}");
    }
}

/// A config file in `dir`: two per-core workers whose listener is on a fixed free port
/// (as deployments have; port 0 would give every process a port of its own), in front
/// of `backend`. Returns the file and the port.
fn two_workers_on_a_fixed_port(
    dir: &tempfile::TempDir,
    backend: &Backend,
) -> (std::path::PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let path = write_config(
        dir,
        &Gateway::new()
            .listener(Listener::public().port(port))
            .workers(2)
            .worker_model(WorkerModel::PerCore)
            .upstream("u", backend)
            .route("/", "u")
            .yaml(),
    );
    (path, port)
}

#[tokio::test]
async fn a_second_gateway_on_the_same_address_refuses_to_start() {
    let backend = Backend::start(|_, _| async move { Reply::ok("first") }).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Per-core workers bind their sockets with SO_REUSEPORT, which alone would let the
    // second process join the first one's group and take a share of its clients.
    let (path, port) = two_workers_on_a_fixed_port(&dir, &backend);
    let first = RunningBinary::start(&path).await;
    let mut second = Command::new(BINARY)
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // It must exit at once; one still running after 10 s is killed (and fails the test).
    let mut exited = None;
    for _ in 0..200 {
        exited = second.try_wait().expect("waits");
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if exited.is_none() {
        let _ = second.kill();
        let _ = second.wait();
        panic!("the second gateway started on an address the first one serves");
    }
    let output = second.wait_with_output().expect("its output");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} for listener \"public\": Address already in use"
        )),
        "{stderr}"
    );
    // Every connection still reaches the first gateway.
    for _ in 0..20 {
        let reply = Client::new()
            .send(
                http::Method::GET,
                &format!("http://{}/x", first.address),
                &[("connection", "close")],
                "",
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    first.signal("-TERM");
    assert_eq!(first.exit_code().await, Some(0));
}

/// Requests in a loop until `stop`, the way a client meets the gateway: `fresh` opens a
/// connection per request, else one pooled keep-alive connection is reused (hyper's
/// client resends a request whose reused connection closed before it was written).
/// Returns (answered with 200, failed).
async fn request_loop(
    address: String,
    fresh: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    use http_body_util::{BodyExt, Empty};
    let mut builder =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    if fresh {
        builder.pool_max_idle_per_host(0);
    }
    let client = builder.build_http::<Empty<bytes::Bytes>>();
    let (mut answered, mut failed) = (0, 0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let uri: http::Uri = format!("http://{address}/x").parse().expect("uri");
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let response = client.get(uri).await.map_err(|e| e.to_string())?;
            let status = response.status();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(status)
        })
        .await;
        match outcome {
            Ok(Ok(StatusCode::OK)) => answered += 1,
            other => {
                eprintln!(
                    "a request failed ({}): {other:?}",
                    if fresh { "fresh" } else { "keep-alive" }
                );
                failed += 1;
            }
        }
    }
    (answered, failed)
}

#[tokio::test]
async fn a_binary_upgrade_under_load_fails_no_request() {
    let backend = Backend::start(|_, _| async move { Reply::ok("pong") }).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("upgrade.sock");
    let (path, _) = two_workers_on_a_fixed_port(&dir, &backend);
    let upgrade_socket = [std::ffi::OsStr::new("--upgrade-socket"), socket.as_os_str()];
    let old = RunningBinary::start_with(&path, &upgrade_socket).await;

    // A second gateway without --upgrade is told who serves, and exits.
    let refused = Command::new(BINARY)
        .args(["run", "-c"])
        .arg(&path)
        .args(upgrade_socket)
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "another gateway (pid {}) serves upgrade socket",
            old.child.id()
        )),
        "{stderr}"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = [true, false, true, false]
        .into_iter()
        .map(|fresh| tokio::spawn(request_loop(old.address.clone(), fresh, stop.clone())))
        .collect();
    eventually("requests flow", async || backend.state.arrived() >= 50).await;

    let mut arguments = upgrade_socket.to_vec();
    arguments.push(std::ffi::OsStr::new("--upgrade"));
    let mut new = RunningBinary::start_with(&path, &arguments).await;
    assert_eq!(
        new.address, old.address,
        "the new process serves the same address"
    );
    new.wait_for_log("binary upgrade: serving").await;
    let old_pid = old.child.id();
    assert_eq!(
        old.exit_code().await,
        Some(0),
        "the old process drains and exits"
    );
    let served_before = backend.state.arrived();
    eventually("the new process serves", async || {
        backend.state.arrived() >= served_before + 50
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for handle in loops {
        let (ok, failed) = handle.await.expect("joins");
        assert_eq!(failed, 0, "requests failed during the upgrade");
        answered += ok;
    }
    assert!(answered >= 100, "{answered} requests answered");

    // The new process took over the upgrade socket: it is the one a third one finds.
    let who = Command::new(BINARY)
        .args(["run", "-c"])
        .arg(&path)
        .args(upgrade_socket)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&who.stderr);
    assert!(
        stderr.contains(&format!("another gateway (pid {}) serves", new.child.id())),
        "{stderr}"
    );
    assert_ne!(new.child.id(), old_pid);
    new.signal("-TERM");
    assert_eq!(new.exit_code().await, Some(0));
}

/// One request on an open keep-alive connection; the status code, or 0 when no
/// response came.
async fn one_request(stream: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .is_err()
    {
        return 0;
    }
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return 0,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
        let text = String::from_utf8_lossy(&received);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text[9..12].parse().unwrap_or(0);
            }
        }
    }
}

#[tokio::test]
async fn client_connections_do_not_starve_upstream_connects_of_descriptors() {
    // 150 idle keep-alive clients under an open-files limit of 200, then every one sends
    // a request at once: the upstream connects need more descriptors than are left.
    const CLIENTS: usize = 150;
    let backend = Backend::start(|_, _| async move {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        Reply::ok("pong")
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        &Gateway::new()
            .workers(1)
            .listener(Listener::public().max_connections(170))
            .upstream("u", Upstream::new(&backend).max_in_flight(150))
            .route("/", "u")
            .yaml(),
    );
    // `check` tells that this cannot fit.
    let checked = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 200 && exec \"$0\" check -c \"$1\"")
        .arg(BINARY)
        .arg(&path)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(
        stderr.contains("file descriptors open at once")
            && stderr.contains("open-files limit is 200"),
        "{stderr}"
    );
    let gateway = RunningBinary::start_with_open_files(&path, 200).await;
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut stream = tokio::net::TcpStream::connect(&gateway.address)
            .await
            .expect("connects");
        assert_eq!(one_request(&mut stream).await, 200, "served while idle");
        clients.push(stream);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let requests: Vec<_> = clients
        .into_iter()
        .map(|mut stream| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                one_request(&mut stream).await
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for request in requests {
        let status = within("an answer", request).await.expect("joins");
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(200, CLIENTS)].into_iter().collect(), "statuses");
    gateway.signal("-TERM");
    assert_eq!(gateway.exit_code().await, Some(0));
}

#[test]
fn pretty_logs_to_a_file_or_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        "listeners: [{ name: public, address: \"127.0.0.1:0\" }]\n",
    );
    let mut child = Command::new(BINARY)
        .args(["--log-format", "pretty", "run", "-c"])
        .arg(&path)
        .env_remove("NO_COLOR")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let done = line.contains("listening");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(text.contains("listening"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in: {text:?}");
}

#[test]
fn a_fatal_start_up_error_is_printed_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = taken.local_addr().expect("address");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        &format!("listeners: [{{ name: public, address: \"{address}\" }}]\n"),
    );
    for format in ["pretty", "json"] {
        let output = Command::new(BINARY)
            .args(["--log-format", format, "run", "-c"])
            .arg(&path)
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(1), "{format}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!(
            "error: cannot listen on {address} for listener \"public\": Address already in use (os error 98)\n"
        );
        assert!(stderr.ends_with(&expected), "{format}: {stderr}");
        assert_eq!(
            stderr.matches("Address already in use").count(),
            1,
            "{format}: {stderr}"
        );
    }
}
