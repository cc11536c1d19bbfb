//! The gateway in front of a real Python app: `tests/upstream/tasks_app.py` under gunicorn, behind
//! the real `strata` binary with the classic stack. strata does auth, CORS, request ids and logs;
//! the app only does tasks.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use common::gunicorn::Gunicorn;
use common::{Strata, client};

const ORIGIN: &str = "http://127.0.0.1:5173";

/// A cheap argon2id hash: the binary under test is a debug build, where full-cost argon2 is slow.
fn argon2_hash(password: &str) -> String {
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon.hash_password(password.as_bytes(), &SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap()).unwrap().to_string()
}

/// The classic stack in front of `upstream`, with `errors` formatting failures as problem+json, and
/// `extra_route` (a whole `[[route]]` table, or nothing) beside the main route.
fn classic(upstream: &str, log: &str, extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["timing", "rid", "log", "errors", "cors", "auth"]

[middleware.timing]
kind = "timing"

[middleware.rid]
kind = "request_id"

[middleware.log]
kind = "access_log"
format = "json"
output = "{log}"

[middleware.errors]
kind = "errors"
default_format = "json"

[middleware.cors]
kind = "cors"
allow_origins = ["{ORIGIN}"]
allow_methods = ["GET", "POST", "PUT", "DELETE"]
allow_headers = ["content-type", "authorization"]
expose_headers = ["x-request-id"]
allow_credentials = true

[middleware.auth]
kind = "basic_auth"
realm = "tasks"
users = {{ alice = "{hash}" }}
forward_user_header = "x-forwarded-user"
strip_authorization = true

{extra}

[[route]]
prefix = "/"
upstream = "{upstream}"
"#,
        hash = argon2_hash("wonderland")
    )
}

fn log_path(dir: &tempfile::TempDir) -> String {
    dir.path().join("access.log").to_str().unwrap().to_string()
}

