//! The generic cell rate algorithm (GCRA): a token bucket kept as one timestamp per key.
//!
//! A quota of `count` requests per `period` admits one request every emission interval
//! `T = period / count`. With a burst of `b`, a client may be up to `τ = (b - 1)·T` ahead of that
//! schedule. The state of a key is its theoretical arrival time (TAT): the time at which its bucket
//! would be full again if it sent nothing more. A request at `now` is admitted when
//! `now ≥ max(TAT, now) - τ`, and then `TAT = max(TAT, now) + T`. A key whose TAT is in the past is
//! indistinguishable from a key never seen, which is what lets stores forget idle keys exactly.
//!
//! Times are nanoseconds on a [`Clock`]; the Redis store runs the same arithmetic in microseconds
//! from Redis's own clock ([`Gcra::in_micros`] rounds a quota to what it can express).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most limits one layer can enforce at once (state is a fixed array: no allocation per key).
pub const MAX_LIMITS: usize = 4;

/// A source of monotonic time in nanoseconds since an arbitrary origin.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's origin; never goes backwards.
    fn now(&self) -> u64;
}

/// The process's monotonic clock, read from the CPU's time-stamp counter where it is reliable.
///
/// Every check reads the clock once; `std::time::Instant::now()` (a `clock_gettime` call) was
/// the largest single cost of a memory-store check in the benchmark, several times a TSC read.
/// `quanta` calibrates the counter against the OS clock and falls back to it where the counter
/// cannot be trusted.
#[derive(Debug)]
pub struct MonotonicClock {
    clock: quanta::Clock,
    origin: quanta::Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.now();
        MonotonicClock { clock, origin }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> u64 {
        // u64 arithmetic instead of `as_nanos`' u128: this runs on every check.
        let d = self.clock.now().saturating_duration_since(self.origin);
        d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
    }
}

/// A clock that moves only when told to: for tests and benchmarks.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `start` nanoseconds.
    pub fn at(start: u64) -> Self {
        ManualClock(AtomicU64::new(start))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One quota in GCRA form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Requests admitted per period, as configured.
    pub count: u64,
    /// The period, as configured.
    pub period: Duration,
    /// How many requests may arrive at once.
    pub burst: u64,
    /// Emission interval `T`, in nanoseconds.
    pub interval: u64,
    /// Tolerance `τ = (burst - 1)·T`, in nanoseconds.
    pub tolerance: u64,
}

impl Gcra {
    /// `count` requests per `period`, `burst` at once. Errors name what is out of range.
    pub fn new(count: u64, period: Duration, burst: u64) -> Result<Gcra, String> {
        if count == 0 {
            return Err("the rate must admit at least one request".into());
        }
        if burst == 0 {
            return Err("`burst` must be at least 1".into());
        }
        let period_ns = u64::try_from(period.as_nanos()).map_err(|_| "the period is too long".to_string())?;
        let interval = period_ns / count;
        // Redis keeps time in microseconds: a finer interval could not be enforced there.
        if interval < 1_000 {
            return Err(format!("{count} per {period:?} is faster than one request per microsecond"));
        }
        let tolerance = interval.checked_mul(burst - 1).ok_or_else(|| "`burst` is too large".to_string())?;
        Ok(Gcra { count, period, burst, interval, tolerance })
    }

    /// The same quota rounded to whole microseconds, as the Redis store enforces it.
    pub fn in_micros(self) -> Gcra {
        let interval = self.interval / 1_000 * 1_000;
        Gcra { interval, tolerance: interval * (self.burst - 1), ..self }
    }

    /// Where `tat` stands at `now`: requests left and time until the bucket is full.
    pub fn status(&self, tat: u64, now: u64) -> Status {
        let until_full = tat.saturating_sub(now);
        let remaining = (now + self.tolerance + self.interval).saturating_sub(tat) / self.interval;
        Status { remaining: remaining.min(self.burst), until_full: Duration::from_nanos(until_full) }
    }

    /// How long until a request at `now` would be admitted (zero when it would be now).
    pub fn wait(&self, tat: u64, now: u64) -> Duration {
        Duration::from_nanos(tat.max(now).saturating_sub(self.tolerance).saturating_sub(now))
    }
}

