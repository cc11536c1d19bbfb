//! `echo`: a test app in the spirit of httpbin, for exercising middlewares against known answers.
//!
//! | Route                         | Methods   | Answer                                                    |
//! |-------------------------------|-----------|-----------------------------------------------------------|
//! | `/anything`, `/anything/...`  | any       | 200, the request as JSON (see below); body limit 1 MiB → 413 |
//! | `/status/{code}`              | any       | that status (200–599), body `"{code} {reason}\n"` (empty for 204, 205, 304) |
//! | `/delay/{ms}`                 | any       | 200 `{"delay_ms": ms}` after `ms` milliseconds (≤ 10000)   |
//! | `/bytes/{n}`                  | GET, HEAD | `n` bytes (≤ 100 MiB) of `application/octet-stream`, byte `i` = `i % 256`, in 64 KiB chunks, with `Content-Length` |
//! | `/stream/{n}`                 | GET, HEAD | `n` (≤ 1000) JSON lines `{"id": i}`, `i` from 0, one frame each, no `Content-Length` (chunked) |
//! | `/sse/{n}`                    | GET, HEAD | `n` (≤ 1000) server-sent events `id: i` / `data: {"id": i}`, `i` from 0, the first at once then one every 100 ms |
//! | `/panic`                      | any       | panics, to check that the stack turns it into a 500        |
//!
//! `/anything` answers `{"method", "path", "query", "args", "headers", "body", "body_encoding",
//! "body_bytes"}`: `path` as the app received it (relative to the mount point), `query` the raw query
//! string or `null`, `args` the decoded query parameters (the last of repeated names wins), `headers`
//! by lowercase name (repeated headers joined with `", "`), `body` the body as text when it is UTF-8
//! (`body_encoding: "utf-8"`) or else as standard base64 (`body_encoding: "base64"`), `body_bytes` its
//! length. The values of `authorization`, `proxy-authorization` and `cookie` are shown as
//! `"[redacted]"`, so a credential a test sends is never echoed into logs or pages.
//!
//! A malformed or out-of-range number in a path (`/status/abc`, `/delay/99999`) is a 400 naming the
//! accepted range; any other path is a 404.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use hyper::body::{Frame, SizeHint};
use strata::http::{Body, Request, Response, response};
use strata::{BoxFuture, Endpoint, Fact, Facts};
use tokio::time::{Instant, Sleep};

use super::{App, Rejection, method_not_allowed, not_found, parse_number, read_body};

/// Bodies `/anything` echoes are held in memory twice (bytes and JSON), so they are kept small.
const ANYTHING_LIMIT: usize = 1024 * 1024;
const MAX_DELAY_MS: u64 = 10_000;
const MAX_BYTES: u64 = 100 * 1024 * 1024;
/// The frame size of `/bytes`: big enough to be efficient, small enough to never hold `n` bytes at once.
const CHUNK: usize = 64 * 1024;
const MAX_LINES: u64 = 1000;
const SSE_PERIOD: Duration = Duration::from_millis(100);
/// Headers that carry credentials: echoing them back would copy secrets into responses and logs.
const REDACTED: [HeaderName; 3] = [header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::COOKIE];

/// A fresh `echo` app (it has no state; each instance is independent anyway).
pub(super) fn app() -> App {
    App {
        name: "echo",
        description: "httpbin-style test app: /anything, /status/{code}, /delay/{ms}, /bytes/{n}, /stream/{n}, /sse/{n}, /panic",
        facts: Facts::of(&[Fact::StreamsEvents]),
        endpoint: Arc::new(Echo),
    }
}

struct Echo;

