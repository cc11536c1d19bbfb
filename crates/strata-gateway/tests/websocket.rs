//! WebSocket through the proxy with real WebSocket endpoints on both sides (tokio-tungstenite):
//! the handshake passes through strata's stack, then frames flow both ways until a clean close.

mod common;

use std::time::Duration;

use common::Strata;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server that answers every text or binary message upper-cased; returns its address
/// and, once the client has closed, the messages it received.
async fn shouting_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<Message>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let mut received = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            let reply = match &message {
                Message::Text(t) => Message::text(t.to_uppercase()),
                Message::Binary(b) => Message::binary(b.to_ascii_uppercase()),
                Message::Close(_) => break,
                _ => continue,
            };
            received.push(message);
            ws.send(reply).await.unwrap();
        }
        received
    });
    (addr, task)
}

#[tokio::test]
async fn websocket_messages_flow_both_ways_through_the_proxy() {
    let (upstream, received) = shouting_upstream().await;
    let config = format!(
        r#"
[server]
stack = ["rid", "log"]

[middleware.rid]
kind = "request_id"

[middleware.log]
kind = "access_log"
output = "stderr"

[[route]]
prefix = "/ws"
upstream = "http://{upstream}"
"#
    );
    let strata = Strata::start(Some(&config));
    let url = format!("ws://{}/ws/chat", strata.addr);
    let (mut ws, handshake) = tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake through the proxy");
    assert_eq!(handshake.status(), 101);
    assert!(handshake.headers().contains_key("x-request-id"), "the 101 passed through the stack");

    ws.send(Message::text("hello through strata")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply, Message::text("HELLO THROUGH STRATA"));
    ws.send(Message::binary(b"bytes too".to_vec())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply, Message::binary(b"BYTES TOO".to_vec()));
    ws.close(None).await.unwrap();

    let received = tokio::time::timeout(Duration::from_secs(20), received).await.unwrap().unwrap();
    assert_eq!(received, [Message::text("hello through strata"), Message::binary(b"bytes too".to_vec())]);
    // The upgrade request was logged like any other, with its 101.
    let start = std::time::Instant::now();
    while !strata.stderr().contains("\"GET /ws/chat HTTP/1.1\" 101") && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(strata.stderr().contains("\"GET /ws/chat HTTP/1.1\" 101"), "{}", strata.stderr());
}

fn proxy_config(upstream: std::net::SocketAddr, grace: &str) -> String {
    format!(
        r#"
[server]
shutdown_grace = "{grace}"

[[route]]
prefix = "/ws"
upstream = "http://{upstream}"
"#
    )
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(strata: &Strata) -> Socket {
    let url = format!("ws://{}/ws/chat", strata.addr);
    let (ws, _) = tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake through the proxy");
    ws
}

async fn shout(ws: &mut Socket, text: &str) -> Option<Message> {
    ws.send(Message::text(text)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(10), ws.next()).await.ok()?.and_then(Result::ok)
}

// Multi-threaded: `wait_exit` blocks, and the upstream must keep answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_websocket_finish_within_the_grace_period() {
    let (upstream, _received) = shouting_upstream().await;
    let mut strata = Strata::start(Some(&proxy_config(upstream, "20s")));
    let mut ws = open(&strata).await;
    assert_eq!(shout(&mut ws, "before").await, Some(Message::text("BEFORE")));
    strata.signal("TERM");
    // Not gone at once: the upgraded connection is waited for, and it still works.
    assert_eq!(strata.wait_exit(Duration::from_millis(500)), None, "{}", strata.stderr());
    assert_eq!(shout(&mut ws, "during shutdown").await, Some(Message::text("DURING SHUTDOWN")));
    ws.close(None).await.unwrap();
    drop(ws);
    // Once it is closed, strata exits well before the grace period ends.
    let status = strata.wait_exit(Duration::from_secs(10)).expect("exits once the WebSocket closed");
    assert!(status.success(), "{status:?}: {}", strata.stderr());
    assert!(strata.stderr().contains("waiting for upgraded connections to close"), "{}", strata.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_still_open_when_the_grace_period_ends_is_closed() {
    let (upstream, _received) = shouting_upstream().await;
    let mut strata = Strata::start(Some(&proxy_config(upstream, "1s")));
    let mut ws = open(&strata).await;
    assert_eq!(shout(&mut ws, "hello").await, Some(Message::text("HELLO")));
    strata.signal("TERM");
    let status = strata.wait_exit(Duration::from_secs(10)).expect("exits when the grace period ends");
    assert!(status.success(), "{status:?}: {}", strata.stderr());
    assert!(strata.stderr().contains("grace period over"), "{}", strata.stderr());
    // The client sees its connection end.
    let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("the socket ends");
    assert!(!matches!(next, Some(Ok(Message::Text(_)))), "{next:?}");
}
