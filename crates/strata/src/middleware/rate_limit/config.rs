//! The configuration: the fields of a `kind = "rate_limit"` table (the limits, the key, the store and
//! what to do when it fails or a key is missing), their defaults, and their mapping onto
//! [`RateLimitBuilder`]: strings become typed values here, every check is the builder's.

use std::time::Duration;

use serde::Deserialize;

use super::builder::{DEFAULT_MAX_KEYS, check_store_timing};
use super::gcra::parse_rate;
use super::{Backend, MissingKey, OnStoreError, Quota, RateLimit, RateLimitBuilder};
use crate::middleware::key::parse_key;
use crate::middleware::{BuildContext, ConfigError, parse_duration_at_most};

/// The configuration of a [`RateLimit`] layer: the fields of a `kind = "rate_limit"` table.
///
/// Its `Debug` output shows the store's URL without its credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// One quota: `"100/s"`, `"10/min"`, `"1000/h"`, `"5/day"` (or `"30/10s"`). Its policy is named
    /// `"default"`. Exactly one of `rate` and `limits` is required.
    #[serde(default)]
    pub rate: Option<String>,
    /// Requests admitted at once with `rate`. Default: the rate's count.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Several quotas, all enforced (at most 4): `[{ rate = "10/s", burst = 20 }, { rate = "1000/day" }]`.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// What a bucket belongs to: `"client_ip"` (default), `"header:NAME"`, `"user"` or `"global"`.
    #[serde(default = "default_key")]
    pub key: String,
    /// What happens to a request without the key's value: `"client_ip"` (default), `"allow"`, `"deny"`.
    #[serde(default)]
    pub missing_key: MissingKey,
    /// `"memory"` (default) or a Redis URL, `"redis://127.0.0.1:6379"`.
    #[serde(default = "default_store")]
    pub store: String,
    /// With a Redis store, what happens while Redis fails: `"local"` (default), `"allow"`, `"deny"`.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// How long one Redis check may take before it counts as a failure: `"50ms"` (default);
    /// 1ms to 10s.
    #[serde(default = "default_store_timeout")]
    pub store_timeout: String,
    /// After a Redis failure, how long checks skip Redis before trying it again: `"1s"` (default);
    /// 10ms to 60s.
    #[serde(default = "default_store_retry")]
    pub store_retry: String,
    /// Prefix of the Redis keys. Default: `"strata:rate_limit:"`. The quotas are part of every
    /// key, so layers with different quotas never share buckets.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// The most keys the memory store (and the local fallback) keeps. Default: 1 000 000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Count and log would-be rejections, never reject. Default: `false`.
    #[serde(default)]
    pub shadow: bool,
    /// Send `RateLimit-Policy` and `RateLimit` on responses. Default: `true`.
    #[serde(default = "default_true")]
    pub headers: bool,
}

impl std::fmt::Debug for RateLimitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitConfig")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("limits", &self.limits)
            .field("key", &self.key)
            .field("missing_key", &self.missing_key)
            .field("store", &super::redact(&self.store))
            .field("on_store_error", &self.on_store_error)
            .field("store_timeout", &self.store_timeout)
            .field("store_retry", &self.store_retry)
            .field("key_prefix", &self.key_prefix)
            .field("max_keys", &self.max_keys)
            .field("shadow", &self.shadow)
            .field("headers", &self.headers)
            .finish()
    }
}

/// One quota of [`RateLimitConfig::limits`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// The rate, as [`RateLimitConfig::rate`].
    pub rate: String,
    /// Requests admitted at once. Default: the rate's count.
    #[serde(default)]
    pub burst: Option<u64>,
    /// The policy's name in the quota fields. Default: the rate as written, e.g. `"10/s"`.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_key() -> String {
    "client_ip".into()
}
fn default_store() -> String {
    "memory".into()
}
fn default_store_timeout() -> String {
    "50ms".into()
}
fn default_store_retry() -> String {
    "1s".into()
}
fn default_key_prefix() -> String {
    "strata:rate_limit:".into()
}
fn default_max_keys() -> usize {
    DEFAULT_MAX_KEYS
}
fn default_true() -> bool {
    true
}

impl Default for RateLimitConfig {
    /// The documented defaults, with no quota yet: [`RateLimit::from_config`] requires `rate` or `limits`.
    fn default() -> Self {
        RateLimitConfig {
            rate: None,
            burst: None,
            limits: Vec::new(),
            key: default_key(),
            missing_key: MissingKey::default(),
            store: default_store(),
            on_store_error: OnStoreError::default(),
            store_timeout: default_store_timeout(),
            store_retry: default_store_retry(),
            key_prefix: default_key_prefix(),
            max_keys: default_max_keys(),
            shadow: false,
            headers: true,
        }
    }
}