#[tokio::test]
async fn crud_through_the_gateway_with_auth_cors_and_forwarding_done_by_strata() {
    let app = Gunicorn::start();
    let logs = tempfile::tempdir().unwrap();
    let strata = Strata::start(Some(&classic(&app.url(), &log_path(&logs), "")));
    let http = client();

    // Auth and CORS are strata's: the app has neither.
    let anonymous = http.get(strata.url("/tasks")).header("origin", ORIGIN).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["access-control-allow-origin"], ORIGIN);
    assert!(anonymous.headers().contains_key("x-request-id"));
    let preflight = http
        .request(reqwest::Method::OPTIONS, strata.url("/tasks/1"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("DELETE"));
    let other_origin = http
        .request(reqwest::Method::OPTIONS, strata.url("/tasks"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(other_origin.status(), 403);

    // CRUD, authenticated.
    let auth = |r: reqwest::RequestBuilder| r.basic_auth("alice", Some("wonderland")).header("origin", ORIGIN);
    let created = auth(http.post(strata.url("/tasks"))).json(&serde_json::json!({"title": "proxy it"})).send();
    let created = created.await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["access-control-allow-origin"], ORIGIN);
    let task: serde_json::Value = created.json().await.unwrap();
    assert_eq!(task["title"], "proxy it");
    let id = task["id"].as_i64().unwrap();
    let url = strata.url(&format!("/tasks/{id}"));
    let updated = auth(http.put(&url)).json(&serde_json::json!({"done": true})).send().await.unwrap();
    assert_eq!(updated.status(), 200);
    let fetched: serde_json::Value = auth(http.get(&url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(fetched["done"], true);
    let list: serde_json::Value = auth(http.get(strata.url("/tasks"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(auth(http.delete(&url)).send().await.unwrap().status(), 204);
    let gone = auth(http.get(&url)).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    // The app's own error body passes through (errors replaces only strata's own by default).
    assert_eq!(gone.json::<serde_json::Value>().await.unwrap()["error"], "no such task");

    // What the app saw.
    let seen = auth(http.get(strata.url("/headers?x=1")))
        .header("x-request-id", "trace-me-123")
        .header("x-forwarded-user", "mallory")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "drop me")
        .send()
        .await
        .unwrap();
    assert_eq!(seen.headers()["x-request-id"], "trace-me-123");
    let seen: serde_json::Value = seen.json().await.unwrap();
    let headers = &seen["headers"];
    assert_eq!(seen["query"], "x=1");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], strata.addr.to_string());
    assert_eq!(headers["host"], strata.addr.to_string(), "Host is preserved by default");
    assert_eq!(headers["x-request-id"], "trace-me-123");
    assert_eq!(headers["x-forwarded-user"], "alice", "the client cannot choose the user: {headers}");
    assert!(headers.get("authorization").is_none(), "credentials stop at strata: {headers}");
    assert!(headers.get("x-hop").is_none(), "headers named by Connection are hop-by-hop: {headers}");

    // Every request, rejected or proxied, is in the access log.
    strata.signal("TERM");
    let mut strata = strata;
    strata.wait_exit(Duration::from_secs(15)).expect("strata exits");
    let log = std::fs::read_to_string(logs.path().join("access.log")).unwrap();
    let statuses: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [401, 204, 403, 201, 200, 200, 200, 204, 404, 200], "{log}");
}

#[tokio::test]
async fn a_large_response_streams_through_with_bounded_gateway_memory() {
    let app = Gunicorn::start();
    let strata = Strata::start(Some(&format!("[[route]]\nprefix = \"/\"\nupstream = \"{}\"\n", app.url())));
    let http = client();
    // Warm up: the connection pool, the runtime's threads and buffers.
    let warm = http.get(strata.url("/big?mb=1")).send().await.unwrap();
    assert_eq!(warm.bytes().await.unwrap().len(), 1 << 20);
    let baseline = common::peak_rss_kib(strata.child.id());

    const MIB: usize = 64;
    let started = Instant::now();
    let res = http.get(strata.url(&format!("/big?mb={MIB}"))).timeout(Duration::from_secs(120)).send();
    let mut res = res.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], (MIB << 20).to_string());
    let mut total = 0;
    while let Some(chunk) = res.chunk().await.unwrap() {
        total += chunk.len();
    }
    assert_eq!(total, MIB << 20);
    let peak = common::peak_rss_kib(strata.child.id());
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("{MIB} MiB in {:?}; gateway peak RSS {baseline} KiB -> {peak} KiB", started.elapsed());
    assert!(growth_mib < 8, "the gateway's peak memory grew by {growth_mib} MiB for a {MIB} MiB response");
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let app = Gunicorn::start();
    let strata = Strata::start(Some(&format!("[[route]]\nprefix = \"/\"\nupstream = \"{}\"\n", app.url())));
    let started = Instant::now();
    let mut res = client().get(strata.url("/events?n=3&gap_ms=700")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while arrivals.len() < text.matches("\n\n").count() {
            arrivals.push(started.elapsed());
        }
    }
    assert_eq!(text, "id: 0\ndata: event 0\n\nid: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\n");
    assert_eq!(arrivals.len(), 3);
    // Each event came as it was sent, not all together at the end.
    assert!(arrivals[2] - arrivals[0] >= Duration::from_millis(1000), "{arrivals:?}");
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(400), "{arrivals:?}");
}

