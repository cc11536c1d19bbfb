//! `basic_auth`'s limits through the real binary: failed logins limited per client address (two real
//! loopback source addresses, and clients named by a trusted proxy), and the memory that a burst
//! of wrong passwords against an argon2id user leaves behind.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use common::Strata;

/// An argon2id PHC string for `password` with `m_cost` KiB and `t_cost` passes.
fn argon2id(password: &str, m_cost: u32, t_cost: u32) -> String {
    let params = Params::new(m_cost, t_cost, 1, None).unwrap();
    let salt = SaltString::encode_b64(b"basic-auth-limit").unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn config(hash: &str, auth_extra: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["auth"]
{server_extra}

[middleware.auth]
kind = "basic_auth"
users = {{ alice = "{hash}" }}
{auth_extra}

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address works on loopback).
fn client_from(source: &str) -> reqwest::Client {
    let source: IpAddr = source.parse().unwrap();
    reqwest::Client::builder().no_proxy().local_address(source).timeout(Duration::from_secs(60)).build().unwrap()
}

async fn login(
    http: &reqwest::Client,
    strata: &Strata,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut req = http.get(strata.url("/anything")).basic_auth("alice", Some(password));
    if let Some(client) = forwarded_for {
        req = req.header("x-forwarded-for", client);
    }
    req.send().await.unwrap()
}

/// Checks a refusal of the failure limit and returns its `Retry-After` in seconds.
async fn assert_refused(res: reqwest::Response, window_secs: u64) -> u64 {
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("www-authenticate").is_none());
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=window_secs).contains(&retry), "Retry-After: {retry}");
    assert_eq!(res.text().await.unwrap(), "Too many failed logins, retry later\n");
    retry
}

#[tokio::test]
async fn failed_logins_are_limited_per_client_address() {
    let strata =
        Strata::start(Some(&config(&argon2id("s3cret", 1024, 1), "max_failures = 3\nfailure_window = \"1m\"", "")));
    let (attacker, colleague) = (client_from("127.0.0.1"), client_from("127.0.0.2"));

    for i in 0..3 {
        let res = login(&attacker, &strata, &format!("guess-{i}"), None).await;
        assert_eq!(res.status(), 401, "failure {i} is answered normally");
        assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic realm="));
    }
    // The fourth attempt is refused unchecked, even with the right password.
    let started = Instant::now();
    assert_refused(login(&attacker, &strata, "guess-3", None).await, 60).await;
    assert_refused(login(&attacker, &strata, "s3cret", None).await, 60).await;
    eprintln!("two refusals in {:?}", started.elapsed());

    // Another client address logs in, and fails on its own count.
    let res = login(&colleague, &strata, "s3cret", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(login(&colleague, &strata, "typo", None).await.status(), 401);
    assert_eq!(login(&colleague, &strata, "s3cret", None).await.status(), 200);
    // Its success reset nothing for the first one.
    assert_refused(login(&attacker, &strata, "s3cret", None).await, 60).await;

    let log = strata.stderr();
    assert_eq!(log.matches("too many failed logins").count(), 1, "one line per client and window:\n{log}");
    assert!(log.contains("127.0.0.1") && !log.contains("guess-") && !log.contains("s3cret"), "{log}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted() {
    let strata = Strata::start(Some(&config(
        &argon2id("s3cret", 256, 1),
        "max_failures = 2\nfailure_window = \"2s\"",
        "trusted_proxies = [\"127.0.0.1/32\"]",
    )));
    let proxy = client_from("127.0.0.1");
    for _ in 0..2 {
        assert_eq!(login(&proxy, &strata, "wrong", Some("203.0.113.9")).await.status(), 401);
    }
    let retry = assert_refused(login(&proxy, &strata, "s3cret", Some("203.0.113.9")).await, 2).await;
    // Another client behind the same proxy is not refused.
    assert_eq!(login(&proxy, &strata, "s3cret", Some("203.0.113.10")).await.status(), 200);
    // Once the window is over, the first client may try again.
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(200)).await;
    assert_eq!(login(&proxy, &strata, "s3cret", Some("203.0.113.9")).await.status(), 200);
}

/// The resident set of a process, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[tokio::test]
async fn a_burst_of_wrong_argon2_passwords_costs_the_verifiers_memory_only() {
    // `strata hash-password`'s memory cost (19 MiB), one pass to keep the unoptimised build quick.
    const M_COST_KIB: u64 = 19_456;
    const BURST: usize = 12;
    let strata = Strata::start(Some(&config(&argon2id("s3cret", M_COST_KIB as u32, 1), "max_failures = 0", "")));
    let http = client_from("127.0.0.1");
    let before = rss_kib(strata.child.id());

    let started = Instant::now();
    let attempts = (0..BURST).map(|i| {
        let (http, url) = (http.clone(), strata.url("/anything"));
        tokio::spawn(async move { http.get(url).basic_auth("alice", Some(format!("wrong-{i}"))).send().await })
    });
    for attempt in attempts {
        assert_eq!(attempt.await.unwrap().unwrap().status(), 401);
    }
    let after = rss_kib(strata.child.id());

    // One memory area per thread of the gateway's one verification pool (as many as cores, at most
    // 4), plus some slack for the connections; before the areas were reused, each attempt kept its
    // own ~19 MiB.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4) as u64;
    let budget = threads * M_COST_KIB + 16 * 1024;
    let growth = after.saturating_sub(before);
    eprintln!(
        "{BURST} wrong passwords in {:?}: RSS {before} KiB -> {after} KiB (+{growth}, budget {budget})",
        started.elapsed()
    );
    assert!(growth <= budget, "RSS grew by {growth} KiB for {BURST} attempts; expected at most {budget}");
}

/// The thread ids of the process's password verification threads (`strata-verify-N`), sorted.
fn verify_threads(pid: u32) -> Vec<u64> {
    let mut tids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            comm.starts_with("strata-verify-").then(|| task.file_name().to_str()?.parse().ok())?
        })
        .collect();
    tids.sort_unstable();
    tids
}