impl RateLimit {
    /// Maps a `kind = "rate_limit"` table onto [`RateLimit::builder`]: parses its strings (rates,
    /// key, store URL, durations) and lets [`RateLimitBuilder::build`] validate. Redis is not contacted.
    pub fn from_config(config: RateLimitConfig, _ctx: &BuildContext) -> Result<RateLimit, ConfigError> {
        let in_limits = !config.limits.is_empty();
        config.into_builder()?.build().map_err(|mut e| {
            // Quotas written in `limits` are pointed at there, even when there is only one.
            if in_limits && matches!(e.field, Some("rate" | "burst")) {
                e.field = Some("limits");
            }
            e
        })
    }
}

impl RateLimitConfig {
    /// The builder this table describes. Errors name the key at fault, as the builder's do.
    pub fn into_builder(self) -> Result<RateLimitBuilder, ConfigError> {
        let quotas = match (&self.rate, self.limits.is_empty()) {
            (Some(rate), true) => {
                let mut quota = quota(rate, self.burst, "rate")?;
                quota = quota.named("default");
                vec![quota]
            }
            (None, false) => {
                if self.burst.is_some() {
                    return Err(ConfigError::field("burst", "with `limits`, give each limit its own `burst`"));
                }
                self.limits
                    .iter()
                    .map(|l| {
                        Ok(quota(&l.rate, l.burst, "limits")?
                            .named(l.name.clone().unwrap_or_else(|| l.rate.trim().to_string())))
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()?
            }
            (Some(_), false) => {
                return Err(ConfigError::field(
                    "limits",
                    "give either `rate` (one quota) or `limits` (several), not both",
                ));
            }
            // The builder names what is missing.
            (None, true) => Vec::new(),
        };
        let key = parse_key(&self.key)?;
        let store_timeout = duration(&self.store_timeout, "store_timeout", Duration::from_secs(10))?;
        let store_retry = duration(&self.store_retry, "store_retry", Duration::from_secs(60))?;
        let store = store(&self.store, store_timeout, store_retry, self.key_prefix)?;
        let builder = RateLimit::builder()
            .quotas(quotas)
            .key(key)
            .missing_key(self.missing_key)
            .store(store)
            .on_store_error(self.on_store_error)
            .max_keys(self.max_keys)
            .shadow(self.shadow)
            .headers(self.headers);
        Ok(builder)
    }
}

/// A quota from its rate text and burst; errors name `field`.
fn quota(rate: &str, burst: Option<u64>, field: &'static str) -> Result<Quota, ConfigError> {
    let (count, period) = parse_rate(rate).map_err(|e| ConfigError::field(field, e))?;
    let quota = Quota::new(count, period);
    Ok(match burst {
        Some(burst) => quota.burst(burst),
        None => quota,
    })
}

fn duration(text: &str, field: &'static str, max: Duration) -> Result<Duration, ConfigError> {
    parse_duration_at_most(text, max).map_err(|e| ConfigError::field(field, e))
}

#[cfg_attr(not(feature = "redis"), allow(unused_variables))]
fn store(text: &str, timeout: Duration, retry: Duration, key_prefix: String) -> Result<Backend, ConfigError> {
    if text == "memory" {
        // Unused with memory, but still valid: a later switch to Redis must not reveal them.
        check_store_timing(timeout, retry)?;
        return Ok(Backend::Memory);
    }
    if text.starts_with("redis://") || text.starts_with("rediss://") {
        #[cfg(feature = "redis")]
        return Ok(Backend::Redis(
            super::redis_store::RedisStore::builder(text).timeout(timeout).retry_after(retry).key_prefix(key_prefix),
        ));
        #[cfg(not(feature = "redis"))]
        return Err(ConfigError::field(
            "store",
            format!("`{}`: Redis stores need strata's `redis` feature", super::redact(text)),
        ));
    }
    Err(ConfigError::field(
        "store",
        format!("`{}`: expected \"memory\" or a Redis URL such as \"redis://127.0.0.1:6379\"", super::redact(text)),
    ))
}

#[cfg(test)]
mod tests {
    use super::RateLimitConfig;

    #[test]
    fn debug_output_never_shows_the_store_password() {
        let config: RateLimitConfig =
            toml::from_str("rate = \"10/s\"\nstore = \"redis://app:hunter2@127.0.0.1:6379/0\"\n").unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://<credentials>@127.0.0.1:6379/0"), "{shown}");
    }
}
