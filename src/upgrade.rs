//! Zero-downtime binary upgrades: a running gateway hands its listening sockets to its
//! successor over a Unix socket, so that no connection is refused while one binary
//! replaces another.
//!
//! A gateway started with an upgrade socket (`portcullis run --upgrade-socket PATH`)
//! listens on it ([`serve`]). A new process started with the same path and `--upgrade`
//! connects ([`receive`]) and gets, in one message, a description of every listening
//! socket of the old one (its address) with the sockets themselves attached
//! (`SCM_RIGHTS`): the very same sockets, with the connections already waiting in
//! their accept queues. It serves on them ([`Inherited`] stands in for binding), then
//! says `ready` ([`Handover::complete`]); the old process stops accepting, removes
//! the socket file, answers `bye`, and drains within its `shutdown_timeout`, while the
//! new one binds the path for the next upgrade. A successor that dies before `ready`
//! changes nothing: the old process keeps serving.
//!
//! The same socket tells a second Portcullis started by mistake (without `--upgrade`)
//! that the address is taken, by whom ([`probe`]).
//!
//! The exchange is a few small lines with a bounded size and a timeout on each step;
//! the old side runs it on a thread of its own, off the serving runtimes.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Sockets one message may carry (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_SOCKETS: usize = 250;
/// The description's size, at most.
const MAX_DESCRIPTION: usize = 64 * 1024;
/// Each step of the exchange (connect, the sockets, `ready`, `bye`) gets this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the old side waits for its successor's `ready`: the successor starts its
/// workers and listeners (and loads TLS certificates) in between.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an upgrade could not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("upgrade socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("upgrade socket {path}: {what}")]
    Protocol { path: PathBuf, what: String },
    #[error("upgrade socket {path}: {count} listening sockets are more than one handover carries ({MAX_SOCKETS})")]
    TooManySockets { path: PathBuf, count: usize },
}

/// A listening socket to hand over, with the address it is bound to.
pub struct Offered {
    pub address: SocketAddr,
    pub socket: TcpListener,
}

/// Sockets received from the previous process, taken by address as the new one binds.
#[derive(Default)]
pub struct Inherited {
    sockets: Mutex<Vec<Offered>>,
}

impl Inherited {
    /// Nothing inherited: every address is bound afresh.
    pub fn none() -> Inherited {
        Inherited::default()
    }

    /// Every inherited socket bound to `address`, in the order the old process had
    /// them (empty when none is).
    pub fn take(&self, address: SocketAddr) -> Vec<TcpListener> {
        let mut sockets = self
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (taken, kept): (Vec<Offered>, Vec<Offered>) = std::mem::take(&mut *sockets)
            .into_iter()
            .partition(|offered| offered.address == address);
        *sockets = kept;
        taken.into_iter().map(|offered| offered.socket).collect()
    }

