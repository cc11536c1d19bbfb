//! The shared store: GCRA state in Redis, so several gateway instances enforce one limit.
//!
//! Checks run in one Lua script: for each key it reads the TATs, takes the time from Redis
//! (`TIME`, so instances whose clocks disagree still agree on the schedule), decides, writes only
//! when admitting and sets an expiry at the moment the key becomes idle — Redis forgets idle keys
//! by itself. Redis runs a script from start to end before anything else, so every check is atomic
//! and concurrent checks from any number of instances are serialised: the limit holds exactly.
//!
//! **Batching.** Checks are handed to one task per store that sends them to Redis: when several
//! wait at the same moment, they travel in one `EVALSHA` (at most 128 per call), each still decided
//! in arrival order inside the script. At low load a batch is one check and costs one round trip,
//! as a call per check would; under load, a batch amortises the round trip, the system calls on both
//! sides and Redis's command parsing over every check in it — on a small machine that shares its
//! cores with Redis, that is the difference between Redis being the bottleneck or not.
//!
//! The connection is a multiplexed [`ConnectionManager`], made on the first check (building a
//! layer needs no runtime and no reachable Redis); it reconnects in the background after Redis goes
//! away. Every call is bounded by `timeout`. After a failure, checks do not touch Redis for `retry`
//! (the layer's configured fallback answers at once instead of every request waiting out a
//! timeout), then one request probes it again: when Redis is back, limiting through it resumes with
//! no restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use super::gcra::{self, Gcra, MAX_LIMITS, Outcome};

/// KEYS: the batch's distinct clients, `n` keys each (one per limit, a string holding that
/// limit's TAT in µs). ARGV: n, then T and τ (µs) per limit, then per check (in arrival order) the
/// 0-based index of its client in KEYS. Returns {now, then per check: allowed, tat1..tatn} (µs;
/// the TATs after the decision).
///
/// Every check is decided in order against the state the checks before it left, and each client's
/// state is read once (one `MGET` for the batch) and written once (one `SET … PX`, value and expiry
/// at once, after the last check): a burst from one client costs Redis one write however many of
/// its requests share the call. Each `redis.call` and `string.format` costs Redis microseconds,
/// which on a machine it shares with the gateway is throughput taken from both.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local interval, tolerance = {}, {}
for i = 1, n do
  interval[i] = tonumber(ARGV[2 * i])
  tolerance[i] = tonumber(ARGV[2 * i + 1])
end
local stored = redis.call('MGET', unpack(KEYS))
local tat = {}
for j = 1, #KEYS do tat[j] = tonumber(stored[j]) or 0 end
local changed = {}
local out = {now}
for c = 2 * n + 2, #ARGV do
  local base = tonumber(ARGV[c]) * n
  local allowed = 1
  for i = 1, n do
    local v = tat[base + i]
    if v < now then v = now end
    if now < v - tolerance[i] then allowed = 0 end
  end
  out[#out + 1] = allowed
  for i = 1, n do
    local j = base + i
    local v = tat[j]
    if v < now then v = now end
    if allowed == 1 then
      v = v + interval[i]
      tat[j] = v
      changed[j] = true
    end
    out[#out + 1] = v
  end
end
for j in pairs(changed) do
  redis.call('SET', KEYS[j], string.format('%.0f', tat[j]), 'PX', math.ceil((tat[j] - now) / 1000) + 1)
end
return out
";

/// The most checks sent in one script call.
const MAX_BATCH: usize = 128;
/// Checks waiting for the sender task beyond this many are failed at once (Redis cannot keep up).
const QUEUE: usize = 4096;

/// Why a check could not be made in Redis.
#[derive(Clone, Debug)]
pub enum StoreError {
    /// A recent failure: Redis is not tried again until the retry delay is over.
    CoolingDown,
    /// No answer within the timeout.
    Timeout,
    /// More checks are waiting for Redis than it answers.
    Overloaded,
    /// Redis answered with an error, or the connection failed.
    Redis(Arc<redis::RedisError>),
    /// Redis answered something the script never returns.
    Unexpected,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::CoolingDown => f.write_str("waiting before trying Redis again"),
            StoreError::Timeout => f.write_str("Redis did not answer in time"),
            StoreError::Overloaded => f.write_str("too many checks waiting for Redis"),
            StoreError::Redis(e) => write!(f, "{e}"),
            StoreError::Unexpected => f.write_str("unexpected reply from the rate-limit script"),
        }
    }
}

