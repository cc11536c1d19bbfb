//! The three ways a request picks a target: weighted round robin, the less loaded of two random
//! targets (power of two choices), and weighted rendezvous hashing. Each takes a `usable` test (up,
//! and not already tried by this request) and takes no lock.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Weighted round robin: a precomputed sequence in which each target appears as often as its
/// weight, interleaved (nginx's smooth weighted round robin: weights 5, 1, 1 give `a a b a c a a`,
/// not `a a a a a b c`), walked by an atomic cursor.
pub(crate) struct RoundRobin {
    sequence: Box<[u8]>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// The sequence for these weights (at most 256 targets, each weight at least 1).
    pub(crate) fn new(weights: &[u32]) -> RoundRobin {
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, &w) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            // The first of the largest, so equal weights go in the order written.
            let best = (0..current.len()).fold(0, |best, i| if current[i] > current[best] { i } else { best });
            current[best] -= total;
            sequence.push(u8::try_from(best).unwrap_or(u8::MAX));
        }
        RoundRobin { sequence: sequence.into_boxed_slice(), cursor: AtomicUsize::new(0) }
    }

    /// The next usable target in the sequence: an unusable one's turn goes to the next in line.
    pub(crate) fn next(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len).map(|k| usize::from(self.sequence[(start.wrapping_add(k)) % len])).find(|&i| usable(i))
    }
}

/// Power of two choices: two targets drawn at random, the one with fewer requests in progress per
/// unit of weight wins. It avoids both the herd that "least loaded of all" sends to a target that
/// just became free and a scan of every target per request.
///
/// `load(i)` is `(requests in progress, weight)`.
pub(crate) fn least_requests(
    count: usize,
    usable: impl Fn(usize) -> bool,
    load: impl Fn(usize) -> (usize, u32),
) -> Option<usize> {
    if count == 0 {
        return None;
    }
    let first_usable_from = |start: usize, other: Option<usize>| {
        (0..count).map(|k| (start + k) % count).find(|&i| usable(i) && Some(i) != other)
    };
    let a = first_usable_from(random_below(count), None)?;
    let Some(b) = first_usable_from(random_below(count), Some(a)) else { return Some(a) };
    let (load_a, weight_a) = load(a);
    let (load_b, weight_b) = load(b);
    // (load_a + 1) / weight_a ≤ (load_b + 1) / weight_b, without division.
    let score_a = (load_a as u128 + 1) * u128::from(weight_b);
    let score_b = (load_b as u128 + 1) * u128::from(weight_a);
    Some(if score_a <= score_b { a } else { b })
}

/// Weighted rendezvous (highest random weight) hashing: each target scores the key, the best
/// usable score wins. A target that goes away takes only its own keys with it (each moves to its
/// second-best target), and the others' keys do not move: nothing is remapped the way a modulo
/// would remap almost everything. Scores are `weight / -ln(u)`, `u` uniform in (0, 1) from the
/// key and the target, so a target wins a share of keys proportional to its weight.
pub(crate) fn rendezvous(key: u64, ids: &[u64], weights: &[u32], usable: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, (&id, &weight)) in ids.iter().zip(weights).enumerate() {
        if !usable(i) {
            continue;
        }
        let hash = mix(key ^ mix(id));
        // 53 random bits, shifted off zero: u in (0, 1).
        let u = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(weight) / -u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// A stable 64-bit hash of bytes (SipHash with fixed keys: the same in every process, so a key
/// maps to the same target across restarts and reloads).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    #[allow(deprecated)] // SipHasher is the one std hasher whose keys can be fixed.
    let mut hasher = std::hash::SipHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

/// splitmix64's finaliser: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A random number below `n`, from a per-thread xorshift generator (no lock, no shared state:
/// balancing needs spread, not secrecy).
fn random_below(n: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish() | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        // Multiply-shift: unbiased enough for n ≤ 64 and cheaper than a modulo.
        ((u128::from(x) * n as u128) >> 64) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(picks: impl Iterator<Item = usize>, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for i in picks {
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_follows_the_weights_and_interleaves() {
        let rr = RoundRobin::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| rr.next(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0], "smooth: the heavy target's turns are spread");
        let rr = RoundRobin::new(&[3, 1, 2]);
        assert_eq!(counts((0..600).map(|_| rr.next(|_| true).unwrap()), 3), [300, 100, 200]);
        let even = RoundRobin::new(&[1, 1, 1]);
        assert_eq!((0..6).map(|_| even.next(|_| true).unwrap()).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_skips_what_is_unusable() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        assert_eq!(counts((0..100).map(|_| rr.next(|i| i != 1).unwrap()), 3)[1], 0);
        assert_eq!(rr.next(|_| false), None);
    }

    #[test]
    fn two_choices_prefer_the_less_loaded() {
        let loads = [10usize, 0, 10];
        let picks = counts((0..300).map(|_| least_requests(3, |_| true, |i| (loads[i], 1)).unwrap()), 3);
        // Target 1 wins whenever it is drawn, which is most of the time (5 pairs in 9 hold it).
        assert!(picks[1] > 150, "{picks:?}");
        // Two targets: the less loaded one always wins (unless both draws land on the same one).
        let picks = counts((0..200).map(|_| least_requests(2, |_| true, |i| ([5, 1][i], 1)).unwrap()), 2);
        assert_eq!(picks, [0, 200]);
        // Weight counts: 4 in progress on a weight-4 target is as busy as 1 on a weight-1 target.
        let picks = counts((0..200).map(|_| least_requests(2, |_| true, |i| ([3, 1][i], [4, 1][i])).unwrap()), 2);
        assert_eq!(picks, [200, 0], "(3+1)/4 < (1+1)/1");
        assert_eq!(least_requests(3, |i| i == 2, |_| (0, 1)), Some(2));
        assert_eq!(least_requests(3, |_| false, |_| (0, 1)), None);
    }

    #[test]
    fn rendezvous_keeps_keys_in_place_and_moves_only_the_lost_targets_keys() {
        let ids: Vec<u64> = (0..4).map(|i| stable_hash(format!("http://10.0.0.{i}:80").as_bytes())).collect();
        let weights = [1, 1, 1, 1];
        let keys: Vec<u64> = (0..2000).map(|k| stable_hash(format!("user-{k}").as_bytes())).collect();
        let before: Vec<usize> = keys.iter().map(|&k| rendezvous(k, &ids, &weights, |_| true).unwrap()).collect();
        let again: Vec<usize> = keys.iter().map(|&k| rendezvous(k, &ids, &weights, |_| true).unwrap()).collect();
        assert_eq!(before, again, "same key, same target");
        let spread = counts(before.iter().copied(), 4);
        assert!(spread.iter().all(|&c| (350..650).contains(&c)), "{spread:?}");
        // Target 2 goes away: its keys move, nobody else's do.
        let after: Vec<usize> = keys.iter().map(|&k| rendezvous(k, &ids, &weights, |i| i != 2).unwrap()).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b == 2 {
                assert_ne!(*a, 2);
            } else {
                assert_eq!(a, b, "a key whose target stayed did not move");
            }
        }
    }

    #[test]
    fn rendezvous_shares_follow_the_weights() {
        let ids: Vec<u64> = (0..2).map(|i| stable_hash(&[i])).collect();
        let picks = counts((0..4000u64).map(|k| rendezvous(mix(k), &ids, &[3, 1], |_| true).unwrap()), 2);
        assert!((2700..3300).contains(&picks[0]), "about three quarters: {picks:?}");
    }
}
