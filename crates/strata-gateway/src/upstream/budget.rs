//! The retry budget: retries may add at most a fifth to a route's requests, counted over the last
//! ten seconds, plus a floor of ten per second so that a quiet route can still retry. In an outage
//! every request fails; without a budget each would be sent `retries + 1` times, multiplying the
//! load on the targets still up just when they can least take it. (Linkerd's defaults: ratio 0.2,
//! 10 retries per second, a 10 s window; Envoy's retry budgets and gRPC's retry throttling have the
//! same shape.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The window the counts cover, in one-second buckets.
const WINDOW_SECONDS: u64 = 10;
/// Retries allowed per hundred requests in the window.
const RETRY_PERCENT: u64 = 20;
/// Retries always allowed per second of the window, whatever the traffic.
const FLOOR_PER_SECOND: u64 = 10;

struct Bucket {
    /// The second (since the budget's start) the counts belong to.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Requests and retries of one route over a sliding window of one-second buckets, in atomics.
pub(crate) struct RetryBudget {
    start: Instant,
    buckets: [Bucket; WINDOW_SECONDS as usize],
}

impl RetryBudget {
    pub(crate) fn new() -> RetryBudget {
        RetryBudget {
            start: Instant::now(),
            buckets: std::array::from_fn(|_| Bucket {
                second: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
            }),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Counts a request (its first attempt).
    pub(crate) fn record_request(&self) {
        self.record_request_at(self.now());
    }

    /// Whether one more retry fits in the budget; if so it is counted.
    pub(crate) fn try_retry(&self) -> bool {
        self.try_retry_at(self.now())
    }

    fn record_request_at(&self, second: u64) {
        self.bucket(second).requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry_at(&self, second: u64) -> bool {
        let (requests, retries) = self.totals(second);
        if retries >= FLOOR_PER_SECOND * WINDOW_SECONDS + requests * RETRY_PERCENT / 100 {
            return false;
        }
        // Two retries racing for the last unit of budget may both pass: the bound is loose by the
        // number of concurrent failures, which is what it is meant to keep small anyway.
        self.bucket(second).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The bucket of `second`, emptied first when it still holds counts from a window ago.
    fn bucket(&self, second: u64) -> &Bucket {
        let bucket = &self.buckets[(second % WINDOW_SECONDS) as usize];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != second && bucket.second.compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// Requests and retries in the window ending at `second`.
    fn totals(&self, second: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| second.saturating_sub(b.second.load(Ordering::Acquire)) < WINDOW_SECONDS)
            .fold((0, 0), |(req, ret), b| {
                (req + b.requests.load(Ordering::Relaxed), ret + b.retries.load(Ordering::Relaxed))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_allows_ten_per_second_of_window_without_traffic() {
        let budget = RetryBudget::new();
        let allowed = (0..500).filter(|_| budget.try_retry_at(3)).count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn retries_add_at_most_a_fifth_above_the_floor() {
        let budget = RetryBudget::new();
        for _ in 0..1000 {
            budget.record_request_at(5);
        }
        let allowed = (0..1000).filter(|_| budget.try_retry_at(5)).count();
        assert_eq!(allowed, 100 + 200, "the floor plus 20% of 1000 requests");
    }

    #[test]
    fn counts_older_than_the_window_are_forgotten() {
        let budget = RetryBudget::new();
        assert_eq!((0..500).filter(|_| budget.try_retry_at(1)).count(), 100);
        assert!(!budget.try_retry_at(10), "second 1 is still within the window at second 10");
        assert!(budget.try_retry_at(11), "second 1 has left the window");
        // The bucket of second 1 is reused for second 11, emptied first.
        budget.record_request_at(21);
        assert_eq!(budget.totals(21), (1, 0));
    }
}
