//! A real Prometheus server (`/usr/bin/prometheus`, Debian's `prometheus` package) for
//! the dashboard and alert tests: on a free loopback port, its storage in a temporary
//! directory, scraping the given targets often; killed by its PID on drop, its directory
//! removed. Queried through its HTTP API with the harness's own client.
//!
//! Prometheus is required: a test that needs it fails, saying how to install it, when it
//! is missing (nothing is skipped silently). CI installs it (`.ci/run`).

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{eventually, Client};

/// The binary the package installs.
const PROMETHEUS: &str = "prometheus";

/// A Prometheus this test started.
pub struct PrometheusServer {
    address: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl PrometheusServer {
    /// Starts one scraping `targets` (as job `portcullis`) every `scrape_interval`, and
    /// waits until it is ready.
    pub async fn start(targets: &[SocketAddr], scrape_interval: Duration) -> PrometheusServer {
        let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let interval = format!("{}ms", scrape_interval.as_millis());
        let config = serde_json::json!({
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [{
                "job_name": "portcullis",
                "static_configs": [{"targets": targets}],
            }],
        });
        // The port is free now; another process could take it before Prometheus binds
        // it, so a start that fails is tried again on another port.
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let config_file = dir.path().join("prometheus.yml");
            // JSON is YAML.
            std::fs::write(&config_file, config.to_string()).expect("writes prometheus.yml");
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let child = Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={address}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot run `{PROMETHEUS}` ({error}); install it with \
                         `apt-get install prometheus`"
                    )
                });
            let mut server = PrometheusServer {
                address,
                dir,
                child,
            };
            match server.ready().await {
                Ok(()) => return server,
                Err(error) => last = error,
            }
        }
        panic!("prometheus did not start: {last}");
    }

    /// Waits (at most 15 s) until `/-/ready` answers 200, or the process exits.
    async fn ready(&mut self) -> Result<(), String> {
        let url = format!("http://{}/-/ready", self.address);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let client = Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}: {}", self.log()));
            }
            // The harness's client fails the test on a refused connection: connect first.
            if tokio::net::TcpStream::connect(self.address).await.is_ok() {
                let probe = tokio::time::timeout(Duration::from_secs(1), client.get(&url)).await;
                if probe.is_ok_and(|reply| reply.status.is_success()) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not ready within 15 s: {}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=…` at the server's present time: the whole answer
    /// (`{"status": "success" | "error", "data": …, "error": …}`).
    pub async fn query(&self, expression: &str) -> Value {
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.address,
            percent_encode(expression)
        );
        let reply = Client::new().get(&url).await;
        serde_json::from_slice(&reply.body).unwrap_or_else(|error| {
            panic!(
                "Prometheus answered {} with no JSON ({error}): {}",
                reply.status,
                reply.text()
            )
        })
    }

    /// The result vector of `expression` (empty when it selects nothing). Fails the
    /// test when Prometheus refuses the expression.
    pub async fn results(&self, expression: &str) -> Vec<Value> {
        let answer = self.query(expression).await;
        assert_eq!(
            answer["status"], "success",
            "Prometheus refused `{expression}`: {answer}"
        );
        match &answer["data"]["result"] {
            Value::Array(results) => results.clone(),
            // A scalar or a string: one value.
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        }
    }

    /// Waits until the targets have been scraped once more (a counter created by the
    /// traffic before then has a first sample to rise from).
    pub async fn next_scrape(&self) {
        let last = || async {
            let results = self.results("max(timestamp(up{job=\"portcullis\"}))").await;
            results
                .first()
                .and_then(|r| r["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let before = last().await;
        eventually("Prometheus scrapes again", async || last().await > before).await;
    }

    /// Waits until every target of job `portcullis` has been scraped successfully.
    pub async fn scraped(&self, targets: usize) {
        eventually("Prometheus has scraped the gateway", async || {
            let up = self.results("up{job=\"portcullis\"} == 1").await;
            up.len() == targets
        })
        .await;
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // `Child::kill` signals this child's own PID; `wait` reaps it before the
        // temporary directory goes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A query string's value, percent-encoded (RFC 3986 unreserved characters kept).
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