#[tokio::test]
async fn a_dead_upstream_is_a_formatted_502_and_strata_recovers_when_it_returns() {
    let mut app = Gunicorn::start();
    let logs = tempfile::tempdir().unwrap();
    let mut strata = Strata::start(Some(&classic(&app.url(), &log_path(&logs), "")));
    let http = client();
    let get = || http.get(strata.url("/tasks")).basic_auth("alice", Some("wonderland")).header("origin", ORIGIN);
    assert_eq!(get().send().await.unwrap().status(), 200);

    app.stop();
    let down = get().header("accept", "application/json").send().await.unwrap();
    assert_eq!(down.status(), 502);
    // Still decorated by every outer layer.
    assert_eq!(down.headers()["access-control-allow-origin"], ORIGIN);
    assert!(down.headers().contains_key("x-request-id"));
    assert!(down.headers().contains_key("x-response-time"));
    assert_eq!(down.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = down.json().await.unwrap();
    assert_eq!(problem["status"], 502);
    assert_eq!(problem["detail"], "The upstream server could not be reached.");

    app.restart();
    let back = get().send().await.unwrap();
    assert_eq!(back.status(), 200);
    assert!(strata.child.try_wait().unwrap().is_none(), "strata was never restarted");
    assert!(strata.stderr().contains("upstream request failed"), "the failure is logged: {}", strata.stderr());
}

#[tokio::test]
async fn a_pooled_connection_times_each_request_from_its_own_start() {
    let app = Gunicorn::start();
    let config = format!("[[route]]\nprefix = \"/\"\nupstream = \"{}\"\ntimeout = \"1s\"\n", app.url());
    let strata = Strata::start(Some(&config));
    // One client connection: its requests reach one worker, which reuses one pooled upstream
    // connection, and with it the connection's one timer.
    let http = client();
    let status = |path: &'static str| {
        let request = http.get(strata.url(path)).send();
        async move { request.await.unwrap().status().as_u16() }
    };
    // Each 600 ms answer has a second of its own, not what an earlier request left of one.
    for round in 0..3 {
        assert_eq!(status("/slow?ms=600").await, 200, "round {round}");
    }
    let started = Instant::now();
    assert_eq!(status("/slow?ms=3000").await, 504);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500), "{waited:?}");
    // The abandoned connection is not reused mid-exchange: the next request is answered.
    assert_eq!(status("/slow?ms=10").await, 200);
    // The timer fires while the connection is idle; the next requests still get a full second,
    // and a slow one is still cut.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status("/slow?ms=600").await, 200);
    let started = Instant::now();
    assert_eq!(status("/slow?ms=3000").await, 504);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500), "{waited:?}");
}

