//! The typed construction of a [`RateLimit`]: quotas, the key a bucket belongs to, the store and
//! what to do when it fails, and [`RateLimitBuilder::build`], the one place they are validated
//! (the gateway's `kind = "rate_limit"` tables go through it too).

use std::fmt::Write as _;
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::gcra::{Clock, Gcra, MAX_LIMITS, MonotonicClock};
use super::memory_store::MemoryStore;
#[cfg(feature = "redis")]
use super::redis_store::RedisStoreBuilder;
use super::store::RateLimitStore;
use super::{RateLimit, SharedStore, Store, StoreBacked};
use crate::middleware::ConfigError;

/// One quota: `count` requests per `period`, `burst` of them at once.
///
/// ```
/// use std::time::Duration;
/// use strata::middleware::rate_limit::Quota;
///
/// let api = Quota::per_second(100).burst(200);
/// let daily = Quota::per_day(10_000).named("daily");
/// let odd = Quota::new(30, Duration::from_secs(10));
/// # let _ = (api, daily, odd);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    count: u64,
    period: Duration,
    burst: Option<u64>,
    name: Option<String>,
}

impl Quota {
    /// `count` requests per `period` (a whole number of seconds, at least one: the quota fields
    /// report it in seconds). The burst defaults to `count`.
    pub fn new(count: u64, period: Duration) -> Quota {
        Quota { count, period, burst: None, name: None }
    }

    /// `count` requests per second.
    pub fn per_second(count: u64) -> Quota {
        Quota::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute.
    pub fn per_minute(count: u64) -> Quota {
        Quota::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour.
    pub fn per_hour(count: u64) -> Quota {
        Quota::new(count, Duration::from_secs(3_600))
    }

    /// `count` requests per day.
    pub fn per_day(count: u64) -> Quota {
        Quota::new(count, Duration::from_secs(86_400))
    }

    /// How many requests may arrive at once (then one every `period / count`). Default: `count`.
    pub fn burst(mut self, burst: u64) -> Quota {
        self.burst = Some(burst);
        self
    }

    /// The policy's name in the quota fields (printable ASCII, no quotes or backslashes). Default:
    /// `"default"` for a layer's only quota, the rate (`"10/s"`, `"1000/day"`) when it has several.
    pub fn named(mut self, name: impl Into<String>) -> Quota {
        self.name = Some(name.into());
        self
    }

    /// The rate in the config's syntax: `"100/s"`, `"10/min"`, `"1000/h"`, `"5/day"`, `"30/10s"`.
    pub fn rate(&self) -> String {
        let unit = match self.period.as_secs() {
            1 => "s".to_string(),
            60 => "min".to_string(),
            3_600 => "h".to_string(),
            86_400 => "day".to_string(),
            secs => format!("{secs}s"),
        };
        format!("{}/{unit}", self.count)
    }
}

// The key a bucket belongs to is shared with `concurrency_limit`: it lives in `middleware::key`.
pub use crate::middleware::key::{Key, KeyExtractor, MissingKey};

/// What a layer does while its shared store (Redis, or one of your own) fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize), serde(rename_all = "snake_case"))]
pub enum OnStoreError {
    /// A local memory limiter with the same quotas decides (per instance).
    #[default]
    Local,
    /// Requests pass unlimited (fail open).
    Allow,
    /// Requests get `503 Service Unavailable` (fail closed).
    Deny,
}

impl OnStoreError {
    pub(super) fn describe(self) -> &'static str {
        match self {
            OnStoreError::Local => {
                "local: while the store fails, each instance limits alone with the same quotas (a client may get up to one quota per instance)"
            }
            OnStoreError::Allow => "allow: while the store fails, requests pass unlimited (fail open)",
            OnStoreError::Deny => "deny: while the store fails, every request gets 503 (fail closed)",
        }
    }
}

/// Where a layer keeps its counts: give one to [`RateLimitBuilder::store`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Backend {
    /// In this process ([`MemoryStore`]): each instance limits on its own. The default.
    #[default]
    Memory,
    /// In Redis, shared by every instance using it.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis(RedisStoreBuilder),
    /// A store of your own.
    Custom(CustomStore),
}

impl Backend {
    /// A store of your own (see [`RateLimitStore`]).
    pub fn custom(store: Arc<dyn RateLimitStore>) -> Backend {
        Backend::Custom(CustomStore(store))
    }
}

