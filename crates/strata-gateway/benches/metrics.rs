//! What recording one request's duration costs, with the gateway's instruments and with the two
//! Prometheus crates it could have used, single-threaded and with two threads recording into the
//! same histogram at once (as two runtime workers serving one route do).
//!
//! - `strata`: `strata_gateway::metrics::Histogram`, fixed buckets, sharded per thread.
//! - `prometheus-client`: its `Histogram` (the same 22 buckets), a lock around the buckets.
//! - `metrics`: a `metrics::Histogram` handle of `metrics-exporter-prometheus`'s recorder, which
//!   keeps every raw sample until a scrape (or its upkeep) drains them.
//!
//!   cargo bench -p strata-gateway --bench metrics

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use strata_gateway::metrics::Histogram;
use strata_gateway::metrics::instruments::BUCKETS_NANOS;

/// One way of recording a duration given in nanoseconds.
type Record = Arc<dyn Fn(u64) + Send + Sync>;

/// Times `iterations` records split over `threads` threads recording at once; returns the sum of
/// the threads' times, so that the figure criterion reports (divided by `iterations`) is what one
/// record costs the thread that makes it.
fn run_threads(threads: u64, iterations: u64, record: Record) -> Duration {
    let per_thread = iterations.div_ceil(threads);
    let start = Arc::new(std::sync::Barrier::new(usize::try_from(threads).unwrap_or(1) + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (record, start) = (record.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                for i in 0..per_thread {
                    record(black_box((i + t) % 100_000));
                }
                began.elapsed()
            })
        })
        .collect();
    start.wait();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

fn histograms(c: &mut Criterion) {
    let ours = Arc::new(Histogram::default());
    let bounds: Vec<f64> = BUCKETS_NANOS.iter().map(|&n| n as f64 / 1e9).collect();
    let prom = Arc::new(prometheus_client::metrics::histogram::Histogram::new(bounds.iter().copied()));
    let recorder =
        metrics_exporter_prometheus::PrometheusBuilder::new().set_buckets(&bounds).expect("buckets").build_recorder();
    let key = metrics::Key::from_name("strata_bench_seconds");
    let metadata = metrics::Metadata::new("bench", metrics::Level::INFO, None);
    let handle = Arc::new(metrics::Recorder::register_histogram(&recorder, &key, &metadata));

    let contenders: Vec<(&str, Record)> = vec![
        ("strata", {
            let h = ours.clone();
            Arc::new(move |nanos| h.observe(Duration::from_nanos(nanos)))
        }),
        ("prometheus-client", {
            let h = prom.clone();
            Arc::new(move |nanos| h.observe(nanos as f64 / 1e9))
        }),
        ("metrics", {
            let h = handle.clone();
            Arc::new(move |nanos| h.record(nanos as f64 / 1e9))
        }),
    ];
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("histogram/{threads}-thread"));
        for (name, record) in &contenders {
            let record = record.clone();
            group.bench_function(*name, |b| b.iter_custom(|n| run_threads(threads, n, record.clone())));
        }
        group.finish();
        // The metrics recorder holds raw samples until rendered: drain them between groups.
        let _ = recorder.handle().render();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = histograms
}
criterion_main!(benches);
