//! `concurrency_limit` through the real binary: a burst of 12 concurrent requests to the echo app's
//! `/delay/{ms}` with `max = 3` admits exactly 3 and refuses the others with `Retry-After`; with a
//! queue they all succeed, in waves; a streaming response holds its permit until the client goes
//! away; bad settings are config errors at their key's line and column.

mod common;

use std::time::{Duration, Instant};

use common::{Strata, client, run, write_config};

fn config(limit: &str) -> String {
    format!(
        r#"
[server]
stack = ["limit"]

[middleware.limit]
kind = "concurrency_limit"
{limit}

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

/// Sends `n` GETs to `path` at once; each one's status, `Retry-After` and time to the response head.
async fn burst(strata: &Strata, path: &str, n: usize) -> Vec<(u16, Option<String>, Duration)> {
    let client = client();
    let started = Instant::now();
    let requests = (0..n).map(|_| {
        let req = client.get(strata.url(path));
        async move {
            let res = req.send().await.expect("strata answers");
            let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let status = res.status().as_u16();
            let _ = res.bytes().await;
            (status, retry, started.elapsed())
        }
    });
    futures_util::future::join_all(requests).await
}

#[tokio::test]
async fn a_burst_admits_exactly_max_and_refuses_the_rest_with_retry_after() {
    let strata = Strata::start(Some(&config("max = 3\nretry_after = \"2s\"")));
    // Long enough that all 12 arrive while the first 3 are still in flight.
    let results = burst(&strata, "/delay/1500", 12).await;
    let admitted: Vec<_> = results.iter().filter(|(s, _, _)| *s == 200).collect();
    let refused: Vec<_> = results.iter().filter(|(s, _, _)| *s == 503).collect();
    assert_eq!((admitted.len(), refused.len()), (3, 9), "{results:?}");
    for (_, retry, elapsed) in &refused {
        assert_eq!(retry.as_deref(), Some("2"));
        assert!(*elapsed < Duration::from_millis(1500), "refused at once, not after the delay: {elapsed:?}");
    }
    for (_, retry, elapsed) in &admitted {
        assert!(retry.is_none());
        assert!(*elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    }
    // The permits came back: the next burst is admitted the same way.
    let again = burst(&strata, "/delay/10", 3).await;
    assert!(again.iter().all(|(s, _, _)| *s == 200), "{again:?}");
}

#[tokio::test]
async fn with_a_queue_the_burst_is_served_in_waves() {
    let strata = Strata::start(Some(&config("max = 3\nqueue = 9\nmax_wait = \"10s\"")));
    let started = Instant::now();
    let results = burst(&strata, "/delay/400", 12).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|(s, _, _)| *s == 200), "{results:?}");
    // Four waves of three: never more than three at once.
    assert!(elapsed >= Duration::from_millis(1600), "{elapsed:?}");
    let mut times: Vec<Duration> = results.iter().map(|r| r.2).collect();
    times.sort();
    assert!(times[3] >= Duration::from_millis(800), "the fourth finished in the second wave: {times:?}");
    assert!(times[9] >= Duration::from_millis(1600), "the tenth in the fourth: {times:?}");

    // A queue of 1: with 3 in flight and one waiting, the fifth is refused at once.
    let strata = Strata::start(Some(&config("max = 3\nqueue = 1\nmax_wait = \"10s\"")));
    let results = burst(&strata, "/delay/1500", 5).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 4, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 1, "{statuses:?}");
}

#[tokio::test]
async fn a_streaming_response_holds_its_permit_until_the_client_goes_away() {
    let strata = Strata::start(Some(&config("max = 1")));
    let client = client();
    // 50 events, one every 100 ms: about five seconds of body.
    let mut stream = client.get(strata.url("/sse/50")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().expect("the first event");
    assert!(String::from_utf8_lossy(&first).contains("id: 0"));
    let res = client.get(strata.url("/status/200")).send().await.unwrap();
    assert_eq!(res.status(), 503, "the stream is still in flight");

    // The client hangs up mid-stream: the server drops the body, and the permit with it.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = 0;
    while Instant::now() < deadline {
        status = client.get(strata.url("/status/200")).send().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the permit came back when the client went away");
}

#[tokio::test]
async fn a_finished_stream_returns_its_permit() {
    let strata = Strata::start(Some(&config("max = 1")));
    let client = client();
    let res = client.get(strata.url("/stream/20")).send().await.unwrap();
    let body = res.text().await.unwrap();
    assert_eq!(body.lines().count(), 20);
    // Read to its end: the permit is back before the next request (same connection, in order).
    assert_eq!(client.get(strata.url("/status/200")).send().await.unwrap().status(), 200);
}

#[test]
fn bad_settings_are_errors_at_their_key() {
    let checked = |limit: &str| {
        let file = write_config(&config(limit));
        let path = file.path.to_str().unwrap().to_string();
        let out = run(&["check", "--config", &path], "");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), path)
    };
    // `kind` is on line 6 of `config`, the keys follow.
    let (ok, stderr, path) = checked("max = 0");
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{path}:7:1: error: middleware `limit` (concurrency_limit): expected at least 1")),
        "{stderr}"
    );
    let (ok, stderr, path) = checked("max = 3\nmax_wait = \"2s\"");
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{path}:8:1: error: middleware `limit` (concurrency_limit): only queued")),
        "{stderr}"
    );
    let (ok, stderr, path) = checked("max = 3\nkey = \"ip\"");
    assert!(!ok);
    assert!(stderr.contains(&format!("{path}:8:1:")) && stderr.contains("expected \"client_ip\""), "{stderr}");
    let (ok, stderr, _) = checked("max = 3\nqueue = 5\nmax_wait = \"2s\"\nkey = \"client_ip\"");
    assert!(ok, "{stderr}");
}
