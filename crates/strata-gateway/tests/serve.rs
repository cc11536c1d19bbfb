//! `strata serve` as a black box: the real binary on a free loopback port, a real HTTP client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Strata, client};

const ECHO_AND_TASKS: &str = r#"
[server]
listen = "127.0.0.1:8080"
header_read_timeout = "1s"
max_header_bytes = 16384
shutdown_grace = "5s"

[[route]]
prefix = "/api"
app = "tasks"

[[route]]
prefix = "/"
app = "echo"
"#;

#[tokio::test]
async fn the_embedded_default_serves_the_tasks_api() {
    let strata = Strata::start(None);
    let http = client();
    let list = http.get(strata.url("/tasks")).send().await.unwrap();
    assert_eq!(list.status(), 200);
    assert_eq!(list.text().await.unwrap(), "[]");
    let created =
        http.post(strata.url("/tasks")).json(&serde_json::json!({"title": "write tests"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let task: serde_json::Value = created.json().await.unwrap();
    assert_eq!(task["title"], "write tests");
    let bad = http
        .post(strata.url("/tasks"))
        .header("content-type", "application/json")
        .body("{\"title\":")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let missing = http.get(strata.url("/tasks/999")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn routes_pick_the_longest_prefix_and_apps_see_paths_below_it() {
    let strata = Strata::start(Some(ECHO_AND_TASKS));
    let http = client();
    let tasks = http.get(strata.url("/api/tasks")).send().await.unwrap();
    assert_eq!(tasks.status(), 200);
    assert_eq!(tasks.text().await.unwrap(), "[]");
    // A created task's Location is the path the client uses, prefix included, and it resolves.
    let created = http.post(strata.url("/api/tasks")).json(&serde_json::json!({"title": "t"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, "/api/tasks/1");
    assert_eq!(http.get(strata.url(&location)).send().await.unwrap().status(), 200);
    let echo: serde_json::Value = http.get(strata.url("/anything/x?q=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echo["path"], "/anything/x");
    // `/apix` is not under `/api`: the echo app answers (404 from echo, not the tasks app).
    let other = http.get(strata.url("/apix/tasks")).send().await.unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn a_panicking_app_answers_500_and_the_server_keeps_serving() {
    let strata = Strata::start(Some(ECHO_AND_TASKS));
    let http = client();
    let res = http.get(strata.url("/panic")).send().await.unwrap();
    assert_eq!(res.status(), 500);
    let body = res.text().await.unwrap();
    assert!(!body.contains("panic"), "no panic detail leaks: {body}");
    let ok = http.get(strata.url("/status/200")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let strata = Strata::start(Some(ECHO_AND_TASKS));
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let res = h2.get(strata.url("/api/tasks")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
}

fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let strata = Strata::start(Some(ECHO_AND_TASKS));
    let out = raw_exchange(
        strata.addr,
        b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("HTTP/1.1 201"), "{out}");
}

#[test]
fn malformed_requests_and_oversized_headers_get_4xx() {
    let strata = Strata::start(Some(ECHO_AND_TASKS));
    let out = raw_exchange(strata.addr, b"NOT A REQUEST\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000));
    let out = raw_exchange(strata.addr, big.as_bytes());
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    // The server survived both.
    let out = raw_exchange(strata.addr, b"GET /status/204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
}

#[test]
fn a_slow_client_is_cut_off_after_the_header_read_timeout() {
    let strata = Strata::start(Some(ECHO_AND_TASKS));
    let mut stream = TcpStream::connect(strata.addr).unwrap();
    stream.write_all(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(5), "connection held for {waited:?}");
    assert!(waited >= Duration::from_millis(900), "cut off too early: {waited:?}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let mut strata = Strata::start(Some(ECHO_AND_TASKS));
    let url = strata.url("/delay/2500");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    // Let the request reach the app before the signal (generously: CI machines can be busy).
    tokio::time::sleep(Duration::from_millis(900)).await;
    strata.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(strata.addr).is_err(), "new connections are refused during shutdown");
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    let status = strata.wait_exit(Duration::from_secs(10)).expect("strata exits after the grace period");
    assert!(status.success(), "{status:?}: {}", strata.stderr());
}

#[test]
fn an_invalid_config_never_starts_the_server() {
    let config = common::write_config("[server]\nlisten = \"nope\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
    let out = common::run(&["serve", "--config", config.path.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2:10: error:") && stderr.contains("strata did not start"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
}

/// The threads serving connections: a per-core server's workers (`strata-worker-N`, each with its
/// own blocking threads, named apart), or a work-stealing runtime's workers and blocking threads
/// (they share the name; the echo app starts none).
fn runtime_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with("strata-worker"))
        .count()
}

#[tokio::test]
async fn workers_sets_how_many_threads_serve() {
    let http = client();
    let cases = [
        ("", 1, "serving with 1 worker thread (per_core)\n"),
        ("", 3, "serving with 3 worker threads (per_core)\n"),
        ("runtime = \"work_stealing\"\n", 1, "serving with 1 worker thread (work_stealing)\n"),
        ("runtime = \"work_stealing\"\n", 3, "serving with 3 worker threads (work_stealing)\n"),
    ];
    for (runtime, workers, said) in cases {
        let strata = Strata::start(Some(&format!(
            "[server]\nworkers = {workers}\n{runtime}[[route]]\nprefix = \"/\"\napp = \"echo\"\n"
        )));
        // It serves, on several connections at once.
        let answers =
            futures_util::future::join_all((0..8).map(|_| client().get(strata.url("/status/200")).send())).await;
        assert!(answers.into_iter().all(|a| a.unwrap().status() == 200));
        assert_eq!(http.get(strata.url("/status/204")).send().await.unwrap().status(), 204);
        assert!(strata.stderr().contains(said), "{}", strata.stderr());
        assert_eq!(runtime_threads(strata.child.id()), workers, "workers = {workers}");
    }
}
