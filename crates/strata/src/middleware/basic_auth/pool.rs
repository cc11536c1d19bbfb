//! The verification threads: a few threads that run the slow hashes (argon2, bcrypt) off the
//! async executor, each with argon2 memory of its own that it reuses from one check to the next.
//!
//! Why reuse: an argon2 check fills `m_cost` KiB (19 MiB with `strata hash-password`'s defaults).
//! Allocated afresh per check, as the argon2 crate does by default, the freed blocks stayed with
//! glibc's malloc: 32 concurrent wrong passwords took the gateway from 7 to 378 MiB for good. With
//! one block array per thread, memory is `threads × the largest m_cost` (48 MiB after the same
//! burst on two cores) and stays there.
//!
//! Why a value rather than process-wide threads: the threads belong to whoever holds the pool. A
//! layer built without one owns a pool of its own, whose threads end when the last layer holding
//! it is dropped; layers given the same [`VerifyPool`] share its threads and so its memory bound
//! (the gateway gives one pool to every `basic_auth` layer of the process, across reloads).
//! The threads start on the first slow verification, so a layer that is built and never asked
//! (`strata check`, a config test, a route nobody calls) costs no thread.

use std::fmt;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;

use super::hash::Argon2Memory;

/// A verification: runs on a pool thread with that thread's argon2 memory.
pub(super) type Job = Box<dyn FnOnce(&mut Argon2Memory) + Send + 'static>;

/// Verifications waiting beyond this many are refused (503) rather than queued without bound.
pub(super) const QUEUE_CAPACITY: usize = 256;
/// Enough to keep logins flowing without taking every core from the async runtime.
const MAX_DEFAULT_THREADS: usize = 4;

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// [`QUEUE_CAPACITY`] jobs are waiting already.
    Full,
    /// No verification thread is running: the caller verifies where it is.
    NoThreads,
}

/// The threads that verify slow password hashes (argon2, bcrypt) for [`BasicAuth`](super::BasicAuth)
/// layers, off the async executor, with a bounded queue.
///
/// A clone shares the same threads (an `Arc` inside). Give one pool to several layers with
/// [`BasicAuthBuilder::verify_pool`](super::BasicAuthBuilder::verify_pool) to bound the CPU and
/// argon2 memory of all of them together: at most `threads` slow verifications run at once, and
/// argon2 memory is `threads × the largest m_cost` however many attempts come. A layer built
/// without a pool owns one of [`VerifyPool::default`]'s size.
///
/// The threads (`strata-verify-N`) start on the first slow verification and end when the last
/// clone of the pool is dropped (a verification already running finishes first).
///
/// ```
/// use std::num::NonZeroUsize;
/// use strata::middleware::basic_auth::{BasicAuth, VerifyPool};
///
/// # fn main() -> Result<(), strata::middleware::ConfigError> {
/// // Two routes, one bound on the CPU and memory their slow hashes take.
/// let pool = VerifyPool::new(NonZeroUsize::new(2).unwrap());
/// let admin = BasicAuth::builder().user("root", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").verify_pool(pool.clone()).build()?;
/// let reports = BasicAuth::builder().user("ann", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").verify_pool(pool).build()?;
/// # let _ = (admin, reports);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct VerifyPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    threads: NonZeroUsize,
    /// Set by the first [`VerifyPool::submit`]; `None` inside when no thread could be started.
    /// Dropping the sender (with the last clone of the pool) ends the threads.
    jobs: OnceLock<Option<SyncSender<Job>>>,
}

impl VerifyPool {
    /// A pool of `threads` verification threads, started on first use.
    pub fn new(threads: NonZeroUsize) -> VerifyPool {
        VerifyPool { inner: Arc::new(PoolInner { threads, jobs: OnceLock::new() }) }
    }

    /// How many threads the pool runs (once started).
    pub fn threads(&self) -> usize {
        self.inner.threads.get()
    }

    /// Whether `self` and `other` are clones of one pool (share their threads).
    pub fn ptr_eq(&self, other: &VerifyPool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Queues `job` for the next free thread, starting the threads on first use.
    pub(super) fn submit(&self, job: Job) -> Result<(), Refused> {
        let jobs = self.inner.jobs.get_or_init(|| start(self.inner.threads.get()));
        let Some(jobs) = jobs else { return Err(Refused::NoThreads) };
        match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            // The threads are gone (they only end when the sender is dropped, with the pool).
            Err(TrySendError::Disconnected(_)) => Err(Refused::NoThreads),
        }
    }
}

impl Default for VerifyPool {
    /// As many threads as cores, at most 4: enough to keep logins flowing without taking every
    /// core from the async runtime.
    fn default() -> Self {
        VerifyPool::new(default_threads())
    }
}

impl fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let started = matches!(self.inner.jobs.get(), Some(Some(_)));
        f.debug_struct("VerifyPool").field("threads", &self.threads()).field("started", &started).finish()
    }
}

fn default_threads() -> NonZeroUsize {
    let cores = thread::available_parallelism().map_or(2, NonZeroUsize::get);
    NonZeroUsize::new(cores.clamp(1, MAX_DEFAULT_THREADS)).unwrap_or(NonZeroUsize::MIN)
}

