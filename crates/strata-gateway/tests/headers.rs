//! `headers` through the real binary: response rules on app responses and on the 401 and 429 that
//! layers inside make, request rules whose placeholders (`{user}`, `{route}`, `{client_ip}`,
//! `{request_id}`, `{method}`, `{host}`, `{path}`) the echo app receives, a spoofed header
//! removed, and bad rules reported at their file:line:column by `strata check`.

mod common;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use common::{Strata, client, run, write_config};

/// A cheap argon2id PHC string for `password` (tests need no real cost).
fn argon2id(password: &str) -> String {
    let params = Params::new(1024, 1, 1, None).unwrap();
    let salt = SaltString::encode_b64(b"headers-rules").unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn values(h: &reqwest::header::HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name).iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn response_rules_apply_to_app_responses_and_to_a_401_and_a_429_made_inside() {
    let strata = Strata::start(Some(&format!(
        r#"
[server]
stack = ["hdrs", "auth", "limit"]

[middleware.hdrs]
kind = "headers"

[middleware.hdrs.response]
set = {{ "x-served-by" = "strata {{route}} {{method}} {{path}}", "ratelimit-policy" = "hidden" }}
append = {{ "cache-control" = "no-store" }}
remove = ["ratelimit"]

[middleware.auth]
kind = "basic_auth"
users = {{ alice = "{}" }}

[middleware.limit]
kind = "rate_limit"
rate = "1/min"

[[route]]
prefix = "/api"
app = "echo"
"#,
        argon2id("s3cret")
    )));
    let get = || client().get(strata.url("/api/status/200"));
    let anonymous = get().send().await.unwrap();
    let first = get().basic_auth("alice", Some("s3cret")).send().await.unwrap();
    let second = get().basic_auth("alice", Some("s3cret")).send().await.unwrap();
    let statuses = [anonymous.status().as_u16(), first.status().as_u16(), second.status().as_u16()];
    assert_eq!(statuses, [401, 200, 429]);
    for res in [&anonymous, &first, &second] {
        let h = res.headers();
        assert_eq!(values(h, "x-served-by"), ["strata /api GET /api/status/200"], "{}", res.status());
        assert_eq!(values(h, "cache-control").last().map(String::as_str), Some("no-store"), "{}", res.status());
        assert!(values(h, "ratelimit").is_empty(), "removed: {h:?}");
    }
    // The rate limit's own field, replaced by the rule.
    assert_eq!(values(second.headers(), "ratelimit-policy"), ["hidden"]);
}

#[tokio::test]
async fn request_rules_placeholders_reach_the_app_and_spoofed_values_do_not() {
    let strata = Strata::start(Some(&format!(
        r#"
[server]
stack = ["rid"]

[middleware.rid]
kind = "request_id"

[middleware.auth]
kind = "basic_auth"
users = {{ alice = "{}" }}

[middleware.hdrs]
kind = "headers"
request.set = {{ "x-user" = "{{user}}", "x-route" = "{{route}}", "x-client" = "{{client_ip}}", "x-rid" = "{{request_id}}", "x-where" = "{{method}} {{host}}{{path}} {{{{literal}}" }}
request.remove = ["x-debug"]

[[route]]
prefix = "/api"
app = "echo"
stack = ["auth", "hdrs"]

[[route]]
prefix = "/open"
app = "echo"
stack = ["hdrs"]
"#,
        argon2id("s3cret")
    )));
    let echo = |res: reqwest::Response| async move {
        let id = res.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string());
        let json: serde_json::Value = res.json().await.unwrap();
        (json["headers"].clone(), id)
    };
    let res = client()
        .post(strata.url("/api/anything?q=1"))
        .basic_auth("alice", Some("s3cret"))
        .header("x-debug", "1")
        .send()
        .await
        .unwrap();
    let (headers, id) = echo(res).await;
    assert_eq!(headers["x-user"], "alice");
    assert_eq!(headers["x-route"], "/api");
    assert_eq!(headers["x-client"], "127.0.0.1");
    assert_eq!(headers["x-rid"].as_str(), id.as_deref(), "the id the response carries: {headers}");
    let where_ = format!("POST {}/api/anything {{literal}}", strata.addr);
    assert_eq!(headers["x-where"], where_.as_str());
    assert!(headers.get("x-debug").is_none(), "{headers}");

    // No user on this route: the client's own `x-user` is removed, not passed on.
    let res = client().get(strata.url("/open/anything")).header("x-user", "root").send().await.unwrap();
    let (headers, _) = echo(res).await;
    assert!(headers.get("x-user").is_none(), "{headers}");
    assert_eq!(headers["x-route"], "/open");
}

#[test]
fn bad_rules_are_reported_at_their_line_and_column() {
    let check = |table: &str| {
        let config = write_config(&format!(
            "[server]\nstack = [\"hdrs\"]\n\n[middleware.hdrs]\nkind = \"headers\"\n{table}\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n"
        ));
        let file = config.path.to_str().unwrap().to_string();
        let out = run(&["check", "--config", &file], "");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), file)
    };
    let (code, stderr, file) = check("response = { set = { \"x-a\" = \"{nope}\" } }");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:6:1: error: middleware `hdrs` (headers): set.\"x-a\": `{{nope}}`: unknown placeholder `{{nope}}`"
        )),
        "{stderr}"
    );
    let (code, stderr, file) = check("request.remove = [\"bad name\"]");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:6:1: error: middleware `hdrs` (headers): remove: `bad name` is not a header name"
        )),
        "{stderr}"
    );
    let (code, stderr, file) = check("request.sett = {}");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{file}:6:9: error: unknown field `sett`")), "{stderr}");
}
