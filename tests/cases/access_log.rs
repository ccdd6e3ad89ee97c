//! The access log, read back from its file: every field of a proxied request, gateway
//! errors, policy refusals, aggregate routes, sampling and `slow_over`, `access_log:
//! off` on a route, redacted credentials, hostile paths and user agents, HTTP/2, the
//! file reopened on `SIGUSR1` after a rename, and lines dropped (and counted) when the
//! writer cannot keep up.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::get_http2;
use crate::support::{
    eventually, metric, metrics_text, url, within, Aggregate, Backend, Call, Client, Gateway,
    Listener, Reply, Route,
};

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

/// A temporary directory with the log's path in it.
struct LogDir {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl LogDir {
    fn new() -> LogDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("access.log");
        LogDir { _dir: dir, path }
    }

    /// The listener `public` logging to this file with `settings` (YAML mapping members).
    fn listener(&self, settings: &str) -> Listener {
        let path = self.path.display();
        let extra = if settings.is_empty() {
            String::new()
        } else {
            format!(", {settings}")
        };
        Listener::public().access_log(&format!("{{ path: \"{path}\"{extra} }}"))
    }
}

/// The file's lines, each parsed as JSON (the test fails on one that is not).
fn read_lines(path: &Path) -> Vec<Value> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map(|line| {
            let line = line.expect("a line");
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect()
}

/// Waits until the file holds `count` lines, and returns them.
async fn lines(path: &Path, count: usize) -> Vec<Value> {
    eventually(&format!("{count} access log lines"), async || {
        read_lines(path).len() >= count
    })
    .await;
    read_lines(path)
}

/// Sends `request` on a connection of its own (the request says `Connection: close`,
/// or is `refused` by the gateway) and returns the connection's local address and
/// everything the gateway answered.
async fn raw_request(addr: SocketAddr, request: &[u8]) -> (SocketAddr, String) {
    exchange(addr, request, false).await
}

async fn exchange(addr: SocketAddr, request: &[u8], refused: bool) -> (SocketAddr, String) {
    within("a raw exchange", async {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        let local = stream.local_addr().expect("a local address");
        stream.write_all(request).await.expect("writes");
        if refused {
            // Nothing more comes: the gateway, lingering after its refusal, sees the end.
            stream.shutdown().await.expect("shuts down writing");
        }
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("reads");
        (local, String::from_utf8_lossy(&answer).into_owned())
    })
    .await
}

fn listener_addr(gw: &portcullis::RunningGateway) -> SocketAddr {
    gw.listener_addr("public").expect("listener `public`")
}

#[tokio::test]
async fn a_proxied_request_has_every_field() {
    let backend = Backend::start(|_, _| async { Reply::ok("hello back") }).await;
    let log = LogDir::new();
    let gw = Gateway::new()
        .listener(log.listener(
            "query: true, headers: [x-tenant, authorization, x-api-key, x-absent], unredacted: [x-api-key]",
        ))
        .upstream("users", &backend)
        .route_with(Route::prefix("/api").named("users-route").to("users"))
        .start()
        .await;
    let (local, answer) = raw_request(
        listener_addr(&gw),
        b"POST /api/users?page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: test-agent/1.0\r\n\
          X-Request-Id: req-123\r\nX-Tenant: acme\r\nAuthorization: Bearer secret\r\n\
          X-Api-Key: key-1\r\n\
          traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
          Content-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let line = lines(&log.path, 1).await.remove(0);
    let time = line["time"].as_str().expect("a time");
    assert!(
        humantime::parse_rfc3339(time).is_ok(),
        "an RFC 3339 time: {time}"
    );
    let expected = json!({
        "request_id": "req-123",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "client_ip": "127.0.0.1",
        "peer_ip": "127.0.0.1",
        "peer_port": local.port(),
        "listener": "public",
        "protocol": "HTTP/1.1",
        "tls": null,
        "method": "POST",
        "host": "api.example.com",
        "path": "/api/users",
        "query": "page=2",
        "user_agent": "test-agent/1.0",
        "headers": {
            "x-tenant": "acme",
            "authorization": "[redacted]",
            "x-api-key": "key-1",
            "x-absent": null,
        },
        "route": "users-route",
        "upstream": "users",
        "endpoint": backend.url(),
        "status": 200,
        "bytes_in": 5,
        "bytes_out": 10,
        "retries": 0,
        "redispatches": 0,
        "decision": null,
        "error": null,
        "completed": true,
    });
    for (key, value) in expected.as_object().expect("an object") {
        assert_eq!(&line[key], value, "field {key} of {line}");
    }
    let duration = line["duration_ms"].as_f64().expect("a duration");
    let headers = line["upstream_headers_ms"]
        .as_f64()
        .expect("a time to headers");
    let queued = line["queue_wait_ms"].as_f64().expect("a queue wait");
    assert!(queued <= headers && headers <= duration, "{line}");
}

#[tokio::test]
async fn gateway_errors_and_policy_refusals_are_logged_with_their_code() {
    let backend = Backend::start(|_, _| async { Reply::ok("ok") }).await;
    let log = LogDir::new();
    let gw = Gateway::new()
        .listener(log.listener("sample: 0"))
        .raw("policies", "{ office: { ip: { deny: [127.0.0.0/8] } } }")
        .upstream("app", &backend)
        .route_with(
            Route::prefix("/guarded")
                .named("guarded")
                .policies(&["office"])
                .to("app"),
        )
        .start()
        .await;
    let client = Client::new();
    let missing = within("a 404", client.get(&url(&gw, "/nowhere"))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let refused = within("a 403", client.get(&url(&gw, "/guarded/x"))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let lines = lines(&log.path, 2).await;
    assert_eq!(lines[0]["status"], 404);
    assert_eq!(lines[0]["error"], "no_route");
    assert_eq!(lines[0]["route"], Value::Null);
    assert_eq!(lines[0]["upstream"], Value::Null);
    assert_eq!(lines[0]["endpoint"], Value::Null);
    assert_eq!(lines[1]["status"], 403);
    assert_eq!(lines[1]["route"], "guarded");
    assert_eq!(lines[1]["decision"], "ip_denied");
    assert_eq!(lines[1]["error"], "ip_denied");
    assert_eq!(lines[1]["upstream_headers_ms"], Value::Null);
    assert_eq!(backend.state.arrived(), 0);
}

#[tokio::test]
async fn an_aggregate_line_has_each_calls_outcome() {
    let ok = Backend::start(|_, _| async { Reply::ok(r#"{"ok":true}"#) }).await;
    let failing =
        Backend::start(|_, _| async { Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "boom") })
            .await;
    let log = LogDir::new();
    let gw = Gateway::new()
        .listener(log.listener(""))
        .upstream("a", &ok)
        .upstream("b", &failing)
        .route_with(
            Route::path("/dashboard").named("dashboard").aggregate(
                Aggregate::new()
                    .call("main", Call::new("a", "/"))
                    .call("broken", Call::new("b", "/").optional()),
            ),
        )
        .start()
        .await;
    let reply = within("the aggregate", Client::new().get(&url(&gw, "/dashboard"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let line = lines(&log.path, 1).await.remove(0);
    assert_eq!(line["route"], "dashboard");
    assert_eq!(line["status"], 200);
    assert_eq!(
        line["aggregate_calls"],
        json!({"main": "success", "broken": "upstream_status"})
    );
    assert_eq!(line["bytes_out"], reply.text().len());
}

#[tokio::test]
async fn sampling_keeps_errors_and_slow_requests() {
    let backend = Backend::start(|request, _| async move {
        if request.uri().path() == "/slow" {
            // What is under test: a request slower than `slow_over`.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        Reply::ok("ok")
    })
    .await;
    let log = LogDir::new();
    let gw = Gateway::new()
        .listener(log.listener("sample: 0, slow_over: 100ms"))
        .upstream("app", &backend)
        .route("/", "app")
        .start()
        .await;
    let client = Client::new();
    for _ in 0..5 {
        let reply = within("a fast request", client.get(&url(&gw, "/fast"))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    within("a slow request", client.get(&url(&gw, "/slow"))).await;
    let (_, answer) = raw_request(
        listener_addr(&gw),
        b"GET /bad/../path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let lines = lines(&log.path, 2).await;
    // Each line is emitted when its response has been sent: in either order.
    let mut lines = lines;
    lines.sort_by_key(|line| line["status"].as_u64());
    let paths: Vec<&Value> = lines.iter().map(|line| &line["path"]).collect();
    assert_eq!(
        paths,
        [&json!("/slow"), &json!("/bad/../path")],
        "{lines:?}"
    );
    assert!(lines[0]["duration_ms"].as_f64().expect("a duration") >= 100.0);
    assert_eq!(lines[1]["status"], 400);
    assert_eq!(lines[1]["error"], "bad_request");
}

#[tokio::test]
async fn a_route_with_access_log_off_is_not_logged() {
    let backend = Backend::start(|_, _| async { Reply::ok("ok") }).await;
    let log = LogDir::new();
    let gw = Gateway::new()
        .listener(log.listener(""))
        .upstream("app", &backend)
        .route_with(
            Route::prefix("/health")
                .named("health")
                .to("app")
                .raw("access_log", "off"),
        )
        .route_with(Route::prefix("/").named("rest").to("app"))
        .start()
        .await;
    let client = Client::new();
    within("an unlogged request", client.get(&url(&gw, "/health"))).await;
    within("a logged request", client.get(&url(&gw, "/other"))).await;
    let lines = lines(&log.path, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["route"], "rest");
}

#[tokio::test]
async fn hostile_paths_and_user_agents_still_give_valid_json() {
    let backend = Backend::start(|_, _| async { Reply::ok("ok") }).await;
    let log = LogDir::new();
    let gw = Gateway::new()
        .listener(log.listener("query: true, headers: [x-tenant]"))
        .upstream("app", &backend)
        .route("/", "app")
        .start()
        .await;
    // The target holds what a request line may carry; the header values, anything
    // but control characters.
    let mut request =
        b"GET /a%22b%5Cc%00'~!$&*+;=:@?q=%22},{%22x%22:1 HTTP/1.1\r\nHost: x\r\n".to_vec();
    request.extend_from_slice(b"User-Agent: evil\"}\t{\"injected\":true,\xff\xfe\x80\r\n");
    request.extend_from_slice(b"X-Tenant: \"\\\xc3\x28\r\nConnection: close\r\n\r\n");
    let (_, answer) = raw_request(listener_addr(&gw), &request).await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    // `read_lines` fails on a line that is not JSON.
    let line = lines(&log.path, 1).await.remove(0);
    assert_eq!(line["path"], "/a%22b%5Cc%00'~!$&*+;=:@");
    assert_eq!(line["query"], "q=%22},{%22x%22:1");
    assert_eq!(
        line["user_agent"],
        "evil\"}\t{\"injected\":true,\u{fffd}\u{fffd}\u{fffd}"
    );
    assert_eq!(line["headers"]["x-tenant"], "\"\\\u{fffd}(");
    assert!(line.get("injected").is_none());
    // Quotes, braces and backslashes in the target itself.
    let (_, answer) = raw_request(
        listener_addr(&gw),
        b"GET /a\"b{\\}\"x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let quoted = lines(&log.path, 2).await.remove(1);
    assert_eq!(quoted["path"], "/a\"b{\\}\"x");
    // A head the server refuses before routing (a field line without a colon) is
    // logged too, with what is known of it.
    let (_, answer) = exchange(
        listener_addr(&gw),
        b"GET /x HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        true,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let refused = lines(&log.path, 3).await.remove(2);
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["error"], "bad_request");
    assert_eq!(refused["path"], Value::Null);
    assert_eq!(refused["headers"], json!({"x-tenant": null}));
}

#[tokio::test]
async fn http2_requests_are_logged() {
    let backend = Backend::start(|_, _| async { Reply::ok("over h2") }).await;
    let log = LogDir::new();
    let gw = Gateway::new()
        .listener(log.listener(""))
        .upstream("app", &backend)
        .route("/", "app")
        .start()
        .await;
    let stream = TcpStream::connect(listener_addr(&gw))
        .await
        .expect("connects");
    let (_, status, body) =
        within("an h2c GET", get_http2(stream, "http", "h2.example", "/h2")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "over h2"));
    let line = lines(&log.path, 1).await.remove(0);
    assert_eq!(line["protocol"], "HTTP/2");
    assert_eq!(line["host"], "h2.example");
    assert_eq!(line["path"], "/h2");
    assert_eq!(line["bytes_out"], 7);
    assert_eq!(line["completed"], true);
}

#[tokio::test]
async fn a_full_queue_drops_lines_and_counts_them() {
    // The log is a FIFO this test holds open but does not read: the writer thread
    // blocks once the pipe is full, the queue (one line) fills, and further lines must
    // be dropped without holding up a request.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fifo = dir.path().join("access.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // Opening a FIFO's read end waits for a writer: in a thread of its own.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::File::open(fifo).expect("opens the FIFO"))
    };
    let backend = Backend::start(|_, _| async { Reply::ok("ok") }).await;
    let path = fifo.display();
    let gw = Gateway::new()
        .listener(Listener::public().access_log(&format!(
            "{{ path: \"{path}\", queue: 1, headers: [x-padding] }}"
        )))
        .admin()
        .upstream("app", &backend)
        .route("/", "app")
        .start()
        .await;
    // Lines of ~4 KiB: a pipe (64 KiB by default) holds a few dozen of them.
    let padding = "p".repeat(4000);
    let client = Client::new();
    let requests = 200;
    for _ in 0..requests {
        let reply = within(
            "a request while the log is stuck",
            client.send(
                http::Method::GET,
                &url(&gw, "/"),
                &[("x-padding", &padding)],
                "",
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let text = metrics_text(&gw).await;
    let dropped = metric(&text, "portcullis_access_log_dropped_total").expect("the counter");
    assert!(dropped > 0.0, "no line was dropped:\n{text}");
    // The writer opened the FIFO with the first line (which let the reader's open
    // return); reading it frees the writer: every line is either written or dropped.
    let reader = reader.join().expect("the reader thread");
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let line = line.expect("a line");
            let value: Value = serde_json::from_str(&line).expect("a JSON line");
            if read_tx.send(value).is_err() {
                break;
            }
        }
    });
    let counted = async |gw: &portcullis::RunningGateway| {
        let text = metrics_text(gw).await;
        let written = metric(&text, "portcullis_access_log_lines_total").unwrap_or(0.0);
        let dropped = metric(&text, "portcullis_access_log_dropped_total").unwrap_or(0.0);
        (written, dropped)
    };
    eventually("every line written or dropped", async || {
        let (written, dropped) = counted(&gw).await;
        written + dropped == f64::from(requests)
    })
    .await;
    let (written, _) = counted(&gw).await;
    assert!(
        written > 0.0 && written < f64::from(requests),
        "{written} written"
    );
    for _ in 0..written as usize {
        let line = read_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a written line arrives");
        assert_eq!(line["status"], 200);
    }
}

/// The binary, started on a configuration file, its JSON log on stderr.
struct RunningBinary {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl RunningBinary {
    fn start(config: &Path) -> RunningBinary {
        let mut child = Command::new(BINARY)
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starts");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        RunningBinary { child, lines }
    }

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
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigusr1_reopens_the_file_after_a_rename() {
    let backend = Backend::start(|_, _| async { Reply::ok("ok") }).await;
    let log = LogDir::new();
    let config = log.path.with_file_name("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - name: public\n    address: 127.0.0.1:0\n    access_log: {{ path: \"{}\" }}\n\
             upstreams:\n  app: {{ endpoints: [\"{}\"] }}\n\
             routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n",
            log.path.display(),
            backend.url()
        ),
    )
    .expect("writes the configuration");
    let mut gateway = RunningBinary::start(&config);
    let listening = gateway.wait_for_log("\"message\":\"listening\"").await;
    let listening: Value = serde_json::from_str(&listening).expect("a JSON log line");
    let address = listening["fields"]["address"].as_str().expect("an address");
    let client = Client::new();
    within("before", client.get(&format!("http://{address}/before"))).await;
    lines(&log.path, 1).await;
    let rotated = log.path.with_extension("log.1");
    std::fs::rename(&log.path, &rotated).expect("renames the log");
    let status = Command::new("kill")
        .args(["-USR1", &gateway.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    gateway.wait_for_log("access log reopened").await;
    within("after", client.get(&format!("http://{address}/after"))).await;
    let after = lines(&log.path, 1).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["path"], "/after");
    let before = read_lines(&rotated);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["path"], "/before");
}

#[tokio::test]
async fn a_websocket_upgrade_is_logged_when_it_switches() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let backend = super::websocket::websocket_backend().await;
    let log = LogDir::new();
    let gw = Gateway::new()
        .listener(log.listener(""))
        .upstream("app", &backend)
        .route_with(Route::prefix("/").named("chat").to("app"))
        .start()
        .await;
    let address = listener_addr(&gw);
    let (mut socket, response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{address}/chat")),
    )
    .await
    .expect("the upgrade succeeds");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let line = lines(&log.path, 1).await.remove(0);
    assert_eq!(line["status"], 101);
    assert_eq!(line["route"], "chat");
    assert_eq!(line["endpoint"], backend.url());
    // The tunnel works with its line written.
    socket.send(Message::text("ping")).await.expect("sends");
    let echoed = within("the echo", socket.next()).await;
    assert_eq!(
        echoed.expect("a message").expect("no error"),
        Message::text("ping")
    );
}
