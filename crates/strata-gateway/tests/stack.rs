//! Configured stacks through the real binary: ids on every response (500s and 404s included), log
//! lines for every request, and the ordering diagnostics of `check` and `explain`.

mod common;

use std::time::{Duration, Instant};

use common::{Strata, client, run, write_config};

fn config(log_path: &str) -> String {
    format!(
        r#"
[server]
stack = ["rid", "log"]

[middleware.rid]
kind = "request_id"

[middleware.log]
kind = "access_log"
format = "json"
output = "{log_path}"

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

fn read_log_lines(path: &std::path::Path, at_least: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("a JSON log line")).collect();
        if lines.len() >= at_least || start.elapsed() > Duration::from_secs(5) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn every_response_has_an_id_and_every_request_a_log_line_even_on_panics() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let strata = Strata::start(Some(&config(log.to_str().unwrap())));
    let http = client();

    let panicked = http.get(strata.url("/panic")).header("x-request-id", "trace-me-1").send().await.unwrap();
    assert_eq!(panicked.status(), 500);
    assert_eq!(panicked.headers()["x-request-id"], "trace-me-1", "the 500 still carries the outer layer's header");

    let ok = http.get(strata.url("/status/201")).send().await.unwrap();
    assert_eq!(ok.status(), 201);
    let generated = ok.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a generated UUID: {generated}");

    let unsafe_id =
        http.get(strata.url("/status/200")).header("x-request-id", "bad id with spaces").send().await.unwrap();
    assert_ne!(unsafe_id.headers()["x-request-id"], "bad id with spaces");

    let lines = read_log_lines(&log, 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["status"], 500);
    assert_eq!(lines[0]["request_id"], "trace-me-1");
    assert_eq!(lines[0]["path"], "/panic");
    assert_eq!(lines[1]["status"], 201);
    assert_eq!(lines[1]["request_id"], generated.as_str());
    assert_eq!(lines[0]["remote_addr"], "127.0.0.1");
}

#[tokio::test]
async fn the_app_sees_the_request_id_and_secrets_stay_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let strata = Strata::start(Some(&config(log.to_str().unwrap())));
    let echoed: serde_json::Value = client()
        .get(strata.url("/anything"))
        .header("x-request-id", "abc-123")
        .header("authorization", "Basic c2VjcmV0OnBhc3N3b3Jk")
        .header("cookie", "session=topsecret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-request-id"], "abc-123");
    let text = {
        read_log_lines(&log, 1);
        std::fs::read_to_string(&log).unwrap()
    };
    assert!(text.contains("abc-123"), "{text}");
    assert!(!text.contains("c2VjcmV0") && !text.contains("topsecret"), "{text}");
}

#[tokio::test]
async fn unmatched_paths_get_a_404_decorated_by_the_server_stack() {
    let cfg = "[server]\nstack = [\"rid\"]\n[middleware.rid]\nkind = \"request_id\"\n[[route]]\nprefix = \"/api\"\napp = \"tasks\"\n";
    let strata = Strata::start(Some(cfg));
    let res = client().get(strata.url("/elsewhere")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn the_default_stack_times_every_layer_in_server_timing() {
    let strata = Strata::start(None);
    let res = client().get(strata.url("/tasks")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["x-response-time"].to_str().unwrap().ends_with("ms"));
    assert!(res.headers().contains_key("x-request-id"));
    let timing = res.headers()["server-timing"].to_str().unwrap().to_string();
    let names: Vec<&str> = timing.split(", ").map(|m| m.split(';').next().unwrap()).collect();
    assert_eq!(names, ["request_id", "log", "errors", "app", "total"], "{timing}");
}

#[test]
fn sigterm_flushes_the_last_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut strata = Strata::start(Some(&config(log.to_str().unwrap())));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for _ in 0..20 {
            assert_eq!(client().get(strata.url("/status/204")).send().await.unwrap().status(), 204);
        }
    });
    strata.signal("TERM");
    assert!(strata.wait_exit(Duration::from_secs(10)).expect("exits").success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 20, "{text}");
}

#[test]
fn check_and_explain_report_a_request_id_set_too_late() {
    let cfg = write_config(
        "[server]\nstack = [\"log\", \"rid\"]\n[middleware.rid]\nkind = \"request_id\"\n[middleware.log]\nkind = \"access_log\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
    );
    let path = cfg.path.to_str().unwrap();
    let out = run(&["check", "--config", path], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "warnings do not fail check: {stdout}");
    assert!(
        stdout.contains(
            "warning[request-id-set-too-late]: `log` (access_log) uses the request id but is outside `rid` (request_id)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("fix: move rid before log"), "{stdout}");
    let strict = run(&["check", "--strict", "--config", path], "");
    assert_eq!(strict.status.code(), Some(1));

    let out = run(&["explain", "--config", path], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = stdout.find("1. server log").expect("log is first");
    let rid = stdout.find("2. server rid").expect("rid is second");
    assert!(log < rid, "{stdout}");
    assert!(stdout.contains("must see every request; uses the request id"), "{stdout}");
    assert!(stdout.contains("1 ordering problem(s)"), "{stdout}");
}

#[test]
fn middleware_config_errors_are_located_at_the_key() {
    let cfg = write_config(
        "[middleware.log]\nkind = \"access_log\"\nformat = \"xml\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"log\"]\n",
    );
    let path = cfg.path.to_str().unwrap();
    let out = run(&["check", "--config", path], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{path}:3:10: error: unknown variant `xml`")), "{stderr}");

    let cfg = write_config(
        "[middleware.rid]\nkind = \"request_id\"\nheader = \"bad header\"\n[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"rid\"]\n",
    );
    let path = cfg.path.to_str().unwrap();
    let out = run(&["check", "--config", path], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{path}:3:1: error: middleware `rid` (request_id):")), "{stderr}");
}
