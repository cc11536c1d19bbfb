//! Problem documents for panics and empty errors, the format `Accept` asks for, custom pages, kept
//! and stripped headers, the log line of a failure, and the configuration.

use super::accept::{NO_PREFERENCE, Preferences};
use super::*;
use crate::http::{Stack, response};
use crate::middleware::test_support::body_text;
use crate::stack::{Service, from_fn};
use std::sync::{Arc, Mutex};

fn request(accept: Option<&'static str>) -> Request {
    let mut builder = http::Request::builder().uri("/tasks/7?token=secret-query");
    if let Some(accept) = accept {
        builder = builder.header(header::ACCEPT, accept);
    }
    builder
        .header(header::AUTHORIZATION, "Bearer secret-header")
        .extension(AssignedRequestId(HeaderValue::from_static("req-42")))
        .body(Body::empty())
        .unwrap()
}

fn serve(errors: Errors, make: fn() -> Response) -> Service<Request, Response> {
    Stack::new().with(errors).serve(move |_req: Request| async move { make() })
}

fn content_type(res: &Response) -> &str {
    res.headers()[header::CONTENT_TYPE].to_str().unwrap()
}

fn panicking() -> Service<Request, Response> {
    Stack::new().with(Errors::default()).serve(|_req: Request| async move {
        if true {
            panic!("database password is hunter2");
        }
        Response::new(Body::empty())
    })
}

#[tokio::test]
async fn a_panicking_app_becomes_a_problem_document() {
    let res = panicking().call(request(Some("application/problem+json"))).await;
    assert_eq!(res.status(), 500);
    assert_eq!(content_type(&res), "application/problem+json");
    let length: usize = res.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
    let body = body_text(res).await;
    assert_eq!(length, body.len());
    assert!(!body.contains("hunter2") && !body.contains("panic"), "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        problem,
        serde_json::json!({
            "type": "about:blank",
            "title": "Internal Server Error",
            "status": 500,
            "detail": "The server encountered an error and could not complete the request.",
            "instance": "req-42",
        })
    );
}

#[tokio::test]
async fn a_panicking_inner_layer_is_formatted_too() {
    let service = Stack::new()
        .with(Errors::default())
        .with(from_fn(|_req: Request, _next: Next| async move {
            if true {
                panic!("layer secret");
            }
            Response::new(Body::empty())
        }))
        .serve(|_req: Request| async { Response::new("unreached".into()) });
    let res = service.call(request(Some("text/plain"))).await;
    assert_eq!(res.status(), 500);
    assert_eq!(content_type(&res), "text/plain; charset=utf-8");
    let body = body_text(res).await;
    assert_eq!(
        body,
        "500 Internal Server Error\n\nThe server encountered an error and could not complete the request.\n\nRequest id: req-42\n"
    );
}