/// One quota's state as the `RateLimit` field reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Requests that would still be admitted now.
    pub remaining: u64,
    /// Time until the bucket is full again (the quota "resets").
    pub until_full: Duration,
}

/// The result of one check against every quota of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request is admitted (every quota had room).
    pub allowed: bool,
    /// When rejected: how long until every quota would admit it.
    pub retry_after: Duration,
    /// Each quota's state after the decision, in the layer's order (`len` of them).
    pub statuses: [Status; MAX_LIMITS],
    /// How many entries of `statuses` are used.
    pub len: usize,
}

impl Outcome {
    /// The statuses in use.
    pub fn statuses(&self) -> &[Status] {
        &self.statuses[..self.len]
    }
}

/// Checks one request at `now` against every quota, updating `tats` only when it is admitted
/// (a rejected request consumes nothing, so a client hammering a closed limit does not push its
/// own reopening further away).
pub fn check(quotas: &[Gcra], tats: &mut [u64; MAX_LIMITS], now: u64) -> Outcome {
    let mut retry_after = Duration::ZERO;
    for (q, tat) in quotas.iter().zip(tats.iter()) {
        retry_after = retry_after.max(q.wait(*tat, now));
    }
    let allowed = retry_after.is_zero();
    if allowed {
        for (q, tat) in quotas.iter().zip(tats.iter_mut()) {
            *tat = (*tat).max(now) + q.interval;
        }
    }
    outcome(quotas, tats, now, allowed, retry_after)
}

/// Builds the [`Outcome`] for TATs already decided (the Redis store decides in Redis).
pub fn outcome(quotas: &[Gcra], tats: &[u64], now: u64, allowed: bool, retry_after: Duration) -> Outcome {
    let mut statuses = [Status { remaining: 0, until_full: Duration::ZERO }; MAX_LIMITS];
    for ((q, tat), s) in quotas.iter().zip(tats).zip(statuses.iter_mut()) {
        *s = q.status(*tat, now);
    }
    Outcome { allowed, retry_after, statuses, len: quotas.len() }
}

/// When a key with these TATs becomes indistinguishable from a new one (every bucket full).
pub fn idle_at(tats: &[u64; MAX_LIMITS]) -> u64 {
    tats.iter().copied().max().unwrap_or(0)
}