fn two_routes(hash: &str, realm: &str) -> String {
    format!(
        r#"
[middleware.auth_a]
kind = "basic_auth"
realm = "{realm} a"
users = {{ alice = "{hash}" }}

[middleware.auth_b]
kind = "basic_auth"
realm = "{realm} b"
users = {{ alice = "{hash}" }}

[[route]]
prefix = "/a"
app = "echo"
stack = ["auth_a"]

[[route]]
prefix = "/b"
app = "echo"
stack = ["auth_b"]
"#
    )
}

#[tokio::test]
async fn every_basic_auth_layer_verifies_on_one_pool_across_routes_and_reloads() {
    let hash = argon2id("s3cret", 1024, 1);
    let strata = Strata::start(Some(&two_routes(&hash, "v1")));
    let pid = strata.child.id();
    let http = client_from("127.0.0.1");
    assert!(verify_threads(pid).is_empty(), "no thread before the first slow verification");

    // Both routes' layers verify an argon2id hash (wrong passwords: nothing is cached).
    let both = |http: reqwest::Client| {
        let urls = [strata.url("/a/anything"), strata.url("/b/anything")];
        async move {
            for url in urls {
                let res = http.get(url).basic_auth("alice", Some("wrong")).send().await.unwrap();
                assert_eq!(res.status(), 401);
            }
        }
    };
    both(http.clone()).await;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let first = verify_threads(pid);
    assert_eq!(first.len(), threads, "one pool for both routes, not one each: {first:?}");

    // A reload builds new layers; they verify on the same threads.
    std::fs::write(strata.config_path(), two_routes(&hash, "v2")).unwrap();
    strata.signal("HUP");
    let start = Instant::now();
    while !strata.stderr().contains("config reloaded") && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(strata.stderr().contains("config reloaded"), "{}", strata.stderr());
    let res = http.get(strata.url("/a/anything")).basic_auth("alice", Some("wrong")).send().await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Basic realm=\"v2 a\", charset=\"UTF-8\"", "the new layer answered");
    both(http).await;
    assert_eq!(verify_threads(pid), first, "the same threads after the reload");
}
