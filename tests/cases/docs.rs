//! The documentation checked against the binary, so it cannot drift: every key the
//! configuration parser accepts is in `docs/configuration.md` and every key documented
//! there is accepted, and the documented `check` output is what `check` prints.
//!
//! The accepted keys are not listed anywhere by hand: they are asked of the parser
//! itself. A file whose only key at some place is `__probe__` is refused by serde with
//! "unknown field `__probe__`, expected one of `a`, `b`, …" — the keys of the struct at
//! that place. Each of those keys is then probed in turn as a mapping, a list of
//! mappings and a map of names to mappings; where serde answers with the probe error
//! again, the key holds a struct, whose keys are collected the same way. A key added to
//! any raw struct (`src/config/raw.rs` or wherever it lives) is therefore found with no
//! change here, and a missing row in the reference fails this test naming the key and
//! the table it belongs in.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use portcullis::config::raw::RawConfig;
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");
const PROBE: &str = "__probe__";

/// One step from a struct into a value: a key, a list item, or an entry of a map of names.
#[derive(Clone)]
enum Step {
    Key(String),
    Item,
    Entry,
}

/// The key path as the reference writes it: `upstreams.<name>.retry`, `routes[].match`.
fn path_text(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Step::Item => text.push_str("[]"),
            Step::Entry => text.push_str(".<name>"),
        }
    }
    text
}

