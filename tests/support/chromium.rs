//! A real headless browser for pages whose script renders them: Debian's `chromium`,
//! run once per page load with `--dump-dom` (the DOM after the page's script ran for a
//! budget of virtual time) or `--screenshot`. Each run gets a fresh profile directory,
//! runs in a process group of its own with a deadline, and is killed by that group's
//! id when it is done; then any process still naming that profile (a helper that left
//! the group, such as crashpad's, which starts a session of its own) is killed by its
//! PID, and the run checks that none of its processes is left.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where Debian installs it (`apt-get install chromium`; `.ci/run` does).
const BINARY: &str = "/usr/bin/chromium";

/// The longest one browser run may take: a cold start on a busy 2-CPU machine takes
/// seconds, never a minute.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Flags for a quiet, self-contained headless run: no sandbox (containers lack the
/// namespaces), no GPU, no network of its own (QUIC, background fetches, updates,
/// sync), no first-run UI, `/tmp` instead of a small `/dev/shm`.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--hide-scrollbars",
];

/// A headless Chromium. Fails the test at once when it is not installed.
pub struct Chromium {
    binary: PathBuf,
    profiles: tempfile::TempDir,
}

/// What a run printed.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
}

impl Chromium {
    pub fn new() -> Chromium {
        let binary = PathBuf::from(BINARY);
        assert!(
            binary.exists(),
            "{BINARY} is missing: the status page is tested in a real browser; install \
             Debian's chromium package (`apt-get install chromium`, as .ci/run does)"
        );
        Chromium {
            binary,
            profiles: tempfile::tempdir().expect("a temp dir for browser profiles"),
        }
    }

    /// The DOM of `url` after its script ran for `virtual_time` (timers fire in
    /// virtual time, which waits for the page's network requests), serialized as HTML.
    pub async fn dump_dom(&self, url: &str, virtual_time: Duration) -> String {
        let budget = format!("--virtual-time-budget={}", virtual_time.as_millis());
        let run = self.run(&[&budget, "--dump-dom", url]).await;
        assert!(
            run.stdout.contains("</html>"),
            "chromium printed no DOM for {url}; its stderr:\n{}",
            run.stderr
        );
        run.stdout
    }

    /// Saves a `width`×`height` screenshot of `url` (after `virtual_time`) as PNG.
    pub async fn screenshot(&self, url: &str, path: &Path, virtual_time: Duration) {
        let budget = format!("--virtual-time-budget={}", virtual_time.as_millis());
        let target = format!("--screenshot={}", path.display());
        let run = self
            .run(&[&budget, &target, "--window-size=1280,900", url])
            .await;
        let written = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(
            written > 0,
            "chromium wrote no screenshot to {}; its stderr:\n{}",
            path.display(),
            run.stderr
        );
    }

    /// Runs chromium with `args` in a fresh profile, in its own process group; kills
    /// the group when it exits or at the deadline, and waits until none of its
    /// processes is left.
    async fn run(&self, args: &[&str]) -> Run {
        let profile = tempfile::tempdir_in(self.profiles.path()).expect("a profile dir");
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; install Debian's chromium package",
                self.binary.display()
            )
        });
        let group = child.id().expect("a running child has an id");
        let finished = tokio::time::timeout(RUN_DEADLINE, child.wait_with_output()).await;
        // The browser's helpers (zygote, renderer, utility processes) share its group.
        kill_group(group);
        wait_until_gone(group, profile.path()).await;
        let output = finished.unwrap_or_else(|_| {
            panic!("chromium did not finish within {RUN_DEADLINE:?}: {args:?}")
        });
        let output = output.expect("chromium's output");
        Run {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Sends SIGKILL to process group `group` (gone already is fine).
fn kill_group(group: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

/// Waits (at most 10 s) until no live process is in group `group` or names
/// `profile` on its command line, killing the latter by PID.
async fn wait_until_gone(group: u32, profile: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = processes_in_group(group);
        for pid in processes_naming(profile) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            left.push(pid);
        }
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromium processes {left:?} (group {group}) survived SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live processes whose command line contains `profile` (this run's own directory).
fn processes_naming(profile: &Path) -> Vec<u32> {
    let needle = profile.as_os_str().as_encoded_bytes();
    live_processes()
        .into_iter()
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// The live processes whose process group is `group`.
fn processes_in_group(group: u32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|&(_, pgrp)| pgrp == group)
        .map(|(pid, _)| pid)
        .collect()
}

/// Every live (not zombie) process and its process group, from `/proc`.
fn live_processes() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
            let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = fields.next()?;
            let _ppid = fields.next()?;
            let pgrp: u32 = fields.next()?.parse().ok()?;
            (state != "Z").then_some((pid, pgrp))
        })
        .collect()
}
