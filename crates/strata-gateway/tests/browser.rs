//! CORS as a real browser enforces it: headless Chromium loads a page from one loopback origin, the
//! page `fetch()`es strata on another port, and writes what it could read into the DOM, which
//! Chromium prints once its virtual clock has run out. `.ci/run` installs Debian's `chromium`.

mod common;

use std::collections::HashMap;

use common::{Strata, chromium};

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

/// Serves the page on a free loopback port; returns its origin.
fn page_origin() -> String {
    format!("http://{}", chromium::serve_page(PAGE))
}

/// Loads the page from `page_origin` pointed at strata and returns what its script recorded.
fn run_page(page_origin: &str, strata: &Strata) -> HashMap<String, String> {
    chromium::run_page(&format!("{page_origin}/page.html?{}", strata.url("")), None)
}

#[test]
fn a_browser_sees_what_the_cors_config_allows_and_nothing_else() {
    let allowed = page_origin();
    let strata = Strata::start(Some(&chromium::cors_api_config(&allowed)));

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

    let other = page_origin();
    let seen = run_page(&other, &strata);
    assert!(seen.values().all(|v| v == "blocked"), "another origin reads nothing: {seen:?}");
    assert_eq!(seen.len(), 7, "{seen:?}");
}
