//! TLS termination and CORS as a real browser sees them: headless Chromium loads a page over
//! `https://` from one strata (the page origin, in front of a tiny in-test HTTP page server), and
//! the page `fetch()`es a second strata, another TLS origin with a `cors` layer, writing what it
//! could read into the DOM, which Chromium prints once its virtual clock has run out.
//!
//! One certificate (for `localhost` and 127.0.0.1, signed by a CA made here with rcgen) serves
//! both. Chromium does not know the CA: it is told to trust exactly that certificate's key with
//! `--ignore-certificate-errors-spki-list`, so any other certificate still fails. `.ci/run`
//! installs Debian's `chromium`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::{ConfigFile, write_config};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData, SanType};
use sha2::{Digest, Sha256};

const PAGE: &str = r#"<!doctype html>
<html><body><pre id="results">pending</pre>
<script>
const base = decodeURIComponent(location.search.slice(1));
const results = { protocol: location.protocol };
const navigation = performance.getEntriesByType("navigation")[0];
results.page_http_version = navigation ? navigation.nextHopProtocol : "unknown";
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
  await attempt("preflight_with_unlisted_header", "/anything", { method: "PUT", headers: { "x-forbidden": "1" } });
  await attempt("error_from_auth", "/private/anything", {});
  document.getElementById("results").textContent = JSON.stringify(results);
})();
</script></body></html>"#;

/// The fetches the page makes (the other keys are facts about the page itself).
const FETCHES: [&str; 5] =
    ["simple", "credentialed", "credentialed_without_permission", "preflight_with_unlisted_header", "error_from_auth"];

/// A CA-signed certificate for `localhost` and 127.0.0.1, as PEM, with the base64 SHA-256 of its
/// SubjectPublicKeyInfo (the form `--ignore-certificate-errors-spki-list` takes).
struct TestCert {
    cert: String,
    key: String,
    spki_sha256: String,
}

impl TestCert {
    fn new() -> TestCert {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "strata browser test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();
        let spki_sha256 =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(key.subject_public_key_info()));
        TestCert { cert: cert.pem(), key: key.serialize_pem(), spki_sha256 }
    }
}

/// A running `strata serve` with a TLS listener; killed on drop.
struct TlsStrata {
    child: Child,
    https: SocketAddr,
    _config: ConfigFile,
}

impl TlsStrata {
    /// Serves `routes` (and any tables) with `[server.tls]` using `cert`, on free loopback ports.
    fn start(cert: &TestCert, routes: &str) -> TlsStrata {
        let text = format!(
            "[server.tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"cert.pem\", key = \"key.pem\" }}]\n\n{routes}"
        );
        let config = write_config(&text);
        std::fs::write(config.dir.path().join("cert.pem"), &cert.cert).unwrap();
        std::fs::write(config.dir.path().join("key.pem"), &cert.key).unwrap();
        let stderr_path = config.dir.path().join("stderr.log");
        let mut child = Command::new(common::strata_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--config"])
            .arg(&config.path)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn strata serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("strata listening on https://") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let https = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("TLS listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!("strata did not start: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default());
            }
        };
        TlsStrata { child, https, _config: config }
    }

    /// `https://HOST:PORT` of the TLS listener, under the name `host`.
    fn origin(&self, host: &str) -> String {
        format!("https://{host}:{}", self.https.port())
    }
}

