//! Operations: systemd's notification protocol over a real unix datagram socket, and access-log
//! files reopened on SIGHUP while requests keep coming (log rotation).

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Strata, client, strata_bin, write_config};

const ECHO: &str = "[server]\nshutdown_grace = \"2s\"\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n";

/// `strata serve` started with `NOTIFY_SOCKET`; killed on drop.
struct Notifying {
    child: Child,
    addr: SocketAddr,
    stderr: tempfile::NamedTempFile,
}

impl Notifying {
    fn start(config: Option<&Path>, notify_socket: impl Into<OsString>) -> Notifying {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(strata_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd
            .env("NOTIFY_SOCKET", notify_socket.into())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("spawn strata serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("strata listening on http://") {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("strata did not start: {}", std::fs::read_to_string(stderr.path()).unwrap_or_default());
        };
        Notifying { child, addr, stderr }
    }

    fn signal(&self, signal: &str) {
        common::send_signal(&self.child, signal);
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        common::wait_exit(&mut self.child, limit)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

impl Drop for Notifying {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next notification: its `KEY=VALUE` lines, or `None` when none came within `limit`.
fn next_notification(socket: &UnixDatagram, limit: Duration) -> Option<BTreeMap<String, String>> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = match socket.recv(&mut buf) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
        Err(e) => panic!("recv: {e}"),
    };
    let text = std::str::from_utf8(&buf[..n]).expect("notifications are UTF-8");
    Some(
        text.lines()
            .map(|line| {
                let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {text:?}"));
                (key.to_string(), value.to_string())
            })
            .collect(),
    )
}

fn expect_notification(socket: &UnixDatagram, key: &str, strata: &Notifying) -> BTreeMap<String, String> {
    let message = next_notification(socket, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no {key}=1 notification; strata's log:\n{}", strata.stderr()));
    assert_eq!(message.get(key).map(String::as_str), Some("1"), "expected {key}=1, got {message:?}");
    message
}

fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// A GET over a fresh connection; its status.
fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async { client().get(format!("http://{addr}{path}")).send().await.unwrap().status().as_u16() })
}

#[test]
fn notifies_ready_reloading_and_stopping_over_a_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let config = write_config(ECHO);
    let mut strata = Notifying::start(Some(&config.path), &socket_path);

    let ready = expect_notification(&socket, "READY", &strata);
    // Ready means accepting: the first attempt must connect, with no retry.
    TcpStream::connect_timeout(&strata.addr, Duration::from_secs(5)).expect("the port accepts once READY=1 is sent");
    assert_eq!(ready.get("STATUS"), Some(&format!("serving on http://{}", strata.addr)), "{ready:?}");
    assert_eq!(get_status(strata.addr, "/status/200"), 200);

    // A reload is bracketed by RELOADING=1 (stamped with CLOCK_MONOTONIC) and READY=1.
    let before = monotonic_usec();
    strata.signal("HUP");
    let reloading = expect_notification(&socket, "RELOADING", &strata);
    let after = monotonic_usec();
    let stamp: u64 = reloading.get("MONOTONIC_USEC").expect("MONOTONIC_USEC").parse().unwrap();
    assert!(before <= stamp && stamp <= after, "MONOTONIC_USEC={stamp} outside [{before}, {after}]");
    let reloaded = expect_notification(&socket, "READY", &strata);
    assert_eq!(reloaded.get("STATUS").map(String::as_str), Some("serving the reloaded config"));

    // A rejected config ends the reload too: systemd would otherwise wait for READY=1 forever.
    std::fs::write(&config.path, "[[route]]\nprefix = \"/\"\napp = \"nope\"\n").unwrap();
    strata.signal("HUP");
    expect_notification(&socket, "RELOADING", &strata);
    let rejected = expect_notification(&socket, "READY", &strata);
    assert_eq!(rejected.get("STATUS").map(String::as_str), Some("config rejected: serving the previous one"));
    assert_eq!(get_status(strata.addr, "/status/204"), 204, "the previous config still serves");

    strata.signal("TERM");
    let stopping = expect_notification(&socket, "STOPPING", &strata);
    assert!(stopping.contains_key("STATUS"), "{stopping:?}");
    let status = strata.wait_exit(Duration::from_secs(20)).expect("strata exits after SIGTERM");
    assert!(status.success(), "{status:?}: {}", strata.stderr());
    assert_eq!(next_notification(&socket, Duration::from_millis(200)), None, "nothing after STOPPING=1");
}

