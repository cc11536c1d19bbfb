//! The proxy's RFC 9110 duties through the real binary: `Via` both ways and loops refused with
//! `508`, a client's broken body answered as the client's fault, an upstream failing mid-body
//! logged, compression metadata on HEAD and `304`, and a Redis outage logged at both ends.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::gunicorn::Gunicorn;
use common::python::PythonServer;
use common::redis::Redis;
use common::{Strata, client, run, write_config};

/// `tests/upstream/rfc_upstream.py` on a free loopback port; stopped on drop.
fn python_upstream() -> PythonServer {
    PythonServer::start("rfc_upstream.py")
}

/// One upstream route to `upstream` with `route_extra` keys, and `top` before it.
fn proxied(top: &str, upstream: &str, route_extra: &str) -> String {
    format!("{top}\n[[route]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n{route_extra}\n")
}

/// Sends raw bytes, returns everything the server answers until it closes (10 s at most).
fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// Waits up to 10 s for `strata`'s stderr to satisfy `done`; returns the stderr.
fn stderr_until(strata: &Strata, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = strata.stderr();
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn via_is_added_both_ways_and_a_request_that_looped_gets_508() {
    let app = python_upstream();
    let back = Strata::start(Some(&proxied("[server]\nvia_pseudonym = \"back\"", &app.url(), "")));
    let front = Strata::start(Some(&proxied("", &back.url(""), "")));
    let http = client();

    let res = http.get(front.url("/via")).header("via", "1.0 corporate-proxy").send().await.unwrap();
    assert_eq!(res.status(), 200);
    // Each hop appends the version it received and its name.
    assert_eq!(header(&res, "x-seen-via"), "1.0 corporate-proxy, 1.1 strata, 1.1 back");
    assert_eq!(header(&res, "via"), "1.1 app-cache, 1.1 back, 1.1 strata");

    // A request that already passed through this gateway is not forwarded again.
    let res = http.get(back.url("/via")).header("via", "1.1 nginx, 1.1 back").send().await.unwrap();
    assert_eq!(res.status(), 508);
    // Two chained instances with the same name look like a loop: that is why the name is configurable.
    let twin = Strata::start(Some(&proxied("", &front.url(""), "")));
    assert_eq!(http.get(twin.url("/via")).send().await.unwrap().status(), 508);

    // `via = false`: neither header is touched, and no loop is looked for.
    let quiet = Strata::start(Some(&proxied("", &app.url(), "via = false")));
    let res = http.get(quiet.url("/via")).header("via", "1.1 strata").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-seen-via"), "1.1 strata");
    assert_eq!(header(&res, "via"), "1.1 app-cache");
}

#[test]
fn a_bad_via_pseudonym_is_located_and_via_is_an_upstream_option() {
    let file = write_config(
        "[server]\nvia_pseudonym = \"edge gateway\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\nvia = false\n",
    );
    let out = run(&["check", "--config", file.path.to_str().unwrap()], "");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("strata.toml:2:17") && text.contains("`via_pseudonym = \"edge gateway\"`: expected a token"),
        "{text}"
    );
    assert!(text.contains("strata.toml:6:7") && text.contains("`via` is an option of upstream routes"), "{text}");
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_400_not_a_502() {
    let app = Gunicorn::start();
    let strata = Strata::start(Some(&proxied("", &app.url(), "")));
    let addr = strata.addr;
    let answer = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-a-size\r\n\r\n",
        )
    })
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A well-formed upload still goes through, and nothing blamed the upstream.
    let res = client().post(strata.url("/upload")).body(vec![b'z'; 1000]).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let stderr = strata.stderr();
    assert!(!stderr.contains("upstream request failed") && !stderr.contains("WARN"), "{stderr}");
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_the_clients_408() {
    let app = Gunicorn::start();
    let strata = Strata::start(Some(&proxied("[server]\nbody_read_timeout = \"500ms\"", &app.url(), "")));
    let addr = strata.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // 10 bytes of the 100 announced, then nothing: the stream stays open.
        stream.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789").unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let stderr = strata.stderr();
    assert!(!stderr.contains("upstream request failed") && !stderr.contains("WARN"), "{stderr}");
}

