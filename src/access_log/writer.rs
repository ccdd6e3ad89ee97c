//! The writer of one access-log destination (stdout or a file): ONE thread, fed lines
//! through a bounded queue. A request never waits for it: a line that finds the queue
//! full is dropped and counted. Line buffers go back to a spare list once written, so
//! that formatting a line allocates nothing in the steady state.
//!
//! The thread writes through a buffer, flushed after each batch (see [`write_lines`]), and
//! reopens its file when asked ([`Sink::reopen`], on `SIGUSR1`, after logrotate moved
//! the file away). It ends once every sender is gone (the destination left the
//! configuration and its last request finished), flushing what it holds.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::AccessLogDestination;
use crate::metrics::AccessLogMetrics;

/// Line buffers kept for reuse, at most.
const SPARE_BUFFERS: usize = 1024;
/// A buffer grown larger than this (a line with huge headers) is not kept.
const SPARE_CAPACITY: usize = 16 * 1024;
/// What a new line buffer starts with: room for a typical line.
const LINE_CAPACITY: usize = 768;
/// Bytes the writer gathers before a write(2), unless the queue runs empty first.
const WRITE_BUFFER: usize = 64 * 1024;
/// How long the writer lets lines gather under traffic: a line is in the file at most
/// about this long after its request ended.
const BATCH_PAUSE: Duration = Duration::from_millis(10);
/// A file that cannot be opened is tried again at most this often.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

enum Message {
    Line(Vec<u8>),
    /// Look at the reopen flag now (the queue was idle).
    Wake,
}

/// What the requests' side and the writer thread share.
struct Shared {
    reopen: AtomicBool,
    spare: Mutex<Vec<Vec<u8>>>,
    metrics: AccessLogMetrics,
}

/// One destination's queue and writer thread.
pub struct Sink {
    pub destination: AccessLogDestination,
    sender: SyncSender<Message>,
    shared: Arc<Shared>,
}

impl Sink {
    /// Starts the writer thread of `destination`, with room for `queue` lines.
    pub fn start(
        destination: AccessLogDestination,
        queue: usize,
        metrics: AccessLogMetrics,
    ) -> io::Result<Arc<Sink>> {
        let (sender, receiver) = mpsc::sync_channel(queue.max(1));
        let shared = Arc::new(Shared {
            reopen: AtomicBool::new(false),
            spare: Mutex::new(Vec::new()),
            metrics,
        });
        let output = Output::new(&destination);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(receiver, output, &thread_shared))?;
        Ok(Arc::new(Sink {
            destination,
            sender,
            shared,
        }))
    }

    /// An empty buffer for a line: a spare one when there is one.
    pub fn buffer(&self) -> Vec<u8> {
        let spare = self
            .shared
            .spare
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop());
        spare.unwrap_or_else(|| Vec::with_capacity(LINE_CAPACITY))
    }

    /// Queues `line` (one JSON object and its newline), or drops and counts it when the
    /// queue is full. Never blocks.
    pub fn send(&self, line: Vec<u8>) {
        match self.sender.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Line(line))) => {
                self.shared.metrics.dropped.inc();
                self.recycle(line);
            }
            Err(_) => self.shared.metrics.dropped.inc(),
        }
    }

    /// Gives back a buffer whose line was not sent (sampled out).
    pub fn recycle(&self, line: Vec<u8>) {
        recycle(&self.shared, line);
    }

    /// Reopens the file before the next line (logrotate's `SIGUSR1`); nothing for
    /// stdout.
    pub fn reopen(&self) {
        if matches!(self.destination, AccessLogDestination::File(_)) {
            self.shared.reopen.store(true, Ordering::Release);
            // A full queue will be read soon enough, and the flag is seen then.
            let _ = self.sender.try_send(Message::Wake);
        }
    }
}

fn recycle(shared: &Shared, mut line: Vec<u8>) {
    if line.capacity() > SPARE_CAPACITY {
        return;
    }
    line.clear();
    if let Ok(mut spare) = shared.spare.lock() {
        if spare.len() < SPARE_BUFFERS {
            spare.push(line);
        }
    }
}

