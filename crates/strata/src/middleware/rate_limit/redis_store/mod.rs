//! The shared store: GCRA state in Redis, so several gateway instances enforce one limit.
//!
//! Checks run in one Lua script: for each key it reads the TATs, takes the time from Redis
//! (`TIME`, so instances whose clocks disagree still agree on the schedule), decides, writes only
//! when admitting and sets an expiry at the moment the key becomes idle — Redis forgets idle keys
//! by itself. Redis runs a script from start to end before anything else, so every check is atomic
//! and concurrent checks from any number of instances are serialised: the limit holds exactly.
//!
//! **Batching.** Checks are handed to a task that sends them to Redis: when several
//! wait at the same moment, they travel in one `EVALSHA` (at most 128 per call), each client's
//! checks still decided in arrival order (see `SCRIPT`). After a call that carried several checks,
//! the task lets the runtime run the tasks that are ready before it collects the next batch, so
//! the requests arriving at that moment join it. At low load a batch is one check and
//! costs one round trip, as a call per check would; under load, a batch amortises the round trip,
//! the system calls on both sides and Redis's command parsing over every check in it — on a small
//! machine that shares its cores with Redis, that is the difference between Redis being the
//! bottleneck or not.
//!
//! **One sender task per store**, whichever runtime or thread a check comes from: the fewer the
//! calls, the larger each batch, and Redis — one thread, shared by every instance — spends most of
//! a call on the call itself. (A task and a connection per per-core worker was measured: a quarter
//! fewer context switches in the gateway, but half-size batches and 60% more Redis CPU per check,
//! and no more requests served; see docs/benchmark-notes.md.) Each thread keeps its own handle to
//! the task's queue, so a check touches no lock; when the runtime the task ran on is dropped (a
//! runtime per test, say), the next check starts a new task on its own runtime.
//!
//! **The connection** belongs to the sender task: it is made on the first check (building a layer
//! needs no runtime and no reachable Redis), and the task drives it itself — the future that
//! writes commands and reads replies is polled by the sender task rather than spawned, so a batch
//! is written and its answer read with no hand-off to another task (each hand-off may wake a
//! thread, which on a small machine costs more than the batch's own work). While the task waits
//! for checks it keeps polling that future, so a connection Redis closed is noticed and replaced at
//! the next batch. A connection that failed or timed out is dropped and made again by the next
//! batch. Every call, connecting included, is bounded by `timeout`, and a check that waited that
//! long for the call before it is answered without being sent: every check has its answer within
//! twice the timeout, with no timer of its own. After a failure, checks do not touch Redis for
//! `retry` (the layer's configured fallback answers at once instead of every request waiting out
//! a timeout), then one request probes it again: when Redis is back, limiting through it resumes
//! with no restart. An outage is logged twice: a WARN when the first call fails, and an INFO
//! "Redis store recovered" line, with how long it was down, when the first call succeeds again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError};
use thread_local::ThreadLocal;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::gcra::{self, Gcra, MAX_LIMITS, Outcome};
use super::store::{CheckFuture, RateLimitStore, StoreError, StoreKey};
use crate::middleware::ConfigError;

/// KEYS: the batch's distinct clients, `n` keys each (one per limit, a string holding that
/// limit's TAT in µs). ARGV: n, then T and τ (µs) per limit, then per client (in KEYS order) how
/// many checks it has in the batch. Returns {now, then per client: how many of its checks are
/// admitted, and each limit's TAT brought up to now before them} (µs).
///
/// A client's checks in one batch are decided at one `now`, and only an admission changes the
/// state, so once one is refused every later one is too: the admitted checks are the first `m`,
/// `m` being the most that fit under every limit — `⌊(now + τ − max(TAT, now)) / T⌋ + 1` for a
/// limit, none when that is negative. The script computes `m` per client instead of deciding
/// every check in turn (the gateway numbers the checks and derives each one's TATs), so a burst
/// from one client costs Redis the same work however many of its requests share the call: one
/// `MGET` for the batch and one `SET … PX` (value and expiry at once) per admitted client. Each
/// `redis.call` and `string.format` costs Redis microseconds, which on a machine it shares with the
/// gateway is throughput taken from both. Times stay below 2⁵³ µs, so Lua's doubles hold them and
/// their quotients exactly.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local interval, tolerance, base = {}, {}, {}
for i = 1, n do
  interval[i] = tonumber(ARGV[2 * i])
  tolerance[i] = tonumber(ARGV[2 * i + 1])