    /// Closes the sockets no listener took (the new configuration no longer listens
    /// on their addresses); returns those addresses.
    pub fn close_leftovers(&self) -> Vec<SocketAddr> {
        let mut sockets = self
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *sockets)
            .into_iter()
            .map(|offered| offered.address)
            .collect()
    }

    /// How many sockets are still waiting to be taken.
    pub fn len(&self) -> usize {
        self.sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no socket is waiting to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The successor's side of a handover in progress: the old process waits for
/// [`Handover::complete`].
pub struct Handover {
    path: PathBuf,
    stream: UnixStream,
    /// The old process's id, for the log.
    pub old_pid: u32,
}

/// What the upgrade socket at a path says about the process behind it.
pub enum Probe {
    /// Nothing answers there (no file, or a file left by a process that is gone).
    Nobody,
    /// A gateway with this process id serves there.
    Serving { pid: u32 },
}

/// Asks who serves the upgrade socket at `path`, without taking anything.
pub fn probe(path: &Path) -> Probe {
    let Ok(mut stream) = UnixStream::connect(path) else {
        return Probe::Nobody;
    };
    let exchange = (|| -> std::io::Result<Option<u32>> {
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        stream.set_write_timeout(Some(STEP_TIMEOUT))?;
        stream.write_all(b"who\n")?;
        let mut line = String::new();
        BufReader::new(stream.take(128)).read_line(&mut line)?;
        Ok(line
            .trim_end()
            .strip_prefix("portcullis pid=")
            .and_then(|pid| pid.parse().ok()))
    })();
    match exchange {
        Ok(Some(pid)) => Probe::Serving { pid },
        // Something listens there that does not answer as a gateway: treat the path as
        // taken by an unknown process (pid 0).
        Ok(None) | Err(_) => Probe::Serving { pid: 0 },
    }
}

/// Connects to the gateway serving `path` and receives its listening sockets.
pub fn receive(path: &Path) -> Result<(Inherited, Handover), UpgradeError> {
    let io = |source| UpgradeError::Io {
        path: path.to_owned(),
        source,
    };
    let protocol = |what: String| UpgradeError::Protocol {
        path: path.to_owned(),
        what,
    };
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(STEP_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(STEP_TIMEOUT)).map_err(io)?;
    stream.write_all(b"upgrade\n").map_err(io)?;

    // One message: the description (a line) with every socket attached.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buffer = vec![0u8; MAX_DESCRIPTION];
    let received = rustix::net::recvmsg(
        stream.as_fd(),
        &mut [IoSliceMut::new(&mut buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|errno| io(errno.into()))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let mut description = buffer[..received.bytes].to_vec();
    // The rest of the line, if it came in more than one piece (never with sockets).
    while !description.ends_with(b"\n") {
        if description.len() >= MAX_DESCRIPTION {
            return Err(protocol("the description is too long".into()));
        }
        let mut more = [0u8; 4096];
        let n = stream.read(&mut more).map_err(io)?;
        if n == 0 {
            return Err(protocol("closed before the description ended".into()));
        }
        description.extend_from_slice(&more[..n]);
    }
    let text = std::str::from_utf8(&description)
        .map_err(|_| protocol("the description is not UTF-8".into()))?;
    let (old_pid, addresses) = parse_description(text.trim_end()).map_err(protocol)?;
    if addresses.len() != fds.len() {
        return Err(protocol(format!(
            "{} addresses described but {} sockets attached",
            addresses.len(),
            fds.len()
        )));
    }
    let sockets = addresses
        .into_iter()
        .zip(fds)
        .map(|(address, fd)| Offered {
            address,
            socket: TcpListener::from(fd),
        })
        .collect();
    Ok((
        Inherited {
            sockets: Mutex::new(sockets),
        },
        Handover {
            path: path.to_owned(),
            stream,
            old_pid,
        },
    ))
}

impl Handover {
    /// Tells the old process that this one serves: it stops accepting and drains.
    /// Returns once it has let go of the upgrade socket's path.
    pub fn complete(self) -> Result<(), UpgradeError> {
        let io = |source| UpgradeError::Io {
            path: self.path.clone(),
            source,
        };
        let mut stream = &self.stream;
        stream.write_all(b"ready\n").map_err(io)?;
        let mut line = String::new();
        BufReader::new(stream.take(16))
            .read_line(&mut line)
            .map_err(io)?;
        if line.trim_end() != "bye" {
            return Err(UpgradeError::Protocol {
                path: self.path.clone(),
                what: format!("expected `bye`, got {line:?}"),
            });
        }
        Ok(())
    }
}

/// `portcullis pid=N` then ` ADDRESS` per socket, in the order they are attached.
fn describe(pid: u32, sockets: &[Offered]) -> String {
    let mut line = format!("portcullis pid={pid}");
    for offered in sockets {
        line.push(' ');
        line.push_str(&offered.address.to_string());
    }
    line.push('\n');
    line
}

fn parse_description(line: &str) -> Result<(u32, Vec<SocketAddr>), String> {
    let mut words = line.split(' ');
    let pid = match (words.next(), words.next()) {
        (Some("portcullis"), Some(word)) => word.strip_prefix("pid=").and_then(|p| p.parse().ok()),
        _ => None,
    };
    let Some(pid) = pid else {
        return Err(format!("not a handover description: {line:?}"));
    };
    let addresses = words
        .map(|word| {
            word.parse()
                .map_err(|_| format!("{word:?} is not a socket address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((pid, addresses))
}

/// The old process's side: listens on `path` (replacing a file that no process
/// answers on) and runs the exchange on a thread of its own. `offer` lists the sockets
/// to hand over at the time a successor asks; `handed_over` runs once a successor has
/// said `ready`, after the path is removed; the serving process should then stop
/// accepting and drain.
pub fn serve(
    path: &Path,
    offer: impl Fn() -> std::io::Result<Vec<Offered>> + Send + 'static,
    handed_over: impl FnOnce() + Send + 'static,
) -> Result<(), UpgradeError> {
    let io = |source| UpgradeError::Io {
        path: path.to_owned(),
        source,
    };
    if let Probe::Serving { pid } = probe(path) {
        return Err(UpgradeError::Protocol {
            path: path.to_owned(),
            what: format!("another process (pid {pid}) serves it"),
        });
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io(error)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    let path = path.to_owned();
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            let mut handed_over = Some(handed_over);
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                match exchange(&path, stream, &offer) {
                    Ok(true) => {
                        if let Some(handed_over) = handed_over.take() {
                            handed_over();
                        }
                        return;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!("binary upgrade did not happen: {error}");
                    }
                }
            }
        })
        .map_err(io)?;
    Ok(())
}

/// One connection to the upgrade socket: `who` (answered with the pid) or `upgrade`
/// (the sockets, then `ready`, then `bye`). True when the sockets were handed over.
fn exchange(
    path: &Path,
    stream: UnixStream,
    offer: &impl Fn() -> std::io::Result<Vec<Offered>>,
) -> Result<bool, UpgradeError> {
    let io = |source| UpgradeError::Io {
        path: path.to_owned(),
        source,
    };
    stream.set_read_timeout(Some(STEP_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(STEP_TIMEOUT)).map_err(io)?;
    let mut request = String::new();
    BufReader::new((&stream).take(16))
        .read_line(&mut request)
        .map_err(io)?;
    let pid = std::process::id();
    match request.trim_end() {
        "who" => {
            (&stream)
                .write_all(format!("portcullis pid={pid}\n").as_bytes())
                .map_err(io)?;
            return Ok(false);
        }
        "upgrade" => {}
        other => {
            return Err(UpgradeError::Protocol {
                path: path.to_owned(),
                what: format!("unknown request {other:?}"),
            })
        }
    }
    let sockets = offer().map_err(io)?;
    if sockets.len() > MAX_SOCKETS {
        return Err(UpgradeError::TooManySockets {
            path: path.to_owned(),
            count: sockets.len(),
        });
    }
    let description = describe(pid, &sockets);
    let fds: Vec<_> = sockets
        .iter()
        .map(|offered| offered.socket.as_fd())
        .collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(UpgradeError::TooManySockets {
            path: path.to_owned(),
            count: sockets.len(),
        });
    }
    let sent = rustix::net::sendmsg(
        stream.as_fd(),
        &[IoSlice::new(description.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|errno| io(errno.into()))?;
    (&stream)
        .write_all(&description.as_bytes()[sent..])
        .map_err(io)?;
    tracing::info!(
        sockets = sockets.len(),
        "binary upgrade: listening sockets sent to the new process"
    );
    // Our copies stay open until we stop accepting; the successor has its own.
    drop(sockets);
    stream.set_read_timeout(Some(READY_TIMEOUT)).map_err(io)?;
    let mut ready = String::new();
    BufReader::new((&stream).take(16))
        .read_line(&mut ready)
        .map_err(io)?;
    if ready.trim_end() != "ready" {
        return Err(UpgradeError::Protocol {
            path: path.to_owned(),
            what: "the new process went away before it was ready; still serving".into(),
        });
    }
    // Let go of the path first, so that the successor can bind it for the next one.
    let _ = std::fs::remove_file(path);
    (&stream).write_all(b"bye\n").map_err(io)?;
    tracing::info!("binary upgrade: the new process serves; this one stops accepting and drains");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_round_trips() {
        let sockets = vec![
            Offered {
                address: "127.0.0.1:8080".parse().expect("address"),
                socket: TcpListener::bind("127.0.0.1:0").expect("binds"),
            },
            Offered {
                address: "[::1]:9090".parse().expect("address"),
                socket: TcpListener::bind("127.0.0.1:0").expect("binds"),
            },
        ];
        let line = describe(42, &sockets);
        let (pid, addresses) = parse_description(line.trim_end()).expect("parses");
        assert_eq!(pid, 42);
        assert_eq!(addresses, [sockets[0].address, sockets[1].address].to_vec());
        assert!(parse_description("hello").is_err());
        assert!(parse_description("portcullis pid=1 nonsense").is_err());
    }

    #[test]
    fn sockets_and_their_queued_connections_are_handed_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("upgrade.sock");
        let listening = TcpListener::bind("127.0.0.1:0").expect("binds");
        let address = listening.local_addr().expect("address");
        // A client that connects before the handover waits in the accept queue.
        let early = std::net::TcpStream::connect(address).expect("connects");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let offered = listening.try_clone().expect("dup");
        serve(
            &path,
            move || {
                Ok(vec![Offered {
                    address,
                    socket: offered.try_clone()?,
                }])
            },
            move || {
                let _ = done_tx.send(());
            },
        )
        .expect("serves");
        assert!(matches!(probe(&path), Probe::Serving { pid } if pid == std::process::id()));
        let (inherited, handover) = receive(&path).expect("receives");
        assert_eq!(handover.old_pid, std::process::id());
        let taken = inherited.take(address);
        assert_eq!(taken.len(), 1);
        assert!(inherited.is_empty());
        handover.complete().expect("completes");
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the old side was told");
        assert!(!path.exists(), "the old side let go of the path");
        drop(listening);
        // The queued connection is accepted on the inherited socket.
        let (accepted, _) = taken[0].accept().expect("accepts");
        assert_eq!(
            accepted.peer_addr().expect("peer"),
            early.local_addr().expect("local")
        );
    }
}
