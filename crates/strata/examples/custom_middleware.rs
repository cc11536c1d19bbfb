//! Two ways to write a middleware, and what strata does with what they declare.
//!
//! - `from_fn`: a plain async function, for a one-off.
//! - A configured struct implementing [`Middleware`]: built once, shared by every request, with a
//!   kind and the facts it declares, which `Stack::check` (and `strata check`) turn into ordering
//!   diagnostics.
//!
//! ```text
//! cargo run -p strata-http --example custom_middleware
//! ```
//!
//! It builds a stack with a mistake in its order (the API-key check outside the access log, so
//! rejected requests are never logged), prints the diagnostic, then runs three requests through
//! the fixed stack.

use http::{HeaderName, HeaderValue, StatusCode};
use strata::http::{Body, Next, Request, Response, Stack, from_fn, response};
use strata::middleware::AccessLog;
use strata::{Fact, Facts, Middleware};

/// Rejects requests without the right `x-api-key` with a 401. Configured once, at build time.
struct ApiKey {
    header: HeaderName,
    expected: HeaderValue,
}

impl ApiKey {
    fn new(expected: &'static str) -> Self {
        ApiKey { header: HeaderName::from_static("x-api-key"), expected: HeaderValue::from_static(expected) }
    }
}

impl Middleware<Request, Response> for ApiKey {
    async fn handle(&self, req: Request, next: Next) -> Response {
        if req.headers().get(&self.header) != Some(&self.expected) {
            // Answers by itself: the layers inside never see this request.
            return response::json_error(StatusCode::UNAUTHORIZED, "a valid x-api-key header is required");
        }
        next.run(req).await
    }

    fn kind(&self) -> &'static str {
        "api_key"
    }

    /// It may answer without calling the layers inside it: the ordering rules use that.
    fn facts(&self) -> Facts {
        Facts::of(&[Fact::ShortCircuits])
    }
}

async fn app(req: Request) -> Response {
    Response::new(Body::from(format!("hello, {}\n", req.uri().path())))
}

#[tokio::main]
async fn main() {
    // A function middleware: the arguments' types come from `strata::http::from_fn`.
    let powered_by = from_fn(|req, next| async move {
        let mut res = next.run(req).await;
        res.headers_mut().insert("x-powered-by", HeaderValue::from_static("strata"));
        res
    });

    // The key check outside the access log: a rejected request would never be logged.
    let wrong = Stack::new().with_named("api_key", ApiKey::new("s3cret")).with_named("access_log", AccessLog::json());
    println!("checking the stack api_key → access_log:");
    for diagnostic in wrong.check() {
        println!("  {diagnostic}");
    }

    let stack = Stack::new()
        .with_named("access_log", AccessLog::json())
        .with_named("api_key", ApiKey::new("s3cret"))
        .with_named("powered_by", powered_by);
    println!("checking the stack access_log → api_key → powered_by: {} diagnostics", stack.check().len());
    let service = stack.serve(app);

    for key in [None, Some("wrong"), Some("s3cret")] {
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = "/tasks".parse().expect("a valid path");
        if let Some(key) = key {
            req.headers_mut().insert("x-api-key", HeaderValue::from_static(key));
        }
        let res = service.call(req).await;
        let status = res.status();
        let powered = res.headers().get("x-powered-by").cloned();
        let body = res
            .into_body()
            .collect_limited(1024)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        println!("key {key:?}: {status}, x-powered-by {powered:?}, body {body:?}");
    }
}
