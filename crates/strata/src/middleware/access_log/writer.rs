//! The built-in outputs: [`LogOutput`] (stdout, stderr, a file or any writer, each written by a
//! writer thread of its own that takes pending lines in batches) and [`LogOutputs`], a registry
//! through which layers writing to the same place share one output.
//!
//! An output belongs to the layers holding it: its writer thread ends, after writing what is
//! pending, when the last [`LogOutput`] handle (and so the last layer holding it) is dropped.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use super::{AccessLogSink, BATCH_BYTES, LINGER, PENDING_CAPACITY};

/// Where an output writes: the key under which [`LogOutputs`] shares one output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// An access-log output: a writer thread and the lines waiting for it.
///
/// Open one with [`LogOutput::stdout`], [`LogOutput::stderr`], [`LogOutput::file`] or
/// [`LogOutput::writer`] (or through a [`LogOutputs`] registry), and hand it to any number of
/// layers with [`AccessLogBuilder::output`](super::AccessLogBuilder::output): clones are handles
/// to the same output, so the layers' lines never interleave mid-line. The writer thread ends,
/// after writing what is pending, when the last handle is dropped.
///
/// Writing never blocks: [`AccessLogSink::write_line`] appends the line to the pending bytes (a
/// short in-memory critical section); the writer thread takes them all at once, after letting
/// them gather for up to 5 ms, and writes them with one `write` call. When more than
/// [`PENDING_CAPACITY`] bytes wait (a stuck disk), new lines are dropped and counted
/// ([`LogOutput::dropped_lines`]) and the writer thread reports the drops through `tracing`.
#[derive(Clone)]
pub struct LogOutput {
    sink: Arc<Sink>,
}

/// The sending side of one output. Dropping it (with the last [`LogOutput`]) ends its writer
/// thread, after it has written what was pending.
#[derive(Debug)]
pub(super) struct Sink {
    pub(super) shared: Arc<Shared>,
    name: String,
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
    /// Whether the output is a file that [`LogOutput::reopen`] opens again.
    reopenable: bool,
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
    /// [`LogOutput::reopen`] asked for the file to be opened again before the next batch.
    reopen_requested: bool,
    /// The last `Sink` is gone: write what is pending, then stop.
    closed: bool,
    /// The writer thread has ended (it can only end early by panicking): `flush` must not wait.
    pub(super) writer_gone: bool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing under this lock can leave `Pending` half-updated, so a poisoned lock is usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LogOutput {
    /// An output writing to the process's standard output.
    ///
    /// # Errors
    /// If the writer thread cannot be spawned (the process is out of threads).
    pub fn stdout() -> io::Result<LogOutput> {
        Self::open(Target::Stdout)
    }

    /// An output writing to the process's standard error.
    ///
    /// # Errors
    /// If the writer thread cannot be spawned.
    pub fn stderr() -> io::Result<LogOutput> {
        Self::open(Target::Stderr)
    }

    /// An output appending to the file at `path` (created if missing), which [`LogOutput::reopen`]
    /// opens again for log rotation.
    ///
    /// # Errors
    /// If the file cannot be opened for appending, or the writer thread cannot be spawned.
    pub fn file(path: impl AsRef<Path>) -> io::Result<LogOutput> {
        Self::open(Target::File(path.as_ref().to_path_buf()))
    }

    /// An output writing to any writer (a socket, a pipe, a buffer in tests).
    ///
    /// # Errors
    /// If the writer thread cannot be spawned.
    pub fn writer(writer: impl Write + Send + 'static) -> io::Result<LogOutput> {
        let sink = Sink::spawn(Box::new(writer), None, PENDING_CAPACITY, "writer".into())?;
        Ok(LogOutput { sink: Arc::new(sink) })
    }

    fn open(target: Target) -> io::Result<LogOutput> {
        let (target, file) = open_target(target)?;
        Self::spawn(target, file)
    }

    /// Starts the writer thread of an opened target.
    fn spawn(target: Target, file: Option<std::fs::File>) -> io::Result<LogOutput> {
        let (writer, reopen, name): (Box<dyn Write + Send>, _, String) = match (target, file) {
            (Target::File(path), Some(file)) => (Box::new(file), Some(path.clone()), path.display().to_string()),
            (Target::Stderr, _) => (Box::new(io::stderr()), None, "stderr".into()),
            _ => (Box::new(io::stdout()), None, "stdout".into()),
        };
        let sink = Sink::spawn(writer, reopen, PENDING_CAPACITY, name)?;
        Ok(LogOutput { sink: Arc::new(sink) })
    }

    /// Blocks until every line appended so far is written and the output flushed. For tests and
    /// shutdown; never call it on a request path.
    pub fn flush(&self) {
        self.sink.flush();
    }

    /// Makes a file output open its path again, for log rotation: call it when the file was renamed
    /// (logrotate's `postrotate` step signals the server, which calls this). Does nothing for the
    /// other outputs.
    ///
    /// Returns at once; the writer thread reopens the file before it writes its next batch (an
    /// idle one at once), in append mode, creating it if missing. Lines taken before the reopen go
    /// to the old file, every line after it to the new one: none is lost or written twice. If the
    /// path cannot be opened, the error is logged and the output keeps writing to the file it had.
    pub fn reopen(&self) {
        self.sink.reopen();
    }

    /// How many lines this output has dropped because too many bytes were waiting to be written.
    pub fn dropped_lines(&self) -> u64 {
        self.sink.shared.dropped.load(Ordering::Relaxed)
    }

    /// Whether `self` and `other` are handles to the same output.
    pub fn same_as(&self, other: &LogOutput) -> bool {
        Arc::ptr_eq(&self.sink, &other.sink)
    }

    #[cfg(test)]
    pub(super) fn from_sink(sink: Sink) -> LogOutput {
        LogOutput { sink: Arc::new(sink) }
    }

    #[cfg(test)]
    pub(super) fn shared(&self) -> Arc<Shared> {
        self.sink.shared.clone()
    }
}

impl fmt::Debug for LogOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogOutput").field("name", &self.sink.name).finish_non_exhaustive()
    }
}

