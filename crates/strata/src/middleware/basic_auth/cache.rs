//! The cache of verified credentials: keyed MACs of `user:password` → expiry, in bounded shards
//! (see the module docs of [`super`] for why it holds MACs and nothing else).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::hash::random;
use crate::middleware::ConfigError;
use crate::middleware::mac_hasher::MacHasher;

/// Verified `(user, password)` pairs, as keyed MACs only (see the module docs for why).
pub(super) struct CredentialCache {
    /// HMAC-SHA256 keyed once with a random key; cloned per lookup rather than re-keyed.
    mac: Hmac<Sha256>,
    shards: Box<[Shard]>,
    per_shard: usize,
    pub(super) ttl: Duration,
}

/// One lock's worth of the cache: credential MAC → expiry.
type Shard = Mutex<HashMap<[u8; 32], Instant, BuildHasherDefault<MacHasher>>>;

pub(super) const CACHE_SHARDS: usize = 16;

impl CredentialCache {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Result<CredentialCache, ConfigError> {
        let key: [u8; 32] = random().map_err(ConfigError::new)?;
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|_| ConfigError::new("cannot key the credential cache"))?;
        let shards = capacity.clamp(1, CACHE_SHARDS);
        Ok(CredentialCache {
            mac,
            shards: (0..shards).map(|_| Mutex::new(HashMap::default())).collect(),
            per_shard: capacity.div_ceil(shards),
            ttl,
        })
    }

    pub(super) fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// `user` cannot contain `:`, so `user ":" password` is unambiguous.
    pub(super) fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(user.as_bytes());
        mac.update(b":");
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn shard(
        &self,
        key: &[u8; 32],
    ) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant, BuildHasherDefault<MacHasher>>> {
        // The key is a MAC output, so its first bytes are uniformly spread.
        let index = usize::from(u16::from_le_bytes([key[0], key[1]])) % self.shards.len();
        // A panic while holding a shard lock cannot leave the map inconsistent (no user code runs
        // under it), so a poisoned lock is still usable.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn contains(&self, key: &[u8; 32]) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some(expires) if *expires > now => true,
            Some(_) => {
                shard.remove(key);
                false
            }
            None => false,
        }
    }

    pub(super) fn insert(&self, key: [u8; 32]) {
        let now = Instant::now();
        let Some(expires) = now.checked_add(self.ttl) else { return };
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, expires| *expires > now);
            if shard.len() >= self.per_shard {
                // Only after a full hash verification, and over a shard of capacity / 16 entries.
                if let Some(oldest) = shard.iter().min_by_key(|(_, expires)| **expires).map(|(k, _)| *k) {
                    shard.remove(&oldest);
                }
            }
        }
        shard.insert(key, expires);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn the_cache_stays_bounded_and_keeps_no_plaintext() {
        let cache = CredentialCache::new(Duration::from_secs(60), 4).unwrap();
        for i in 0..100 {
            cache.insert(cache.key("alice", &format!("pw{i}")));
        }
        assert!(cache.len() <= 4, "{}", cache.len());
        let newest = cache.key("alice", "pw99");
        assert!(cache.contains(&newest), "the newest entry survives eviction");
        assert!(!cache.contains(&cache.key("alice", "pw0")));
        // Keyed by a per-instance random key: another cache derives other keys.
        let other = CredentialCache::new(Duration::from_secs(60), 4).unwrap();
        assert_ne!(other.key("alice", "pw99"), newest);
        assert_ne!(cache.key("alice", "pw99")[..], Sha256::digest(b"alice:pw99")[..]);

        let big = CredentialCache::new(Duration::from_secs(60), 10_000).unwrap();
        assert_eq!(big.shards.len(), CACHE_SHARDS);
        assert!(big.capacity() >= 10_000 && big.capacity() < 10_000 + CACHE_SHARDS);
    }
}
