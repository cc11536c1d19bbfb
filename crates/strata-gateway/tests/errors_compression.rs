//! `errors` and `compression` through the real binary: clean problem bodies that keep the outer
//! layers' headers, and compressed server-sent events that still arrive one by one; `strata check`
//! locating mistakes in the `cors`, `errors` and `compression` tables at their keys.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Strata, client, run, write_config};

const CONFIG: &str = r#"
[server]
stack = ["rid", "cors", "errors", "gzip"]

[middleware.rid]
kind = "request_id"

[middleware.cors]
kind = "cors"
allow_origins = ["http://127.0.0.1:5173"]
max_age = "10m"

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
async fn a_preflight_carries_the_max_age_duration_in_seconds() {
    let strata = Strata::start(Some(CONFIG));
    let res = client()
        .request(reqwest::Method::OPTIONS, strata.url("/anything"))
        .header("origin", "http://127.0.0.1:5173")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-max-age"], "600");
}

/// Runs `strata check` on `text`; its exit code, stderr and the config's path.
fn check_with(text: &str) -> (Option<i32>, String, String) {
    let config = write_config(text);
    let file = config.path.to_str().unwrap().to_string();
    let out = run(&["check", "--config", &file], "");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), file)
}

const TYPED_TABLES: &str = r#"[server]
stack = ["cors", "errors", "gzip"]

[middleware.cors]
kind = "cors"
allow_origins = ["http://127.0.0.1:5173"]
max_age = MAX_AGE

[middleware.errors]
kind = "errors"
statuses = STATUSES
pages = { 404 = "pages/404.html" }

[middleware.gzip]
kind = "compression"
level = LEVEL

[[route]]
prefix = "/"
app = "echo"
"#;

fn typed_tables(max_age: &str, statuses: &str, level: &str) -> String {
    TYPED_TABLES.replace("MAX_AGE", max_age).replace("STATUSES", statuses).replace("LEVEL", level)
}

#[test]
fn check_reads_pages_beside_the_config_and_durations_for_max_age() {
    let config = write_config(&typed_tables("\"1m30s\"", "\"all\"", "{ br = 11 }"));
    std::fs::create_dir(config.dir.path().join("pages")).unwrap();
    std::fs::write(config.dir.path().join("pages/404.html"), "<h1>lost</h1>").unwrap();
    // Run from elsewhere: the page path is relative to the config file, not the working directory.
    let out = run(&["check", "--config", config.path.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_locates_mistakes_of_the_cors_errors_and_compression_tables() {
    // The old integer form of max_age is a type error at its value.
    let (code, stderr, file) = check_with(&typed_tables("600", "\"all\"", "\"best\""));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:7:11: error: invalid type: integer `600`, expected a string")),
        "{stderr}"
    );

    // Values the builders reject are located at their keys, every table's in one run.
    let (code, stderr, file) = check_with(&typed_tables("\"1.5s\"", "\"server\"", "{ br = 12 }"));
    assert_eq!(code, Some(2), "{stderr}");
    for expected in [
        "7:1: error: middleware `cors` (cors): `1500ms`: Access-Control-Max-Age counts whole seconds",
        "12:1: error: middleware `errors` (errors): page for 404 Not Found: 4xx pages need `statuses = \"all\"`",
        "16:1: error: middleware `gzip` (compression): br level 12 is out of range: expected 0 to 11",
    ] {
        assert!(stderr.contains(&format!("{file}:{expected}")), "{expected}\n{stderr}");
    }
    assert!(stderr.contains("3 errors in the config"), "{stderr}");

    // A page that cannot be read, relative to the config's directory.
    let (code, stderr, file) = check_with(&typed_tables("\"10m\"", "\"all\"", "\"best\""));
    assert_eq!(code, Some(2), "{stderr}");
    let dir = file.trim_end_matches("strata.toml");
    let expected = format!(
        "{file}:12:1: error: middleware `errors` (errors): page for 404 Not Found: cannot read {dir}pages/404.html"
    );
    assert!(stderr.contains(&expected), "{expected}\n{stderr}");
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