#[tokio::test]
async fn the_body_follows_accept() {
    let cases = [
        (None, "text/plain; charset=utf-8"),
        (Some("*/*"), "text/plain; charset=utf-8"),
        (Some("text/plain"), "text/plain; charset=utf-8"),
        (Some("application/json"), "application/problem+json"),
        (Some("application/*"), "application/problem+json"),
        (Some("text/plain;q=0.5, application/problem+json"), "application/problem+json"),
        (Some("application/json;q=0.4, text/*;q=0.5"), "text/plain; charset=utf-8"),
        (Some("application/json;q=0, */*"), "text/plain; charset=utf-8"),
        (Some("text/plain;q=0, */*;q=0.1"), "application/problem+json"),
        (Some("text/*;q=0.9, text/plain;q=0.1, application/json;q=0.5"), "application/problem+json"),
        // Without an HTML page, a browser gets the best of what it allows.
        (Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"), "text/plain; charset=utf-8"),
        // Nothing acceptable: still an answer, in the default format.
        (Some("image/png"), "text/plain; charset=utf-8"),
        // Unparseable: as if absent.
        (Some("text/plain;q=2, application/json"), "text/plain; charset=utf-8"),
        (Some("garbage"), "text/plain; charset=utf-8"),
    ];
    for (accept, expected) in cases {
        let res = panicking().call(request(accept)).await;
        assert_eq!(content_type(&res), expected, "{accept:?}");
        assert_eq!(res.headers()[header::VARY], "accept");
    }
}

#[tokio::test]
async fn json_can_be_the_default_format() {
    let errors = Errors::builder().default_format(ErrorFormat::Json).build().unwrap();
    let service = serve(errors, || response::status(StatusCode::BAD_GATEWAY));
    for accept in [None, Some("*/*"), Some("image/png")] {
        let res = service.call(request(accept)).await;
        assert_eq!(content_type(&res), "application/problem+json", "{accept:?}");
    }
    let res = service.call(request(Some("text/plain"))).await;
    assert_eq!(content_type(&res), "text/plain; charset=utf-8");
}

#[tokio::test]
async fn an_app_made_error_body_is_left_alone() {
    let make = || {
        let mut res = response::json_error(StatusCode::INTERNAL_SERVER_ERROR, "tasks store unavailable");
        res.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"e1\""));
        res
    };
    let res = serve(Errors::default(), make).call(request(Some("text/plain"))).await;
    assert_eq!(res.status(), 500);
    assert_eq!(content_type(&res), "application/json");
    assert!(res.headers().get(header::VARY).is_none());
    assert_eq!(body_text(res).await, r#"{"error":"tasks store unavailable"}"#);

    let replacing = Errors::builder().replace_app_errors(true).build().unwrap();
    let res = serve(replacing, make).call(request(Some("text/plain"))).await;
    assert_eq!(content_type(&res), "text/plain; charset=utf-8");
    assert!(res.headers().get(header::ETAG).is_none(), "the validator described the old body");
    assert!(!body_text(res).await.contains("tasks store"));
}

#[tokio::test]
async fn empty_and_marked_errors_are_formatted_within_scope() {
    let res = serve(Errors::default(), || response::status(StatusCode::BAD_GATEWAY)).call(request(None)).await;
    assert_eq!(res.status(), 502);
    assert_eq!(
        body_text(res).await,
        "502 Bad Gateway\n\nThe server received an invalid response from an upstream server.\n\nRequest id: req-42\n"
    );

    // 4xx are the app's answers unless `statuses = "all"`.
    let not_found = || response::status(StatusCode::NOT_FOUND);
    let res = serve(Errors::default(), not_found).call(request(None)).await;
    assert_eq!(res.status(), 404);
    assert!(res.headers().get(header::CONTENT_TYPE).is_none());
    let all = Errors::builder().statuses(ErrorStatuses::All).build().unwrap();
    let res = serve(all.clone(), not_found).call(request(Some("application/json"))).await;
    assert_eq!(res.status(), 404);
    let problem: serde_json::Value = serde_json::from_str(&body_text(res).await).unwrap();
    assert_eq!(problem["title"], "Not Found");
    assert_eq!(problem["detail"], "The requested resource was not found.");

    // A marked response is replaced even with a body, and its safe detail is used.
    let marked = || {
        let mut res = response::text(StatusCode::TOO_MANY_REQUESTS, "rate limited: bucket 10.0.0.1");
        res.extensions_mut().insert(GeneratedError::with_detail("Slow down: 10 requests per second."));
        res
    };
    let res = serve(all, marked).call(request(Some("application/json"))).await;
    assert!(res.extensions().get::<GeneratedError>().is_none(), "the marker is consumed");
    let problem: serde_json::Value = serde_json::from_str(&body_text(res).await).unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["detail"], "Slow down: 10 requests per second.");

    // Successes are never touched.
    let res = serve(Errors::default(), || Response::new(Body::empty())).call(request(None)).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().is_empty());
}

