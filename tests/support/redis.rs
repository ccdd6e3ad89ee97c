//! A real `redis-server` for the shared rate-limit store's tests: on a free loopback
//! port, in a temporary directory, without persistence; stopped (by its PID) on drop.
//! It can be stopped and started again on the same port, and paused (`SIGSTOP`) and
//! resumed, in the middle of a test.
//!
//! `redis-server` is required: a test that needs it fails, with how to install it, when
//! it is missing (nothing is skipped silently). CI installs it (`.ci/run`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` this test started.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    paused: bool,
    /// More `redis-server` arguments (`--requirepass x`).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// [`RedisServer::start`] with more `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> RedisServer {
        // The port is free now; another process could take it before redis-server binds
        // it, so a failed start is tried again on another port.
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir: tempfile::tempdir().expect("a temporary directory"),
                child: None,
                paused: false,
                args: args.iter().map(|a| (*a).to_owned()).collect(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(error) => last = error,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (its data is gone: it keeps none).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(&child, "CONT");
                self.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (an empty server: no keys, no scripts).
    pub fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        // The old socket may linger a moment; redis-server sets SO_REUSEADDR, but retry
        // briefly in case the port is not released yet.
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(error) if started.elapsed() > START_TIMEOUT => {
                    panic!(
                        "redis-server did not restart on port {}: {error}",
                        self.port
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `SIGSTOP`: the server keeps its socket (connections stay open) but answers nothing.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child, "STOP");
            self.paused = true;
        }
    }

    /// `SIGCONT` after [`RedisServer::pause`].
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal(child, "CONT");
            self.paused = false;
        }
    }

    /// Sends commands (inline form, one line each) on one connection and returns the raw
    /// replies: each must be one line (`+OK`, `:1`, `-ERR ...`).
    pub fn commands(&self, commands: &[&str]) -> Vec<String> {
        let mut stream = TcpStream::connect(self.address()).expect("connects to redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("sets a timeout");
        for command in commands {
            stream
                .write_all(format!("{command}\r\n").as_bytes())
                .expect("writes");
        }
        let mut replies = Vec::new();
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        while buffer.iter().filter(|b| **b == b'\n').count() < commands.len() {
            let n = stream.read(&mut chunk).expect("reads replies");
            assert!(n > 0, "redis-server closed the connection");
            buffer.extend_from_slice(&chunk[..n]);
        }
        for line in String::from_utf8_lossy(&buffer).lines() {
            replies.push(line.to_owned());
        }
        replies
    }

    /// One command's one-line reply.
    pub fn command(&self, command: &str) -> String {
        self.commands(&[command]).remove(0)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("redis.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run redis-server ({error}): the shared rate-limit store's tests \
                     need a real Redis; install it (Debian: apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.answers_ping() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                return Err(format!("exited ({status}):\n{log}"));
            }
            if started.elapsed() > START_TIMEOUT {
                self.stop();
                return Err(format!("no PONG within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers `PING`: `+PONG`, or `-NOAUTH` from one with a password.
    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.address(), Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// `kill -SIG PID` for the server this test started.
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("runs kill");
    assert!(status.success(), "kill -{name} {} failed", child.id());
}
