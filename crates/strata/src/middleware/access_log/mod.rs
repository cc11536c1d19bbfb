//! `access_log`: one line per request, written once the response body has been sent.
//!
//! ```
//! use strata::http::{Body, Request, Response, Stack};
//! use strata::middleware::{AccessLog, LogFormat, RequestId};
//!
//! let log = AccessLog::builder().format(LogFormat::Json).to_stderr().build()?;
//! let service = Stack::new()
//!     .with(RequestId::default()) // outside the log, so lines carry the id
//!     .with(log.clone()) // outside anything that may reject, so rejections are logged
//!     .serve(|_req: Request| async { Response::new(Body::from("hello")) });
//! # let _ = service;
//! // After the last request, before the process exits:
//! log.flush();
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! The line is written when the last byte of the response body has gone out, so it carries the
//! bytes actually sent and the duration to the last byte. If the body is dropped before its end
//! (the client went away), the line is written then, with the bytes sent so far and status `499`
//! (nginx's "client closed request"). Either way there is exactly one line per request.
//!
//! Two formats: `combined` (the Apache/nginx combined log format, which every log tool reads) and
//! `json` (one object per line, stable field names). Lines go to stdout, stderr, a file, any
//! writer, or a sink of your own ([`AccessLogSink`]).
//!
//! Writing never blocks a request: a line is formatted into a reused per-thread buffer and handed
//! to the layer's sink. The built-in outputs ([`LogOutput`]) append it to their pending bytes (a
//! short, in-memory critical section), and one writer thread per output takes all the pending
//! bytes at once and writes them with one `write` call. The writer lets lines gather for up to
//! 5 ms before writing, so a busy server's lines go out in batches without waking the writer for
//! each one, and every line reaches its output within a few milliseconds. When more than
//! [`PENDING_CAPACITY`] bytes wait (a stuck disk), new lines are dropped and counted
//! ([`AccessLog::dropped_lines`]); the writer thread reports drops through `tracing`.
//!
//! Outputs belong to the layers that hold them: the writer thread ends, after writing what is
//! pending, when the last layer holding its output is dropped. Layers share an output only when
//! given the same one ([`AccessLogBuilder::output`], or a [`LogOutputs`] registry, which a server
//! keeps for its life so that its layers and reloads share one output per file). Call
//! [`AccessLog::flush`] (or [`LogOutputs::flush`]) after the last request, so nothing queued is
//! lost at exit.
//!
//! Log rotation: [`LogOutput::reopen`] (or [`LogOutputs::reopen`]) makes a file output reopen its
//! path (logrotate renames the file, then signals the server, which calls it). The writer thread
//! reopens between two batches, so every line is written once, to the old file or to the new one.
//!
//! The values of `Authorization`, `Proxy-Authorization` and `Cookie` are never logged: the only
//! headers a line contains are `User-Agent` and `Referer`.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, Version, header};
use http_body::{Body as _, Frame, SizeHint};

use crate::check::{Fact, Facts};
use crate::http::{AssignedRequestId, AuthenticatedUser, Body, BoxError, ConnectionInfo, Next, Request, Response};
use crate::middleware::ConfigError;
use crate::stack::Middleware;

#[cfg(feature = "config")]
mod config;
mod format;
#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod tests;
mod writer;

#[cfg(feature = "config")]
pub use config::AccessLogConfig;
use format::{write_combined, write_json};
pub use writer::{LogOutput, LogOutputs};

