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

use common::chromium::{self, Attempt, load, recorded_results, run_page};
use common::tls::{Leaf, TestCa, write_leaf};
use common::{Strata, write_config};

/// Facts about the page itself: the scheme it was loaded over and the HTTP version that served it.
const PAGE_FACTS: &str = r#"results.protocol = location.protocol;
const navigation = performance.getEntriesByType("navigation")[0];
results.page_http_version = navigation ? navigation.nextHopProtocol : "unknown";"#;

/// The page's fetches.
const ATTEMPTS: [Attempt; 5] = [
    ("simple", "/anything", "{}"),
    ("credentialed", "/anything", r#"{ credentials: "include" }"#),
    ("credentialed_without_permission", "/plain/anything", r#"{ credentials: "include" }"#),
    ("preflight_with_unlisted_header", "/anything", r#"{ method: "PUT", headers: { "x-forbidden": "1" } }"#),
    ("error_from_auth", "/private/anything", "{}"),
];

/// A certificate for `localhost` and 127.0.0.1 from a new test CA.
fn localhost_cert() -> Leaf {
    TestCa::new().leaf("localhost", &["localhost", "127.0.0.1"], 30)
}

/// `strata serve` with a TLS listener serving `routes` (and any tables) with `cert`.
fn start_tls(cert: &Leaf, routes: &str) -> Strata {
    let text = format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"cert.pem\", key = \"cert.key\" }}]\n\n{routes}"
    );
    let config = write_config(&text);
    write_leaf(config.dir.path(), "cert", cert);
    Strata::start_tls(config)
}

/// `https://HOST:PORT` of the TLS listener of `strata`, under the name `host`.
fn origin(strata: &Strata, host: &str) -> String {
    format!("https://{host}:{}", strata.https_addr().port())
}

/// Strata in front of the page server: the page's origin.
fn start_site(cert: &Leaf) -> Strata {
    start_tls(
        cert,
        &format!(
            "[[route]]\nprefix = \"/\"\nupstream = \"http://{}\"\n",
            chromium::serve_page(chromium::fetch_page(PAGE_FACTS, &ATTEMPTS))
        ),
    )
}

#[test]
fn a_page_served_over_tls_reads_a_second_tls_origin_as_its_cors_config_allows() {
    let cert = localhost_cert();
    let site = start_site(&cert);
    let allowed = origin(&site, "localhost");
    let api = start_tls(&cert, &chromium::cors_api_config(&allowed));
    let api_origin = origin(&api, "localhost");

    let seen = run_page(&format!("{allowed}/page.html?{api_origin}"), Some(&cert.spki_sha256));
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
    let other = origin(&site, "127.0.0.1");
    let seen = run_page(&format!("{other}/page.html?{api_origin}"), Some(&cert.spki_sha256));
    assert_eq!(seen.get("protocol").map(String::as_str), Some("https:"), "{seen:?}");
    for (name, _, _) in ATTEMPTS {
        assert_eq!(seen.get(name).map(String::as_str), Some("blocked"), "another origin reads nothing: {seen:?}");
    }
}

#[test]
fn without_trusting_the_certificate_the_browser_does_not_load_the_page() {
    let cert = localhost_cert();
    let site = start_site(&cert);
    let url = format!("{}/page.html?unused", origin(&site, "localhost"));
    // The test CA is not a system root; trusting another key is not trusting this one.
    let other = localhost_cert();
    for trusted in [None, Some(other.spki_sha256.as_str())] {
        let (dom, log) = load(&url, trusted);
        assert!(recorded_results(&dom).is_none(), "the page's script must not run ({trusted:?}): {dom}");
        assert!(log.contains("ERR_CERT_AUTHORITY_INVALID"), "{trusted:?}: {log}");
    }
    // The same URL loads once the certificate's own key is trusted.
    assert_eq!(run_page(&url, Some(&cert.spki_sha256)).get("protocol").map(String::as_str), Some("https:"));
}
