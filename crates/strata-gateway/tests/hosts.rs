//! Routing by host through the real binary: the most specific host pattern picks the routes, case
//! and port do not matter, HTTP/1.1 `Host` and HTTP/2 `:authority` route alike, and a host that
//! picked its routes does not fall through to the catch-all ones.

mod common;

use common::{Strata, run, write_config};
use reqwest::StatusCode;

const CONFIG: &str = r#"
[[route]]
host = "api.test"
prefix = "/v1"
app = "echo"

[[route]]
host = ["*.example.test", "shop.test"]
prefix = "/"
app = "echo"

[[route]]
prefix = "/"
app = "tasks"
"#;

/// A client that sends every name below to the server under test, over HTTP/1.1 or HTTP/2.
fn client(strata: &Strata, h2: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy();
    for name in
        ["api.test", "API.TEST", "www.example.test", "a.b.example.test", "example.test", "shop.test", "other.test"]
    {
        builder = builder.resolve(name, strata.addr);
    }
    if h2 {
        builder = builder.http2_prior_knowledge();
    }
    builder.build().unwrap()
}

/// What answered: `echo` (with the path it saw), `tasks`, or the status of anything else.
async fn who(client: &reqwest::Client, port: u16, host: &str, path: &str) -> String {
    let res = client.get(format!("http://{host}:{port}{path}")).send().await.unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(json) if status == StatusCode::OK && json.get("method").is_some() => {
            format!("echo {}", json["path"].as_str().unwrap())
        }
        Ok(json) if status == StatusCode::OK && json.is_array() => "tasks".to_string(),
        _ => status.as_u16().to_string(),
    }
}

#[tokio::test]
async fn the_host_picks_the_routes_and_the_longest_prefix_the_route() {
    let strata = Strata::start(Some(CONFIG));
    let port = strata.addr.port();
    for h2 in [false, true] {
        let c = client(&strata, h2);
        let ask = |host: &'static str, path: &'static str| {
            let c = c.clone();
            async move { who(&c, port, host, path).await }
        };
        let protocol = if h2 { "h2" } else { "http/1.1" };
        assert_eq!(ask("api.test", "/v1/anything").await, "echo /anything", "{protocol}");
        // Case and port are not part of the match.
        assert_eq!(ask("API.TEST", "/v1/anything").await, "echo /anything", "{protocol}");
        // api.test picked its routes: a path none of them serves is a 404, not the catch-all's.
        assert_eq!(ask("api.test", "/tasks").await, "404", "{protocol}");
        // Wildcards match names at any depth below the domain, and a list names several hosts.
        assert_eq!(ask("www.example.test", "/anything").await, "echo /anything", "{protocol}");
        assert_eq!(ask("a.b.example.test", "/anything").await, "echo /anything", "{protocol}");
        assert_eq!(ask("shop.test", "/anything").await, "echo /anything", "{protocol}");
        // The bare domain is not below itself; unknown hosts go to the routes without `host`.
        assert_eq!(ask("example.test", "/tasks").await, "tasks", "{protocol}");
        assert_eq!(ask("other.test", "/tasks").await, "tasks", "{protocol}");
    }
}

#[test]
fn explain_names_each_route_by_its_hosts_and_prefix() {
    let config = write_config(CONFIG);
    let out = run(&["explain", "--config", config.path.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("route api.test/v1\n"), "{text}");
    assert!(text.contains("route *.example.test,shop.test/\n"), "{text}");
    assert!(text.contains("route /\n"), "{text}");
}

#[test]
fn bad_hosts_and_clashing_routes_are_located_errors() {
    let config = write_config(
        r#"
[[route]]
host = "api.test:8080"
prefix = "/"
app = "echo"

[[route]]
host = ["a.test", "a.*.test"]
prefix = "/"
app = "echo"

[[route]]
host = ["b.test", "A.test"]
prefix = "/"
app = "echo"

[[route]]
host = "b.test"
prefix = "/x"
app = "echo"
"#,
    );
    let out = run(&["check", "--config", config.path.to_str().unwrap()], "");
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(":3:8") && text.contains("without a port"), "{text}");
    assert!(text.contains(":8:19") && text.contains("leading `*.`"), "{text}");
    // `A.test` is `a.test`, which the second route already serves at `/`.
    assert!(text.contains(":14:10") && text.contains("for host `a.test` is already defined at line 9"), "{text}");
    // Another prefix on a host already named is fine.
    assert!(!text.contains("toml:19:"), "{text}");
}
