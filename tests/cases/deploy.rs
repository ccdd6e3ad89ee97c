//! What an operator copies from `deploy/` and reads in the docs, checked against the
//! binary: every gateway config under `deploy/` (the one inside the Kubernetes ConfigMap
//! too) passes `portcullis check` without warnings; the Kubernetes manifests parse and
//! agree with that config (probe paths and ports, the ConfigMap mounted as a directory
//! so that edits reload, a grace period longer than the drain); the image and the
//! systemd unit use the files and signals the docs describe; and every relative link in
//! the repository's Markdown resolves, anchors included.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

/// Where the image and the manifests put the configuration.
const CONFIG_DIR: &str = "/etc/portcullis";
const CONFIG_FILE: &str = "/etc/portcullis/gateway.yaml";

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Files under `dir` (recursively, sorted) whose names end with one of `extensions`,
/// leaving out hidden folders and build output.
fn files_under(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    folders.push(path);
                }
            } else if extensions.iter().any(|ext| name.ends_with(ext)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `portcullis check -c path`: whether it passed, and what it printed.
fn check(path: &Path) -> (bool, String, String) {
    let output = Command::new(BINARY)
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("runs portcullis check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_checks_clean(path: &Path, shown_as: &str) {
    let (passed, stdout, stderr) = check(path);
    assert!(passed, "portcullis check rejects {shown_as}:\n{stderr}");
    assert!(
        stdout.contains("configuration is valid"),
        "{shown_as}:\n{stdout}"
    );
    assert!(
        !stderr.contains("warning"),
        "{shown_as} passes with warnings:\n{stderr}"
    );
}

/// Every document of every manifest under `deploy/kubernetes/`, with the file it is in.
fn manifests() -> Vec<(PathBuf, Value)> {
    let files = files_under(&repository().join("deploy/kubernetes"), &[".yaml", ".yml"]);
    assert!(!files.is_empty(), "no manifests under deploy/kubernetes");
    let mut documents = Vec::new();
    for file in files {
        let text = read(&file);
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
            if !value.is_null() {
                documents.push((file.clone(), value));
            }
        }
    }
    documents
}

fn text<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    lookup(value, path).and_then(Value::as_str)
}

/// `a.b.c` in nested mappings.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |value, key| value.get(key))
}

fn only<'a>(documents: &'a [(PathBuf, Value)], kind: &str) -> &'a Value {
    let found: Vec<&Value> = documents
        .iter()
        .filter(|(_, d)| text(d, "kind") == Some(kind))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} under deploy/kubernetes"
    );
    found[0]
}

/// The gateway configuration that the ConfigMap holds.
fn configmap_gateway_yaml(documents: &[(PathBuf, Value)]) -> (String, String) {
    let configmap = only(documents, "ConfigMap");
    let name = text(configmap, "metadata.name").expect("a name").to_owned();
    let config = configmap
        .get("data")
        .and_then(|data| data.get("gateway.yaml"))
        .and_then(Value::as_str)
        .expect("the ConfigMap has data.gateway.yaml")
        .to_owned();
    (name, config)
}

fn port_of(address: &Value) -> u16 {
    address
        .as_str()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("{address:?} is not an ip:port"))
        .port()
}

fn shutdown_timeout(config: &Value) -> Duration {
    config
        .get("shutdown_timeout")
        .and_then(Value::as_str)
        .map_or(Duration::from_secs(30), |d| {
            humantime::parse_duration(d).expect("shutdown_timeout is a duration")
        })
}

/// A probe's or a Service's port (a number or the name of one of the container's
/// ports) as a number.
fn container_port(container: &Value, port: &Value) -> u16 {
    if let Some(number) = port.as_u64() {
        return u16::try_from(number).expect("a port number");
    }
    let name = port.as_str().expect("a port number or name");
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("the container has no port named {name:?}"))
}

/// `matchLabels` (or a Service's plain selector) all present in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.get("matchLabels").unwrap_or(selector);
    wanted.as_mapping().is_some_and(|wanted| {
        !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
    })
}

