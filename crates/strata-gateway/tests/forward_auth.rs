//! `forward_auth` through the real binary, asking a real auth service under gunicorn
//! (`tests/upstream/auth_app.py`) about requests for the built-in echo app: admissions with copied
//! headers (and none of the client's own copies), the service's denials and redirects passed
//! through untouched by an `errors` layer, `on_error` when the service is down or slow, the
//! verdict cache, and a bad value located by `strata check`.

mod common;

use std::time::{Duration, Instant};

use common::gunicorn::Gunicorn;
use common::{Strata, free_port, run, write_config};

/// `errors` outside an access log outside the auth layer, in front of the echo app.
fn config(address: &str, auth_extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["errors", "log", "auth"]

[middleware.errors]
kind = "errors"

[middleware.log]
kind = "access_log"
format = "json"
output = "access.log"

[middleware.auth]
kind = "forward_auth"
address = "{address}/verify"
auth_response_headers = ["x-auth-groups", "x-auth-seen"]
user_header = "x-auth-user"
{auth_extra}

[[route]]
prefix = "/"
app = "echo"
"#
    )
}

/// A client that shows redirects rather than following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The headers the echo app received, by lowercase name.
async fn echoed_headers(res: reqwest::Response) -> serde_json::Map<String, serde_json::Value> {
    let json: serde_json::Value = res.json().await.unwrap();
    json["headers"].as_object().expect("the echo app's headers").clone()
}

/// The access log's lines once there are `count` (written off the request thread), within 10 s.
fn access_log_lines(strata: &Strata, count: usize) -> Vec<serde_json::Value> {
    let path = strata.config_dir().join("access.log");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= count || start.elapsed() > Duration::from_secs(10) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn an_admitted_request_reaches_the_app_with_the_copied_headers_and_none_of_its_own() {
    let auth = Gunicorn::start_app("auth_app:app", &[]);
    let strata = Strata::start(Some(&config(&auth.url(), "")));
    let res = client()
        .get(strata.url("/anything/orders?id=7"))
        .bearer_auth("good-token")
        .header("x-auth-user", "mallory")
        .header("x-auth-groups", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let headers = echoed_headers(res).await;
    assert_eq!(headers["x-auth-user"], "alice", "{headers:?}");
    assert_eq!(headers["x-auth-groups"], "admin", "the client's `root` was removed: {headers:?}");
    // What the service was told about the request, as it reported it back.
    let seen = format!("GET /anything/orders?id=7 {} 127.0.0.1", strata.addr);
    assert_eq!(headers["x-auth-seen"], seen.as_str());

    // The user reached the access log outside the auth layer.
    let lines = access_log_lines(&strata, 1);
    assert_eq!(lines[0]["user"], "alice", "{lines:?}");
}

#[tokio::test]
async fn denials_and_redirects_reach_the_client_as_the_service_made_them() {
    let auth = Gunicorn::start_app("auth_app:app", &[]);
    let strata = Strata::start(Some(&format!("{}\n[admin]\nlisten = \"127.0.0.1:0\"\n", config(&auth.url(), ""))));
    let http = client();

    let res = http.get(strata.url("/anything")).bearer_auth("stolen-token").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"strata\"");
    assert_eq!(res.headers()["content-type"], "text/html");
    // The `errors` layer outside left the service's own page alone.
    assert_eq!(res.text().await.unwrap(), "<h1>who are you?</h1>\n");

    let res = http.get(strata.url("/anything/private?a=1")).send().await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/login?rd=%2Fanything%2Fprivate%3Fa%3D1");
    assert_eq!(res.text().await.unwrap(), "log in first\n");

    let lines = access_log_lines(&strata, 2);
    let statuses: Vec<_> = lines.iter().map(|l| l["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [401, 302]);
    assert!(lines.iter().all(|l| l["user"].is_null()), "{lines:?}");

    // The service's 401 counts as an authentication failure of the layer; its 302 does not.
    let metrics = http.get(strata.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == r#"strata_auth_failures_total{layer="auth"} 1"#), "{metrics}");
}

#[tokio::test]
async fn on_error_decides_when_the_auth_service_is_down() {
    // Nothing listens there: every auth request is refused.
    let down = format!("http://127.0.0.1:{}", free_port());

    let strata = Strata::start(Some(&config(&down, "")));
    let res = client().get(strata.url("/anything")).bearer_auth("good-token").send().await.unwrap();
    assert_eq!(res.status(), 503, "on_error = \"deny\" by default");
    assert!(res.text().await.unwrap().contains("authentication service is unavailable"));
    assert!(strata.stderr().contains("the auth service gives no answer"), "{}", strata.stderr());

    let strata = Strata::start(Some(&config(&down, "on_error = \"allow\"")));
    let res = client().get(strata.url("/anything")).header("x-auth-user", "mallory").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = echoed_headers(res).await;
    assert!(headers.get("x-auth-user").is_none(), "failing open never lets a client name itself: {headers:?}");
    let lines = access_log_lines(&strata, 1);
    assert!(lines[0]["user"].is_null(), "{lines:?}");
}

#[tokio::test]
async fn a_slow_auth_service_is_given_up_on_at_the_timeout() {
    let auth = Gunicorn::start_app("auth_app:app", &[]);
    let strata = Strata::start(Some(&config(&auth.url(), "timeout = \"500ms\"")));
    let start = Instant::now();
    let res = client().get(strata.url("/anything")).bearer_auth("slow-token").send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(start.elapsed() < Duration::from_secs(2), "answered after {:?}", start.elapsed());
}

#[tokio::test]
async fn cached_admissions_do_not_ask_the_service_again() {
    let calls = tempfile::NamedTempFile::new().unwrap();
    let calls_path = calls.path().to_str().unwrap().to_string();
    let auth = Gunicorn::start_app("auth_app:app", &[("AUTH_CALLS", &calls_path)]);
    let strata = Strata::start(Some(&config(&auth.url(), "cache_ttl = \"1m\"")));
    let http = client();
    let count = || std::fs::read_to_string(&calls_path).unwrap().lines().count();

    for _ in 0..3 {
        let res = http.get(strata.url("/anything/a")).bearer_auth("good-token").send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(echoed_headers(res).await["x-auth-user"], "alice", "a cached admission copies its headers too");
    }
    assert_eq!(count(), 1, "asked once, then admitted from the cache");
    http.get(strata.url("/anything/b")).bearer_auth("good-token").send().await.unwrap();
    assert_eq!(count(), 2, "another URI is another question");
    for _ in 0..2 {
        let res = http.get(strata.url("/anything/a")).bearer_auth("bad-token").send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
    assert_eq!(count(), 4, "denials are not cached");
}

#[test]
fn a_bad_value_fails_strata_check_at_its_line_and_column() {
    let text = config("http://127.0.0.1:9", "timeout = \"soon\"\non_error = \"maybe\"");
    let file = write_config(&text);
    let path = file.path.to_str().unwrap();
    let out = run(&["check", "--config", path], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{path}:19:12: error: unknown variant `maybe`")), "{stderr}");

    let text = config("http://127.0.0.1:9", "timeout = \"soon\"");
    std::fs::write(&file.path, text).unwrap();
    let out = run(&["check", "--config", path], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:18:1: error: middleware `auth` (forward_auth): `soon`: expected a duration")),
        "{stderr}"
    );
}
