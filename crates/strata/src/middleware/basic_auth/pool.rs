//! The verification threads: a few process-wide threads that run the slow hashes (argon2, bcrypt)
//! off the async executor, each with argon2 memory of its own that it reuses from one check to the
//! next.
//!
//! Why reuse: an argon2 check fills `m_cost` KiB (19 MiB with `strata hash-password`'s defaults).
//! Allocated afresh per check, as the argon2 crate does by default, the freed blocks stayed with
//! glibc's malloc: 32 concurrent wrong passwords took the gateway from 7 to 378 MiB for good. With
//! one block array per thread, memory is `threads × the largest m_cost` (48 MiB after the same
//! burst on two cores) and stays there.

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
const MAX_WORKERS: usize = 4;

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// [`QUEUE_CAPACITY`] jobs are waiting already.
    Full,
    /// No verification thread is running: the caller verifies where it is.
    NoThreads,
}

/// The process-wide verification threads, shared by every `BasicAuth` so that many routes with
/// their own layer still use a bounded amount of CPU and memory.
pub(super) struct VerifyPool {
    /// `None` when no thread could be started.
    jobs: Option<SyncSender<Job>>,
}

/// The pool, started on first use.
pub(super) fn pool() -> &'static VerifyPool {
    static POOL: OnceLock<VerifyPool> = OnceLock::new();
    POOL.get_or_init(VerifyPool::start)
}

/// As many threads as cores, at most [`MAX_WORKERS`]: the bound on concurrent slow checks, and on
/// argon2 memory (`threads × the largest m_cost`).
fn worker_count() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, MAX_WORKERS)
}

impl VerifyPool {
    fn start() -> VerifyPool {
        let workers = worker_count();
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
                        Err(_) => return,
                    }
                }
            });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "could not start a password verification thread"),
            }
        }
        VerifyPool { jobs: (started > 0).then_some(tx) }
    }

    /// Queues `job` for the next free thread.
    pub(super) fn submit(&self, job: Job) -> Result<(), Refused> {
        let Some(jobs) = &self.jobs else { return Err(Refused::NoThreads) };
        match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            // The threads are gone (they only end when the sender is dropped, which it never is).
            Err(TrySendError::Disconnected(_)) => Err(Refused::NoThreads),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_channel::oneshot;

    #[tokio::test]
    async fn jobs_run_on_named_threads_that_keep_their_memory() {
        let pool = pool();
        // Each job grows the memory it is lent and reports what it found: a thread that ran a job
        // before hands the next one the memory it left, never a fresh allocation.
        let mut seen = Vec::new();
        for _ in 0..(worker_count() * 4) {
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
        // Other tests share this process-wide pool, so only "some thread reused its memory" holds.
        let names: std::collections::HashSet<_> = seen.iter().map(|(n, _)| n.clone()).collect();
        assert!(names.len() <= worker_count());
        assert!(seen.iter().filter(|(_, found)| *found >= 8).count() >= seen.len() - worker_count());
    }

    #[tokio::test]
    async fn a_panicking_job_drops_its_reply_and_the_thread_lives_on() {
        let (tx, rx) = oneshot::channel::<()>();
        let job: Job = Box::new(move |_| {
            let _keep = tx;
            panic!("a verifier bug");
        });
        pool().submit(job).unwrap();
        assert!(rx.await.is_err(), "the reply channel is dropped");
        for _ in 0..worker_count() * 2 {
            let (tx, rx) = oneshot::channel();
            pool()
                .submit(Box::new(move |_| {
                    let _ = tx.send(());
                }))
                .unwrap();
            rx.await.expect("the threads still run jobs");
        }
    }
}
