//! `errors`: makes failures inside it clean and consistent.
//!
//! ```
//! use http::StatusCode;
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::errors::{ErrorFormat, ErrorStatuses, Errors};
//!
//! let errors = Errors::builder()
//!     .statuses(ErrorStatuses::All)
//!     .default_format(ErrorFormat::Json)
//!     .page(StatusCode::NOT_FOUND, "<h1>Nothing here</h1>")
//!     .build()?;
//! let service = Stack::new()
//!     .with(errors) // outermost: every failure inside it comes out clean
//!     .serve(|_req: Request| async { Response::new("hello".into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! A panic anywhere inside this layer, and every error response strata itself produced inside it
//! (a bare 500 after a panic, an empty 502, a response marked with [`GeneratedError`]), leaves as
//! one well-formed body the client asked for: `application/problem+json` (RFC 9457), `text/plain`,
//! or a configured HTML page. Error bodies the application wrote itself are left alone unless
//! `replace_app_errors = true`. The body never carries a panic message, stack trace or any other
//! internal detail; the failure is logged with the request id, status, method and path.
//!
//! The same in the gateway's TOML, with the page read from a file beside the config:
//!
//! ```toml
//! [middleware.errors]
//! kind = "errors"
//! statuses = "all"
//! default_format = "json"
//! pages = { 404 = "errors/404.html" }
//! ```
//!
//! See `docs/middleware/errors.md` for every option and rule.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_body::Body as _;

use crate::check::{Fact, Facts};
use crate::http::headers::add_vary;
use crate::http::{AssignedRequestId, Body, Next, Request, Response};
use crate::stack::Middleware;

mod accept;
mod builder;
#[cfg(feature = "config")]
mod config;
#[cfg(test)]
mod tests;

use accept::{Format, choose_format, preferences};
pub use builder::ErrorsBuilder;
use builder::scope_contains;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::ErrorsConfig;

/// Which error statuses `errors` formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum ErrorStatuses {
    /// 5xx only (`"server"`): failures of the server, never the answers an app gives on purpose.
    #[default]
    Server,
    /// 4xx and 5xx (`"all"`): also rejections such as an empty 404 from a router or a marked 429.
    All,
}

/// The body format used when the client's `Accept` has no preference between JSON and text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize), serde(rename_all = "lowercase"))]
pub enum ErrorFormat {
    /// `text/plain; charset=utf-8` (`"text"`).
    #[default]
    Text,
    /// `application/problem+json` (`"json"`).
    Json,
}

pub use crate::http::GeneratedError;

/// The `errors` middleware. Build it with [`Errors::builder`], or take [`Errors::default`] (5xx
/// only, text unless JSON is preferred, no pages).
///
/// ```
/// use strata::http::{Request, Response, Stack};
/// use strata::middleware::Errors;
///
/// let service = Stack::new()
///     .with(Errors::default()) // outermost: every failure inside it comes out clean
///     .serve(|_req: Request| async { Response::new("hello".into()) });
/// # let _ = service;
/// ```
#[derive(Clone, Debug)]
pub struct Errors {
    statuses: ErrorStatuses,
    replace_app_errors: bool,
    default_format: ErrorFormat,
    pages: HashMap<StatusCode, Bytes>,
}

impl Errors {
    /// Starts an [`ErrorsBuilder`] with the defaults.
    pub fn builder() -> ErrorsBuilder {
        ErrorsBuilder::default()
    }

    fn in_scope(&self, status: StatusCode) -> bool {
        scope_contains(self.statuses, status)
    }

    /// Whether the response is an error strata made (a panic's 500 is marked by the core), as
    /// opposed to one the application wrote.
    fn made_by_strata(&self, res: &Response) -> bool {
        res.extensions().get::<GeneratedError>().is_some() || res.body().size_hint().exact() == Some(0)
    }

    /// Formats (or leaves alone) the response that came back from inside this layer.
    fn finish(&self, res: Response, seen: &Seen) -> Response {
        let status = res.status();
        if !self.in_scope(status) {
            return res;
        }
        let rewrite = self.replace_app_errors || self.made_by_strata(&res);
        let request_id = seen.request_id();
        if status.is_server_error() {
            tracing::error!(
                request_id = request_id.map(tracing::field::display),
                status = status.as_u16(),
                method = %seen.method,
                path = seen.uri.path(),
                rewritten = rewrite,
                "request failed"
            );
        } else {
            tracing::debug!(
                request_id = request_id.map(tracing::field::display),
                status = status.as_u16(),
                method = %seen.method,
                path = seen.uri.path(),
                rewritten = rewrite,
                "request rejected"
            );
        }
        if !rewrite { res } else { self.render(res, seen) }
    }

    fn render(&self, res: Response, seen: &Seen) -> Response {
        let (mut parts, _discarded) = res.into_parts();
        let status = parts.status;
        let marker = parts.extensions.remove::<GeneratedError>();
        let page = self.pages.get(&status);
        let format = choose_format(&preferences(seen.accept.as_ref()), self.default_format, page.is_some());
        let title = title(status);
        let detail = marker.and_then(|m| m.detail()).unwrap_or_else(|| generic_detail(status));
        let request_id = seen.request_id();

        let (content_type, body): (&'static str, Bytes) = match (format, page) {
            (Format::Html, Some(page)) => ("text/html; charset=utf-8", page.clone()),
            (Format::Json, _) | (Format::Html, None) => {
                let problem =
                    Problem { kind: "about:blank", title, status: status.as_u16(), detail, instance: request_id };
                match serde_json::to_vec(&problem) {
                    Ok(json) => ("application/problem+json", json.into()),
                    // Plain strings and a number always serialize; text is the safe fallback.
                    Err(_) => ("text/plain; charset=utf-8", plain_text(status, title, detail, request_id)),
                }
            }
            (Format::Text, _) => ("text/plain; charset=utf-8", plain_text(status, title, detail, request_id)),
        };

        strip_body_headers(&mut parts.headers);
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        // The body now depends on Accept, so caches must key on it.
        add_vary(&mut parts.headers, "accept");
        Response::from_parts(parts, Body::from(body))
    }
}

