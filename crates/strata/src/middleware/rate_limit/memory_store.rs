//! The in-process store: GCRA state per key in sharded maps, with idle keys forgotten.
//!
//! Keys arrive already hashed (a keyed SipHash of the client key, so nobody can aim at a shard or
//! forge collisions), which keeps every entry the same small size whatever the key was (an API key
//! header may be kilobytes). Each of the 64 shards is a `Mutex<HashMap>` held for one lookup and a
//! few additions: contention needs two requests landing in the same shard at the same nanosecond.
//!
//! Memory is bounded two ways. An entry whose every bucket is full again is exactly equivalent to no
//! entry (see [`super::gcra`]), so sweeps drop those without changing any decision; a sweep runs when
//! a shard has doubled since the last one, so its cost is amortised over the inserts that grew it.
//! And a shard never holds more than its share of `max_keys`: when a flood of live keys fills it,
//! an eighth of its entries (arbitrary ones) are dropped, which hands those keys a fresh bucket —
//! leniency towards some clients under a key flood, in exchange for a hard memory ceiling.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, PoisonError};

use super::gcra::{self, Clock, Gcra, MAX_LIMITS, Outcome};
use super::store::{CheckFuture, RateLimitStore, StoreKey};
use crate::middleware::key::Prehashed;

const SHARDS: usize = 64;
/// Shards smaller than this are never swept: not worth the pass.
const MIN_SWEEP: usize = 64;

/// The state of one key.
#[derive(Clone, Copy, Debug)]
struct Entry {
    tats: [u64; MAX_LIMITS],
    idle_at: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<Prehashed>>,
    next_sweep: usize,
}

impl Shard {
    fn make_room(&mut self, now: u64, capacity: usize) {
        self.map.retain(|_, e| e.idle_at > now);
        if self.map.len() >= capacity {
            let mut excess = self.map.len() - capacity * 7 / 8;
            self.map.retain(|_, _| {
                if excess == 0 {
                    return true;
                }
                excess -= 1;
                false
            });
        }
        self.next_sweep = (self.map.len() * 2).clamp(MIN_SWEEP.min(capacity), capacity);
    }
}

/// GCRA state for many keys in this process (see the module docs).
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("keys", &self.len()).field("max_keys", &self.max_keys()).finish()
    }
}

impl MemoryStore {
    /// A store holding at most about `max_keys` keys (at least one per shard), on `clock`.
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let shard_capacity = max_keys.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { map: HashMap::default(), next_sweep: MIN_SWEEP.min(shard_capacity) }))
            .collect();
        MemoryStore { shards, shard_capacity, clock }
    }

    /// The most keys the store will hold.
    pub fn max_keys(&self) -> usize {
        self.shard_capacity * SHARDS
    }

    /// How many keys the store holds now (idle ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len()).sum()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks one request of the key whose hash is `key` against `quotas`.
    pub fn check(&self, key: u64, quotas: &[Gcra]) -> Outcome {
        let now = self.clock.now();
        // The high bits pick the shard; the map uses the whole hash.
        let shard = &self.shards[(key >> 58) as usize % SHARDS];
        // A panic while holding the lock cannot leave an entry half-written (plain integers).
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = shard.map.get_mut(&key) {
            let outcome = gcra::check(quotas, &mut entry.tats, now);
            entry.idle_at = gcra::idle_at(&entry.tats);
            return outcome;
        }
        let mut tats = [0; MAX_LIMITS];
        let outcome = gcra::check(quotas, &mut tats, now);
        if outcome.allowed {
            if shard.map.len() >= shard.next_sweep {
                let capacity = self.shard_capacity;
                shard.make_room(now, capacity);
            }
            shard.map.insert(key, Entry { tats, idle_at: gcra::idle_at(&tats) });
        }
        outcome
    }
}

impl RateLimitStore for MemoryStore {
    fn check<'a>(&'a self, key: &StoreKey<'_>, quotas: &'a [Gcra]) -> CheckFuture<'a> {
        let outcome = MemoryStore::check(self, key.hash(), quotas);
        Box::pin(std::future::ready(Ok(outcome)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::rate_limit::gcra::ManualClock;
    use std::time::Duration;

    fn store(max_keys: usize) -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(1_000_000_000));
        (MemoryStore::new(max_keys, clock.clone()), clock)
    }

    /// Spreads test keys over every shard, as real hashes do.
    fn key(i: u64) -> u64 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[test]
    fn keys_are_limited_independently() {
        let (s, _clock) = store(1000);
        let q = [Gcra::new(2, Duration::from_secs(1), 2).unwrap()];
        let a: Vec<bool> = (0..3).map(|_| s.check(key(1), &q).allowed).collect();
        let b: Vec<bool> = (0..3).map(|_| s.check(key(2), &q).allowed).collect();
        assert_eq!(a, [true, true, false]);
        assert_eq!(b, [true, true, false]);
    }

    #[test]
    fn a_million_distinct_keys_stay_bounded_by_idle_eviction() {
        let (s, clock) = store(1_000_000);
        // 100/s: a key is idle 10 ms after its one request. 1M keys arrive at 100k per second.
        let q = [Gcra::new(100, Duration::from_secs(1), 1).unwrap()];
        let mut peak = 0;
        for i in 0..1_000_000 {
            assert!(s.check(key(i), &q).allowed);
            clock.advance(Duration::from_micros(10));
            if i % 50_000 == 0 {
                peak = peak.max(s.len());
            }
        }
        // About 1 000 keys are live at any time (10 ms × 100k/s); sweeps leave at most twice a
        // shard's live set behind, plus the sweep floor per shard.
        assert!(peak <= 2 * 1_000 + SHARDS * MIN_SWEEP * 2, "peak {peak}");
        assert!(s.len() <= 2 * 1_000 + SHARDS * MIN_SWEEP * 2, "final {}", s.len());
    }

    #[test]
    fn a_flood_of_live_keys_is_capped_at_max_keys() {
        let (s, _clock) = store(6_400);
        // One request per day: no key ever becomes idle during the test.
        let q = [Gcra::new(1, Duration::from_secs(86_400), 1).unwrap()];
        for i in 0..200_000 {
            s.check(key(i), &q);
        }
        assert!(s.len() <= s.max_keys(), "{} > {}", s.len(), s.max_keys());
        assert!(s.len() >= s.max_keys() / 2, "eviction keeps most of the capacity in use: {}", s.len());
    }

    #[test]
    fn sweeping_drops_only_idle_keys() {
        let (s, clock) = store(1_000_000);
        let q = [Gcra::new(1, Duration::from_secs(1), 1).unwrap()];
        assert!(s.check(key(7), &q).allowed);
        // Enough live keys to trigger sweeps in every shard: none of them may forget key 7.
        for i in 100..20_000 {
            s.check(key(i), &q);
        }
        assert!(!s.check(key(7), &q).allowed, "a live key survives sweeps");
        assert!(s.len() >= 19_901);
        // A second later every key is idle: new keys trigger sweeps that drop the old ones.
        clock.advance(Duration::from_secs(1));
        for i in 100_000..120_000 {
            s.check(key(i), &q);
        }
        assert!(s.len() < 39_000, "idle keys were swept: {}", s.len());
        assert!(s.check(key(7), &q).allowed, "an idle (or swept) key has its full burst again");
        assert!(!s.check(key(7), &q).allowed);
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_burst() {
        let (s, _clock) = store(1000);
        let s = Arc::new(s);
        let q = [Gcra::new(1, Duration::from_secs(3600), 1000).unwrap()];
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || (0..500).filter(|_| s.check(key(42), &q).allowed).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 1000);
    }
}
