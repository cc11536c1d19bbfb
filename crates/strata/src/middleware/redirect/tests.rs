//! Rules, statuses, HTTPS, trailing slashes, the query, open-redirect and header-injection
//! attempts, and config errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::http::{GeneratedError, Service, Stack};
use crate::middleware::PathRule;
use crate::middleware::test_support::{body_text, header, request};

/// The layer in front of an app that counts its calls and answers 200.
fn service(redirect: Redirect) -> (Service, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = Stack::new().with(redirect).serve(move |_req: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { response::text(StatusCode::OK, "app") }
    });
    (svc, calls)
}

fn build(b: impl FnOnce(RedirectBuilder) -> RedirectBuilder) -> Redirect {
    b(Redirect::builder()).build().expect("a valid redirect")
}

/// The status and `Location` the layer answers `uri` with (over TLS, so no HTTPS redirect).
async fn location(redirect: &Service, uri: &str) -> (u16, Option<String>) {
    let req = secure(request("GET", uri, &[("host", "example.com")]), true);
    let res = redirect.call(req).await;
    (res.status().as_u16(), header(&res, header::LOCATION).map(str::to_string))
}

fn secure(mut req: Request, tls: bool) -> Request {
    let info = ConnectionInfo::new("127.0.0.1:50000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap());
    req.extensions_mut().insert(info.over_tls(tls));
    req
}

fn moved(at: u16, to: &str) -> (u16, Option<String>) {
    (at, Some(to.to_string()))
}

#[tokio::test]
async fn regex_rules_expand_their_groups_and_the_first_match_wins() {
    let (svc, calls) = service(build(|b| {
        b.rule(PathRule::regex(r"^/old/(?<slug>[a-z]+)/(\d+)$", "/new/$2/${slug}"))
            .rule(PathRule::regex("^/old/(.*)$", "/fallback/$1"))
    }));
    assert_eq!(location(&svc, "/old/post/42").await, moved(308, "/new/42/post"));
    assert_eq!(location(&svc, "/old/Post/42").await, moved(308, "/fallback/Post/42"));
    assert_eq!(location(&svc, "/elsewhere").await, (200, None));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "only the unmatched request reached the app");
}

#[tokio::test]
async fn prefix_rules_keep_the_rest_of_the_path() {
    let (svc, _) = service(build(|b| {
        b.rule(PathRule::prefix("/docs", "/manual")).rule(PathRule::prefix("/blog/", "https://blog.example.com/"))
    }));
    assert_eq!(location(&svc, "/docs").await, moved(308, "/manual"));
    assert_eq!(location(&svc, "/docs/a/b.html").await, moved(308, "/manual/a/b.html"));
    assert_eq!(location(&svc, "/docsify").await, (200, None));
    assert_eq!(location(&svc, "/blog/2024/x").await, moved(308, "https://blog.example.com/2024/x"));
}

#[tokio::test]
async fn the_query_is_kept_unless_the_target_has_one() {
    let (svc, _) =
        service(build(|b| b.rule(PathRule::regex("^/search/(.*)$", "/find?q=$1")).rule(PathRule::prefix("/a", "/b"))));
    assert_eq!(location(&svc, "/a/x?page=2&sort=up").await, moved(308, "/b/x?page=2&sort=up"));
    assert_eq!(location(&svc, "/search/rust?page=2").await, moved(308, "/find?q=rust"));
}

#[tokio::test]
async fn statuses_default_to_308_and_can_be_set_per_layer_and_per_rule() {
    let (svc, _) = service(build(|b| {
        b.status(StatusCode::MOVED_PERMANENTLY)
            .rule(PathRule::prefix("/a", "/b"))
            .rule_with_status(PathRule::prefix("/c", "/d"), StatusCode::TEMPORARY_REDIRECT)
    }));
    let res = svc.call(secure(request("GET", "/a", &[]), true)).await;
    assert_eq!(res.status(), StatusCode::MOVED_PERMANENTLY);
    assert!(res.extensions().get::<GeneratedError>().is_none(), "a redirect is not an error");
    let reason = res.extensions().get::<Refusal>().map(|r| r.reason.to_string());
    assert_eq!(reason.as_deref(), Some("redirected: rule 1 (`/a`)"));
    assert_eq!(body_text(res).await, "301 Moved Permanently\n");
    assert_eq!(location(&svc, "/c/x").await, moved(307, "/d/x"));
    let (svc, _) = service(build(|b| b.rule(PathRule::prefix("/a", "/b"))));
    assert_eq!(location(&svc, "/a").await, moved(308, "/b"));
}