end
local stored = redis.call('MGET', unpack(KEYS))
local out = {now}
for c = 0, #KEYS / n - 1 do
  local admitted = tonumber(ARGV[2 * n + 2 + c])
  for i = 1, n do
    local v = tonumber(stored[c * n + i]) or 0
    if v < now then v = now end
    base[i] = v
    local room = now + tolerance[i] - v
    local fits = 0
    if room >= 0 then fits = math.floor(room / interval[i]) + 1 end
    if fits < admitted then admitted = fits end
  end
  out[#out + 1] = admitted
  for i = 1, n do
    out[#out + 1] = base[i]
    if admitted > 0 then
      local tat = base[i] + admitted * interval[i]
      redis.call('SET', KEYS[c * n + i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    end
  end
end
return out
";

/// The most checks sent in one script call.
const MAX_BATCH: usize = 128;
/// How many times, under load, the sender task lets the runtime run the other ready tasks before
/// collecting a batch (see `send_batches`).
const GATHER_ROUNDS: usize = 3;
/// Checks waiting for the sender task beyond this many are failed at once (Redis cannot keep up).
const QUEUE: usize = 4096;

/// One check waiting for the sender task.
struct Job {
    key: String,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
    /// When the check was queued: one that waited longer than the timeout is not sent.
    queued: Instant,
}

/// What the sender task needs, shared with the store.
struct Shared {
    client: redis::Client,
    script: redis::Script,
    quotas: Box<[Gcra]>,
    timeout: Duration,
    retry: Duration,
}

/// How long one Redis call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// How long checks skip Redis after a failure by default.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The prefix of the Redis keys by default.
pub const DEFAULT_KEY_PREFIX: &str = "strata:rate_limit:";

/// The settings of a Redis store, before it knows its quotas: give it to
/// [`RateLimitBuilder::store`](super::RateLimitBuilder::store), which builds the store with the
/// layer's quotas.
///
/// ```
/// use std::time::Duration;
/// use strata::middleware::rate_limit::{Quota, RateLimit, RedisStore};
///
/// let limit = RateLimit::builder()
///     .quota(Quota::per_second(100).burst(200))
///     .store(RedisStore::builder("redis://127.0.0.1:6379").timeout(Duration::from_millis(20)))
///     .build()
///     .expect("a valid rate limit (Redis is contacted on the first request)");
/// # let _ = limit;
/// ```
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    timeout: Duration,
    retry_after: Duration,
    key_prefix: String,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &super::redact(&self.url))
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl RedisStoreBuilder {
    /// How long one call to Redis may take, connecting included, before it counts as a failure
    /// (a check waiting behind a call in flight is answered within twice this). Default: 50 ms;
    /// 1 ms to 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a failure, how long checks skip Redis (the layer's `on_store_error` answers at once)
    /// before one tries it again. Default: 1 s; 10 ms to 60 s.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The prefix of every Redis key. Default: `"strata:rate_limit:"`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The URL without its credentials, for messages and diagnostics.
    pub fn redacted_url(&self) -> String {
        super::redact(&self.url)
    }

    /// Validates the settings and makes the store for `quotas` (rounded with [`Gcra::in_micros`]);
    /// nothing is connected yet. Errors name the config keys: `store`, `store_timeout`, `store_retry`.
    pub fn build(self, quotas: &[Gcra]) -> Result<RedisStore, ConfigError> {
        super::builder::check_store_timing(self.timeout, self.retry_after)?;
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| ConfigError::field("store", super::redact(&format!("`{}`: {e}", self.url))))?;
        if quotas.is_empty() || quotas.len() > MAX_LIMITS {
            return Err(ConfigError::field("limits", format!("expected 1 to {MAX_LIMITS} quotas")));
        }
        Ok(RedisStore {
            shared: Arc::new(Shared {
                client,
                script: redis::Script::new(SCRIPT),
                quotas: quotas.iter().map(|q| q.in_micros()).collect(),
                timeout: self.timeout,
                retry: self.retry_after,
            }),
            key_prefix: self.key_prefix,
            senders: Box::new(ThreadLocal::new()),
            shared_sender: Mutex::new(None),
            origin: Instant::now(),
            retry_at_ms: AtomicU64::new(0),
            failing_since_ms: AtomicU64::new(0),
        })
    }
}

/// GCRA state in Redis (see the module docs).
pub struct RedisStore {
    shared: Arc<Shared>,
    key_prefix: String,
    // This thread's handle to the queue of the sender task (a clone of `shared_sender`'s), so that
    // a check takes no lock. (Boxed: its table of buckets is ~0.5 KiB, which every holder of a store
    // would carry inline.)
    senders: Box<ThreadLocal<RefCell<mpsc::Sender<Job>>>>,
    // The queue to the store's one sender task; replaced when that task's runtime is gone.
    shared_sender: Mutex<Option<mpsc::Sender<Job>>>,
    origin: Instant,
    // Milliseconds since `origin` before which Redis is not tried; 0 when healthy.
    retry_at_ms: AtomicU64,
    // One more than the milliseconds since `origin` when the current outage began; 0 when healthy.
    // Whoever changes it from or to 0 logs the outage's start or end: one line each per outage.
    failing_since_ms: AtomicU64,
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
    /// The settings of a store in the Redis at `url` (`redis://[:password@]host:port[/db]`,
    /// `redis+unix:///path`), with the defaults.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            retry_after: DEFAULT_RETRY_AFTER,
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
        }
    }

    /// The prefix of its keys.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Queues `job` for the store's sender task, starting the task on the first check (it needs a
    /// runtime), or again when the runtime it ran on is gone.
    fn queue(&self, job: Job) -> Result<(), StoreError> {
        let cell = self.senders.get_or(|| RefCell::new(self.sender_here()));
        let mut sender = cell.borrow_mut();
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(StoreError::Overloaded),
            // The task's runtime was dropped (a runtime per test, say): start one on this one.
            Err(TrySendError::Closed(job)) => {
                *sender = self.sender_here();
                sender.try_send(job).map_err(|_| StoreError::Overloaded)
            }
        }
    }

    /// The queue to the store's sender task, started on the current runtime when there is none or
    /// when the runtime it ran on is gone.
    fn sender_here(&self) -> mpsc::Sender<Job> {
        let mut shared = self.shared_sender.lock().unwrap_or_else(PoisonError::into_inner);
        match &*shared {
            Some(sender) if !sender.is_closed() => sender.clone(),
            _ => shared.insert(self.spawn_sender()).clone(),
        }
    }

    /// Starts a sender task on the current runtime, and gives its queue.
    fn spawn_sender(&self) -> mpsc::Sender<Job> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_batches(self.shared.clone(), rx));
        tx
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks one request of the Redis key `key` (a [`StoreKey::name`]) against the store's quotas.
    pub async fn check_name(&self, key: String) -> Result<Outcome, StoreError> {
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
                // A load, then a swap only during an outage: a healthy store's checks write nothing shared.
                if self.failing_since_ms.load(Ordering::Relaxed) != 0 {
                    let since = self.failing_since_ms.swap(0, Ordering::Relaxed);
                    if since != 0 {
                        let down_for = Duration::from_millis(self.now_ms().saturating_sub(since - 1));
                        tracing::info!(?down_for, "rate limit: Redis store recovered; limiting through it resumes");
                    }
                }
            }
            Err(e) => {
                let retry = u64::try_from(self.shared.retry.as_millis()).unwrap_or(u64::MAX).max(1);
                self.retry_at_ms.store(self.now_ms().saturating_add(retry), Ordering::Relaxed);
                let began = self.now_ms().saturating_add(1);
                if self.failing_since_ms.compare_exchange(0, began, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    tracing::warn!(error = %e, "rate limit: Redis is unavailable; the configured on_store_error applies");
                }
            }
        }
        result
    }

    async fn send(&self, key: String) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue(Job { key, reply, queued: Instant::now() })?;
        // The sender task answers every check within twice the timeout — it waits at most for
        // the call in flight, and bounds its own — so the check needs no timer of its own (each
        // would be registered in and removed from the runtime's timer wheel).
        answer.await.unwrap_or(Err(StoreError::Unexpected))
    }
}

