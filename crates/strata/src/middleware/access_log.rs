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

use std::borrow::Cow;
use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use serde::Deserialize;

use crate::check::{Fact, Facts};
use crate::http::client_ip::write_ip;
use crate::http::{AuthenticatedUser, Body, BoxError, ConnectionInfo, Next, Request, RequestId, Response};
use crate::middleware::{BuildContext, ConfigError};
use crate::stack::Middleware;

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
            request_id: req.extensions().get::<RequestId>().map(|id| id.0.clone()),
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

// ---- Formats -------------------------------------------------------------------------------------

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The request target as the client sent it: path and query, or the whole URI for the other forms
/// (a CONNECT authority, `*`).
fn target(uri: &Uri) -> Cow<'_, str> {
    match uri.path_and_query() {
        Some(pq) => Cow::Borrowed(pq.as_str()),
        None => Cow::Owned(uri.to_string()),
    }
}

fn write_combined(out: &mut Vec<u8>, e: &Entry, status: u16) {
    match e.remote {
        Some(ip) => write_ip(out, ip),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" - ");
    match &e.user {
        // Spaces are escaped too: the user is the one unquoted free-text field.
        Some(user) if !user.is_empty() => escape_into(out, user.as_bytes(), true),
        _ => out.push(b'-'),
    }
    out.extend_from_slice(b" [");
    let t = Civil::from(e.time);
    push_2digits(out, t.day);
    out.push(b'/');
    out.extend_from_slice(t.month_abbr().as_bytes());
    out.push(b'/');
    push_year(out, t.year);
    out.push(b':');
    push_2digits(out, t.hour);
    out.push(b':');
    push_2digits(out, t.minute);
    out.push(b':');
    push_2digits(out, t.second);
    out.extend_from_slice(b" +0000] \"");
    escape_into(out, e.method.as_str().as_bytes(), false);
    out.push(b' ');
    escape_into(out, target(&e.uri).as_bytes(), false);
    out.push(b' ');
    out.extend_from_slice(protocol(e.version).as_bytes());
    out.extend_from_slice(b"\" ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    // Apache's %b: "-" rather than 0 when no bytes were sent.
    match e.bytes_sent {
        0 => out.push(b'-'),
        n => push_u64(out, n),
    }
    for value in [&e.referer, &e.user_agent] {
        out.extend_from_slice(b" \"");
        match value {
            Some(v) if !v.is_empty() => escape_into(out, v.as_bytes(), false),
            _ => out.push(b'-'),
        }
        out.push(b'"');
    }
}

/// A number in decimal, without the formatting machinery (this runs for every line).
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_2digits(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
}

/// A year as at least four digits, as `{:04}` writes it.
fn push_year(out: &mut Vec<u8>, year: i64) {
    if (0..10_000).contains(&year) {
        let y = year as u32;
        push_2digits(out, y / 100);
        push_2digits(out, y % 100);
    } else {
        let _ = write!(out, "{year:04}");
    }
}

/// nginx's escaping: `"`, `\` and bytes outside printable ASCII become `\xHH` (and spaces too when
/// asked), so no value can end a quoted field, forge a line, or smuggle terminal escapes.
fn escape_into(out: &mut Vec<u8>, value: &[u8], escape_space: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) || (escape_space && b == b' ') {
            out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.push(b);
        }
    }
}

