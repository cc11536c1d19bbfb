//! `https://` upstreams: the real `strata` binary in front of the tasks app under a real gunicorn
//! serving TLS with a certificate from a CA made here (rcgen), which the system does not trust.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::gunicorn::Gunicorn;
use common::tls::TestPki;
use common::{Strata, client, run, write_config};

/// gunicorn serving TLS with the leaf certificate, writing each request's client port (its
/// connection) to `access.log` in the PKI's directory.
fn tls_gunicorn(pki: &TestPki) -> Gunicorn {
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    Gunicorn::start_with_args(&[
        "--certfile".into(),
        arg(&pki.path("cert.pem")),
        "--keyfile".into(),
        arg(&pki.path("key.pem")),
        "--access-logfile".into(),
        arg(&pki.path("access.log")),
        "--access-logformat".into(),
        "%({remote_port}e)s %(U)s".into(),
    ])
}

/// A config whose one route forwards to `upstream` with the route keys `keys`.
fn config(upstream: &str, keys: &str) -> String {
    format!("[[route]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n{keys}\n")
}

/// The ca.pem line of a config (absolute: the config file lives in another directory).
fn ca_key(pki: &TestPki) -> String {
    format!("tls_ca_file = \"{}\"", pki.path("ca.pem").display())
}

async fn get(strata: &Strata, path: &str) -> (u16, String) {
    let res = client().get(strata.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// Waits until `strata`'s stderr contains `needle` (log lines are written by another thread).
fn wait_for_log(strata: &Strata, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let log = strata.stderr();
        if log.contains(needle) || start.elapsed() > Duration::from_secs(5) {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_certified_by_the_routes_ca_is_reached() {
    let pki = TestPki::new();
    let upstream = tls_gunicorn(&pki);
    let strata = Strata::start(Some(&config(&format!("https://{}", upstream.addr), &ca_key(&pki))));
    let (status, body) = get(&strata, "/headers?x=1").await;
    assert_eq!(status, 200, "{body}\n{}", strata.stderr());
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/headers");
    assert_eq!(seen["query"], "x=1");
    // Host, forwarding headers and Via are what they are for an http:// upstream.
    assert_eq!(seen["headers"]["host"], strata.addr.to_string());
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["via"], "1.1 strata");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_certified_by_an_unknown_ca_is_a_502_whose_reason_is_only_logged() {
    let pki = TestPki::new();
    let upstream = tls_gunicorn(&pki);
    // No tls_ca_file: the system's roots do not know the test CA.
    let strata = Strata::start(Some(&config(&format!("https://{}", upstream.addr), "")));
    let (status, body) = get(&strata, "/headers").await;
    assert_eq!(status, 502, "{body}");
    let log = wait_for_log(&strata, "UnknownIssuer");
    assert!(log.contains("WARN") && log.contains("invalid peer certificate: UnknownIssuer"), "{log}");
    assert!(!body.contains("certificate") && !body.contains("UnknownIssuer"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_server_name_is_the_name_verified() {
    let pki = TestPki::new();
    let upstream = tls_gunicorn(&pki);
    let url = format!("https://localhost:{}", upstream.addr.port());
    let named = |name: &str| config(&url, &format!("{}\ntls_server_name = \"{name}\"", ca_key(&pki)));

    let strata = Strata::start(Some(&named("upstream.test")));
    let (status, body) = get(&strata, "/headers").await;
    assert_eq!(status, 200, "{body}\n{}", strata.stderr());

    let strata = Strata::start(Some(&named("other.test")));
    let (status, body) = get(&strata, "/headers").await;
    assert_eq!(status, 502, "{body}");
    let log = wait_for_log(&strata, "invalid peer certificate");
    assert!(log.contains("WARN") && log.contains("other.test"), "{log}");
    assert!(!body.contains("other.test"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_skip_verify_connects_and_is_warned_about() {
    let pki = TestPki::new();
    let upstream = tls_gunicorn(&pki);
    let text = config(&format!("https://{}", upstream.addr), "insecure_skip_verify = true");
    let strata = Strata::start(Some(&text));
    let (status, body) = get(&strata, "/headers").await;
    assert_eq!(status, 200, "{body}\n{}", strata.stderr());
    let log = wait_for_log(&strata, "insecure-upstream-tls");
    assert!(log.contains("WARN") && log.contains("NOT VERIFIED"), "{log}");

    let file = write_config(&text);
    let out = run(&["check", "--config", file.path.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a warning, not an error: {stdout}");
    assert!(stdout.contains("warning[insecure-upstream-tls]") && stdout.contains("NOT VERIFIED"), "{stdout}");
    assert!(stdout.contains("1 warning(s)"), "{stdout}");
    let strict = run(&["check", "--strict", "--config", file.path.to_str().unwrap()], "");
    assert!(!strict.status.success(), "--strict fails on it");
}

#[test]
fn bad_tls_keys_are_located_config_errors() {
    let check = |text: &str| {
        let file = write_config(text);
        let out = run(&["check", "--config", file.path.to_str().unwrap()], "");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // A CA file that is not there: relative to the config file's directory, named in the error.
    let (code, stderr) = check(&config("https://127.0.0.1:8443", "tls_ca_file = \"missing-ca.pem\""));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("strata.toml:4:15: error: `tls_ca_file`: cannot read"), "{stderr}");
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");

    // A file with no certificate in it.
    let file = write_config(&config("https://127.0.0.1:8443", "tls_ca_file = \"empty.pem\""));
    std::fs::write(file.dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let out = run(&["check", "--config", file.path.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("strata.toml:4:15: error: `tls_ca_file`: `") && stderr.contains("empty.pem"), "{stderr}");

    // TLS keys on an http:// upstream, and on an app route: every one reported, each where it is.
    let text = "[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:8000\"\ntls_server_name = \"api.internal\"\n\
                insecure_skip_verify = true\n[[route]]\nprefix = \"/app\"\napp = \"echo\"\ntls_ca_file = \"ca.pem\"\n";
    let (code, stderr) = check(text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("strata.toml:4:19: error: `tls_server_name` is an option of https:// upstreams"),
        "{stderr}"
    );
    assert!(stderr.contains("strata.toml:5:24: error: `insecure_skip_verify` is an option of https://"), "{stderr}");
    assert!(stderr.contains("strata.toml:9:15: error: `tls_ca_file` is an option of upstream routes"), "{stderr}");
    assert!(stderr.contains("3 errors in the config"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_requests_reuse_one_tls_connection() {
    let pki = TestPki::new();
    let upstream = tls_gunicorn(&pki);
    let strata = Strata::start(Some(&config(&format!("https://{}", upstream.addr), &ca_key(&pki))));
    const REQUESTS: usize = 10;
    for _ in 0..REQUESTS {
        let (status, body) = get(&strata, "/tasks").await;
        assert_eq!(status, 200, "{body}");
    }
    // gunicorn writes its access log line after each response: wait for all of them.
    let start = Instant::now();
    let lines = loop {
        let log = std::fs::read_to_string(pki.path("access.log")).unwrap_or_default();
        let lines: Vec<String> = log.lines().filter(|l| l.ends_with(" /tasks")).map(str::to_string).collect();
        if lines.len() >= REQUESTS || start.elapsed() > Duration::from_secs(5) {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), REQUESTS, "{lines:?}");
    let connections: HashSet<&str> = lines.iter().filter_map(|l| l.split(' ').next()).collect();
    // One connection, or at most a few: a connection goes back to the pool just after its
    // response's last byte was handed on, so the next request may rarely miss it.
    assert!(connections.len() <= 2, "{} connections for {REQUESTS} requests: {lines:?}", connections.len());
}

/// A rustls server configuration with the PKI's leaf certificate, offering `alpn`.
fn server_tls(pki: &TestPki, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(pki.path("cert.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("key.pem")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(strata_gateway::tls_client::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_reaches_a_wss_upstream() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let pki = TestPki::new();
    let acceptor = server_tls(&pki, &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // One connection: TLS, the WebSocket handshake, then every message echoed upper-cased.
    let upstream = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(t) => ws.send(Message::text(t.to_uppercase())).await.unwrap(),
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    let strata = Strata::start(Some(&config(&format!("https://{addr}"), &ca_key(&pki))));
    let url = format!("ws://{}/chat", strata.addr);
    let (mut ws, handshake) = tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|e| panic!("handshake through the proxy: {e}\n{}", strata.stderr()));
    assert_eq!(handshake.status(), 101);
    ws.send(Message::text("over tls")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply, Message::text("OVER TLS"));
    ws.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), upstream).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_route_negotiates_h2_with_alpn() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let pki = TestPki::new();
    // A server that offers only h2: an HTTP/1.1 client would find no protocol in common.
    let acceptor = server_tls(&pki, &[b"h2"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Bounded: a few connections at most in this test.
        for _ in 0..8 {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!("{:?} {}", req.version(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body),
                    )))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let keys = format!("{}\nhttp2 = true", ca_key(&pki));
    let strata = Strata::start(Some(&config(&format!("https://localhost:{}", addr.port()), &keys)));
    let (status, body) = get(&strata, "/over/h2").await;
    assert_eq!(status, 200, "{body}\n{}", strata.stderr());
    assert_eq!(body, "HTTP/2.0 /over/h2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_that_never_ends_is_bounded_by_connect_timeout() {
    // Accepts TCP connections and never answers the TLS ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: the test makes one request.
        for _ in 0..4 {
            let Ok((tcp, _)) = listener.accept().await else { return };
            held.push(tcp);
        }
    });
    let keys = "insecure_skip_verify = true\nconnect_timeout = \"300ms\"\ntimeout = \"20s\"";
    let strata = Strata::start(Some(&config(&format!("https://{addr}"), keys)));
    let started = Instant::now();
    let (status, body) = get(&strata, "/").await;
    assert_eq!(status, 502, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    let log = wait_for_log(&strata, "connect timed out");
    assert!(log.contains("connect timed out"), "{log}");
    silent.abort();
}
