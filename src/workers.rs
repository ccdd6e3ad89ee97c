//! Worker runtimes for `worker_model: per_core`: one single-threaded tokio runtime per
//! worker, each on its own thread. Every listener has one socket per worker (bound with
//! `SO_REUSEPORT`, so the kernel spreads new connections over them), and a connection
//! lives its whole life on the worker that accepted it: no task moves between threads,
//! and the upstream connections it borrows come from that worker's share of the pool.
//!
//! Worker 0 is the runtime that started the gateway; it also runs the admin listener,
//! reloads and health checks. Workers 1.. are started here and stop when [`Workers`] is
//! dropped or [`Workers::stop`] is awaited.

use std::cell::Cell;
use std::io;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// The index of the worker this thread runs; 0 on threads the gateway did not start.
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many tasks a worker runtime runs between looks at I/O readiness and timers.
pub const EVENT_INTERVAL: u32 = 256;

/// The worker running on this thread (0 outside the gateway's worker threads).
pub fn current() -> usize {
    WORKER_INDEX.with(Cell::get)
}

/// A started worker thread: dropping `stop` ends its runtime; `stopped` fires once the
/// runtime (and every task on it) is gone.
struct WorkerThread {
    stop: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
}

/// The gateway's worker runtimes.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<WorkerThread>,
}

impl Workers {
    /// Only the calling runtime: every listener gets one socket, served there.
    pub fn single() -> Self {
        Workers {
            handles: vec![Handle::current()],
            threads: Vec::new(),
        }
    }

    /// The calling runtime as worker 0 and `count - 1` new single-threaded runtimes, each
    /// on a thread of its own named `portcullis-worker-N`.
    pub fn start(count: usize) -> io::Result<Self> {
        let mut workers = Self::single();
        for index in 1..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .event_interval(EVENT_INTERVAL)
                .enable_all()
                .build()?;
            let (stop, stop_rx) = oneshot::channel::<()>();
            let (stopped_tx, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("portcullis-worker-{index}"))
                .spawn(move || {
                    WORKER_INDEX.with(|cell| cell.set(index));
                    // Serves whatever is spawned on the handle until `stop` is dropped.
                    let _ = runtime.block_on(stop_rx);
                    drop(runtime);
                    let _ = stopped_tx.send(());
                })?;
            workers.threads.push(WorkerThread { stop, stopped });
        }
        Ok(workers)
    }

    /// One handle per worker, worker 0 first.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Stops the worker threads and waits until their runtimes are gone (tasks still
    /// on them are dropped).
    pub async fn stop(self) {
        let mut stopped = Vec::with_capacity(self.threads.len());
        for thread in self.threads {
            drop(thread.stop);
            stopped.push(thread.stopped);
        }
        for done in stopped {
            let _ = done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_runs_on_its_own_thread_with_its_index() {
        let workers = Workers::start(3).expect("workers start");
        assert_eq!(workers.count(), 3);
        let mut seen = Vec::new();
        for handle in workers.handles() {
            let index = handle
                .spawn(async { (current(), std::thread::current().id()) })
                .await
                .expect("task runs");
            seen.push(index);
        }
        assert_eq!(
            seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_ne!(seen[1].1, seen[2].1);
        assert_ne!(seen[0].1, seen[1].1);
        workers.stop().await;
    }

    #[tokio::test]
    async fn stopping_ends_the_tasks_left_on_a_worker() {
        let workers = Workers::start(2).expect("workers start");
        let (_keep, never) = oneshot::channel::<()>();
        let (dropped_tx, dropped) = oneshot::channel::<()>();
        workers.handles()[1].spawn(async move {
            let _signal_on_drop = dropped_tx;
            let _ = never.await;
        });
        workers.stop().await;
        assert!(
            dropped.await.is_err(),
            "the task was dropped with its runtime"
        );
    }
}
