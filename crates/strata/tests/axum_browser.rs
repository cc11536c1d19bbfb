//! strata's layers in an axum app, as a browser sees them: headless Chromium loads a page from one
//! loopback origin, and the page `fetch()`es an axum router on another port whose stack is strata's
//! `request_id`, `cors` and `rate_limit` (`Stack::into_tower_layer`). The rate limit is keyed on the
//! client's address, which axum's `ConnectInfo` gives and a small axum layer hands to strata as
//! `ConnectionInfo`.

#[allow(dead_code)]
#[path = "../../strata-gateway/tests/common/chromium.rs"]
mod chromium;

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::{HeaderName, HeaderValue, Method};
use strata::http::{ConnectionInfo, Stack};
use strata::middleware::rate_limit::{Quota, RateLimit};
use strata::middleware::{Cors, RequestId};

/// The page's fetches, in order. The rate limit admits three requests a minute per client: the
/// preflights are answered by `cors` (outside the limit) and the refused one never leaves the
/// browser, so `fourth` is the fourth request the limit counts.
const ATTEMPTS: [chromium::Attempt; 5] = [
    ("simple", "/hello", "{}"),
    ("preflighted_put", "/hello", r#"{ method: "PUT", headers: { "x-custom": "1" }, body: "{}" }"#),
    ("preflight_with_unlisted_header", "/hello", r#"{ method: "PUT", headers: { "x-forbidden": "1" } }"#),
    ("third", "/hello", "{}"),
    ("fourth", "/hello", "{}"),
];

/// Hands axum's peer address to strata, as `strata::serve` does for its own listeners: without it
/// a limit keyed on the client's address would put every client in one bucket.
async fn connection_info(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    req.extensions_mut().insert(ConnectionInfo::new(peer, local));
    next.run(req).await
}

/// Serves the axum app behind strata's layers on a free loopback port; `origin` may read it.
async fn start_app(origin: &str) -> SocketAddr {
    let cors = Cors::builder()
        .allow_origin(HeaderValue::from_str(origin).unwrap())
        .allow_methods([Method::GET, Method::PUT])
        .allow_headers([HeaderName::from_static("x-custom")])
        .expose_headers([HeaderName::from_static("x-request-id")])
        .build()
        .unwrap();
    let limit = RateLimit::builder().quota(Quota::per_minute(3).burst(3)).build().unwrap();
    // One order: the id on every response, CORS headers on the limit's 429s.
    let stack = Stack::new().with(RequestId::default()).with(cors).with(limit);
    assert!(stack.check().is_empty(), "{:?}", stack.check());
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello from axum" }).put(|| async { "stored" }))
        .layer(stack.into_tower_layer())
        .layer(axum::middleware::from_fn(connection_info));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_reads_what_cors_allows_and_the_limit_counts_each_client_apart() {
    let page = format!("http://{}", chromium::serve_page(chromium::fetch_page("", &ATTEMPTS)));
    let app = start_app(&page).await;
    let url = format!("{page}/page.html?http://{app}");
    let seen = tokio::task::spawn_blocking(move || chromium::run_page(&url, None)).await.unwrap();

    let expect =
        |name: &str, want: &str| assert_eq!(seen.get(name).map(String::as_str), Some(want), "{name}: {seen:?}");
    expect("simple", "status 200 id");
    expect("preflighted_put", "status 200 id");
    expect("preflight_with_unlisted_header", "blocked");
    expect("third", "status 200 id");
    // The limit's answer carries the CORS headers and the id: the page can read it.
    expect("fourth", "status 429 id");

    // Another client address has its own bucket; the browser's is still empty.
    let client = |from: [u8; 4]| reqwest::Client::builder().local_address(IpAddr::from(from)).build().unwrap();
    let other = client([127, 0, 0, 2]).get(format!("http://{app}/hello")).send().await.unwrap();
    assert_eq!(other.status(), 200);
    assert!(other.headers().contains_key("x-request-id"));
    let same = client([127, 0, 0, 1]).get(format!("http://{app}/hello")).send().await.unwrap();
    assert_eq!(same.status(), 429);
    assert!(same.headers().contains_key("retry-after"), "{:?}", same.headers());
}
