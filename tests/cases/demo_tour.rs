//! The demo tours run for real (`docs/demo.md`, `docs/aggregation.md`'s example, the
//! README's): the demo is started as `docs/demo.md` says, every `$ curl …` line of a
//! tour is run in order with the shell, and its output is compared with the documented
//! one.
//!
//! What may differ is what differs from run to run: request ids (32 hex digits), the
//! configuration's hash and load time on `/config`, the id the sample service gives a
//! new user, `date` headers (which the tour leaves out), and the order of an NDJSON
//! stream's call lines (they come as the calls complete). A `…` in the documented
//! output stands for anything: within a line, any text; on a line of its own, any lines.
//!
//! The demo listens on the fixed ports of `gateway.yaml` (8080, 9090, 9101, 9102, 9201),
//! so the test needs them free on loopback; `curl` must be installed, as the tour assumes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

/// One `$ command` of the tour with the output documented under it.
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The commands of the ```console blocks of `text`, with their documented output.
fn tour(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut continued = false;
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_block = line == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if continued {
            if let Some(step) = steps.last_mut() {
                step.command.push('\n');
                step.command.push_str(line);
                continued = line.ends_with('\\');
            }
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                line: number + 1,
                command: command.to_owned(),
                expected: Vec::new(),
            });
            continued = command.ends_with('\\');
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_owned());
        }
    }
    for step in &mut steps {
        while step.expected.last().is_some_and(|l| l.trim().is_empty()) {
            step.expected.pop();
        }
    }
    steps
}

/// `text` with what changes from run to run replaced by placeholders.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .count();
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if boundary && run == 32 {
            out.push_str("<request-id>");
            i += run;
        } else if boundary && run == 16 && text[..i].ends_with("\"hash\":\"") {
            out.push_str("<hash>");
            i += run;
        } else if text[i..].starts_with("\"loaded_at\":") {
            out.push_str("\"loaded_at\":<time>");
            i += "\"loaded_at\":".len();
            i += bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_digit() || **b == b'.')
                .count();
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    // The sample service picks a new user's id at random.
    if let Some(rest) = out.strip_prefix("{\"id\":") {
        if let Some(end) = rest.find(",\"name\":\"Alan\"}") {
            if rest[..end].bytes().all(|b| b.is_ascii_digit()) {
                return format!("{{\"id\":<new-id>{}", &rest[end..]);
            }
        }
    }
    out
}

/// Whether `actual` is the documented `expected` line, where `…` stands for any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the `actual` lines are the `expected` ones, where a lone `…` line stands for
/// any lines.
fn lines_match(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "…" => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && lines_match(rest, more)),
    }
}

/// Whether `actual` has the `expected` lines in any order, the last line last.
fn unordered_then_last(expected: &[String], actual: &[String]) -> bool {
    fn any_order(expected: &[String], actual: &[String]) -> bool {
        match expected.split_first() {
            None => actual.is_empty(),
            Some((first, rest)) => (0..actual.len()).any(|i| {
                line_matches(first, &actual[i]) && {
                    let mut others = actual.to_vec();
                    others.remove(i);
                    any_order(rest, &others)
                }
            }),
        }
    }
    match (expected.split_last(), actual.split_last()) {
        (Some((last, expected)), Some((actual_last, actual))) => {
            line_matches(last, actual_last) && any_order(expected, actual)
        }
        (None, None) => true,
        _ => false,
    }
}

/// Stops the demo when the test ends, passed or not.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo from the repository root and waits until it serves.
fn start_demo(root: &Path) -> Demo {
    for port in [8080, 9090, 9101, 9102, 9201] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken on loopback: the demo tour needs 8080, 9090, 9101, 9102 and 9201"
        );
    }
    let mut child = Command::new(BINARY)
        .current_dir(root)
        .args(["--log-format", "json", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts the demo");
    let stdout = child.stdout.take().expect("stdout");
    let demo = Demo(child);
    let started = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("Press Ctrl-C to stop."));
    assert!(started, "the demo did not start");
    demo
}

/// Runs `document`'s commands against a fresh demo; the differences, one per command.
fn run_tour(root: &Path, document: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root.join(document)).expect("reads the document");
    let steps = tour(&text);
    assert!(!steps.is_empty(), "{document} has commands");
    let demo = start_demo(root);
    let mut differences = Vec::new();
    for step in &steps {
        let output = Command::new("sh")
            .args(["-c", &step.command])
            .output()
            .expect("runs the shell");
        let mut actual: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| normalise(l.trim_end()))
            .filter(|l| !l.to_ascii_lowercase().starts_with("date: "))
            .collect();
        while actual.last().is_some_and(|l| l.trim().is_empty()) {
            actual.pop();
        }
        let expected: Vec<String> = step
            .expected
            .iter()
            .map(|l| normalise(l.trim_end()))
            .collect();
        // An NDJSON stream sends its calls' lines as they complete: in any order, then
        // the summary.
        let matched = if step.command.contains("/stream") {
            unordered_then_last(&expected, &actual)
        } else {
            lines_match(&expected, &actual)
        };
        if !matched {
            differences.push(format!(
                "{document}:{}: $ {}\n--- documented\n{}\n--- printed\n{}\n",
                step.line,
                step.command,
                expected.join("\n"),
                actual.join("\n")
            ));
        }
    }
    drop(demo);
    differences
}

/// The tours that run against the demo as it starts: each gets a fresh one, since
/// their metrics count their own requests.
#[test]
fn every_command_of_the_demo_tours_prints_what_the_tour_shows() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed: the demo tours are not checked");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let differences: Vec<String> = ["docs/demo.md", "docs/aggregation.md", "README.md"]
        .iter()
        .flat_map(|document| run_tour(root, document))
        .collect();
    assert!(
        differences.is_empty(),
        "the tour and the demo disagree:\n\n{}",
        differences.join("\n")
    );
}

#[test]
fn documented_output_matches_with_placeholders() {
    assert!(line_matches("[{\"id\":1},…]", "[{\"id\":1},{\"id\":2}]"));
    assert!(!line_matches("[{\"id\":1},…]", "[{\"id\":3}]"));
    assert_eq!(
        normalise("x-request-id: eb82ed721f5dc864c059ccd36f3d08af"),
        "x-request-id: <request-id>"
    );
    assert_eq!(
        normalise("{\"hash\":\"fb68c6405681b3fa\",\"loaded_at\":1796330064.4036024}"),
        "{\"hash\":\"<hash>\",\"loaded_at\":<time>}"
    );
    let lines = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(lines_match(&lines(&["a", "…"]), &lines(&["a", "b", "c"])));
    assert!(!lines_match(&lines(&["a", "b"]), &lines(&["a", "b", "c"])));
    assert!(unordered_then_last(
        &lines(&["a…", "b", "end"]),
        &lines(&["b", "a1", "end"])
    ));
    assert!(!unordered_then_last(
        &lines(&["a", "b", "end"]),
        &lines(&["end", "a", "b"])
    ));
}
