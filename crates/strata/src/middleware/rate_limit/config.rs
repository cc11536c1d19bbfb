//! The configuration: the fields of a `kind = "rate_limit"` table (the limits, the key, the store and
//! what to do when it fails or a key is missing) and their defaults.

use serde::Deserialize;

/// The configuration of a [`RateLimit`](super::RateLimit) layer: the fields of a `kind = "rate_limit"` table.
#[derive(Clone, Debug, Deserialize)]
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
    /// How long one Redis check may take before it counts as a failure. Default: 50; 1 to 10 000.
    #[serde(default = "default_store_timeout_ms")]
    pub store_timeout_ms: u64,
    /// After a Redis failure, how long checks skip Redis before trying it again. Default: 1000;
    /// 10 to 60 000.
    #[serde(default = "default_store_retry_ms")]
    pub store_retry_ms: u64,
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

/// What a request without the key's value gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingKey {
    /// Limited by its client address.
    #[default]
    ClientIp,
    /// Not limited.
    Allow,
    /// Refused with `403 Forbidden`.
    Deny,
}

/// What a Redis-backed layer does while Redis fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
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
                "local: while Redis fails, each instance limits alone with the same quotas (a client may get up to one quota per instance)"
            }
            OnStoreError::Allow => "allow: while Redis fails, requests pass unlimited (fail open)",
            OnStoreError::Deny => "deny: while Redis fails, every request gets 503 (fail closed)",
        }
    }
}

fn default_key() -> String {
    "client_ip".into()
}
fn default_store() -> String {
    "memory".into()
}
fn default_store_timeout_ms() -> u64 {
    50
}
fn default_store_retry_ms() -> u64 {
    1000
}
fn default_key_prefix() -> String {
    "strata:rate_limit:".into()
}
fn default_max_keys() -> usize {
    1_000_000
}
fn default_true() -> bool {
    true
}

impl Default for RateLimitConfig {
    /// The documented defaults, with no quota yet: [`RateLimit::new`](super::RateLimit::new) requires `rate` or `limits`.
    fn default() -> Self {
        RateLimitConfig {
            rate: None,
            burst: None,
            limits: Vec::new(),
            key: default_key(),
            missing_key: MissingKey::default(),
            store: default_store(),
            on_store_error: OnStoreError::default(),
            store_timeout_ms: default_store_timeout_ms(),
            store_retry_ms: default_store_retry_ms(),
            key_prefix: default_key_prefix(),
            max_keys: default_max_keys(),
            shadow: false,
            headers: true,
        }
    }
}