/// Parses `"100/s"`, `"10/min"`, `"1000/h"`, `"5/day"` (also `"30/10s"`: 30 per 10 seconds).
pub fn parse_rate(text: &str) -> Result<(u64, Duration), String> {
    let expected = || format!("`{text}`: expected a rate such as \"100/s\", \"10/min\", \"1000/h\" or \"5/day\"");
    let (count, per) = text.split_once('/').ok_or_else(expected)?;
    let count: u64 = count.trim().parse().map_err(|_| expected())?;
    let per = per.trim();
    let split = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
    let (n, unit) = per.split_at(split);
    let n: u64 = if n.is_empty() { 1 } else { n.parse().map_err(|_| expected())? };
    let unit_secs: u64 = match unit {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3_600,
        "d" | "day" => 86_400,
        _ => return Err(expected()),
    };
    if n == 0 || count == 0 {
        return Err(format!("`{text}`: the count and the period must be at least 1"));
    }
    Ok((count, Duration::from_secs(n.checked_mul(unit_secs).ok_or_else(expected)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    /// Runs requests at the given times (ms) and returns which were admitted.
    fn admits(quotas: &[Gcra], times_ms: &[u64]) -> Vec<bool> {
        let mut tats = [0; MAX_LIMITS];
        times_ms.iter().map(|t| check(quotas, &mut tats, S + t * MS).allowed).collect()
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("100/s").unwrap(), (100, Duration::from_secs(1)));
        assert_eq!(parse_rate("10/min").unwrap(), (10, Duration::from_secs(60)));
        assert_eq!(parse_rate("1000/h").unwrap(), (1000, Duration::from_secs(3600)));
        assert_eq!(parse_rate("5/day").unwrap(), (5, Duration::from_secs(86_400)));
        assert_eq!(parse_rate("30/10s").unwrap(), (30, Duration::from_secs(10)));
        for bad in ["100", "x/s", "10/fortnight", "0/s", "10/0s", "-1/s", "10/ s s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(Gcra::new(2_000_000, Duration::from_secs(1), 1).is_err(), "sub-microsecond interval");
        assert!(Gcra::new(10, Duration::from_secs(1), 0).is_err());
    }

    #[test]
    fn a_burst_is_admitted_at_once_then_one_per_interval() {
        // 10/s with a burst of 3: T = 100 ms, τ = 200 ms.
        let q = [Gcra::new(10, Duration::from_secs(1), 3).unwrap()];
        assert_eq!(
            admits(&q, &[0, 0, 0, 0, 50, 99, 100, 101, 150, 200]),
            [true, true, true, false, false, false, true, false, false, true]
        );
    }

    #[test]
    fn an_idle_key_recovers_its_whole_burst_and_no_more() {
        let q = [Gcra::new(10, Duration::from_secs(1), 3).unwrap()];
        // Drain, wait a full second (10 intervals), then only the burst (3) is admitted at once.
        let mut times = vec![0, 0, 0];
        times.extend([1000; 5]);
        assert_eq!(admits(&q, &times), [true, true, true, true, true, true, false, false]);
    }

    #[test]
    fn partial_recovery_admits_exactly_the_intervals_elapsed() {
        let q = [Gcra::new(10, Duration::from_secs(1), 5).unwrap()];
        // Drain 5 at t=0, then at t=250ms exactly two intervals have been regained.
        assert_eq!(
            admits(&q, &[0, 0, 0, 0, 0, 0, 250, 250, 250]),
            [true, true, true, true, true, false, true, true, false]
        );
    }

    #[test]
    fn rejected_requests_consume_nothing() {
        let q = [Gcra::new(1, Duration::from_secs(1), 1).unwrap()];
        // Hammering while closed does not delay the reopening at t = 1 s.
        assert_eq!(admits(&q, &[0, 100, 200, 300, 999, 1000, 1000]), [true, false, false, false, false, true, false]);
    }

    #[test]
    fn every_limit_must_have_room_and_only_admitted_requests_count_against_each() {
        // 10/s burst 10 and 12/min burst 12: the minute limit bites first.
        let q =
            [Gcra::new(10, Duration::from_secs(1), 10).unwrap(), Gcra::new(12, Duration::from_secs(60), 12).unwrap()];
        let times: Vec<u64> = (0..20).map(|i| i * 200).collect();
        let admitted = admits(&q, &times).iter().filter(|a| **a).count();
        assert_eq!(admitted, 12);
    }

    #[test]
    fn status_reports_remaining_reset_and_retry() {
        let q = [Gcra::new(10, Duration::from_secs(1), 3).unwrap()];
        let mut tats = [0; MAX_LIMITS];
        let o = check(&q, &mut tats, S);
        assert_eq!((o.allowed, o.statuses()[0].remaining), (true, 2));
        assert_eq!(o.statuses()[0].until_full, Duration::from_millis(100));
        check(&q, &mut tats, S);
        let o = check(&q, &mut tats, S);
        assert_eq!((o.allowed, o.statuses()[0].remaining), (true, 0));
        assert_eq!(o.statuses()[0].until_full, Duration::from_millis(300));
        let o = check(&q, &mut tats, S + 30 * MS);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, Duration::from_millis(70));
        assert_eq!(o.statuses()[0].remaining, 0);
        let o = check(&q, &mut tats, S + 100 * MS);
        assert!(o.allowed, "exactly at the retry time");
        assert_eq!(idle_at(&tats), S + 400 * MS);
    }

    #[test]
    fn microsecond_rounding_is_close_to_the_exact_quota() {
        let q = Gcra::new(7, Duration::from_secs(1), 7).unwrap();
        let r = q.in_micros();
        assert_eq!(r.interval, 142_857_000);
        assert!(q.interval - r.interval < 1_000);
        assert_eq!(r.tolerance, r.interval * 6);
    }
}
