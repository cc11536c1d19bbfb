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
