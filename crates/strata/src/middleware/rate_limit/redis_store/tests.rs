//! The Redis store against a real `redis-server`.

use super::*;
use std::process::{Child, Command, Stdio};

/// A redis-server of the test's own on a free loopback port, stopped when dropped.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        // Below the kernel's ephemeral range (32768–60999 by default): no `bind(0)` or outgoing
        // connection of a concurrent test can take it before redis-server binds it.
        // Each start in this process begins its search at a port of its own: tests start their
        // servers concurrently, and two searches from one port would find the same one.
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let offset = u64::from(std::process::id()) + 97 * STARTS.fetch_add(1, Ordering::Relaxed);
        let port = (0..10_000)
            .map(|i| 20_000 + u16::try_from((offset + i) % 10_000).unwrap())
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free loopback port");
        Redis::start_on(port)
    }

    fn start_on(port: u16) -> Redis {
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

async fn commands(connection: &mut MultiplexedConnection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(connection).await.unwrap();
    let prefix = format!("cmdstat_{name}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_redis_restarted_while_the_store_is_idle_fails_no_check() {
    let redis = Redis::start();
    let port = redis.1;
    let quota = Gcra::new(100, Duration::from_secs(60), 100).unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let store = RedisStore::builder(&url)
        .timeout(Duration::from_secs(5))
        .retry_after(Duration::from_secs(60))
        .build(&[quota])
        .unwrap();
    assert!(store.check_name("client".into()).await.unwrap().allowed);
    drop(redis);
    let _redis = Redis::start_on(port);
    // The idle connection's end has been seen by the sender task, which connects again for
    // the next check: no check fails, so no `retry` period (a minute here) begins.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert!(store.check_name("client".into()).await.expect("a check after the restart").allowed);
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_redis_behind_a_unix_socket_limits_as_over_tcp() {
    let dir = std::env::temp_dir().join(format!("strata-redis-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket", socket.to_str().unwrap(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (`.ci/run` installs it)");
    // Stopped when dropped, even if an assertion fails first (it listens on no port).
    let redis = Redis(child, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen on {}", socket.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let quota = Gcra::new(2, Duration::from_secs(60), 2).unwrap();
    let url = format!("redis+unix://{}", socket.display());
    let store = RedisStore::builder(&url)
        .timeout(Duration::from_secs(5))
        .retry_after(Duration::from_secs(1))
        .build(&[quota])
        .unwrap();
    let mut admitted = Vec::new();
    for _ in 0..3 {
        admitted.push(store.check_name("client".into()).await.expect("a check through the socket").allowed);
    }
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(admitted, [true, true, false], "two per minute, then refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_fails_every_check_within_twice_the_timeout() {
    // Accepted by the kernel's backlog, never read: the handshake gets no answer.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let quota = Gcra::new(100, Duration::from_secs(1), 100).unwrap();
    let timeout = Duration::from_millis(300);
    let store = Arc::new(
        RedisStore::builder(&url).timeout(timeout).retry_after(Duration::from_secs(5)).build(&[quota]).unwrap(),
    );
    let started = Instant::now();
    let checks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.check_name(format!("client-{i}")).await })
        })
        .collect();
    for check in checks {
        let result = check.await.unwrap();
        assert!(
            matches!(result, Err(StoreError::Timeout | StoreError::CoolingDown)),
            "expected a timeout, got {result:?}"
        );
    }
    let took = started.elapsed();
    assert!(took >= timeout, "answered after {took:?}, before the timeout");
    assert!(took < timeout * 2 + Duration::from_millis(200), "the last check waited {took:?}");
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
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
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
        let written = ["a", "b", "c"].iter().filter(|k| decided.checks.iter().zip(&batch).any(|(c, b)| c.0 && b == *k));
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
            let ttl: i64 = redis::cmd("PTTL").arg(format!("{key}:{limit}")).query_async(&mut connection).await.unwrap();
            assert!(ttl > 0, "{key}:{limit} expires ({ttl} ms)");
        }
    }
}

/// How many clients `redis` has connected now (`INFO clients`), the caller's own included.
async fn connected_clients(connection: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query_async(connection).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("connected_clients:")).unwrap().trim().parse().unwrap()
}

#[test]
fn single_threaded_runtimes_on_two_threads_share_one_connection_and_one_limit() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let quota = Gcra::new(10, Duration::from_secs(60), 10).unwrap();
    let store = Arc::new(RedisStore::builder(&url).timeout(Duration::from_secs(5)).build(&[quota]).unwrap());
    // Two threads, a single-threaded runtime each (as the gateway's per-core workers), both
    // checking one client; each keeps its runtime alive until both have counted the connections.
    let counted = Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (store, counted, url) = (store.clone(), counted.clone(), url.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    let checks = (0..15).map(|_| store.check_name("client".into()));
                    let admitted = futures_util::future::join_all(checks)
                        .await
                        .into_iter()
                        .filter(|r| r.as_ref().expect("a check through Redis").allowed)
                        .count();
                    let mut query = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
                    let wait = |barrier: Arc<std::sync::Barrier>| tokio::task::spawn_blocking(move || barrier.wait());
                    wait(counted.clone()).await.unwrap();
                    let clients = connected_clients(&mut query).await;
                    // Neither thread's connections close before the other has counted them.
                    wait(counted).await.unwrap();
                    (admitted, clients)
                })
            })
        })
        .collect();
    let results: Vec<(usize, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().map(|r| r.0).sum::<usize>(), 10, "one limit across both threads: {results:?}");
    // The store's one connection and both queries' are open at once: the second thread's checks
    // went to the sender task the first one started, and batch with its checks.
    for (_, clients) in &results {
        assert_eq!(*clients, 3, "one store connection and a query per thread: {results:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_threaded_runtime_shares_one_connection() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let quota = Gcra::new(10, Duration::from_secs(60), 10).unwrap();
    let store = Arc::new(RedisStore::builder(&url).timeout(Duration::from_secs(5)).build(&[quota]).unwrap());
    let checks: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.check_name("client".into()).await.expect("a check through Redis").allowed })
        })
        .collect();
    let mut admitted = 0;
    for check in checks {
        admitted += usize::from(check.await.unwrap());
    }
    assert_eq!(admitted, 10);
    let mut query = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    assert_eq!(connected_clients(&mut query).await, 2, "the store's one connection and this query's");
}

#[test]
fn a_store_outlives_the_runtime_its_sender_task_ran_on() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let quota = Gcra::new(100, Duration::from_secs(60), 100).unwrap();
    let store = RedisStore::builder(&url).timeout(Duration::from_secs(5)).build(&[quota]).unwrap();
    // A runtime per round on the same thread, as a test suite or a `block_on` per job has: the
    // sender task dies with the first runtime, and the next check starts one on its own.
    for round in 0..3 {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let checked = runtime.block_on(store.check_name("client".into()));
        assert!(checked.expect("a check on a new runtime").allowed, "round {round}");
    }
}