#[test]
fn every_gateway_config_under_deploy_passes_check() {
    let deploy = repository().join("deploy");
    let kubernetes = deploy.join("kubernetes");
    // Prometheus's rule files, not the gateway's (tests/cases/dashboards.rs checks them).
    let prometheus = deploy.join("prometheus");
    let mut checked = 0;
    for file in files_under(&deploy, &[".yaml", ".yml"]) {
        if file.starts_with(&kubernetes) || file.starts_with(&prometheus) {
            continue;
        }
        assert_checks_clean(&file, &file.display().to_string());
        checked += 1;
    }
    let documents = manifests();
    let (name, config) = configmap_gateway_yaml(&documents);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config).expect("writes the ConfigMap's gateway.yaml");
    assert_checks_clean(&path, &format!("gateway.yaml of ConfigMap {name}"));
    checked += 1;
    assert!(
        checked >= 3,
        "expected the container, systemd and Kubernetes configs; checked {checked}"
    );
}

#[test]
fn kubernetes_manifests_parse_and_agree_with_the_gateway_config() {
    let documents = manifests();
    for (file, document) in &documents {
        for key in ["apiVersion", "kind", "metadata.name"] {
            assert!(
                text(document, key).is_some_and(|v| !v.is_empty()),
                "{}: a document without {key}",
                file.display()
            );
        }
    }
    let (configmap_name, config) = configmap_gateway_yaml(&documents);
    let config: Value = serde_yaml::from_str(&config).expect("the ConfigMap's gateway.yaml");
    let admin_port = port_of(&config["admin"]["address"]);
    let listener_ports: Vec<u16> = config["listeners"]
        .as_sequence()
        .expect("listeners")
        .iter()
        .map(|l| port_of(&l["address"]))
        .collect();

    let deployment = only(&documents, "Deployment");
    let pod = &deployment["spec"]["template"];
    let containers = pod["spec"]["containers"].as_sequence().expect("containers");
    let container = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("portcullis"))
        .expect("a container named portcullis");

    // Probes on the admin listener's real endpoints (src/admin.rs).
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            container_port(container, &get["port"]),
            admin_port,
            "{probe} must reach the admin listener (admin.address in ConfigMap {configmap_name})"
        );
    }

    // The ConfigMap mounted as a directory (a subPath mount never sees updates), and
    // the file the gateway is told to read is in it.
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| v["configMap"]["name"].as_str() == Some(configmap_name.as_str()))
        .and_then(|v| v["name"].as_str())
        .expect("a volume of the ConfigMap");
    let mount = container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|m| m["name"].as_str() == Some(volume))
        .expect("the ConfigMap's volume is mounted");
    assert_eq!(mount["mountPath"].as_str(), Some(CONFIG_DIR));
    assert!(
        mount.get("subPath").is_none(),
        "with subPath, edits to the ConfigMap never reach the file"
    );
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let config_arg = args
        .iter()
        .position(|a| *a == "-c" || *a == "--config")
        .and_then(|i| args.get(i + 1));
    assert_eq!(config_arg, Some(&CONFIG_FILE), "args: {args:?}");

    // The pod outlives the preStop pause plus the drain.
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pause = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .and_then(|c| c.last())
        .and_then(Value::as_str)
        .map_or(0, |seconds| seconds.parse::<u64>().expect("sleep seconds"));
    let drain = shutdown_timeout(&config).as_secs();
    assert!(
        grace > pause + drain,
        "terminationGracePeriodSeconds {grace} must exceed the preStop pause {pause}s plus shutdown_timeout {drain}s"
    );

    // The Service and the PodDisruptionBudget select these pods; the Service sends
    // clients to a client listener, not to the admin port.
    let labels = &pod["metadata"]["labels"];
    let service = only(&documents, "Service");
    assert!(
        selects(&service["spec"]["selector"], labels),
        "the Service selects no gateway pod"
    );
    for port in service["spec"]["ports"].as_sequence().expect("ports") {
        let target = container_port(container, &port["targetPort"]);
        assert!(
            listener_ports.contains(&target),
            "the Service's targetPort {target} is no listener's port {listener_ports:?}"
        );
    }
    let budget = only(&documents, "PodDisruptionBudget");
    assert!(
        selects(&budget["spec"]["selector"], labels),
        "the PodDisruptionBudget selects no gateway pod"
    );
}