/// Starts `workers` threads reading one bounded queue; `None` when none could be started.
fn start(workers: usize) -> Option<SyncSender<Job>> {
    let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_CAPACITY);
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for i in 0..workers {
        let rx = rx.clone();
        let spawned = thread::Builder::new().name(format!("strata-verify-{i}")).spawn(move || {
            // Grown by the first argon2 check to its `m_cost`, then reused by every later one.
            let mut memory = Argon2Memory::new();
            loop {
                // The lock is held only while waiting for a job, never while verifying.
                let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                match next {
                    // A panicking verifier drops its reply channel (the request gets a 500);
                    // the thread lives on. The memory holds nothing a later check reads before
                    // writing, so it stays usable.
                    Ok(job) => drop(panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)))),
                    // The pool was dropped: its queue is closed and empty.
                    Err(_) => return,
                }
            }
        });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::warn!(error = %e, "could not start a password verification thread"),
        }
    }
    (started > 0).then_some(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_channel::oneshot;
    use std::collections::HashSet;
    use std::time::Duration;

    fn threads(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    /// Runs `jobs` trivial jobs on `pool` one after another; the ids of the threads that ran them.
    async fn thread_ids(pool: &VerifyPool, jobs: usize) -> HashSet<thread::ThreadId> {
        let mut ids = HashSet::new();
        for _ in 0..jobs {
            let (tx, rx) = oneshot::channel();
            pool.submit(Box::new(move |_| {
                let _ = tx.send(thread::current().id());
            }))
            .unwrap();
            ids.insert(rx.await.unwrap());
        }
        ids
    }

    /// The ids of both threads of a two-thread `pool`: two jobs that wait for each other, so that
    /// each runs on a thread of its own whatever the scheduler does (one after another, both jobs
    /// could land on the same thread). Fails after 10 s if the pool has one thread.
    async fn both_thread_ids(pool: &VerifyPool) -> HashSet<thread::ThreadId> {
        let meeting = Arc::new(std::sync::Barrier::new(2));
        let mut answers = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = oneshot::channel();
            let meeting = meeting.clone();
            pool.submit(Box::new(move |_| {
                meeting.wait();
                let _ = tx.send(thread::current().id());
            }))
            .unwrap();
            answers.push(rx);
        }
        let mut ids = HashSet::new();
        for rx in answers {
            let id =
                tokio::time::timeout(Duration::from_secs(10), rx).await.expect("two threads ran the jobs together");
            ids.insert(id.unwrap());
        }
        ids
    }

    #[tokio::test]
    async fn jobs_run_on_named_threads_that_keep_their_memory() {
        let pool = VerifyPool::new(threads(2));
        // Each job grows the memory it is lent and reports what it found: a thread that ran a job
        // before hands the next one the memory it left, never a fresh allocation.
        let mut seen = Vec::new();
        for _ in 0..8 {
            let (tx, rx) = oneshot::channel();
            let job: Job = Box::new(move |memory: &mut Argon2Memory| {
                let found = memory.len();
                if memory.len() < 8 {
                    memory.resize(8, argon2::Block::default());
                }
                let _ = tx.send((thread::current().name().map(str::to_string), found));
            });
            pool.submit(job).unwrap();
            seen.push(rx.await.unwrap());
        }
        for (name, _) in &seen {
            let name = name.as_deref().unwrap();
            assert!(name.starts_with("strata-verify-"), "{name}");
        }
        let names: HashSet<_> = seen.iter().map(|(n, _)| n.clone()).collect();
        assert!(names.len() <= 2);
        // Only the first job on each thread found no memory.
        assert!(seen.iter().filter(|(_, found)| *found >= 8).count() >= seen.len() - 2);
    }

    #[tokio::test]
    async fn a_panicking_job_drops_its_reply_and_the_thread_lives_on() {
        let pool = VerifyPool::new(threads(1));
        let (tx, rx) = oneshot::channel::<()>();
        let job: Job = Box::new(move |_| {
            let _keep = tx;
            panic!("a verifier bug");
        });
        pool.submit(job).unwrap();
        assert!(rx.await.is_err(), "the reply channel is dropped");
        assert_eq!(thread_ids(&pool, 3).await.len(), 1, "the one thread still runs jobs");
    }

    #[tokio::test]
    async fn pools_share_threads_only_through_clones() {
        let (a, b) = (VerifyPool::new(threads(2)), VerifyPool::new(threads(2)));
        let (a_ids, b_ids) = (both_thread_ids(&a).await, both_thread_ids(&b).await);
        assert_eq!((a_ids.len(), b_ids.len()), (2, 2));
        assert!(a_ids.is_disjoint(&b_ids), "separate pools, separate threads");
        let clone = a.clone();
        assert!(clone.ptr_eq(&a) && !clone.ptr_eq(&b));
        assert_eq!(both_thread_ids(&clone).await, a_ids, "a clone runs on the same threads");
    }

    #[test]
    fn threads_start_on_first_use_and_end_with_the_last_clone() {
        /// Reports when the thread that holds it ends (thread-local destructors run at exit).
        struct OnExit(mpsc::Sender<()>);
        impl Drop for OnExit {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        thread_local! {
            static EXIT: std::cell::RefCell<Option<OnExit>> = const { std::cell::RefCell::new(None) };
        }

        let pool = VerifyPool::new(threads(1));
        assert!(format!("{pool:?}").contains("started: false"), "no thread before the first job");
        let (exited_tx, exited) = mpsc::channel();
        let (ran_tx, ran) = mpsc::channel();
        pool.submit(Box::new(move |_| {
            EXIT.with(|slot| *slot.borrow_mut() = Some(OnExit(exited_tx)));
            let _ = ran_tx.send(());
        }))
        .unwrap();
        ran.recv_timeout(Duration::from_secs(10)).expect("the job ran");
        let clone = pool.clone();
        drop(pool);
        assert_eq!(
            exited.recv_timeout(Duration::from_millis(200)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "a clone keeps the thread"
        );
        drop(clone);
        exited.recv_timeout(Duration::from_secs(10)).expect("the thread ends with the last clone");
    }
}
