//! The cache of verified credentials: keyed MACs of `user:password` → expiry, in bounded shards
//! (see the module docs of [`super`] for why it holds MACs and nothing else).

use hmac::Mac;

use crate::middleware::mac_cache::MacCache;

/// Verified `(user, password)` pairs, as keyed MACs only (see the module docs for why).
pub(super) type CredentialCache = MacCache<()>;

impl MacCache<()> {
    /// A cache of `capacity` credentials, each kept for `ttl`.
    pub(super) fn credentials(
        ttl: std::time::Duration,
        capacity: usize,
    ) -> Result<Self, crate::middleware::ConfigError> {
        MacCache::new(ttl, capacity, "credential cache")
    }

    /// `user` cannot contain `:`, so `user ":" password` is unambiguous.
    pub(super) fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(user.as_bytes());
        mac.update(b":");
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `key`'s credentials were verified within the TTL.
    pub(super) fn contains(&self, key: &[u8; 32]) -> bool {
        self.get(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::middleware::mac_cache::SHARDS;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_cache_stays_bounded_and_keeps_no_plaintext() {
        let cache = CredentialCache::credentials(Duration::from_secs(60), 4).unwrap();
        for i in 0..100 {
            cache.insert(cache.key("alice", &format!("pw{i}")), ());
        }
        assert!(cache.len() <= 4, "{}", cache.len());
        let newest = cache.key("alice", "pw99");
        assert!(cache.contains(&newest), "the newest entry survives eviction");
        assert!(!cache.contains(&cache.key("alice", "pw0")));
        // Keyed by a per-instance random key: another cache derives other keys.
        let other = CredentialCache::credentials(Duration::from_secs(60), 4).unwrap();
        assert_ne!(other.key("alice", "pw99"), newest);
        assert_ne!(cache.key("alice", "pw99")[..], Sha256::digest(b"alice:pw99")[..]);

        let big = CredentialCache::credentials(Duration::from_secs(60), 10_000).unwrap();
        assert_eq!(big.shard_count(), SHARDS);
        assert!(big.capacity() >= 10_000 && big.capacity() < 10_000 + SHARDS);
    }
}