impl Endpoint<Request, Response> for Echo {
    fn call(&self, req: Request) -> BoxFuture<Response> {
        // `handle` is an async fn: nothing runs until the stack polls it, inside its panic boundary.
        Box::pin(handle(req))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Anything,
    Status(&'a str),
    Delay(&'a str),
    Bytes(&'a str),
    Stream(&'a str),
    Sse(&'a str),
    Panic,
}

fn route(path: &str) -> Option<Route<'_>> {
    if path == "/anything" || path.starts_with("/anything/") {
        return Some(Route::Anything);
    }
    if path == "/panic" {
        return Some(Route::Panic);
    }
    let (name, param) = path.strip_prefix('/')?.split_once('/')?;
    if param.contains('/') {
        return None;
    }
    Some(match name {
        "status" => Route::Status(param),
        "delay" => Route::Delay(param),
        "bytes" => Route::Bytes(param),
        "stream" => Route::Stream(param),
        "sse" => Route::Sse(param),
        _ => return None,
    })
}

async fn handle(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some(route) = route(&path) else { return not_found(&path) };
    let streaming = matches!(route, Route::Bytes(_) | Route::Stream(_) | Route::Sse(_));
    if streaming && !matches!(*req.method(), Method::GET | Method::HEAD) {
        return method_not_allowed(req.method(), &path, "GET, HEAD");
    }
    let result = match route {
        Route::Anything => anything(req).await,
        Route::Status(code) => bounded(code, "status code", 200, 599).map(status),
        Route::Delay(ms) => match bounded(ms, "delay in milliseconds", 0, MAX_DELAY_MS) {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(response::json(StatusCode::OK, &serde_json::json!({ "delay_ms": ms })))
            }
            Err(rejection) => Err(rejection),
        },
        Route::Bytes(n) => bounded(n, "byte count", 0, MAX_BYTES).map(bytes),
        Route::Stream(n) => bounded(n, "line count", 0, MAX_LINES).map(json_lines),
        Route::Sse(n) => bounded(n, "event count", 0, MAX_LINES).map(events),
        Route::Panic => panic!("echo: /panic was requested (the stack should answer 500)"),
    };
    result.unwrap_or_else(Rejection::into_response)
}

/// The number in a path segment, if it is one within `min..=max`; else the 400 saying what is accepted.
fn bounded(segment: &str, what: &str, min: u64, max: u64) -> Result<u64, Rejection> {
    match parse_number(segment) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Rejection::bad_request(format!("{what} must be a whole number from {min} to {max}, got `{segment}`"))),
    }
}

async fn anything(req: Request) -> Result<Response, Rejection> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, ANYTHING_LIMIT).await?;
    let query = parts.uri.query();
    let mut headers: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        if REDACTED.contains(name) {
            headers.insert(name.as_str(), "[redacted]".to_string());
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let (text, encoding) = match std::str::from_utf8(&body) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&body), "base64"),
    };
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": query,
            "args": query.map(decode_query).unwrap_or_default(),
            "headers": headers,
            "body": text,
            "body_encoding": encoding,
            "body_bytes": body.len(),
        }),
    ))
}

/// Decodes `application/x-www-form-urlencoded` pairs; a repeated name keeps its last value.
fn decode_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
        .collect()
}

/// Percent-decodes one query component (`+` is a space). Malformed escapes are kept as written and
/// invalid UTF-8 becomes U+FFFD: a test app should show what it got, not refuse it.
fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3) {
                Some(&[high, low]) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                    out.push(hex_value(high) << 4 | hex_value(low));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of an ASCII hex digit (callers check `is_ascii_hexdigit` first).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit.wrapping_sub(b'A').wrapping_add(10),
    }
}

fn status(code: u64) -> Response {
    let Some(status) = u16::try_from(code).ok().and_then(|c| StatusCode::from_u16(c).ok()) else {
        return response::json_error(StatusCode::BAD_REQUEST, format!("`{code}` is not a status code"));
    };
    // These statuses must not carry content (RFC 9110 §15.3.5, §15.3.6, §15.4.5).
    if matches!(status.as_u16(), 204 | 205 | 304) {
        return response::status(status);
    }
    let line = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}\n", status.as_u16()),
        None => format!("{}\n", status.as_u16()),
    };
    response::text(status, line)
}

fn bytes(n: u64) -> Response {
    let mut res = response::with_type(StatusCode::OK, "application/octet-stream", Body::wrap(Pattern { remaining: n }));
    res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    res
}

/// One chunk of the `/bytes` pattern. `CHUNK` is a multiple of 256, so every full chunk is the same
/// bytes: the body hands out cheap clones of this one buffer instead of allocating per chunk.
static PATTERN: LazyLock<Bytes> = LazyLock::new(|| (0..CHUNK).map(|i| (i % 256) as u8).collect::<Vec<u8>>().into());

/// The `/bytes` body: `remaining` more bytes of the pattern.
struct Pattern {
    remaining: u64,
}

impl hyper::body::Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = usize::try_from(this.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        this.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(PATTERN.slice(..len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn json_lines(n: u64) -> Response {
    let lines = (0..n).map(|i| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{{\"id\": {i}}}\n")))));
    // StreamBody reports no size, so the server sends it chunked, one line per frame.
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(lines));
    response::with_type(StatusCode::OK, "application/x-ndjson", Body::wrap(body))
}

