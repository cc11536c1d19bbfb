//! What a rate-limit store is: the [`RateLimitStore`] trait the memory store and the Redis store
//! implement, the [`StoreKey`] a layer hands it and the [`StoreError`] it may answer with.
//!
//! A store keeps the GCRA state (see [`super::gcra`]) of every key and decides one request at a
//! time: [`gcra::check`] does the arithmetic on a key's TATs, so a store only has to keep them and
//! make each check atomic for its key.

use std::fmt::Write as _;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use sha2::{Digest, Sha256};

#[cfg(doc)]
use super::gcra::{self};
use super::gcra::{Gcra, Outcome};

/// The future a [`RateLimitStore`] answers a check with.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, StoreError>> + Send + 'a>>;

/// Where a [`RateLimit`](super::RateLimit) layer keeps its counts: one GCRA state per key.
///
/// A layer checks every request through its store, always with the same `quotas` (the layer's own,
/// in its order). The store decides whether every quota has room for one more request of `key`,
/// counts it only when it has (a refused request consumes nothing), and answers with each quota's
/// status, as [`gcra::check`] computes them. Checks of one key must be atomic: two concurrent
/// requests must never both take the last place.
///
/// The future does not borrow `key`: take its [`hash`](StoreKey::hash) or [`name`](StoreKey::name)
/// before building it.
///
/// An `Err` is a store that cannot answer (unreachable, too slow): the layer then applies its
/// [`OnStoreError`](super::OnStoreError) rule, exactly as for Redis.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use strata::middleware::rate_limit::gcra::{self, Gcra, MAX_LIMITS};
/// use strata::middleware::rate_limit::{CheckFuture, RateLimitStore, StoreKey};
///
/// /// Every key's TATs in one locked map, on the wall clock.
/// #[derive(Default)]
/// struct LockedMap {
///     tats: Mutex<HashMap<u64, [u64; MAX_LIMITS]>>,
///     origin: std::sync::OnceLock<std::time::Instant>,
/// }
///
/// impl RateLimitStore for LockedMap {
///     fn check<'a>(&'a self, key: &StoreKey<'_>, quotas: &'a [Gcra]) -> CheckFuture<'a> {
///         let now = self.origin.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64 + 1;
///         let mut tats = self.tats.lock().unwrap();
///         let outcome = gcra::check(quotas, tats.entry(key.hash()).or_default(), now);
///         Box::pin(std::future::ready(Ok(outcome)))
///     }
/// }
/// ```
pub trait RateLimitStore: Send + Sync + 'static {
    /// Checks one request of `key` against `quotas` (see the trait docs).
    fn check<'a>(&'a self, key: &StoreKey<'_>, quotas: &'a [Gcra]) -> CheckFuture<'a>;
}

/// Why a store could not decide a check.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A recent failure: the store is not tried again until its retry delay is over.
    CoolingDown,
    /// No answer within the store's timeout.
    Timeout,
    /// More checks are waiting for the store than it answers.
    Overloaded,
    /// The store answered something it never should.
    Unexpected,
    /// The store failed (a connection error, an error reply).
    Backend(Arc<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::CoolingDown => f.write_str("waiting before trying the store again"),
            StoreError::Timeout => f.write_str("the store did not answer in time"),
            StoreError::Overloaded => f.write_str("too many checks waiting for the store"),
            StoreError::Unexpected => f.write_str("unexpected reply from the store"),
            StoreError::Backend(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The key of a request, as its layer hands it to a store: a keyed hash for in-process maps, a
/// stable name for shared stores. Header, user and custom key values are never given in clear
/// (they may be secrets such as API keys).
#[derive(Debug)]
pub struct StoreKey<'a> {
    value: &'a KeyValue<'a>,
    hasher: &'a RandomState,
    quota_tag: &'a str,
}

/// What a request's key is made of.
#[derive(Debug)]
pub(super) enum KeyValue<'r> {
    Ip(IpAddr),
    Header(&'r [u8]),
    User(&'r str),
    Custom(bytes::Bytes),
    Global,
}

impl<'a> StoreKey<'a> {
    pub(super) fn new(value: &'a KeyValue<'a>, hasher: &'a RandomState, quota_tag: &'a str) -> Self {
        StoreKey { value, hasher, quota_tag }
    }

    /// A 64-bit hash of the key, keyed with a secret of this layer: the same for the layer's whole
    /// life, unpredictable to clients (none can aim at a shard or forge collisions), and different
    /// in another process. For maps in this process.
    pub fn hash(&self) -> u64 {
        match self.value {
            KeyValue::Ip(ip) => self.hasher.hash_one((0u8, ip)),
            KeyValue::Header(v) => self.hasher.hash_one((1u8, v)),
            KeyValue::User(u) => self.hasher.hash_one((2u8, u.as_bytes())),
            KeyValue::Global => self.hasher.hash_one(3u8),
            KeyValue::Custom(v) => self.hasher.hash_one((4u8, v.as_ref())),
        }
    }

    /// The key's name for a shared store: `prefix`, the layer's quotas (layers with different
    /// quotas never share a bucket), then the key: `ip:203.0.113.9`, `global`, or `h:`, `u:`, `c:`
    /// and the first 128 bits of the SHA-256 of a header's, user's or custom key's value, in hex.
    /// The same in every process with the same quotas.
    pub fn name(&self, prefix: &str) -> String {
        let head = |capacity: usize| {
            let mut s = String::with_capacity(prefix.len() + self.quota_tag.len() + capacity);
            s.push_str(prefix);
            s.push_str(self.quota_tag);
            s
        };
        let digest = |tag: &str, bytes: &[u8]| {
            let sum = Sha256::digest(bytes);
            let mut s = head(2 + 32);
            s.push_str(tag);
            s.push(':');
            for b in &sum[..16] {
                let _ = write!(s, "{b:02x}");
            }
            s
        };
        match self.value {
            KeyValue::Ip(ip) => {
                // Every request of an address-keyed limit builds this: no formatting machinery.
                let mut key = head(3 + 39).into_bytes();
                key.extend_from_slice(b"ip:");
                crate::http::client_ip::write_ip(&mut key, *ip);
                // ASCII appended to a `str`: always UTF-8.
                String::from_utf8(key).unwrap_or_default()
            }
            KeyValue::Header(v) => digest("h", v),
            KeyValue::User(u) => digest("u", u.as_bytes()),
            KeyValue::Custom(v) => digest("c", v),
            KeyValue::Global => {
                let mut s = head(6);
                s.push_str("global");
                s
            }
        }
    }
}
