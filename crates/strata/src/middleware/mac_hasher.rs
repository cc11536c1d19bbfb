//! The hasher of the maps keyed by MAC outputs (basic_auth's credential cache, forward_auth's
//! verdict cache).

use std::hash::Hasher;

/// Hashes a cache key by taking 8 of its bytes: keys are MAC outputs under a secret key, so they
/// are uniformly spread and nobody can aim for a collision, and hashing them again (SipHash over
/// 32 bytes) would cost more than the rest of the lookup. Bytes 8..16, since bytes 0..2 pick the
/// shard.
#[derive(Default)]
pub(crate) struct MacHasher(u64);

impl Hasher for MacHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The key's bytes arrive in one call (after its length, which is always 32).
        if let Some(chunk) = bytes.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            self.0 = u64::from_le_bytes(chunk);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
