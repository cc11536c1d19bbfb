//! `errors` and `compression` through the real binary: clean problem bodies that keep the outer
//! layers' headers, and compressed server-sent events that still arrive one by one.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Strata, client};

const CONFIG: &str = r#"
[server]
stack = ["rid", "cors", "errors", "gzip"]

[middleware.rid]
kind = "request_id"

[middleware.cors]
kind = "cors"
allow_origins = ["http://127.0.0.1:5173"]

[middleware.errors]
kind = "errors"

[middleware.gzip]
kind = "compression"
algorithms = ["gzip"]

[[route]]
prefix = "/"
app = "echo"
"#;

#[tokio::test]
async fn a_panic_becomes_problem_json_with_the_request_id_and_cors_headers() {
    let strata = Strata::start(Some(CONFIG));
    let res = client()
        .get(strata.url("/panic"))
        .header("accept", "application/json")
        .header("origin", "http://127.0.0.1:5173")
        .header("x-request-id", "req-500")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["access-control-allow-origin"], "http://127.0.0.1:5173");
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 500);
    assert_eq!(problem["title"], "Internal Server Error");
    assert_eq!(problem["instance"], "req-500");
    assert!(!problem.to_string().contains("panic"), "no internal detail: {problem}");

    let text = client().get(strata.url("/panic")).header("accept", "text/plain").send().await.unwrap();
    assert_eq!(text.status(), 500);
    assert!(text.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
}

#[tokio::test]
async fn app_made_errors_keep_their_bodies() {
    let strata = Strata::start(Some(CONFIG));
    let res = client().get(strata.url("/status/503")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body = res.text().await.unwrap();
    assert!(!body.contains("about:blank"), "the app's own body is left alone: {body}");
}

#[tokio::test]
async fn compressed_bodies_decode_to_the_original() {
    let strata = Strata::start(Some(CONFIG));
    let res = client().get(strata.url("/bytes/200000")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert!(res.headers()["vary"].to_str().unwrap().to_ascii_lowercase().contains("accept-encoding"));
    let compressed = res.bytes().await.unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(plain.len(), 200_000);
    let identity = client().get(strata.url("/bytes/200000")).send().await.unwrap();
    assert!(identity.headers().get("content-encoding").is_none());
    assert_eq!(identity.bytes().await.unwrap(), plain);
}

#[tokio::test]
async fn server_sent_events_through_compression_arrive_one_by_one() {
    let strata = Strata::start(Some(CONFIG));
    let started = Instant::now();
    let mut res = client().get(strata.url("/sse/5")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    // Decode as bytes arrive: an event counts as arrived when its decoded text is complete.
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut arrivals = Vec::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        std::io::Write::write_all(&mut decoder, &chunk).unwrap();
        std::io::Write::flush(&mut decoder).unwrap();
        let events = String::from_utf8_lossy(decoder.get_ref()).matches("\n\n").count();
        while arrivals.len() < events {
            arrivals.push(started.elapsed());
        }
    }
    assert_eq!(arrivals.len(), 5, "all five events decoded");
    // The echo app sends one event every 100 ms: if compression buffered the stream, every event
    // would arrive at the end, together.
    let spread = arrivals[4] - arrivals[0];
    assert!(spread >= Duration::from_millis(300), "events arrived together: {arrivals:?}");
}
