//! Per-core serving: [`Workers`], a set of single-threaded Tokio runtimes, one thread each, that
//! serve the connections a [`Serve`](super::Serve) accepts.
//!
//! A work-stealing runtime moves tasks between threads, and every wake-up of a connection's task
//! may cross threads (a socket's readiness seen by one worker, the task run by another). Here a
//! connection is handed to one worker once, at the accept, and every request on it runs on that
//! worker's thread: its socket is registered with that thread's reactor, its timers live in that
//! thread's wheel, and its tasks never migrate — the shape of nginx's and HAProxy's workers. The
//! work-stealing runtime remains the better choice for handlers that run long stretches of CPU
//! work, which here would hold up every other connection of their worker.
//!
//! ```no_run
//! use strata::http::{Body, Request, Response, Stack};
//! use strata::server::Workers;
//!
//! # async fn run() -> std::io::Result<()> {
//! let service = Stack::new().serve(|_req: Request| async { Response::new(Body::from("hello\n")) });
//! // One worker per CPU the process may use; the accept loop stays on the caller's runtime.
//! let workers = Workers::start(Workers::available())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! strata::serve(listener, service).workers(workers).await?;
//! # Ok(())
//! # }
//! ```

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static WORKER_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the per-core worker the calling thread is (from 0), or `None` on any other thread
/// (a work-stealing runtime's, a control runtime's, a blocking pool's). Lets per-thread state — a
/// pool of upstream connections, say — be kept per worker, so that a connection registered with
/// one worker's reactor is used by that worker.
pub fn current_worker() -> Option<usize> {
    WORKER_INDEX.with(Cell::get)
}

/// One worker: its runtime's handle and how many connections it serves now.
struct Worker {
    handle: Handle,
    connections: AtomicUsize,
}

/// Per-core runtimes: `n` threads, each running a single-threaded Tokio runtime (I/O and time
/// enabled), given connections by [`Serve::workers`](super::Serve::workers). Dropping the last
/// reference stops the threads; the tasks still running on them are dropped.
pub struct Workers {
    workers: Box<[Worker]>,
    /// Where the search for the least loaded worker starts: rotated, so that ties (all idle, at
    /// start-up) are spread instead of all going to the first.
    next: AtomicUsize,
    stop: CancellationToken,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("len", &self.workers.len()).finish_non_exhaustive()
    }
}

impl Workers {
    /// The number of CPUs the process may use (its affinity mask and cgroup quota), at least one:
    /// the usual number of workers.
    pub fn available() -> usize {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }

    /// Starts `n` workers (at least one), threads named `strata-worker-0`, `strata-worker-1`…
    pub fn start(n: usize) -> io::Result<Arc<Workers>> {
        let stop = CancellationToken::new();
        let mut workers = Vec::with_capacity(n.max(1));
        let mut threads = Vec::with_capacity(n.max(1));
        for index in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // The runtime's own thread is the one spawned below; this names its blocking pool.
                .thread_name(format!("strata-blocking-{index}"))
                .build()?;
            workers.push(Worker { handle: runtime.handle().clone(), connections: AtomicUsize::new(0) });
            let stopped = stop.clone();
            let thread = std::thread::Builder::new().name(format!("strata-worker-{index}")).spawn(move || {
                WORKER_INDEX.with(|w| w.set(Some(index)));
                runtime.block_on(stopped.cancelled());
                // Tasks still running (connections past the grace period) end here, without
                // waiting for blocking work they started.
                runtime.shutdown_background();
            })?;
            threads.push(thread);
        }
        Ok(Arc::new(Workers {
            workers: workers.into_boxed_slice(),
            next: AtomicUsize::new(0),
            stop,
            threads: std::sync::Mutex::new(threads),
        }))
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The runtime of worker `index`, to spawn work of the caller's own there.
    pub fn handle(&self, index: usize) -> Option<&Handle> {
        self.workers.get(index).map(|w| &w.handle)
    }

    /// The connections each worker serves now, by index.
    pub fn connections(&self) -> Vec<usize> {
        self.workers.iter().map(|w| w.connections.load(Ordering::Relaxed)).collect()
    }

