//! What each production middleware costs per request: one request through
//! `Stack::new().with(X).serve(endpoint)`, response body read to its end, minus the same request
//! through the empty stack with the same endpoint.
//!
//! Every middleware is measured on the path the load run (`bench/load.sh`) drives, plus the other
//! path worth knowing where one exists:
//!
//! | case | request | endpoint answers |
//! | --- | --- | --- |
//! | `timing` | `GET` | `200`, 7-byte text |
//! | `request_id` | `GET` (no incoming id: a UUID v4 and a new trace context are made) | same |
//! | `access_log` | `GET` (a JSON line formatted and queued; the writer thread writes to `io::sink()`) | same |
//! | `cors/actual` | `GET` + allowed `Origin` | same |
//! | `cors/preflight` | `OPTIONS` + `Origin` + `Access-Control-Request-*` (answered by the layer) | not reached |
//! | `basic_auth/cached` | `GET` + `Authorization: Basic` of an argon2id user, credential cache warm | same |
//! | `basic_auth/cold` | the same, cache disabled: one argon2id verification per request | same |
//! | `errors/pass` | `GET` | same (left alone) |
//! | `errors/render-500` | `GET` | empty `500`, rendered as text |
//! | `compression/skip-small` | `GET` + `Accept-Encoding: gzip` | 7 bytes, below `min_size` |
//! | `compression/gzip-16k` | `GET` + `Accept-Encoding: gzip` | 16 KiB of text, gzipped at level 6 |
//! | `classic` | `GET` + `Origin` + `Authorization` through all of timing → request_id → access_log → cors → basic_auth (cached) | 7-byte text |
//! | `classic/timing-total-only` | the same, `timing` with `per_layer = false` | same |
//! | `classic/no-access-log` | the same without `access_log` | same |
//!
//! Each request shape has its own empty-stack baseline (`baseline/SHAPE-REPLY`), so building the
//! request, the endpoint and reading the body cancel out of every figure. After criterion's output
//! the bench prints a summary of cost = t(case) − t(baseline), from the median and from the fastest
//! of the samples criterion analysed (timed through `iter_custom`, so nothing is measured twice),
//! the classic stack against the sum of its parts, the access log's dropped lines (a dropped line
//! would be work not done) and the 1-minute load average.
//!
//! Run with `cargo bench -p strata-http --bench middleware` (about 80 s plus the build). Filters work as
//! usual (`-- cors`); a case whose baseline was filtered out shows `-` in the summary.
//! `-- --test` runs every case once, after the same checks that each case takes the intended path.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use strata::http::{Body, Request, Response, Service, Stack, response};
#[cfg(feature = "compression")]
use strata::middleware::Compression;
use strata::middleware::{AccessLog, BasicAuth, Cors, Errors, LogFormat, RequestId, Timing};
use tokio::runtime::Runtime;

/// alice / wonderland at `strata hash-password`'s cost (argon2id, m=19456 KiB, t=2, p=1), the hash
/// of `examples/classic.toml`.
const ALICE: &str = "$argon2id$v=19$m=19456,t=2,p=1$LLkVIMhQoh6WuT+JmOktrA$MLzwBru1zEjIK1UrLGtwGlyXmLnCg1cOwWR76SSFm08";
/// `alice:wonderland` in Basic form.
const ALICE_BASIC: &str = "Basic YWxpY2U6d29uZGVybGFuZA==";
/// An origin the CORS layer allows (`examples/classic.toml`'s).
const ORIGIN: &str = "http://localhost:5173";
/// Criterion's sample count for the fast cases; the summary picks the measured samples out of the
/// warm-up calls with it (so it assumes no smaller `--sample-size` on the command line).
const SAMPLE_SIZE: usize = 50;
/// Fewer samples for a case that spends tens of milliseconds per request (argon2).
const COLD_SAMPLE_SIZE: usize = 10;

/// The request a case sends. Each shape has its own baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    /// `GET /status/200`, no headers.
    Plain,
    /// With an allowed `Origin`.
    Origin,
    /// A CORS preflight.
    Preflight,
    /// With Basic credentials.
    Auth,
    /// With `Accept-Encoding: gzip`.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    Gzip,
    /// With `Origin` and Basic credentials, as the load run sends.
    Classic,
}

