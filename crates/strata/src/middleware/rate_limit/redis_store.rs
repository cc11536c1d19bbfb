//! The shared store: GCRA state in Redis, so several gateway instances enforce one limit.
//!
//! Each check is one `EVALSHA` of one Lua script: it reads the key's TATs, takes the time from
//! Redis (`TIME`, so instances whose clocks disagree still agree on the schedule), decides, writes
//! only when admitting and sets an expiry at the moment the key becomes idle — Redis forgets idle
//! keys by itself. Redis runs scripts one at a time, so concurrent checks from any number of
//! instances are serialised: the limit holds exactly.
//!
//! The connection is a multiplexed [`ConnectionManager`], made on the first check (building a
//! layer needs no runtime and no reachable Redis) and shared by every request; it reconnects in the
//! background after Redis goes away. Every call is bounded by `timeout`. After a failure, checks do
//! not touch Redis for `retry` (the layer's configured fallback answers at once instead of every
//! request waiting out a timeout), then one request probes it again: when Redis is back, limiting
//! through it resumes with no restart.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::gcra::{self, Gcra, MAX_LIMITS, Outcome};

/// KEYS[1]: the key (a hash: field i holds limit i's TAT in µs). ARGV: n, then T and τ (µs) per
/// limit. Returns {allowed, now, tat1..tatn} (µs; the TATs after the decision).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local stored = redis.call('HMGET', KEYS[1], unpack({1, 2, 3, 4}, 1, n))
local tats = {}
local allowed = 1
for i = 1, n do
  local tat = tonumber(stored[i]) or 0
  if tat < now then tat = now end
  tats[i] = tat
  if now < tat - tonumber(ARGV[2 * i + 1]) then allowed = 0 end
end
if allowed == 1 then
  local idle = 0
  for i = 1, n do
    tats[i] = tats[i] + tonumber(ARGV[2 * i])
    redis.call('HSET', KEYS[1], i, string.format('%.0f', tats[i]))
    if tats[i] - now > idle then idle = tats[i] - now end
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil(idle / 1000) + 1)
end
local out = {allowed, now}
for i = 1, n do out[i + 2] = tats[i] end
return out
";

/// Why a check could not be made in Redis.
#[derive(Debug)]
pub enum StoreError {
    /// A recent failure: Redis is not tried again until the retry delay is over.
    CoolingDown,
    /// No answer within the timeout.
    Timeout,
    /// Redis answered with an error, or the connection failed.
    Redis(redis::RedisError),
    /// Redis answered something the script never returns.
    Unexpected,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::CoolingDown => f.write_str("waiting before trying Redis again"),
            StoreError::Timeout => f.write_str("Redis did not answer in time"),
            StoreError::Redis(e) => write!(f, "{e}"),
            StoreError::Unexpected => f.write_str("unexpected reply from the rate-limit script"),
        }
    }
}

/// GCRA state in Redis (see the module docs).
pub struct RedisStore {
    client: redis::Client,
    connection: OnceLock<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    retry: Duration,
    origin: Instant,
    // Milliseconds since `origin` before which Redis is not tried; 0 when healthy.
    retry_at_ms: AtomicU64,
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("timeout", &self.timeout).field("retry", &self.retry).finish()
    }
}

impl RedisStore {
    /// A store for the Redis at `url` (`redis://host:port/db`); nothing is connected yet.
    pub fn new(url: &str, timeout: Duration, retry: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`{url}`: {e}"))?;
        Ok(RedisStore {
            client,
            connection: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            timeout,
            retry,
            origin: Instant::now(),
            retry_at_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // Reconnection is retried by the next probe, not by piling retries inside one call.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(self.retry);
        let manager =
            ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(StoreError::Redis)?;
        Ok(self.connection.get_or_init(|| manager).clone())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks one request of `key` against `quotas` (already rounded with [`Gcra::in_micros`]).
    pub async fn check(&self, key: &str, quotas: &[Gcra]) -> Result<Outcome, StoreError> {
        let retry_at = self.retry_at_ms.load(Ordering::Relaxed);
        if retry_at != 0 && self.now_ms() < retry_at {
            return Err(StoreError::CoolingDown);
        }
        let result = self.eval(key, quotas).await;
        match &result {
            Ok(_) => {
                if retry_at != 0 {
                    self.retry_at_ms.store(0, Ordering::Relaxed);
                }
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limit: Redis answers again; limiting through it resumes");
                }
            }
            Err(e) => {
                let next = self.now_ms() + u64::try_from(self.retry.as_millis()).unwrap_or(u64::MAX).max(1);
                self.retry_at_ms.store(next, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "rate limit: Redis is unavailable; the configured on_store_error applies");
                }
            }
        }
        result
    }

    async fn eval(&self, key: &str, quotas: &[Gcra]) -> Result<Outcome, StoreError> {
        let mut connection = self.connection()?;
        let mut invocation = self.script.key(key);
        invocation.arg(quotas.len());
        for q in quotas {
            invocation.arg(q.interval / 1_000).arg(q.tolerance / 1_000);
        }
        let reply: Vec<i64> = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(StoreError::Redis)?;
        let [allowed, now, tats @ ..] = reply.as_slice() else { return Err(StoreError::Unexpected) };
        if tats.len() != quotas.len() || tats.len() > MAX_LIMITS {
            return Err(StoreError::Unexpected);
        }
        let micros = |v: i64| u64::try_from(v).unwrap_or(0).saturating_mul(1_000);
        let now = micros(*now);
        let mut ns = [0; MAX_LIMITS];
        for (slot, tat) in ns.iter_mut().zip(tats) {
            *slot = micros(*tat);
        }
        let allowed = *allowed == 1;
        // When rejected, the TATs are unchanged: the wait is until the first moment every quota
        // has room, exactly as the memory store computes it.
        let retry_after = if allowed {
            Duration::ZERO
        } else {
            quotas.iter().zip(ns).map(|(q, tat)| q.wait(tat, now)).max().unwrap_or_default()
        };
        Ok(gcra::outcome(quotas, &ns[..quotas.len()], now, allowed, retry_after))
    }
}
