//! Hot reload and graceful shutdown under load, through the real binary in front of gunicorn:
//! SIGHUP swaps the config without failing a request, an invalid config keeps the old one,
//! `--watch` reloads on save, SIGTERM lets in-flight requests finish.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::gunicorn::Gunicorn;
use common::{Strata, client};

/// A config whose responses say which version is running: the timing header is named after it.
fn versioned(upstream: &str, version: u32) -> String {
    format!(
        r#"
[server]
stack = ["timing", "rid"]

[middleware.timing]
kind = "timing"
header = "x-config-v{version}"
server_timing = false

[middleware.rid]
kind = "request_id"

[[route]]
prefix = "/"
upstream = "{upstream}"
"#
    )
}

/// Which version answered, from the response's headers.
fn version_of(res: &reqwest::Response) -> Option<u32> {
    res.headers().keys().find_map(|k| k.as_str().strip_prefix("x-config-v")?.parse().ok())
}

/// Polls until a response comes from `version`, up to `limit`.
async fn wait_for_version(strata: &Strata, version: u32, limit: Duration) -> bool {
    let http = client();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(res) = http.get(strata.url("/headers")).send().await
            && version_of(&res) == Some(version)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Outcome of a bounded load run: requests by status, failures (transport errors), versions seen.
#[derive(Debug, Default)]
struct Load {
    ok: usize,
    failed: Vec<String>,
    versions: std::collections::BTreeSet<u32>,
}

/// `workers` clients, each with its own keep-alive connection, request `url` until `stop` is set,
/// at most `max_each` times each and never past `deadline`.
async fn load(url: String, workers: usize, max_each: usize, stop: Arc<AtomicBool>) -> Load {
    let deadline = Instant::now() + Duration::from_secs(60);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let http = client();
                let mut out = Load::default();
                for _ in 0..max_each {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    match http.get(&url).send().await {
                        Ok(res) if res.status() == 200 => {
                            out.versions.extend(version_of(&res));
                            match res.bytes().await {
                                Ok(_) => out.ok += 1,
                                Err(e) => out.failed.push(format!("body: {e}")),
                            }
                        }
                        Ok(res) => out.failed.push(format!("status {}", res.status())),
                        Err(e) => out.failed.push(format!("{e:?}")),
                    }
                }
                out
            })
        })
        .collect();
    let mut total = Load::default();
    for task in tasks {
        let part = task.await.unwrap();
        total.ok += part.ok;
        total.failed.extend(part.failed);
        total.versions.extend(part.versions);
    }
    total
}