impl Shape {
    fn request(self) -> Request {
        let builder = http::Request::builder().uri("/status/200");
        let builder = match self {
            Shape::Plain => builder,
            Shape::Origin => builder.header(header::ORIGIN, ORIGIN),
            Shape::Preflight => builder
                .method(Method::OPTIONS)
                .header(header::ORIGIN, ORIGIN)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type, authorization"),
            Shape::Auth => builder.header(header::AUTHORIZATION, ALICE_BASIC),
            Shape::Gzip => builder.header(header::ACCEPT_ENCODING, "gzip"),
            Shape::Classic => builder.header(header::ORIGIN, ORIGIN).header(header::AUTHORIZATION, ALICE_BASIC),
        };
        builder.body(Body::empty()).expect("a valid request")
    }
}

/// What the endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reply {
    /// `200` with `200 OK\n` as text, what the echo app's `/status/200` sends.
    Small,
    /// `200` with 16 KiB of text.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    Text16k,
    /// An empty `500`, as a failing upstream or app might give.
    Empty500,
}

/// 16 KiB of log-like text: repetitive enough to compress as real text does, not a single repeated byte.
fn text_16k() -> Bytes {
    let mut text = String::with_capacity(16 * 1024 + 64);
    let mut i = 0u32;
    while text.len() < 16 * 1024 {
        text.push_str(&format!("{i:05} GET /api/tasks/{} 200 {} ms the quick brown fox\n", i * 7 % 1000, i % 37));
        i += 1;
    }
    text.truncate(16 * 1024);
    Bytes::from(text)
}

fn serve(stack: Stack, reply: Reply) -> Service {
    match reply {
        Reply::Small => stack.serve(|_req: Request| async { response::text(StatusCode::OK, "200 OK\n") }),
        Reply::Text16k => {
            let text = text_16k();
            // A clone of `Bytes` is a reference count: the endpoint allocates no body.
            stack.serve(move |_req: Request| {
                let text = text.clone();
                async move { response::text(StatusCode::OK, text) }
            })
        }
        Reply::Empty500 => stack.serve(|_req: Request| async { response::status(StatusCode::INTERNAL_SERVER_ERROR) }),
    }
}

/// One benchmark: a stack (empty for a baseline), the request it gets and what its endpoint answers.
struct Case {
    id: String,
    shape: Shape,
    reply: Reply,
    service: Service,
    /// Checks, once before timing, that the response is the one this case means to measure.
    expect: fn(&Response),
    samples: usize,
}

fn baseline_id(shape: Shape, reply: Reply) -> String {
    format!("baseline/{shape:?}-{reply:?}").to_lowercase()
}

fn the_cors() -> Cors {
    // examples/classic.toml's `[middleware.cors]`.
    Cors::builder()
        .allow_origins([ORIGIN, "https://*.example.com"].map(HeaderValue::from_static))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers(["x-request-id", "x-response-time"].map(HeaderName::from_static))
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
        .build()
        .expect("a valid CORS config")
}

fn the_auth(cache: bool) -> BasicAuth {
    let builder = BasicAuth::builder().realm("tasks").user("alice", ALICE);
    let builder = if cache { builder } else { builder.cache_ttl(Duration::ZERO) };
    builder.build().expect("a valid basic_auth config")
}

fn ok(res: &Response) {
    assert_eq!(res.status(), StatusCode::OK);
}

fn has(res: &Response, name: &str) {
    assert!(res.headers().contains_key(name), "missing `{name}` in {:?}", res.headers());
}

/// examples/classic.toml's stack: timing → request_id → access_log → cors → basic_auth (cached).
fn classic(timing: Timing, access_log: Option<&AccessLog>) -> Stack {
    let stack = Stack::new().with(timing).with(RequestId::default());
    let stack = match access_log {
        Some(log) => stack.with(log.clone()),
        None => stack,
    };
    stack.with(the_cors()).with(the_auth(true))
}

/// `timing` with `per_layer = false`: `Server-Timing` carries only `total`.
fn timing_total_only() -> Timing {
    Timing::builder().per_layer(false).build().expect("a valid timing config")
}

