//! Stack overhead: one request through `Service::call` with 0, 1, 8 and 32 pass-through layers.
//!
//! Both ways users write a layer are measured, since they compile to different futures: a struct
//! implementing [`Middleware`] with an `async fn handle`, and a closure wrapped by [`from_fn`]. Every
//! layer only calls `next.run(req).await`, and the endpoint returns a small in-memory response, so
//! what is timed is the onion itself: layer dispatch, boxing and the per-layer panic boundary.
//!
//! After the criterion groups the bench prints the per-layer cost, `(t32 - t0) / 32`, computed from
//! the same samples criterion analysed: once from the median time per request of the measured
//! samples, once from the fastest sample (the least disturbed by other work on a shared machine).
//! The target is at most 50 ns per pass-through layer; see `docs/benchmarks.md`.
//!
//! Run with `cargo bench -p strata-http --bench stack` (about a minute). Criterion's usual filters work,
//! e.g. `cargo bench -p strata-http --bench stack -- from_fn`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use strata::http::{Body, Next, Request, Response, Stack};
use strata::{Middleware, from_fn};
use tokio::runtime::Runtime;

/// The layer counts measured. 0 is the baseline the others are compared with; 32 is the slope's end.
const DEPTHS: [usize; 4] = [0, 1, 8, 32];
/// Criterion's sample count, also used to pick the measured samples out of the warm-up calls (so the
/// summary assumes no smaller `--sample-size` is given on the command line).
const SAMPLE_SIZE: usize = 50;
/// The budget for one pass-through layer (docs/benchmarks.md).
const TARGET_NS_PER_LAYER: f64 = 50.0;

/// A struct middleware that does nothing but pass the request on.
struct PassThrough;

impl Middleware<Request, Response> for PassThrough {
    async fn handle(&self, req: Request, next: Next) -> Response {
        next.run(req).await
    }
}

/// The two ways of writing a layer, each with the stack builder for `depth` pass-through layers.
#[derive(Clone, Copy)]
enum Style {
    Struct,
    FromFn,
}

impl Style {
    fn name(self) -> &'static str {
        match self {
            Style::Struct => "struct",
            Style::FromFn => "from_fn",
        }
    }

    fn service(self, depth: usize) -> strata::http::Service {
        let mut stack = Stack::new();
        for _ in 0..depth {
            stack = match self {
                Style::Struct => stack.with(PassThrough),
                Style::FromFn => stack.with(from_fn(|req: Request, next: Next| async move { next.run(req).await })),
            };
        }
        // A small response that costs no allocation, so the endpoint does not drown the layers.
        stack.serve(|_req: Request| async { Response::new(Body::from("ok")) })
    }
}

/// Per-request times (ns) of every timing loop criterion ran, by (style, depth), in call order.
type Samples = Rc<RefCell<BTreeMap<(&'static str, usize), Vec<f64>>>>;

fn bench_stack(c: &mut Criterion, rt: &Runtime, samples: &Samples) {
    for style in [Style::Struct, Style::FromFn] {
        let mut group = c.benchmark_group(format!("stack/{}", style.name()));
        for depth in DEPTHS {
            let service = style.service(depth);
            let samples = samples.clone();
            group.bench_with_input(BenchmarkId::new("layers", depth), &depth, |b, &depth| {
                // iter_custom rather than iter so the summary below can see the very times criterion
                // analyses, instead of timing the stack a second time.
                b.to_async(rt).iter_custom(|iters| {
                    let service = service.clone();
                    let samples = samples.clone();
                    async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(service.call(black_box(Request::new(Body::empty()))).await);
                        }
                        let elapsed = start.elapsed();
                        let per_request = elapsed.as_nanos() as f64 / iters.max(1) as f64;
                        samples.borrow_mut().entry((style.name(), depth)).or_default().push(per_request);
                        elapsed
                    }
                });
            });
        }
        group.finish();
    }
}

/// The measured samples, sorted fastest first: criterion calls the timing loop for the warm-up first
/// and then exactly `SAMPLE_SIZE` times, so the last `SAMPLE_SIZE` entries are the measured ones.
/// `None` when there are fewer, as in `--test` mode, where one cold iteration would mislead.
fn measured(times: &[f64]) -> Option<Vec<f64>> {
    if times.len() < SAMPLE_SIZE {
        return None;
    }
    let mut measured = times[times.len() - SAMPLE_SIZE..].to_vec();
    measured.sort_by(f64::total_cmp);
    Some(measured)
}

/// The system's 1-minute load average, when the platform tells it: on a shared machine it says how
/// much the figures above were disturbed.
fn load_average() -> Option<String> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    loadavg.split_whitespace().next().map(str::to_string)
}

fn print_summary(samples: &Samples) {
    let samples = samples.borrow();
    if !samples.values().any(|times| times.len() >= SAMPLE_SIZE) {
        return;
    }
    println!("\nstack overhead summary (median ns per request through Service::call)");
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>16} {:>16}",
        "style", "0", "1", "8", "32", "ns/layer median", "ns/layer fastest"
    );
    for style in [Style::Struct, Style::FromFn] {
        let sorted = |depth| samples.get(&(style.name(), depth)).and_then(|t| measured(t));
        let median = |depth| sorted(depth).map(|m| m[m.len() / 2]);
        let fastest = |depth| sorted(depth).map(|m| m[0]);
        let cell = |depth| median(depth).map_or_else(|| "-".to_string(), |ns| format!("{ns:.1}"));
        // Per-layer cost needs both ends of the slope; a filtered run may have measured only one.
        let per_layer = |t0: Option<f64>, t32: Option<f64>| match (t0, t32) {
            (Some(t0), Some(t32)) => {
                let per = (t32 - t0) / 32.0;
                let verdict = if per <= TARGET_NS_PER_LAYER { "ok" } else { "OVER" };
                format!("{per:.1} {verdict}")
            }
            _ => "-".to_string(),
        };
        println!(
            "{:<8} {:>9} {:>9} {:>9} {:>9} {:>16} {:>16}",
            style.name(),
            cell(0),
            cell(1),
            cell(8),
            cell(32),
            per_layer(median(0), median(32)),
            per_layer(fastest(0), fastest(32)),
        );
    }
    println!("per-layer cost = (t32 - t0) / 32; target <= {TARGET_NS_PER_LAYER} ns per pass-through layer");
    // Other work on the machine only ever adds time, so the fastest sample is the least disturbed.
    if let Some(load) = load_average() {
        println!("1-minute load average at the end: {load} (on a busy machine trust the `fastest` column more)");
    }
}

fn main() {
    // A current-thread runtime: a request through the stack never leaves its task, so this times
    // the stack and not cross-thread wake-ups.
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
    let samples = Samples::default();
    // Short windows keep the whole bench under a minute on a shared 2-core machine; longer ones do
    // not help against the real noise source there, which is other work on the same cores.
    let mut c = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
        .configure_from_args();
    bench_stack(&mut c, &rt, &samples);
    c.final_summary();
    print_summary(&samples);
}