#[test]
fn notifies_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("strata-ops-test-{}-{}", std::process::id(), monotonic_usec());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    // The embedded default: no config to reload, so a SIGHUP sends nothing.
    let mut strata = Notifying::start(None, format!("@{name}"));
    expect_notification(&socket, "READY", &strata);
    TcpStream::connect_timeout(&strata.addr, Duration::from_secs(5)).expect("the port accepts once READY=1 is sent");
    strata.signal("HUP");
    strata.signal("TERM");
    expect_notification(&socket, "STOPPING", &strata);
    assert!(strata.wait_exit(Duration::from_secs(20)).expect("strata exits").success());
}

#[test]
fn an_unreachable_notify_socket_is_logged_and_strata_serves_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let mut strata = Notifying::start(None, dir.path().join("nobody-listens.sock"));
    assert_eq!(get_status(strata.addr, "/tasks"), 200);
    strata.signal("TERM");
    assert!(strata.wait_exit(Duration::from_secs(20)).expect("strata exits").success());
    let stderr = strata.stderr();
    assert!(stderr.contains("cannot notify systemd") && stderr.contains("notification=\"READY=1\""), "{stderr}");
}

/// The `n` query values of a JSON access log.
fn logged_numbers(file: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            let query = entry["query"].as_str().unwrap_or_else(|| panic!("no query: {line}"));
            query.strip_prefix("n=").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("query {query:?}"))
        })
        .collect()
}

/// Requests numbered 0, 1, 2… from `clients` concurrent loops, until `total` or `limit`; the numbers
/// that got a response.
async fn numbered_load(addr: SocketAddr, total: u64, clients: usize, answered: Arc<Mutex<Vec<u64>>>) {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut loops = Vec::new();
    for _ in 0..clients {
        let (next, answered, client) = (next.clone(), answered.clone(), client());
        loops.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let res = client.get(format!("http://{addr}/status/200?n={n}")).send().await.expect("request");
                assert_eq!(res.status(), 200, "request {n}");
                res.bytes().await.expect("body");
                answered.lock().unwrap().push(n);
            }
        }));
    }
    for l in loops {
        l.await.expect("a client loop failed");
    }
}