#[tokio::test]
async fn safe_headers_from_inner_layers_are_kept() {
    let make = || {
        let mut res = response::status(StatusCode::SERVICE_UNAVAILABLE);
        let headers = res.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tasks\""));
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert("x-request-id", HeaderValue::from_static("req-42"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        res
    };
    let res = serve(Errors::default(), make).call(request(Some("application/json"))).await;
    let headers = res.headers();
    assert_eq!(headers[header::RETRY_AFTER], "30");
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"tasks\"");
    assert_eq!(headers["x-request-id"], "req-42");
    assert_eq!(headers[header::VARY], "Origin, accept");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    let length: usize = headers[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
    assert_eq!(length, body_text(res).await.len());
}

fn temp_page(name: &str, html: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, html).unwrap();
    path
}

async fn a_page_is_served_to_browsers_only(errors: Errors) {
    let service = serve(errors, || response::status(StatusCode::NOT_FOUND));
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let res = service.call(request(Some(browser))).await;
    assert_eq!(res.status(), 404);
    assert_eq!(content_type(&res), "text/html; charset=utf-8");
    assert_eq!(body_text(res).await, "<h1>Lost?</h1>");

    // Other clients still get their format; `*/*` goes to the default format, not the page.
    let res = service.call(request(Some("application/json"))).await;
    assert_eq!(content_type(&res), "application/problem+json");
    let res = service.call(request(Some("*/*"))).await;
    assert_eq!(content_type(&res), "text/plain; charset=utf-8");
}

#[tokio::test]
async fn custom_pages_are_served_to_browsers() {
    let all = || Errors::builder().statuses(ErrorStatuses::All);
    a_page_is_served_to_browsers_only(all().page(StatusCode::NOT_FOUND, "<h1>Lost?</h1>").build().unwrap()).await;
    let file = temp_page("builder-404.html", "<h1>Lost?</h1>");
    a_page_is_served_to_browsers_only(all().page_file(StatusCode::NOT_FOUND, file).build().unwrap()).await;
}

/// The builder rejects what the TOML table rejects, naming the same key.
#[test]
fn builder_page_mistakes_name_the_status_and_the_key() {
    let err = Errors::builder().page_file(StatusCode::SERVICE_UNAVAILABLE, "/no/such/page.html").build().unwrap_err();
    assert_eq!(err.field, Some("pages"));
    assert!(err.message.contains("503 Service Unavailable") && err.message.contains("page.html"), "{err}");

    let err = Errors::builder().page(StatusCode::NOT_FOUND, "<p>404</p>").build().unwrap_err();
    assert_eq!(err.field, Some("pages"));
    assert!(err.message.contains("404 Not Found") && err.message.contains("statuses = \"all\""), "{err}");
    for status in [StatusCode::OK, StatusCode::FOUND] {
        let err = Errors::builder().statuses(ErrorStatuses::All).page(status, "<p>x</p>").build().unwrap_err();
        assert_eq!(err.field, Some("pages"), "{status}");
        assert!(err.message.contains("only 4xx and 5xx"), "{err}");
    }
}

#[cfg(feature = "config")]
mod from_config {
    use super::*;
    use crate::middleware::BuildContext;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn custom_pages_are_read_relative_to_the_config() {
        let page = temp_page("404.html", "<h1>Lost?</h1>");
        let ctx = BuildContext { base_dir: page.parent().unwrap().to_path_buf(), ..Default::default() };
        let config: ErrorsConfig = toml::from_str("statuses = \"all\"\npages = { 404 = \"404.html\" }").unwrap();
        a_page_is_served_to_browsers_only(Errors::from_config(config, &ctx).unwrap()).await;
    }

