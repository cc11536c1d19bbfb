//! The outputs: one writer thread per output (stdout, stderr or a file), shared by every layer that
//! writes to it, taking pending lines in batches; flushing at shutdown and reopening files for log
//! rotation.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use super::{BATCH_BYTES, LINGER, PENDING_CAPACITY};

/// Where an output writes: the key under which layers share a writer thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// The sending side of one output. Dropping the last one ends its writer thread, after it has
/// written what was pending.
#[derive(Debug)]
pub(super) struct Sink {
    pub(super) shared: Arc<Shared>,
}

/// What the request path and the writer thread of one output share.
#[derive(Debug)]
pub(super) struct Shared {
    pending: Mutex<Pending>,
    /// The writer thread waits on it for lines (or for the last `Sink` to go).
    work: Condvar,
    /// `flush` waits on it for the writer thread to catch up.
    caught_up: Condvar,
    /// The most bytes `Pending::bytes` may hold; a line that does not fit is dropped.
    capacity: usize,
    pub(super) dropped: AtomicU64,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Whole lines waiting for the writer thread. It swaps this buffer for its empty one, so a
    /// batch changes hands without copying.
    bytes: Vec<u8>,
    /// Lines appended since the output was opened.
    queued: u64,
    /// Lines written and flushed (or lost to a failing output) so far.
    written: u64,
    /// The writer thread is waiting on `work` with nothing pending: whoever appends a line wakes it.
    writer_waiting: bool,
    /// The writer thread is letting a batch gather (see [`LINGER`]): only a full batch, a flush or
    /// the last `Sink` going wakes it early.
    writer_lingering: bool,
    /// How many `flush` calls wait on `caught_up`: the writer signals only when some do.
    flushers_waiting: usize,
    /// The last `Sink` is gone: write what is pending, then stop.
    closed: bool,
    /// The writer thread has ended (it can only end early by panicking): `flush` must not wait.
    pub(super) writer_gone: bool,
}

/// The live outputs, so that layers (and reloads) writing to the same place share one writer thread.
/// Locked only while building a layer, and by [`flush_all`] and [`reopen_all`].
static OUTPUTS: Mutex<Vec<(Target, Weak<Sink>)>> = Mutex::new(Vec::new());

