//! Instruction counts of the onion, for measurements that a busy machine does not disturb.
//!
//! Runs ITERATIONS requests through LAYERS pass-through layers on a current-thread runtime (with a
//! third argument `tower`, each layer is `tower::layer::util::Identity` placed with
//! `strata::tower::layer`: the bridge's cost beside a native layer's). Under
//! callgrind the instruction count is the same run after run, so the per-layer cost is
//! `(Ir(32 layers) − Ir(0 layers)) / (32 × ITERATIONS)`:
//!
//! ```sh
//! cargo build --release -p strata-http --example layer_cost
//! for n in 0 32; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n target/release/examples/layer_cost $n 20000 2>&1 | grep Collected
//! done
//! ```

use strata::Middleware;
use strata::http::{Body, Next, Request, Response, Stack};

/// A layer that only passes the request on.
struct Pass;

impl Middleware<Request, Response> for Pass {
    async fn handle(&self, req: Request, next: Next) -> Response {
        next.run(req).await
    }
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let (Some(Ok(layers)), Some(Ok(iterations))) = (args.next(), args.next()) else {
        eprintln!("usage: layer_cost LAYERS ITERATIONS");
        std::process::exit(2);
    };
    let tower = std::env::args().nth(3).is_some_and(|a| a == "tower");
    let stack = (0..layers).fold(Stack::new(), |stack, _| {
        if tower {
            stack.with_layer(strata::tower::layer("identity", tower::layer::util::Identity::new()))
        } else {
            stack.with(Pass)
        }
    });
    let service = stack.serve(|_req: Request| async { Response::new(Body::empty()) });
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async {
        for _ in 0..iterations {
            let req = http::Request::builder().uri("/").body(Body::empty()).expect("a valid request");
            std::hint::black_box(service.call(req).await);
        }
    });
}