#[tokio::test]
async fn slow_upstreams_get_504_from_the_route_timeout_and_the_timeout_kind() {
    let app = Gunicorn::start();
    let config = format!(
        r#"
[middleware.errors]
kind = "errors"
default_format = "json"

[middleware.deadline]
kind = "timeout"
duration = "700ms"

[server]
stack = ["errors"]

[[route]]
prefix = "/slow"
upstream = "{url}"
timeout = "1s"
idle_timeout = "0s"   # a fresh connection per request works too

[[route]]
prefix = "/deadline"
stack = ["deadline"]
upstream = "{url}"
strip_prefix = true
"#,
        url = app.url()
    );
    let strata = Strata::start(Some(&config));
    let http = client();
    for _ in 0..3 {
        let fast = http.get(strata.url("/slow?ms=10")).send().await.unwrap();
        assert_eq!(fast.status(), 200);
    }
    let started = Instant::now();
    let slow = http.get(strata.url("/slow?ms=4000")).send().await.unwrap();
    assert_eq!(slow.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let problem: serde_json::Value = slow.json().await.unwrap();
    assert_eq!(problem["detail"], "The upstream server did not answer in time.");

    // The timeout kind, on a route of its own (the app sees `/slow`, `/events`: the prefix is stripped).
    assert_eq!(http.get(strata.url("/deadline/slow?ms=10")).send().await.unwrap().status(), 200);
    let started = Instant::now();
    let late = http.get(strata.url("/deadline/slow?ms=4000")).send().await.unwrap();
    assert_eq!(late.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let problem: serde_json::Value = late.json().await.unwrap();
    assert_eq!(problem["detail"], "The server did not answer in time.");
    // A head in time passes, and its body may take longer than the deadline.
    let stream = http.get(strata.url("/deadline/events?n=2&gap_ms=1200")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.text().await.unwrap().matches("data: ").count(), 2);
}

/// Sends a chunked upload of `chunks` chunks of 64 KiB and returns the raw response.
fn chunked_upload(addr: std::net::SocketAddr, path: &str, chunks: usize) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'y'; 65536];
    for _ in 0..chunks {
        // The server may answer and close before all is sent: later writes may fail.
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn body_limits_hold_for_declared_and_chunked_uploads() {
    let app = Gunicorn::start();
    let config = format!(
        r#"
[middleware.limit]
kind = "body_limit"
max_bytes = 1048576

[[route]]
prefix = "/"
stack = ["limit"]
upstream = "{}"
"#,
        app.url()
    );
    let strata = Strata::start(Some(&config));
    let http = client();
    let small = http.post(strata.url("/upload")).body(vec![b'z'; 1000]).send().await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.json::<serde_json::Value>().await.unwrap()["received"], 1000);
    let declared = http.post(strata.url("/upload")).body(vec![b'z'; 2 << 20]).send().await;
    // The 413 comes before the body is read; the client may see it or a reset while still sending.
    if let Ok(res) = declared {
        assert_eq!(res.status(), 413);
    }

    let addr = strata.addr;
    let within = tokio::task::spawn_blocking(move || chunked_upload(addr, "/upload", 8)).await.unwrap();
    assert!(within.starts_with("HTTP/1.1 200"), "{within}");
    assert!(within.contains("\"received\": 524288"), "{within}");
    let over = tokio::task::spawn_blocking(move || chunked_upload(addr, "/upload", 40)).await.unwrap();
    assert!(over.starts_with("HTTP/1.1 413"), "{over}");
    // The gateway is fine afterwards.
    assert_eq!(http.get(strata.url("/headers")).send().await.unwrap().status(), 200);
}

#[test]
fn check_and_explain_accept_upstream_routes_and_their_options() {
    let config = common::write_config(
        "[[route]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9\"\nstrip_prefix = true\nforwarded = \"both\"\n",
    );
    let out = common::run(&["check", "--config", config.path.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 warning(s)"), "{stdout}");
    let bad = common::write_config("[[route]]\nprefix = \"/\"\napp = \"echo\"\ntimeout = \"5s\"\n");
    let out = common::run(&["check", "--config", bad.path.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(":4:11: error: `timeout` is an option of upstream routes"), "{stderr}");
    let bad = common::write_config(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nforwarded = \"x-forwarder\"\n",
    );
    let out = common::run(&["check", "--config", bad.path.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":4:13: error:") && stderr.contains("did you mean `x-forwarded`?"), "{stderr}");
}

/// A one-connection upstream that answers an upgrade request with `101` and then echoes every byte
/// back upper-cased, so the test can tell the upstream's bytes from its own. Returns its address
/// and the request head it received.
fn upgrading_upstream() -> (std::net::SocketAddr, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                        break;
                    }
                }
            }
        }
        String::from_utf8(head).unwrap()
    });
    (addr, handle)
}

#[test]
fn connection_upgrades_pass_through_both_ways() {
    let (upstream, seen) = upgrading_upstream();
    let strata = Strata::start(Some(&format!(
        "[middleware.rid]\nkind = \"request_id\"\n[server]\nstack = [\"rid\"]\n[[route]]\nprefix = \"/\"\nupstream = \"http://{upstream}\"\n"
    )));
    let mut client = TcpStream::connect(strata.addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    client
        .write_all(b"GET /socket HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: shout\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: shout") && head.contains("connection: upgrade"), "{head}");
    assert!(head.contains("x-request-id: "), "the 101 is decorated like any response: {head}");
    for word in ["hello", "again"] {
        client.write_all(word.as_bytes()).unwrap();
        let mut echoed = vec![0u8; word.len()];
        client.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, word.to_ascii_uppercase().as_bytes());
    }
    drop(client);
    let request = seen.join().unwrap().to_ascii_lowercase();
    assert!(request.contains("upgrade: shout") && request.contains("connection: upgrade"), "{request}");
    assert!(!request.contains("keep-alive"), "the client's other connection options stay here: {request}");
    assert!(request.contains("x-forwarded-for: 127.0.0.1"), "{request}");
}