/// Waits until `answered` holds at least `count` numbers (bounded by `limit`).
async fn wait_answered(answered: &Mutex<Vec<u64>>, count: usize, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while answered.lock().unwrap().len() < count {
        assert!(tokio::time::Instant::now() < deadline, "the load stalled below {count} responses");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_files_are_reopened_on_sighup_without_losing_or_repeating_a_line() {
    const TOTAL: u64 = 3_000;
    let mut strata = Strata::start(Some(
        "[server]\nstack = [\"rid\", \"log\"]\n\n\
         [middleware.rid]\nkind = \"request_id\"\n\n\
         [middleware.log]\nkind = \"access_log\"\nformat = \"json\"\noutput = \"access.log\"\n\n\
         [[route]]\nprefix = \"/\"\napp = \"echo\"\n",
    ));
    let dir = strata.config_path().parent().unwrap().to_path_buf();
    let (log, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(numbered_load(strata.addr, TOTAL, 4, answered.clone()));

    // What logrotate does under load: rename the file, then signal (its `postrotate`).
    wait_answered(&answered, 800, Duration::from_secs(60)).await;
    std::fs::rename(&log, &rotated).unwrap();
    strata.signal("HUP");
    // A second SIGHUP without a rotation: a reload that keeps the same file, and a reopen of the
    // file just opened.
    wait_answered(&answered, 1_800, Duration::from_secs(60)).await;
    strata.signal("HUP");
    load.await.expect("the load");

    // The lines still queued are written before strata exits.
    strata.signal("TERM");
    let status = tokio::task::block_in_place(|| strata.wait_exit(Duration::from_secs(20)));
    assert!(status.expect("strata exits").success(), "{}", strata.stderr());
    let stderr = strata.stderr();
    assert_eq!(stderr.matches("config reloaded").count(), 2, "{stderr}");

    let mut answered = answered.lock().unwrap().clone();
    answered.sort_unstable();
    assert_eq!(answered.len() as u64, TOTAL, "every request answered");
    let old = logged_numbers(&rotated);
    let new = logged_numbers(&log);
    // Lines of answered requests still queued in the log's writer when the SIGHUP reopens the file
    // go to the new file (as they should): the renamed one holds most, not all, of the first 800.
    assert!(old.len() >= 600, "lines before the rotation stay in the renamed file: {}", old.len());
    assert!(new.len() >= 1_000, "lines after the SIGHUP go to the new file: {}", new.len());
    let mut logged: Vec<u64> = old.iter().chain(&new).copied().collect();
    logged.sort_unstable();
    let mut unique = logged.clone();
    unique.dedup();
    assert_eq!(unique.len(), logged.len(), "{} lines written twice", logged.len() - unique.len());
    assert_eq!(logged, answered, "one line per response across both files");
}

/// How many of process `pid`'s descriptors are open on `file`.
fn descriptors_on(pid: u32, file: &Path) -> usize {
    let file = file.canonicalize().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok()).filter(|target| *target == file).count()
}

/// The ids of process `pid`'s threads named `name` (as Linux keeps it: its first 15 bytes).
fn threads_named(pid: u32, name: &str) -> Vec<String> {
    let name = &name[..name.len().min(15)];
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut ids: Vec<String> = tasks
        .filter_map(|task| {
            let task = task.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            (comm.trim() == name).then(|| task.file_name()?.to_str().map(str::to_string))?
        })
        .collect();
    ids.sort();
    ids
}

/// Waits (bounded) until process `pid` has `count` threads named `name`; their ids.
async fn wait_threads(pid: u32, name: &str, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ids = threads_named(pid, name);
        if ids.len() == count || tokio::time::Instant::now() >= deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_and_reloads_writing_one_file_share_one_output() {
    // Two access-log layers on two routes, naming one file two ways.
    let config = |second_format: &str| {
        format!(
            "[middleware.api_log]\nkind = \"access_log\"\nformat = \"json\"\noutput = \"access.log\"\n\n\
             [middleware.other_log]\nkind = \"access_log\"\nformat = \"{second_format}\"\noutput = \"./access.log\"\n\n\
             [[route]]\nprefix = \"/api\"\napp = \"echo\"\nstack = [\"api_log\"]\n\n\
             [[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"other_log\"]\n"
        )
    };
    let mut strata = Strata::start(Some(&config("json")));
    let pid = strata.child.id();
    let dir = strata.config_path().parent().unwrap().to_path_buf();
    let log = dir.join("access.log");
    let client = client();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let res = client.get(format!("http://{}{path}", strata.addr)).send().await.expect("request");
            assert_eq!(res.status(), 200, "{path}");
            res.bytes().await.expect("body");
        }
    };
    for n in 0..20 {
        get(format!("/api/status/200?n={n}")).await;
        get(format!("/status/200?n={}", 20 + n)).await;
    }
    assert_eq!(descriptors_on(pid, &log), 1, "one open file for both layers");
    let writer = wait_threads(pid, "strata-access-log", 1).await;
    assert_eq!(writer.len(), 1, "one writer thread for both layers: {writer:?}");

    // A reload (the second layer now combined, still the same file) takes the running output over.
    std::fs::write(strata.config_path(), config("combined")).unwrap();
    strata.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !strata.stderr().contains("config reloaded") {
        assert!(tokio::time::Instant::now() < deadline, "no reload: {}", strata.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 40..50 {
        get(format!("/api/status/200?n={n}")).await;
    }
    assert_eq!(descriptors_on(pid, &log), 1, "the reloaded layers write through the same open file");
    assert_eq!(threads_named(pid, "strata-access-log"), writer, "and the same writer thread");

    strata.signal("TERM");
    let status = tokio::task::block_in_place(|| strata.wait_exit(Duration::from_secs(20)));
    assert!(status.expect("strata exits").success(), "{}", strata.stderr());
    // Every line whole, once: JSON lines from both layers, the last ones flushed at shutdown.
    let mut logged = logged_numbers(&log);
    logged.sort_unstable();
    assert_eq!(logged, (0..50).collect::<Vec<u64>>());
}