/// How many bytes of lines may wait for an output's writer thread: ~16k lines of ~250 bytes.
/// Enough to ride out a slow disk for a moment, small enough that a stuck output cannot eat the
/// memory.
pub const PENDING_CAPACITY: usize = 4 << 20;
/// How long the writer thread lets lines gather after the first one of a batch. Without it, a
/// writer faster than the request rate would be woken (a system call on the request path and a
/// context switch) for nearly every line; with it, wake-ups are at most ~200 per second and output,
/// and a line reaches its output within a few milliseconds (nginx's `flush=` makes the same trade).
const LINGER: Duration = Duration::from_millis(5);
/// A batch this large is written without waiting for the rest of [`LINGER`].
const BATCH_BYTES: usize = 64 * 1024;
/// The largest line buffer a thread keeps for its next line.
const MAX_KEPT_SCRATCH: usize = 16 * 1024;
/// The status logged when the client went away before the body ended (nginx's convention).
const CLIENT_CLOSED: u16 = 499;

/// The format of an access log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum LogFormat {
    /// The Apache/nginx combined format:
    /// `%h - %u [%d/%b/%Y:%H:%M:%S %z] "%r" %s %b "%{Referer}i" "%{User-agent}i"`, times in UTC.
    /// `"`, `\`, spaces in the user and bytes outside printable ASCII are written as `\xHH`, as
    /// nginx does, so a field can never break the line's structure.
    #[default]
    Combined,
    /// One JSON object per line with the fields `time`, `remote_addr`, `method`, `path`, `query`,
    /// `protocol`, `status`, `bytes_sent`, `duration_ms`, `request_id`, `user`, `user_agent`,
    /// `referer` (absent values are `null`).
    Json,
}

/// Where an access-log layer's lines go: the extension point for shipping them to a system of
/// your own (a log collector's socket, a message queue, an in-memory buffer).
///
/// A sink receives finished lines, in the layer's [`LogFormat`] (JSON lines have stable field
/// names and parse with any tool), rather than a record to format: what a collector ingests is
/// the line, and the formats stay defined in one place. [`LogOutput`] (stdout, stderr, a file, any
/// writer) is the built-in implementation.
///
/// [`write_line`](AccessLogSink::write_line) runs on the thread that served the request, once per
/// request, when its response has ended: it must not block (no network or disk I/O there). Queue
/// the line and return; do the I/O on a thread or task of your own, and drop lines rather than
/// wait when that falls behind.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use strata::middleware::{AccessLog, AccessLogSink, LogFormat};
///
/// /// Keeps the lines in memory (a real sink would hand them to a queue).
/// #[derive(Default)]
/// struct Memory(Mutex<Vec<String>>);
///
/// impl AccessLogSink for Memory {
///     fn write_line(&self, line: &[u8]) {
///         self.0.lock().unwrap().push(String::from_utf8_lossy(line).into_owned());
///     }
/// }
///
/// let lines = Arc::new(Memory::default());
/// let log = AccessLog::builder().format(LogFormat::Json).sink(lines.clone()).build()?;
/// # let _ = log;
/// # Ok::<(), strata::middleware::ConfigError>(())
/// ```
pub trait AccessLogSink: Send + Sync + 'static {
    /// Takes one complete line, its final `\n` included. Must not block.
    fn write_line(&self, line: &[u8]);

    /// Blocks until every line taken so far has reached its destination; [`AccessLog::flush`]
    /// calls it (in tests and at shutdown, never on a request path). Nothing to do by default.
    fn flush(&self) {}

    /// How many lines the sink has dropped rather than block (see [`AccessLog::dropped_lines`]).
    /// Zero by default.
    fn dropped_lines(&self) -> u64 {
        0
    }
}

/// A shared sink: hand clones of one `Arc` to several layers.
impl<S: AccessLogSink + ?Sized> AccessLogSink for Arc<S> {
    fn write_line(&self, line: &[u8]) {
        (**self).write_line(line);
    }

    fn flush(&self) {
        (**self).flush();
    }

    fn dropped_lines(&self) -> u64 {
        (**self).dropped_lines()
    }
}

/// The access-log middleware (kind `access_log`). See the [module docs](self).
///
/// Build it with [`AccessLog::builder`], or with [`AccessLog::combined`] / [`AccessLog::json`] for
/// stdout. Clones share one sink.
#[derive(Clone)]
pub struct AccessLog {
    format: LogFormat,
    sink: LineSink,
}