#[tokio::test]
async fn http2_clients_reach_an_http1_upstream_with_their_host_and_forwarded_headers() {
    let app = Gunicorn::start();
    let config = format!(
        "[[route]]\nprefix = \"/app\"\nupstream = \"{}\"\nstrip_prefix = true\nforwarded = \"both\"\npreserve_host = false\n",
        app.url()
    );
    let strata = Strata::start(Some(&config));
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let res = h2.get(strata.url("/app/headers?q=2")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let seen: serde_json::Value = res.json().await.unwrap();
    assert_eq!(seen["path"], "/headers", "the prefix is stripped");
    assert_eq!(seen["query"], "q=2");
    let headers = &seen["headers"];
    assert_eq!(headers["host"], app.addr.to_string(), "Host rewritten to the upstream's");
    assert_eq!(headers["x-forwarded-host"], strata.addr.to_string(), "the client's host, from HTTP/2's authority");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["forwarded"], format!("for=127.0.0.1;proto=http;host=\"{}\"", strata.addr));
}

#[tokio::test]
async fn forwarding_headers_are_extended_for_trusted_proxies_and_replaced_for_anyone_else() {
    let app = Gunicorn::start();
    let http = client();
    for (trusted, expected_for, expected_proto) in
        [("[]", "127.0.0.1", "http"), (r#"["127.0.0.1/32"]"#, "203.0.113.9, 127.0.0.1", "https")]
    {
        let config = format!(
            "[server]\ntrusted_proxies = {trusted}\n\n[[route]]\nprefix = \"/\"\nupstream = \"{}\"\nforwarded = \"both\"\n",
            app.url()
        );
        let strata = Strata::start(Some(&config));
        // What a client could forge, or a TLS-terminating load balancer would truthfully say.
        let res = http
            .get(strata.url("/headers"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "public.example")
            .header("forwarded", "for=203.0.113.9;proto=https")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let seen: serde_json::Value = res.json().await.unwrap();
        let headers = &seen["headers"];
        assert_eq!(headers["x-forwarded-for"], expected_for, "trusted_proxies = {trusted}: {headers}");
        assert_eq!(headers["x-forwarded-proto"], expected_proto, "trusted_proxies = {trusted}: {headers}");
        let (host, forwarded) = if expected_proto == "https" {
            (
                "public.example".to_string(),
                format!("for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"{}\"", strata.addr),
            )
        } else {
            (strata.addr.to_string(), format!("for=127.0.0.1;proto=http;host=\"{}\"", strata.addr))
        };
        assert_eq!(headers["x-forwarded-host"], host.as_str(), "trusted_proxies = {trusted}: {headers}");
        assert_eq!(headers["forwarded"], forwarded.as_str(), "trusted_proxies = {trusted}: {headers}");
    }
}

#[tokio::test]
async fn an_http2_upstream_is_spoken_to_in_http2() {
    // The upstream is another strata serving the echo app: it accepts h2c with prior knowledge and
    // its access log names the protocol each request arrived in.
    let logs = tempfile::tempdir().unwrap();
    let upstream = Strata::start(Some(&format!(
        "[server]\nstack = [\"log\"]\n\n[middleware.log]\nkind = \"access_log\"\noutput = \"{}\"\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
        log_path(&logs)
    )));
    let gateway = Strata::start(Some(&format!(
        "[[route]]\nprefix = \"/\"\nupstream = \"http://{}\"\nhttp2 = true\n",
        upstream.addr
    )));
    let http = client();
    for i in 0..3 {
        let res = http.post(gateway.url(&format!("/anything/{i}"))).body("over h2").send().await.unwrap();
        assert_eq!(res.status(), 200);
        let echoed: serde_json::Value = res.json().await.unwrap();
        assert_eq!(echoed["path"], format!("/anything/{i}"));
        assert_eq!(echoed["body"], "over h2");
    }
    // Lines are written after the response: give the writer a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(logs.path().join("access.log")).unwrap_or_default();
        if log.lines().count() >= 3 || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    for line in lines {
        assert!(line.contains("HTTP/2.0\""), "the upstream saw HTTP/2: {line}");
    }
}