impl RateLimitStore for RedisStore {
    /// Checks `key` against the quotas the store was built with (a layer always passes those).
    fn check<'a>(&'a self, key: &StoreKey<'_>, _quotas: &'a [Gcra]) -> CheckFuture<'a> {
        Box::pin(self.check_name(key.name(&self.key_prefix)))
    }
}

/// A Redis error as a [`StoreError`].
fn redis_error(e: RedisError) -> StoreError {
    StoreError::Backend(Arc::new(e))
}

/// A connection to Redis and the future that drives it: it writes the commands queued on
/// `connection` and hands each its reply. The sender task polls it (see the module docs).
struct Link {
    connection: MultiplexedConnection,
    driver: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Link {
    /// Connects to the store's Redis and runs the connection's handshake (AUTH, SELECT), by
    /// `deadline`.
    async fn connect(shared: &Shared, deadline: tokio::time::Instant) -> Result<Link, StoreError> {
        let info = shared.client.get_connection_info();
        let attempt = async {
            match info.addr() {
                ConnectionAddr::Tcp(host, port) => {
                    let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    // A batch is one small write: send it at once rather than after Nagle's delay.
                    stream.set_nodelay(true)?;
                    Link::handshake(info.redis_settings(), stream).await
                }
                #[cfg(unix)]
                ConnectionAddr::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Link::handshake(info.redis_settings(), stream).await
                }
                _ => Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "TLS connections to Redis are not supported",
                ))),
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(redis_error(e)),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn handshake<S>(settings: &redis::RedisConnectionInfo, stream: S) -> Result<Link, RedisError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // Calls are bounded by the store's own timeout, around the whole call.
        let config = AsyncConnectionConfig::new().set_connection_timeout(None).set_response_timeout(None);
        let (connection, driver) = MultiplexedConnection::new_with_config(settings, stream, config).await?;
        Ok(Link { connection, driver: Box::pin(driver) })
    }
}