impl AccessLogSink for LogOutput {
    fn write_line(&self, line: &[u8]) {
        self.sink.send(line);
    }

    fn flush(&self) {
        self.sink.flush();
    }

    fn dropped_lines(&self) -> u64 {
        LogOutput::dropped_lines(self)
    }
}

/// Opens a file target (a failure is reported here, at build time) and names it by its canonical
/// path, so that two spellings of one file are one output.
fn open_target(target: Target) -> io::Result<(Target, Option<std::fs::File>)> {
    Ok(match target {
        Target::File(path) => {
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            // After the open: the file must exist to be canonicalized.
            (Target::File(path.canonicalize()?), Some(file))
        }
        other => (other, None),
    })
}

/// A registry of [`LogOutput`]s by destination: layers built through the same registry and writing
/// to the same stream or file share one output (one writer thread, one open file), so their lines
/// never interleave and a file is never opened twice.
///
/// A server keeps one for its life and builds every layer through it, across reloads of its
/// configuration (the gateway passes it in [`BuildContext`](crate::middleware::BuildContext)): a
/// reloaded layer writing to a file takes over the running output, and [`LogOutputs::reopen`] and
/// [`LogOutputs::flush`] reach every output in use. The registry does not keep outputs alive: an
/// output no layer holds any longer ends as usual. Clones share the registry.
///
/// ```
/// use strata::middleware::access_log::LogOutputs;
///
/// let outputs = LogOutputs::new();
/// let first = outputs.stderr().unwrap();
/// let second = outputs.stderr().unwrap();
/// assert!(first.same_as(&second));
/// outputs.flush(); // at shutdown
/// ```
#[derive(Clone, Default)]
pub struct LogOutputs {
    outputs: Arc<Mutex<Vec<Registered>>>,
}

/// An output in a [`LogOutputs`] registry, by its destination; weak, so the registry does not
/// keep it alive.
type Registered = (Target, Weak<Sink>);

impl LogOutputs {
    /// An empty registry.
    pub fn new() -> LogOutputs {
        LogOutputs::default()
    }

    /// The standard output's output, opened on first use.
    ///
    /// # Errors
    /// If the writer thread cannot be spawned.
    pub fn stdout(&self) -> io::Result<LogOutput> {
        self.open(Target::Stdout)
    }

    /// The standard error's output, opened on first use.
    ///
    /// # Errors
    /// If the writer thread cannot be spawned.
    pub fn stderr(&self) -> io::Result<LogOutput> {
        self.open(Target::Stderr)
    }

