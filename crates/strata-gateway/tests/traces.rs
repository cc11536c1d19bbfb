//! `[tracing]`: the real binary exports OTLP/HTTP spans to a receiver that decodes them with the
//! official protobuf definitions (`tests/common/otlp.rs`), in front of a Python upstream that echoes
//! the `traceparent` it received (`tests/upstream/trace_echo.py`).

mod common;

use std::time::{Duration, Instant};

use common::otlp::{OtlpReceiver, Received, attribute, hex};
use common::python::PythonServer;
use common::{Strata, client, free_port};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A server stack of `rid`, a route `/` to `upstream` with `timing` and `limit` inside it, and a
/// `[tracing]` section with `tracing` as its extra keys.
fn config(upstream: &str, endpoint: &str, tracing: &str, extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["rid"]

[middleware.rid]
kind = "request_id"

[middleware.timing]
kind = "timing"

[middleware.limit]
kind = "body_limit"
max_bytes = 16

[tracing]
otlp_endpoint = "{endpoint}"
service_name = "gateway-under-test"
{tracing}

{extra}

[[route]]
prefix = "/"
upstream = "{upstream}"
stack = ["timing", "limit"]
"#
    )
}

fn traceparent(trace: &str, parent: &str, flags: &str) -> String {
    format!("00-{trace}-{parent}-{flags}")
}

fn by_id<'a>(spans: &'a [Received], id: &[u8]) -> Option<&'a Received> {
    spans.iter().find(|r| r.span.span_id == id)
}