/// The cases in the order they run: each baseline just before the cases it serves, so a machine
/// getting busier or quieter during the run shifts a case and its baseline alike.
fn cases(access_log: &AccessLog) -> Vec<Case> {
    let case = |id: &str, shape, reply, stack: Stack, expect: fn(&Response)| Case {
        id: id.to_string(),
        shape,
        reply,
        service: serve(stack, reply),
        expect,
        samples: SAMPLE_SIZE,
    };
    let baseline = |shape, reply, expect| case(&baseline_id(shape, reply), shape, reply, Stack::new(), expect);
    use Reply::*;
    use Shape::*;
    let mut cases = vec![
        baseline(Plain, Small, ok),
        case("timing", Plain, Small, Stack::new().with(Timing::default()), |r| {
            has(r, "x-response-time");
            has(r, "server-timing");
        }),
        case("request_id", Plain, Small, Stack::new().with(RequestId::default()), |r| {
            has(r, "x-request-id");
        }),
        case("access_log", Plain, Small, Stack::new().with(access_log.clone()), ok),
        case("errors/pass", Plain, Small, Stack::new().with(Errors::default()), ok),
        baseline(Plain, Empty500, |r| assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR)),
        case("errors/render-500", Plain, Empty500, Stack::new().with(Errors::default()), |r| {
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
            has(r, "content-type");
            assert_ne!(r.headers()[header::CONTENT_LENGTH], "0", "the 500 was not rendered");
        }),
        baseline(Origin, Small, ok),
        case("cors/actual", Origin, Small, Stack::new().with(the_cors()), |r| {
            assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], ORIGIN);
        }),
        baseline(Preflight, Small, ok),
        case("cors/preflight", Preflight, Small, Stack::new().with(the_cors()), |r| {
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            has(r, "access-control-allow-methods");
        }),
        baseline(Auth, Small, ok),
        case("basic_auth/cached", Auth, Small, Stack::new().with(the_auth(true)), ok),
    ];
    #[cfg(feature = "compression")]
    cases.extend([
        baseline(Gzip, Small, ok),
        case("compression/skip-small", Gzip, Small, Stack::new().with(Compression::default()), |r| {
            ok(r);
            assert!(!r.headers().contains_key(header::CONTENT_ENCODING), "a small body was compressed");
        }),
        baseline(Gzip, Text16k, ok),
        case("compression/gzip-16k", Gzip, Text16k, Stack::new().with(Compression::default()), |r| {
            assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        }),
    ]);
    cases.extend([
        baseline(Classic, Small, ok),
        case("classic", Classic, Small, classic(Timing::default(), Some(access_log)), |r| {
            ok(r);
            has(r, "x-response-time");
            has(r, "x-request-id");
            has(r, "access-control-allow-origin");
        }),
        // Two variants that say where the classic stack's time goes beyond the sum of its parts.
        case("classic/timing-total-only", Classic, Small, classic(timing_total_only(), Some(access_log)), |r| {
            let server_timing = r.headers()["server-timing"].to_str().unwrap_or_default();
            assert!(server_timing.starts_with("total;"), "per-layer metrics in {server_timing}");
        }),
        case("classic/no-access-log", Classic, Small, classic(Timing::default(), None), ok),
        Case {
            samples: COLD_SAMPLE_SIZE,
            ..case("basic_auth/cold", Auth, Small, Stack::new().with(the_auth(false)), ok)
        },
    ]);
    cases
}

/// One request, response body read to its end (the access log writes its line there, compression
/// compresses there); returns the body's length so the work cannot be optimised away.
async fn one(service: &Service, shape: Shape) -> usize {
    let res = service.call(black_box(shape.request())).await;
    let mut body = res.into_body();
    let mut sent = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("an in-memory body does not fail").into_data() {
            sent += data.len();
        }
    }
    sent
}

/// Per-request times (ns) of every timing loop criterion ran, by case, in call order.
type Samples = Rc<RefCell<BTreeMap<String, Vec<f64>>>>;

fn bench(c: &mut Criterion, rt: &Runtime, cases: &[Case], samples: &Samples) {
    for case in cases {
        // Every case once before timing: a wrong setup (a 401, an uncompressed body) would
        // otherwise be timed silently; it also warms the credential cache of `basic_auth/cached`.
        let res = rt.block_on(case.service.call(case.shape.request()));
        (case.expect)(&res);
        rt.block_on(async { drop(res.into_body().collect().await) });

        let mut group = c.benchmark_group("middleware");
        if case.samples != SAMPLE_SIZE {
            // Tens of milliseconds per request: a few samples of equal size, in bounded time.
            group.sample_size(case.samples).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(3));
        }
        let samples = samples.clone();
        group.bench_function(case.id.as_str(), |b| {
            // iter_custom so that the summary sees the times criterion analyses.
            b.to_async(rt).iter_custom(|iters| {
                let samples = samples.clone();
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(one(&case.service, case.shape).await);
                    }
                    let elapsed = start.elapsed();
                    let per_request = elapsed.as_nanos() as f64 / iters.max(1) as f64;
                    samples.borrow_mut().entry(case.id.clone()).or_default().push(per_request);
                    elapsed
                }
            });
        });
        group.finish();
    }
}