#[cfg(feature = "redis")]
impl From<RedisStoreBuilder> for Backend {
    fn from(redis: RedisStoreBuilder) -> Backend {
        Backend::Redis(redis)
    }
}

/// A [`RateLimitStore`] of your own, as a [`Backend`].
#[derive(Clone)]
pub struct CustomStore(pub Arc<dyn RateLimitStore>);

impl std::fmt::Debug for CustomStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomStore(..)")
    }
}

/// The shortest and longest timeout a shared store accepts for one call.
pub const STORE_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(10));
/// The shortest and longest delay before a failed shared store is tried again.
pub const STORE_RETRY_RANGE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(60));

/// Checks a shared store's timeout and retry delay against their ranges; errors name the config
/// keys `store_timeout` and `store_retry`.
#[cfg(any(feature = "redis", feature = "config"))]
pub(super) fn check_store_timing(timeout: Duration, retry: Duration) -> Result<(), ConfigError> {
    let (min, max) = STORE_TIMEOUT_RANGE;
    if !(min..=max).contains(&timeout) {
        return Err(ConfigError::field("store_timeout", "expected 1ms to 10s"));
    }
    let (min, max) = STORE_RETRY_RANGE;
    if !(min..=max).contains(&retry) {
        return Err(ConfigError::field("store_retry", "expected 10ms to 60s"));
    }
    Ok(())
}

/// The typed settings of a [`RateLimit`]; [`build`](RateLimitBuilder::build) validates them.
#[derive(Clone)]
pub struct RateLimitBuilder {
    quotas: Vec<Quota>,
    key: Key,
    missing_key: MissingKey,
    store: Backend,
    on_store_error: OnStoreError,
    max_keys: usize,
    shadow: bool,
    headers: bool,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RateLimitBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("quotas", &self.quotas)
            .field("key", &self.key)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The most keys the memory store keeps by default.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

impl Default for RateLimitBuilder {
    /// No quota yet (one is required), and the documented defaults.
    fn default() -> Self {
        RateLimitBuilder {
            quotas: Vec::new(),
            key: Key::ClientIp,
            missing_key: MissingKey::default(),
            store: Backend::Memory,
            on_store_error: OnStoreError::default(),
            max_keys: DEFAULT_MAX_KEYS,
            shadow: false,
            headers: true,
            clock: None,
        }
    }
}

impl RateLimitBuilder {
    /// Adds a quota; every quota is enforced (at most [`MAX_LIMITS`], at least one).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// Adds several quotas.
    pub fn quotas(mut self, quotas: impl IntoIterator<Item = Quota>) -> Self {
        self.quotas.extend(quotas);
        self
    }

    /// What a bucket belongs to. Default: [`Key::ClientIp`].
    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    /// What a request without the key's value gets. Default: [`MissingKey::ClientIp`].
    pub fn missing_key(mut self, missing_key: MissingKey) -> Self {
        self.missing_key = missing_key;
        self
    }

    /// Where the counts live. Default: [`Backend::Memory`].
    pub fn store(mut self, store: impl Into<Backend>) -> Self {
        self.store = store.into();
        self
    }

    /// With a shared store, what happens while it fails. Default: [`OnStoreError::Local`].
    pub fn on_store_error(mut self, on_store_error: OnStoreError) -> Self {
        self.on_store_error = on_store_error;
        self
    }

    /// Count and log would-be rejections, never reject, send no quota fields. Default: `false`.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Send `RateLimit-Policy` and `RateLimit` on responses. Default: `true`.
    pub fn headers(mut self, headers: bool) -> Self {
        self.headers = headers;
        self
    }

