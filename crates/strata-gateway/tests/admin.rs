//! The admin listener of the real `strata` binary: `/metrics` in both text formats, `/healthz`,
//! `/readyz` (with real gunicorn upstreams and a closed port), `/config` with its secrets redacted,
//! the `allow` list, and metrics kept across a reload.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::gunicorn::Gunicorn;
use common::{Strata, client, free_port, run, write_config};

/// `strata hash-password` for `password`.
fn hash(password: &str) -> String {
    let out = run(&["hash-password"], &format!("{password}\n"));
    String::from_utf8(out.stdout).unwrap().trim().lines().last().unwrap().to_string()
}

/// The samples of a Prometheus text body: `name{labels}` → value.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
        .collect()
}

async fn scrape(strata: &Strata) -> BTreeMap<String, f64> {
    let res = client().get(strata.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    samples(&res.text().await.unwrap())
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

fn config(extra: &str) -> String {
    format!(
        r#"
[server]
stack = ["id", "timing"]

[admin]
listen = "127.0.0.1:0"
{extra}

[middleware.id]
kind = "request_id"

[middleware.timing]
kind = "timing"

[middleware.auth]
kind = "basic_auth"
users = {{ alice = "{}" }}

[middleware.limit]
kind = "rate_limit"
rate = "3/m"
key = "client_ip"

[[route]]
prefix = "/"
app = "echo"

[[route]]
prefix = "/private"
stack = ["auth"]
app = "echo"

[[route]]
prefix = "/limited"
stack = ["limit"]
app = "echo"
"#,
        hash("s3cret-pw")
    )
}

#[tokio::test]
async fn requests_are_counted_per_route_layer_and_outcome() {
    let strata = Strata::start(Some(&config("")));
    let http = client();
    for _ in 0..5 {
        assert_eq!(http.get(strata.url("/anything")).send().await.unwrap().status(), 200);
    }
    for _ in 0..4 {
        assert_eq!(http.get(strata.url("/private/anything")).send().await.unwrap().status(), 401);
    }
    let ok = http.get(strata.url("/private/anything")).basic_auth("alice", Some("s3cret-pw")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(http.post(strata.url("/limited/anything")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    let m = scrape(&strata).await;
    assert_eq!(value(&m, r#"strata_requests_total{route="/",method="GET",status_class="2xx"}"#), 5.0);
    assert_eq!(value(&m, r#"strata_requests_total{route="/private",method="GET",status_class="4xx"}"#), 4.0);
    assert_eq!(value(&m, r#"strata_requests_total{route="/private",method="GET",status_class="2xx"}"#), 1.0);
    assert_eq!(value(&m, r#"strata_requests_total{route="/limited",method="POST",status_class="4xx"}"#), 2.0);
    assert_eq!(value(&m, r#"strata_request_duration_seconds_count{route="/"}"#), 5.0);
    // Every layer of the onion, server layers first, then the route's, then the app.
    for layer in ["id", "timing", "auth", "app"] {
        let key = format!(r#"strata_layer_duration_seconds_count{{route="/private",layer="{layer}"}}"#);
        let expected = if layer == "app" { 1.0 } else { 5.0 };
        assert_eq!(value(&m, &key), expected, "{layer}");
    }
    assert!(value(&m, r#"strata_layer_duration_seconds_sum{route="/private",layer="auth"}"#) > 0.0);
    let le_inf = r#"strata_layer_duration_seconds_bucket{route="/private",layer="auth",le="+Inf"}"#;
    assert_eq!(value(&m, le_inf), 5.0);
    assert_eq!(value(&m, r#"strata_layer_responses_total{route="/private",layer="auth",status_class="4xx"}"#), 4.0);
    assert_eq!(value(&m, r#"strata_auth_failures_total{layer="auth"}"#), 4.0);
    assert_eq!(value(&m, r#"strata_ratelimit_decisions_total{layer="limit",decision="allowed"}"#), 3.0);
    assert_eq!(value(&m, r#"strata_ratelimit_decisions_total{layer="limit",decision="limited"}"#), 2.0);
    assert_eq!(value(&m, r#"strata_requests_in_flight"#), 0.0);
    // reqwest keeps its connection to the public listener open.
    assert!(value(&m, "strata_connections_open") >= 1.0);
    assert_eq!(value(&m, r#"strata_build_info{version="0.1.0"}"#), 1.0);
    assert!(value(&m, "process_resident_memory_bytes") > 1e6);
    assert!(value(&m, "process_open_fds") > 3.0);

    // OpenMetrics when asked for, with the same figures.
    let res = http
        .get(strata.admin_url("/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let body = res.text().await.unwrap();
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE strata_requests counter\n"));
    assert_eq!(value(&samples(&body), r#"strata_auth_failures_total{layer="auth"}"#), 4.0);

    // The public listener does not serve the admin endpoints: its `/` route's app answers.
    let public = http.get(strata.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!public.contains("strata_requests_total"), "{public}");
}

#[tokio::test]
async fn health_config_and_method_endpoints() {
    let strata = Strata::start(Some(&config("")));
    let http = client();
    let health = http.get(strata.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(strata.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "no upstream route: ready once serving");

    let config: serde_json::Value = http.get(strata.admin_url("/config")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["middleware"]["auth"]["users"]["alice"], "[redacted]");
    assert_eq!(config["middleware"]["limit"]["rate"], "3/m");
    assert!(!config.to_string().contains("argon2"), "{config}");

    let post = http.post(strata.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    assert_eq!(http.get(strata.admin_url("/nope")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn peers_outside_the_allow_list_are_refused() {
    let strata = Strata::start(Some(&config(r#"allow = ["10.0.0.0/8"]"#)));
    let res = client().get(strata.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let strata = Strata::start(Some(&config(r#"allow = ["127.0.0.0/8"]"#)));
    assert_eq!(client().get(strata.admin_url("/metrics")).send().await.unwrap().status(), 200);
}

/// Polls `url` until its status is `want`, for at most `limit`.
async fn wait_status(url: &str, want: u16, limit: Duration) -> (u16, String) {
    let started = Instant::now();
    loop {
        let res = client().get(url).send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        if status == want || started.elapsed() > limit {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readiness_follows_the_health_of_upstream_targets_and_attempts_are_counted() {
    let app = Gunicorn::start_app("whoami_app:app", &[("WHOAMI", "a")]);
    let closed = format!("http://127.0.0.1:{}", free_port());
    let health = "[route.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
                  healthy_threshold = 1\nunhealthy_threshold = 1\n";
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\nprefix = \"/up\"\nupstream = [\"{}\", \"{closed}\"]\nstrip_prefix = true\neject_after = 1\n{health}\n\
         [[route]]\nprefix = \"/down\"\nupstream = \"{closed}\"\n{health}",
        app.url()
    );
    let strata = Strata::start(Some(&text));
    let (status, body) = wait_status(&strata.admin_url("/readyz"), 503, Duration::from_secs(10)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("route /down: no healthy upstream target"), "{body}");
    assert!(!body.contains("route /up"), "/up has a healthy target: {body}");

    let http = client();
    for _ in 0..4 {
        assert_eq!(http.get(strata.url("/up/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(http.get(strata.url("/down/x")).send().await.unwrap().status(), 502);
    let m = scrape(&strata).await;
    let up =
        |target: &str, route: &str| value(&m, &format!(r#"strata_upstream_up{{route="{route}",target="{target}/"}}"#));
    assert_eq!(up(&app.url(), "/up"), 1.0);
    assert_eq!(up(&closed, "/up"), 0.0);
    assert_eq!(up(&closed, "/down"), 0.0);
    let outcome = |target: &str, route: &str, outcome: &str| {
        value(
            &m,
            &format!(r#"strata_upstream_requests_total{{route="{route}",target="{target}/",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(outcome(&app.url(), "/up", "success"), 4.0);
    assert_eq!(outcome(&closed, "/down", "connect_failure"), 1.0);

    // The config changes: `/down` now goes to the live app, and readiness comes back.
    let fixed = text.replace(&format!("upstream = \"{closed}\""), &format!("upstream = \"{}\"", app.url()));
    std::fs::write(strata.config_path(), fixed).unwrap();
    strata.signal("HUP");
    let (status, body) = wait_status(&strata.admin_url("/readyz"), 200, Duration::from_secs(10)).await;
    assert_eq!(status, 200, "{body}");
    let m = scrape(&strata).await;
    assert_eq!(value(&m, r#"strata_config_reloads_total{result="success"}"#), 1.0);
    // Kept across the reload: the route and its layers did not change.
    assert_eq!(value(&m, r#"strata_requests_total{route="/up",method="GET",status_class="2xx"}"#), 4.0);
}

#[tokio::test]
async fn a_failed_reload_is_counted_and_the_counts_stay() {
    let strata = Strata::start(Some(&config("")));
    let http = client();
    for _ in 0..3 {
        http.get(strata.url("/anything")).send().await.unwrap();
    }
    std::fs::write(strata.config_path(), "[server\n").unwrap();
    strata.signal("HUP");
    let started = Instant::now();
    let mut failures = 0.0;
    while failures == 0.0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        failures = value(&scrape(&strata).await, r#"strata_config_reloads_total{result="failure"}"#);
    }
    assert_eq!(failures, 1.0);
    let m = scrape(&strata).await;
    assert_eq!(value(&m, r#"strata_requests_total{route="/",method="GET",status_class="2xx"}"#), 3.0);
}

#[test]
fn check_warns_about_an_admin_listener_any_host_can_reach() {
    let open = write_config("[admin]\nlisten = \"0.0.0.0:9901\"\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n");
    let out = run(&["check", "--config", open.path.to_str().unwrap()], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("warning[admin-exposed]"), "{stdout}");
    let allowed = write_config(
        "[admin]\nlisten = \"0.0.0.0:9901\"\nallow = [\"10.0.0.0/8\"]\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
    );
    let out = run(&["check", "--config", allowed.path.to_str().unwrap()], "");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("admin-exposed"));
    let bad = write_config(
        "[admin]\nlisten = \"127.0.0.1:9901\"\nallow = [\"10.0.0.0/33\"]\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
    );
    let out = run(&["check", "--config", bad.path.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("strata.toml:3:10") && stderr.contains("not an address or CIDR block"), "{stderr}");
    let shared = write_config(
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[admin]\nlisten = \"127.0.0.1:8080\"\n\n[[route]]\nprefix = \"/\"\napp = \"echo\"\n",
    );
    let out = run(&["check", "--config", shared.path.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("strata.toml:5:10") && stderr.contains("a public listener's address"), "{stderr}");
}

#[tokio::test]
async fn a_sampled_live_request_is_shown_layer_by_layer_without_its_secrets() {
    let strata = Strata::start(Some(&config("")));
    let http = client();
    // The first request is always sampled; the credentials are wrong, so `auth` answers by itself.
    let url = strata.url("/private/anything?api_key=k3y-in-query");
    let res = http.get(url).basic_auth("alice", Some("not-the-password")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body = http.get(strata.admin_url("/debug/requests")).send().await.unwrap().text().await.unwrap();
    let credentials = "YWxpY2U6bm90LXRoZS1wYXNzd29yZA"; // base64 of alice:not-the-password
    assert!(!body.contains(credentials) && !body.contains("not-the-password"), "{body}");
    assert!(!body.contains("k3y-in-query") && body.contains("api_key=[redacted]"), "{body}");
    let traces: serde_json::Value = serde_json::from_str(&body).unwrap();
    let newest = &traces[0];
    assert_eq!(newest["route"]["name"], "/private", "{newest:#}");
    assert_eq!(newest["response"]["status"], 401);
    let layers: Vec<(&str, &str)> = newest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(layers, [("id", "passed on"), ("timing", "passed on"), ("auth", "answered")]);
    let auth = &newest["layers"][2];
    assert_eq!(auth["status"], 401);
    assert!(auth["reason"].as_str().is_some_and(|r| !r.is_empty()), "{auth:#}");
    assert_eq!(newest["endpoint"]["reached"], false);
}