    /// The output appending to the file at `path`, opened on first use (paths naming the same file
    /// share it).
    ///
    /// # Errors
    /// If the file cannot be opened for appending, or the writer thread cannot be spawned.
    pub fn file(&self, path: impl AsRef<Path>) -> io::Result<LogOutput> {
        self.open(Target::File(path.as_ref().to_path_buf()))
    }

    pub(super) fn open(&self, target: Target) -> io::Result<LogOutput> {
        let mut outputs = self.lock();
        outputs.retain(|(_, sink)| sink.strong_count() > 0);
        // Opened under the lock: a `reopen` running meanwhile then either sees this output or ran
        // before the file was opened.
        let (target, file) = open_target(target)?;
        if let Some(sink) = outputs.iter().find(|(t, _)| *t == target).and_then(|(_, s)| s.upgrade()) {
            return Ok(LogOutput { sink });
        }
        let output = LogOutput::spawn(target.clone(), file)?;
        outputs.push((target, Arc::downgrade(&output.sink)));
        Ok(output)
    }

    /// Blocks until every line appended so far to any output in use is written and flushed. A
    /// server calls it after its last request, before exiting: writer threads do not outlive the
    /// process, so lines still pending at exit would be lost.
    pub fn flush(&self) {
        // Flushed outside the lock: a flush waits for a writer thread.
        for sink in self.live() {
            sink.flush();
        }
    }

    /// Makes every file output in use open its path again ([`LogOutput::reopen`]), for log
    /// rotation. `stdout` and `stderr` are not affected.
    pub fn reopen(&self) {
        for sink in self.live() {
            sink.reopen();
        }
    }

    fn live(&self) -> Vec<Arc<Sink>> {
        self.lock().iter().filter_map(|(_, sink)| sink.upgrade()).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Registered>> {
        self.outputs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for LogOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let live: Vec<Target> =
            self.lock().iter().filter(|(_, sink)| sink.strong_count() > 0).map(|(t, _)| t.clone()).collect();
        f.debug_struct("LogOutputs").field("outputs", &live).finish()
    }
}

impl Sink {
    /// A sink and its writer thread; with `reopen`, the thread opens that file again when
    /// [`Sink::reopen`] asks.
    pub(super) fn spawn(
        writer: Box<dyn Write + Send>,
        reopen: Option<PathBuf>,
        capacity: usize,
        name: String,
    ) -> io::Result<Sink> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
            caught_up: Condvar::new(),
            capacity,
            reopenable: reopen.is_some(),
            dropped: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let thread_name = name.clone();
        std::thread::Builder::new()
            .name("strata-access-log".into())
            .spawn(move || write_lines(&thread_shared, writer, reopen, &thread_name))?;
        Ok(Sink { shared, name })
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

    /// Asks the writer thread of a file output to open its path again before its next batch.
    fn reopen(&self) {
        if !self.shared.reopenable {
            return;
        }
        // Set under the lock: the writer checks it under the lock before it waits, so it either
        // sees it or is waiting now and is woken.
        self.shared.lock().reopen_requested = true;
        self.shared.work.notify_one();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

/// Opens `path` again in place of `out`. The old file is closed; everything written to it was
/// written whole.
fn reopen_file(path: &Path, out: &mut Box<dyn Write + Send>, name: &str) {
    match OpenOptions::new().create(true).append(true).open(path) {
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
/// when [`LogOutput::reopen`] asked for it (an idle writer is woken for that).
fn write_lines(shared: &Shared, mut out: Box<dyn Write + Send>, reopen: Option<PathBuf>, name: &str) {
    let _gone = WriterGone(shared);
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
    let mut reported = 0;
    let mut failing = false;
    loop {
        let (upto, reopen_now, closed) = {
            let mut pending = shared.lock();
            while pending.bytes.is_empty() && !pending.closed && !pending.reopen_requested {
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
            let reopen_now = std::mem::take(&mut pending.reopen_requested);
            (pending.queued, reopen_now, pending.closed && batch.is_empty())
        };
        if closed {
            return;
        }
        // After the batch was taken, before it is written: the batch goes whole to one file.
        if let (true, Some(path)) = (reopen_now, &reopen) {
            reopen_file(path, &mut out, name);
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
        // One burst must not pin its memory for the life of the output.
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
