//! What a rate-limit check costs, and that the memory store stays bounded.
//!
//! | case | what one iteration does |
//! | --- | --- |
//! | `memory_check/one_key` | hash a client address, one GCRA check in the memory store (the same key every time: the steady state of one busy client) |
//! | `memory_check/distinct_keys` | the same over 1 000 000 distinct addresses in turn (map misses, inserts, sweeps) |
//! | `layer/empty_stack` | one request through an empty stack to a 200 endpoint |
//! | `layer/rate_limit` | the same request through a `rate_limit` layer (memory store, quota fields on the response) |
//!
//! The target for `memory_check/one_key` is 100 ns or less. After criterion's output the bench
//! pushes 1 000 000 distinct keys through a store whose keys go idle after 10 ms and prints how
//! many it holds at the end: bounded by the live keys, not by the keys ever seen.
//!
//! Run with `cargo bench -p strata-http --bench rate_limit`.

use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use http::StatusCode;
use strata::http::{Body, ConnectionInfo, Request, Stack, response};
use strata::middleware::rate_limit::gcra::{Gcra, MonotonicClock};
use strata::middleware::rate_limit::memory_store::MemoryStore;
use strata::middleware::rate_limit::{Quota, RateLimit};

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (i & 0x00FF_FFFF)))
}

fn memory_check(c: &mut Criterion) {
    // Limits high enough to admit everything: the admitted path is the one every request pays.
    let quotas = [Gcra::new(1_000_000, Duration::from_secs(1), 1_000_000).unwrap()];
    let hasher = RandomState::new();
    let store = MemoryStore::new(1_000_000, Arc::new(MonotonicClock::new()));
    let client = ip(7);
    c.bench_function("rate_limit/memory_check/one_key", |b| {
        b.iter(|| black_box(store.check(hasher.hash_one(black_box(client)), &quotas)))
    });
    let store = MemoryStore::new(1_000_000, Arc::new(MonotonicClock::new()));
    let mut i = 0u32;
    c.bench_function("rate_limit/memory_check/distinct_keys", |b| {
        b.iter(|| {
            i = (i + 1) % 1_000_000;
            black_box(store.check(hasher.hash_one(ip(i)), &quotas))
        })
    });
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let endpoint = |_req: Request| async { response::text(StatusCode::OK, "ok") };
    let request = || {
        let mut req = Request::new(Body::default());
        req.extensions_mut()
            .insert(ConnectionInfo::new("10.0.0.7:40000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap()));
        req
    };
    let empty = Stack::new().serve(endpoint);
    c.bench_function("rate_limit/layer/empty_stack", |b| b.iter(|| rt.block_on(empty.call(request()))));
    let limit = RateLimit::builder().quota(Quota::per_second(1_000_000)).build().unwrap();
    let limited = Stack::new().with(limit).serve(endpoint);
    let res = rt.block_on(limited.call(request()));
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("ratelimit"), "the layer ran");
    c.bench_function("rate_limit/layer/rate_limit", |b| b.iter(|| rt.block_on(limited.call(request()))));
}

fn bounded_memory() {
    // 100/s with a burst of 1: a key is idle 10 ms after its request.
    let quotas = [Gcra::new(100, Duration::from_secs(1), 1).unwrap()];
    let hasher = RandomState::new();
    let store = MemoryStore::new(1_000_000, Arc::new(MonotonicClock::new()));
    let started = Instant::now();
    for i in 0..1_000_000u32 {
        store.check(hasher.hash_one(ip(i)), &quotas);
    }
    let elapsed = started.elapsed();
    println!(
        "\nbounded memory: 1000000 distinct keys in {elapsed:.2?} ({:.0} keys/s); the store holds {} keys at the end (cap {})",
        1e6 / elapsed.as_secs_f64(),
        store.len(),
        store.max_keys()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    memory_check(&mut c);
    layer(&mut c);
    c.final_summary();
    bounded_memory();
}
