//! How a request's task polls the upstream connection it uses.
//!
//! hyper's client connection and its request handle talk through channels (the request in, the
//! response and its body out), and each message wakes whoever last polled the other end. Here
//! that is the request's own task, polling both; and a task woken while it runs is polled again
//! from the top once it returns, through the server's connection, the stack and the proxy. That
//! made five polls of the task per proxied request where two have something to do (the client's
//! request arrives; the upstream's answer arrives).
//!
//! So the connection and its handles are polled with [`LocalWake`] as their waker: a wake that comes while the
//! task is polling them is noted and answered at once by polling them again, there; one that
//! comes at any other time (the socket is readable, a timer or another thread) wakes the task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The waker a connection, its request handle and its response body are polled with (see the
/// module docs).
pub(super) struct LocalWake {
    /// [`IDLE`], [`POLLING`] or [`WOKEN`].
    state: AtomicU8,
    /// The task polling the connection now.
    task: AtomicWaker,
}

/// Nobody is polling: a wake goes to the task.
const IDLE: u8 = 0;
/// The task is polling the connection: a wake is noted.
const POLLING: u8 = 1;
/// A wake came while the task was polling: it polls again before it returns.
const WOKEN: u8 = 2;

impl LocalWake {
    pub(super) fn new() -> LocalWake {
        LocalWake { state: AtomicU8::new(IDLE), task: AtomicWaker::new() }
    }

    /// Runs `round` (polls of the connection, its request handle or its body, with `waker`, this
    /// as a waker) for the task of `cx`, again for as long as a round is woken while it runs and
    /// does not finish. `round` may call [`LocalWake::consumed`].
    pub(super) fn poll<R>(
        &self,
        waker: &Waker,
        cx: &mut Context<'_>,
        mut round: impl FnMut(&mut Context<'_>, &LocalWake) -> Poll<R>,
    ) -> Poll<R> {
        self.task.register(cx.waker());
        let mut local = Context::from_waker(waker);
        loop {
            self.state.store(POLLING, Ordering::Release);
            let result = round(&mut local, self);
            // Back to IDLE either way; a wake after this point goes to the task.
            let woken = self.state.swap(IDLE, Ordering::AcqRel) == WOKEN;
            if result.is_ready() || !woken {
                return result;
            }
        }
    }

    /// Runs `f` (which hands the connection something) without waking the task: the caller polls
    /// the connection right after.
    pub(super) fn quietly<T>(&self, f: impl FnOnce() -> T) -> T {
        self.state.store(POLLING, Ordering::Release);
        let result = f();
        self.state.store(IDLE, Ordering::Release);
        result
    }

    /// Forgets the wakes noted so far in this round: the caller polls next what they woke (a
    /// request handed to the connection wakes the connection, which is polled right after).
    pub(super) fn consumed(&self) {
        self.state.store(POLLING, Ordering::Release);
    }
}

impl Wake for LocalWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            match state {
                IDLE => return self.task.wake(),
                WOKEN => return,
                _ => match self.state.compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) => state = now,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;

    /// A waker that counts its wakes.
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_from_another_thread_during_a_poll_is_never_lost() {
        let task = Arc::new(CountWakes(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let local = Arc::new(LocalWake::new());
        let local_waker = Waker::from(local.clone());
        let mut pending = 0;
        for round in 0..5_000 {
            let event = AtomicBool::new(false);
            let start = std::sync::Barrier::new(2);
            let woken_before = task.0.load(Ordering::SeqCst);
            let result = std::thread::scope(|scope| {
                scope.spawn(|| {
                    start.wait();
                    // Spread the wake over the whole round: before, during and after the poll.
                    for _ in 0..round % 64 {
                        std::hint::spin_loop();
                    }
                    event.store(true, Ordering::SeqCst);
                    local_waker.wake_by_ref();
                });
                start.wait();
                let mut cx = Context::from_waker(&task_waker);
                local.poll(&local_waker, &mut cx, |_, _| {
                    if event.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }
                })
            });
            // The poll ended without seeing the event: the wake must have reached the task.
            if result.is_pending() {
                pending += 1;
                assert_eq!(task.0.load(Ordering::SeqCst), woken_before + 1, "round {round}: a wake was lost");
            }
            assert_eq!(local.state.load(Ordering::SeqCst), IDLE);
        }
        // Some rounds ended before the other thread's wake, so the case above was exercised.
        assert!(pending > 0);
    }
}
