//! Starts the real `strata` binary on a free loopback port and talks to it.
#![allow(dead_code)] // Each test file uses a different part of this module.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The path of the binary under test.
pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

/// A config file in a temporary directory (removed on drop).
pub struct ConfigFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn write_config(text: &str) -> ConfigFile {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, text).expect("write config");
    ConfigFile { dir, path }
}

/// Runs `strata ARGS…` to completion with `stdin` as input.
pub fn run(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(strata_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().expect("wait for strata")
}

/// A running `strata serve`; killed on drop.
pub struct Strata {
    pub child: Child,
    /// The plain HTTP listener.
    pub addr: SocketAddr,
    /// The TLS listener, when started with [`Strata::start_tls`].
    pub https: Option<SocketAddr>,
    /// The admin listener, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    pub stderr_path: PathBuf,
    _config: Option<ConfigFile>,
    _logs: tempfile::TempDir,
}

impl Strata {
    /// Serves `config` (None: the embedded default) on a free loopback port.
    pub fn start(config: Option<&str>) -> Strata {
        let config = config.map(write_config);
        let path = config.as_ref().map(|c| c.path.clone());
        Self::start_with(path.as_deref(), config, &[])
    }

    /// Serves `config` with extra `serve` arguments (e.g. `--watch`).
    pub fn start_args(config: &str, args: &[&str]) -> Strata {
        let config = write_config(config);
        let path = config.path.clone();
        Self::start_with(Some(&path), Some(config), args)
    }

    /// Serves `config` with extra `serve` arguments, and environment variables set (`Some`) or
    /// removed (`None`) for the process.
    pub fn start_env(config: &str, args: &[&str], env: &[(&str, Option<&str>)]) -> Strata {
        let config = write_config(config);
        let path = config.path.clone();
        Self::start_with_env(Some(&path), Some(config), args, env)
    }

    /// Serves `config`, whose `[server.tls]` names files beside it, with a TLS listener too
    /// (`--tls-listen`), both on free loopback ports.
    pub fn start_tls(config: ConfigFile) -> Strata {
        Self::start_tls_args(config, &[])
    }

    /// [`Strata::start_tls`] with extra `serve` arguments (e.g. `--watch`).
    pub fn start_tls_args(config: ConfigFile, args: &[&str]) -> Strata {
        let path = config.path.clone();
        let args: Vec<&str> = ["--tls-listen", "127.0.0.1:0"].iter().chain(args).copied().collect();
        Self::start_with(Some(&path), Some(config), &args)
    }

    /// The config file it serves, to rewrite before a reload.
    pub fn config_path(&self) -> &Path {
        &self._config.as_ref().expect("started with a config file").path
    }

    /// The directory of the config file, where the files it names live.
    pub fn config_dir(&self) -> &Path {
        self._config.as_ref().expect("started with a config file").dir.path()
    }

    /// The TLS listener's address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https.expect("started with a TLS listener")
    }

    fn start_with(path: Option<&Path>, keep: Option<ConfigFile>, args: &[&str]) -> Strata {
        Self::start_with_env(path, keep, args, &[])
    }

    fn start_with_env(
        path: Option<&Path>,
        keep: Option<ConfigFile>,
        args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Strata {
        let logs = tempfile::tempdir().expect("tempdir");
        let stderr_path = logs.path().join("stderr.log");
        let mut cmd = Command::new(strata_bin());
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").args(args);
        if let Some(path) = path {
            cmd.arg("--config").arg(path);
        }
        for (name, value) in env {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn strata serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("strata listening on ") {
                    let _ = tx.send(url.trim().to_string());
                } else if let Some(url) = line.strip_prefix("strata admin on ") {
                    let _ = tx.send(format!("admin {}", url.trim()));
                }
            }
        });
        // One line per listener: the plain one first, then the TLS one when asked for, then the
        // admin one when the config has one.
        let has_admin = path.and_then(|p| std::fs::read_to_string(p).ok()).is_some_and(|t| t.contains("[admin]"));
        let listeners = if args.contains(&"--tls-listen") { 2 } else { 1 } + usize::from(has_admin);
        let mut urls = Vec::new();
        while urls.len() < listeners {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(url) => urls.push(url),
                Err(_) => {
                    let _ = child.kill();
                    panic!("strata did not start: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default());
                }
            }
        }
        let admin = urls
            .iter()
            .position(|u| u.starts_with("admin "))
            .map(|i| urls.remove(i)[6..].strip_prefix("http://").expect("admin URL").parse().expect("admin address"));
        let addr = urls[0].strip_prefix("http://").expect("the plain line first").parse().expect("listening address");
        let https = urls.get(1).map(|url| {
            url.strip_prefix("https://").expect("then the TLS line").parse().expect("TLS listening address")
        });
        Strata { child, addr, https, admin, stderr_path, _config: keep, _logs: logs }
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("started with an [admin] listener"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }
}

/// Sends `signal` (`HUP`, `TERM`…) to `child` with `kill`.
pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

/// Waits for `child` to exit, up to `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for Strata {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 client with no proxy (tests talk to loopback only).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap()
}

pub mod chromium;
pub mod gunicorn;
pub mod otlp;
pub mod python;
pub mod redis;
pub mod tls;

/// A loopback port nothing listens on right now, for a server a test starts and must name its
/// port to (gunicorn, redis-server).
///
/// Between this check and the server's own `bind`, the port is free for anyone to take. A port from
/// the kernel's ephemeral range (32768–60999 by default) could be: by a concurrent test's
/// `bind(0)`, or as the source port of any outgoing connection. Then the server cannot bind, and a
/// test that waits for the port may find another test's server there. So ports come from below that
/// range, never the same one twice in a test process, starting at a point that depends on the
/// process id so that test binaries run one after another do not retrace each other's steps.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + n) % COUNT).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts connections on `addr`, up to `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The peak resident memory of a process, in KiB (`VmHWM` in /proc/PID/status).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}