/// The keys of the struct at `steps`, or `None` when no struct is there.
fn struct_keys(steps: &[Step]) -> Option<Vec<String>> {
    let mut value = json!({ PROBE: 1 });
    for step in steps.iter().rev() {
        value = match step {
            Step::Key(key) => json!({ key.clone(): value }),
            Step::Item => Value::Array(vec![value]),
            Step::Entry => json!({ "x": value }),
        };
    }
    let text = serde_json::to_string(&value).expect("JSON");
    let error = serde_yaml::from_str::<RawConfig>(&text).err()?.to_string();
    let expected = error
        .split_once(&format!("unknown field `{PROBE}`, "))?
        .1
        .split(" at line ")
        .next()
        .unwrap_or_default();
    if expected.contains("there are no fields") {
        return Some(Vec::new());
    }
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every key path the parser accepts below `steps`, into `found`. `enclosing` holds the
/// keys of each struct on the way: a struct with the same keys as one that encloses it
/// is that struct again (a recursive type, such as `auth.any_of[]`), documented once.
fn collect_keys(
    steps: &[Step],
    keys: &[String],
    enclosing: &mut Vec<Vec<String>>,
    found: &mut BTreeSet<String>,
) {
    enclosing.push(keys.to_vec());
    for key in keys {
        let mut at = steps.to_vec();
        at.push(Step::Key(key.clone()));
        found.insert(path_text(&at));
        for shape in [vec![], vec![Step::Item], vec![Step::Entry]] {
            let mut inner = at.clone();
            inner.extend(shape);
            if let Some(keys) = struct_keys(&inner) {
                if !enclosing.contains(&keys) {
                    collect_keys(&inner, &keys, enclosing, found);
                }
                break;
            }
        }
    }
    enclosing.pop();
}

fn accepted_keys() -> BTreeSet<String> {
    let top = struct_keys(&[]).expect("the top level is a struct");
    let mut found = BTreeSet::new();
    collect_keys(&[], &top, &mut Vec::new(), &mut found);
    found
}

/// A documented key and where: the heading of its table and the line.
struct Documented {
    key: String,
    heading: String,
    line: usize,
}

/// The keys of the reference's tables: each `## `prefix`` heading (or "Top level")
/// names the path its table's first column is under; `a.b` rows name nested keys, and
/// `` `a`, `b` `` rows several keys.
fn documented_keys(text: &str) -> Vec<Documented> {
    let mut prefixes: Vec<String> = Vec::new();
    let mut heading = String::new();
    let mut documented = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_owned();
            prefixes = if heading == "Top level" {
                vec![String::new()]
            } else {
                heading
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect()
            };
            continue;
        }
        let Some(first_cell) = line
            .strip_prefix("| `")
            .and_then(|rest| rest.split('|').next())
        else {
            continue;
        };
        let names = format!("`{first_cell}");
        for name in names.split('`').skip(1).step_by(2) {
            for prefix in &prefixes {
                let key = if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}.{name}")
                };
                documented.push(Documented {
                    key,
                    heading: heading.clone(),
                    line: number + 1,
                });
            }
        }
    }
    documented
}

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_is_accepted() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(&reference).expect("reads the reference");
    let accepted = accepted_keys();
    // The probe itself must work: these keys exist at three depths.
    for key in [
        "listeners",
        "upstreams.<name>.retry.per_try_timeout",
        "routes[].aggregate.calls.<name>.select",
    ] {
        assert!(
            accepted.contains(key),
            "the probe missed {key}: {accepted:#?}"
        );
    }
    let documented = documented_keys(&text);
    // A documented `a.b` also documents `a`.
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for entry in &documented {
        let mut key = entry.key.as_str();
        covered.insert(key.to_owned());
        while let Some((parent, _)) = key.rsplit_once('.') {
            covered.insert(parent.to_owned());
            key = parent;
        }
    }

    // The tables there are, by the path they document.
    let tables: BTreeSet<String> = documented
        .iter()
        .filter_map(|entry| {
            let (parent, _) = entry.key.rsplit_once('.').unwrap_or(("", &entry.key));
            // `ip.allow` under `policies.<name>`: the table is the heading's, not `ip`'s.
            let heading_paths: Vec<&str> = entry.heading.split('`').skip(1).step_by(2).collect();
            heading_paths
                .into_iter()
                .find(|h| parent.starts_with(h))
                .map(str::to_owned)
                .or_else(|| parent.is_empty().then(String::new))
        })
        .collect();
    let mut problems = Vec::new();
    for key in &accepted {
        if !covered.contains(key) {
            // The nearest table above the key, and the key's name as a row of it.
            let mut parent = key.as_str();
            let (table, row) = loop {
                match parent.rsplit_once('.') {
                    Some((above, _)) => {
                        parent = above;
                        if tables.contains(above) {
                            break (format!("\"## `{above}`\""), &key[above.len() + 1..]);
                        }
                    }
                    None => break ("\"## Top level\"".to_owned(), key.as_str()),
                }
            };
            problems.push(format!(
                "docs/configuration.md does not document `{key}`, which the parser accepts: \
                 add a row | `{row}` | type | default | meaning | to the table under {table}"
            ));
        }
    }
    for entry in &documented {
        if !accepted.contains(&entry.key) {
            problems.push(format!(
                "docs/configuration.md:{}: documents `{}` (table under \"## {}\"), which the \
                 parser does not accept: remove the row, or fix its name or its heading",
                entry.line, entry.key, entry.heading
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The first ```text block of `docs/configuration.md` that starts with `first_line`.
fn documented_block(first_line: &str) -> String {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(reference).expect("reads the reference");
    let start = text
        .find(&format!("```text\n{first_line}"))
        .unwrap_or_else(|| panic!("no block starting with {first_line:?}"))
        + "```text\n".len();
    let end = start + text[start..].find("```\n").expect("the block ends");
    text[start..end].to_owned()
}

/// The ```text block of `docs/configuration.md` that contains `needle`.
fn documented_block_with(needle: &str) -> String {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(reference).expect("reads the reference");
    text.split("```text\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```\n").map(|(block, _)| block))
        .find(|block| block.contains(needle))
        .unwrap_or_else(|| panic!("no block with {needle:?}"))
        .to_owned()
}

#[test]
fn the_documented_check_summary_is_what_check_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(BINARY)
        .current_dir(root)
        .args(["check", "-c", "gateway.yaml"])
        .output()
        .expect("runs");
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    // `workers` is the number of CPUs unless set: the reference shows 2.
    let workers = |text: &str| {
        text.lines()
            .map(|line| match line.strip_prefix("workers: ") {
                Some(rest) => format!(
                    "workers: N{}",
                    rest.trim_start_matches(|c: char| c.is_ascii_digit())
                ),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
    };
    let documented = documented_block("gateway.yaml: configuration is valid");
    assert_eq!(
        workers(&documented),
        workers(&printed),
        "docs/configuration.md's sample `check` output differs from what `portcullis check -c gateway.yaml` prints"
    );
}

/// `gateway.yaml` with `edits` (text, replacement) applied, checked as `broken.yaml`:
/// what `check` prints on stderr.
fn check_broken_copy(edits: &[(&str, &str)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("gateway.yaml")).expect("reads");
    for (from, to) in edits {
        assert!(text.contains(from), "gateway.yaml no longer has {from:?}");
        text = text.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("broken.yaml"), text).expect("writes");
    let output = Command::new(BINARY)
        .current_dir(dir.path())
        .args(["check", "-c", "broken.yaml"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_documented_check_errors_are_what_check_prints() {
    let printed = check_broken_copy(&[
        (
            "endpoints: [\"http://127.0.0.1:9201\"]",
            "endpoints: [\"ftp://127.0.0.1:9201\"]",
        ),
        (
            "rewrite: { strip_prefix: /api }   # /api/users/7",
            "rewrite: { strip_prefix: /v1 }   # /api/users/7",
        ),
        (
            "  - name: orders\n    match: { path_prefix: /api/orders, methods: [GET] }\n    upstream: orders",
            "  - name: orders\n    match: { path_prefix: /api/orders, methods: [GET] }\n    upstream: ordres",
        ),
    ]);
    assert_eq!(
        documented_block("broken.yaml:"),
        printed,
        "docs/configuration.md's three-mistakes example differs from what check prints"
    );
    let printed = check_broken_copy(&[(
        "timeout: 1s                       # the sample endpoint",
        "timeout: 1                        # the sample endpoint",
    )]);
    let documented = documented_block_with("routes[4].timeout: duration 1 has no unit");
    assert_eq!(
        documented, printed,
        "docs/configuration.md's structure-error example differs from what check prints"
    );
}
