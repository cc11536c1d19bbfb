//! `runtime = "per_core"` through the real binary, with two workers: many keep-alive connections
//! served at once, a graceful shutdown that drains a slow request, a reload, a TLS listener, one
//! `max_connections` cap across the workers, and proxying to a Python app under gunicorn.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::gunicorn::Gunicorn;
use common::tls::{TestCa, write_leaf};
use common::{Strata, client, write_config};

/// A per-core config of two workers with `server` lines more and `routes` (default: echo on `/`).
fn config(server: &str, routes: &str) -> String {
    let routes = if routes.is_empty() { "[[route]]\nprefix = \"/\"\napp = \"echo\"\n" } else { routes };
    format!("[server]\nruntime = \"per_core\"\nworkers = 2\n{server}\n\n{routes}")
}

/// A keep-alive connection: a client that holds at most one.
fn one_connection_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(1).timeout(Duration::from_secs(20)).build().unwrap()
}

#[tokio::test]
async fn many_keep_alive_connections_are_all_answered() {
    let strata = Strata::start(Some(&config("", "")));
    assert!(strata.stderr().contains("serving with 2 worker threads (per_core)"), "{}", strata.stderr());
    const CONNECTIONS: usize = 16;
    const EACH: usize = 40;
    let connections = (0..CONNECTIONS).map(|c| {
        let url = strata.url("/anything");
        async move {
            let http = one_connection_client();
            let mut answered = 0;
            for i in 0..EACH {
                let res = http.get(format!("{url}/{c}/{i}")).send().await.unwrap();
                assert_eq!(res.status(), 200);
                let echo: serde_json::Value = res.json().await.unwrap();
                assert_eq!(echo["path"], format!("/anything/{c}/{i}"), "each answer is its own request's");
                answered += 1;
            }
            answered
        }
    });
    let answered: usize = futures_util::future::join_all(connections).await.into_iter().sum();
    assert_eq!(answered, CONNECTIONS * EACH);
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_on_its_worker() {
    let mut strata = Strata::start(Some(&config("shutdown_grace = \"5s\"", "")));
    let url = strata.url("/delay/2000");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    // Let the request reach the app before the signal (generously: CI machines can be busy).
    tokio::time::sleep(Duration::from_millis(700)).await;
    strata.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(strata.addr).is_err(), "new connections are refused during shutdown");
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    let status = strata.wait_exit(Duration::from_secs(10)).expect("strata exits after the request");
    assert!(status.success(), "{status:?}: {}", strata.stderr());
}

#[tokio::test]
async fn a_reload_reaches_connections_on_every_worker() {
    let strata = Strata::start(Some(&config("", "")));
    // Connections open before the reload, spread over both workers.
    let clients: Vec<reqwest::Client> = (0..4).map(|_| one_connection_client()).collect();
    for http in &clients {
        assert_eq!(http.get(strata.url("/tasks")).send().await.unwrap().status(), 404, "echo has no /tasks");
    }
    std::fs::write(strata.config_path(), config("", "[[route]]\nprefix = \"/\"\napp = \"tasks\"\n")).unwrap();
    strata.signal("HUP");
    let start = Instant::now();
    while !strata.stderr().contains("config reloaded") {
        assert!(start.elapsed() < Duration::from_secs(10), "no reload: {}", strata.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    for http in &clients {
        let res = http.get(strata.url("/tasks")).send().await.unwrap();
        assert_eq!(res.status(), 200, "the tasks app answers on the same connection");
        assert_eq!(res.text().await.unwrap(), "[]");
    }
}

#[test]
fn the_tls_listener_serves_from_the_workers() {
    let ca = TestCa::new();
    let tls = "[server.tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ cert = \"site.pem\", key = \"site.key\" }]\n";
    let file = write_config(&format!(
        "[server]\nruntime = \"per_core\"\nworkers = 2\n\n{tls}\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n"
    ));
    std::fs::write(file.dir.path().join("ca.pem"), ca.pem()).unwrap();
    write_leaf(file.dir.path(), "site", &ca.leaf("site", &["site.test"], 30));
    let strata = Strata::start_tls(file);
    let port = strata.https_addr().port();
    // Three requests on one connection, over HTTP/1.1 then HTTP/2 (`/status/204` has no body).
    let url = format!("https://site.test:{port}/status/204");
    for http in ["--http1.1", "--http2"] {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "-w", "%{http_code} %{http_version}\n", http])
            .arg("--cacert")
            .arg(strata.config_dir().join("ca.pem"))
            .args(["--resolve", &format!("site.test:{port}:127.0.0.1")])
            .args([&url, &url, &url])
            .output()
            .expect("run curl");
        let said = String::from_utf8_lossy(&out.stdout);
        let version = if http == "--http2" { "2" } else { "1.1" };
        assert_eq!(said, format!("204 {version}\n").repeat(3), "{http}: {}", strata.stderr());
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// A request on `stream`, answered (the echo app's `/status/200` has an empty body).
fn answered(stream: &mut TcpStream) -> bool {
    stream.write_all(b"GET /status/200 HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut got = [0u8; 12];
    stream.read_exact(&mut got).is_ok() && got.starts_with(b"HTTP/1.1 200")
}

#[test]
fn max_connections_is_one_cap_across_the_workers() {
    let strata = Strata::start(Some(&config("max_connections = 3\nheader_read_timeout = \"30s\"", "")));
    // Three connections, each answered: at least two workers hold them.
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect(strata.addr)).collect();
    for stream in &mut open {
        assert!(answered(stream));
    }
    // A fourth, on whichever worker, is closed without an answer.
    for _ in 0..4 {
        let mut refused = connect(strata.addr);
        let _ = refused.write_all(b"GET /status/200 HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut got = Vec::new();
        let _ = refused.read_to_end(&mut got);
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    // A slot freed on one worker is a slot for the next client.
    drop(open.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut next = connect(strata.addr);
    assert!(answered(&mut next));
}

#[tokio::test]
async fn proxying_to_gunicorn_works_from_every_worker() {
    let app = Gunicorn::start();
    let strata =
        Strata::start(Some(&config("", &format!("[[route]]\nprefix = \"/\"\nupstream = \"{}\"\n", app.url()))));
    // Eight connections at once, so both workers proxy, each with its own upstream connections.
    let created = (0..8).map(|i| {
        let url = strata.url("/tasks");
        async move {
            let http = one_connection_client();
            let mut ids = Vec::new();
            for j in 0..5 {
                let title = format!("task {i}-{j}");
                let res = http.post(&url).json(&serde_json::json!({ "title": title })).send().await.unwrap();
                assert_eq!(res.status(), 201);
                let task: serde_json::Value = res.json().await.unwrap();
                assert_eq!(task["title"], title);
                ids.push(task["id"].as_i64().unwrap());
            }
            ids
        }
    });
    let mut ids: Vec<i64> = futures_util::future::join_all(created).await.into_iter().flatten().collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 40, "every create reached the app once");
    let list: Vec<serde_json::Value> = client().get(strata.url("/tasks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 40);
}