/// One check waiting for the sender task.
struct Job {
    key: String,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// What the sender task needs, shared with the store.
struct Shared {
    client: redis::Client,
    script: redis::Script,
    quotas: Box<[Gcra]>,
    timeout: Duration,
    retry: Duration,
}

/// GCRA state in Redis (see the module docs).
pub struct RedisStore {
    shared: Arc<Shared>,
    jobs: OnceLock<mpsc::Sender<Job>>,
    origin: Instant,
    // Milliseconds since `origin` before which Redis is not tried; 0 when healthy.
    retry_at_ms: AtomicU64,
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.shared.timeout)
            .field("retry", &self.shared.retry)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store enforcing `quotas` (rounded with [`Gcra::in_micros`]) in the Redis at `url`
    /// (`redis://host:port/db`); nothing is connected yet.
    pub fn new(url: &str, quotas: &[Gcra], timeout: Duration, retry: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`{url}`: {e}"))?;
        if quotas.is_empty() || quotas.len() > MAX_LIMITS {
            return Err(format!("expected 1 to {MAX_LIMITS} quotas"));
        }
        Ok(RedisStore {
            shared: Arc::new(Shared {
                client,
                script: redis::Script::new(SCRIPT),
                quotas: quotas.iter().map(|q| q.in_micros()).collect(),
                timeout,
                retry,
            }),
            jobs: OnceLock::new(),
            origin: Instant::now(),
            retry_at_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// The queue to the sender task, started on the first check (it needs a runtime).
    fn jobs(&self) -> &mpsc::Sender<Job> {
        self.jobs.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(send_batches(self.shared.clone(), rx));
            tx
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks one request of `key`.
    pub async fn check(&self, key: String) -> Result<Outcome, StoreError> {
        let retry_at = self.retry_at_ms.load(Ordering::Relaxed);
        if retry_at != 0 && self.now_ms() < retry_at {
            return Err(StoreError::CoolingDown);
        }
        let result = self.send(key).await;
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
                let retry = u64::try_from(self.shared.retry.as_millis()).unwrap_or(u64::MAX).max(1);
                self.retry_at_ms.store(self.now_ms().saturating_add(retry), Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "rate limit: Redis is unavailable; the configured on_store_error applies");
                }
            }
        }
        result
    }

    async fn send(&self, key: String) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs().try_send(Job { key, reply }).map_err(|_| StoreError::Overloaded)?;
        // The sender task bounds each call by the timeout; a check may also wait for the call
        // before it, hence twice the timeout here.
        match tokio::time::timeout(self.shared.timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Unexpected),
            Err(_) => Err(StoreError::Timeout),
        }
    }
}