/// The JSON line, written by hand in exactly the bytes `serde_json` writes (a test holds it to
/// that): field order and names are part of the format, log pipelines key on them.
fn write_json(out: &mut Vec<u8>, e: &Entry, status: u16, elapsed_nanos: u128) {
    out.extend_from_slice(b"{\"time\":\"");
    Civil::from(e.time).write_rfc3339(out);
    out.extend_from_slice(b"\",\"remote_addr\":");
    match e.remote {
        Some(ip) => {
            out.push(b'"');
            write_ip(out, ip);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"method\":");
    json_str(out, e.method.as_str());
    out.extend_from_slice(b",\"path\":");
    json_str(out, e.uri.path());
    out.extend_from_slice(b",\"query\":");
    json_opt(out, e.uri.query());
    out.extend_from_slice(b",\"protocol\":");
    json_str(out, protocol(e.version));
    out.extend_from_slice(b",\"status\":");
    push_u64(out, u64::from(status));
    out.extend_from_slice(b",\"bytes_sent\":");
    push_u64(out, e.bytes_sent);
    out.extend_from_slice(b",\"duration_ms\":");
    // Microsecond precision: finer is noise, coarser hides fast responses.
    json_millis(out, elapsed_nanos / 1_000);
    out.extend_from_slice(b",\"request_id\":");
    json_opt(out, lossy(&e.request_id).as_deref());
    out.extend_from_slice(b",\"user\":");
    json_opt(out, e.user.as_deref());
    out.extend_from_slice(b",\"user_agent\":");
    json_opt(out, lossy(&e.user_agent).as_deref());
    out.extend_from_slice(b",\"referer\":");
    json_opt(out, lossy(&e.referer).as_deref());
    out.push(b'}');
}

/// `micros / 1000` as the JSON number `serde_json` writes for that `f64`: the shortest decimal
/// that reads back as the same number, which for a whole count of microseconds is the
/// millisecond figure with its trailing zeros dropped (and one kept after the point: `3.0`).
fn json_millis(out: &mut Vec<u8>, micros: u128) {
    // Past ~30 years the shortest form may use an exponent: leave those to serde_json.
    if micros >= 1_000_000_000_000_000 {
        let _ = serde_json::to_writer(&mut *out, &(micros as f64 / 1_000.0));
        return;
    }
    let (whole, mut frac) = ((micros / 1_000) as u64, (micros % 1_000) as u32);
    push_u64(out, whole);
    out.push(b'.');
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut digits = 3;
    while frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    let text = [b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
    out.extend_from_slice(&text[3 - digits..]);
}

/// The bytes a JSON string cannot hold as they are: control characters, `"` and `\\`.
const JSON_ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

fn json_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => json_str(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string with `serde_json`'s escapes: `"` and `\\`, the short forms `\\b \\t \\n \\f \\r`, and
/// `\\u00xx` for the other control characters; everything else, UTF-8 included, as it is.
fn json_str(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    // Fast path: most values need no escape at all, and are copied in one go.
    if !bytes.iter().any(|&b| JSON_ESCAPED[usize::from(b)]) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == b'u' {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A header value as text. Values may hold non-UTF-8 bytes (obs-text): those show as replacement
/// characters rather than failing the line.
fn lossy(value: &Option<HeaderValue>) -> Option<Cow<'_, str>> {
    value.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()))
}

/// A UTC time broken into calendar fields, without a date-time dependency.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

impl From<SystemTime> for Civil {
    fn from(time: SystemTime) -> Self {
        // A clock set before 1970 is clamped to the epoch rather than failing a log line.
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let of_day = (secs % 86_400) as u32;
        Civil {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            millis: since.subsec_millis(),
        }
    }
}

impl Civil {
    fn month_abbr(&self) -> &'static str {
        const NAMES: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        NAMES[(self.month as usize).saturating_sub(1) % 12]
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    fn write_rfc3339(&self, out: &mut Vec<u8>) {
        push_year(out, self.year);
        out.push(b'-');
        push_2digits(out, self.month);
        out.push(b'-');
        push_2digits(out, self.day);
        out.push(b'T');
        push_2digits(out, self.hour);
        out.push(b':');
        push_2digits(out, self.minute);
        out.push(b':');
        push_2digits(out, self.second);
        out.push(b'.');
        out.push(b'0' + (self.millis / 100 % 10) as u8);
        push_2digits(out, self.millis % 100);
        out.push(b'Z');
    }

    #[cfg(test)]
    fn rfc3339(&self) -> String {
        let mut out = Vec::new();
        self.write_rfc3339(&mut out);
        String::from_utf8(out).expect("digits and punctuation")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar: Howard
/// Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year starting in March, 0..=365
    let mp = (5 * doy + 2) / 153; // month starting in March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---- Output: one writer thread per output --------------------------------------------------------

/// Where an output writes: the key under which layers share a writer thread.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// The sending side of one output. Dropping the last one ends its writer thread, after it has
/// written what was pending.
#[derive(Debug)]
struct Sink {
    shared: Arc<Shared>,
}

/// What the request path and the writer thread of one output share.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// The writer thread waits on it for lines (or for the last `Sink` to go).
    work: Condvar,
    /// `flush` waits on it for the writer thread to catch up.
    caught_up: Condvar,
    /// The most bytes `Pending::bytes` may hold; a line that does not fit is dropped.
    capacity: usize,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
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
    writer_gone: bool,
}

/// The live outputs, so that layers (and reloads) writing to the same place share one writer thread.
/// Locked only while building a layer, and by [`flush_all`] and [`reopen_all`].
static OUTPUTS: Mutex<Vec<(Target, Weak<Sink>)>> = Mutex::new(Vec::new());

/// How many times [`reopen_all`] has been called. Each file output remembers the value it opened its
/// file at and reopens when it differs: a counter, unlike a flag, cannot be consumed by one output
/// and missed by another, and an output created during a reopen at worst reopens once more.
static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing under this lock can leave `Pending` half-updated, so a poisoned lock is usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink {
    fn shared(target: Target) -> io::Result<Arc<Sink>> {
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
    fn spawn(writer: Box<dyn Write + Send>, reopen: Option<Reopen>, capacity: usize, name: String) -> io::Result<Sink> {
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
    fn send(&self, line: &[u8]) {
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
    fn flush(&self) {
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
struct Reopen {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_fn;
    use crate::http::{Service, Stack, response};
    use crate::middleware::request_id::RequestId as RequestIdLayer;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;
    use std::sync::mpsc;

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap().lines().map(str::to_string).collect()
        }
    }

    fn captured(format: LogFormat) -> (AccessLog, Capture) {
        let capture = Capture::default();
        (AccessLog::writing_to(format, capture.clone()), capture)
    }

    /// Flushes and returns the lines written so far.
    fn lines(log: &AccessLog, capture: &Capture) -> Vec<String> {
        log.flush();
        capture.lines()
    }

    fn json_lines(log: &AccessLog, capture: &Capture) -> Vec<serde_json::Value> {
        lines(log, capture).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn request(method: &str, uri: &str) -> Request {
        let mut req = http::Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let peer: SocketAddr = "203.0.113.7:51234".parse().unwrap();
        req.extensions_mut().insert(ConnectionInfo::new(peer, "127.0.0.1:8080".parse().unwrap()));
        req
    }

    async fn hello(_req: Request) -> Response {
        Response::new(Body::from("hello"))
    }

    async fn read_all(res: Response) -> Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    /// A streaming body fed by the test, one frame at a time.
    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for ChannelBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
        }
    }

    fn streaming(log: AccessLog) -> (Service, tokio::sync::mpsc::Sender<Bytes>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let rx = Mutex::new(Some(rx));
        let svc = Stack::new().with(log).serve(move |_req: Request| {
            let body = rx.lock().unwrap().take().map(|rx| Body::wrap(ChannelBody(rx))).unwrap_or_default();
            async move { Response::new(body) }
        });
        (svc, tx)
    }

    #[tokio::test]
    async fn json_lines_carry_every_field() {
        let (log, capture) = captured(LogFormat::Json);
        let svc = Stack::new()
            .with(RequestIdLayer::default())
            .with(log.clone())
            .with(from_fn(|req: Request, next: Next| async move {
                // An authentication layer inside the log: it hands the user out on the response.
                let mut res = next.run(req).await;
                res.extensions_mut().insert(AuthenticatedUser("alice".into()));
                res
            }))
            .serve(hello);
        let mut req = request("GET", "/tasks/1?verbose=1&x=%22");
        req.headers_mut().insert("x-request-id", HeaderValue::from_static("req-42"));
        req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static("curl/8.5.0"));
        req.headers_mut().insert(header::REFERER, HeaderValue::from_static("https://example.com/"));
        let res = svc.call(req).await;
        assert_eq!(read_all(res).await, "hello");

        let lines = json_lines(&log, &capture);
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["remote_addr"], "203.0.113.7");
        assert_eq!(l["method"], "GET");
        assert_eq!(l["path"], "/tasks/1");
        assert_eq!(l["query"], "verbose=1&x=%22");
        assert_eq!(l["protocol"], "HTTP/1.1");
        assert_eq!(l["status"], 200);
        assert_eq!(l["bytes_sent"], 5);
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(l["request_id"], "req-42");
        assert_eq!(l["user"], "alice");
        assert_eq!(l["user_agent"], "curl/8.5.0");
        assert_eq!(l["referer"], "https://example.com/");
        let time = l["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
        let keys: Vec<_> = l.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 13, "{keys:?}");
    }

    #[tokio::test]
    async fn json_absent_values_are_null() {
        let (log, capture) = captured(LogFormat::Json);
        let svc =
            Stack::new().with(log.clone()).serve(|_req: Request| async { response::status(StatusCode::NO_CONTENT) });
        let req = http::Request::builder().uri("/").body(Body::empty()).unwrap();
        read_all(svc.call(req).await).await;
        let l = &json_lines(&log, &capture)[0];
        for key in ["remote_addr", "query", "request_id", "user", "user_agent", "referer"] {
            assert!(l[key].is_null(), "{key}: {l}");
        }
        assert_eq!((l["status"].as_u64(), l["bytes_sent"].as_u64()), (Some(204), Some(0)));
    }

    /// Splits a combined line into its nine fields without a regex, checking the punctuation between them.
    fn combined_fields(line: &str) -> [String; 8] {
        let (head, rest) = line.split_once(" [").expect("[ before the time");
        let head: Vec<&str> = head.split(' ').collect();
        assert_eq!(head.len(), 3, "host, ident, user: {line}");
        assert_eq!(head[1], "-");
        let (time, rest) = rest.split_once("] \"").expect("] before the request");
        let quoted: Vec<&str> = rest.split('"').collect();
        assert_eq!(quoted.len(), 6, "request, status bytes, referer, agent: {line}");
        assert_eq!((quoted[3], quoted[5]), (" ", ""));
        let status_bytes: Vec<&str> = quoted[1].trim().split(' ').collect();
        assert_eq!(status_bytes.len(), 2, "{line}");
        [head[0], head[2], time, quoted[0], status_bytes[0], status_bytes[1], quoted[2], quoted[4]].map(str::to_string)
    }

    #[tokio::test]
    async fn combined_lines_parse_back() {
        let (log, capture) = captured(LogFormat::Combined);
        let svc = Stack::new()
            .with(RequestIdLayer::default())
            .with(log.clone())
            .with(from_fn(|req: Request, next: Next| async move {
                let mut res = next.run(req).await;
                res.extensions_mut().insert(AuthenticatedUser("bob smith".into()));
                res
            }))
            .serve(hello);
        let mut req = request("POST", "/submit?a=1");
        req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static("Mozilla/5.0 (X11)"));
        read_all(svc.call(req).await).await;
        let lines = lines(&log, &capture);
        assert_eq!(lines.len(), 1);
        let [host, user, time, request, status, bytes, referer, agent] = combined_fields(&lines[0]);
        assert_eq!(host, "203.0.113.7");
        assert_eq!(user, r"bob\x20smith");
        assert_eq!(request, "POST /submit?a=1 HTTP/1.1");
        assert_eq!((status.as_str(), bytes.as_str()), ("200", "5"));
        assert_eq!((referer.as_str(), agent.as_str()), ("-", "Mozilla/5.0 (X11)"));
        // 10/Oct/2000:13:55:36 +0000
        let (date, zone) = time.split_once(' ').unwrap();
        assert_eq!(zone, "+0000");
        let parts: Vec<&str> = date.split(['/', ':']).collect();
        assert_eq!(parts.len(), 6, "{time}");
        assert!(
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].contains(&parts[1])
        );
    }

    #[tokio::test]
    async fn combined_escapes_quotes_and_control_bytes_and_uses_dashes_for_missing_values() {
        let (log, capture) = captured(LogFormat::Combined);
        let svc =
            Stack::new().with(log.clone()).serve(|_req: Request| async { response::status(StatusCode::NO_CONTENT) });
        let mut req = http::Request::builder().uri("/").body(Body::empty()).unwrap();
        req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_bytes(b"evil\" \"injected\t\xff\\").unwrap());
        read_all(svc.call(req).await).await;
        let line = &lines(&log, &capture)[0];
        let [host, user, _, request, status, bytes, referer, agent] = combined_fields(line);
        assert_eq!((host.as_str(), user.as_str(), request.as_str()), ("-", "-", "GET / HTTP/1.1"));
        assert_eq!((status.as_str(), bytes.as_str(), referer.as_str()), ("204", "-", "-"));
        assert_eq!(agent, r"evil\x22 \x22injected\x09\xFF\x5C");
    }

    #[tokio::test]
    async fn the_line_is_written_only_after_the_last_frame() {
        let (log, capture) = captured(LogFormat::Json);
        let (svc, tx) = streaming(log.clone());
        let mut body = svc.call(request("GET", "/events")).await.into_body();
        tx.send(Bytes::from_static(b"first ")).await.unwrap();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "first ");
        assert!(lines(&log, &capture).is_empty(), "no line while the body is still streaming");
        tx.send(Bytes::from_static(b"second")).await.unwrap();
        drop(tx);
        body.frame().await.unwrap().unwrap();
        assert!(lines(&log, &capture).is_empty(), "the end of the stream is not known yet");
        assert!(body.frame().await.is_none());
        let lines = json_lines(&log, &capture);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0]["status"].as_u64(), lines[0]["bytes_sent"].as_u64()), (Some(200), Some(12)));
        drop(body);
        assert_eq!(json_lines(&log, &capture).len(), 1, "dropping a finished body writes no second line");
    }

    #[tokio::test]
    async fn duration_runs_to_the_last_byte() {
        let (log, capture) = captured(LogFormat::Json);
        let (svc, tx) = streaming(log.clone());
        let mut body = svc.call(request("GET", "/slow")).await.into_body();
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(tx);
        assert!(body.frame().await.is_none());
        let ms = json_lines(&log, &capture)[0]["duration_ms"].as_f64().unwrap();
        assert!(ms >= 30.0, "{ms}");
    }

    #[tokio::test]
    async fn a_body_dropped_midway_writes_one_line_with_499_and_the_bytes_sent() {
        let (log, capture) = captured(LogFormat::Json);
        let (svc, tx) = streaming(log.clone());
        let mut body = svc.call(request("GET", "/download")).await.into_body();
        tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
        body.frame().await.unwrap().unwrap();
        drop(body); // the client went away
        let lines = json_lines(&log, &capture);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0]["status"].as_u64(), lines[0]["bytes_sent"].as_u64()), (Some(499), Some(10)));
    }

    #[tokio::test]
    async fn a_request_abandoned_before_the_response_writes_one_line() {
        let (log, capture) = captured(LogFormat::Combined);
        let svc = Stack::new().with(log.clone()).serve(|_req: Request| std::future::pending::<Response>());
        let timed_out = tokio::time::timeout(Duration::from_millis(10), svc.call(request("GET", "/hang"))).await;
        assert!(timed_out.is_err());
        let lines = lines(&log, &capture);
        assert_eq!(lines.len(), 1);
        let [.., status, bytes, _, _] = combined_fields(&lines[0]);
        assert_eq!((status.as_str(), bytes.as_str()), ("499", "-"));
    }

    #[tokio::test]
    async fn bodies_the_server_stops_polling_at_their_end_are_complete() {
        // hyper reads one frame of an in-memory body, sees `is_end_stream`, and drops it.
        let (log, capture) = captured(LogFormat::Json);
        let svc = Stack::new().with(log.clone()).serve(hello);
        let mut body = svc.call(request("GET", "/")).await.into_body();
        body.frame().await.unwrap().unwrap();
        assert!(body.is_end_stream());
        drop(body);
        // An empty body is never polled at all.
        let svc = Stack::new().with(log.clone()).serve(|_req: Request| async { Response::new(Body::empty()) });
        drop(svc.call(request("GET", "/empty")).await);
        // Nor is the body of a HEAD response.
        drop(svc.call(request("HEAD", "/")).await);
        let svc_with_body = Stack::new().with(log.clone()).serve(hello);
        drop(svc_with_body.call(request("HEAD", "/")).await);
        let statuses: Vec<_> = json_lines(&log, &capture)
            .iter()
            .map(|l| (l["status"].as_u64().unwrap(), l["bytes_sent"].as_u64().unwrap()))
            .collect();
        assert_eq!(statuses, [(200, 5), (200, 0), (200, 0), (200, 0)]);
    }

    #[tokio::test]
    async fn rejected_and_panicked_requests_are_logged_with_their_user() {
        let (log, capture) = captured(LogFormat::Json);
        let rejecting = Stack::new()
            .with(log.clone())
            .with(from_fn(|_req: Request, _next: Next| async {
                let mut res = response::status(StatusCode::FORBIDDEN);
                res.extensions_mut().insert(AuthenticatedUser("mallory".into()));
                res
            }))
            .serve(hello);
        read_all(rejecting.call(request("GET", "/admin")).await).await;
        let panicking = Stack::new().with(log.clone()).serve(|_req: Request| async {
            if true {
                panic!("the app broke");
            }
            Response::new(Body::empty())
        });
        read_all(panicking.call(request("GET", "/boom")).await).await;
        let lines = json_lines(&log, &capture);
        assert_eq!((lines[0]["status"].as_u64(), lines[0]["user"].as_str()), (Some(403), Some("mallory")));
        assert_eq!(lines[1]["status"], 500);
    }

    #[tokio::test]
    async fn a_user_in_the_request_extensions_is_logged() {
        let (log, capture) = captured(LogFormat::Json);
        let svc = Stack::new().with(log.clone()).serve(hello);
        let mut req = request("GET", "/");
        req.extensions_mut().insert(AuthenticatedUser("carol".into()));
        read_all(svc.call(req).await).await;
        assert_eq!(json_lines(&log, &capture)[0]["user"], "carol");
    }

    #[tokio::test]
    async fn credentials_never_reach_the_log() {
        for format in [LogFormat::Json, LogFormat::Combined] {
            let (log, capture) = captured(format);
            let svc = Stack::new().with(log.clone()).serve(hello);
            let mut req = request("GET", "/private");
            req.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6czNjcmV0LWF1dGg="));
            req.headers_mut().insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Bearer s3cret-proxy"));
            req.headers_mut().insert(header::COOKIE, HeaderValue::from_static("session=s3cret-cookie"));
            read_all(svc.call(req).await).await;
            let lines = lines(&log, &capture);
            assert_eq!(lines.len(), 1);
            for secret in ["YWxpY2U6czNjcmV0LWF1dGg", "s3cret", "Basic", "Bearer", "session="] {
                assert!(!lines[0].contains(secret), "{format:?} leaked {secret}: {}", lines[0]);
            }
            assert!(lines[0].contains("/private"));
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-access-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn file_output_appends_and_resolves_relative_paths() {
        let dir = temp_dir("file");
        std::fs::write(dir.join("access.log"), "earlier line\n").unwrap();
        let ctx = BuildContext { base_dir: dir.clone() };
        let config = AccessLogConfig { format: LogFormat::Json, output: "access.log".into() };
        let log = AccessLog::new(config.clone(), &ctx).unwrap();
        let again = AccessLog::new(AccessLogConfig { format: LogFormat::Combined, ..config }, &ctx).unwrap();
        assert!(Arc::ptr_eq(&log.sink, &again.sink), "one writer thread per output");
        let svc = Stack::new().with(log.clone()).with(again.clone()).serve(hello);
        read_all(svc.call(request("GET", "/a")).await).await;
        read_all(svc.call(request("GET", "/b")).await).await;
        log.flush();
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], "earlier line");
        // The inner (combined) layer's body ends first, so its line comes first.
        assert!(lines[1].starts_with("203.0.113.7 - - [") && lines[2].starts_with('{'), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_outputs_are_config_errors() {
        let ctx = BuildContext { base_dir: temp_dir("bad") };
        for output in ["", "no/such/dir/access.log"] {
            let err =
                AccessLog::new(AccessLogConfig { output: output.into(), ..Default::default() }, &ctx).unwrap_err();
            assert_eq!(err.field, Some("output"), "{output:?}: {err}");
        }
        let _ = std::fs::remove_dir_all(ctx.base_dir);
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: AccessLogConfig = serde_json::from_str("{}").unwrap();
        assert_eq!((c.format, c.output.as_str()), (LogFormat::Combined, "stdout"));
        let c: AccessLogConfig = serde_json::from_str(r#"{"format": "json", "output": "stderr"}"#).unwrap();
        assert_eq!((c.format, c.output.as_str()), (LogFormat::Json, "stderr"));
        assert!(serde_json::from_str::<AccessLogConfig>(r#"{"format": "common"}"#).is_err());
        assert!(serde_json::from_str::<AccessLogConfig>(r#"{"headers": ["cookie"]}"#).is_err());
        let stderr =
            AccessLog::new(AccessLogConfig { output: "stderr".into(), ..Default::default() }, &BuildContext::default())
                .unwrap();
        let again =
            AccessLog::new(AccessLogConfig { output: "stderr".into(), ..Default::default() }, &BuildContext::default())
                .unwrap();
        assert!(Arc::ptr_eq(&stderr.sink, &again.sink));
        assert_eq!((stderr.kind(), stderr.format()), ("access_log", LogFormat::Combined));
        assert_eq!(
            stderr.facts(),
            Facts::of(&[Fact::SeesEveryRequest, Fact::ReadsRequestId, Fact::ReadsClientAddress])
        );
        assert_eq!(AccessLog::json().format(), LogFormat::Json);
    }

    /// A writer that stalls on its first write until released: the writer thread is then stuck, as
    /// on a slow disk.
    struct Stalled {
        entered: Option<mpsc::Sender<()>>,
        release: Option<mpsc::Receiver<()>>,
        out: Capture,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let (Some(entered), Some(release)) = (self.entered.take(), self.release.take()) {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_full_buffer_drops_and_counts_lines_instead_of_blocking() {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let capture = Capture::default();
        let stalled = Stalled { entered: Some(entered_tx), release: Some(release_rx), out: capture.clone() };
        // Room for two of the lines below (`/2` to `/9` are all as long as `/1`), not three.
        let line_len = "- - [23/Nov/2026:10:00:00 +0000] \"GET /1 HTTP/1.1\" 200 5 \"-\" \"-\"\n".len();
        let sink = Sink::spawn(Box::new(stalled), None, 2 * line_len + line_len / 2, "stalled".into()).unwrap();
        let log = AccessLog { format: LogFormat::Combined, sink: Arc::new(sink) };
        let svc = Stack::new().with(log.clone()).serve(hello);

        read_all(svc.call(request("GET", "/1")).await).await;
        entered.recv_timeout(Duration::from_secs(5)).expect("the writer thread is now stuck writing line 1");
        for i in 2..=11 {
            // Each call returns at once even though nothing is being written.
            let res = tokio::time::timeout(Duration::from_secs(5), svc.call(request("GET", &format!("/{i}")))).await;
            read_all(res.expect("a full log queue never blocks a request")).await;
        }
        assert_eq!(log.dropped_lines(), 8, "2 lines fit the pending buffer, 8 do not");
        release.send(()).unwrap();
        log.flush();
        let lines = capture.lines();
        let paths: Vec<_> = lines.iter().map(|l| combined_fields(l)[3].clone()).collect();
        assert_eq!(paths, ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1", "GET /3 HTTP/1.1"]);
    }

    /// Counts the writer thread's `write` calls, and keeps the bytes.
    #[derive(Clone, Default)]
    struct CountingWrites {
        writes: Arc<AtomicU64>,
        out: Capture,
    }

    impl Write for CountingWrites {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arriving_one_by_one_are_written_in_batches_and_without_a_flush() {
        let counting = CountingWrites::default();
        let sink = Sink::spawn(Box::new(counting.clone()), None, PENDING_CAPACITY, "counting".into()).unwrap();
        // A line every half millisecond: a writer woken for each line would write each one alone.
        let started = Instant::now();
        for i in 0..40 {
            sink.send(format!("line {i}\n").as_bytes());
            std::thread::sleep(Duration::from_micros(500));
        }
        let sending = started.elapsed();
        // No flush: lines reach the output by themselves within the linger time.
        let deadline = Instant::now() + Duration::from_secs(5);
        while counting.out.lines().len() < 40 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(counting.out.lines(), (0..40).map(|i| format!("line {i}")).collect::<Vec<_>>());
        // One batch per linger period, plus the partial ones at both ends, however slow the sleeps were.
        let most = (sending.as_millis() / LINGER.as_millis()) as u64 + 2;
        let writes = counting.writes.load(Ordering::Relaxed);
        assert!(writes <= most, "{writes} writes for 40 lines sent over {sending:?}; at most {most} expected");
    }

    #[test]
    fn calendar_conversion() {
        let at = |secs: u64, millis: u64| Civil::from(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis));
        assert_eq!(at(0, 0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7).rfc3339(), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_709_164_800, 0).rfc3339(), "2024-02-29T00:00:00.000Z");
        assert_eq!(at(1_234_567_890, 999).rfc3339(), "2009-02-13T23:31:30.999Z");
        assert_eq!(at(4_102_444_800, 0).rfc3339(), "2100-01-01T00:00:00.000Z");
        assert_eq!(at(253_402_300_799, 0).rfc3339(), "9999-12-31T23:59:59.000Z");
        let t = at(1_234_567_890, 0);
        assert_eq!((t.day, t.month_abbr(), t.year), (13, "Feb", 2009));
        assert_eq!(Civil::from(UNIX_EPOCH - Duration::from_secs(5)).rfc3339(), "1970-01-01T00:00:00.000Z");
        // Every day of a 400-year cycle round-trips against a simple day counter.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1];
            d += 1;
            if d > len {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
    }

    /// The JSON line as it was made with `serde_json` before it was written by hand: the format's
    /// reference, byte for byte.
    fn reference_json(e: &Entry, status: u16, elapsed_nanos: u128) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct JsonLine<'a> {
            time: String,
            remote_addr: Option<String>,
            method: &'a str,
            path: &'a str,
            query: Option<&'a str>,
            protocol: &'static str,
            status: u16,
            bytes_sent: u64,
            duration_ms: f64,
            request_id: Option<Cow<'a, str>>,
            user: Option<&'a str>,
            user_agent: Option<Cow<'a, str>>,
            referer: Option<Cow<'a, str>>,
        }
        let line = JsonLine {
            time: Civil::from(e.time).rfc3339(),
            remote_addr: e.remote.map(|ip| ip.to_string()),
            method: e.method.as_str(),
            path: e.uri.path(),
            query: e.uri.query(),
            protocol: protocol(e.version),
            status,
            bytes_sent: e.bytes_sent,
            duration_ms: (elapsed_nanos / 1_000) as f64 / 1_000.0,
            request_id: lossy(&e.request_id),
            user: e.user.as_deref(),
            user_agent: lossy(&e.user_agent),
            referer: lossy(&e.referer),
        };
        serde_json::to_vec(&line).unwrap()
    }

    fn entry(remote: Option<&str>, uri: &str, text: &[u8], user: Option<&str>) -> Entry {
        let value = HeaderValue::from_bytes(text).unwrap();
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            started: Instant::now(),
            remote: remote.map(|r| r.parse().unwrap()),
            method: Method::from_bytes(b"PROPFIND").unwrap(),
            uri: uri.parse().unwrap(),
            version: Version::HTTP_2,
            request_id: Some(value.clone()),
            user: user.map(Arc::from),
            user_agent: Some(value.clone()),
            referer: Some(value),
            status: None,
            bodiless: false,
            bytes_sent: 0,
        }
    }

    #[test]
    fn json_lines_are_byte_identical_to_serde_json() {
        let entries = [
            entry(Some("203.0.113.7"), "/a/b?x=1&y=%22", b"curl/8.5", Some("alice")),
            entry(Some("2001:db8::1"), "/", b"tab\there \"quoted\" back\\slash", Some("b\u{f6}b \"x\"\n")),
            entry(Some("::ffff:10.0.0.1"), "*", b"obs-text \xe9\xff", None),
            entry(None, "http://example.com:8080/p?q", b"\t\x80\t", Some("")),
            entry(Some("0.0.0.0"), "/%E2%9C%93", b"\xe2\x9c\x93 utf-8", Some("\u{1}\u{7}\r")),
        ];
        for e in &entries {
            for (status, bytes, nanos) in
                [(200, 0, 0), (499, 5, 999), (101, 1 << 40, 1_234_567), (599, 7, 86_400_000_000_123)]
            {
                let e = Entry { bytes_sent: bytes, ..clone_entry(e) };
                let mut ours = Vec::new();
                write_json(&mut ours, &e, status, nanos);
                assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&reference_json(&e, status, nanos)));
            }
        }
    }

    fn clone_entry(e: &Entry) -> Entry {
        Entry {
            time: e.time,
            started: e.started,
            remote: e.remote,
            method: e.method.clone(),
            uri: e.uri.clone(),
            version: e.version,
            request_id: e.request_id.clone(),
            user: e.user.clone(),
            user_agent: e.user_agent.clone(),
            referer: e.referer.clone(),
            status: e.status,
            bodiless: e.bodiless,
            bytes_sent: e.bytes_sent,
        }
    }

    #[test]
    fn durations_are_written_as_serde_json_writes_the_float() {
        let samples = (0..20_000u128)
            .chain((0..60).map(|shift| 1u128 << shift))
            .chain((1..=18).map(|exp| 10u128.pow(exp)))
            .chain((1..=18).map(|exp| 10u128.pow(exp) - 1))
            .chain([123_456_789, 1_000_001, 999_999_999_999_999, 1_000_000_000_000_001, 3_600_000_000]);
        for micros in samples {
            let mut ours = Vec::new();
            json_millis(&mut ours, micros);
            let reference = serde_json::to_vec(&(micros as f64 / 1_000.0)).unwrap();
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&reference), "{micros} µs");
        }
    }

    #[test]
    fn json_strings_escape_as_serde_json_does() {
        let every_ascii: String = (0u8..128).map(char::from).collect();
        for text in [every_ascii.as_str(), "", "plain", "é ✓ \u{2028} \u{10ffff}", "\"\\\"\\"] {
            let mut ours = Vec::new();
            json_str(&mut ours, text);
            assert_eq!(ours, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 65_535, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for ip in ["0.0.0.0", "255.255.255.255", "10.0.12.1", "::1", "2001:db8::ff00:42:8329", "::"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
        for year in [0, 7, 1970, 9999, 10_000, 292_277] {
            let mut out = Vec::new();
            push_year(&mut out, year);
            assert_eq!(out, format!("{year:04}").as_bytes());
        }
    }

    #[test]
    fn a_line_appended_to_an_idle_writer_is_written_without_a_flush() {
        let (log, capture) = captured(LogFormat::Combined);
        let svc = Stack::new().with(log.clone()).serve(hello);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async { read_all(svc.call(request("GET", "/quiet")).await).await });
        // No flush: a quiet server's line must reach the output by itself, promptly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while capture.lines().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(capture.lines().len(), 1);
        assert!(capture.lines()[0].contains("\"GET /quiet HTTP/1.1\" 200 5"), "{:?}", capture.lines());
    }

    #[tokio::test]
    async fn a_line_longer_than_the_kept_buffer_is_written_whole_and_the_next_one_too() {
        let (log, capture) = captured(LogFormat::Json);
        let svc = Stack::new().with(log.clone()).serve(hello);
        let long = format!("/{}", "a".repeat(2 * MAX_KEPT_SCRATCH));
        read_all(svc.call(request("GET", &long)).await).await;
        read_all(svc.call(request("GET", "/short")).await).await;
        let lines = json_lines(&log, &capture);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["path"], long.as_str());
        assert_eq!(lines[1]["path"], "/short");
    }

    #[test]
    fn the_last_layer_gone_writes_what_was_pending() {
        let capture = Capture::default();
        let log = AccessLog::writing_to(LogFormat::Combined, capture.clone());
        let shared = log.sink.shared.clone();
        let svc = Stack::new().with(log).serve(hello);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            for i in 0..100 {
                read_all(svc.call(request("GET", &format!("/{i}"))).await).await;
            }
        });
        drop(svc);
        // The writer thread ends once it has written everything, and says so.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !shared.lock().writer_gone && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(shared.lock().writer_gone, "the writer thread ends with its last Sink");
        assert_eq!(capture.lines().len(), 100);
    }

    #[test]
    fn lines_from_many_threads_are_all_written_whole() {
        let (log, capture) = captured(LogFormat::Json);
        let svc = Stack::new().with(log.clone()).serve(hello);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let svc = svc.clone();
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                    runtime.block_on(async {
                        for i in 0..500 {
                            read_all(svc.call(request("GET", &format!("/{t}/{i}"))).await).await;
                        }
                    });
                });
            }
        });
        let lines = json_lines(&log, &capture);
        assert_eq!(lines.len(), 2000);
        let mut paths: Vec<String> = lines.iter().map(|l| l["path"].as_str().unwrap().to_string()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 2000, "every line once, none torn");
        assert_eq!(log.dropped_lines(), 0);
    }

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("strata-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn file_log(dir: &Path) -> AccessLog {
        let config = AccessLogConfig { format: LogFormat::Combined, output: "access.log".into() };
        AccessLog::new(config, &BuildContext { base_dir: dir.to_path_buf() }).unwrap()
    }

    fn paths_in(file: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .map(|l| combined_fields(l)[3].trim_start_matches("GET ").trim_end_matches(" HTTP/1.1").into())
            .collect()
    }

    async fn send(svc: &Service, range: std::ops::Range<u32>) {
        for i in range {
            read_all(svc.call(request("GET", &format!("/{i}"))).await).await;
        }
    }

    fn numbered(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("/{i}")).collect()
    }

    #[tokio::test]
    async fn reopen_all_moves_the_next_lines_to_a_new_file_at_the_same_path() {
        let dir = TempDir::new("reopen");
        let log = file_log(&dir.0);
        let svc = Stack::new().with(log.clone()).serve(hello);
        send(&svc, 0..50).await;
        log.flush();
        // What logrotate does: rename, then signal.
        std::fs::rename(dir.0.join("access.log"), dir.0.join("access.log.1")).unwrap();
        send(&svc, 50..60).await;
        // Written before the signal: they stay in the renamed file (a batch taken after it would not).
        log.flush();
        reopen_all();
        send(&svc, 60..100).await;
        log.flush();
        assert_eq!(
            paths_in(&dir.0.join("access.log.1")),
            numbered(0..60),
            "lines before the reopen stay in the old file"
        );
        assert_eq!(paths_in(&dir.0.join("access.log")), numbered(60..100), "lines after it go to the new one");
        // An idle writer reopens at once: the new file exists before any further line.
        std::fs::rename(dir.0.join("access.log"), dir.0.join("access.log.2")).unwrap();
        reopen_all();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dir.0.join("access.log").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(dir.0.join("access.log").exists(), "an idle writer reopens without waiting for a line");
    }

    #[tokio::test]
    async fn a_path_that_cannot_be_reopened_keeps_the_old_file() {
        let dir = TempDir::new("reopen-fail");
        let logs = dir.0.join("logs");
        std::fs::create_dir(&logs).unwrap();
        let log = file_log(&logs);
        let svc = Stack::new().with(log.clone()).serve(hello);
        send(&svc, 0..10).await;
        // The directory is gone from the path: reopening it fails, and no line may be lost for that.
        std::fs::rename(&logs, dir.0.join("moved")).unwrap();
        reopen_all();
        send(&svc, 10..20).await;
        log.flush();
        assert_eq!(paths_in(&dir.0.join("moved/access.log")), numbered(0..20));
        assert_eq!(log.dropped_lines(), 0);
    }

    #[test]
    fn escaping_matches_nginx() {
        let mut out = Vec::new();
        escape_into(&mut out, b"a \"b\"\\\x1b[31m\x7f\x80", false);
        assert_eq!(out, br"a \x22b\x22\x5C\x1B[31m\x7F\x80");
        out.clear();
        escape_into(&mut out, b"a b", true);
        assert_eq!(out, br"a\x20b");
    }
}