/// The sender task: takes every check waiting (up to [`MAX_BATCH`]), runs them in one script call,
/// hands each its answer, and repeats until the store is dropped.
async fn send_batches(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let mut link: Option<Link> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    // How many checks the last call carried: more than one means checks arrive faster than Redis
    // answers them.
    let mut last_batch = 0;
    loop {
        if last_batch > 1 {
            // Under load, let the runtime run what is ready before collecting the next batch: the
            // requests the last call answered finish, and requests that have just arrived reach
            // their checks, so they travel together instead of the next call carrying the one or
            // two that were already queued and the rest waiting for the call after it. Each
            // round trip and script run is paid by more checks. A batch of one (low load) is not
            // held back.
            for _ in 0..GATHER_ROUNDS {
                tokio::task::yield_now().await;
            }
        }
        let received = poll_fn(|cx| {
            // An idle connection is still driven: when Redis closes it, the driver ends here and
            // the next batch connects again instead of failing on the dead connection.
            if let Some(idle) = link.as_mut()
                && idle.driver.as_mut().poll(cx).is_ready()
            {
                link = None;
            }
            rx.poll_recv_many(cx, &mut batch, MAX_BATCH)
        })
        .await;
        if received == 0 {
            return;
        }
        // Checks that already waited out the timeout (behind a slow call) are answered now: sent,
        // they would wait for one more call.
        let now = Instant::now();
        for stale in batch.extract_if(.., |job| now.saturating_duration_since(job.queued) > shared.timeout) {
            let _ = stale.reply.send(Err(StoreError::Timeout));
        }
        if batch.is_empty() {
            continue;
        }
        last_batch = batch.len();
        match run_batch(&shared, &mut link, &batch).await {
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

/// One script call for `batch` on `link` (connected first when there is none), connection
/// included bounded by the timeout. A connection that failed, closed or did not answer in time is
/// dropped.
async fn run_batch(shared: &Shared, link: &mut Option<Link>, batch: &[Job]) -> Result<Vec<Outcome>, StoreError> {
    let deadline = tokio::time::Instant::now() + shared.timeout;
    let (result, driving) = {
        let Link { connection, driver } = match link {
            Some(active) => active,
            None => link.insert(Link::connect(shared, deadline).await?),
        };
        let mut call = pin!(tokio::time::timeout_at(deadline, eval(shared, connection, batch)));
        let mut driving = true;
        let result = poll_fn(|cx| {
            // The driver first: it hands over a reply that has just arrived, so the call completes
            // in this same poll; and again after the call has queued its command, to write it now.
            if driving && driver.as_mut().poll(cx).is_ready() {
                driving = false;
            }
            let polled = call.as_mut().poll(cx);
            if polled.is_pending() && driving && driver.as_mut().poll(cx).is_ready() {
                // The connection is over: the call fails with it (or at its timeout).
                driving = false;
            }
            polled
        })
        .await;
        (result, driving)
    };
    let result = result.unwrap_or(Err(StoreError::Timeout));
    let broken = match &result {
        Ok(_) => false,
        Err(StoreError::Backend(e)) => e.downcast_ref::<RedisError>().is_none_or(RedisError::is_unrecoverable_error),
        Err(_) => true,
    };
    if broken || !driving {
        *link = None;
    }
    result
}

async fn eval(
    shared: &Shared,
    connection: &mut MultiplexedConnection,
    batch: &[Job],
) -> Result<Vec<Outcome>, StoreError> {
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

/// Runs the script for `keys` (one per check, in arrival order, repeats allowed), sending each
/// distinct key once with its number of checks, and gives each check its decision.
async fn decide<'k>(
    shared: &Shared,
    connection: &mut MultiplexedConnection,
    keys: impl ExactSizeIterator<Item = &'k str>,
) -> Result<Decided, StoreError> {
    let quotas = &shared.quotas;
    let n = quotas.len();
    let mut invocation = shared.script.prepare_invoke();
    invocation.arg(n);
    for q in quotas.iter() {
        invocation.arg(q.interval / 1_000).arg(q.tolerance / 1_000);
    }
    // Per check: its client's index in KEYS, and how many checks of that client came before it.
    let mut order: Vec<(usize, u64)> = Vec::with_capacity(keys.len());
    let mut distinct: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
    let mut counts: Vec<u64> = Vec::new();
    for key in keys {
        let client = *distinct.entry(key).or_insert_with(|| {
            if n == 1 {
                invocation.key(key);
            } else {
                for i in 0..n {
                    invocation.key(format!("{key}:{i}"));
                }
            }
            counts.push(0);
            counts.len() - 1
        });
        order.push((client, counts[client]));
        counts[client] += 1;
    }
    for count in &counts {
        invocation.arg(*count);
    }
    let reply: Vec<i64> = invocation.invoke_async(connection).await.map_err(redis_error)?;
    let per_client = 1 + n;
    let Some((now, rest)) = reply.split_first() else { return Err(StoreError::Unexpected) };
    if rest.len() != counts.len() * per_client {
        return Err(StoreError::Unexpected);
    }
    let micros = |v: i64| u64::try_from(v).unwrap_or(0);
    let clients: Vec<&[i64]> = rest.chunks_exact(per_client).collect();
    Ok(Decided {
        now: micros(*now),
        checks: order
            .into_iter()
            .map(|(client, before)| {
                let [admitted, bases @ ..] = clients[client] else { unreachable!("chunks of 1 + n") };
                let admitted = micros(*admitted);
                // An admitted check leaves the TATs one interval further per check up to itself; a
                // refused one reports them after all the admitted ones.
                let steps = (before + 1).min(admitted);
                let mut tats = [0; MAX_LIMITS];
                for ((slot, base), q) in tats.iter_mut().zip(bases).zip(quotas.iter()) {
                    *slot = micros(*base).saturating_add(steps.saturating_mul(q.interval / 1_000));
                }
                (before < admitted, tats)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests;