#[tokio::test]
async fn plain_http_requests_go_to_https_on_the_requests_host() {
    let (svc, calls) = service(build(|b| b.https(true).rule(PathRule::prefix("/old", "/new"))));
    let plain = |uri: &str, host: &str| secure(request("GET", uri, &[("host", host)]), false);
    let res = svc.call(plain("/x/y?z=1", "example.com:8080")).await;
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&res, header::LOCATION), Some("https://example.com/x/y?z=1"));
    // A rule and the HTTPS redirect in one hop.
    let res = svc.call(plain("/old/a", "example.com")).await;
    assert_eq!(header(&res, header::LOCATION), Some("https://example.com/new/a"));
    let res = svc.call(plain("/", "[::1]:80")).await;
    assert_eq!(header(&res, header::LOCATION), Some("https://[::1]/"));
    // Over TLS, only the rules apply.
    assert_eq!(location(&svc, "/x").await, (200, None));
    assert_eq!(location(&svc, "/old/a").await, moved(308, "/new/a"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (svc, _) = service(build(|b| b.https(true).https_port(8443)));
    let res = svc.call(plain("/x", "example.com:8080")).await;
    assert_eq!(header(&res, header::LOCATION), Some("https://example.com:8443/x"));
    // HTTP/2 names the host in the URI; without a ConnectionInfo the URI's scheme says plain or TLS.
    let res = svc.call(request("GET", "http://example.com/x", &[])).await;
    assert_eq!(header(&res, header::LOCATION), Some("https://example.com:8443/x"));
    let res = svc.call(request("GET", "https://example.com/x", &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_plain_request_without_a_usable_host_is_refused_not_served() {
    let (svc, calls) = service(build(|b| b.https(true)));
    for host in [None, Some("user@evil.example"), Some("evil.example/x"), Some("")] {
        let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
        let res = svc.call(secure(request("GET", "/x", &headers), false)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{host:?}");
        assert!(res.extensions().get::<GeneratedError>().is_some());
        assert!(header(&res, header::LOCATION).is_none());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn trailing_slashes_are_added_or_removed() {
    let (svc, _) = service(build(|b| b.trailing_slash(TrailingSlash::Add)));
    assert_eq!(location(&svc, "/a/b?x=1").await, moved(308, "/a/b/?x=1"));
    assert_eq!(location(&svc, "/a/b/").await, (200, None));
    assert_eq!(location(&svc, "/app.js").await, (200, None), "a file keeps its name");
    assert_eq!(location(&svc, "/").await, (200, None));
    let (svc, _) = service(build(|b| b.trailing_slash(TrailingSlash::Remove)));
    assert_eq!(location(&svc, "/a/b/").await, moved(308, "/a/b"));
    assert_eq!(location(&svc, "/a//").await, moved(308, "/a"));
    assert_eq!(location(&svc, "/a").await, (200, None));
    assert_eq!(location(&svc, "/").await, (200, None), "the root keeps its slash");
    // A rule's target is as written: the policy applies when no rule matched.
    let (svc, _) = service(build(|b| b.trailing_slash(TrailingSlash::Add).rule(PathRule::prefix("/x", "/y"))));
    assert_eq!(location(&svc, "/x/z").await, moved(308, "/y/z"));
}

#[tokio::test]
async fn no_request_can_turn_the_location_into_another_host() {
    let (svc, _) = service(build(|b| {
        b.rule(PathRule::regex("^/go/(.*)$", "/$1"))
            .rule(PathRule::regex("^/to(.*)$", "https://new.example.com/$1"))
            .rule(PathRule::prefix("/p", "/"))
    }));
    for (path, expected) in [
        ("/go//evil.example/x", "/evil.example/x"),
        ("/go/%2F%2Fevil.example", "/%2F%2Fevil.example"),
        ("/go/%5Cevil.example", "/%5Cevil.example"),
        ("/go/https://evil.example", "/https://evil.example"),
        ("/p//evil.example", "/evil.example"),
        ("/to@evil.example/x", "https://new.example.com/@evil.example/x"),
        ("/to.evil.example", "https://new.example.com/.evil.example"),
    ] {
        let (status, location) = location(&svc, path).await;
        assert_eq!(status, 308, "{path}");
        assert_eq!(location.as_deref(), Some(expected), "{path}");
    }
    // A raw backslash (which the gateway's path policy refuses first) is merged too, if it gets here.
    let (status, location) = location(&svc, "/go/\\evil.example").await;
    assert_eq!((status, location.as_deref()), (308, Some("/evil.example")));
}

#[tokio::test]
async fn encoded_line_breaks_stay_encoded() {
    let (svc, _) = service(build(|b| b.rule(PathRule::regex("^/go/(.*)$", "/to/$1"))));
    let (status, location) = location(&svc, "/go/x%0d%0aSet-Cookie:%20a=1").await;
    assert_eq!(status, 308);
    assert_eq!(location.as_deref(), Some("/to/x%0d%0aSet-Cookie:%20a=1"));
    let e = Redirect::builder().rule(PathRule::prefix("/a", "/b\r\nSet-Cookie: a=1")).build().unwrap_err();
    assert_eq!(e.field, Some("rules"));
    assert!(e.message.contains("'\\r' is not allowed in a URI"), "{e}");
}

#[tokio::test]
async fn a_rule_that_maps_a_path_to_itself_lets_it_through() {
    let (svc, calls) = service(build(|b| b.rule(PathRule::regex("^/docs/?(.*)$", "/docs/$1"))));
    assert_eq!(location(&svc, "/docs").await, moved(308, "/docs/"));
    assert_eq!(location(&svc, "/docs/a?x=1").await, (200, None));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn facts_say_it_redirects_and_reads_the_connection_for_https() {
    let plain = build(|b| b.rule(PathRule::prefix("/a", "/b")));
    assert_eq!(plain.facts(), Facts::of(&[Fact::ShortCircuits, Fact::Redirects]));
    let https = build(|b| b.https(true));
    assert!(https.facts().has(Fact::ReadsClientAddress));
    assert_eq!(plain.kind(), "redirect");
}

#[test]
fn invalid_settings_name_their_key() {
    let err = |b: RedirectBuilder| b.build().unwrap_err();
    let e = err(Redirect::builder());
    assert_eq!(e.field, None);
    assert!(e.message.contains("would never redirect"), "{e}");
    let e = err(Redirect::builder().https(true).status(StatusCode::SEE_OTHER));
    assert_eq!(e.field, Some("status"));
    assert!(e.message.starts_with("`303`: expected 301, 302, 307 or 308"), "{e}");
    let e = err(Redirect::builder().rule_with_status(PathRule::prefix("/a", "/b"), StatusCode::OK));
    assert_eq!((e.field, e.message.starts_with("rule 1 (`/a`): `200`")), (Some("rules"), true), "{e}");
    assert_eq!(err(Redirect::builder().https_port(8443).trailing_slash(TrailingSlash::Add)).field, Some("https_port"));
    assert_eq!(err(Redirect::builder().https(true).https_port(0)).field, Some("https_port"));
    let e = err(Redirect::builder().rule(PathRule::prefix("/a", "/b")).rule(PathRule::regex("^/(", "/c")));
    assert!(e.message.starts_with("rule 2 (`^/(`): not a valid regex"), "{e}");
}

#[cfg(feature = "config")]
#[test]
fn the_config_table_maps_onto_the_builder() {
    use crate::middleware::{BuildContext, ConfigError};
    let parse = |text: &str| -> Result<Redirect, ConfigError> {
        let config: RedirectConfig = toml::from_str(text).map_err(|e| ConfigError::new(e.to_string()))?;
        Redirect::from_config(config, &BuildContext::default())
    };
    let redirect = parse(
        r#"
        status = 301
        https = true
        https_port = 8443
        trailing_slash = "remove"
        rules = [
          { regex = "^/old/(.*)$", to = "/new/$1" },
          { prefix = "/docs", to = "https://docs.example.com", status = 302 },
        ]
        "#,
    )
    .unwrap();
    assert_eq!(redirect.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(redirect.https, Some(Some(8443)));
    assert_eq!(redirect.trailing_slash, TrailingSlash::Remove);
    assert_eq!(redirect.rules[1].1, StatusCode::FOUND);
    let e = parse("rules = [{ regex = \"^/a\", prefix = \"/a\", to = \"/b\" }]").unwrap_err();
    assert_eq!(e, ConfigError::field("rules", "rule 1: expected exactly one of `regex` and `prefix`"));
    assert_eq!(parse("status = 1000\nhttps = true").unwrap_err().field, Some("status"));
    assert!(parse("trailing_slash = \"sometimes\"").unwrap_err().message.contains("unknown variant"));
    assert!(
        parse("rules = [{ prefix = \"/a\", to = \"/b\", code = 301 }]").unwrap_err().message.contains("unknown field")
    );
}
