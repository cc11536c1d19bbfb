//! The middleware end to end: lines written for complete, aborted, rejected and panicked requests,
//! outputs, batching, dropping when full, and reopening for log rotation.

use super::writer::Sink;
use super::*;
use crate::from_fn;
use crate::http::{Service, Stack, response};
use crate::middleware::request_id::RequestId as RequestIdLayer;
use crate::middleware::test_support::{self, body_bytes};
#[cfg(feature = "config")]
use crate::middleware::{BuildContext, SharedResources};
use http_body_util::BodyExt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

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
    (AccessLog::builder().format(format).to_writer(capture.clone()).build().unwrap(), capture)
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
    test_support::from_client(test_support::request(method, uri, &[]), "203.0.113.7")
}

async fn hello(_req: Request) -> Response {
    Response::new(Body::from("hello"))
}

/// A streaming body fed by the test, one frame at a time.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
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
    assert_eq!(body_bytes(res).await, "hello");

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
    let svc = Stack::new().with(log.clone()).serve(|_req: Request| async { response::status(StatusCode::NO_CONTENT) });
    let req = http::Request::builder().uri("/").body(Body::empty()).unwrap();
    body_bytes(svc.call(req).await).await;
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
    body_bytes(svc.call(req).await).await;
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
    assert!(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].contains(&parts[1]));
}

#[tokio::test]
async fn combined_escapes_quotes_and_control_bytes_and_uses_dashes_for_missing_values() {
    let (log, capture) = captured(LogFormat::Combined);
    let svc = Stack::new().with(log.clone()).serve(|_req: Request| async { response::status(StatusCode::NO_CONTENT) });
    let mut req = http::Request::builder().uri("/").body(Body::empty()).unwrap();
    req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_bytes(b"evil\" \"injected\t\xff\\").unwrap());
    body_bytes(svc.call(req).await).await;
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
    body_bytes(rejecting.call(request("GET", "/admin")).await).await;
    let panicking = Stack::new().with(log.clone()).serve(|_req: Request| async {
        if true {
            panic!("the app broke");
        }
        Response::new(Body::empty())
    });
    body_bytes(panicking.call(request("GET", "/boom")).await).await;
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
    body_bytes(svc.call(req).await).await;
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
        body_bytes(svc.call(req).await).await;
        let lines = lines(&log, &capture);
        assert_eq!(lines.len(), 1);
        for secret in ["YWxpY2U6czNjcmV0LWF1dGg", "s3cret", "Basic", "Bearer", "session="] {
            assert!(!lines[0].contains(secret), "{format:?} leaked {secret}: {}", lines[0]);
        }
        assert!(lines[0].contains("/private"));
    }
}

