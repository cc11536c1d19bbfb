//! The `kind = "concurrency_limit"` table: its serde shape, and the conversion of its strings into
//! the typed values of a [`ConcurrencyLimitBuilder`], which validates them.

use serde::Deserialize;

use super::{ConcurrencyLimit, ConcurrencyLimitBuilder};
use crate::middleware::key::{MissingKey, parse_key};
use crate::middleware::{BuildContext, ConfigError, parse_duration};

/// The configuration of a [`ConcurrencyLimit`] layer: the fields of a `kind = "concurrency_limit"` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimitConfig {
    /// The most requests in flight at once, per key (at least 1). Required.
    pub max: usize,
    /// What a count belongs to: `"global"` (default), `"client_ip"`, `"header:NAME"` or `"user"`.
    #[serde(default = "default_key")]
    pub key: String,
    /// What happens to a request without the key's value: `"client_ip"` (default), `"allow"`, `"deny"`.
    #[serde(default)]
    pub missing_key: MissingKey,
    /// How many requests per key may wait for a permit. Default: 0 (none wait).
    #[serde(default)]
    pub queue: usize,
    /// How long a queued request waits before it gets the 503: a duration (`"500ms"`, `"2s"`).
    /// Default: `"1s"`; only with a `queue`.
    #[serde(default)]
    pub max_wait: Option<String>,
    /// The `Retry-After` of the 503, in whole seconds: `"1s"` (default).
    #[serde(default = "default_retry_after")]
    pub retry_after: String,
}

fn default_key() -> String {
    "global".into()
}

fn default_retry_after() -> String {
    "1s".into()
}

impl ConcurrencyLimit {
    /// Maps a `kind = "concurrency_limit"` table onto [`ConcurrencyLimit::builder`]: parses its key
    /// and durations and lets [`ConcurrencyLimitBuilder::build`] validate.
    pub fn from_config(config: ConcurrencyLimitConfig, _ctx: &BuildContext) -> Result<ConcurrencyLimit, ConfigError> {
        let mut builder: ConcurrencyLimitBuilder = ConcurrencyLimit::builder()
            .max(config.max)
            .key(parse_key(&config.key)?)
            .missing_key(config.missing_key)
            .queue(config.queue)
            .retry_after(parse_duration(&config.retry_after).map_err(|e| ConfigError::field("retry_after", e))?);
        if let Some(max_wait) = &config.max_wait {
            builder = builder.max_wait(parse_duration(max_wait).map_err(|e| ConfigError::field("max_wait", e))?);
        }
        builder.build()
    }
}
