//! A real browser, no driver: headless Chromium loads a test page whose script `fetch()`es strata
//! and writes what it could read into `<pre id="results">` as JSON; Chromium prints the DOM once
//! its virtual clock has run out. `.ci/run` installs Debian's `chromium`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};

/// One `fetch()` a test page makes: the name it records the outcome under, the path (after the
/// origin the page is given in its query string), and the `fetch` options as a JavaScript object.
pub type Attempt = (&'static str, &'static str, &'static str);

/// A page whose script first runs `facts` (statements that may set keys of `results`), then makes
/// each of `attempts` in turn, recording `status N` (with ` id` when it can read `x-request-id`)
/// or `blocked` when `fetch()` rejects, and writes `results` into the DOM as JSON.
pub fn fetch_page(facts: &str, attempts: &[Attempt]) -> String {
    let attempts: String = attempts
        .iter()
        .map(|(name, path, options)| format!("  await attempt(\"{name}\", \"{path}\", {options});\n"))
        .collect();
    format!(
        r#"<!doctype html>
<html><body><pre id="results">pending</pre>
<script>
const base = decodeURIComponent(location.search.slice(1));
const results = {{}};
{facts}
async function attempt(name, path, options) {{
  try {{
    const res = await fetch(base + path, options);
    const id = res.headers.get("x-request-id");
    results[name] = "status " + res.status + (id ? " id" : "");
  }} catch (e) {{
    results[name] = "blocked";
  }}
}}
(async () => {{
{attempts}  document.getElementById("results").textContent = JSON.stringify(results);
}})();
</script></body></html>"#
    )
}

/// Serves `page` over plain HTTP on a free loopback port from a background thread, answering
/// every request (up to 50) with it; returns its address.
pub fn serve_page(page: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
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
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    addr
}

/// The API the browser tests' pages fetch: echo behind `request_id`, with a credentialed `cors`
/// layer allowing `allowed_origin` on `/`, a plain one (no credentials) on `/plain`, and basic
/// auth inside CORS on `/private`.
pub fn cors_api_config(allowed_origin: &str) -> String {
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

/// A headless Chromium command with its own throw-away profile (kept alive by the returned
/// directory), kept off the internet, whose virtual clock runs `budget_ms` before it prints or
/// captures the page.
fn headless(budget_ms: u32) -> (Command, tempfile::TempDir) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        // Without these Chromium keeps trying to reach the internet.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // `localhost` may resolve to ::1 first; strata listens on 127.0.0.1 only.
        "--host-resolver-rules=MAP localhost 127.0.0.1",
    ])
    // Without a budget the page is printed before its fetches finish.
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .stdin(Stdio::null());
    (cmd, profile)
}

/// Loads `url` in headless Chromium, trusting the certificate whose key hashes to `trusted_spki`
/// (none: only the system's roots); returns the printed DOM (empty when the page did not load)
/// and Chromium's log.
pub fn load(url: &str, trusted_spki: Option<&str>) -> (String, String) {
    let (mut cmd, _profile) = headless(10_000);
    cmd.arg("--dump-dom");
    if let Some(spki) = trusted_spki {
        cmd.arg(format!("--ignore-certificate-errors-spki-list={spki}"));
    }
    let out = cmd.arg(url).output().expect("run chromium");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Loads `url`, lets its scripts run for `budget_ms` of virtual time and returns the DOM then
/// (empty when the page did not load) and Chromium's log.
pub fn dump_dom(url: &str, budget_ms: u32) -> (String, String) {
    let (mut cmd, _profile) = headless(budget_ms);
    let out = cmd.arg("--dump-dom").arg(url).output().expect("run chromium");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Loads `url` in a `width`×`height` window, lets its scripts run for `budget_ms` of virtual
/// time and saves a PNG of the window to `png`; returns Chromium's log.
pub fn screenshot(url: &str, png: &std::path::Path, (width, height): (u32, u32), budget_ms: u32) -> String {
    let (mut cmd, _profile) = headless(budget_ms);
    let out = cmd
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        // Scrollbars would take part of the picture.
        .arg("--hide-scrollbars")
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the page's script recorded, if the page was loaded and its script ran.
pub fn recorded_results(dom: &str) -> Option<HashMap<String, String>> {
    let start = dom.find("<pre id=\"results\">")? + "<pre id=\"results\">".len();
    let json = &dom[start..start + dom[start..].find("</pre>")?];
    serde_json::from_str(&json.replace("&quot;", "\"")).ok()
}

/// Loads `url` (trusting `trusted_spki`, as [`load`]) and returns what the page's script
/// recorded; fails the test when it recorded nothing.
pub fn run_page(url: &str, trusted_spki: Option<&str>) -> HashMap<String, String> {
    let (dom, log) = load(url, trusted_spki);
    recorded_results(&dom).unwrap_or_else(|| panic!("no results in the page at {url}: {dom}\nchromium: {log}"))
}
