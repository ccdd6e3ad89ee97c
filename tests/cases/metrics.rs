//! The admin listener's metrics after known traffic, and its health endpoints.

use http::StatusCode;

use crate::support::{metric, url, Backend, Client, Gateway};

#[tokio::test]
async fn metrics_count_known_traffic() {
    let backend = Backend::echo().await;
    let gw = Gateway::new()
        .admin()
        .upstream("users", &backend)
        .route("/users", "users")
        .start()
        .await;
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(
            client.get(&url(&gw, "/users/1")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        client
            .send(http::Method::POST, &url(&gw, "/users"), &[], "{}")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        client.get(&url(&gw, "/missing")).await.status,
        StatusCode::NOT_FOUND
    );

    let admin = format!("http://{}", gw.admin_addr().expect("admin"));
    let response = client.get(&format!("{admin}/metrics")).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    let text = response.text();
    let requests = |method: &str, route: &str, status: &str| {
        metric(
            &text,
            &format!("portcullis_http_requests_total{{listener=\"public\",method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(requests("GET", "users", "200"), Some(3.0));
    assert_eq!(requests("POST", "users", "200"), Some(1.0));
    assert_eq!(requests("GET", "_unmatched", "404"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "portcullis_http_request_duration_seconds_count{route=\"users\"}"
        ),
        Some(4.0)
    );
    let endpoint = backend.url();
    assert_eq!(
        metric(
            &text,
            &format!("portcullis_upstream_requests_total{{endpoint=\"{endpoint}\",outcome=\"2xx\",upstream=\"users\"}}")
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_request_duration_seconds_count{upstream=\"users\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(&text, "portcullis_upstream_in_flight{upstream=\"users\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "portcullis_connections_active{listener=\"public\"}").map(|v| v >= 1.0),
        Some(true)
    );
    assert!(
        metric(&text, "portcullis_connections_total{listener=\"public\"}")
            .is_some_and(|v| v >= 1.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "portcullis_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    for family in [
        "portcullis_upstream_queue_depth",
        "portcullis_upstream_queue_wait_seconds",
        "portcullis_upstream_rejected_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is exposed"
        );
    }

    assert_eq!(
        client.get(&format!("{admin}/healthz")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.get(&format!("{admin}/ready")).await.status,
        StatusCode::OK
    );
    let other = client.get(&format!("{admin}/other")).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(
        other.text(),
        "admin endpoints: / /status /metrics /healthz /ready /config, POST /reload\n"
    );

    promtool_accepts(&text);
}

/// `promtool check metrics` must accept the exposition. CI installs promtool; on a
/// developer machine without it the check is skipped with a note.
pub(crate) fn promtool_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is required in CI (apt-get install prometheus): {error}"
            );
            eprintln!("note: promtool not installed; skipping `promtool check metrics`");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writes to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