/// A layer's sink: a built-in output called directly, or a sink of the user's own.
#[derive(Clone)]
enum LineSink {
    Output(LogOutput),
    Custom(Arc<dyn AccessLogSink>),
}

impl LineSink {
    fn write_line(&self, line: &[u8]) {
        match self {
            LineSink::Output(output) => output.write_line(line),
            LineSink::Custom(sink) => sink.write_line(line),
        }
    }

    fn flush(&self) {
        match self {
            LineSink::Output(output) => output.flush(),
            LineSink::Custom(sink) => sink.flush(),
        }
    }

    fn dropped_lines(&self) -> u64 {
        match self {
            LineSink::Output(output) => output.dropped_lines(),
            LineSink::Custom(sink) => sink.dropped_lines(),
        }
    }
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog").field("format", &self.format).finish_non_exhaustive()
    }
}

impl AccessLog {
    /// A builder: combined format on stdout unless told otherwise.
    pub fn builder() -> AccessLogBuilder {
        AccessLogBuilder::default()
    }

    /// A combined-format log on stdout, with an output of its own.
    ///
    /// # Panics
    /// If the writer thread cannot be spawned (the process is out of threads), at build time.
    pub fn combined() -> Self {
        Self::builder().to_stdout().build().expect("spawning the access log writer thread")
    }

    /// A JSON log on stdout, with an output of its own.
    ///
    /// # Panics
    /// If the writer thread cannot be spawned (the process is out of threads), at build time.
    pub fn json() -> Self {
        Self::builder().format(LogFormat::Json).to_stdout().build().expect("spawning the access log writer thread")
    }

    /// The line format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Blocks until every line queued so far is written and the output flushed
    /// ([`AccessLogSink::flush`]). For tests and shutdown; never call it on a request path.
    pub fn flush(&self) {
        self.sink.flush();
    }

    /// How many lines this layer's sink has dropped because its queue was full (shared by every
    /// layer writing to the same output).
    pub fn dropped_lines(&self) -> u64 {
        self.sink.dropped_lines()
    }

    /// The built-in output this layer writes to (`None` for a sink of your own): to reopen its
    /// file, or to give another layer the same output.
    pub fn output(&self) -> Option<&LogOutput> {
        match &self.sink {
            LineSink::Output(output) => Some(output),
            LineSink::Custom(_) => None,
        }
    }
}

/// Where an [`AccessLogBuilder`] sends lines.
enum Destination {
    Stdout,
    Stderr,
    File(PathBuf),
    Writer(Box<dyn Write + Send>),
    Output(LogOutput),
    Sink(Arc<dyn AccessLogSink>),
}

/// Builds an [`AccessLog`] from typed values; [`AccessLogBuilder::build`] opens the output and
/// reports what cannot be opened.
pub struct AccessLogBuilder {
    format: LogFormat,
    destination: Destination,
    outputs: Option<LogOutputs>,
}

impl Default for AccessLogBuilder {
    fn default() -> Self {
        AccessLogBuilder { format: LogFormat::Combined, destination: Destination::Stdout, outputs: None }
    }
}

