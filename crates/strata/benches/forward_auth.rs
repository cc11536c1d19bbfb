//! What a `forward_auth` layer costs per request, without the network: the auth service is an
//! in-process closure [`HttpClient`](strata::http::client::HttpClient), so the figures are the
//! layer's own work (building the auth request, reading the answer, copying headers, the cache).
//!
//! | case | what one iteration does |
//! | --- | --- |
//! | `forward_auth/empty_stack` | one request (`Authorization`, `Cookie`, `Host`, a client address) through an empty stack to a 200 endpoint |
//! | `forward_auth/ask` | the same through a `forward_auth` layer without a cache: an auth request built and sent to the closure, which admits it with a user and a group header; both copied onto the request |
//! | `forward_auth/cache_hit` | the same with `cache_ttl = 1m`, warm: one HMAC-SHA256 key and a shard lookup, the client is not called |
//!
//! Subtract `empty_stack` from the others for the layer's cost. Run with
//! `cargo bench -p strata-http --bench forward_auth`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::Criterion;
use http::{HeaderName, StatusCode};
use strata::http::{AuthenticatedUser, Body, BoxError, ConnectionInfo, Request, Service, Stack, response};
use strata::middleware::forward_auth::ForwardAuth;

fn request() -> Request {
    let mut req = http::Request::builder()
        .uri("/orders/7?expand=items")
        .header("host", "shop.example")
        .header("authorization", "Bearer 3f9a1c7e2b8d4f60a5e1c9b7d3f2a8e4")
        .header("cookie", "session=8c1e5f2a9b7d3c6e")
        .body(Body::default())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectionInfo::new("10.0.0.7:40000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap()));
    req
}

/// A stack with a `forward_auth` layer whose service admits everything as alice, counting calls.
fn stack(cache_ttl: Duration, calls: Arc<AtomicUsize>) -> Service {
    let service = move |_req: http::Request<Body>| {
        calls.fetch_add(1, Ordering::Relaxed);
        async {
            let res = http::Response::builder()
                .header("x-auth-user", "alice")
                .header("x-auth-groups", "admin")
                .body(Body::empty())
                .unwrap();
            Ok::<_, BoxError>(res)
        }
    };
    let auth = ForwardAuth::builder()
        .address("http://127.0.0.1:9091/verify".parse().unwrap())
        .auth_response_headers([HeaderName::from_static("x-auth-groups")])
        .user_header(HeaderName::from_static("x-auth-user"))
        .cache_ttl(cache_ttl)
        .client(Arc::new(service))
        .build()
        .unwrap();
    Stack::new().with(auth).serve(endpoint)
}

async fn endpoint(_req: Request) -> strata::http::Response {
    response::text(StatusCode::OK, "ok")
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    // The time driver: the layer puts its timeout around each auth request.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();

    let empty = Stack::new().serve(endpoint);
    c.bench_function("forward_auth/empty_stack", |b| b.iter(|| rt.block_on(empty.call(request()))));

    let calls = Arc::new(AtomicUsize::new(0));
    let asking = stack(Duration::ZERO, calls.clone());
    let res = rt.block_on(asking.call(request()));
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.extensions().get::<AuthenticatedUser>().is_some(), "the layer admitted with a user");
    assert_eq!(calls.load(Ordering::Relaxed), 1, "the service was asked");
    c.bench_function("forward_auth/ask", |b| b.iter(|| rt.block_on(asking.call(request()))));

    let calls = Arc::new(AtomicUsize::new(0));
    let cached = stack(Duration::from_secs(60), calls.clone());
    rt.block_on(cached.call(request()));
    rt.block_on(cached.call(request()));
    assert_eq!(calls.load(Ordering::Relaxed), 1, "the second request was a cache hit");
    c.bench_function("forward_auth/cache_hit", |b| b.iter(|| rt.block_on(cached.call(request()))));
    assert_eq!(calls.load(Ordering::Relaxed), 1, "every measured request was a cache hit");

    c.final_summary();
}