#[tokio::test]
async fn repeated_sighup_reloads_under_load_fail_no_request() {
    let app = Gunicorn::start();
    let strata = Strata::start(Some(&versioned(&app.url(), 0)));
    assert!(wait_for_version(&strata, 0, Duration::from_secs(10)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(strata.url("/headers"), 8, 5_000, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for version in 1..=6 {
        std::fs::write(strata.config_path(), versioned(&app.url(), version)).unwrap();
        strata.signal("HUP");
        assert!(wait_for_version(&strata, version, Duration::from_secs(15)).await, "v{version}: {}", strata.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let result = loader.await.unwrap();
    eprintln!("{} requests during 6 reloads, versions seen {:?}", result.ok, result.versions);
    assert!(
        result.failed.is_empty(),
        "{} failed: {:?}",
        result.failed.len(),
        &result.failed[..result.failed.len().min(5)]
    );
    assert!(result.ok >= 50, "the load ran: {result:?}");
    assert!(result.versions.len() >= 3, "the load saw the reloads: {:?}", result.versions);
    assert_eq!(strata.stderr().matches("config reloaded").count(), 6, "{}", strata.stderr());
}

#[tokio::test]
async fn an_invalid_config_on_sighup_is_logged_and_the_old_one_keeps_serving() {
    let app = Gunicorn::start();
    let strata = Strata::start(Some(&versioned(&app.url(), 1)));
    assert!(wait_for_version(&strata, 1, Duration::from_secs(10)).await);
    let broken = versioned(&app.url(), 2).replace("kind = \"request_id\"", "kind = \"request_idd\"");
    std::fs::write(strata.config_path(), broken).unwrap();
    strata.signal("HUP");
    let start = Instant::now();
    while !strata.stderr().contains("config rejected") && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stderr = strata.stderr();
    assert!(stderr.contains("config rejected, still serving the previous one"), "{stderr}");
    assert!(stderr.contains("strata.toml:11:8: error: unknown middleware kind `request_idd`"), "{stderr}");
    let res = client().get(strata.url("/headers")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(version_of(&res), Some(1));
    // A good config afterwards is taken.
    std::fs::write(strata.config_path(), versioned(&app.url(), 3)).unwrap();
    strata.signal("HUP");
    assert!(wait_for_version(&strata, 3, Duration::from_secs(15)).await, "{}", strata.stderr());
}

#[tokio::test]
async fn watch_reloads_when_the_file_changes() {
    let app = Gunicorn::start();
    let strata = Strata::start_args(&versioned(&app.url(), 1), &["--watch"]);
    assert!(wait_for_version(&strata, 1, Duration::from_secs(10)).await);
    // Save the way editors do: write a new file, rename it over the old one.
    let fresh = strata.config_path().with_extension("new");
    std::fs::write(&fresh, versioned(&app.url(), 2)).unwrap();
    std::fs::rename(&fresh, strata.config_path()).unwrap();
    assert!(wait_for_version(&strata, 2, Duration::from_secs(15)).await, "{}", strata.stderr());
    // Listener and runtime settings cannot change while running: the rest applies, and that is said.
    let listener = versioned(&app.url(), 3)
        .replace("[server]", "[server]\nheader_read_timeout = \"3s\"\nworkers = 1\nruntime = \"work_stealing\"");
    std::fs::write(strata.config_path(), listener).unwrap();
    assert!(wait_for_version(&strata, 3, Duration::from_secs(15)).await, "{}", strata.stderr());
    let stderr = strata.stderr();
    for setting in ["header_read_timeout", "workers", "runtime"] {
        assert!(
            stderr.contains(&format!("`{setting}` changed: it is fixed when strata starts, restart strata")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn sigterm_under_load_lets_every_in_flight_request_finish() {
    let app = Gunicorn::start();
    let mut strata = Strata::start(Some(&versioned(&app.url(), 1)));
    let done = Arc::new(AtomicUsize::new(0));
    let requests: Vec<_> = (0..12)
        .map(|_| {
            let url = strata.url("/slow?ms=2500");
            let done = done.clone();
            tokio::spawn(async move {
                let res = client().get(url).send().await;
                done.fetch_add(1, Ordering::Relaxed);
                match res {
                    Ok(res) => (res.status().as_u16(), res.text().await.unwrap_or_default()),
                    Err(e) => (0, format!("{e:?}")),
                }
            })
        })
        .collect();
    // Let them reach gunicorn (generously: the machine may be busy), then ask strata to stop.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(done.load(Ordering::Relaxed), 0, "the requests are still in flight");
    strata.signal("TERM");
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("slept"), "{body}");
    }
    let status = strata.wait_exit(Duration::from_secs(15)).expect("strata exits once drained");
    assert!(status.success(), "{status:?}: {}", strata.stderr());
}

/// A config over the echo app whose access log shows the resolved client address.
fn logging(version: u32, log: &std::path::Path, server_extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["timing", "log"]
{server_extra}

[middleware.timing]
kind = "timing"
header = "x-config-v{version}"
server_timing = false

[middleware.log]
kind = "access_log"
format = "json"
output = "{}"

[[route]]
prefix = "/"
app = "echo"
"#,
        log.display()
    )
}

/// The `remote_addr` of the access-log line of the request whose query string is `marker`.
async fn logged_remote(log: &std::path::Path, marker: &str) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let line = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["query"].as_str() == Some(marker));
        if let Some(line) = line {
            return line["remote_addr"].as_str().map(str::to_string);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_reload_changes_trusted_proxies_for_the_client_address_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let strata = Strata::start(Some(&logging(1, &log, "")));
    assert!(wait_for_version(&strata, 1, Duration::from_secs(10)).await);
    let http = client();
    let spoofed = |path: &str| http.get(strata.url(path)).header("x-forwarded-for", "203.0.113.9").send();
    assert_eq!(spoofed("/status/200?before").await.unwrap().status(), 200);
    assert_eq!(logged_remote(&log, "before").await.as_deref(), Some("127.0.0.1"), "untrusted peer: header ignored");
    // Now the loopback peer is a trusted proxy: its X-Forwarded-For names the client.
    std::fs::write(strata.config_path(), logging(2, &log, "trusted_proxies = [\"127.0.0.1/32\"]")).unwrap();
    strata.signal("HUP");
    assert!(wait_for_version(&strata, 2, Duration::from_secs(15)).await, "{}", strata.stderr());
    assert_eq!(spoofed("/status/200?after").await.unwrap().status(), 200);
    assert_eq!(logged_remote(&log, "after").await.as_deref(), Some("203.0.113.9"), "{}", strata.stderr());
    assert!(!strata.stderr().contains("`trusted_proxies` changed"), "{}", strata.stderr());
}

/// The process's TCP sockets in CLOSE-WAIT: the peer closed them and strata has not, which is a
/// descriptor held for nothing.
fn sockets_in_close_wait(pid: u32) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().to_string();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `st` 08 is CLOSE_WAIT; the tenth field is the socket's inode.
            fields.get(3) == Some(&"08") && fields.get(9).is_some_and(|inode| inodes.contains(*inode))
        })
        .count()
}

#[tokio::test]
async fn upstream_connections_are_closed_when_the_upstream_closes_them_after_a_reload_or_idle() {
    let upstream = Gunicorn::start();
    // Pooled connections kept longer than gunicorn's own 2 s keep-alive: gunicorn closes them first.
    let config = |idle: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nprefix = \"/\"\nupstream = \"{}\"\nidle_timeout = \"{idle}\"\n",
            upstream.url()
        )
    };
    let strata = Strata::start(Some(&config("30s")));
    let http = client();
    let fill = || async {
        let requests = (0..8).map(|_| http.get(strata.url("/slow?ms=200")).send());
        for res in futures_util::future::join_all(requests).await {
            assert_eq!(res.unwrap().status(), 200);
        }
    };
    fill().await;
    // Reloaded, the first config's router and its pool must go: nothing serves through them.
    std::fs::write(strata.config_path(), config("30s")).unwrap();
    strata.signal("HUP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sockets_in_close_wait(strata.child.id()), 0, "the replaced config's pool kept its connections");

    // A pool that goes quiet closes its idle connections at its own idle_timeout.
    std::fs::write(strata.config_path(), config("1s")).unwrap();
    strata.signal("HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    fill().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sockets_in_close_wait(strata.child.id()), 0, "idle connections outlived idle_timeout");
}