impl Default for Errors {
    /// 5xx only, text unless the client prefers JSON, app-written bodies kept, no pages.
    fn default() -> Self {
        Errors {
            statuses: ErrorStatuses::default(),
            replace_app_errors: false,
            default_format: ErrorFormat::default(),
            pages: HashMap::new(),
        }
    }
}

/// What `errors` keeps of the request to describe a failure (the request itself moves inward).
/// Every field is a cheap clone: `Uri`, `Method` and header values share their bytes.
struct Seen {
    method: Method,
    uri: Uri,
    request_id: Option<HeaderValue>,
    accept: Option<HeaderValue>,
}

impl Seen {
    fn of(req: &Request) -> Self {
        let mut lines = req.headers().get_all(header::ACCEPT).iter();
        let accept = match (lines.next(), lines.next()) {
            (None, _) => None,
            (Some(one), None) => Some(one.clone()),
            // Several Accept lines are one list (RFC 9110 §5.3); joining them is rare, so it may allocate.
            (Some(_), Some(_)) => {
                let joined: Vec<&[u8]> = req.headers().get_all(header::ACCEPT).iter().map(|v| v.as_bytes()).collect();
                HeaderValue::from_bytes(&joined.join(&b", "[..])).ok()
            }
        };
        Seen {
            method: req.method().clone(),
            uri: req.uri().clone(),
            request_id: req.extensions().get::<AssignedRequestId>().map(|id| id.0.clone()),
            accept,
        }
    }

    fn request_id(&self) -> Option<&str> {
        self.request_id.as_ref().and_then(|id| id.to_str().ok())
    }
}

impl Middleware<Request, Response> for Errors {
    async fn handle(&self, req: Request, next: Next) -> Response {
        let seen = Seen::of(&req);
        // A panic inside is already a 500 marked `GeneratedError` when it gets here: `Next::run`
        // catches it at the panicking layer's boundary (see `FromPanic for Response`).
        let res = next.run(req).await;
        self.finish(res, &seen)
    }

    fn kind(&self) -> &'static str {
        "errors"
    }

    fn facts(&self) -> Facts {
        Facts::of(&[Fact::RecoversErrors, Fact::ReadsRequestId])
    }
}

/// RFC 9457 problem details. Every field is fixed text or the request id: nothing from the failure.
struct Problem<'a> {
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'static str,
    instance: Option<&'a str>,
}

/// Written out rather than derived, so that the core needs no proc-macro crates.
impl serde_core::Serialize for Problem<'_> {
    fn serialize<S: serde_core::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde_core::ser::SerializeStruct;
        let mut problem = serializer.serialize_struct("Problem", 4 + usize::from(self.instance.is_some()))?;
        problem.serialize_field("type", self.kind)?;
        problem.serialize_field("title", self.title)?;
        problem.serialize_field("status", &self.status)?;
        problem.serialize_field("detail", self.detail)?;
        if let Some(instance) = self.instance {
            problem.serialize_field("instance", instance)?;
        }
        problem.end()
    }
}

fn plain_text(status: StatusCode, title: &str, detail: &str, request_id: Option<&str>) -> Bytes {
    let mut text = format!("{} {title}\n\n{detail}\n", status.as_u16());
    if let Some(id) = request_id {
        text.push_str("\nRequest id: ");
        text.push_str(id);
        text.push('\n');
    }
    text.into()
}

fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or(if status.is_server_error() { "Server Error" } else { "Client Error" })
}

/// A fixed sentence per status: safe to show anyone, says nothing about the cause.
fn generic_detail(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request could not be understood.",
        401 => "Authentication is required to access this resource.",
        403 => "You do not have permission to access this resource.",
        404 => "The requested resource was not found.",
        405 => "The request method is not allowed for this resource.",
        408 => "The server timed out waiting for the request.",
        413 => "The request body is too large.",
        415 => "The request body's media type is not supported.",
        429 => "Too many requests. Please try again later.",
        502 => "The server received an invalid response from an upstream server.",
        503 => "The service is temporarily unavailable. Please try again later.",
        504 => "An upstream server did not respond in time.",
        _ if status.is_client_error() => "The request could not be processed.",
        _ => "The server encountered an error and could not complete the request.",
    }
}

/// Headers that describe the body being replaced. Everything else the inner layers set
/// (`retry-after`, `www-authenticate`, `allow`, `cache-control`, CORS, `set-cookie`…) describes the
/// response and is kept.
fn strip_body_headers(headers: &mut HeaderMap) {
    const BODY_HEADERS: [HeaderName; 11] = [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::CONTENT_LANGUAGE,
        header::CONTENT_LOCATION,
        header::CONTENT_DISPOSITION,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
        header::TRANSFER_ENCODING,
    ];
    for name in &BODY_HEADERS {
        headers.remove(name);
    }
    for name in ["content-digest", "repr-digest", "digest"] {
        headers.remove(name);
    }
}
