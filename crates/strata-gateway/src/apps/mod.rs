//! The built-in apps a route can serve with `app = "NAME"`.
//!
//! - `tasks`: an in-memory JSON tasks API (`/tasks`, `/tasks/{id}`), for trying stacks against a
//!   realistic CRUD app.
//! - `echo`: a test app in the spirit of httpbin (`/anything`, `/status/{code}`, `/delay/{ms}`,
//!   `/bytes/{n}`, `/stream/{n}`, `/sse/{n}`, `/panic`), for exercising middlewares.
//!
//! Apps see paths relative to their mount point: the router strips the route's prefix, so an app
//! mounted at `/api` receives `/tasks/3` for `GET /api/tasks/3`. Every app answers an unknown path
//! with a 404 and a known path with the wrong method with a 405 carrying `Allow`, both with a JSON
//! body `{"error": "..."}`.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use strata::http::{Body, BodyError, Request, Response, response};

mod echo;
mod tasks;

/// A built-in app: its endpoint and what it declares about itself.
pub struct App {
    /// The name a route uses to mount it (`app = "tasks"`).
    pub name: &'static str,
    /// One line for `explain` and the docs.
    pub description: &'static str,
    /// What the app declares about itself, for the ordering rules (e.g. that it streams events).
    pub facts: strata::Facts,
    /// The app itself: the innermost endpoint of the route's stack.
    pub endpoint: Arc<dyn strata::Endpoint<Request, Response>>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The endpoint is an opaque trait object; the name says which one it is.
        f.debug_struct("App")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

/// The names of the built-in apps, for "did you mean" and docs.
pub const NAMES: &[&str] = &["tasks", "echo"];

/// A fresh instance of the named app (each call gets its own state) mounted at `/`, or `None`.
///
/// Two routes mounting `tasks` therefore hold two separate task lists.
pub fn by_name(name: &str) -> Option<App> {
    mounted(name, "/")
}

/// A fresh instance of the named app mounted under a route's `prefix` (`/api`, or `/`), or `None`.
///
/// The app still sees paths below the prefix; the prefix only serves to build links the client can
/// follow, such as the `Location` of a created task (`/api/tasks/1`).
pub fn mounted(name: &str, prefix: &str) -> Option<App> {
    match name {
        "tasks" => Some(tasks::app(prefix)),
        "echo" => Some(echo::app()),
        _ => None,
    }
}

/// The 404 every app gives for a path it does not serve.
fn not_found(path: &str) -> Response {
    response::json_error(StatusCode::NOT_FOUND, format!("no route for `{path}`"))
}

/// The 405 for a known path, with the `Allow` header clients need to recover.
fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> Response {
    let mut res = response::json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on `{path}`; allowed: {allow}"),
    );
    res.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// A request an app refuses: the status and the message of its JSON error body.
///
/// Helpers return this rather than a [`Response`], which is large enough that every `Result`
/// carrying one would be copied around at that size.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Rejection { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn into_response(self) -> Response {
        response::json_error(self.status, self.message)
    }
}

/// Reads a request body into memory, refusing one over `limit` bytes with a 413.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Rejection> {
    body.collect_limited(limit).await.map_err(|e| match e {
        BodyError::TooLarge { limit } => {
            Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes"))
        }
        // A client that stalled mid-body is told so (it may retry); one that went away or sent a
        // broken stream gets a 400: nothing it sent can be used.
        BodyError::Read(e) if strata::http::is_read_timeout(e.as_ref()) => {
            Rejection::new(StatusCode::REQUEST_TIMEOUT, format!("reading the request body timed out: {e}"))
        }
        BodyError::Read(e) => Rejection::bad_request(format!("reading the request body failed: {e}")),
    })
}

/// Parses a path segment made only of ASCII digits.
///
/// `str::parse` alone would also accept a leading `+`; a URL like `/tasks/+3` naming task 3 would
/// give one resource two addresses. `None` for anything else, including values that overflow.
fn parse_number(segment: &str) -> Option<u64> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::Fact;

    #[test]
    fn every_listed_name_builds_an_app_of_that_name() {
        for name in NAMES {
            let app = by_name(name).expect("listed app exists");
            assert_eq!(app.name, *name);
            assert!(!app.description.is_empty());
        }
        assert!(by_name("nope").is_none());
        assert!(by_name("Tasks").is_none());
    }

    #[test]
    fn echo_declares_that_it_streams_events_and_tasks_does_not() {
        assert!(by_name("echo").unwrap().facts.has(Fact::StreamsEvents));
        assert!(!by_name("tasks").unwrap().facts.has(Fact::StreamsEvents));
    }

    #[tokio::test]
    async fn each_instance_has_its_own_state() {
        let a = by_name("tasks").unwrap();
        let b = by_name("tasks").unwrap();
        let post = http::Request::post("/tasks").body(Body::from(r#"{"title":"only in a"}"#)).unwrap();
        assert_eq!(a.endpoint.call(post).await.status(), StatusCode::CREATED);
        let list = b.endpoint.call(http::Request::get("/tasks").body(Body::empty()).unwrap()).await;
        assert_eq!(list.into_body().collect_limited(1024).await.unwrap(), "[]");
    }

    #[test]
    fn numbers_are_plain_digits_only() {
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("0042"), Some(42));
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "+3", "-1", " 3", "3 ", "3.0", "abc", "18446744073709551616", "١"] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let res = method_not_allowed(&Method::DELETE, "/x", "GET, HEAD");
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
        let body = std::str::from_utf8(res.body().as_bytes().unwrap()).unwrap().to_string();
        assert!(body.contains("DELETE") && body.contains("GET, HEAD"), "{body}");
    }
}