// The receiver runs on the test's runtime: a second worker keeps it answering while the test
// blocks (waiting for the process to exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_request_makes_a_server_span_one_span_per_layer_and_a_client_span_the_upstream_follows() {
    let receiver = OtlpReceiver::start().await;
    let upstream = PythonServer::start("trace_echo.py");
    let strata = Strata::start(Some(&config(&upstream.url(), &receiver.endpoint(), "sample_ratio = 0", "")));

    let res = client()
        .get(strata.url("/items/7"))
        .header("traceparent", traceparent(TRACE_ID, CALLER_SPAN, "01"))
        .header("tracestate", "vendor=opaque")
        .header("user-agent", "trace-test/1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    let seen = body.lines().find_map(|l| l.strip_prefix("traceparent=")).unwrap_or_default().to_string();
    assert!(body.contains("tracestate=vendor=opaque"), "the tracestate is kept: {body}");

    // The server span, then rid, timing, limit, and the upstream call.
    let spans = receiver.wait_for_trace(TRACE_ID, 5, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 5, "spans of the trace: {spans:#?}\n{}", strata.stderr());
    assert!(spans.iter().all(|r| r.service == "gateway-under-test"));
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());

    let servers: Vec<&Received> = spans.iter().filter(|r| r.span.kind == SpanKind::Server as i32).collect();
    assert_eq!(servers.len(), 1);
    let server = &servers[0].span;
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN, "the caller's span is the server span's parent");
    assert_eq!(server.name, "GET /");
    assert_eq!(server.trace_state, "vendor=opaque");
    assert_eq!(attribute(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attribute(server, "http.route").as_deref(), Some("/"));
    assert_eq!(attribute(server, "url.path").as_deref(), Some("/items/7"));
    assert_eq!(attribute(server, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(server, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attribute(server, "user_agent.original").as_deref(), Some("trace-test/1"));
    assert!(server.status.as_ref().is_none_or(|s| s.code != StatusCode::Error as i32));

    // Onion order: each layer's span is the parent of the next one's, and within its time.
    let mut parent = server;
    for (name, kind) in [("rid", "request_id"), ("timing", "timing"), ("limit", "body_limit")] {
        let child = spans
            .iter()
            .map(|r| &r.span)
            .find(|s| s.parent_span_id == parent.span_id)
            .unwrap_or_else(|| panic!("no child of {}: {spans:#?}", parent.name));
        assert_eq!(child.name, name);
        assert_eq!(child.kind, SpanKind::Internal as i32);
        assert_eq!(attribute(child, "strata.layer.kind").as_deref(), Some(kind));
        assert_eq!(attribute(child, "strata.layer.answered"), None);
        assert!(child.start_time_unix_nano >= parent.start_time_unix_nano, "{name} starts inside {}", parent.name);
        assert!(child.end_time_unix_nano <= parent.end_time_unix_nano, "{name} ends inside {}", parent.name);
        parent = child;
    }
    let client_span =
        spans.iter().map(|r| &r.span).find(|s| s.parent_span_id == parent.span_id).expect("the upstream call");
    assert_eq!(client_span.kind, SpanKind::Client as i32);
    assert_eq!(attribute(client_span, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attribute(client_span, "server.port"), Some(upstream.addr.port().to_string()));

    // The upstream's own spans would be children of the client span.
    assert_eq!(seen, traceparent(TRACE_ID, &hex(&client_span.span_id), "01"), "upstream saw: {body}");
    assert!(by_id(&spans, &client_span.span_id).is_some());
}

// The receiver runs on the test's runtime: a second worker keeps it answering while the test
// blocks (waiting for the process to exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_that_answers_by_itself_is_marked_and_ends_the_chain() {
    let receiver = OtlpReceiver::start().await;
    let upstream = PythonServer::start("trace_echo.py");
    let strata = Strata::start(Some(&config(&upstream.url(), &receiver.endpoint(), "", "")));
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let res = client()
        .post(strata.url("/upload"))
        .header("traceparent", traceparent(trace, CALLER_SPAN, "01"))
        .body("more than sixteen bytes of body")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // The server span, rid, timing, limit: the upstream is never called.
    let spans = receiver.wait_for_trace(trace, 4, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let limit = spans.iter().map(|r| &r.span).find(|s| s.name == "limit").expect("the limit span");
    assert_eq!(attribute(limit, "strata.layer.answered").as_deref(), Some("true"));
    assert!(spans.iter().all(|r| r.span.kind != SpanKind::Client as i32));
    let server = spans.iter().map(|r| &r.span).find(|s| s.kind == SpanKind::Server as i32).unwrap();
    assert_eq!(attribute(server, "http.response.status_code").as_deref(), Some("413"));
    drop(strata);
}

// The receiver runs on the test's runtime: a second worker keeps it answering while the test
// blocks (waiting for the process to exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_not_sampled_make_no_spans() {
    let receiver = OtlpReceiver::start().await;
    let upstream = PythonServer::start("trace_echo.py");
    let strata = Strata::start(Some(&config(&upstream.url(), &receiver.endpoint(), "sample_ratio = 0", "")));
    let http = client();

    // No traceparent under `sample_ratio = 0`; a caller that did not sample (flags 00).
    let res = http.get(strata.url("/none")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // The upstream learns the decision: a new trace, its sampled flag clear.
    let body = res.text().await.unwrap();
    let sent = body.split("traceparent=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or_default();
    assert!(sent.len() == 55 && sent.ends_with("-00"), "not sampled, and said so: {body}");
    let unsampled = traceparent(TRACE_ID, CALLER_SPAN, "00");
    let res = http.get(strata.url("/flag-00")).header("traceparent", &unsampled).send().await.unwrap();
    let body = res.text().await.unwrap();
    assert!(body.contains(&format!("traceparent={unsampled}")), "left as it came: {body}");

    // Then a sampled request: spans leave in order, so once its spans are in, any of the others'
    // would be too.
    let marker = "11111111111111111111111111111111";
    http.get(strata.url("/marker")).header("traceparent", traceparent(marker, CALLER_SPAN, "01")).send().await.unwrap();
    let spans = receiver.wait_for_trace(marker, 5, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let others: Vec<String> = receiver.spans().iter().map(|r| hex(&r.span.trace_id)).filter(|t| t != marker).collect();
    assert!(others.is_empty(), "spans of unsampled requests: {others:?}");
}

// The receiver runs on the test's runtime: a second worker keeps it answering while the test
// blocks (waiting for the process to exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_requests_stay_fast_and_dropped_spans_are_counted() {
    let upstream = PythonServer::start("trace_echo.py");
    let admin_port = free_port();
    // Nothing listens there: every export fails at once (connection refused).
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let admin = format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"");
    let strata = Strata::start(Some(&config(&upstream.url(), &endpoint, "", &admin)));
    let http = client();
    for i in 0..20 {
        let started = Instant::now();
        let res = http.get(strata.url(&format!("/r{i}"))).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(2), "request {i} took {:?}", started.elapsed());
    }
    let metrics = format!("http://127.0.0.1:{admin_port}/metrics");
    let started = Instant::now();
    let mut dropped = 0.0;
    while started.elapsed() < Duration::from_secs(15) {
        let text = http.get(&metrics).send().await.unwrap().text().await.unwrap();
        dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("strata_trace_spans_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped >= 100.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 20 requests of 5 spans each.
    assert_eq!(dropped, 100.0, "{}", strata.stderr());
    assert!(strata.stderr().contains("span export failed"), "{}", strata.stderr());
}

// The receiver runs on the test's runtime: a second worker keeps it answering while the test
// blocks (waiting for the process to exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_at_shutdown_are_exported() {
    let receiver = OtlpReceiver::start().await;
    let upstream = PythonServer::start("trace_echo.py");
    let mut strata = Strata::start(Some(&config(&upstream.url(), &receiver.endpoint(), "", "")));
    let trace = "22222222222222222222222222222222";
    let http = client();
    http.get(strata.url("/last")).header("traceparent", traceparent(trace, CALLER_SPAN, "01")).send().await.unwrap();
    // No connection left open, so the graceful shutdown is immediate: strata exits before the
    // batch interval (1 s) would have sent the spans.
    drop(http);
    strata.signal("TERM");
    assert!(strata.wait_exit(Duration::from_secs(10)).is_some(), "strata did not stop");
    // Already received: the flush waits for the collector's answer before strata exits.
    assert_eq!(receiver.spans().iter().filter(|r| hex(&r.span.trace_id) == trace).count(), 5, "{}", strata.stderr());
    assert!(!strata.stderr().contains("not all exported"), "{}", strata.stderr());
}

/// `strata_trace_spans_exported_total` from the admin listener's `/metrics`.
async fn exported_total(http: &reqwest::Client, admin_port: u16) -> f64 {
    let text = http.get(format!("http://127.0.0.1:{admin_port}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("strata_trace_spans_exported_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls until the exported count is `want`, up to 10 s; returns the last count read.
async fn wait_exported(http: &reqwest::Client, admin_port: u16, want: f64) -> f64 {
    let started = Instant::now();
    loop {
        let total = exported_total(http, admin_port).await;
        if total >= want || started.elapsed() >= Duration::from_secs(10) {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGHUP and waits up to 15 s for the `nth` "config reloaded" line.
async fn reload(strata: &Strata, nth: usize) {
    strata.signal("HUP");
    let started = Instant::now();
    while strata.stderr().matches("config reloaded").count() < nth {
        assert!(started.elapsed() < Duration::from_secs(15), "no reload: {}", strata.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_exporter_of_the_same_collector_and_moves_to_a_new_one() {
    let first = OtlpReceiver::start().await;
    let second = OtlpReceiver::start().await;
    let upstream = PythonServer::start("trace_echo.py");
    let admin_port = free_port();
    let admin = format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"");
    let strata = Strata::start(Some(&config(&upstream.url(), &first.endpoint(), "", &admin)));
    let http = client();
    let traced =
        |trace: &str| http.get(strata.url("/")).header("traceparent", traceparent(trace, CALLER_SPAN, "01")).send();

    let before = "33333333333333333333333333333333";
    traced(before).await.unwrap();
    assert_eq!(first.wait_for_trace(before, 5, Duration::from_secs(10)).await.len(), 5);
    assert_eq!(wait_exported(&http, admin_port, 5.0).await, 5.0);

    // The same collector: the running exporter goes on (shared, see the exporter's unit tests).
    reload(&strata, 1).await;
    let same = "44444444444444444444444444444444";
    traced(same).await.unwrap();
    assert_eq!(first.wait_for_trace(same, 5, Duration::from_secs(10)).await.len(), 5);
    assert_eq!(wait_exported(&http, admin_port, 10.0).await, 10.0, "{}", strata.stderr());

    // Another collector: new spans go there, none to the old one.
    std::fs::write(strata.config_path(), config(&upstream.url(), &second.endpoint(), "", &admin)).unwrap();
    reload(&strata, 2).await;
    let moved = "55555555555555555555555555555555";
    traced(moved).await.unwrap();
    assert_eq!(second.wait_for_trace(moved, 5, Duration::from_secs(10)).await.len(), 5, "{}", strata.stderr());
    assert!(first.spans().iter().all(|r| hex(&r.span.trace_id) != moved));
    // The process's count goes on across exporters.
    assert_eq!(wait_exported(&http, admin_port, 15.0).await, 15.0, "{}", strata.stderr());
    assert!(first.rejected().is_empty() && second.rejected().is_empty());
}
