//! `strata::serve` with a real client on loopback: both protocols on one port, the connection info
//! every request gets, the graceful shutdown, the head timeout and the connection cap.

use std::future::IntoFuture;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use strata::http::client_ip::TrustedProxies;
use strata::http::{Body, ConnectionInfo, Request, Response, Service, Stack};
use strata::middleware::rate_limit::{Quota, RateLimit};
use strata::server::{Accept, Accepted, Connection, ConnectionLimits, GuardedIo, Handler, PlainTcp, Serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Answers with the protocol version and the client address of the request's `ConnectionInfo`;
/// `/slow` first tells `entered` and sleeps a second.
fn service(entered: Arc<Notify>) -> Service {
    Stack::new().serve(move |req: Request| {
        let entered = entered.clone();
        async move {
            if req.uri().path() == "/slow" {
                entered.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let client =
                req.extensions().get::<ConnectionInfo>().map_or("none".to_string(), |info| info.client.to_string());
            Response::new(Body::from(format!("{:?} {client}", req.version())))
        }
    })
}

/// A free loopback listener and its address.
async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Runs `server` until the returned sender is used (or dropped).
fn start(server: Serve<Service>) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<bool>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(
        server
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    (stop, served)
}

fn client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy()
}

fn client_from(ip: &str) -> reqwest::Client {
    client().local_address(ip.parse::<IpAddr>().unwrap()).build().unwrap()
}

#[tokio::test]
async fn http1_and_h2c_are_answered_on_one_port() {
    let (listener, addr) = listener().await;
    let (_stop, _served) = start(strata::serve(listener, service(Arc::default())));
    let url = format!("http://{addr}/");

    let res = client().build().unwrap().get(&url).send().await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_11);
    assert_eq!(res.text().await.unwrap(), "HTTP/1.1 127.0.0.1");

    let h2c = client().http2_prior_knowledge().build().unwrap();
    let res = h2c.get(&url).send().await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.text().await.unwrap(), "HTTP/2.0 127.0.0.1");
}

#[tokio::test]
async fn a_rate_limit_keyed_on_the_client_address_gives_each_client_its_own_bucket() {
    let limit = RateLimit::builder().quota(Quota::per_minute(1).burst(1)).build().unwrap();
    let limited = Stack::new().with(limit).serve(|req: Request| async move {
        let client = req.extensions().get::<ConnectionInfo>().map(|info| info.client.to_string());
        Response::new(Body::from(client.unwrap_or_default()))
    });
    let (listener, addr) = listener().await;
    let (_stop, _served) = start(strata::serve(listener, limited));
    let url = format!("http://{addr}/");

    let first = client_from("127.0.0.1");
    let res = first.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "127.0.0.1");
    assert_eq!(
        first.get(&url).send().await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "127.0.0.1's bucket is empty"
    );

    let second = client_from("127.0.0.2");
    let res = second.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "127.0.0.2 has a bucket of its own");
    assert_eq!(res.text().await.unwrap(), "127.0.0.2");
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_in_its_forwarding_header() {
    let (listener, addr) = listener().await;
    let trusted = TrustedProxies::parse(["127.0.0.1/32"]).unwrap();
    let (_stop, _served) = start(strata::serve(listener, service(Arc::default())).trusted_proxies(trusted));
    let url = format!("http://{addr}/");

    let via_proxy = client_from("127.0.0.1");
    let res = via_proxy.get(&url).header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "HTTP/1.1 203.0.113.9");
    // 127.0.0.2 is not a trusted proxy: its header is ignored.
    let direct = client_from("127.0.0.2");
    let res = direct.get(&url).header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "HTTP/1.1 127.0.0.2");
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    let entered = Arc::new(Notify::new());
    let (listener, addr) = listener().await;
    let (stop, served) = start(strata::serve(listener, service(entered.clone())));

    let slow = tokio::spawn(client().build().unwrap().get(format!("http://{addr}/slow")).send());
    tokio::time::timeout(Duration::from_secs(5), entered.notified()).await.expect("the slow request arrived");
    stop.send(()).unwrap();

    // The listener closes at once; the slow request is still running.
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "new connections still accepted 2 s after the shutdown signal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (A connect racing the close may be reset instead; from then on, none is accepted.)
    let refused = TcpStream::connect(addr).await.expect_err("the listener is closed");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(!slow.is_finished(), "the refusal came while the slow request was in flight");

    let res = slow.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "HTTP/1.1 127.0.0.1");
    let drained = tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap().unwrap();
    assert!(drained, "every connection finished within the grace period");
}

