//! The memory of idle keep-alive connections: what the server holds for them comes back to the
//! system once they close (jemalloc, the default allocator, with its background purging), where
//! glibc's allocator kept nearly all of it.
#![cfg(all(target_os = "linux", feature = "jemalloc"))]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Strata;

/// Connections opened: enough for their memory to stand out from the process's own.
const CONNECTIONS: usize = 1500;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
keepalive_timeout = "300s"

[[route]]
prefix = "/"
app = "echo"
"#;

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A keep-alive connection that has had one complete answer.
fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /status/200 HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    // The answer's head and its short body ("200 OK\n") arrive in one or two reads.
    while !answer.ends_with(b"200 OK\n") {
        let n = stream.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    stream
}

#[test]
fn the_memory_of_closed_connections_is_given_back() {
    rlimit::increase_nofile_limit(CONNECTIONS as u64 + 256).expect("raise the open-file limit");
    let strata = Strata::start(Some(CONFIG));
    let pid = strata.child.id();
    // Warm up first, so that what the first requests allocate once (and keep) is in the baseline.
    drop((0..50).map(|_| served_connection(strata.addr)).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(500));
    let rest = rss_kib(pid);

    let open: Vec<TcpStream> = (0..CONNECTIONS).map(|_| served_connection(strata.addr)).collect();
    let idle = rss_kib(pid);
    let held = idle.saturating_sub(rest);
    assert!(held > 4 * 1024, "{CONNECTIONS} idle connections should hold some memory: {rest} KiB at rest, {idle} KiB");
    drop(open);

    // jemalloc's background thread purges freed pages after `dirty_decay_ms` (10 s), gradually.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut now = rss_kib(pid);
    while now > rest + held / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now = rss_kib(pid);
    }
    assert!(
        now <= rest + held / 4,
        "after the connections closed, {now} KiB is still resident: {rest} KiB at rest, {idle} KiB with {CONNECTIONS} idle connections"
    );
}