#[cfg(feature = "config")]
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-access-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(feature = "config")]
#[tokio::test]
async fn file_output_appends_and_resolves_relative_paths() {
    let dir = temp_dir("file");
    std::fs::write(dir.join("access.log"), "earlier line\n").unwrap();
    let ctx =
        BuildContext { base_dir: dir.clone(), shared: SharedResources::default().with_log_outputs(LogOutputs::new()) };
    let config = AccessLogConfig { format: LogFormat::Json, output: "access.log".into() };
    let log = AccessLog::from_config(config.clone(), &ctx).unwrap();
    let again = AccessLog::from_config(AccessLogConfig { format: LogFormat::Combined, ..config }, &ctx).unwrap();
    assert!(log.output().unwrap().same_as(again.output().unwrap()), "one writer thread per output");
    let svc = Stack::new().with(log.clone()).with(again.clone()).serve(hello);
    body_bytes(svc.call(request("GET", "/a")).await).await;
    body_bytes(svc.call(request("GET", "/b")).await).await;
    log.flush();
    let text = std::fs::read_to_string(dir.join("access.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], "earlier line");
    // The inner (combined) layer's body ends first, so its line comes first.
    assert!(lines[1].starts_with("203.0.113.7 - - [") && lines[2].starts_with('{'), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(feature = "config")]
#[test]
fn bad_outputs_are_config_errors() {
    let ctx = BuildContext { base_dir: temp_dir("bad"), ..Default::default() };
    for output in ["", "no/such/dir/access.log"] {
        let err =
            AccessLog::from_config(AccessLogConfig { output: output.into(), ..Default::default() }, &ctx).unwrap_err();
        assert_eq!(err.field, Some("output"), "{output:?}: {err}");
        // The typed builder rejects the same paths with the same field.
        let path = if output.is_empty() { PathBuf::new() } else { ctx.base_dir.join(output) };
        let err = AccessLog::builder().to_file(path).build().unwrap_err();
        assert_eq!(err.field, Some("output"), "{output:?}: {err}");
        let registry = LogOutputs::new();
        let path = if output.is_empty() { PathBuf::new() } else { ctx.base_dir.join(output) };
        let err = AccessLog::builder().outputs(&registry).to_file(path).build().unwrap_err();
        assert_eq!(err.field, Some("output"), "{output:?} through a registry: {err}");
    }
    let _ = std::fs::remove_dir_all(ctx.base_dir);
}

#[cfg(feature = "config")]
#[test]
fn config_defaults_and_unknown_fields() {
    let c: AccessLogConfig = serde_json::from_str("{}").unwrap();
    assert_eq!((c.format, c.output.as_str()), (LogFormat::Combined, "stdout"));
    let c: AccessLogConfig = serde_json::from_str(r#"{"format": "json", "output": "stderr"}"#).unwrap();
    assert_eq!((c.format, c.output.as_str()), (LogFormat::Json, "stderr"));
    assert!(serde_json::from_str::<AccessLogConfig>(r#"{"format": "common"}"#).is_err());
    assert!(serde_json::from_str::<AccessLogConfig>(r#"{"headers": ["cookie"]}"#).is_err());
    let shared = BuildContext {
        shared: SharedResources::default().with_log_outputs(LogOutputs::new()),
        ..BuildContext::default()
    };
    let config = || AccessLogConfig { output: "stderr".into(), ..Default::default() };
    let stderr = AccessLog::from_config(config(), &shared).unwrap();
    let again = AccessLog::from_config(config(), &shared).unwrap();
    assert!(stderr.output().unwrap().same_as(again.output().unwrap()), "shared through the context's registry");
    let own = AccessLog::from_config(config(), &BuildContext::default()).unwrap();
    assert!(!own.output().unwrap().same_as(stderr.output().unwrap()), "without a registry, an output of its own");
    assert_eq!((stderr.kind(), stderr.format()), ("access_log", LogFormat::Combined));
    assert_eq!(stderr.facts(), Facts::of(&[Fact::SeesEveryRequest, Fact::ReadsRequestId, Fact::ReadsClientAddress]));
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
    let log = AccessLog::builder().output(LogOutput::from_sink(sink)).build().unwrap();
    let svc = Stack::new().with(log.clone()).serve(hello);

    body_bytes(svc.call(request("GET", "/1")).await).await;
    entered.recv_timeout(Duration::from_secs(5)).expect("the writer thread is now stuck writing line 1");
    for i in 2..=11 {
        // Each call returns at once even though nothing is being written.
        let res = tokio::time::timeout(Duration::from_secs(5), svc.call(request("GET", &format!("/{i}")))).await;
        body_bytes(res.expect("a full log queue never blocks a request")).await;
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
fn a_line_appended_to_an_idle_writer_is_written_without_a_flush() {
    let (log, capture) = captured(LogFormat::Combined);
    let svc = Stack::new().with(log.clone()).serve(hello);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async { body_bytes(svc.call(request("GET", "/quiet")).await).await });
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
    body_bytes(svc.call(request("GET", &long)).await).await;
    body_bytes(svc.call(request("GET", "/short")).await).await;
    let lines = json_lines(&log, &capture);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["path"], long.as_str());
    assert_eq!(lines[1]["path"], "/short");
}

#[test]
fn the_last_layer_gone_writes_what_was_pending() {
    let capture = Capture::default();
    let log = AccessLog::builder().to_writer(capture.clone()).build().unwrap();
    let shared = log.output().unwrap().shared();
    let svc = Stack::new().with(log).serve(hello);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        for i in 0..100 {
            body_bytes(svc.call(request("GET", &format!("/{i}"))).await).await;
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
                        body_bytes(svc.call(request("GET", &format!("/{t}/{i}"))).await).await;
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
    AccessLog::builder().to_file(dir.join("access.log")).build().unwrap()
}

fn paths_in(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| combined_fields(l)[3].trim_start_matches("GET ").trim_end_matches(" HTTP/1.1").into())
        .collect()
}

async fn send(svc: &Service, range: std::ops::Range<u32>) {
    for i in range {
        body_bytes(svc.call(request("GET", &format!("/{i}"))).await).await;
    }
}

fn numbered(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("/{i}")).collect()
}

#[tokio::test]
async fn reopen_moves_the_next_lines_to_a_new_file_at_the_same_path() {
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
    log.output().unwrap().reopen();
    send(&svc, 60..100).await;
    log.flush();
    assert_eq!(paths_in(&dir.0.join("access.log.1")), numbered(0..60), "lines before the reopen stay in the old file");
    assert_eq!(paths_in(&dir.0.join("access.log")), numbered(60..100), "lines after it go to the new one");
    // An idle writer reopens at once: the new file exists before any further line.
    std::fs::rename(dir.0.join("access.log"), dir.0.join("access.log.2")).unwrap();
    log.output().unwrap().reopen();
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
    log.output().unwrap().reopen();
    send(&svc, 10..20).await;
    log.flush();
    assert_eq!(paths_in(&dir.0.join("moved/access.log")), numbered(0..20));
    assert_eq!(log.dropped_lines(), 0);
}

/// Waits (bounded) for an output's writer thread to end.
fn writer_ended(shared: &writer::Shared) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shared.lock().writer_gone && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    shared.lock().writer_gone
}

#[tokio::test]
async fn two_stacks_share_an_output_only_when_given_the_same_one() {
    let dir = TempDir::new("own-outputs");
    let path = dir.0.join("access.log");
    let first = AccessLog::builder().to_file(&path).build().unwrap();
    let second = AccessLog::builder().to_file(&path).build().unwrap();
    let (first_output, second_output) = (first.output().unwrap().clone(), second.output().unwrap().clone());
    assert!(!first_output.same_as(&second_output), "each layer built alone opens an output of its own");
    let (first_writer, second_writer) = (first_output.shared(), second_output.shared());
    drop((first_output, second_output));
    let first_svc = Stack::new().with(first).serve(hello);
    let second_svc = Stack::new().with(second.clone()).serve(hello);
    send(&first_svc, 0..5).await;
    drop(first_svc);
    assert!(writer_ended(&first_writer), "the first stack's writer thread ends with its layer");
    assert!(!second_writer.lock().writer_gone, "the second stack's writer thread is its own and still runs");
    send(&second_svc, 5..10).await;
    second.flush();
    let mut paths = paths_in(&path);
    paths.sort_by_key(|p| p[1..].parse::<u32>().unwrap());
    assert_eq!(paths, numbered(0..10), "every line of both, each written whole");

    // Given the same output, two stacks share its one writer thread.
    let shared = LogOutput::file(&path).unwrap();
    let a = AccessLog::builder().output(shared.clone()).build().unwrap();
    let b = AccessLog::builder().format(LogFormat::Json).output(shared.clone()).build().unwrap();
    assert!(a.output().unwrap().same_as(b.output().unwrap()));
    let writer = shared.shared();
    drop(shared);
    let a_svc = Stack::new().with(a).serve(hello);
    drop(b);
    send(&a_svc, 10..11).await;
    assert!(!writer.lock().writer_gone, "the output lives while one layer holds it");
    drop(a_svc);
    assert!(writer_ended(&writer), "and ends with the last one");
    assert_eq!(paths_in(&path).len(), 11, "after writing what was pending");
}

#[tokio::test]
async fn a_registry_shares_outputs_without_keeping_them_alive_and_reopens_and_flushes_them() {
    let dir = TempDir::new("registry");
    let registry = LogOutputs::new();
    let path = dir.0.join("access.log");
    let log = AccessLog::builder().outputs(&registry).to_file(&path).build().unwrap();
    // Another spelling of the same file is the same output.
    let other_spelling = dir.0.join(".").join("access.log");
    let again =
        AccessLog::builder().format(LogFormat::Json).outputs(&registry).to_file(other_spelling).build().unwrap();
    assert!(log.output().unwrap().same_as(again.output().unwrap()));
    let svc = Stack::new().with(log.clone()).with(again.clone()).serve(hello);
    send(&svc, 0..3).await;
    registry.flush();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 6, "flushed through the registry");
    std::fs::rename(&path, dir.0.join("access.log.1")).unwrap();
    registry.reopen();
    send(&svc, 3..4).await;
    registry.flush();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2, "reopened through the registry");

    let writer = log.output().unwrap().shared();
    drop((svc, log, again));
    assert!(writer_ended(&writer), "the registry does not keep an output alive");
    registry.flush(); // nothing live: returns at once
    let next = AccessLog::builder().outputs(&registry).to_file(&path).build().unwrap();
    assert!(!next.output().unwrap().shared().lock().writer_gone, "a new output for the next layer");
    assert!(format!("{registry:?}").contains("access.log"), "{registry:?}");
}

/// A sink of a user's own: keeps the lines, counts the flushes, reports drops.
#[derive(Default)]
struct Collector {
    lines: Mutex<Vec<Vec<u8>>>,
    flushes: AtomicU64,
}

impl AccessLogSink for Collector {
    fn write_line(&self, line: &[u8]) {
        self.lines.lock().unwrap().push(line.to_vec());
    }
    fn flush(&self) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }
    fn dropped_lines(&self) -> u64 {
        7
    }
}

#[tokio::test]
async fn a_custom_sink_receives_each_whole_line_and_the_flushes() {
    let collector = Arc::new(Collector::default());
    let log = AccessLog::builder().format(LogFormat::Json).sink(collector.clone()).build().unwrap();
    assert!(log.output().is_none());
    let svc = Stack::new().with(RequestIdLayer::default()).with(log.clone()).serve(hello);
    send(&svc, 0..3).await;
    let lines = collector.lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 3, "one call per request, written as the response ends");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line.last(), Some(&b'\n'), "a line ends with its newline");
        let value: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(value["path"], format!("/{i}"));
        assert!(value["request_id"].is_string(), "{value}");
    }
    log.flush();
    assert_eq!(collector.flushes.load(Ordering::Relaxed), 1);
    assert_eq!(log.dropped_lines(), 7);
}
