//! `strata explain --request`: the real binary runs one request through a config's onion.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, run, wait_for_port, write_config};

/// alice / wonderland.
const ALICE: &str = "$argon2id$v=19$m=19456,t=2,p=1$LLkVIMhQoh6WuT+JmOktrA$MLzwBru1zEjIK1UrLGtwGlyXmLnCg1cOwWR76SSFm08";

/// A config whose `/api` route has `stack`, in front of an upstream that is never called unless
/// `--live` (nothing listens on port 9).
fn config(stack: &str, upstream: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8080"
stack = ["request_id"]

[middleware.request_id]
kind = "request_id"

[middleware.cors]
kind = "cors"
allow_origins = ["https://app.example.com"]
allow_methods = ["GET", "PUT"]

[middleware.auth]
kind = "basic_auth"
users = {{ alice = "{ALICE}" }}

[[route]]
prefix = "/api"
stack = {stack}
upstream = "{upstream}"

[[route]]
prefix = "/"
app = "tasks"
"#
    )
}

/// `strata explain --config FILE ARGS…`: (exit code, stdout, stderr).
fn explain(config: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let file = write_config(config);
    let path = file.path.to_str().unwrap();
    let all: Vec<&str> = ["explain", "--config", path].iter().chain(args).copied().collect();
    let out = run(&all, "");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The numbered line of the layer named `name` in the text output.
fn layer_line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(name))
        .unwrap_or_else(|| panic!("no line for layer {name}:\n{stdout}"))
}

const PREFLIGHT: &[&str] = &[
    "--request",
    "OPTIONS /api/tasks",
    "-H",
    "Origin: https://app.example.com",
    "-H",
    "Access-Control-Request-Method: PUT",
];

