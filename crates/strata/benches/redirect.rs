//! What the `redirect` and `rewrite` layers cost per request.
//!
//! | case | what one iteration does |
//! | --- | --- |
//! | `redirect/empty_stack` | one `GET /app/page?x=1` through an empty stack to a 200 endpoint |
//! | `redirect/pass` | the same through a `redirect` with 4 regex rules and 1 prefix rule, none matching |
//! | `redirect/regex_hit` | `GET /old/2024/post?x=1`: the third regex rule matches, a `308` with its `Location` is made |
//! | `redirect/prefix_hit` | `GET /docs/a/b`: the prefix rule (after the regexes) matches |
//! | `redirect/to_https` | `GET /app/page?x=1` over plain HTTP with `https = true`: a `308` to `https://example.com/…` |
//! | `rewrite/pass` | `GET /app/page?x=1` through a `rewrite` with the same rules, none matching |
//! | `rewrite/regex_hit` | `GET /old/2024/post?x=1`: rewritten, re-normalised, the URI rebuilt, the endpoint called |
//!
//! Run with `cargo bench -p strata-http --bench redirect`. Subtract `redirect/empty_stack` for the
//! layer's own cost.

use std::hint::black_box;

use criterion::Criterion;
use http::StatusCode;
use strata::http::{Body, ConnectionInfo, Request, Stack, response};
use strata::middleware::{PathRule, Redirect, Rewrite};

fn rules() -> Vec<PathRule> {
    vec![
        PathRule::regex(r"^/blog/(\d{4})/(\d{2})/(.*)$", "/posts/$1-$2-$3"),
        PathRule::regex(r"^/users/(?<id>\d+)/?$", "/people/${id}"),
        PathRule::regex(r"^/old/(\d+)/(.*)$", "/new/$2?year=$1"),
        PathRule::regex(r"^/(?:index|default)\.(?:html?|php)$", "/"),
        PathRule::prefix("/docs", "/manual"),
    ]
}

fn request(uri: &str, host: &str) -> Request {
    let mut req = http::Request::builder().uri(uri).header("host", host).body(Body::default()).unwrap();
    let info = ConnectionInfo::new("10.0.0.7:40000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap());
    req.extensions_mut().insert(info.over_tls(true));
    req
}

fn plain(uri: &str) -> Request {
    let mut req = request(uri, "example.com:8080");
    req.extensions_mut().get_mut::<ConnectionInfo>().unwrap().secure = false;
    req
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let endpoint = |_req: Request| async { response::text(StatusCode::OK, "ok") };

    let empty = Stack::new().serve(endpoint);
    c.bench_function("redirect/empty_stack", |b| {
        b.iter(|| rt.block_on(empty.call(request("/app/page?x=1", "example.com"))))
    });

    let redirect = rules().into_iter().fold(Redirect::builder(), |b, r| b.rule(r)).build().unwrap();
    let redirecting = Stack::new().with(redirect).serve(endpoint);
    let check = |uri: &str, status: u16, location: Option<&str>| {
        let res = rt.block_on(redirecting.call(request(uri, "example.com")));
        assert_eq!(res.status().as_u16(), status, "{uri}");
        assert_eq!(res.headers().get("location").map(|v| v.to_str().unwrap()), location, "{uri}");
    };
    check("/app/page?x=1", 200, None);
    check("/old/2024/post?x=1", 308, Some("/new/post?year=2024"));
    check("/docs/a/b", 308, Some("/manual/a/b"));
    for (name, uri) in [("pass", "/app/page?x=1"), ("regex_hit", "/old/2024/post?x=1"), ("prefix_hit", "/docs/a/b")] {
        c.bench_function(&format!("redirect/{name}"), |b| {
            b.iter(|| black_box(rt.block_on(redirecting.call(request(uri, "example.com")))))
        });
    }

    let to_https = Stack::new().with(Redirect::builder().https(true).build().unwrap()).serve(endpoint);
    let res = rt.block_on(to_https.call(plain("/app/page?x=1")));
    assert_eq!(res.headers()["location"], "https://example.com/app/page?x=1");
    c.bench_function("redirect/to_https", |b| b.iter(|| black_box(rt.block_on(to_https.call(plain("/app/page?x=1"))))));

    let rewrite = rules().into_iter().fold(Rewrite::builder(), |b, r| b.rule(r)).build().unwrap();
    let rewriting = Stack::new().with(rewrite).serve(|req: Request| async move {
        assert!(!req.uri().path().starts_with("/old/"), "the layer ran");
        response::text(StatusCode::OK, "ok")
    });
    for (name, uri) in [("pass", "/app/page?x=1"), ("regex_hit", "/old/2024/post?x=1")] {
        c.bench_function(&format!("rewrite/{name}"), |b| {
            b.iter(|| black_box(rt.block_on(rewriting.call(request(uri, "example.com")))))
        });
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