/// The sender task: takes every check waiting (up to [`MAX_BATCH`]), runs them in one script call,
/// hands each its answer, and repeats until the store is dropped.
async fn send_batches(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(shared.timeout))
        .set_response_timeout(Some(shared.timeout))
        // Reconnection is retried by the next probe, not by piling retries inside one call.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(shared.retry);
    let mut connection = match ConnectionManager::new_lazy_with_config(shared.client.clone(), config) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "rate limit: cannot set up the Redis connection");
            None
        }
    };
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = match connection.as_mut() {
            Some(c) => eval(&shared, c, &batch).await,
            None => Err(StoreError::Unexpected),
        };
        match results {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn eval(shared: &Shared, connection: &mut ConnectionManager, batch: &[Job]) -> Result<Vec<Outcome>, StoreError> {
    let quotas = &shared.quotas;
    let decided = decide(shared, connection, batch.iter().map(|job| job.key.as_str())).await?;
    Ok(decided
        .checks
        .iter()
        .map(|(allowed, tats)| {
            let tats = tats.map(|tat| tat.saturating_mul(1_000));
            let now = decided.now.saturating_mul(1_000);
            // When rejected, the TATs are unchanged: the wait is until the first moment every
            // quota has room, exactly as the memory store computes it.
            let retry_after = if *allowed {
                Duration::ZERO
            } else {
                quotas.iter().zip(tats).map(|(q, tat)| q.wait(tat, now)).max().unwrap_or_default()
            };
            gcra::outcome(quotas, &tats[..quotas.len()], now, *allowed, retry_after)
        })
        .collect())
}

/// What the script decided for one batch, in Redis's microseconds.
#[derive(Debug)]
struct Decided {
    /// Redis's clock when the batch ran.
    now: u64,
    /// Per check, in order: admitted, and each limit's TAT after the decision.
    checks: Vec<(bool, [u64; MAX_LIMITS])>,
}

/// Runs the script for `keys` (one per check, repeats allowed), sending each distinct key once.
async fn decide<'k>(
    shared: &Shared,
    connection: &mut ConnectionManager,
    keys: impl ExactSizeIterator<Item = &'k str>,
) -> Result<Decided, StoreError> {
    let quotas = &shared.quotas;
    let checks = keys.len();
    let mut invocation = shared.script.prepare_invoke();
    invocation.arg(quotas.len());
    for q in quotas.iter() {
        invocation.arg(q.interval / 1_000).arg(q.tolerance / 1_000);
    }
    let mut distinct: HashMap<&str, usize> = HashMap::with_capacity(checks);
    for key in keys {
        let next = distinct.len();
        let index = *distinct.entry(key).or_insert_with(|| {
            if quotas.len() == 1 {
                invocation.key(key);
            } else {
                for i in 0..quotas.len() {
                    invocation.key(format!("{key}:{i}"));
                }
            }
            next
        });
        invocation.arg(index);
    }
    let reply: Vec<i64> = tokio::time::timeout(shared.timeout, invocation.invoke_async(connection))
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(|e| StoreError::Redis(Arc::new(e)))?;
    let per_check = 1 + quotas.len();
    let Some((now, rest)) = reply.split_first() else { return Err(StoreError::Unexpected) };
    if rest.len() != checks * per_check {
        return Err(StoreError::Unexpected);
    }
    let micros = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Decided {
        now: micros(*now),
        checks: rest
            .chunks_exact(per_check)
            .map(|chunk| {
                let mut tats = [0; MAX_LIMITS];
                for (slot, tat) in tats.iter_mut().zip(&chunk[1..]) {
                    *slot = micros(*tat);
                }
                (chunk[0] == 1, tats)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A redis-server of the test's own on a free loopback port, stopped when dropped.
    struct Redis(Child, u16);

    impl Redis {
        fn start() -> Redis {
            // Below the kernel's ephemeral range (32768–60999 by default): no `bind(0)` or outgoing
            // connection of a concurrent test can take it before redis-server binds it.
            let offset = std::process::id() % 10_000;
            let port = (0..10_000)
                .map(|i| 20_000 + u16::try_from((offset + i) % 10_000).unwrap())
                .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
                .expect("a free loopback port");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH (`.ci/run` installs it)");
            let redis = Redis(child, port);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not listen on port {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
            redis
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn commands(connection: &mut ConnectionManager, name: &str) -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(connection).await.unwrap();
        let prefix = format!("cmdstat_{name}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    }

    #[tokio::test]
    async fn a_batch_decides_each_check_in_order_and_writes_each_client_once() {
        let redis = Redis::start();
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.1)).unwrap();
        let per_second = Gcra::new(3, Duration::from_secs(1), 3).unwrap().in_micros();
        let per_minute = Gcra::new(5, Duration::from_secs(60), 4).unwrap().in_micros();
        let shared = Shared {
            client: client.clone(),
            script: redis::Script::new(SCRIPT),
            quotas: Box::new([per_second, per_minute]),
            timeout: Duration::from_secs(5),
            retry: Duration::from_secs(1),
        };
        let mut connection = ConnectionManager::new(client).await.unwrap();
        // The same quotas in microseconds, for the reference decisions made here with gcra::check.
        let micros: Vec<Gcra> = shared
            .quotas
            .iter()
            .map(|q| Gcra { interval: q.interval / 1_000, tolerance: q.tolerance / 1_000, ..*q })
            .collect();
        let mut reference: HashMap<&str, [u64; MAX_LIMITS]> = HashMap::new();
        let batch = ["a", "b", "a", "a", "a", "c", "b", "a"];
        let mut admitted = 0;
        for round in 0..3 {
            let sets_before = commands(&mut connection, "set").await;
            let decided = decide(&shared, &mut connection, batch.iter().copied()).await.unwrap();
            assert_eq!(decided.checks.len(), batch.len());
            for (i, (key, (allowed, tats))) in batch.iter().zip(&decided.checks).enumerate() {
                let state = reference.entry(key).or_insert([0; MAX_LIMITS]);
                let expected = gcra::check(&micros, state, decided.now);
                assert_eq!(*allowed, expected.allowed, "round {round}, check {i} ({key})");
                // A rejected check reports its TATs brought up to now, as the script returns them.
                let want: Vec<u64> = state[..2].iter().map(|t| (*t).max(decided.now)).collect();
                assert_eq!(tats[..2], want[..], "round {round}, check {i} ({key})");
                admitted += usize::from(*allowed);
            }
            // One write per limit of each client with an admitted check, not one per check.
            let written =
                ["a", "b", "c"].iter().filter(|k| decided.checks.iter().zip(&batch).any(|(c, b)| c.0 && b == *k));
            let writes = commands(&mut connection, "set").await - sets_before;
            assert_eq!(writes, written.count() as u64 * 2, "round {round}");
        }
        // Three per second with a burst of three: `a`'s 5th check of the first round is refused.
        assert!(admitted > 3 && admitted < 3 * batch.len(), "{admitted} admitted");
        // What Redis keeps is the state after the last check, with an expiry.
        for key in ["a", "b", "c"] {
            for (limit, tat) in reference[key][..2].iter().enumerate() {
                let stored: u64 =
                    redis::cmd("GET").arg(format!("{key}:{limit}")).query_async(&mut connection).await.unwrap();
                assert_eq!(stored, *tat, "{key}:{limit}");
                let ttl: i64 =
                    redis::cmd("PTTL").arg(format!("{key}:{limit}")).query_async(&mut connection).await.unwrap();
                assert!(ttl > 0, "{key}:{limit} expires ({ttl} ms)");
            }
        }
    }
}
