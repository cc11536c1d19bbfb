//! Connection-level limits of the real binary: silent and slow clients are cut at their deadlines,
//! keep-alive connections live their own idle time, stalled bodies get a 408, clients that stop
//! reading are cut, and `max_connections` holds — while normal clients keep getting answers.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Strata;

/// A config serving the echo app with the given extra `[server]` lines.
fn config(server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
}

/// Reads until the server closes the connection (or a reset), returning the time it took and
/// what was read. Panics if the connection is still open after `limit`.
fn wait_closed(stream: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (start.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (start.elapsed(), got),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {:?}", start.elapsed())
            }
            Err(e) => panic!("read failed: {e}"),
        }
        assert!(start.elapsed() < limit, "still open after {limit:?}");
    }
}

/// Sends one keep-alive GET on `stream` and reads its whole response (the echo app's answers have
/// a content-length).
fn get(stream: &mut TcpStream, path: &str) -> String {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read a response");
        assert!(n > 0, "closed before a whole response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("content-length");
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[test]
fn a_silent_connection_is_closed_at_the_head_timeout_over_http1_and_with_http2_on() {
    for http2 in [false, true] {
        let strata = Strata::start(Some(&config(&format!("header_read_timeout = \"1s\"\nhttp2 = {http2}"))));
        let mut silent = connect(strata.addr);
        let (took, got) = wait_closed(&mut silent, Duration::from_secs(10));
        assert!(got.is_empty(), "a silent client is sent nothing");
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(4),
            "http2={http2}: closed after {took:?}"
        );
    }
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_at_the_head_timeout_from_the_accept() {
    let strata = Strata::start(Some(&config("header_read_timeout = \"1s\"")));
    let mut slow = connect(strata.addr);
    let start = Instant::now();
    slow.write_all(b"GET /anything HTTP/1.1\r\n").unwrap();
    // One header byte every 200 ms: each byte would restart a per-read timer, never this one.
    let mut cut = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(b"X").is_err() {
            cut = true;
            break;
        }
        if start.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    if !cut {
        // The writes may all have landed in the socket buffer: the close shows on read.
        let (_, got) = wait_closed(&mut slow, Duration::from_secs(5));
        assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
    }
    assert!(start.elapsed() < Duration::from_secs(8), "cut after {:?}", start.elapsed());
}

#[test]
fn keep_alive_connections_live_their_idle_time_not_the_head_timeout() {
    let strata =
        Strata::start(Some(&config("header_read_timeout = \"1s\"\nkeepalive_timeout = \"3s\"\nhttp2 = false")));
    let mut stream = connect(strata.addr);
    assert!(get(&mut stream, "/status/200").starts_with("HTTP/1.1 200"));
    // Idle for twice the head timeout: still open, since idling is the keep-alive timeout's.
    std::thread::sleep(Duration::from_secs(2));
    assert!(get(&mut stream, "/status/200").starts_with("HTTP/1.1 200"));
    // Then idle past the keep-alive timeout: closed.
    let (took, got) = wait_closed(&mut stream, Duration::from_secs(10));
    assert!(got.is_empty());
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(6), "closed after {took:?}");
}

#[test]
fn a_streaming_response_is_not_idle() {
    // Server-sent events for longer than the keep-alive timeout: the stream must not be cut.
    let strata = Strata::start(Some(&config("keepalive_timeout = \"1s\"\nheader_read_timeout = \"1s\"")));
    let mut stream = connect(strata.addr);
    write!(stream, "GET /sse/3 HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while !String::from_utf8_lossy(&got).contains("0\r\n\r\n") && start.elapsed() < Duration::from_secs(15) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "cut mid-stream after {:?}: {}", start.elapsed(), String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("data:").count(), 3, "{text}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_at_the_keepalive_timeout() {
    let strata = Strata::start(Some(&config("keepalive_timeout = \"2s\"\nheader_read_timeout = \"1s\"")));
    let tcp = tokio::net::TcpStream::connect(strata.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let req = http::Request::get("http://test/status/204").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 204);
    let idle = Instant::now();
    // The server's GOAWAY ends the client's connection task.
    tokio::time::timeout(Duration::from_secs(10), driver).await.expect("closed by the server").unwrap().ok();
    let took = idle.elapsed();
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "closed after {took:?}");
}

#[test]
fn a_stalled_request_body_gets_a_408_and_a_slow_steady_one_is_served() {
    let strata = Strata::start(Some(&config("body_read_timeout = \"1s\"")));
    let mut stalled = connect(strata.addr);
    let start = Instant::now();
    write!(stalled, "POST /anything HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nab").unwrap();
    let response = read_response(&mut stalled);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(start.elapsed() < Duration::from_secs(5), "answered after {:?}", start.elapsed());

    // Ten bytes, one every 400 ms: slower than the timeout in total, never stalled for it.
    let mut steady = connect(strata.addr);
    write!(steady, "POST /anything HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n").unwrap();
    for byte in b"0123456789" {
        std::thread::sleep(Duration::from_millis(400));
        steady.write_all(&[*byte]).unwrap();
    }
    let response = read_response(&mut steady);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("0123456789"), "{response}");
}

#[test]
fn a_client_that_stops_reading_is_cut_at_the_send_timeout() {
    let strata = Strata::start(Some(&config("send_timeout = \"1s\"")));
    let mut reader = connect(strata.addr);
    // 100 MB: far more than the socket buffers on both sides hold.
    write!(reader, "GET /bytes/104857600 HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // Whatever was buffered arrives, then the close: far less than the whole body.
    let (_, got) = wait_closed(&mut reader, Duration::from_secs(20));
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(got.len() < 50 * 1024 * 1024, "{} bytes arrived: the connection was not cut", got.len());
    // Meanwhile other clients are served.
    let mut other = connect(strata.addr);
    assert!(get(&mut other, "/status/200").starts_with("HTTP/1.1 200"));
}

#[test]
fn beyond_max_connections_new_connections_are_closed_and_reported_once() {
    let strata = Strata::start(Some(&config("max_connections = 2\nheader_read_timeout = \"30s\"")));
    let mut first = connect(strata.addr);
    let _second = connect(strata.addr);
    // Let the server accept both before the next ones arrive.
    assert!(get(&mut first, "/status/200").starts_with("HTTP/1.1 200"));
    for _ in 0..20 {
        let mut refused = connect(strata.addr);
        let (_, got) = wait_closed(&mut refused, Duration::from_secs(5));
        assert!(got.is_empty());
    }
    let log = strata.stderr();
    assert_eq!(log.matches("connection limit reached").count(), 1, "{log}");
    // A slot freed is a slot for the next client.
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    let mut next = connect(strata.addr);
    assert!(get(&mut next, "/status/200").starts_with("HTTP/1.1 200"));
}

#[test]
fn a_normal_client_is_served_through_a_flood_of_silent_and_non_reading_connections() {
    let strata = Strata::start(Some(&config(
        "header_read_timeout = \"2s\"\nsend_timeout = \"2s\"\nmax_connections = 2000\nworkers = 2",
    )));
    // 1,000 connections that send nothing, and 20 that ask for 100 MB and never read.
    let silent: Vec<TcpStream> = (0..1_000).filter_map(|_| TcpStream::connect(strata.addr).ok()).collect();
    assert!(silent.len() > 900, "only {} silent connections opened", silent.len());
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let mut s = connect(strata.addr);
        write!(s, "GET /bytes/104857600 HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        stuck.push(s);
    }
    // A normal client, 40 times, 100 ms apart, while the flood holds: every request answered, in
    // good time (the flood's own connections are cut 2 s in).
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let asked = Instant::now();
        let mut client = connect(strata.addr);
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(get(&mut client, "/status/200").starts_with("HTTP/1.1 200"));
        slowest = slowest.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(slowest < Duration::from_secs(2), "slowest answer took {slowest:?}");
    // By now every silent and stuck connection has been closed by the server.
    for mut s in silent.into_iter().take(50).chain(stuck) {
        wait_closed(&mut s, Duration::from_secs(10));
    }
    assert!(!strata.stderr().contains("Too many open files"));
}