fn events(n: u64) -> Response {
    let mut res =
        response::with_type(StatusCode::OK, "text/event-stream", Body::wrap(Events { next: 0, total: n, timer: None }));
    // Caches and proxies must pass events through, not store the stream.
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The `/sse` body: event `next` of `total`, each after `timer` fires (none before the first).
struct Events {
    next: u64,
    total: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.next >= this.total {
            return Poll::Ready(None);
        }
        if let Some(timer) = &mut this.timer {
            ready!(timer.as_mut().poll(cx));
        }
        let id = this.next;
        this.next += 1;
        // Timed from when this event is handed over, not on a fixed grid, so a reader that fell
        // behind still gets events spaced out rather than a burst of the overdue ones.
        let due = Instant::now() + SSE_PERIOD;
        match &mut this.timer {
            Some(timer) => timer.as_mut().reset(due),
            // Created on first poll, not in `events`: the server polls bodies inside the runtime.
            None => this.timer = Some(Box::pin(tokio::time::sleep_until(due))),
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!("id: {id}\ndata: {{\"id\": {id}}}\n\n"))))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use std::time::Instant as StdInstant;

    fn get(uri: &str) -> Request {
        http::Request::get(uri).body(Body::empty()).unwrap()
    }

    async fn body_bytes(res: Response) -> Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    async fn body_json(res: Response) -> Value {
        serde_json::from_slice(&body_bytes(res).await).unwrap()
    }

    /// Reads every frame, with how long after `start` each one arrived.
    async fn frames(res: Response, start: StdInstant) -> Vec<(Bytes, Duration)> {
        let mut body = res.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                out.push((data, start.elapsed()));
            }
        }
        out
    }

    async fn error_of(res: Response) -> String {
        body_json(res).await["error"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn anything_echoes_the_request() {
        let req = http::Request::post("/anything/a/b?x=1&name=J%C3%BCrgen+S&x=2&flag&empty=&bad=%zz%4")
            .header("X-Custom", "one")
            .header("x-custom", "two")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("héllo"))
            .unwrap();
        let body = body_json(Echo.call(req).await).await;
        assert_eq!(body["method"], "POST");
        assert_eq!(body["path"], "/anything/a/b");
        assert_eq!(body["query"], "x=1&name=J%C3%BCrgen+S&x=2&flag&empty=&bad=%zz%4");
        assert_eq!(body["args"], json!({"x": "2", "name": "Jürgen S", "flag": "", "empty": "", "bad": "%zz%4"}));
        assert_eq!(body["headers"]["x-custom"], "one, two");
        assert_eq!(body["headers"]["content-type"], "text/plain");
        assert_eq!(body["body"], "héllo");
        assert_eq!(body["body_encoding"], "utf-8");
        assert_eq!(body["body_bytes"], 6);
    }

    #[tokio::test]
    async fn anything_without_query_or_body() {
        let res = Echo.call(http::Request::delete("/anything").body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let body = body_json(res).await;
        assert_eq!(body["method"], "DELETE");
        assert_eq!(body["path"], "/anything");
        assert_eq!(body["query"], Value::Null);
        assert_eq!(body["args"], json!({}));
        assert_eq!(body["headers"], json!({}));
        assert_eq!(body["body"], "");
        assert_eq!(body["body_bytes"], 0);
    }

    #[tokio::test]
    async fn anything_base64_encodes_binary_bodies() {
        let req = http::Request::put("/anything").body(Body::from(vec![0xff, 0x00, 0xfe, b'a'])).unwrap();
        let body = body_json(Echo.call(req).await).await;
        assert_eq!(body["body"], "/wD+YQ==");
        assert_eq!(body["body_encoding"], "base64");
        assert_eq!(body["body_bytes"], 4);
    }

    #[tokio::test]
    async fn anything_redacts_credentials() {
        let req = http::Request::get("/anything")
            .header(header::AUTHORIZATION, "Basic c2VjcmV0OnNlY3JldA==")
            .header(header::PROXY_AUTHORIZATION, "Bearer proxy-secret")
            .header(header::COOKIE, "session=cookie-secret")
            .header(header::COOKIE, "other=cookie-secret-2")
            .header("x-visible", "shown")
            .body(Body::empty())
            .unwrap();
        let raw = body_bytes(Echo.call(req).await).await;
        let text = std::str::from_utf8(&raw).unwrap();
        for secret in ["c2VjcmV0", "proxy-secret", "cookie-secret"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let body: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(body["headers"]["authorization"], "[redacted]");
        assert_eq!(body["headers"]["proxy-authorization"], "[redacted]");
        assert_eq!(body["headers"]["cookie"], "[redacted]");
        assert_eq!(body["headers"]["x-visible"], "shown");
    }

    #[tokio::test]
    async fn anything_refuses_bodies_over_1_mib() {
        let at_limit = http::Request::post("/anything").body(Body::from(vec![b'a'; ANYTHING_LIMIT])).unwrap();
        let body = body_json(Echo.call(at_limit).await).await;
        assert_eq!(body["body_bytes"], ANYTHING_LIMIT);
        let over = http::Request::post("/anything").body(Body::from(vec![b'a'; ANYTHING_LIMIT + 1])).unwrap();
        let res = Echo.call(over).await;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error_of(res).await.contains("1048576"));
    }

    #[tokio::test]
    async fn status_answers_with_the_requested_code() {
        let res = Echo.call(get("/status/418")).await;
        assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(body_bytes(res).await, "418 I'm a teapot\n");
        let res = Echo.call(http::Request::post("/status/503").body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_bytes(res).await, "503 Service Unavailable\n");
        let res = Echo.call(get("/status/299")).await;
        assert_eq!(res.status().as_u16(), 299);
        assert_eq!(body_bytes(res).await, "299\n");
        for (code, expected) in [("200", 200), ("599", 599)] {
            assert_eq!(Echo.call(get(&format!("/status/{code}"))).await.status().as_u16(), expected);
        }
        for empty in [204, 205, 304] {
            let res = Echo.call(get(&format!("/status/{empty}"))).await;
            assert_eq!(res.status().as_u16(), empty);
            assert!(res.headers().get(header::CONTENT_TYPE).is_none());
            assert_eq!(body_bytes(res).await, "", "{empty}");
        }
    }

    #[tokio::test]
    async fn status_rejects_codes_outside_200_to_599() {
        for bad in
            ["100", "101", "199", "600", "999", "1000", "0", "abc", "", "-200", "+200", "20x", "99999999999999999999"]
        {
            let res = Echo.call(get(&format!("/status/{bad}"))).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
            let error = error_of(res).await;
            assert!(error.contains("status code") && error.contains("200 to 599"), "{bad}: {error}");
        }
    }

    #[tokio::test]
    async fn delay_waits_then_answers() {
        let start = StdInstant::now();
        let res = Echo.call(get("/delay/150")).await;
        let elapsed = start.elapsed();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await, json!({"delay_ms": 150}));
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_eq!(body_json(Echo.call(get("/delay/0")).await).await, json!({"delay_ms": 0}));
    }

    #[tokio::test]
    async fn delay_is_capped_at_10_seconds() {
        assert_eq!(bounded("10000", "delay in milliseconds", 0, MAX_DELAY_MS).ok(), Some(10_000));
        for bad in ["10001", "999999", "x", "1.5"] {
            let start = StdInstant::now();
            let res = Echo.call(get(&format!("/delay/{bad}"))).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(start.elapsed() < Duration::from_secs(1), "a refused delay must not wait");
            assert!(error_of(res).await.contains("0 to 10000"));
        }
    }

    #[tokio::test]
    async fn bytes_streams_the_pattern_in_64_kib_chunks() {
        let n = 3 * CHUNK + 100;
        let res = Echo.call(get(&format!("/bytes/{n}"))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(res.headers()[header::CONTENT_LENGTH], n.to_string().as_str());
        assert_eq!(hyper::body::Body::size_hint(res.body()).exact(), Some(n as u64));
        let frames = frames(res, StdInstant::now()).await;
        let sizes: Vec<usize> = frames.iter().map(|(data, _)| data.len()).collect();
        assert_eq!(sizes, [CHUNK, CHUNK, CHUNK, 100]);
        let all: Vec<u8> = frames.into_iter().flat_map(|(data, _)| data.to_vec()).collect();
        assert!(all.iter().enumerate().all(|(i, b)| *b == (i % 256) as u8));
    }

    #[tokio::test]
    async fn bytes_edge_cases() {
        let res = Echo.call(get("/bytes/0")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_LENGTH], "0");
        assert_eq!(body_bytes(res).await.len(), 0);
        let res = Echo.call(get("/bytes/5")).await;
        assert_eq!(body_bytes(res).await, &[0u8, 1, 2, 3, 4][..]);
        // The cap is accepted without building 100 MiB: only the size is checked here.
        let res = Echo.call(get(&format!("/bytes/{MAX_BYTES}"))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_LENGTH], MAX_BYTES.to_string().as_str());
        for bad in [format!("{}", MAX_BYTES + 1), "lots".to_string(), "-1".to_string()] {
            let res = Echo.call(get(&format!("/bytes/{bad}"))).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(error_of(res).await.contains("byte count"));
        }
    }

    #[tokio::test]
    async fn stream_sends_json_lines_as_separate_frames() {
        let res = Echo.call(get("/stream/5")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(header::CONTENT_LENGTH).is_none());
        assert_eq!(hyper::body::Body::size_hint(res.body()).exact(), None, "a known size would not be chunked");
        let frames = frames(res, StdInstant::now()).await;
        assert_eq!(frames.len(), 5);
        for (i, (data, _)) in frames.iter().enumerate() {
            assert_eq!(data, format!("{{\"id\": {i}}}\n").as_bytes());
            let line: Value = serde_json::from_slice(data).unwrap();
            assert_eq!(line, json!({ "id": i }));
        }
        assert!(body_bytes(Echo.call(get("/stream/0")).await).await.is_empty());
        assert_eq!(frames_count(Echo.call(get("/stream/1000")).await).await, 1000);
        let res = Echo.call(get("/stream/1001")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(error_of(res).await.contains("0 to 1000"));
    }

    async fn frames_count(res: Response) -> usize {
        frames(res, StdInstant::now()).await.len()
    }

    #[tokio::test]
    async fn sse_sends_spaced_events() {
        let start = StdInstant::now();
        let res = Echo.call(get("/sse/4")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(res.headers().get(header::CONTENT_LENGTH).is_none());
        let frames = frames(res, start).await;
        let texts: Vec<&[u8]> = frames.iter().map(|(data, _)| &data[..]).collect();
        assert_eq!(
            texts,
            [
                &b"id: 0\ndata: {\"id\": 0}\n\n"[..],
                b"id: 1\ndata: {\"id\": 1}\n\n",
                b"id: 2\ndata: {\"id\": 2}\n\n",
                b"id: 3\ndata: {\"id\": 3}\n\n"
            ]
        );
        assert!(frames[0].1 < Duration::from_millis(80), "the first event is immediate: {:?}", frames[0].1);
        for pair in frames.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!(gap >= Duration::from_millis(80), "events arrived {gap:?} apart");
            assert!(gap < Duration::from_millis(1000), "events arrived {gap:?} apart");
        }
        assert!(body_bytes(Echo.call(get("/sse/0")).await).await.is_empty());
        assert_eq!(Echo.call(get("/sse/1001")).await.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn panic_becomes_a_500_inside_a_stack() {
        let service = strata::http::Stack::new().serve_arc(app().endpoint);
        let res = service.call(get("/panic")).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = body_bytes(res).await;
        assert!(!std::str::from_utf8(&text).unwrap().contains("/panic was requested"), "panic text leaked");
        // The app still answers after a panic.
        assert_eq!(service.call(get("/status/200")).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn streaming_routes_are_get_only() {
        for uri in ["/bytes/1", "/stream/1", "/sse/1"] {
            let res = Echo.call(http::Request::post(uri).body(Body::empty()).unwrap()).await;
            assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{uri}");
            assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
            assert!(error_of(res).await.contains("POST"));
        }
        assert_eq!(Echo.call(http::Request::head("/bytes/1").body(Body::empty()).unwrap()).await.status(), 200);
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        for uri in ["/", "/anythingelse", "/status", "/status/", "/status/200/x", "/bytes", "/panic/x", "/nope/1"] {
            let res = Echo.call(get(uri)).await;
            if uri == "/status/" {
                // An empty number is still the status route, with a bad parameter.
                assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri}");
                continue;
            }
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{uri}");
            assert!(error_of(res).await.contains("no route"), "{uri}");
        }
    }

    #[test]
    fn routes_are_matched_by_whole_segments() {
        assert_eq!(route("/anything"), Some(Route::Anything));
        assert_eq!(route("/anything/"), Some(Route::Anything));
        assert_eq!(route("/anything/x/y"), Some(Route::Anything));
        assert_eq!(route("/anythingx"), None);
        assert_eq!(route("/sse/3"), Some(Route::Sse("3")));
        assert_eq!(route("/sse/3/"), None);
        assert_eq!(route(""), None);
    }

    #[test]
    fn query_components_decode_like_forms() {
        assert_eq!(decode_component("a+b%20c%2Bd"), "a b c+d");
        assert_eq!(decode_component("%"), "%");
        assert_eq!(decode_component("%4"), "%4");
        // A sign is not a hex digit, so "%+1" is no escape (and the `+` is still a space).
        assert_eq!(decode_component("%+1x"), "% 1x");
        assert_eq!(decode_component("%ff"), "\u{fffd}");
        assert_eq!(decode_component("%E2%9C%93"), "✓");
    }
}
