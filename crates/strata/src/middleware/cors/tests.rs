//! Origin matching, actual and preflight requests, credentials, mirroring, private-network
//! preflights, `Vary`, layers inside that short-circuit or panic, and config errors.

use super::*;
use crate::http::{Body, Service, Stack};
use crate::middleware::test_support::{header, request};
use crate::middleware::{ConfigError, MAX_DURATION};
use http::HeaderMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// An app that counts its calls and answers 200 "app".
fn service(cors: Cors) -> (Service, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = Stack::new().with(cors).serve(move |_req: Request| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            response::text(StatusCode::OK, "app")
        }
    });
    (svc, calls)
}

fn cors(build: impl FnOnce(CorsBuilder) -> CorsBuilder) -> Cors {
    build(Cors::builder()).build().expect("valid config")
}

fn o(origin: &'static str) -> HeaderValue {
    HeaderValue::from_static(origin)
}

fn h(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

fn get(origin: Option<&str>) -> Request {
    request("GET", "/api", origin.map(|o| ("origin", o)).as_slice())
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request {
    let mut b = http::Request::builder()
        .method(Method::OPTIONS)
        .uri("/api")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method);
    if let Some(h) = headers {
        b = b.header(header::ACCESS_CONTROL_REQUEST_HEADERS, h);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_preflight_says_why_it_was_answered() {
    let (svc, _) =
        service(cors(|b| b.allow_origin(o("https://app.example.com")).allow_methods([Method::GET, Method::PUT])));
    let reason = |res: &Response| res.extensions().get::<Refusal>().map(|r| r.reason.to_string()).unwrap_or_default();
    let res = svc.call(preflight("https://evil.example", "PUT", None)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(reason(&res), "preflight refused: origin https://evil.example not in allow_origins");
    let res = svc.call(preflight("https://app.example.com", "PUT", None)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(reason(&res), "preflight answered: origin and method allowed");
    let res = svc.call(preflight("https://app.example.com", "DELETE", None)).await;
    assert!(reason(&res).contains("method DELETE is not in allow_methods"), "{}", reason(&res));
    // Passed on: no reason, and nothing of it in the headers.
    let res = svc.call(get(Some("https://app.example.com"))).await;
    assert!(res.extensions().get::<Refusal>().is_none());
}

fn allowed(c: &Cors, origin: &str) -> bool {
    c.allows_origin(&HeaderValue::from_str(origin).unwrap())
}

#[test]
fn exact_origins_match_exactly() {
    let c = cors(|b| b.allow_origins(["https://app.example.com", "http://localhost:3000"].map(o)));
    assert!(allowed(&c, "https://app.example.com"));
    assert!(allowed(&c, "http://localhost:3000"));
    assert!(!allowed(&c, "http://app.example.com"), "scheme differs");
    assert!(!allowed(&c, "https://app.example.com:8443"), "port differs");
    assert!(!allowed(&c, "http://localhost:3001"));
    assert!(!allowed(&c, "https://app.example.com.evil.com"));
    assert!(!allowed(&c, "null"), "null only when listed");
}

#[test]
fn configured_default_ports_and_case_are_normalized() {
    let c = cors(|b| b.allow_origin(o("HTTPS://App.Example.com:443")));
    assert!(allowed(&c, "https://app.example.com"));
}

#[test]
fn subdomain_patterns_match_labels_under_the_domain_only() {
    let c = cors(|b| b.allow_origin(o("https://*.example.com")));
    assert!(allowed(&c, "https://a.example.com"));
    assert!(allowed(&c, "https://a.b.example.com"));
    assert!(!allowed(&c, "https://example.com"), "needs at least one label");
    assert!(!allowed(&c, "https://example.com.evil.com"), "evil suffix");
    assert!(!allowed(&c, "https://a.example.com.evil.com"), "evil suffix");
    assert!(!allowed(&c, "https://evilexample.com"), "no dot before the domain");
    assert!(!allowed(&c, "https://.example.com"), "empty label");
    assert!(!allowed(&c, "http://a.example.com"), "scheme differs");
    assert!(!allowed(&c, "https://a.example.com:8443"), "port differs");
    assert!(!allowed(&c, "https://a.example.com/"), "origins have no path");
    assert!(!allowed(&c, "null"));

    let with_port = cors(|b| b.allow_origin(o("http://*.local.test:8080")));
    assert!(allowed(&with_port, "http://api.local.test:8080"));
    assert!(!allowed(&with_port, "http://api.local.test"));
}

#[test]
fn null_origin_is_allowed_only_when_listed() {
    let c = cors(|b| b.allow_origins(["null", "https://a.example"].map(o)));
    assert!(allowed(&c, "null"));
}

#[tokio::test]
async fn wildcard_without_credentials_sends_a_literal_star_and_no_vary() {
    let (svc, _) = service(cors(|b| b.allow_any_origin().expose_headers([h("x-total")])));
    let res = svc.call(get(Some("https://anything.example"))).await;
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS), Some("x-total"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    assert_eq!(header(&res, header::VARY), None);
}

#[tokio::test]
async fn actual_request_from_allowed_origin_gets_its_origin_back_and_vary() {
    let (svc, calls) = service(cors(|b| {
        b.allow_origin(o("https://a.example")).allow_credentials(true).expose_headers([h("x-total")])
    }));
    let res = svc.call(get(Some("https://a.example"))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS), Some("x-total"));
    assert_eq!(header(&res, header::VARY), Some("origin"));
}

#[tokio::test]
async fn disallowed_and_missing_origins_get_no_cors_headers_but_vary() {
    let (svc, calls) = service(cors(|b| b.allow_origin(o("https://a.example"))));
    for origin in [Some("https://b.example"), None] {
        let res = svc.call(get(origin)).await;
        assert_eq!(res.status(), 200, "the app still answers: the browser does the blocking");
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert_eq!(header(&res, header::VARY), Some("origin"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn preflight_is_answered_without_reaching_the_app() {
    let c = cors(|b| {
        b.allow_origin(o("https://a.example"))
            .allow_methods([Method::GET, Method::PUT, Method::DELETE, Method::GET])
            .allow_headers([header::CONTENT_TYPE, h("x-api-key")])
            .max_age(Duration::from_secs(600))
    });
    let (svc, calls) = service(c);
    let res = svc.call(preflight("https://a.example", "PUT", Some("content-type"))).await;
    assert_eq!(res.status(), 204);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, PUT, DELETE"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("content-type, x-api-key"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_MAX_AGE), Some("600"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    assert_eq!(header(&res, header::VARY), Some("origin"));
    assert_eq!(header(&res, ALLOW_PRIVATE_NETWORK), None);
}

#[tokio::test]
async fn default_methods_are_get_head_post() {
    let (svc, _) = service(cors(|b| b.allow_origin(o("https://a.example"))));
    let res = svc.call(preflight("https://a.example", "POST", None)).await;
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, HEAD, POST"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), None);
}

#[tokio::test]
async fn disallowed_preflight_is_forbidden_without_cors_headers() {
    let (svc, calls) = service(cors(|b| b.allow_origin(o("https://a.example"))));
    let res = svc.call(preflight("https://evil.example", "PUT", None)).await;
    assert_eq!(res.status(), 403);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(res.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", res.headers());
    assert_eq!(header(&res, header::VARY), Some("origin"));
}

#[tokio::test]
async fn options_without_preflight_headers_reaches_the_app() {
    let (svc, calls) = service(cors(|b| b.allow_origin(o("https://a.example"))));
    let plain = http::Request::builder().method(Method::OPTIONS).uri("/api").body(Body::empty()).unwrap();
    assert_eq!(svc.call(plain).await.status(), 200);
    let origin_only = http::Request::builder()
        .method(Method::OPTIONS)
        .uri("/api")
        .header(header::ORIGIN, "https://a.example")
        .body(Body::empty())
        .unwrap();
    let res = svc.call(origin_only).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn credentials_on_preflight() {
    let (svc, _) = service(cors(|b| b.allow_origin(o("https://*.example.com")).allow_credentials(true)));
    let res = svc.call(preflight("https://app.example.com", "POST", None)).await;
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://app.example.com"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
}

#[tokio::test]
async fn mirrored_methods_and_headers_vary_on_the_request_headers() {
    let c = cors(|b| b.allow_origin(o("https://a.example")).mirror_request_methods().mirror_request_headers());
    let (svc, _) = service(c);
    let mut req = preflight("https://a.example", "PATCH", Some("x-one, authorization"));
    req.headers_mut().append(header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_static("x-two"));
    let res = svc.call(req).await;
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_METHODS), Some("PATCH"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("x-one, authorization, x-two"));
    assert_eq!(
        header(&res, header::VARY),
        Some("origin, access-control-request-method, access-control-request-headers")
    );

    // No headers requested: nothing to mirror.
    let res = svc.call(preflight("https://a.example", "GET", None)).await;
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), None);
}

#[tokio::test]
async fn mirrored_headers_work_with_credentials() {
    let c = cors(|b| b.allow_origin(o("https://a.example")).mirror_request_headers().allow_credentials(true));
    let (svc, _) = service(c);
    let res = svc.call(preflight("https://a.example", "GET", Some("authorization"))).await;
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("authorization"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
}

#[tokio::test]
async fn private_network_preflights() {
    let pna = |allow: bool| {
        let (svc, _) = service(cors(|b| b.allow_origin(o("https://a.example")).allow_private_network(allow)));
        let mut req = preflight("https://a.example", "GET", None);
        req.headers_mut().insert(REQUEST_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        svc.call(req)
    };
    let res = pna(true).await;
    assert_eq!(header(&res, ALLOW_PRIVATE_NETWORK), Some("true"));
    assert_eq!(header(&res, header::VARY), Some("origin, access-control-request-private-network"));
    assert_eq!(header(&pna(false).await, ALLOW_PRIVATE_NETWORK), None);

    // Allowed, but this preflight did not ask.
    let (svc, _) = service(cors(|b| b.allow_origin(o("https://a.example")).allow_private_network(true)));
    let res = svc.call(preflight("https://a.example", "GET", None)).await;
    assert_eq!(header(&res, ALLOW_PRIVATE_NETWORK), None);
}

#[test]
fn vary_is_merged_without_duplicates() {
    let merged = |existing: &[&str]| {
        let mut h = HeaderMap::new();
        for v in existing {
            h.append(header::VARY, HeaderValue::from_str(v).unwrap());
        }
        add_vary(&mut h, "origin");
        h.get_all(header::VARY).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(merged(&[]), ["origin"]);
    assert_eq!(merged(&["Accept-Encoding"]), ["Accept-Encoding, origin"]);
    assert_eq!(merged(&["accept-encoding", "cookie"]), ["accept-encoding, cookie, origin"]);
    assert_eq!(merged(&["Accept-Encoding, Origin"]), ["Accept-Encoding, Origin"], "already there");
    assert_eq!(merged(&["accept-encoding", " ORIGIN "]), ["accept-encoding", " ORIGIN "], "left alone");
    assert_eq!(merged(&["*"]), ["*"]);
    assert_eq!(merged(&["cookie, *"]), ["cookie, *"]);
    assert_eq!(merged(&[""]), ["origin"]);
}

#[tokio::test]
async fn vary_from_the_app_is_kept() {
    let svc = Stack::new().with(cors(|b| b.allow_origin(o("https://a.example")))).serve(|_req: Request| async {
        let mut res = response::text(StatusCode::OK, "app");
        res.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        res
    });
    let res = svc.call(get(Some("https://a.example"))).await;
    assert_eq!(header(&res, header::VARY), Some("Accept-Encoding, origin"));
}

#[tokio::test]
async fn inner_short_circuits_and_panics_still_get_cors_headers() {
    let c = cors(|b| b.allow_origin(o("https://a.example")).allow_credentials(true));
    let rejecting = Stack::new()
        .with(c.clone())
        .with(crate::from_fn(|_req: Request, _next: Next| async { response::text(StatusCode::UNAUTHORIZED, "no") }))
        .serve(|_req: Request| async { response::text(StatusCode::OK, "unreachable") });
    let res = rejecting.call(get(Some("https://a.example"))).await;
    assert_eq!(res.status(), 401);
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));

    let panicking = Stack::new().with(c).serve(|_req: Request| async {
        if true {
            panic!("the app broke");
        }
        response::status(StatusCode::OK)
    });
    let res = panicking.call(get(Some("https://a.example"))).await;
    assert_eq!(res.status(), 500);
    assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), Some("https://a.example"));
    assert_eq!(header(&res, header::VARY), Some("origin"));
}

#[tokio::test]
async fn an_inner_allow_origin_is_replaced_not_duplicated() {
    let svc = Stack::new().with(cors(|b| b.allow_origin(o("https://a.example")))).serve(|_req: Request| async {
        let mut res = response::status(StatusCode::OK);
        res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        res
    });
    let res = svc.call(get(Some("https://a.example"))).await;
    let values: Vec<_> = res.headers().get_all(header::ACCESS_CONTROL_ALLOW_ORIGIN).iter().collect();
    assert_eq!(values, ["https://a.example"]);
}

fn config_error(build: impl FnOnce(CorsBuilder) -> CorsBuilder) -> ConfigError {
    build(Cors::builder()).build().expect_err("an invalid config")
}

fn field(e: ConfigError) -> &'static str {
    e.field.unwrap()
}

const BAD_ORIGINS: [&str; 15] = [
    "https://a.example/",
    "https://a.example/path",
    "a.example",
    "https://",
    "https://a.example:0",
    "https://a.example:99999",
    "https://a.example:port",
    "https://user@a.example",
    "https://a..example",
    "https://a example",
    "https://*.com",
    "https://*.1.2.3",
    "https://a.*.example.com",
    "1http://a.example",
    "*",
];

#[test]
fn builder_errors_name_the_toml_key() {
    assert_eq!(field(config_error(|b| b)), "allow_origins");
    assert_eq!(field(config_error(|b| b.allow_any_origin().allow_credentials(true))), "allow_origins");
    assert_eq!(field(config_error(|b| b.allow_any_origin().allow_origin(o("https://a.example")))), "allow_origins");
    for bad in BAD_ORIGINS {
        let e = config_error(|b| b.allow_origin(HeaderValue::from_str(bad).unwrap()));
        assert_eq!(e.field, Some("allow_origins"), "{bad}");
        assert!(e.message.contains(bad), "{bad}: {e}");
    }
    let non_ascii = HeaderValue::from_bytes("https://é.example".as_bytes()).unwrap();
    assert_eq!(field(config_error(|b| b.allow_origin(non_ascii))), "allow_origins");
    assert_eq!(field(config_error(|b| b.allow_origin(o("https://a.example")).allow_methods([]))), "allow_methods");
    assert_eq!(
        field(config_error(|b| b.allow_origin(o("https://a.example")).expose_all_headers().allow_credentials(true))),
        "expose_headers"
    );
    let sub_second = config_error(|b| b.allow_origin(o("https://a.example")).max_age(Duration::from_millis(1500)));
    assert_eq!(
        (sub_second.field, sub_second.message.contains("whole seconds")),
        (Some("max_age"), true),
        "{sub_second}"
    );
    let too_long =
        config_error(|b| b.allow_origin(o("https://a.example")).max_age(MAX_DURATION + Duration::from_secs(1)));
    assert_eq!(field(too_long), "max_age");
    // The valid neighbours of those errors build.
    cors(|b| b.allow_origin(o("https://a.example")).expose_all_headers());
    cors(|b| b.allow_origin(o("https://a.example")).max_age(MAX_DURATION));
    cors(|b| b.allow_origin(o("http://[::1]:8080")).allow_origin(o("http://127.0.0.1:3000")));
    cors(|b| b.allow_origin(o("capacitor://localhost")));
}

#[test]
fn kind_and_facts() {
    let c = cors(|b| b.allow_any_origin());
    assert_eq!(Middleware::kind(&c), "cors");
    assert!(c.facts().has(Fact::AnswersPreflight) && c.facts().has(Fact::ShortCircuits));
}

#[cfg(feature = "config")]
mod from_config {
    use super::*;
    use crate::middleware::BuildContext;

    fn table(json: serde_json::Value) -> Result<Cors, ConfigError> {
        let config: CorsConfig = serde_json::from_value(json).expect("a well-typed table");
        Cors::from_config(config, &BuildContext::default())
    }

    fn table_error(json: serde_json::Value) -> ConfigError {
        table(json).expect_err("an invalid table")
    }

    #[test]
    fn reads_toml_shaped_data() {
        let config: CorsConfig = serde_json::from_value(serde_json::json!({
            "allow_origins": ["https://a.example", "https://*.b.example"],
            "allow_headers": "*",
            "max_age": "1m",
        }))
        .unwrap();
        assert_eq!(config.allow_methods, ["GET", "HEAD", "POST"]);
        assert_eq!(config.allow_headers, ["*"]);
        let c = Cors::from_config(config, &BuildContext::default()).unwrap();
        assert!(matches!(c.headers, Allowed::Mirror));
        assert_eq!(c.max_age, Some(HeaderValue::from_static("60")));
        let unknown =
            serde_json::from_value::<CorsConfig>(serde_json::json!({"allow_origins": "*", "allow_origin": "*"}));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[tokio::test]
    async fn strings_become_the_builders_typed_values() {
        let c = table(serde_json::json!({
            "allow_origins": "https://a.example",
            "allow_methods": ["GET", "put", "DELETE", "PURGE"],
            "allow_headers": ["Content-Type", " x-api-key "],
            "expose_headers": "X-Total",
            "max_age": "10m",
        }))
        .unwrap();
        let (svc, _) = service(c);
        let res = svc.call(preflight("https://a.example", "PUT", None)).await;
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, PUT, DELETE, PURGE"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_HEADERS), Some("content-type, x-api-key"));
        assert_eq!(header(&res, header::ACCESS_CONTROL_MAX_AGE), Some("600"));
        let res = svc.call(get(Some("https://a.example"))).await;
        assert_eq!(header(&res, header::ACCESS_CONTROL_EXPOSE_HEADERS), Some("x-total"));

        let mirrored =
            table(serde_json::json!({"allow_origins": "*", "allow_methods": "*", "expose_headers": "*"})).unwrap();
        assert!(matches!(mirrored.origins, AllowedOrigins::Any) && matches!(mirrored.methods, Allowed::Mirror));
        assert_eq!(mirrored.expose_headers, Some(HeaderValue::from_static("*")));
    }

    /// The table rejects what the builder rejects, with the same key; and the strings the builder
    /// never sees (a method or header name that does not parse, `"*"` mixed in) name their key too.
    #[test]
    fn errors_name_the_key() {
        use serde_json::json;
        let a = "https://a.example";
        assert_eq!(field(table_error(json!({"allow_origins": []}))), "allow_origins");
        assert_eq!(field(table_error(json!({"allow_origins": "*", "allow_credentials": true}))), "allow_origins");
        assert_eq!(field(table_error(json!({"allow_origins": ["*", a]}))), "allow_origins");
        for bad in BAD_ORIGINS.into_iter().filter(|b| *b != "*") {
            let e = table_error(json!({"allow_origins": bad}));
            assert_eq!(e.field, Some("allow_origins"), "{bad}");
            assert!(e.message.contains(bad), "{bad}: {e}");
        }
        assert_eq!(field(table_error(json!({"allow_origins": "https://é.example"}))), "allow_origins");
        assert_eq!(field(table_error(json!({"allow_origins": a, "allow_methods": ["GE T"]}))), "allow_methods");
        assert_eq!(field(table_error(json!({"allow_origins": a, "allow_methods": []}))), "allow_methods");
        assert_eq!(field(table_error(json!({"allow_origins": a, "allow_methods": ["*", "GET"]}))), "allow_methods");
        assert_eq!(field(table_error(json!({"allow_origins": a, "allow_headers": ["bad header"]}))), "allow_headers");
        assert_eq!(field(table_error(json!({"allow_origins": a, "allow_headers": ["*", "x"]}))), "allow_headers");
        assert_eq!(
            field(table_error(json!({"allow_origins": a, "expose_headers": ["x-ok", "bad header"]}))),
            "expose_headers"
        );
        assert_eq!(
            field(table_error(json!({"allow_origins": a, "expose_headers": "*", "allow_credentials": true}))),
            "expose_headers"
        );
        for bad in ["600", "10 parsecs", "1.5s", "8761h"] {
            let e = table_error(json!({"allow_origins": a, "max_age": bad}));
            assert_eq!(e.field, Some("max_age"), "{bad}: {e}");
        }
        let integer = serde_json::from_value::<CorsConfig>(json!({"allow_origins": a, "max_age": 600}));
        assert!(integer.is_err(), "the old integer form is a type error");
    }
}