/// The measured samples of a case, sorted fastest first: criterion calls the timing loop for the
/// warm-up first and then exactly `n` times. `None` in `--test` mode or when the case did not run.
fn measured(samples: &BTreeMap<String, Vec<f64>>, id: &str, n: usize) -> Option<Vec<f64>> {
    let times = samples.get(id)?;
    if times.len() < n {
        return None;
    }
    let mut measured = times[times.len() - n..].to_vec();
    measured.sort_by(f64::total_cmp);
    Some(measured)
}

fn load_average() -> Option<String> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    loadavg.split_whitespace().next().map(str::to_string)
}

fn print_summary(cases: &[Case], samples: &Samples, access_log: &AccessLog) {
    let samples = samples.borrow();
    let stats = |id: &str, n: usize| measured(&samples, id, n).map(|m| (m[m.len() / 2], m[0]));
    if !cases.iter().any(|c| stats(&c.id, c.samples).is_some()) {
        return;
    }
    let ns = |v: f64| if v.abs() >= 100_000.0 { format!("{:.2} ms", v / 1e6) } else { format!("{v:.0}") };
    println!("\nper-middleware cost (ns per request; cost = case - baseline of the same request and endpoint)");
    println!("{:<24} {:>12} {:>12} {:>14} {:>14}", "case", "median", "baseline", "cost median", "cost fastest");
    for case in cases.iter().filter(|c| !c.id.starts_with("baseline/")) {
        let own = stats(&case.id, case.samples);
        let base = stats(&baseline_id(case.shape, case.reply), SAMPLE_SIZE);
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), ns);
        println!(
            "{:<24} {:>12} {:>12} {:>14} {:>14}",
            case.id,
            cell(own.map(|s| s.0)),
            cell(base.map(|s| s.0)),
            cell(own.zip(base).map(|(o, b)| o.0 - b.0)),
            cell(own.zip(base).map(|(o, b)| o.1 - b.1)),
        );
    }
    // The classic stack against the sum of its parts measured alone: what composing them adds.
    let cost = |id: &str| {
        let case = cases.iter().find(|c| c.id == id)?;
        let own = stats(&case.id, case.samples)?;
        let base = stats(&baseline_id(case.shape, case.reply), SAMPLE_SIZE)?;
        Some(own.0 - base.0)
    };
    let parts = ["timing", "request_id", "access_log", "cors/actual", "basic_auth/cached"];
    if let (Some(sum), Some(classic)) = (parts.iter().map(|id| cost(id)).sum::<Option<f64>>(), cost("classic")) {
        println!(
            "classic: {} ns as one stack, {} ns as the sum of its five parts measured alone",
            ns(classic),
            ns(sum)
        );
    }
    // A line dropped because the queue was full would make access_log look cheaper than it is.
    println!("access_log lines dropped (queue full): {}", access_log.dropped_lines());
    if let Some(load) = load_average() {
        println!("1-minute load average at the end: {load} (on a busy machine trust `cost fastest` more)");
    }
}

fn main() {
    // A current-thread runtime: a request never leaves its task (except argon2 in the cold case,
    // which runs on basic_auth's own verification threads), so no cross-thread wake-ups are timed.
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
    // One writer thread for every case that logs, writing to nowhere: the line is still formatted
    // and queued on the request path, which is what the request pays.
    let access_log = AccessLog::builder()
        .format(LogFormat::Json)
        .to_writer(std::io::sink())
        .build()
        .expect("spawning the access log writer thread");
    let cases = cases(&access_log);
    let samples = Samples::default();
    // Short windows keep ~20 benchmarks near 80 s on a shared 2-core machine; longer ones do not
    // help against its real noise, other work on the same cores.
    let mut c = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args();
    bench(&mut c, &rt, &cases, &samples);
    c.final_summary();
    print_summary(&cases, &samples, &access_log);
}
