//! Instruction counts of the classic stack, for measurements that a busy machine does not disturb.
//!
//! Runs ITERATIONS requests, as `bench/load.sh` sends them (`GET /status/200` with an allowed
//! `Origin` and alice's Basic credentials), through one VARIANT of the classic stack on a
//! current-thread runtime, reading each response body to its end (the access log writes its line
//! there) and dropping it, as a server does. The access log writes JSON to a file in the temp dir
//! through its writer thread; callgrind counts every thread, so that thread's work is in the figure.
//!
//! Variants: `empty`, `pass8` (eight layers that only pass the request on: the core's own cost
//! per layer is an eighth of its difference with `empty`), `classic` (timing → request_id →
//! access_log → cors → basic_auth),
//! `classic-nolog`, and each layer alone: `timing`, `request_id`, `access_log`, `cors`,
//! `basic_auth`.
//!
//! The first request verifies alice's argon2id hash (tens of millions of instructions), so the cost
//! of one request is the difference of two runs: `(Ir(N2) − Ir(N1)) / (N2 − N1)`.
//! `bench/instructions.sh` does exactly that for every variant:
//!
//! ```sh
//! cargo build --release -p strata-http --example classic_cost
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out target/release/examples/classic_cost classic 2000
//! callgrind_annotate /tmp/cg.out | head -60
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, header};
use http_body_util::BodyExt;
use strata::Middleware;
use strata::http::{Body, ConnectionInfo, Next, Request, Response, Stack};
use strata::middleware::{AccessLog, BasicAuth, Cors, LogFormat, RequestId, Timing};

/// alice / wonderland at `strata hash-password`'s cost, the hash of `examples/classic.toml`.
const ALICE: &str = "$argon2id$v=19$m=19456,t=2,p=1$LLkVIMhQoh6WuT+JmOktrA$MLzwBru1zEjIK1UrLGtwGlyXmLnCg1cOwWR76SSFm08";

fn cors() -> Cors {
    Cors::builder()
        .allow_origins(["http://localhost:5173", "https://*.example.com"].map(HeaderValue::from_static))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers(["x-request-id", "x-response-time"].map(HeaderName::from_static))
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
        .build()
        .expect("a valid CORS config")
}

fn auth() -> BasicAuth {
    BasicAuth::builder().realm("tasks").user("alice", ALICE).build().expect("a valid auth config")
}

fn log() -> AccessLog {
    let path = std::env::temp_dir().join(format!("strata-classic-cost-{}.log", std::process::id()));
    AccessLog::builder().format(LogFormat::Json).to_file(path).build().expect("a writable access log")
}

/// A layer that only passes the request on: what the core itself costs per layer.
struct PassThrough;

impl Middleware<Request, Response> for PassThrough {
    async fn handle(&self, req: Request, next: Next) -> Response {
        next.run(req).await
    }
}

/// The variants with an access log, which `main` opens (and flushes at the end).
const LOGGED: [&str; 2] = ["classic", "access_log"];

fn stack(variant: &str, log: Option<AccessLog>) -> Option<Stack> {
    let stack = Stack::new();
    Some(match variant {
        "empty" => stack,
        "pass8" => (0..8).fold(stack, |s, _| s.with(PassThrough)),
        "classic" => stack.with(Timing::default()).with(RequestId::default()).with(log?).with(cors()).with(auth()),
        "classic-nolog" => stack.with(Timing::default()).with(RequestId::default()).with(cors()).with(auth()),
        "timing" => stack.with(Timing::default()),
        "request_id" => stack.with(RequestId::default()),
        "access_log" => stack.with(log?),
        "cors" => stack.with(cors()),
        "basic_auth" => stack.with(auth()),
        _ => return None,
    })
}

fn request() -> Request {
    let mut req = http::Request::builder()
        .uri("/status/200")
        .header(header::HOST, HeaderValue::from_static("127.0.0.1:8080"))
        .header(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6d29uZGVybGFuZA=="))
        .header(header::ORIGIN, HeaderValue::from_static("http://localhost:5173"))
        .body(Body::empty())
        .expect("a valid request");
    // The gateway's server sets it for stacks with an access log; set it for every variant alike.
    let addr: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
    req.extensions_mut().insert(ConnectionInfo::new(addr, addr));
    req
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(variant), Some(Ok(iterations))) = (args.next(), args.next().map(|n| n.parse::<usize>())) else {
        eprintln!("usage: classic_cost VARIANT ITERATIONS");
        std::process::exit(2);
    };
    let log = LOGGED.contains(&variant.as_str()).then(log);
    let Some(stack) = stack(&variant, log.clone()) else {
        eprintln!("unknown variant `{variant}`");
        std::process::exit(2);
    };
    let service = stack.serve(|_req: Request| async { Response::new(Body::from("ok\n")) });
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async {
        for _ in 0..iterations {
            let res = service.call(request()).await;
            assert_eq!(res.status(), 200, "the request must take the intended path");
            let body = res.into_body().collect().await.expect("an in-memory body");
            std::hint::black_box(body);
        }
    });
    // The writer thread does not outlive the process: the last lines are written before it exits.
    if let Some(log) = log {
        log.flush();
    }
}
