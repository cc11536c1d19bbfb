//! Random bits for request ids, trace ids and CSP nonces, from the operating system's random source.
//!
//! Each thread draws [`BUFFER`] bytes at a time and hands them out in pieces, so a request costs a
//! copy rather than a system call. Should the OS source fail (it does not on supported systems),
//! the bits come from std's randomly keyed SipHash over a per-thread counter instead: still
//! unpredictable and unique enough for ids, and a request never fails for want of them.

use std::cell::RefCell;
use std::hash::{BuildHasher, RandomState};

/// Bytes drawn from the OS per refill: 64 request ids' worth.
const BUFFER: usize = 1024;

struct Pool {
    bytes: [u8; BUFFER],
    /// How many of `bytes` were handed out already.
    used: usize,
    /// Keys the fallback; drawn once per thread by std.
    fallback: RandomState,
    counter: u64,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool { bytes: [0; BUFFER], used: BUFFER, fallback: RandomState::new(), counter: 0 });
}

impl Pool {
    fn fill(&mut self, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() {
            if self.used == BUFFER {
                self.refill();
            }
            let n = (out.len() - filled).min(BUFFER - self.used);
            out[filled..filled + n].copy_from_slice(&self.bytes[self.used..self.used + n]);
            // Handed-out bytes are not kept: they must not be handed out twice.
            self.bytes[self.used..self.used + n].fill(0);
            self.used += n;
            filled += n;
        }
    }

    fn refill(&mut self) {
        if getrandom::fill(&mut self.bytes).is_err() {
            self.refill_from_fallback();
        }
        self.used = 0;
    }

    fn refill_from_fallback(&mut self) {
        for chunk in self.bytes.chunks_exact_mut(8) {
            self.counter = self.counter.wrapping_add(1);
            chunk.copy_from_slice(&self.fallback.hash_one(self.counter).to_le_bytes());
        }
        self.used = 0;
    }
}

/// `N` random bytes.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    POOL.with(|pool| pool.borrow_mut().fill(&mut out));
    out
}

/// 128 uniformly random bits.
pub(super) fn random_u128() -> u128 {
    u128::from_le_bytes(random_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_never_handed_out_twice_across_refills() {
        let mut seen = std::collections::HashSet::new();
        // Several refills' worth, in pieces that do not divide the buffer.
        for _ in 0..(3 * BUFFER / 24) {
            assert!(seen.insert(random_bytes::<24>()), "a repeated 192-bit draw");
        }
        let ones: u32 = (0..64).map(|_| random_u128().count_ones()).sum();
        // 8192 fair bits: far from 0 and from 8192.
        assert!((3500..4700).contains(&ones), "{ones}");
    }

    #[test]
    fn the_fallback_makes_distinct_bytes() {
        let mut pool = Pool { bytes: [0; BUFFER], used: BUFFER, fallback: RandomState::new(), counter: 0 };
        pool.refill_from_fallback();
        let first = pool.bytes;
        pool.refill_from_fallback();
        assert_ne!(first, pool.bytes, "the counter moves on");
        let chunks: std::collections::HashSet<&[u8]> = first.chunks_exact(8).collect();
        assert_eq!(chunks.len(), BUFFER / 8, "no two 64-bit pieces alike");
    }
}
