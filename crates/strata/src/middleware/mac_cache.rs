//! The expiring, bounded map keyed by keyed MACs that basic_auth's credential cache and
//! forward_auth's verdict cache are: a request's secrets are reduced to an HMAC-SHA256 under a
//! random per-cache key, so the map holds nothing a memory dump could replay, and nobody can aim
//! a key at a shard.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit};
use sha2::Sha256;

use super::ConfigError;

/// How many locks a cache is split into (fewer when its capacity is smaller).
pub(crate) const SHARDS: usize = 16;

/// Values by keyed MAC, each until its TTL passes, at most about `capacity` of them.
pub(crate) struct MacCache<V> {
    /// HMAC-SHA256 keyed once with a random key; cloned per key rather than re-keyed.
    mac: Hmac<Sha256>,
    shards: Box<[Shard<V>]>,
    per_shard: usize,
    /// How long an entry is kept.
    pub(crate) ttl: Duration,
}

/// One lock's worth of the cache: MAC → expiry and value.
type Shard<V> = Mutex<Map<V>>;
type Map<V> = HashMap<[u8; 32], (Instant, V), BuildHasherDefault<MacHasher>>;

impl<V: Clone> MacCache<V> {
    /// An empty cache with a fresh random MAC key; `what` names it in errors.
    pub(crate) fn new(ttl: Duration, capacity: usize, what: &str) -> Result<Self, ConfigError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| ConfigError::new(format!("the OS random source failed: {e}")))?;
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|_| ConfigError::new(format!("cannot key the {what}")))?;
        let shards = capacity.clamp(1, SHARDS);
        Ok(MacCache {
            mac,
            shards: (0..shards).map(|_| Mutex::new(HashMap::default())).collect(),
            per_shard: capacity.div_ceil(shards),
            ttl,
        })
    }

    /// The MAC to feed a key's bytes into (a clone of the keyed one).
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }

    /// The most entries the cache holds.
    pub(crate) fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    fn shard(&self, key: &[u8; 32]) -> MutexGuard<'_, Map<V>> {
        // The key is a MAC output, so its first bytes are uniformly spread.
        let index = usize::from(u16::from_le_bytes([key[0], key[1]])) % self.shards.len();
        // No user code runs under the lock, so a poisoned one still holds a consistent map.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value stored under `key`, while it has not expired.
    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<V> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some((expires, value)) if *expires > now => Some(value.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` under `key` for the TTL, evicting the expired, then the oldest entries of a
    /// full shard (a pass over capacity / 16 entries, only when a new key finds its shard full).
    pub(crate) fn insert(&self, key: [u8; 32], value: V) {
        let now = Instant::now();
        let Some(expires) = now.checked_add(self.ttl) else { return };
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, (expires, _)| *expires > now);
            if shard.len() >= self.per_shard
                && let Some(oldest) = shard.iter().min_by_key(|(_, (expires, _))| *expires).map(|(k, _)| *k)
            {
                shard.remove(&oldest);
            }
        }
        shard.insert(key, (expires, value));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    #[cfg(test)]
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

/// Hashes a cache key by taking 8 of its bytes: keys are MAC outputs under a secret key, so they
/// are uniformly spread and nobody can aim for a collision, and hashing them again (SipHash over
/// 32 bytes) would cost more than the rest of the lookup. Bytes 8..16, since bytes 0..2 pick the
/// shard.
#[derive(Default)]
struct MacHasher(u64);

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