/// How many times [`reopen_all`] has been called. Each file output remembers the value it opened its
/// file at and reopens when it differs: a counter, unlike a flag, cannot be consumed by one output
/// and missed by another, and an output created during a reopen at worst reopens once more.
static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing under this lock can leave `Pending` half-updated, so a poisoned lock is usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink {
    pub(super) fn shared(target: Target) -> io::Result<Arc<Sink>> {
        // Read before the file is opened: a reopen requested meanwhile is then seen as pending.
        let generation = REOPEN_GENERATION.load(Ordering::SeqCst);
        // Open the file first: it must exist for `canonicalize`, and a failure is reported here, at build time.
        let (target, file) = match target {
            Target::File(path) => {
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                (Target::File(path.canonicalize()?), Some(file))
            }
            other => (other, None),
        };
        let mut outputs = OUTPUTS.lock().unwrap_or_else(PoisonError::into_inner);
        outputs.retain(|(_, sink)| sink.strong_count() > 0);
        if let Some(sink) = outputs.iter().find(|(t, _)| *t == target).and_then(|(_, s)| s.upgrade()) {
            return Ok(sink);
        }
        let (writer, reopen, name): (Box<dyn Write + Send>, _, String) = match (&target, file) {
            (Target::File(path), Some(file)) => {
                (Box::new(file), Some(Reopen { path: path.clone(), generation }), path.display().to_string())
            }
            (Target::Stderr, _) => (Box::new(io::stderr()), None, "stderr".into()),
            _ => (Box::new(io::stdout()), None, "stdout".into()),
        };
        let sink = Arc::new(Sink::spawn(writer, reopen, PENDING_CAPACITY, name)?);
        outputs.push((target, Arc::downgrade(&sink)));
        Ok(sink)
    }

    /// A sink and its writer thread; with `reopen`, the thread reopens that file after [`reopen_all`].
    pub(super) fn spawn(
        writer: Box<dyn Write + Send>,
        reopen: Option<Reopen>,
        capacity: usize,
        name: String,
    ) -> io::Result<Sink> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
            caught_up: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("strata-access-log".into())
            .spawn(move || write_lines(&thread_shared, writer, reopen, &name))?;
        Ok(Sink { shared })
    }

    /// Appends a line without ever waiting on the output: when too much is pending already the
    /// line is dropped and counted.
    pub(super) fn send(&self, line: &[u8]) {
        let mut pending = self.shared.lock();
        if pending.bytes.len() + line.len() > self.shared.capacity {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.bytes.extend_from_slice(line);
        pending.queued += 1;
        // Woken only when idle or when a batch is full: otherwise the writer is busy or lingering
        // and lines just accumulate, at the price of no system call on the request path.
        let full = pending.writer_lingering && pending.bytes.len() >= BATCH_BYTES;
        if full {
            // One wake-up is enough: the lines after this one need not signal again.
            pending.writer_lingering = false;
        }
        let wake = std::mem::take(&mut pending.writer_waiting) || full;
        drop(pending);
        if wake {
            self.shared.work.notify_one();
        }
    }

    /// Blocks until every line appended so far is written and flushed.
    pub(super) fn flush(&self) {
        let mut pending = self.shared.lock();
        let target = pending.queued;
        if std::mem::take(&mut pending.writer_waiting) || pending.writer_lingering {
            self.shared.work.notify_one();
        }
        while pending.written < target && !pending.writer_gone {
            pending.flushers_waiting += 1;
            pending = self.shared.caught_up.wait(pending).unwrap_or_else(PoisonError::into_inner);
            pending.flushers_waiting -= 1;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

/// Waits until every line appended to any access-log output has been written.
///
/// Servers call it after their last request, before exiting: writer threads do not outlive the
/// process, so lines still pending at exit would be lost.
pub fn flush_all() {
    let sinks: Vec<Arc<Sink>> =
        OUTPUTS.lock().unwrap_or_else(PoisonError::into_inner).iter().filter_map(|(_, sink)| sink.upgrade()).collect();
    // Flushed outside the lock: a flush waits for the writer thread.
    for sink in sinks {
        sink.flush();
    }
}

/// Makes every access-log file reopen its path, for log rotation: call it when the log files were
/// renamed (logrotate's `postrotate` step signals the server, and the gateway calls this on SIGHUP).
///
/// Returns at once; each writer thread reopens its file before it writes its next batch (an idle one
/// at once), in append mode, creating it if missing. Lines taken before the reopen go to the old
/// file, every line after it to the new one: none is lost or written twice. If the path cannot be
/// opened, the error is logged and the output keeps writing to the file it had. `stdout` and
/// `stderr` outputs are not affected.
pub fn reopen_all() {
    REOPEN_GENERATION.fetch_add(1, Ordering::SeqCst);
    let sinks: Vec<Arc<Sink>> =
        OUTPUTS.lock().unwrap_or_else(PoisonError::into_inner).iter().filter_map(|(_, sink)| sink.upgrade()).collect();
    for sink in sinks {
        // Taking the lock orders this wake-up after the counter's change: a writer checks the
        // counter under the lock before it waits, so it either saw the change or is waiting now.
        drop(sink.shared.lock());
        sink.shared.work.notify_one();
    }
}

/// The file a writer thread reopens after [`reopen_all`].
#[derive(Debug)]
pub(super) struct Reopen {
    path: PathBuf,
    /// The [`REOPEN_GENERATION`] the current file was opened at.
    generation: u64,
}

impl Reopen {
    fn due(&self) -> bool {
        REOPEN_GENERATION.load(Ordering::SeqCst) != self.generation
    }

    /// Replaces `out` with the file opened again by its path, when a reopen was asked for since it was
    /// opened. The old file is closed; everything written to it was written whole.
    fn reopen_if_due(&mut self, out: &mut Box<dyn Write + Send>, name: &str) {
        let generation = REOPEN_GENERATION.load(Ordering::SeqCst);
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        match OpenOptions::new().create(true).append(true).open(&self.path) {
            Ok(file) => {
                *out = Box::new(file);
                tracing::info!(output = name, "access log reopened");
            }
            Err(error) => tracing::error!(
                output = name,
                %error,
                "cannot reopen the access log; still writing to the file opened before"
            ),
        }
    }
}

/// Tells `flush` the writer thread has ended, however it ends.
struct WriterGone<'a>(&'a Shared);

impl Drop for WriterGone<'_> {
    fn drop(&mut self) {
        self.0.lock().writer_gone = true;
        self.0.caught_up.notify_all();
    }
}

/// The writer thread: woken by the first line after a quiet spell, lets lines gather for at most
/// [`LINGER`] (or until [`BATCH_BYTES`] are pending), takes every pending line at once, writes them
/// in one call and flushes, then waits for more. A file output reopens its file between two batches
/// when [`reopen_all`] asked for it (an idle writer is woken for that).
fn write_lines(shared: &Shared, mut out: Box<dyn Write + Send>, mut reopen: Option<Reopen>, name: &str) {
    let _gone = WriterGone(shared);
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
    let mut reported = 0;
    let mut failing = false;
    loop {
        let (upto, closed) = {
            let mut pending = shared.lock();
            while pending.bytes.is_empty() && !pending.closed && !reopen.as_ref().is_some_and(Reopen::due) {
                pending.writer_waiting = true;
                pending = shared.work.wait(pending).unwrap_or_else(PoisonError::into_inner);
            }
            pending.writer_waiting = false;
            let deadline = Instant::now() + LINGER;
            // Nothing to gather for when woken only to reopen.
            while !pending.bytes.is_empty()
                && pending.bytes.len() < BATCH_BYTES
                && pending.flushers_waiting == 0
                && !pending.closed
            {
                let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                    break;
                };
                pending.writer_lingering = true;
                pending = shared.work.wait_timeout(pending, left).unwrap_or_else(PoisonError::into_inner).0;
                pending.writer_lingering = false;
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            (pending.queued, pending.closed && batch.is_empty())
        };
        if closed {
            return;
        }
        // After the batch was taken, before it is written: the batch goes whole to one file.
        if let Some(reopen) = &mut reopen {
            reopen.reopen_if_due(&mut out, name);
        }
        // Empty when woken only to reopen.
        if !batch.is_empty() {
            match out.write_all(&batch).and_then(|()| out.flush()) {
                Ok(()) => failing = false,
                Err(error) => {
                    // Once per failure streak, not once per batch: a full disk must not flood the logs.
                    if !failing {
                        tracing::error!(output = name, %error, "cannot write the access log; lines are being lost");
                    }
                    failing = true;
                }
            }
        }
        batch.clear();
        // One burst must not pin its memory for the life of the process.
        batch.shrink_to(PENDING_CAPACITY / 16);
        let mut pending = shared.lock();
        pending.written = upto;
        let flushers = pending.flushers_waiting > 0;
        drop(pending);
        if flushers {
            shared.caught_up.notify_all();
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > reported {
            tracing::warn!(
                output = name,
                dropped = dropped - reported,
                total = dropped,
                "access log lines dropped: the output could not keep up"
            );
            reported = dropped;
        }
    }
}
