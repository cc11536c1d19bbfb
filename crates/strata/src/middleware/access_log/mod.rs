//! `access_log`: one line per request, written once the response body has been sent.
//!
//! The line is written when the last byte of the response body has gone out, so it carries the
//! bytes actually sent and the duration to the last byte. If the body is dropped before its end
//! (the client went away), the line is written then, with the bytes sent so far and status `499`
//! (nginx's "client closed request"). Either way there is exactly one line per request.
//!
//! Two formats: `combined` (the Apache/nginx combined log format, which every log tool reads) and
//! `json` (one object per line, stable field names). Lines go to stdout, stderr or a file.
//!
//! Writing never blocks a request: a line is formatted into a reused per-thread buffer and appended
//! to its output's pending bytes (a short, in-memory critical section), and one writer thread per
//! output takes all the pending bytes at once and writes them with one `write` call. The writer
//! lets lines gather for up to 5 ms before writing, so a busy server's lines go out in batches
//! without waking the writer for each one, and every line reaches its output within a few
//! milliseconds. When more than [`PENDING_CAPACITY`] bytes wait (a stuck disk), new lines are
//! dropped and counted ([`AccessLog::dropped_lines`]); the writer thread reports drops through
//! `tracing`. Servers call [`flush_all`] after their last request, so nothing queued is lost at
//! shutdown.
//!
//! Log rotation: [`reopen_all`] makes every file output reopen its path (logrotate renames the file,
//! then signals the server, which calls it). Each writer thread reopens between two batches, so
//! every line is written once, to the old file or to the new one.
//!
//! The values of `Authorization`, `Proxy-Authorization` and `Cookie` are never logged: the only
//! headers a line contains are `User-Agent` and `Referer`.
//!
//! ```
//! use strata::http::{Body, Request, Response, Stack};
//! use strata::middleware::{AccessLog, RequestId};
//!
//! let service = Stack::new()
//!     .with(RequestId::default()) // outside the log, so lines carry the id
//!     .with(AccessLog::json()) // outside anything that may reject, so rejections are logged
//!     .serve(|_req: Request| async { Response::new(Body::from("hello")) });
//! # let _ = service;
//! ```

use std::cell::Cell;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use serde::Deserialize;

use crate::check::{Fact, Facts};
use crate::http::{AssignedRequestId, AuthenticatedUser, Body, BoxError, ConnectionInfo, Next, Request, Response};
use crate::middleware::{BuildContext, ConfigError};
use crate::stack::Middleware;

mod format;
#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod tests;
mod writer;

use format::{write_combined, write_json};
use writer::{Sink, Target};
pub use writer::{flush_all, reopen_all};

/// How many bytes of lines may wait for the writer thread: ~16k lines of ~250 bytes. Enough to ride
/// out a slow disk for a moment, small enough that a stuck output cannot eat the memory.
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

/// The `[middleware.NAME]` table of kind `access_log`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// The line format. Default [`LogFormat::Combined`].
    pub format: LogFormat,
    /// Where lines go: `"stdout"` (default), `"stderr"`, or a file path (appended to, created if
    /// missing; a relative path is resolved against the config file's directory).
    pub output: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig { format: LogFormat::Combined, output: "stdout".to_string() }
    }
}

/// The format of an access log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// The access-log middleware (kind `access_log`).
///
/// Build it with [`AccessLog::new`] from a config, or with [`AccessLog::combined`] /
/// [`AccessLog::json`] for stdout, or [`AccessLog::writing_to`] for any writer. Clones share one output.
#[derive(Clone, Debug)]
pub struct AccessLog {
    format: LogFormat,
    sink: Arc<Sink>,
}

impl AccessLog {
    /// Checks `config`, opens the output, and builds the layer. Layers with the same output share
    /// one writer thread, so their lines never interleave mid-line.
    pub fn new(config: AccessLogConfig, ctx: &BuildContext) -> Result<Self, ConfigError> {
        let target = match config.output.as_str() {
            "stdout" => Target::Stdout,
            "stderr" => Target::Stderr,
            "" => {
                return Err(ConfigError::field(
                    "output",
                    "expected \"stdout\", \"stderr\" or a file path, got an empty string",
                ));
            }
            path => Target::File(ctx.resolve(Path::new(path))),
        };
        let sink = Sink::shared(target).map_err(|e| {
            ConfigError::field("output", format!("cannot write the access log to `{}`: {e}", config.output))
        })?;
        Ok(AccessLog { format: config.format, sink })
    }

    /// A combined-format log on stdout.
    ///
    /// # Panics
    /// If the writer thread cannot be spawned (the process is out of threads), at build time.
    pub fn combined() -> Self {
        Self::stdout(LogFormat::Combined)
    }

    /// A JSON log on stdout.
    ///
    /// # Panics
    /// If the writer thread cannot be spawned (the process is out of threads), at build time.
    pub fn json() -> Self {
        Self::stdout(LogFormat::Json)
    }

    fn stdout(format: LogFormat) -> Self {
        let sink = Sink::shared(Target::Stdout).expect("spawning the access log writer thread");
        AccessLog { format, sink }
    }

    /// A log written to any writer (a socket, a pipe, a buffer in tests), by a writer thread of
    /// its own.
    ///
    /// # Panics
    /// If the writer thread cannot be spawned (the process is out of threads), at build time.
    pub fn writing_to(format: LogFormat, writer: impl Write + Send + 'static) -> Self {
        let sink = Sink::spawn(Box::new(writer), None, PENDING_CAPACITY, "writer".into())
            .expect("spawning the access log writer thread");
        AccessLog { format, sink: Arc::new(sink) }
    }

    /// The line format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Blocks until every line queued so far is written and the output flushed. For tests and
    /// shutdown; never call it on a request path.
    pub fn flush(&self) {
        self.sink.flush();
    }

    /// How many lines this layer's output has dropped because its queue was full (shared by every
    /// layer writing to the same output).
    pub fn dropped_lines(&self) -> u64 {
        self.sink.shared.dropped.load(Ordering::Relaxed)
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
    sink: Arc<Sink>,
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
            self.sink.send(line);
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
