//! The layering guard: reads `src/**/*.rs`, finds which top-level module each file
//! imports (`crate::x`, `crate::{x, y}`, `super::` climbing to the root, and
//! `portcullis::x` in the binary), and fails when a module imports one that the table
//! below does not allow. The table itself must have no cycle, so none can come back
//! unnoticed. Adding a module means adding its row here.
//!
//! `cargo test --test tests layers -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which modules each top-level module may import. Leaves import only other leaves;
/// the request path runs down: server → proxy → policy, aggregate → upstream; config imports
/// no runtime module.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves.
    ("shutdown", &[]),
    ("io", &[]),
    ("interim", &[]),
    ("request_id", &[]),
    ("template", &[]),
    ("http1", &[]),
    ("metrics", &[]),
    ("workers", &[]),
    ("upgrade", &[]),
    ("body", &["http1"]),
    ("routing", &["template"]),
    ("tls", &["metrics", "routing", "shutdown"]),
    ("trace", &["metrics"]),
    // Configuration: data, checked and compiled; no runtime module.
    ("config", &["http1", "routing", "template", "tls", "trace"]),
    // The access log: lines formatted per request, written by a thread per destination.
    ("access_log", &["config", "metrics"]),
    // The request path, top to bottom.
    (
        "upstream",
        &[
            "access_log",
            "body",
            "config",
            "http1",
            "interim",
            "io",
            "metrics",
            "request_id",
            "shutdown",
            "tls",
            "trace",
            "workers",
        ],
    ),
    (
        "aggregate",
        &[
            "access_log",
            "body",
            "config",
            "interim",
            "metrics",
            "request_id",
            "template",
            "trace",
            "upstream",
        ],
    ),
    // The policy step: per-route checks and header rules, between route and limit.
    (
        "policy",
        &[
            "config",
            "http1",
            "metrics",
            "request_id",
            "shutdown",
            "upstream",
            "workers",
        ],
    ),
    (
        "proxy",
        &[
            "access_log",
            "aggregate",
            "body",
            "config",
            "http1",
            "interim",
            "io",
            "metrics",
            "policy",
            "request_id",
            "routing",
            "shutdown",
            "trace",
            "upstream",
        ],
    ),
    (
        "server",
        &[
            "access_log",
            "body",
            "config",
            "http1",
            "interim",
            "io",
            "metrics",
            "proxy",
            "request_id",
            "shutdown",
            "tls",
            "workers",
        ],
    ),
    // Running the gateway: listeners, reload, the admin listener, start and stop.
    (
        "listeners",
        &[
            "config", "metrics", "proxy", "server", "shutdown", "tls", "upgrade", "workers",
        ],
    ),
    (
        "reload",
        &["config", "listeners", "metrics", "proxy", "shutdown"],
    ),
    (
        "admin",
        &[
            "config",
            "listeners",
            "metrics",
            "proxy",
            "reload",
            "routing",
            "shutdown",
            "tls",
            "upstream",
        ],
    ),
    (
        "gateway",
        &[
            "admin",
            "config",
            "listeners",
            "metrics",
            "proxy",
            "reload",
            "server",
            "shutdown",
            "upgrade",
            "workers",
        ],
    ),
    ("demo", &[]),
    // The crate root and the binary may use anything.
    ("lib", ANY),
    ("main", ANY),
];

const ANY: &[&str] = &["*"];