#[tokio::test]
async fn an_upstream_that_fails_mid_body_truncates_the_response_and_logs_a_warning() {
    let app = python_upstream();
    let strata = Strata::start(Some(&proxied("", &app.url(), "")));
    let addr = strata.addr;
    let answer = tokio::task::spawn_blocking(move || {
        raw(addr, b"GET /truncated HTTP/1.1\r\nHost: x\r\nAuthorization: Basic c2VjcmV0\r\n\r\n")
    })
    .await
    .unwrap();
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("content-length: 1000000"), "{head}");
    let body = answer.len() - head_end;
    assert!((1..1_000_000).contains(&body), "a truncated body, got {body} bytes");

    let stderr = stderr_until(&strata, |e| e.contains("failed mid-stream"));
    let line = stderr.lines().find(|l| l.contains("failed mid-stream")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("WARN") && (line.contains("route=\"/\"") || line.contains("route=/")), "{line}");
    assert!(line.contains(&app.addr.to_string()), "the upstream is named: {line}");
    assert!(!stderr.contains("c2VjcmV0"), "no header values in logs: {stderr}");
    assert_eq!(stderr.matches("failed mid-stream").count(), 1, "{stderr}");
}

#[tokio::test]
async fn compression_gives_head_and_304_the_metadata_of_the_200() {
    let app = python_upstream();
    let top = "[server]\nstack = [\"compression\"]\n[middleware.compression]\nkind = \"compression\"\nalgorithms = [\"gzip\"]";
    let strata = Strata::start(Some(&proxied(top, &app.url(), "")));
    // reqwest without its decompression features sends what it is told and decodes nothing.
    let http = client();

    let get = http.get(strata.url("/doc")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(header(&get, "content-encoding"), "gzip");
    assert_eq!(header(&get, "vary"), "accept-encoding");
    let etag = header(&get, "etag").to_string();
    assert_eq!(etag, "W/\"v1\"");

    let head = http.head(strata.url("/doc")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(head.status(), 200);
    for name in ["content-encoding", "vary", "etag"] {
        assert_eq!(header(&head, name), header(&get, name), "HEAD's {name} is the GET's");
    }
    assert!(head.headers().get("content-length").is_none(), "{:?}", head.headers());

    // The client revalidates with the tag it was given; the upstream compares plain strings.
    let again = http
        .get(strata.url("/doc"))
        .header("accept-encoding", "gzip")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    assert_eq!(header(&again, "vary"), "accept-encoding");

    // Identity: the strong tag, both ways.
    let plain = http.get(strata.url("/doc")).header("accept-encoding", "identity").send().await.unwrap();
    assert_eq!((header(&plain, "etag"), header(&plain, "content-length")), ("\"v1\"", "4096"));
    let plain_304 = http
        .get(strata.url("/doc"))
        .header("accept-encoding", "identity")
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!((plain_304.status().as_u16(), header(&plain_304, "etag")), (304, "\"v1\""));
}

#[tokio::test]
async fn each_redis_outage_logs_one_warning_and_one_recovery() {
    let port = common::free_port();
    let mut redis = Some(Redis::start_on(port));
    let config = format!(
        "[server]\nstack = [\"limit\"]\n[middleware.limit]\nkind = \"rate_limit\"\nrate = \"1000/min\"\n\
         store = \"redis://127.0.0.1:{port}\"\non_store_error = \"allow\"\nstore_retry = \"100ms\"\n\
         [[route]]\nprefix = \"/\"\napp = \"echo\"\n"
    );
    let strata = Strata::start(Some(&config));
    let http = client();
    // Through Redis: quota fields; without it (fail open): none.
    let limited = |res: &reqwest::Response| res.headers().contains_key("ratelimit");
    assert!(limited(&http.get(strata.url("/status/200")).send().await.unwrap()));
    for outage in 1..=2 {
        drop(redis.take());
        // Several failing checks, some after the retry delay: still one warning.
        for _ in 0..5 {
            let res = http.get(strata.url("/status/200")).send().await.unwrap();
            assert!(!limited(&res), "outage {outage}");
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        redis = Some(Redis::start_on(port));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !limited(&http.get(strata.url("/status/200")).send().await.unwrap()) {
            assert!(Instant::now() < deadline, "outage {outage}: Redis never used again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..3 {
            assert!(limited(&http.get(strata.url("/status/200")).send().await.unwrap()));
        }
        let stderr = stderr_until(&strata, |e| e.matches("Redis store recovered").count() >= outage);
        assert_eq!(stderr.matches("Redis is unavailable").count(), outage, "{stderr}");
        assert_eq!(stderr.matches("Redis store recovered").count(), outage, "{stderr}");
        let recovered = stderr.lines().rfind(|l| l.contains("Redis store recovered")).unwrap();
        assert!(recovered.contains("INFO") && recovered.contains("down_for"), "{recovered}");
    }
}
