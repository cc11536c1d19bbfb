//! The classic stack through the real binary: timing → request id → access log → CORS → Basic auth
//! → app. Preflights never meet auth, and errors made inside (401, a panic's 500) still carry CORS,
//! request-id and timing headers. `check` reports the ordering mistakes this stack avoids.

mod common;

use argon2::password_hash::{PasswordHasher, SaltString};
use common::{Strata, client, run, write_config};

const ORIGIN: &str = "http://127.0.0.1:5173";

/// A cheap argon2id hash: the test binary is a debug build, where full-cost argon2 is slow.
fn argon2_hash(password: &str) -> String {
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon.hash_password(password.as_bytes(), &SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap()).unwrap().to_string()
}

fn classic(log: &str) -> String {
    format!(
        r#"
[server]
stack = ["timing", "rid", "log", "cors", "auth"]

[middleware.timing]
kind = "timing"

[middleware.rid]
kind = "request_id"

[middleware.log]
kind = "access_log"
format = "json"
output = "{log}"

[middleware.cors]
kind = "cors"
allow_origins = ["{ORIGIN}"]
allow_methods = ["GET", "POST", "PUT", "DELETE"]
allow_headers = ["content-type", "authorization", "x-custom"]
expose_headers = ["x-request-id"]
allow_credentials = true

[middleware.auth]
kind = "basic_auth"
realm = "tasks"
users = {{ alice = "{hash}" }}

[[route]]
prefix = "/"
app = "echo"
"#,
        hash = argon2_hash("wonderland")
    )
}

#[tokio::test]
async fn preflights_pass_and_errors_carry_cors_request_id_and_timing_headers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let strata = Strata::start(Some(&classic(log.to_str().unwrap())));
    let http = client();

    let preflight = http
        .request(reqwest::Method::OPTIONS, strata.url("/anything"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "x-custom")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], ORIGIN);
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("PUT"));

    let anonymous = http.get(strata.url("/anything")).header("origin", ORIGIN).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Basic realm=\"tasks\", charset=\"UTF-8\"");
    assert_eq!(anonymous.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(anonymous.headers()["access-control-allow-credentials"], "true");
    assert!(anonymous.headers().contains_key("x-request-id"));
    assert!(anonymous.headers()["server-timing"].to_str().unwrap().contains("auth;dur="));

    let wrong = http.get(strata.url("/anything")).basic_auth("alice", Some("nope")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let ok = http
        .get(strata.url("/anything"))
        .header("origin", ORIGIN)
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], ORIGIN);

    let crashed = http
        .get(strata.url("/panic"))
        .header("origin", ORIGIN)
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(crashed.status(), 500);
    assert_eq!(crashed.headers()["access-control-allow-origin"], ORIGIN);
    assert!(crashed.headers().contains_key("x-request-id"));
    assert!(crashed.headers().contains_key("x-response-time"));

    let other_origin = http.get(strata.url("/anything")).header("origin", "http://evil.example").send().await.unwrap();
    assert!(other_origin.headers().get("access-control-allow-origin").is_none());

    // Every request was logged, the rejected ones included, with the user once known.
    let start = std::time::Instant::now();
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= 6 || start.elapsed().as_secs() > 5 {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let statuses: Vec<u64> = lines.iter().map(|l| l["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses.len(), 6, "{lines:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 3, "{statuses:?}");
    assert!(lines.iter().any(|l| l["status"] == 200 && l["user"] == "alice"), "{lines:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("wonderland") && !text.contains("YWxpY2U6"), "no credentials in the log");
}

#[test]
fn check_warns_about_auth_outside_cors_logging_and_errors_inside_auth_and_weak_hashes() {
    let cfg = write_config(
        r#"
[server]
stack = ["auth", "cors", "log", "errors"]

[middleware.errors]
kind = "errors"

[middleware.auth]
kind = "basic_auth"
users = { bob = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=" }

[middleware.cors]
kind = "cors"
allow_origins = ["https://app.example.com"]

[middleware.log]
kind = "access_log"

[[route]]
prefix = "/"
app = "tasks"
"#,
    );
    let out = run(&["check", "--config", cfg.path.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "warnings only: {stdout}");
    assert!(stdout.contains("warning[cors-inside-short-circuit]: `cors` is inside `auth` (basic_auth)"), "{stdout}");
    assert!(
        stdout.contains(
            "warning[sees-every-request-inside-short-circuit]: `log` (access_log) is inside `auth` (basic_auth)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("middleware auth: warning[weak-password-hash]: user `bob` has a {SHA} password entry"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning[errors-not-outermost]: `auth` (basic_auth) can fail but sits outside `errors`"),
        "{stdout}"
    );
    assert!(!stdout.contains("W6ph5Mm5"), "check never prints a hash: {stdout}");
}

#[test]
fn credentials_with_any_origin_is_a_located_config_error() {
    let cfg = write_config(
        "[middleware.cors]\nkind = \"cors\"\nallow_origins = [\"*\"]\nallow_credentials = true\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\nstack = [\"cors\"]\n",
    );
    let path = cfg.path.to_str().unwrap();
    let out = run(&["check", "--config", path], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{path}:")) && stderr.contains("middleware `cors` (cors):"), "{stderr}");
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/classic.toml");

#[test]
fn the_classic_example_config_passes_a_strict_check() {
    let out = run(&["check", "--strict", "--config", EXAMPLE], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("0 error(s), 0 warning(s)"), "{stdout}");
}

#[tokio::test]
async fn the_classic_example_serves_tasks_to_alice_only() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let strata = Strata::start(Some(&text));
    let http = client();
    let anonymous = http.get(strata.url("/tasks")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let alice = http.get(strata.url("/tasks")).basic_auth("alice", Some("wonderland")).send().await.unwrap();
    assert_eq!(alice.status(), 200);
    assert_eq!(alice.text().await.unwrap(), "[]");
}
