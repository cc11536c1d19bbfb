//! CORS as a real browser enforces it: headless Chromium loads a page from one loopback origin, the
//! page `fetch()`es strata on another port, and writes what it could read into the DOM, which
//! Chromium prints once its virtual clock has run out. `.ci/run` installs Debian's `chromium`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use common::Strata;

const PAGE: &str = r#"<!doctype html>
<html><body><pre id="results">pending</pre>
<script>
const base = decodeURIComponent(location.search.slice(1));
const results = {};
async function attempt(name, path, options) {
  try {
    const res = await fetch(base + path, options);
    const id = res.headers.get("x-request-id");
    results[name] = "status " + res.status + (id ? " id" : "");
  } catch (e) {
    results[name] = "blocked";
  }
}
(async () => {
  await attempt("simple", "/anything", {});
  await attempt("credentialed", "/anything", { credentials: "include" });
  await attempt("credentialed_without_permission", "/plain/anything", { credentials: "include" });
  await attempt("preflighted_put", "/anything", { method: "PUT", headers: { "x-custom": "1" }, body: "{}" });
  await attempt("preflight_with_unlisted_header", "/anything", { method: "PUT", headers: { "x-forbidden": "1" } });
  await attempt("error_from_auth", "/private/anything", {});
  await attempt("error_from_panic", "/panic", {});
  document.getElementById("results").textContent = JSON.stringify(results);
})();
</script></body></html>"#;

/// Serves the page on a free loopback port from a background thread; returns its origin.
fn serve_page() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            // Read the request head; the page server answers every request with the page.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    origin
}

fn config(allowed_origin: &str) -> String {
    format!(
        r#"
[server]
stack = ["rid"]

[middleware.rid]
kind = "request_id"

[middleware.cors_credentials]
kind = "cors"
allow_origins = ["{allowed_origin}"]
allow_methods = ["GET", "PUT"]
allow_headers = ["x-custom", "content-type"]
expose_headers = ["x-request-id"]
allow_credentials = true

[middleware.cors_plain]
kind = "cors"
allow_origins = ["{allowed_origin}"]

[middleware.auth]
kind = "basic_auth"
users = {{ alice = "$argon2id$v=19$m=19456,t=2,p=1$LLkVIMhQoh6WuT+JmOktrA$MLzwBru1zEjIK1UrLGtwGlyXmLnCg1cOwWR76SSFm08" }}

[[route]]
prefix = "/"
stack = ["cors_credentials"]
app = "echo"

[[route]]
prefix = "/plain"
stack = ["cors_plain"]
app = "echo"

[[route]]
prefix = "/private"
stack = ["cors_credentials", "auth"]
app = "echo"
"#
    )
}

fn chromium() -> &'static str {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which").arg(candidate).output().is_ok_and(|o| o.status.success()) {
            return candidate;
        }
    }
    panic!("this test needs headless Chromium: apt-get install -y chromium (.ci/run does)");
}

/// Loads the page from `page_origin` pointed at strata and returns what its script recorded.
fn run_page(page_origin: &str, strata: &Strata) -> HashMap<String, String> {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("{page_origin}/page.html?{}", strata.url(""));
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"results\">").map(|i| i + "<pre id=\"results\">".len());
    let json = start.and_then(|s| dom[s..].find("</pre>").map(|e| &dom[s..s + e])).unwrap_or("");
    serde_json::from_str(&json.replace("&quot;", "\"")).unwrap_or_else(|_| {
        panic!("no results in the page: {dom}\nchromium stderr: {}", String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn a_browser_sees_what_the_cors_config_allows_and_nothing_else() {
    let allowed = serve_page();
    let strata = Strata::start(Some(&config(&allowed)));

    let seen = run_page(&allowed, &strata);
    let expect =
        |name: &str, want: &str| assert_eq!(seen.get(name).map(String::as_str), Some(want), "{name}: {seen:?}");
    expect("simple", "status 200 id");
    expect("credentialed", "status 200 id");
    // `cors_plain` does not allow credentials: the browser refuses the response.
    expect("credentialed_without_permission", "blocked");
    expect("preflighted_put", "status 200 id");
    expect("preflight_with_unlisted_header", "blocked");
    // Errors made inside the CORS layer are readable by the page, request id included.
    expect("error_from_auth", "status 401 id");
    expect("error_from_panic", "status 500 id");

    let other = serve_page();
    let seen = run_page(&other, &strata);
    assert!(seen.values().all(|v| v == "blocked"), "another origin reads nothing: {seen:?}");
    assert_eq!(seen.len(), 7, "{seen:?}");
}
