//! The cost of the tower bridges, each against the plain strata call it replaces.
//!
//! - `tower_in_strata`: one request through a stack of one layer, written as a strata middleware
//!   and as a tower layer (`tower::layer::util::Identity`, which only hands the request to the
//!   `NextService`) placed with `strata::tower::layer`. The difference is the bridge: the slot in
//!   the request's extensions, the clone of the tower service and its `poll_ready`.
//! - `strata_in_tower`: one request to a tower service, called directly and behind an empty strata
//!   stack used as a tower layer. The difference is the stack's dispatch, the body conversions and
//!   the slot.
//!
//! Run with `cargo bench -p strata-http --bench tower`.

use std::convert::Infallible;
use std::hint::black_box;

use criterion::Criterion;
use strata::http::{Body, Next, Request, Response, Stack};
use strata::{Middleware, from_fn};
use tokio::runtime::Runtime;
use tower::{ServiceExt, service_fn};

/// A strata middleware that does nothing but pass the request on.
struct PassThrough;

impl Middleware<Request, Response> for PassThrough {
    async fn handle(&self, req: Request, next: Next) -> Response {
        next.run(req).await
    }
}

async fn app(_req: Request) -> Response {
    Response::new(Body::from("hello"))
}

fn tower_in_strata(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("tower_in_strata");
    let native = Stack::new().with(PassThrough).serve(app);
    let bridged =
        Stack::new().with_layer(strata::tower::layer("identity", tower::layer::util::Identity::new())).serve(app);
    let baseline = Stack::new().with(from_fn(|req: Request, next: Next| next.run(req))).serve(app);
    for (name, service) in [("strata_layer", native), ("from_fn_layer", baseline), ("tower_layer", bridged)] {
        group.bench_function(name, |b| {
            b.to_async(rt).iter(|| {
                let service = service.clone();
                async move { black_box(service.call(Request::new(Body::empty())).await) }
            })
        });
    }
    group.finish();
}

fn strata_in_tower(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("strata_in_tower");
    let inner = service_fn(|_req: Request| async { Ok::<_, Infallible>(Response::new(Body::from("hello"))) });
    group.bench_function("tower_service", |b| {
        b.to_async(rt).iter(|| async move { black_box(inner.oneshot(Request::new(Body::empty())).await) })
    });
    let behind_stack = tower::Layer::layer(&Stack::new().into_tower_layer(), inner);
    group.bench_function("behind_empty_stack", |b| {
        b.to_async(rt).iter(|| {
            let service = behind_stack.clone();
            async move { black_box(service.oneshot(http::Request::new(Body::empty())).await) }
        })
    });
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut c = Criterion::default().configure_from_args();
    tower_in_strata(&mut c, &rt);
    strata_in_tower(&mut c, &rt);
    c.final_summary();
}