#[test]
fn the_image_and_the_systemd_unit_use_the_deploy_configs() {
    // The image ships the container config, which binds every listener on all
    // interfaces: 127.0.0.1 in a container is unreachable from outside.
    let dockerfile = read(&repository().join("Dockerfile"));
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == format!("COPY deploy/container/gateway.yaml {CONFIG_FILE}")),
        "the Dockerfile must copy deploy/container/gateway.yaml to {CONFIG_FILE}"
    );
    let container: Value =
        serde_yaml::from_str(&read(&repository().join("deploy/container/gateway.yaml")))
            .expect("the container config");
    let mut addresses: Vec<&Value> = container["listeners"]
        .as_sequence()
        .expect("listeners")
        .iter()
        .map(|l| &l["address"])
        .collect();
    addresses.push(&container["admin"]["address"]);
    for address in addresses {
        let address: SocketAddr = address
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("ip:port");
        assert!(
            address.ip().is_unspecified(),
            "the container config binds {address}; it must bind 0.0.0.0"
        );
    }

    // The unit starts `run` on the installed config, reloads with SIGHUP, and waits for
    // the drain before SIGKILL.
    let unit = read(&repository().join("deploy/systemd/portcullis.service"));
    let settings: BTreeMap<&str, Vec<&str>> = unit
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .fold(BTreeMap::new(), |mut settings, (key, value)| {
            settings.entry(key.trim()).or_default().push(value.trim());
            settings
        });
    let setting = |key: &str| settings.get(key).cloned().unwrap_or_default();
    assert!(
        setting("ExecStart")
            .iter()
            .any(|s| s.ends_with(&format!("portcullis run -c {CONFIG_FILE}"))),
        "ExecStart: {:?}",
        setting("ExecStart")
    );
    assert!(
        setting("ExecReload")
            .iter()
            .any(|s| s.ends_with("kill -HUP $MAINPID")),
        "ExecReload: {:?}",
        setting("ExecReload")
    );
    let stop = setting("TimeoutStopSec");
    let stop = humantime::parse_duration(stop.first().expect("TimeoutStopSec is set"))
        .expect("TimeoutStopSec with a unit");
    let host: Value =
        serde_yaml::from_str(&read(&repository().join("deploy/systemd/gateway.yaml")))
            .expect("the systemd config");
    assert!(
        stop > shutdown_timeout(&host),
        "TimeoutStopSec {stop:?} must exceed shutdown_timeout {:?}",
        shutdown_timeout(&host)
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A Markdown file's lines outside fenced code blocks, with inline code removed.
fn prose_lines(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            let mut prose = String::with_capacity(line.len());
            for (i, piece) in line.split('`').enumerate() {
                if i % 2 == 0 {
                    prose.push_str(piece);
                }
            }
            lines.push(prose);
        }
    }
    lines
}

/// The anchors of a Markdown file's headings (repeated headings get `-1`, `-2`, …).
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let heading = line.trim_start_matches('#');
        if fenced || heading.len() == line.len() || !heading.starts_with(' ') {
            continue;
        }
        // Link syntax in a heading counts by its text.
        let heading = heading.replace("](", "]\u{0}(");
        let heading: String = heading
            .split('\u{0}')
            .enumerate()
            .map(|(i, part)| match (i, part.find(')')) {
                (0, _) | (_, None) => part,
                (_, Some(end)) => &part[end + 1..],
            })
            .collect();
        let base = anchor(&heading);
        let mut candidate = base.clone();
        let mut n = 0;
        while !seen.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{base}-{n}");
        }
    }
    seen
}

/// The targets of a line's inline links, `[text](target "title")`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(|c| c == '<' || c == '>').to_owned());
        rest = &after[end..];
    }
    targets
}

#[test]
fn relative_links_in_markdown_resolve() {
    let mut broken = Vec::new();
    let mut linked_docs = HashSet::new();
    let files = files_under(repository(), &[".md"]);
    for file in &files {
        let text = read(file);
        for line in prose_lines(&text) {
            for target in link_targets(&line) {
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().expect("a folder").join(path)
                };
                let Ok(resolved) = resolved.canonicalize() else {
                    broken.push(format!("{}: {target}: no such file", file.display()));
                    continue;
                };
                if file.ends_with("docs/README.md") {
                    linked_docs.insert(resolved.clone());
                }
                let markdown = resolved.extension().is_some_and(|e| e == "md");
                if !fragment.is_empty() && markdown && !anchors(&read(&resolved)).contains(fragment)
                {
                    broken.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
    // The docs index lists every page of docs/.
    let docs = repository().join("docs");
    for page in files.iter().filter(|f| f.parent() == Some(docs.as_path())) {
        let page = page.canonicalize().expect("a page");
        assert!(
            page.ends_with("docs/README.md") || linked_docs.contains(&page),
            "docs/README.md does not link to {}",
            page.display()
        );
    }
}
