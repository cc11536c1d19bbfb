//! CORS as a real browser enforces it: headless Chromium loads a page from one loopback origin, the
//! page `fetch()`es strata on another port, and writes what it could read into the DOM, which
//! Chromium prints once its virtual clock has run out. `.ci/run` installs Debian's `chromium`.

mod common;

use std::collections::HashMap;

use common::Strata;
use common::chromium::{self, Attempt};

/// The page's fetches.
const ATTEMPTS: [Attempt; 7] = [
    ("simple", "/anything", "{}"),
    ("credentialed", "/anything", r#"{ credentials: "include" }"#),
    ("credentialed_without_permission", "/plain/anything", r#"{ credentials: "include" }"#),
    ("preflighted_put", "/anything", r#"{ method: "PUT", headers: { "x-custom": "1" }, body: "{}" }"#),
    ("preflight_with_unlisted_header", "/anything", r#"{ method: "PUT", headers: { "x-forbidden": "1" } }"#),
    ("error_from_auth", "/private/anything", "{}"),
    ("error_from_panic", "/panic", "{}"),
];

/// Serves the page on a free loopback port; returns its origin.
fn page_origin() -> String {
    format!("http://{}", chromium::serve_page(chromium::fetch_page("", &ATTEMPTS)))
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