impl fmt::Debug for AccessLogBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let destination = match &self.destination {
            Destination::Stdout => "stdout".to_string(),
            Destination::Stderr => "stderr".to_string(),
            Destination::File(path) => path.display().to_string(),
            Destination::Writer(_) => "a writer".to_string(),
            Destination::Output(output) => format!("{output:?}"),
            Destination::Sink(_) => "a sink".to_string(),
        };
        f.debug_struct("AccessLogBuilder")
            .field("format", &self.format)
            .field("destination", &destination)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl AccessLogBuilder {
    /// The line format. Default [`LogFormat::Combined`].
    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Lines go to the process's standard output (the default).
    pub fn to_stdout(mut self) -> Self {
        self.destination = Destination::Stdout;
        self
    }

    /// Lines go to the process's standard error.
    pub fn to_stderr(mut self) -> Self {
        self.destination = Destination::Stderr;
        self
    }

    /// Lines are appended to the file at `path` (created if missing; a relative path is relative
    /// to the working directory). [`LogOutput::reopen`] reopens it for log rotation.
    pub fn to_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.destination = Destination::File(path.into());
        self
    }

    /// Lines go to any writer (a socket, a pipe, a buffer in tests), written by a writer thread of
    /// its own.
    pub fn to_writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.destination = Destination::Writer(Box::new(writer));
        self
    }

    /// Lines go to an output already open, which this layer shares with every other layer given
    /// the same output (a [`LogOutput`] clone).
    pub fn output(mut self, output: LogOutput) -> Self {
        self.destination = Destination::Output(output);
        self
    }

    /// Lines go to a sink of your own (see [`AccessLogSink`]).
    pub fn sink(mut self, sink: impl AccessLogSink) -> Self {
        self.destination = Destination::Sink(Arc::new(sink));
        self
    }

    /// Opens stdout, stderr and files through `outputs`, so that every layer built through the
    /// same registry and writing to the same place shares one output. Without it, the layer (and
    /// its clones) gets an output of its own.
    pub fn outputs(mut self, outputs: &LogOutputs) -> Self {
        self.outputs = Some(outputs.clone());
        self
    }

    /// Opens the output and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] for the field `output` when the file path is empty or the file cannot be
    /// opened for appending, or the writer thread cannot be spawned.
    pub fn build(self) -> Result<AccessLog, ConfigError> {
        let opened = |output: io::Result<LogOutput>, name: &dyn fmt::Display| {
            output.map_err(|e| ConfigError::field("output", format!("cannot write the access log to `{name}`: {e}")))
        };
        let registry = self.outputs.as_ref();
        let output = match self.destination {
            Destination::Stdout => opened(registry.map_or_else(LogOutput::stdout, LogOutputs::stdout), &"stdout")?,
            Destination::Stderr => opened(registry.map_or_else(LogOutput::stderr, LogOutputs::stderr), &"stderr")?,
            Destination::File(path) if path.as_os_str().is_empty() => {
                return Err(ConfigError::field(
                    "output",
                    "expected \"stdout\", \"stderr\" or a file path, got an empty string",
                ));
            }
            Destination::File(path) => {
                let output = match registry {
                    Some(outputs) => outputs.file(&path),
                    None => LogOutput::file(&path),
                };
                opened(output, &path.display())?
            }
            Destination::Writer(writer) => opened(LogOutput::writer(writer), &"a writer")?,
            Destination::Output(output) => output,
            Destination::Sink(sink) => return Ok(AccessLog { format: self.format, sink: LineSink::Custom(sink) }),
        };
        Ok(AccessLog { format: self.format, sink: LineSink::Output(output) })
    }
}

impl Middleware<Request, Response> for AccessLog {
    async fn handle(&self, req: Request, next: Next) -> Response {
        // Created before the inner layers run: if this future is dropped while they do (the
        // client went away), dropping `line` still writes the request's one line.
        let mut line = PendingLine::new(self, &req);
        let res = next.run(req).await;
        line.respond(&res);
        res.map(|inner| Body::wrap(LoggedBody { inner, line }))
    }

    fn kind(&self) -> &'static str {
        "access_log"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::SeesEveryRequest, Fact::ReadsRequestId, Fact::ReadsClientAddress])
    }
}