/// The writer thread's loop: blocks for a line while the log is idle; under traffic,
/// wakes every [`BATCH_PAUSE`] to write what was queued meanwhile and flush it. A
/// request's send then never has to wake the thread (no syscall, no context switch
/// per line), and the file gets one write(2) per batch, not per line.
fn write_lines(receiver: Receiver<Message>, mut output: Output, shared: &Shared) {
    while let Ok(first) = receiver.recv() {
        output.handle(first, shared);
        loop {
            while let Ok(message) = receiver.try_recv() {
                output.handle(message, shared);
            }
            output.flush(shared);
            std::thread::sleep(BATCH_PAUSE);
            match receiver.try_recv() {
                Ok(message) => output.handle(message, shared),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
    output.flush(shared);
}

/// Where the writer thread writes.
enum Output {
    Stdout(BufWriter<io::Stdout>),
    File {
        path: PathBuf,
        file: Option<BufWriter<File>>,
        /// When the last open failed: the next try waits [`REOPEN_BACKOFF`].
        failed_at: Option<Instant>,
    },
}

impl Output {
    fn handle(&mut self, message: Message, shared: &Shared) {
        if shared.reopen.swap(false, Ordering::AcqRel) {
            self.reopen(shared);
        }
        if let Message::Line(line) = message {
            self.write(&line, shared);
            recycle(shared, line);
        }
    }

    fn new(destination: &AccessLogDestination) -> Output {
        match destination {
            AccessLogDestination::Stdout => {
                Output::Stdout(BufWriter::with_capacity(WRITE_BUFFER, io::stdout()))
            }
            AccessLogDestination::File(path) => Output::File {
                path: path.clone(),
                file: None,
                failed_at: None,
            },
        }
    }

    fn write(&mut self, line: &[u8], shared: &Shared) {
        let written = match self {
            Output::Stdout(out) => out.write_all(line),
            Output::File {
                path,
                file,
                failed_at,
            } => {
                if file.is_none() && failed_at.is_none_or(|at| at.elapsed() >= REOPEN_BACKOFF) {
                    *file = open(path, failed_at);
                }
                match file {
                    Some(out) => out.write_all(line),
                    None => Err(io::Error::other("the file is not open")),
                }
            }
        };
        match written {
            Ok(()) => shared.metrics.written.inc(),
            Err(error) => self.failed(&error, shared),
        }
    }

    fn flush(&mut self, shared: &Shared) {
        let flushed = match self {
            Output::Stdout(out) => out.flush(),
            Output::File {
                file: Some(out), ..
            } => out.flush(),
            Output::File { file: None, .. } => Ok(()),
        };
        if let Err(error) = flushed {
            self.failed(&error, shared);
        }
    }

    /// A write or flush failed: counted, logged once per file (until it is reopened),
    /// and the file is opened again before the next line.
    fn failed(&mut self, error: &io::Error, shared: &Shared) {
        shared.metrics.write_errors.inc();
        if let Output::File { path, file, .. } = self {
            if file.take().is_some() {
                tracing::error!(path = %path.display(), "cannot write the access log: {error}");
            }
        }
    }

    fn reopen(&mut self, shared: &Shared) {
        if let Output::File {
            path,
            file,
            failed_at,
        } = self
        {
            if let Some(mut old) = file.take() {
                if let Err(error) = old.flush() {
                    shared.metrics.write_errors.inc();
                    tracing::error!(path = %path.display(), "cannot write the access log: {error}");
                }
            }
            *failed_at = None;
            *file = open(path, failed_at);
            shared.metrics.reopens.inc();
            tracing::info!(path = %path.display(), "access log reopened");
        }
    }
}

fn open(path: &PathBuf, failed_at: &mut Option<Instant>) -> Option<BufWriter<File>> {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => {
            *failed_at = None;
            Some(BufWriter::with_capacity(WRITE_BUFFER, file))
        }
        Err(error) => {
            if failed_at.is_none() {
                tracing::error!(path = %path.display(), "cannot open the access log: {error}");
            }
            *failed_at = Some(Instant::now());
            None
        }
    }
}