    #[test]
    fn page_mistakes_name_the_status() {
        let ctx = BuildContext { base_dir: std::env::temp_dir(), ..Default::default() };
        let missing: ErrorsConfig = toml::from_str("pages = { 503 = \"no/such/page.html\" }").unwrap();
        let err = Errors::from_config(missing, &ctx).unwrap_err();
        assert_eq!(err.field, Some("pages"));
        assert!(err.message.contains("503 Service Unavailable") && err.message.contains("page.html"), "{err}");

        let page = temp_page("plain-404.html", "<p>404</p>");
        let out_of_scope = ErrorsConfig { pages: BTreeMap::from([("404".into(), page)]), ..Default::default() };
        let err = Errors::from_config(out_of_scope, &ctx).unwrap_err();
        assert_eq!(err.field, Some("pages"));
        assert!(err.message.contains("404 Not Found") && err.message.contains("statuses = \"all\""), "{err}");

        for key in ["200", "abc", "1000", "302"] {
            let config = ErrorsConfig { pages: BTreeMap::from([(key.into(), "x.html".into())]), ..Default::default() };
            let err = Errors::from_config(config, &ctx).unwrap_err();
            assert_eq!(err.field, Some("pages"));
            assert!(err.message.contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn config_reads_toml_and_rejects_unknown_fields() {
        let config: ErrorsConfig =
            toml::from_str("statuses = \"all\"\nreplace_app_errors = true\ndefault_format = \"json\"").unwrap();
        assert_eq!(config.statuses, ErrorStatuses::All);
        assert!(config.replace_app_errors);
        assert_eq!(config.default_format, ErrorFormat::Json);
        assert!(toml::from_str::<ErrorsConfig>("status = \"all\"").unwrap_err().to_string().contains("unknown field"));
        assert!(toml::from_str::<ErrorsConfig>("statuses = \"some\"").is_err());
    }
}

#[test]
fn accept_is_parsed_with_specificity_and_q_values() {
    let prefs = |s: &'static str| preferences(Some(&HeaderValue::from_static(s)));
    assert_eq!(prefs("text/plain;q=0.3, text/*;q=0.7, */*;q=0.1"), Preferences { json: 100, text: 300, html: 700 });
    assert_eq!(prefs("TEXT/HTML; level=1; q=0.5 ; ext=1"), Preferences { json: 0, text: 0, html: 500 });
    assert_eq!(prefs("application/json, application/problem+json;q=0.2"), Preferences { json: 1000, text: 0, html: 0 });
    assert_eq!(prefs("*/*;q=0"), Preferences { json: 0, text: 0, html: 0 });
    for unparseable in ["", "text", "*/plain", "text/plain;q=1.1", "text/plain;q", "text/pl ain"] {
        assert_eq!(prefs(unparseable), NO_PREFERENCE, "{unparseable}");
    }
    assert_eq!(preferences(None), NO_PREFERENCE);
}

/// Collects every event's level and fields.
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn failures_are_logged_with_id_status_method_and_path_only() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    tracing::subscriber::with_default(Capture(lines.clone()), || {
        // Another test thread may have registered the log call site while no subscriber was
        // listening, caching "never interested"; recompute now that this one listens. A thread
        // still registering it when the cache is rebuilt is missed by the rebuild (it computed its
        // interest before this subscriber existed), so a request that logged nothing is sent again
        // after another rebuild.
        for _ in 0..5 {
            tracing::callsite::rebuild_interest_cache();
            runtime.block_on(async {
                let service = serve(Errors::default(), || response::status(StatusCode::BAD_GATEWAY));
                service.call(request(None)).await;
            });
            if lines.lock().unwrap().iter().any(|l| l.contains("request failed")) {
                break;
            }
        }
    });
    let lines = lines.lock().unwrap();
    let failure = lines.iter().find(|l| l.contains("request failed")).expect("a failure log line");
    assert!(failure.starts_with("ERROR"), "{failure}");
    for expected in ["request_id=req-42", "status=502", "method=GET", "path=\"/tasks/7\""] {
        assert!(failure.contains(expected), "{expected} missing in {failure}");
    }
    assert!(!failure.contains("secret"), "headers and query stay out of logs: {failure}");
}

#[test]
fn the_layer_declares_its_kind_and_facts() {
    let errors = Errors::default();
    assert_eq!(errors.kind(), "errors");
    assert!(errors.facts().has(Fact::RecoversErrors));
    // It puts the request id in problem bodies, so `strata check` wants it inside `request_id`.
    assert!(errors.facts().has(Fact::ReadsRequestId));
}
