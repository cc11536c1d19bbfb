//! What `security_headers` and `headers` cost per request: one request through
//! `Stack::new().with(X).serve(endpoint)`, next to the same request through the empty stack.
//!
//! | case | layer |
//! | --- | --- |
//! | `headers/empty_stack` | none: the baseline |
//! | `headers/security_preset` | `SecurityHeaders::default()` on a plain-HTTP request (3 headers; no HSTS) |
//! | `headers/security_preset_https` | the same on a TLS request (4 headers, HSTS included) |
//! | `headers/security_csp_nonce` | the preset plus a CSP with `{nonce}`: a nonce, an extension, a request header, a rendered policy |
//! | `headers/rules_fixed` | `headers` with 2 request and 3 response rules of fixed values |
//! | `headers/rules_placeholders` | `headers` with `{user}`, `{route}`, `{client_ip}` request rules and a `{method} {path}` response rule |
//!
//! Cost = t(case) − t(`headers/empty_stack`). Run with `cargo bench -p strata-http --bench headers`.

use std::hint::black_box;

use criterion::Criterion;
use http::{HeaderName, StatusCode, header};
use strata::http::{AuthenticatedUser, Body, ConnectionInfo, MatchedRoute, Request, Response, Stack, response};
use strata::middleware::{Headers, SecurityHeaders};

/// `GET /api/tasks` from a client, as the router hands it to a route with a user set.
fn request(tls: bool) -> Request {
    let mut req =
        http::Request::builder().uri("/api/tasks").header(header::HOST, "example.com").body(Body::default()).unwrap();
    let info = ConnectionInfo::new("10.0.0.7:40000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap()).over_tls(tls);
    req.extensions_mut().insert(info);
    req.extensions_mut().insert(MatchedRoute("/api".into()));
    req.extensions_mut().insert(AuthenticatedUser("alice".into()));
    req
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let endpoint = |_req: Request| async { response::text(StatusCode::OK, "ok") };
    let mut run = |name: &str, stack: Stack, tls: bool, check: fn(&Response) -> bool| {
        let service = stack.serve(endpoint);
        let res = rt.block_on(service.call(request(tls)));
        assert!(check(&res), "{name}: the layer took the intended path: {:?}", res.headers());
        c.bench_function(name, |b| b.iter(|| black_box(rt.block_on(service.call(request(tls))))));
    };
    run("headers/empty_stack", Stack::new(), false, |res| res.headers().len() == 1);
    run("headers/security_preset", Stack::new().with(SecurityHeaders::default()), false, |res| {
        res.headers().contains_key(header::X_FRAME_OPTIONS)
            && !res.headers().contains_key(header::STRICT_TRANSPORT_SECURITY)
    });
    run("headers/security_preset_https", Stack::new().with(SecurityHeaders::default()), true, |res| {
        res.headers().contains_key(header::STRICT_TRANSPORT_SECURITY)
    });
    let csp = SecurityHeaders::builder()
        .content_security_policy("default-src 'self'; script-src 'nonce-{nonce}'")
        .build()
        .unwrap();
    run("headers/security_csp_nonce", Stack::new().with(csp), false, |res| {
        res.headers().get(header::CONTENT_SECURITY_POLICY).is_some_and(|v| v.len() > 40)
    });
    let name = HeaderName::from_static;
    let fixed = Headers::builder()
        .request_set(name("x-via"), "strata")
        .request_remove(name("x-debug"))
        .response_set(name("x-served-by"), "strata")
        .response_append(header::CACHE_CONTROL, "no-store")
        .response_remove(header::SERVER)
        .build()
        .unwrap();
    run("headers/rules_fixed", Stack::new().with(fixed), false, |res| res.headers().contains_key("x-served-by"));
    let templated = Headers::builder()
        .request_set(name("x-forwarded-user"), "{user}")
        .request_set(name("x-route"), "{route}")
        .request_set(name("x-client"), "{client_ip}")
        .response_set(name("x-served-by"), "strata {method} {path}")
        .build()
        .unwrap();
    run("headers/rules_placeholders", Stack::new().with(templated), false, |res| {
        res.headers().get("x-served-by").is_some_and(|v| v == "strata GET /api/tasks")
    });
    c.final_summary();
}