#[test]
fn modules_import_only_what_the_layer_table_allows() {
    let graph = import_graph();
    print_graph(&graph);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for (module, imports) in &graph {
        let Some(may) = allowed.get(module.as_str()) else {
            problems.push(format!(
                "module `{module}` has no row in the layer table (tests/cases/layers.rs)"
            ));
            continue;
        };
        if *may == ANY {
            continue;
        }
        for (target, files) in imports {
            if !may.contains(&target.as_str()) {
                problems.push(format!(
                    "`{module}` may not import `{target}` (in {})",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_layer_table_has_no_cycle() {
    let names: BTreeSet<&str> = ALLOWED.iter().map(|(name, _)| *name).collect();
    for (module, may) in ALLOWED {
        for target in may.iter().filter(|t| **t != "*") {
            assert!(
                names.contains(target),
                "`{module}` may import `{target}`, which has no row"
            );
        }
    }
    // Kahn's algorithm over the table without the two roots that may use anything.
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .filter(|(_, may)| *may != ANY)
        .map(|(name, may)| (*name, may.iter().copied().collect()))
        .collect();
    while !remaining.is_empty() {
        let free: Vec<&str> = remaining
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
            .map(|(name, _)| *name)
            .collect();
        assert!(
            !free.is_empty(),
            "the layer table has a cycle among: {:?}",
            remaining.keys().collect::<Vec<_>>()
        );
        for name in free {
            remaining.remove(name);
        }
    }
}

#[test]
fn the_guard_sees_every_kind_of_import() {
    let seen = |text: &str, file: &str| imports_of(text, Path::new(file));
    assert_eq!(
        seen("use crate::proxy::Snapshot;", "server/a.rs"),
        ["proxy"]
    );
    assert_eq!(
        seen(
            "use crate::{body::{A, B}, proxy::{self, C}, tls};",
            "server.rs"
        ),
        ["body", "proxy", "tls"]
    );
    assert_eq!(
        seen("let x = crate::upstream::f();", "body/mod.rs"),
        ["upstream"]
    );
    assert_eq!(
        seen("use super::super::config::X;", "server/http1/mod.rs"),
        ["config"]
    );
    assert_eq!(
        seen("use super::X;", "server/http1/mod.rs"),
        Vec::<String>::new()
    );
    assert_eq!(
        seen("use portcullis::gateway::run;", "main.rs"),
        ["gateway"]
    );
    assert_eq!(
        seen(
            "// crate::proxy in a comment\n/* crate::server */ x",
            "body/mod.rs"
        ),
        Vec::<String>::new()
    );
}

/// module → imported module → files that import it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn import_graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&root);
    // Only names of real top-level modules count: inside an inline `mod tests`,
    // `super::` means the file's own module, not the root.
    let modules: BTreeSet<String> = files
        .iter()
        .map(|file| top_module(file.strip_prefix(&root).expect("under src")))
        .collect();
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(&root).expect("under src").to_path_buf();
        let module = top_module(&relative);
        let text = std::fs::read_to_string(&file).expect("readable source");
        let entry = graph.entry(module.clone()).or_default();
        for target in imports_of(&text, &relative) {
            if target != module && modules.contains(&target) {
                entry
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

fn print_graph(graph: &Graph) {
    println!("module graph of src/ (module -> what it imports):");
    for (module, imports) in graph {
        let targets: Vec<&str> = imports.keys().map(String::as_str).collect();
        println!("  {module} -> {}", targets.join(" "));
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `server/http1/mod.rs` → `server`; `lib.rs` → `lib`.
fn top_module(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// The module path of a file below `src/`: `server/http1/mod.rs` → `[server, http1]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .filter_map(|c| c.to_str())
        .map(|c| c.trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    if matches!(parts.as_slice(), [only] if only == "lib" || only == "main") {
        parts.clear();
    }
    parts
}

/// The top-level modules a file's code names, comments left out.
fn imports_of(text: &str, relative: &Path) -> Vec<String> {
    let code = without_comments(text);
    let mut found = BTreeSet::new();
    let prefix_roots = if top_module(relative) == "main" {
        vec!["crate::", "portcullis::"]
    } else {
        vec!["crate::"]
    };
    for root in prefix_roots {
        for (at, _) in code.match_indices(root) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            names_after(&code[at + root.len()..], &mut found);
        }
    }
    // `super::super::x` from deep enough reaches the crate root.
    let depth = module_path(relative).len();
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &code[at..];
        let mut ups = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            ups += 1;
            rest = after;
        }
        if ups >= depth {
            names_after(rest, &mut found);
        }
    }
    found.into_iter().collect()
}

/// After `crate::`: one name, or a `{…}` group whose items each start with one.
fn names_after(rest: &str, found: &mut BTreeSet<String>) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0usize;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && (c.is_alphabetic() || c == '_') => {
                    item_start = false;
                    let name = identifier(&group[i..]);
                    if name != "self" {
                        found.insert(name.to_owned());
                    }
                }
                c if c.is_whitespace() => {}
                _ => item_start = false,
            }
        }
    } else {
        let name = identifier(rest);
        if !name.is_empty() {
            found.insert(name.to_owned());
        }
    }
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The text with `//` and `/* */` comments blanked (string literals containing `//`,
/// such as URLs, only lose the rest of their line, which names no module).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}