/// Everything a line needs, captured from the request cheaply (reference-counted clones, no
/// formatting) so the formatting happens once, at the end.
struct Entry {
    time: SystemTime,
    started: Instant,
    remote: Option<IpAddr>,
    method: Method,
    uri: Uri,
    version: Version,
    request_id: Option<HeaderValue>,
    user: Option<Arc<str>>,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    status: Option<StatusCode>,
    // HEAD and 1xx/204/304 responses have no body: the server drops it unread, which is not an abort.
    bodiless: bool,
    bytes_sent: u64,
}

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The last byte was sent.
    Complete,
    /// The body or the request future was dropped before the end.
    ClientGone,
    /// The body failed mid-stream; the status stays the response's.
    BodyFailed,
}

/// The line of one request, written exactly once: by [`PendingLine::finish`] or, failing that, on drop.
struct PendingLine {
    entry: Option<Entry>,
    format: LogFormat,
    sink: LineSink,
}

impl PendingLine {
    fn new(log: &AccessLog, req: &Request) -> Self {
        let headers = req.headers();
        let entry = Entry {
            time: SystemTime::now(),
            started: Instant::now(),
            remote: req.extensions().get::<ConnectionInfo>().map(|c| c.client),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            request_id: req.extensions().get::<AssignedRequestId>().map(|id| id.0.clone()),
            user: req.extensions().get::<AuthenticatedUser>().map(|u| u.0.clone()),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            referer: headers.get(header::REFERER).cloned(),
            status: None,
            bodiless: req.method() == Method::HEAD,
            bytes_sent: 0,
        };
        PendingLine { entry: Some(entry), format: log.format, sink: log.sink.clone() }
    }

    fn respond(&mut self, res: &Response) {
        if let Some(entry) = &mut self.entry {
            let status = res.status();
            entry.status = Some(status);
            entry.bodiless |=
                status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
            // An authentication layer inside this one can only hand the user out on the response.
            if entry.user.is_none() {
                entry.user = res.extensions().get::<AuthenticatedUser>().map(|u| u.0.clone());
            }
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        let Some(entry) = self.entry.take() else { return };
        let elapsed = entry.started.elapsed();
        let status = match (outcome, entry.status) {
            (Outcome::ClientGone, _) | (_, None) => CLIENT_CLOSED,
            (_, Some(status)) => status.as_u16(),
        };
        let format = |line: &mut Vec<u8>| {
            match self.format {
                LogFormat::Combined => write_combined(line, &entry, status),
                LogFormat::Json => write_json(line, &entry, status, elapsed.as_nanos()),
            }
            line.push(b'\n');
            self.sink.write_line(line);
        };
        // A buffer per thread, reused line after line: formatting allocates nothing. A fresh one
        // while the thread is being torn down (a body dropped by a thread-local's destructor).
        let reused = SCRATCH.try_with(|scratch| {
            let mut line = scratch.take();
            line.clear();
            format(&mut line);
            // A rare huge line (a long URL) must not pin its memory in every worker thread.
            if line.capacity() <= MAX_KEPT_SCRATCH {
                scratch.set(line);
            }
        });
        if reused.is_err() {
            format(&mut Vec::with_capacity(256));
        }
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        self.finish(Outcome::ClientGone);
    }
}

thread_local! {
    /// The buffer each thread formats its lines in. Taken out while in use, so it is never borrowed
    /// twice.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The response body, wrapped to count bytes and write the line when it ends.
struct LoggedBody {
    inner: Body,
    line: PendingLine,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(entry)) = (frame.data_ref(), &mut this.line.entry) {
                    entry.bytes_sent += data.len() as u64;
                }
                // hyper stops polling once `is_end_stream` says so, without waiting for `None`.
                if this.inner.is_end_stream() {
                    this.line.finish(Outcome::Complete);
                }
            }
            Poll::Ready(None) => this.line.finish(Outcome::Complete),
            Poll::Ready(Some(Err(_))) => this.line.finish(Outcome::BodyFailed),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let ended = self.inner.is_end_stream() || self.line.entry.as_ref().is_some_and(|e| e.bodiless);
        self.line.finish(if ended { Outcome::Complete } else { Outcome::ClientGone });
    }
}
