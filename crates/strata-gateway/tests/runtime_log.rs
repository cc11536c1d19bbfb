//! The gateway's runtime log through the real binary: `[log] format = "json"` lines, the request id
//! on lines about a request, the filter's sources (`RUST_LOG`, `STRATA_LOG`, `[log] level`) and a
//! reload that changes the level.

mod common;

use std::time::{Duration, Instant};

use common::{Strata, client, free_port};

/// Neither filter variable, whatever the environment running the tests has: the config decides.
const NO_ENV: &[(&str, Option<&str>)] = &[("RUST_LOG", None), ("STRATA_LOG", None)];

/// The secrets a request sends, which no log line may show.
const AUTHORIZATION: &str = "Basic c2VjcmV0LXVzZXI6c2VjcmV0LXBhc3N3b3Jk";
const COOKIE: &str = "session=cookie-secret-value";

/// The echo app behind `request_id` and `errors` (every 4xx and 5xx, so a 404 is a DEBUG line),
/// with `log` as the `[log]` section's body.
fn echo_config(log: &str) -> String {
    format!(
        r#"
[log]
{log}

[server]
stack = ["rid", "errors"]

[middleware.rid]
kind = "request_id"

[middleware.errors]
kind = "errors"
statuses = "all"

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

/// Polls the server's stderr until `found` accepts it, up to `limit`; returns the last text read.
fn wait_for_stderr(strata: &Strata, limit: Duration, found: impl Fn(&str) -> bool) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let text = strata.stderr();
        if found(&text) {
            return Ok(text);
        }
        if start.elapsed() > limit {
            return Err(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line of `text` as a JSON object, failing the test on a line that is not one.
fn json_lines(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(object)) => object,
            _ => panic!("not a JSON object: {line:?}\nstderr:\n{text}"),
        })
        .collect()
}

/// A GET with credentials and a cookie; returns the status and the `x-request-id` it got.
async fn get_with_secrets(url: &str) -> (u16, String) {
    let res = client()
        .get(url)
        .header("authorization", AUTHORIZATION)
        .header("cookie", COOKIE)
        .send()
        .await
        .expect("a response");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    (res.status().as_u16(), id)
}

fn assert_no_secrets(stderr: &str) {
    for secret in [AUTHORIZATION, "c2VjcmV0", COOKIE, "cookie-secret-value"] {
        assert!(!stderr.contains(secret), "{secret:?} in the log:\n{stderr}");
    }
}

#[test]
fn json_format_writes_every_line_as_one_object() {
    let mut strata = Strata::start_env(&echo_config("format = \"json\""), &[], NO_ENV);
    strata.signal("TERM");
    assert!(strata.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "strata stopped cleanly");
    let stderr = strata.stderr();
    let lines = json_lines(&stderr);
    assert!(lines.len() >= 3, "startup and shutdown lines:\n{stderr}");
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some_and(serde_json::Value::is_string), "no string `{key}` in {line:?}");
        }
        assert!(line.get("fields").is_none(), "fields are flattened: {line:?}");
    }
    let messages: Vec<&str> = lines.iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.starts_with("serving with ")), "{messages:?}");
    assert!(messages.contains(&"stopped"), "{messages:?}");
    assert!(lines.iter().all(|l| ["INFO", "WARN"].contains(&l["level"].as_str().unwrap())), "{stderr}");
}

#[tokio::test]
async fn a_failed_upstream_line_carries_the_request_id_of_the_response() {
    // Nothing listens on this port: every connection is refused.
    let closed = free_port();
    let config = format!(
        r#"
[log]
format = "json"

[server]
stack = ["rid", "errors"]

[middleware.rid]
kind = "request_id"

[middleware.errors]
kind = "errors"

[[route]]
prefix = "/"
upstream = "http://127.0.0.1:{closed}"
"#
    );
    let strata = Strata::start_env(&config, &[], NO_ENV);
    let (status, id) = get_with_secrets(&strata.url("/orders?token=1")).await;
    assert_eq!(status, 502);
    let stderr = wait_for_stderr(&strata, Duration::from_secs(5), |text| text.contains("request failed"))
        .unwrap_or_else(|text| panic!("no line for the failed request:\n{text}"));
    let lines = json_lines(&stderr);
    let about_request: Vec<_> = lines.iter().filter(|l| l.contains_key("request_id")).collect();
    let upstream = about_request
        .iter()
        .find(|l| l["message"] == "upstream request failed")
        .unwrap_or_else(|| panic!("no upstream failure line with a request_id:\n{stderr}"));
    assert_eq!(upstream["level"], "WARN");
    assert_eq!(upstream["request_id"], id.as_str());
    assert!(upstream["error"].as_str().unwrap().contains("refused"), "{upstream:?}");
    let errors = about_request.iter().find(|l| l["message"] == "request failed").expect("the errors layer's line");
    assert_eq!((errors["level"].as_str(), errors["request_id"].as_str()), (Some("ERROR"), Some(id.as_str())));
    // Lines about no request (startup) have no request_id field at all.
    let startup = lines.iter().find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("serving with"))).unwrap();
    assert!(!startup.contains_key("request_id"), "{startup:?}");
    assert_no_secrets(&stderr);
}

