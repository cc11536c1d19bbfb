//! `rate_limit` through the real binary: exact admitted counts, the quota fields' syntax, two
//! instances sharing one real `redis-server`, Redis dying and coming back, and client addresses
//! behind trusted and untrusted proxies.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{Strata, client, run, write_config};

fn config(limit: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["limit"]
{server_extra}

[middleware.limit]
kind = "rate_limit"
{limit}

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

/// Sends one GET to `/status/200` with optional `X-Forwarded-For`; returns the status and headers.
async fn get(strata: &Strata, forwarded_for: Option<&str>) -> (u16, reqwest::header::HeaderMap) {
    let mut req = client().get(strata.url("/status/200"));
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    let res = req.send().await.expect("strata answers");
    (res.status().as_u16(), res.headers().clone())
}

fn text<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `"name";r=R;t=T` → (name, R, T); panics on anything else.
fn parse_ratelimit(value: &str) -> (String, u64, u64) {
    let (name, params) = value.split_once(';').unwrap_or_else(|| panic!("no parameters: {value}"));
    let name = name.strip_prefix('"').and_then(|n| n.strip_suffix('"')).unwrap_or_else(|| panic!("{value}"));
    let mut r = None;
    let mut t = None;
    for p in params.split(';') {
        match p.split_once('=') {
            Some(("r", v)) => r = Some(v.parse().unwrap_or_else(|_| panic!("r: {value}"))),
            Some(("t", v)) => t = Some(v.parse().unwrap_or_else(|_| panic!("t: {value}"))),
            _ => panic!("unexpected parameter `{p}` in {value}"),
        }
    }
    (name.to_string(), r.expect("r"), t.expect("t"))
}

#[tokio::test]
async fn exactly_the_quota_is_admitted_with_well_formed_fields() {
    let strata = Strata::start(Some(&config("rate = \"5/min\"", "")));
    let mut statuses = Vec::new();
    for i in 0..12u64 {
        let (status, h) = get(&strata, None).await;
        statuses.push(status);
        assert_eq!(text(&h, "ratelimit-policy"), "\"default\";q=5;w=60", "request {i}");
        let (name, r, t) = parse_ratelimit(text(&h, "ratelimit"));
        assert_eq!(name, "default");
        if status == 200 {
            assert_eq!(r, 4 - i, "remaining after admitted request {i}");
            assert!((12..=60).contains(&t), "t = {t}");
        } else {
            assert_eq!(r, 0);
            let retry: u64 = text(&h, "retry-after").parse().expect("Retry-After in seconds");
            assert!((1..=12).contains(&retry), "Retry-After {retry}: one request every 12 s");
            assert_eq!(text(&h, "content-type"), "application/problem+json");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
    let res = client().get(strata.url("/status/200")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["title"], "Too Many Requests");
}

#[tokio::test]
async fn two_instances_sharing_one_redis_admit_no_more_than_the_limit() {
    let redis = Redis::start();
    let shared = config(&format!("rate = \"10/min\"\nstore = \"{}\"\non_store_error = \"deny\"", redis.url()), "");
    let a = Strata::start(Some(&shared));
    let b = Strata::start(Some(&shared));
    // 60 requests, concurrently and alternating between the two instances: checks that wait at the
    // same moment travel to Redis in one script call, and must still be decided one by one.
    let requests = (0..60).map(|i| {
        let target = if i % 2 == 0 { &a } else { &b };
        get(target, None)
    });
    let results = futures_util::future::join_all(requests).await;
    let admitted = results.iter().filter(|(s, _)| *s == 200).count();
    let rejected = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((admitted, rejected), (10, 50), "statuses: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    // Both instances took part in admitting and in rejecting.
    for (i, (status, h)) in results.iter().enumerate() {
        assert!(!text(h, "ratelimit").is_empty(), "request {i} ({status}) has quota fields");
    }
}

/// Polls `strata` with client `key` until `done` accepts a response (15 s at most).
async fn poll_until(strata: &Strata, key: &str, what: &str, done: impl Fn(u16, &reqwest::header::HeaderMap) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, h) = get(strata, Some(key)).await;
        if done(status, &h) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {status} after 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_stopped_applies_each_mode_and_restarted_resumes_without_restarting_strata() {
    let mut redis = Redis::start();
    let port = redis.port;
    // 127.0.0.1 is trusted so that each request can name its client in X-Forwarded-For.
    let mode = |m: &str| {
        config(
            &format!(
                "rate = \"3/min\"\nstore = \"{}\"\non_store_error = \"{m}\"\nstore_retry = \"100ms\"",
                redis.url()
            ),
            "trusted_proxies = [\"127.0.0.1/32\"]",
        )
    };
    let checked = write_config(&mode("deny"));
    let out = run(&["check", "--config", checked.path.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("note[rate-limit-store-error-mode]") && stdout.contains("on_store_error = deny"),
        "{stdout}"
    );

    let allow = Strata::start(Some(&mode("allow")));
    let deny = Strata::start(Some(&mode("deny")));
    let local = Strata::start(Some(&mode("local")));
    const FIRST: &str = "198.51.100.1";
    // Redis up: the three instances share one bucket per client.
    let mut shared = Vec::new();
    for s in [&allow, &deny, &local, &allow] {
        shared.push(get(s, Some(FIRST)).await.0);
    }
    assert_eq!(shared, [200, 200, 200, 429]);

    redis.stop();
    for _ in 0..3 {
        let (status, h) = get(&allow, Some(FIRST)).await;
        assert_eq!(status, 200, "allow: fail open");
        assert!(h.get("ratelimit").is_none(), "no quota fields when nothing was checked");
        let (status, h) = get(&deny, Some(FIRST)).await;
        assert_eq!(status, 503, "deny: fail closed");
        assert_eq!(text(&h, "retry-after"), "1");
    }
    // Local fallback: this instance limits alone, starting from a fresh local bucket.
    let mut fallback = Vec::new();
    for _ in 0..5 {
        fallback.push(get(&local, Some(FIRST)).await.0);
    }
    assert_eq!(fallback, [200, 200, 200, 429, 429]);

    // Redis comes back on the same port, empty: each instance must find it again by itself.
    let _redis = Redis::start_on(port);
    poll_until(&deny, "192.0.2.1", "deny instance", |s, _| s != 503).await;
    poll_until(&allow, "192.0.2.2", "allow instance", |_, h| h.get("ratelimit").is_some()).await;
    // FIRST is exhausted in the local fallback but fresh in the restarted Redis: a 200 means Redis.
    poll_until(&local, FIRST, "local instance", |s, _| s == 200).await;

    const SECOND: &str = "198.51.100.2";
    let mut after = Vec::new();
    for s in [&allow, &deny, &local, &allow, &deny] {
        after.push(get(s, Some(SECOND)).await.0);
    }
    assert_eq!(after, [200, 200, 200, 429, 429], "one shared bucket again");
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers_and_honoured_from_trusted_ones() {
    // Tests connect from 127.0.0.1: not trusted here, so X-Forwarded-For is a client's claim.
    let untrusted = Strata::start(Some(&config("rate = \"2/min\"", "trusted_proxies = [\"10.0.0.0/8\"]")));
    let statuses = [
        get(&untrusted, Some("198.51.100.1")).await.0,
        get(&untrusted, Some("198.51.100.2")).await.0,
        get(&untrusted, Some("198.51.100.3")).await.0,
        get(&untrusted, None).await.0,
    ];
    assert_eq!(statuses, [200, 200, 429, 429], "spoofed addresses share the peer's bucket");

    // Here 127.0.0.1 is a trusted proxy: the right-most untrusted hop is the client.
    let trusted = Strata::start(Some(&config("rate = \"2/min\"", "trusted_proxies = [\"127.0.0.1/32\"]")));
    let statuses = [
        get(&trusted, Some("198.51.100.1")).await.0,
        get(&trusted, Some("198.51.100.1")).await.0,
        get(&trusted, Some("198.51.100.1")).await.0,
        get(&trusted, Some("198.51.100.2")).await.0,
        // A client prepending a forged hop is still known by the hop the proxy appended.
        get(&trusted, Some("203.0.113.77, 198.51.100.1")).await.0,
        // A trusted hop is skipped: the client is the untrusted address left of it.
        get(&trusted, Some("198.51.100.2, 127.0.0.1")).await.0,
        get(&trusted, Some("198.51.100.2")).await.0,
    ];
    assert_eq!(statuses, [200, 200, 429, 200, 429, 200, 429]);
}

#[test]
fn check_reports_client_ip_behind_an_untrusted_proxy_and_rate_limit_outside_cors() {
    let warned = |server_extra: &str, stack: &str| {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:8080"
stack = {stack}
{server_extra}

[middleware.limit]
kind = "rate_limit"
rate = "10/s"

[middleware.cors]
kind = "cors"
allow_origins = ["https://app.example.com"]

[[route]]
prefix = "/"
app = "echo"
"#
        );
        let file = write_config(&text);
        let out = run(&["check", "--config", file.path.to_str().unwrap()], "");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = warned("", r#"["cors", "limit"]"#);
    assert!(out.contains("warning[client-ip-behind-untrusted-proxy]") && out.contains("trusted_proxies"), "{out}");
    assert!(!out.contains("cors-inside-short-circuit"), "{out}");
    let out = warned("trusted_proxies = [\"127.0.0.1/32\"]", r#"["cors", "limit"]"#);
    assert!(!out.contains("client-ip-behind-untrusted-proxy"), "{out}");
    let out = warned("behind_proxy = false", r#"["limit", "cors"]"#);
    assert!(!out.contains("client-ip-behind-untrusted-proxy"), "{out}");
    assert!(out.contains("warning[cors-inside-short-circuit]") && out.contains("429"), "{out}");
}

#[tokio::test]
async fn several_limits_in_redis_are_all_enforced_and_reported() {
    let redis = Redis::start();
    let limits = format!(
        "limits = [{{ rate = \"3/min\" }}, {{ rate = \"2/h\", name = \"hourly\" }}]\nstore = \"{}\"\non_store_error = \"deny\"",
        redis.url()
    );
    let strata = Strata::start(Some(&config(&limits, "")));
    let results = futures_util::future::join_all((0..6).map(|_| get(&strata, None))).await;
    let admitted = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(admitted, 2, "the hourly limit bites first");
    for (status, h) in &results {
        assert_eq!(text(h, "ratelimit-policy"), "\"3/min\";q=3;w=60, \"hourly\";q=2;w=3600");
        let fields: Vec<(String, u64, u64)> = text(h, "ratelimit").split(", ").map(parse_ratelimit).collect();
        assert_eq!(fields.len(), 2, "{status}: {fields:?}");
        assert_eq!((fields[0].0.as_str(), fields[1].0.as_str()), ("3/min", "hourly"));
        if *status == 429 {
            assert_eq!(fields[1].1, 0, "hourly exhausted");
        }
    }
}

/// `store_timeout` and `store_retry` are durations: out of range or in the old integer form, each
/// error points at its key's line and column, all reported at once.
#[test]
fn store_durations_are_checked_at_their_key() {
    let checked = |limit: &str| {
        let file = write_config(&config(limit, ""));
        let path = file.path.to_str().unwrap().to_string();
        let out = run(&["check", "--config", &path], "");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
            path,
        )
    };
    // `kind` is on line 8 of `config`, the keys follow.
    let (ok, output, path) = checked("rate = \"1/s\"\nstore_timeout = \"20s\"");
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!(
            "{path}:9:1: error: middleware `limit` (rate_limit): `20s`: expected a duration of at most 10s"
        )),
        "{output}"
    );
    let (ok, output, path) = checked("rate = \"1/s\"\nstore = \"redis://127.0.0.1:6379\"\nstore_retry = \"5ms\"");
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!("{path}:10:1: error: middleware `limit` (rate_limit): expected 10ms to 60s")),
        "{output}"
    );
    let (ok, output, _) = checked("rate = \"1/s\"\nstore_timeout_ms = 50");
    assert!(!ok && output.contains("store_timeout_ms"), "the old key is unknown: {output}");
    let (ok, output, _) =
        checked("rate = \"1/s\"\nstore = \"redis://127.0.0.1:6379\"\nstore_timeout = \"1.5s\"\nstore_retry = \"1m\"");
    assert!(ok, "{output}");
}
