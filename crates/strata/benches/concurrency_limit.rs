//! What a `concurrency_limit` costs per request when it admits (the path every request pays).
//!
//! | case | what one iteration does |
//! | --- | --- |
//! | `layer/empty_stack` | one request (with `ConnectionInfo`) through an empty stack to a 200 endpoint, body read to its end |
//! | `layer/global` | the same through a global `concurrency_limit` (take and return one permit; the body is wrapped) |
//! | `layer/client_ip` | the same keyed on the client address (a keyed hash, a shard lock in and out, the key's entry made and removed) |
//! | `layer/global_empty_body` | a `204` with no body through the global limit: the permit returns without wrapping |
//!
//! Run with `cargo bench -p strata-http --bench concurrency_limit`.

use criterion::Criterion;
use http::StatusCode;
use http_body_util::BodyExt;
use strata::http::{Body, ConnectionInfo, Request, Service, Stack, response};
use strata::middleware::ConcurrencyLimit;
use strata::middleware::key::Key;

fn request() -> Request {
    let mut req = Request::new(Body::default());
    req.extensions_mut()
        .insert(ConnectionInfo::new("10.0.0.7:40000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap()));
    req
}

/// One request through `service`, its body read to the end (which returns the permit).
async fn round_trip(service: &Service) -> usize {
    let res = service.call(request()).await;
    res.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let endpoint = |_req: Request| async { response::text(StatusCode::OK, "ok") };
    let limit = |key: Key| ConcurrencyLimit::builder().max(64).key(key).build().unwrap();

    let empty = Stack::new().serve(endpoint);
    c.bench_function("concurrency_limit/layer/empty_stack", |b| b.iter(|| rt.block_on(round_trip(&empty))));
    let global = Stack::new().with(limit(Key::Global)).serve(endpoint);
    assert_eq!(rt.block_on(round_trip(&global)), 2, "admitted");
    c.bench_function("concurrency_limit/layer/global", |b| b.iter(|| rt.block_on(round_trip(&global))));
    let per_client = Stack::new().with(limit(Key::ClientIp)).serve(endpoint);
    assert_eq!(rt.block_on(round_trip(&per_client)), 2, "admitted");
    c.bench_function("concurrency_limit/layer/client_ip", |b| b.iter(|| rt.block_on(round_trip(&per_client))));
    let no_body =
        Stack::new().with(limit(Key::Global)).serve(|_req: Request| async { response::status(StatusCode::NO_CONTENT) });
    c.bench_function("concurrency_limit/layer/global_empty_body", |b| b.iter(|| rt.block_on(round_trip(&no_body))));
    c.final_summary();
}
