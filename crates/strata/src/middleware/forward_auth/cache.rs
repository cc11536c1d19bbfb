//! The verdict cache: keyed MACs of everything an auth request carries → the admission it got, in
//! bounded shards (see the module docs of [`super`] for what is cached and why).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Admission;
use crate::middleware::ConfigError;
use crate::middleware::mac_hasher::MacHasher;

/// Admissions by keyed MAC of their auth request; nothing of the request itself is stored.
pub(super) struct VerdictCache {
    /// HMAC-SHA256 keyed once with a random key; cloned per lookup rather than re-keyed.
    mac: Hmac<Sha256>,
    shards: Box<[Shard]>,
    per_shard: usize,
    pub(super) ttl: Duration,
}

struct Entry {
    expires: Instant,
    admission: Arc<Admission>,
}

type Shard = Mutex<HashMap<[u8; 32], Entry, BuildHasherDefault<MacHasher>>>;

const SHARDS: usize = 16;

/// What an auth request says about the request it asks about: the parts the cache key covers.
pub(super) struct Asked<'a> {
    pub(super) method: &'a [u8],
    pub(super) proto: &'a [u8],
    pub(super) host: &'a [u8],
    pub(super) uri: &'a [u8],
    pub(super) client: Option<IpAddr>,
    pub(super) headers: &'a http::HeaderMap,
}

impl VerdictCache {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Result<VerdictCache, ConfigError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| ConfigError::new(format!("the OS random source failed: {e}")))?;
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|_| ConfigError::new("cannot key the verdict cache"))?;
        let shards = capacity.clamp(1, SHARDS);
        Ok(VerdictCache {
            mac,
            shards: (0..shards).map(|_| Mutex::new(HashMap::default())).collect(),
            per_shard: capacity.div_ceil(shards),
            ttl,
        })
    }

    pub(super) fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// The MAC of everything the auth request carries: the forwarded method, scheme, host, URI and
    /// client, and every value of each header in `names` (in that order). Each part is
    /// length-prefixed and each header's values counted, so no two different requests write the
    /// same bytes.
    pub(super) fn key(&self, asked: &Asked<'_>, names: &[http::HeaderName]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        let mut part = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_le_bytes());
            mac.update(bytes);
        };
        part(asked.method);
        part(asked.proto);
        part(asked.host);
        part(asked.uri);
        match asked.client {
            Some(IpAddr::V4(ip)) => part(&ip.octets()),
            Some(IpAddr::V6(ip)) => part(&ip.octets()),
            None => part(b""),
        }
        for name in names {
            let values = asked.headers.get_all(name);
            part(&(values.iter().count() as u64).to_le_bytes());
            for value in values {
                part(value.as_bytes());
            }
        }
        mac.finalize().into_bytes().into()
    }

    fn shard(&self, key: &[u8; 32]) -> MutexGuard<'_, HashMap<[u8; 32], Entry, BuildHasherDefault<MacHasher>>> {
        let index = usize::from(u16::from_le_bytes([key[0], key[1]])) % self.shards.len();
        // No user code runs under the lock, so a poisoned one still holds a consistent map.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The admission stored under `key`, while it has not expired.
    pub(super) fn get(&self, key: &[u8; 32]) -> Option<Arc<Admission>> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some(entry) if entry.expires > now => Some(entry.admission.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `admission` under `key` for the TTL, evicting expired then the oldest entries of
    /// a full shard.
    pub(super) fn insert(&self, key: [u8; 32], admission: Arc<Admission>) {
        let now = Instant::now();
        let Some(expires) = now.checked_add(self.ttl) else { return };
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, entry| entry.expires > now);
            if shard.len() >= self.per_shard
                && let Some(oldest) = shard.iter().min_by_key(|(_, entry)| entry.expires).map(|(k, _)| *k)
            {
                shard.remove(&oldest);
            }
        }
        shard.insert(key, Entry { expires, admission });
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}