    /// The most keys the memory store (and the local fallback) keeps. Default: 1 000 000; at least 1.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The clock of the memory store and the local fallback (tests move a
    /// [`ManualClock`](super::gcra::ManualClock) by hand). Default: [`MonotonicClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings and precomputes the quotas and header values; a Redis store is not
    /// contacted. An error names the config key at fault: `rate` and `burst` for a layer's only
    /// quota, `limits` when it has several, `max_keys`, `store`, `store_timeout`, `store_retry`.
    pub fn build(self) -> Result<RateLimit, ConfigError> {
        if self.quotas.is_empty() {
            return Err(ConfigError::new(
                "a rate limit needs a quota: `rate = \"100/s\"` or `limits = [{ rate = \"10/s\" }, { rate = \"1000/day\" }]`",
            ));
        }
        if self.quotas.len() > MAX_LIMITS {
            return Err(ConfigError::field("limits", format!("at most {MAX_LIMITS} limits per layer")));
        }
        let single = self.quotas.len() == 1;
        let (rate_field, burst_field) = if single { ("rate", "burst") } else { ("limits", "limits") };
        let mut quotas = Vec::with_capacity(self.quotas.len());
        let mut names: Vec<String> = Vec::with_capacity(self.quotas.len());
        for quota in &self.quotas {
            let rate = quota.rate();
            if quota.count == 0 {
                return Err(ConfigError::field(
                    rate_field,
                    format!("`{rate}`: the rate must admit at least one request"),
                ));
            }
            if quota.period < Duration::from_secs(1) || quota.period.subsec_nanos() != 0 {
                return Err(ConfigError::field(
                    rate_field,
                    format!("a period of {:?}: expected a whole number of seconds, at least one", quota.period),
                ));
            }
            // The rate alone first: its errors are the rate's, the rest are the burst's.
            Gcra::new(quota.count, quota.period, 1)
                .map_err(|e| ConfigError::field(rate_field, format!("`{rate}`: {e}")))?;
            let gcra = Gcra::new(quota.count, quota.period, quota.burst.unwrap_or(quota.count))
                .map_err(|e| ConfigError::field(burst_field, format!("`{rate}`: {e}")))?;
            let name = match &quota.name {
                Some(name) => name.clone(),
                None if single => "default".to_string(),
                None => rate,
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ') {
                return Err(ConfigError::field(
                    rate_field,
                    format!("policy name `{name}`: expected printable ASCII without quotes or backslashes"),
                ));
            }
            if names.contains(&name) {
                return Err(ConfigError::field(
                    rate_field,
                    format!("two limits are named `{name}`: give them distinct `name`s"),
                ));
            }
            names.push(name);
            quotas.push(gcra);
        }
        if self.max_keys == 0 {
            return Err(ConfigError::field("max_keys", "expected at least 1"));
        }

        let clock = self.clock.unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        let shared = |shared: SharedStore, description: String| {
            Store::Shared(Box::new(StoreBacked {
                shared,
                on_error: self.on_store_error,
                fallback: MemoryStore::new(self.max_keys, clock.clone()),
                description,
            }))
        };
        let store = match self.store {
            Backend::Memory => Store::Memory(MemoryStore::new(self.max_keys, clock.clone())),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => {
                // Redis works in whole microseconds: decide and report with the same rounded quotas.
                quotas = quotas.into_iter().map(Gcra::in_micros).collect();
                let description = format!("Redis at {}", redis.redacted_url());
                shared(SharedStore::Redis(redis.build(&quotas)?), description)
            }
            Backend::Custom(CustomStore(store)) => shared(SharedStore::Custom(store), "a custom store".into()),
        };

        // The quotas are part of a shared store's keys: two layers with different quotas never
        // share a bucket.
        let mut quota_tag = String::new();
        for (i, q) in quotas.iter().enumerate() {
            let sep = if i == 0 { "" } else { "+" };
            let _ = write!(quota_tag, "{sep}{}/{}s;b{}", q.count, q.period.as_secs(), q.burst);
        }
        quota_tag.push(':');

        let policy_header = if self.headers && !self.shadow {
            let text = names
                .iter()
                .zip(&quotas)
                .map(|(n, q)| format!("\"{n}\";q={};w={}", q.count, q.period.as_secs()))
                .collect::<Vec<_>>()
                .join(", ");
            Some(
                HeaderValue::from_str(&text)
                    .map_err(|_| ConfigError::field(rate_field, "policy names must be header-safe"))?,
            )
        } else {
            None
        };

        Ok(RateLimit {
            quotas: quotas.into_boxed_slice(),
            names: names.into_boxed_slice(),
            key: self.key,
            missing_key: self.missing_key,
            store,
            quota_tag,
            hasher: RandomState::new(),
            policy_header,
            shadow: self.shadow,
            shadow_rejections: AtomicU64::new(0),
            last_shadow_log_ms: AtomicU64::new(0),
            origin: Instant::now(),
            warned_no_connection_info: AtomicBool::new(false),
        })
    }
}
