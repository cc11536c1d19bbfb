//! Counters and histograms cheap enough for every request: no lock, and no cache line shared
//! between threads on the request path.
//!
//! Each instrument is split into [`SHARDS`] cache-line-aligned shards; a thread writes the shard
//! its index picks (threads are numbered as they first record) with relaxed atomic adds, so the
//! worker threads of the runtime do not bounce a line between cores per request. A scrape sums
//! the shards. Histograms have fixed buckets, chosen once for every duration the gateway measures,
//! from one microsecond (a layer that adds a header) to ten seconds (a slow upstream).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How many shards an instrument has: enough that the worker threads of a large machine rarely
/// share one (two threads on one shard are still correct, only slower).
pub const SHARDS: usize = 16;

/// The upper bounds of the duration buckets, in nanoseconds (the last bucket, `+Inf`, is implied).
pub const BUCKETS_NANOS: [u64; 22] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The number of buckets, `+Inf` included.
pub const BUCKETS: usize = BUCKETS_NANOS.len() + 1;

/// This thread's shard. A caller recording several instruments at once looks it up once and
/// passes it to the `*_on` methods.
pub fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        let mut index = s.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(index);
        }
        index
    })
}

/// A group of `N` counters recorded together (e.g. one per status class), sharded.
pub struct Counters<const N: usize> {
    shards: Box<[CounterShard<N>]>,
}

#[repr(align(64))]
struct CounterShard<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Counters { shards: (0..SHARDS).map(|_| CounterShard(std::array::from_fn(|_| AtomicU64::new(0)))).collect() }
    }
}

impl<const N: usize> Counters<N> {
    /// Adds one to counter `i`.
    pub fn increment(&self, i: usize) {
        self.add(i, 1);
    }

    /// Adds `n` to counter `i`.
    pub fn add(&self, i: usize, n: u64) {
        self.add_on(shard(), i, n);
    }

    /// Adds `n` to counter `i` on shard `shard` (see [`shard`]).
    pub fn add_on(&self, shard: usize, i: usize, n: u64) {
        if let Some(c) = self.shards[shard % SHARDS].0.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `i`, summed over the shards.
    pub fn get(&self, i: usize) -> u64 {
        self.shards.iter().map(|s| s.0.get(i).map_or(0, |c| c.load(Ordering::Relaxed))).sum()
    }

    /// Every counter, summed over the shards.
    pub fn values(&self) -> [u64; N] {
        std::array::from_fn(|i| self.get(i))
    }
}

/// One counter, sharded.
pub type Counter = Counters<1>;

/// A histogram of durations with the fixed [`BUCKETS_NANOS`] buckets, sharded.
pub struct Histogram {
    shards: Box<[HistogramShard]>,
}

#[repr(align(64))]
struct HistogramShard {
    // Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            shards: (0..SHARDS)
                .map(|_| HistogramShard {
                    buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                    sum_nanos: AtomicU64::new(0),
                })
                .collect(),
        }
    }
}

/// A histogram's state, summed over its shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket, the number of observations at most its bound (cumulative, as Prometheus
    /// expects); the last is every observation.
    pub cumulative: [u64; BUCKETS],
    /// The sum of the observations, in nanoseconds.
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.cumulative[BUCKETS - 1]
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.observe_on(shard(), d);
    }

    /// Records one duration on shard `shard` (see [`shard`]).
    pub fn observe_on(&self, shard: usize, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NANOS.partition_point(|&bound| bound < nanos);
        let shard = &self.shards[shard % SHARDS];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The buckets and sum, summed over the shards.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snapshot = HistogramSnapshot::default();
        for shard in self.shards.iter() {
            for (total, b) in snapshot.cumulative.iter_mut().zip(&shard.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            snapshot.sum_nanos = snapshot.sum_nanos.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
        }
        let mut running = 0;
        for c in &mut snapshot.cumulative {
            running += *c;
            *c = running;
        }
        snapshot
    }
}

/// A value that goes up and down (requests in flight), sharded: a thread may add where another
/// subtracts, so a shard can be negative; the sum is the value.
pub struct Gauge {
    shards: Box<[GaugeShard]>,
}

#[repr(align(64))]
struct GaugeShard(std::sync::atomic::AtomicI64);

impl Default for Gauge {
    fn default() -> Self {
        Gauge { shards: (0..SHARDS).map(|_| GaugeShard(std::sync::atomic::AtomicI64::new(0))).collect() }
    }
}

impl Gauge {
    /// Adds `n` (negative to subtract).
    pub fn add(&self, n: i64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The value, summed over the shards.
    pub fn get(&self) -> i64 {
        self.shards.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_nanos(500)); // ≤ 1µs
        h.observe(Duration::from_micros(1)); // ≤ 1µs: bounds are inclusive
        h.observe(Duration::from_micros(3)); // ≤ 5µs
        h.observe(Duration::from_secs(60)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 2);
        assert_eq!(s.cumulative[1], 2);
        assert_eq!(s.cumulative[2], 3);
        assert_eq!(s.cumulative[BUCKETS - 2], 3);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_nanos, 500 + 1_000 + 3_000 + 60_000_000_000);
    }

    #[test]
    fn threads_recording_at_once_lose_nothing() {
        let counters: std::sync::Arc<Counters<2>> = Default::default();
        let gauge: std::sync::Arc<Gauge> = Default::default();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (counters, gauge) = (counters.clone(), gauge.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        counters.increment(t % 2);
                        gauge.add(1);
                    }
                    for _ in 0..4_000 {
                        gauge.add(-1);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counters.values(), [40_000, 40_000]);
        assert_eq!(gauge.get(), 8 * 6_000);
    }
}