    /// Picks the worker with the fewest open connections (ties taken in turn) and counts one more
    /// there until the returned guard is dropped.
    pub(super) fn assign(self: &Arc<Self>) -> Assigned {
        let n = self.workers.len();
        let start = if n == 1 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) % n };
        let mut best = start;
        let mut fewest = usize::MAX;
        for offset in 0..n {
            let index = (start + offset) % n;
            let open = self.workers[index].connections.load(Ordering::Relaxed);
            if open < fewest {
                (best, fewest) = (index, open);
            }
        }
        self.workers[best].connections.fetch_add(1, Ordering::Relaxed);
        Assigned { workers: self.clone(), index: best }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        let threads = std::mem::take(self.threads.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
        let me = std::thread::current().id();
        for thread in threads {
            // The last reference may be dropped by a task on a worker: that thread cannot wait for itself.
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

/// A connection counted on one worker.
pub(super) struct Assigned {
    workers: Arc<Workers>,
    index: usize,
}

impl Assigned {
    /// The runtime of the worker the connection runs on.
    pub(super) fn handle(&self) -> &Handle {
        &self.workers.workers[self.index].handle
    }
}

impl Drop for Assigned {
    fn drop(&mut self) {
        self.workers.workers[self.index].connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where an accept loop runs the connections it accepts.
#[derive(Clone, Default)]
pub(super) enum Placement {
    /// On the runtime of the accept loop (`tokio::spawn`).
    #[default]
    Here,
    /// On the least loaded of the workers.
    Workers(Arc<Workers>),
}

/// An accepted socket on its way to the runtime that serves it.
pub(super) enum Socket {
    /// Already registered with the accept loop's reactor, which serves it.
    Registered(tokio::net::TcpStream),
    /// Taken out of the accept loop's reactor, to be registered with a worker's: a socket stays
    /// with the reactor it was registered with, and one of another thread's would wake that
    /// thread for each of its reads.
    Detached(std::net::TcpStream),
}

impl Socket {
    /// The socket, registered with the reactor of the runtime this is called on.
    pub(super) fn attach(self) -> io::Result<tokio::net::TcpStream> {
        match self {
            Socket::Registered(stream) => Ok(stream),
            Socket::Detached(stream) => tokio::net::TcpStream::from_std(stream),
        }
    }
}

impl Placement {
    /// Prepares a socket accepted on the accept loop's runtime for the runtime that will serve it.
    pub(super) fn detach(&self, stream: tokio::net::TcpStream) -> io::Result<Socket> {
        match self {
            Placement::Here => Ok(Socket::Registered(stream)),
            // Still non-blocking, as tokio set it.
            Placement::Workers(_) => stream.into_std().map(Socket::Detached),
        }
    }

    /// Spawns `connection` on `tracker` where this placement says.
    pub(super) fn spawn<F>(&self, tracker: &tokio_util::task::TaskTracker, connection: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Placement::Here => {
                tracker.spawn(connection);
            }
            Placement::Workers(workers) => {
                let assigned = workers.assign();
                let handle = assigned.handle().clone();
                tracker.spawn_on(
                    async move {
                        let _assigned = assigned;
                        connection.await;
                    },
                    &handle,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_its_tasks_on_its_own_thread_and_knows_its_index() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(current_worker(), None);
        for index in 0..2 {
            let (tx, rx) = std::sync::mpsc::channel();
            workers.handle(index).unwrap().spawn(async move {
                tx.send((current_worker(), std::thread::current().name().map(str::to_owned))).unwrap();
            });
            let (seen, name) = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
            assert_eq!(seen, Some(index));
            assert_eq!(name.as_deref(), Some(format!("strata-worker-{index}").as_str()));
        }
    }

    #[test]
    fn connections_go_to_the_least_loaded_worker() {
        let workers = Workers::start(3).unwrap();
        let a = workers.assign();
        let b = workers.assign();
        let c = workers.assign();
        let mut indices = [a.index, b.index, c.index];
        indices.sort_unstable();
        assert_eq!(indices, [0, 1, 2], "one each while all are equally loaded");
        let freed = b.index;
        drop(b);
        let d = workers.assign();
        assert_eq!(d.index, freed, "the worker with a free slot gets the next one");
        assert_eq!(workers.connections(), [1, 1, 1]);
        drop((a, c, d));
        assert_eq!(workers.connections(), [0, 0, 0]);
    }

    #[test]
    fn dropping_the_workers_stops_their_threads() {
        let workers = Workers::start(2).unwrap();
        let handle = workers.handle(0).unwrap().clone();
        drop(workers);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A runtime that has shut down drops what is spawned on it: the sender goes, unsent.
        drop(handle.spawn(async move {
            let _ = tx.send(());
        }));
        assert!(rx.recv_timeout(std::time::Duration::from_secs(5)).is_err());
    }
}