#[tokio::test]
async fn a_panic_line_carries_the_request_id_in_the_text_format() {
    let strata = Strata::start_env(&echo_config("format = \"text\""), &[], NO_ENV);
    let (status, id) = get_with_secrets(&strata.url("/panic")).await;
    assert_eq!(status, 500);
    let stderr = wait_for_stderr(&strata, Duration::from_secs(5), |text| text.contains("a layer panicked"))
        .unwrap_or_else(|text| panic!("no panic line:\n{text}"));
    let line = stderr.lines().find(|l| l.contains("a layer panicked")).unwrap();
    assert!(line.contains("ERROR") && line.contains(&format!("request_id={id}")), "{line}");
    assert_no_secrets(&stderr);
}

/// Whether the startup INFO line was written.
fn shows_info(strata: &Strata) -> bool {
    strata.stderr().contains("serving with ")
}

#[test]
fn the_environment_then_the_config_choose_the_filter() {
    let info = echo_config("level = \"info\"");
    let strata = Strata::start_env(&info, &[], NO_ENV);
    assert!(shows_info(&strata), "level = info shows INFO lines:\n{}", strata.stderr());

    let strata = Strata::start_env(&info, &[], &[("RUST_LOG", Some("warn")), ("STRATA_LOG", None)]);
    assert!(!shows_info(&strata), "RUST_LOG=warn wins over the config:\n{}", strata.stderr());

    let strata = Strata::start_env(&info, &[], &[("RUST_LOG", None), ("STRATA_LOG", Some("warn"))]);
    assert!(!shows_info(&strata), "STRATA_LOG is its alias:\n{}", strata.stderr());

    let strata = Strata::start_env(&echo_config("level = \"warn\""), &[], NO_ENV);
    assert!(!shows_info(&strata), "level = warn hides INFO lines:\n{}", strata.stderr());

    // A bad variable is reported once and skipped: the config's level applies.
    let strata = Strata::start_env(
        &echo_config("level = \"warn\""),
        &[],
        &[("RUST_LOG", Some("info,[x")), ("STRATA_LOG", None)],
    );
    let stderr = strata.stderr();
    assert_eq!(stderr.matches("RUST_LOG=\"info,[x\" is not a valid log filter").count(), 1, "{stderr}");
    assert!(!shows_info(&strata), "{stderr}");
}

#[tokio::test]
async fn a_reload_changes_the_level_and_asks_a_restart_for_the_format() {
    let strata = Strata::start_env(&echo_config("level = \"info\""), &[], NO_ENV);
    let http = client();
    assert_eq!(http.get(strata.url("/status/404")).send().await.unwrap().status(), 404);
    // The errors layer writes its line before the response leaves: none means none.
    assert!(!strata.stderr().contains("request rejected"), "no DEBUG line at info:\n{}", strata.stderr());

    std::fs::write(strata.config_path(), echo_config("level = \"debug\"\nformat = \"json\"")).unwrap();
    strata.signal("HUP");
    let stderr = wait_for_stderr(&strata, Duration::from_secs(10), |text| text.contains("config reloaded"))
        .unwrap_or_else(|text| panic!("no reload:\n{text}"));
    assert!(stderr.contains("runtime log level changed"), "{stderr}");
    assert!(stderr.contains("`[log] format` changed: it is fixed when strata starts"), "{stderr}");

    let res = http.get(strata.url("/status/404")).send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let stderr = wait_for_stderr(&strata, Duration::from_secs(5), |text| text.contains("request rejected"))
        .unwrap_or_else(|text| panic!("no DEBUG line after the reload:\n{text}"));
    let line = stderr.lines().find(|l| l.contains("request rejected")).unwrap();
    // Still the text format: only a restart changes it.
    assert!(line.contains("DEBUG") && line.contains(&format!("request_id={id}")), "{line}");
}

#[tokio::test]
async fn a_reload_leaves_the_level_alone_when_the_environment_chose_it() {
    let env = &[("RUST_LOG", Some("info")), ("STRATA_LOG", None)];
    let strata = Strata::start_env(&echo_config("level = \"warn\""), &[], env);
    assert!(shows_info(&strata), "RUST_LOG=info wins over level = warn:\n{}", strata.stderr());
    std::fs::write(strata.config_path(), echo_config("level = \"debug\"")).unwrap();
    strata.signal("HUP");
    let stderr = wait_for_stderr(&strata, Duration::from_secs(10), |text| text.contains("config reloaded"))
        .unwrap_or_else(|text| panic!("no reload:\n{text}"));
    assert!(stderr.contains("`[log] level` changed, but RUST_LOG is set"), "{stderr}");
    assert_eq!(client().get(strata.url("/status/404")).send().await.unwrap().status(), 404);
    assert!(!strata.stderr().contains("request rejected"), "still info:\n{}", strata.stderr());
}