#[tokio::test]
async fn graceful_shutdown_closes_an_idle_keep_alive_connection_at_once() {
    let (listener, addr) = listener().await;
    let (stop, served) = start(strata::serve(listener, service(Arc::default())));
    // Three requests on one connection first: its watchdog has been polled many times, and its
    // shutdown signal is not polled again once registered — the signal must still reach it.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for round in 0..3 {
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"HTTP/1.1 127.0.0.1") {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "round {round}: closed before its answer: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
    }
    stop.send(()).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf)).await.expect("closed within 3 s");
    assert!(matches!(read, Ok(0) | Err(_)), "closed without another answer: {read:?}");
    let drained = tokio::time::timeout(Duration::from_secs(3), served).await.unwrap().unwrap().unwrap();
    assert!(drained, "every connection finished within the grace period");
    assert!(started.elapsed() < Duration::from_secs(2), "the idle connection waited {:?}", started.elapsed());
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let (listener, addr) = listener().await;
    let limits = ConnectionLimits { header_read_timeout: Duration::from_millis(300), ..ConnectionLimits::default() };
    let (_stop, _served) = start(strata::serve(listener, service(Arc::default())).limits(limits));

    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await.expect("closed within 5 s");
    let elapsed = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer: {read:?}");
    assert!(elapsed >= Duration::from_millis(250), "not before the timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "soon after the timeout: {elapsed:?}");

    // A client that sends its request in time is answered.
    let mut prompt = TcpStream::connect(addr).await.unwrap();
    prompt.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), prompt.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let (listener, addr) = listener().await;
    let limits = ConnectionLimits { max_connections: Some(1), ..ConnectionLimits::default() };
    let (_stop, _served) = start(strata::serve(listener, service(Arc::default())).limits(limits));

    let _held = TcpStream::connect(addr).await.unwrap();
    // Accepted by the kernel, closed by the server without a byte.
    let mut beyond = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), beyond.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// Says what its connection is, as an `Accept` hook and the `Connection` reported it.
struct WhatConnection;

impl Handler for WhatConnection {
    type Answer = std::future::Ready<Response>;

    fn handle(&self, req: Request, connection: &Connection<'_>) -> Self::Answer {
        let info = connection.info(req.headers());
        let text =
            format!("secure={} sni={} client={}", info.secure, connection.server_name.unwrap_or("-"), info.client);
        std::future::ready(Response::new(Body::from(text)))
    }
}

/// A stand-in for a TLS handshake: the stream as it is, reported as secure for `example.test`.
struct PretendTls;

impl Accept for PretendTls {
    type Io = GuardedIo<TcpStream>;

    async fn accept(
        &self,
        io: GuardedIo<TcpStream>,
        _: SocketAddr,
        _: tokio::time::Instant,
    ) -> Option<Accepted<Self::Io>> {
        Some(Accepted { io, secure: true, server_name: Some("example.test".into()) })
    }
}

#[tokio::test]
async fn an_accept_hook_marks_its_listeners_connections_secure_with_their_sni() {
    let (plain, plain_addr) = listener().await;
    let (hooked, hooked_addr) = listener().await;
    let server = Serve::new(WhatConnection).listener(plain, PlainTcp).listener(hooked, PretendTls);
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(
        server
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );

    let http = client().build().unwrap();
    let res = http.get(format!("http://{plain_addr}/")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "secure=false sni=- client=127.0.0.1");
    let res = http.get(format!("http://{hooked_addr}/")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "secure=true sni=example.test client=127.0.0.1");

    stop.send(()).unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(15), served).await.unwrap().unwrap().unwrap();
    assert!(drained);
    // Both listeners closed with the one shutdown.
    assert!(TcpStream::connect(plain_addr).await.is_err());
    assert!(TcpStream::connect(hooked_addr).await.is_err());
}