impl Drop for TlsStrata {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves the page over plain HTTP on a free loopback port from a background thread, for strata
/// to proxy; returns its address.
fn serve_page() -> SocketAddr {
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
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    addr
}

/// The API origin's routes: echo behind `request_id`, with a credentialed `cors` layer allowing
/// `allowed_origin`, a plain one (no credentials), and basic auth inside CORS on `/private`.
fn api_routes(allowed_origin: &str) -> String {
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

/// Loads `url` in headless Chromium, trusting the certificate whose key hashes to `trusted_spki`
/// (none: only the system's roots); returns the printed DOM (empty when the page did not load)
/// and Chromium's log.
fn load(url: &str, trusted_spki: Option<&str>) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // `localhost` may resolve to ::1 first; strata listens on 127.0.0.1 only.
        "--host-resolver-rules=MAP localhost 127.0.0.1",
        "--virtual-time-budget=10000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    if let Some(spki) = trusted_spki {
        cmd.arg(format!("--ignore-certificate-errors-spki-list={spki}"));
    }
    let out = cmd.arg(url).stdin(Stdio::null()).output().expect("run chromium");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Loads `url` trusting `trusted_spki` and returns what the page's script recorded.
fn run_page(url: &str, trusted_spki: &str) -> HashMap<String, String> {
    let (dom, log) = load(url, Some(trusted_spki));
    results(&dom).unwrap_or_else(|| panic!("no results in the page at {url}: {dom}\nchromium: {log}"))
}

/// What the page's script recorded, if the page was loaded and its script ran.
fn results(dom: &str) -> Option<HashMap<String, String>> {
    let start = dom.find("<pre id=\"results\">")? + "<pre id=\"results\">".len();
    let json = &dom[start..start + dom[start..].find("</pre>")?];
    serde_json::from_str(&json.replace("&quot;", "\"")).ok()
}

#[test]
fn a_page_served_over_tls_reads_a_second_tls_origin_as_its_cors_config_allows() {
    let cert = TestCert::new();
    let page = serve_page();
    // The page origin: strata in front of the page server.
    let site = TlsStrata::start(&cert, &format!("[[route]]\nprefix = \"/\"\nupstream = \"http://{page}\"\n"));
    let allowed = site.origin("localhost");
    let api = TlsStrata::start(&cert, &api_routes(&allowed));
    let api_origin = api.origin("localhost");

    let seen = run_page(&format!("{allowed}/page.html?{api_origin}"), &cert.spki_sha256);
    let expect =
        |name: &str, want: &str| assert_eq!(seen.get(name).map(String::as_str), Some(want), "{name}: {seen:?}");
    expect("protocol", "https:");
    // ALPN: the browser and strata agreed on HTTP/2 for the page.
    expect("page_http_version", "h2");
    expect("simple", "status 200 id");
    expect("credentialed", "status 200 id");
    // `cors_plain` does not allow credentials: the browser refuses the response.
    expect("credentialed_without_permission", "blocked");
    expect("preflight_with_unlisted_header", "blocked");
    // The 401 is made inside the CORS layer, so the page can read it, request id included.
    expect("error_from_auth", "status 401 id");

    // The same page from another origin (same server, named by its address): loaded over TLS
    // too, and every fetch is refused by the browser.
    let other = site.origin("127.0.0.1");
    let seen = run_page(&format!("{other}/page.html?{api_origin}"), &cert.spki_sha256);
    assert_eq!(seen.get("protocol").map(String::as_str), Some("https:"), "{seen:?}");
    for name in FETCHES {
        assert_eq!(seen.get(name).map(String::as_str), Some("blocked"), "another origin reads nothing: {seen:?}");
    }
}

#[test]
fn without_trusting_the_certificate_the_browser_does_not_load_the_page() {
    let cert = TestCert::new();
    let page = serve_page();
    let site = TlsStrata::start(&cert, &format!("[[route]]\nprefix = \"/\"\nupstream = \"http://{page}\"\n"));
    let url = format!("{}/page.html?unused", site.origin("localhost"));
    // The test CA is not a system root; trusting another key is not trusting this one.
    let other = TestCert::new();
    for trusted in [None, Some(other.spki_sha256.as_str())] {
        let (dom, log) = load(&url, trusted);
        assert!(results(&dom).is_none(), "the page's script must not run ({trusted:?}): {dom}");
        assert!(log.contains("ERR_CERT_AUTHORITY_INVALID"), "{trusted:?}: {log}");
    }
    // The same URL loads once the certificate's own key is trusted.
    assert_eq!(run_page(&url, &cert.spki_sha256).get("protocol").map(String::as_str), Some("https:"));
}
