//! [`ConcurrencyLimitBuilder`]: the typed settings of a [`ConcurrencyLimit`], and
//! [`build`](ConcurrencyLimitBuilder::build), the one place they are validated (the gateway's
//! `kind = "concurrency_limit"` tables go through it too).

use std::hash::RandomState;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::Semaphore;

use super::ConcurrencyLimit;
use super::permits::Slots;
use crate::middleware::key::{Key, MissingKey};
use crate::middleware::{ConfigError, MAX_DURATION, describe_duration};

/// How long a queued request waits for a permit unless told otherwise.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);
/// The `Retry-After` of a refusal unless told otherwise.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The typed settings of a [`ConcurrencyLimit`].
///
/// Defaults: no `max` (one is required), [`Key::Global`], [`MissingKey::ClientIp`], no queue,
/// `max_wait` [`DEFAULT_MAX_WAIT`] once there is a queue, `retry_after` [`DEFAULT_RETRY_AFTER`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitBuilder {
    max: usize,
    key: Key,
    missing_key: MissingKey,
    queue: usize,
    max_wait: Option<Duration>,
    retry_after: Duration,
}

impl Default for ConcurrencyLimitBuilder {
    fn default() -> Self {
        ConcurrencyLimitBuilder {
            max: 0,
            key: Key::Global,
            missing_key: MissingKey::default(),
            queue: 0,
            max_wait: None,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

impl ConcurrencyLimitBuilder {
    /// The most requests in flight at once, per key (at least 1). Required.
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// What a count belongs to. Default: [`Key::Global`], one count for every request.
    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    /// What a request without the key's value gets. Default: [`MissingKey::ClientIp`].
    pub fn missing_key(mut self, missing_key: MissingKey) -> Self {
        self.missing_key = missing_key;
        self
    }

    /// How many requests per key may wait for a permit when all are taken. Default: 0 (refused
    /// at once).
    pub fn queue(mut self, queue: usize) -> Self {
        self.queue = queue;
        self
    }

    /// How long a queued request waits for a permit before it is refused. Default:
    /// [`DEFAULT_MAX_WAIT`]; only with a queue.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The `Retry-After` of a refusal, in whole seconds (at least 1). Default: [`DEFAULT_RETRY_AFTER`].
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Validates the settings and precomputes the `Retry-After` value. An error names the config
    /// key at fault: `max` (0, or more than a semaphore holds), `max_wait` (zero, longer than
    /// [`MAX_DURATION`], or given without a queue), `retry_after` (not whole seconds, 0, or longer
    /// than [`MAX_DURATION`]).
    pub fn build(self) -> Result<ConcurrencyLimit, ConfigError> {
        if self.max == 0 {
            return Err(ConfigError::field("max", "expected at least 1 request in flight"));
        }
        if self.max > Semaphore::MAX_PERMITS {
            return Err(ConfigError::field("max", format!("expected at most {}", Semaphore::MAX_PERMITS)));
        }
        let max_wait = match (self.max_wait, self.queue) {
            (Some(_), 0) => {
                return Err(ConfigError::field(
                    "max_wait",
                    "only queued requests wait: set `queue` to how many requests may wait, or remove `max_wait`",
                ));
            }
            (Some(wait), _) if wait.is_zero() || wait > MAX_DURATION => {
                return Err(ConfigError::field(
                    "max_wait",
                    format!("expected more than 0s and at most {} (365 days)", describe_duration(MAX_DURATION)),
                ));
            }
            (wait, _) => wait.unwrap_or(DEFAULT_MAX_WAIT),
        };
        let retry = self.retry_after;
        if retry < Duration::from_secs(1) || retry.subsec_nanos() != 0 || retry > MAX_DURATION {
            return Err(ConfigError::field(
                "retry_after",
                format!(
                    "`{}`: Retry-After counts whole seconds: expected 1s to {}",
                    describe_duration(retry),
                    describe_duration(MAX_DURATION)
                ),
            ));
        }
        let slots = match self.key {
            Key::Global => Slots::global(self.max),
            _ => Slots::per_key(self.max),
        };
        Ok(ConcurrencyLimit {
            max: self.max,
            queue: self.queue,
            max_wait,
            retry_after: HeaderValue::from(retry.as_secs()),
            key: self.key,
            missing_key: self.missing_key,
            slots,
            hasher: RandomState::new(),
            warned_no_connection_info: AtomicBool::new(false),
        })
    }
}