#[test]
fn a_preflight_through_auth_outside_cors_gets_401_and_cors_never_runs() {
    let (code, stdout, stderr) = explain(&config(r#"["auth", "cors"]"#, "http://127.0.0.1:9"), PREFLIGHT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("route /api:"), "{stdout}");
    assert!(layer_line(&stdout, "request_id").contains("passed it on; returned 401"), "{stdout}");
    let auth = layer_line(&stdout, "auth");
    assert!(auth.contains("answered 401 Unauthorized by itself: no credentials"), "{auth}");
    assert!(layer_line(&stdout, "cors").contains("not reached"), "{stdout}");
    assert!(stdout.contains("response: 401 Unauthorized"), "{stdout}");
}

#[test]
fn a_preflight_with_cors_outside_auth_is_answered_by_cors() {
    let (code, stdout, stderr) = explain(&config(r#"["cors", "auth"]"#, "http://127.0.0.1:9"), PREFLIGHT);
    assert_eq!(code, Some(0), "{stderr}");
    let cors = layer_line(&stdout, "cors");
    assert!(
        cors.contains("answered 204 No Content by itself: preflight answered: origin and method allowed"),
        "{cors}"
    );
    assert!(stdout.contains("response  + access-control-allow-origin: https://app.example.com"), "{stdout}");
    assert!(layer_line(&stdout, "auth").contains("not reached"), "{stdout}");
    assert!(stdout.contains("response: 204 No Content"), "{stdout}");
}

#[test]
fn an_upstream_route_is_answered_by_the_echo_stub_with_what_the_layers_added() {
    let (code, stdout, stderr) = explain(
        &config(r#"["cors"]"#, "http://127.0.0.1:9"),
        &["--request", "GET /api/tasks?page=2", "--host", "gw.test"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("an echo stub answers"), "{stdout}");
    // request_id adds its header on the way in; the proxy's forwarding headers reach the stub.
    assert!(stdout.contains("request   + x-request-id: "), "{stdout}");
    assert!(stdout.contains("the upstream would receive GET /api/tasks?page=2"), "{stdout}");
    assert!(stdout.contains("x-forwarded-for: 127.0.0.1"), "{stdout}");
    assert!(stdout.contains("x-forwarded-host: gw.test"), "{stdout}");
    assert!(stdout.contains("response: 200 OK"), "{stdout}");
    assert!(stdout.contains(r#""stub":"strata explain: the upstream was not called"#), "{stdout}");
}

/// `python3 -m http.server` serving `dir` on a free loopback port; stopped on drop.
struct StaticServer {
    child: Child,
    addr: SocketAddr,
}

impl StaticServer {
    fn start(dir: &std::path::Path) -> StaticServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new("python3")
            .args(["-m", "http.server", &addr.port().to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let server = StaticServer { child, addr };
        assert!(wait_for_port(addr, Duration::from_secs(10)), "http.server did not start");
        server
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn live_calls_the_real_upstream() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("api")).unwrap();
    std::fs::write(dir.path().join("api/hello.txt"), "the real upstream answered\n").unwrap();
    let upstream = StaticServer::start(dir.path());
    let config = config(r#"["cors"]"#, &format!("http://{}", upstream.addr));
    let (code, stdout, stderr) = explain(&config, &["--request", "GET /api/hello.txt", "--live"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("echo stub"), "{stdout}");
    assert!(stdout.contains("response: 200 OK"), "{stdout}");
    assert!(stdout.contains("the real upstream answered"), "{stdout}");
    assert!(stdout.to_lowercase().contains("server: simplehttp"), "{stdout}");
}

#[test]
fn basic_credentials_never_appear_in_the_output() {
    let config = config(r#"["cors", "auth"]"#, "http://127.0.0.1:9");
    // base64("alice:wonderland") and base64("alice:wrong-one").
    for token in ["YWxpY2U6d29uZGVybGFuZA==", "YWxpY2U6d3Jvbmctb25l"] {
        for format in [&[][..], &["--json"][..]] {
            let header = format!("Authorization: Basic {token}");
            let mut args = vec!["--request", "GET /api/tasks", "-H", &header, "-H", "Cookie: session=s3cr3t-c00kie"];
            args.extend_from_slice(format);
            let (code, stdout, stderr) = explain(&config, &args);
            assert_eq!(code, Some(0), "{stderr}");
            for secret in [token, "wonderland", "wrong-one", "s3cr3t-c00kie"] {
                assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} leaked:\n{stdout}\n{stderr}");
            }
            assert!(stdout.contains("[redacted]"), "{stdout}");
        }
    }
    // And the reasons say what failed without the password.
    let (_, stdout, _) =
        explain(&config, &["--request", "GET /api/tasks", "-H", "Authorization: Basic YWxpY2U6d3Jvbmctb25l"]);
    assert!(layer_line(&stdout, "auth").contains("answered 401 Unauthorized by itself: wrong password"), "{stdout}");
}

#[test]
fn json_has_one_entry_per_layer_in_onion_order() {
    let (code, stdout, stderr) =
        explain(&config(r#"["cors", "auth"]"#, "http://127.0.0.1:9"), &[PREFLIGHT, &["--json"]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    let trace: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let layers = trace["layers"].as_array().unwrap();
    let names: Vec<(&str, &str, &str)> = layers
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["scope"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [("request_id", "server", "passed on"), ("cors", "route", "answered"), ("auth", "route", "not reached")]
    );
    let positions: Vec<u64> = layers.iter().map(|l| l["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, [1, 2, 3]);
    assert_eq!(layers[1]["status"], 204);
    assert!(layers[1]["reason"].as_str().unwrap().starts_with("preflight answered"));
    assert!(layers[1]["time_us"].as_f64().is_some() && layers[2]["time_us"].is_null());
    assert_eq!(trace["route"]["name"], "/api");
    assert_eq!(trace["endpoint"]["reached"], false);
    assert_eq!(trace["response"]["status"], 204);
}

#[test]
fn a_request_no_route_matches_shows_the_server_stacks_404() {
    let config = r#"
[server]
stack = ["request_id"]

[middleware.request_id]
kind = "request_id"

[[route]]
prefix = "/api"
app = "tasks"
"#;
    let (code, stdout, stderr) = explain(config, &["--request", "GET /nowhere"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("no route: no route for host localhost and path /nowhere"), "{stdout}");
    assert!(stdout.contains("->     router  answered 404 Not Found: no route matches"), "{stdout}");
    // The server stack still decorated the 404.
    assert!(stdout.contains("response  + x-request-id"), "{stdout}");
}

#[test]
fn request_flags_need_a_request_and_a_bad_request_line_is_an_error() {
    let config = config(r#"["cors"]"#, "http://127.0.0.1:9");
    let (code, _, stderr) = explain(&config, &["--live"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--request"), "{stderr}");
    let (code, _, stderr) = explain(&config, &["--request", "GET /x more"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("expected `METHOD TARGET`"), "{stderr}");
}
