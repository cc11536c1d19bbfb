//! `errors`: makes failures inside it clean and consistent.
//!
//! A panic anywhere inside this layer, and every error response strata itself produced inside it
//! (a bare 500 after a panic, an empty 502, a response marked with [`GeneratedError`]), leaves as
//! one well-formed body the client asked for: `application/problem+json` (RFC 9457), `text/plain`,
//! or a configured HTML page. Error bodies the application wrote itself are left alone unless
//! `replace_app_errors = true`. The body never carries a panic message, stack trace or any other
//! internal detail; the failure is logged with the request id, status, method and path.
//!
//! ```toml
//! [middleware.errors]
//! kind = "errors"
//! statuses = "server"
//! pages = { 500 = "errors/500.html" }
//! ```
//!
//! See `docs/middleware/errors.md` for every option and rule.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_body::Body as _;
use serde::{Deserialize, Serialize};

use super::{BuildContext, ConfigError};
use crate::check::{Fact, Facts};
use crate::http::headers::{add_vary, is_ows, is_tchar, parse_qvalue};
use crate::http::{Body, Next, Request, RequestId, Response};
use crate::stack::Middleware;

/// Which error statuses `errors` formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatuses {
    /// 5xx only (`"server"`): failures of the server, never the answers an app gives on purpose.
    #[default]
    Server,
    /// 4xx and 5xx (`"all"`): also rejections such as an empty 404 from a router or a marked 429.
    All,
}

/// The body format used when the client's `Accept` has no preference between JSON and text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorFormat {
    /// `text/plain; charset=utf-8` (`"text"`).
    #[default]
    Text,
    /// `application/problem+json` (`"json"`).
    Json,
}

/// The `[middleware.NAME]` table of kind `"errors"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorsConfig {
    /// `"server"` (default): format 5xx responses; `"all"`: 4xx and 5xx.
    pub statuses: ErrorStatuses,
    /// Also replace error bodies the application wrote itself. Default `false`: only empty bodies,
    /// strata's bare panic body and responses marked [`GeneratedError`] are replaced.
    pub replace_app_errors: bool,
    /// What `Accept: */*`, a missing or unparseable `Accept`, or an `Accept` that allows none of
    /// the formats gets: `"text"` (default) or `"json"`.
    pub default_format: ErrorFormat,
    /// HTML pages per status, e.g. `{ 404 = "errors/404.html" }`; paths are relative to the config
    /// file. Read once when the stack is built, served to clients that accept `text/html`.
    pub pages: BTreeMap<String, PathBuf>,
}

pub use crate::http::GeneratedError;

/// The `errors` middleware. Build it with [`Errors::new`] from an [`ErrorsConfig`], or take
/// [`Errors::default`] (5xx only, text unless JSON is preferred, no pages).
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
    /// Validates the config and reads every page once.
    pub fn new(config: ErrorsConfig, ctx: &BuildContext) -> Result<Self, ConfigError> {
        let mut errors = Errors::from_parts(&config);
        for (key, path) in &config.pages {
            let status = page_status(key)?;
            let resolved = ctx.resolve(path);
            let html = std::fs::read(&resolved).map_err(|e| {
                ConfigError::field("pages", format!("page for {status}: cannot read {}: {e}", resolved.display()))
            })?;
            errors = errors.with_page(status, html)?;
        }
        Ok(errors)
    }

    fn from_parts(config: &ErrorsConfig) -> Self {
        Errors {
            statuses: config.statuses,
            replace_app_errors: config.replace_app_errors,
            default_format: config.default_format,
            pages: HashMap::new(),
        }
    }

    /// Serves `html` for `status` to clients that accept `text/html`. Fails when `status` is not an
    /// error status this layer formats (a 404 page needs `statuses = "all"`).
    pub fn with_page(mut self, status: StatusCode, html: impl Into<Bytes>) -> Result<Self, ConfigError> {
        if !self.in_scope(status) {
            let why = if status.is_client_error() {
                format!("page for {status}: 4xx pages need `statuses = \"all\"`")
            } else {
                format!("page for {status}: only 4xx and 5xx statuses have error pages")
            };
            return Err(ConfigError::field("pages", why));
        }
        self.pages.insert(status, html.into());
        Ok(self)
    }

    fn in_scope(&self, status: StatusCode) -> bool {
        status.is_server_error() || (self.statuses == ErrorStatuses::All && status.is_client_error())
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
        Errors::from_parts(&ErrorsConfig::default())
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
            request_id: req.extensions().get::<RequestId>().map(|id| id.0.clone()),
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
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<&'a str>,
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

fn page_status(key: &str) -> Result<StatusCode, ConfigError> {
    let status = key.trim().parse::<u16>().ok().and_then(|n| StatusCode::from_u16(n).ok());
    match status {
        Some(status) if status.is_client_error() || status.is_server_error() => Ok(status),
        _ => Err(ConfigError::field("pages", format!("`{key}` is not an error status: expected 400 to 599"))),
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

// ---------------------------------------------------------------------------------------------
// Accept (RFC 9110 §12.5.1)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    Html,
}

/// The client's q (thousandths) for each format this layer can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Preferences {
    json: u16,
    text: u16,
    html: u16,
}

/// Everything is equally acceptable: what a missing or unparseable `Accept` means.
const NO_PREFERENCE: Preferences = Preferences { json: 1000, text: 1000, html: 1000 };

/// One media range of an `Accept` header.
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: u16,
}

impl MediaRange<'_> {
    /// How specifically this range names `kind/subtype` (3 exact, 2 `kind/*`, 1 `*/*`), if it does.
    fn specificity(&self, kind: &str, subtype: &str) -> Option<u8> {
        if self.kind == "*" {
            (self.subtype == "*").then_some(1)
        } else if !self.kind.eq_ignore_ascii_case(kind) {
            None
        } else if self.subtype == "*" {
            Some(2)
        } else {
            self.subtype.eq_ignore_ascii_case(subtype).then_some(3)
        }
    }
}

fn parse_accept(value: &str) -> Option<Vec<MediaRange<'_>>> {
    let mut ranges = Vec::new();
    for element in value.split(',') {
        let element = element.trim_matches(is_ows);
        if element.is_empty() {
            continue;
        }
        let mut params = element.split(';');
        let range = params.next().unwrap_or_default().trim_matches(is_ows);
        let (kind, subtype) = range.split_once('/')?;
        let token = |s: &str| !s.is_empty() && s.bytes().all(is_tchar);
        if !token(kind) || !token(subtype) || (kind == "*" && subtype != "*") {
            return None;
        }
        let mut q = 1000;
        for param in params {
            let param = param.trim_matches(is_ows);
            if param.is_empty() {
                continue;
            }
            let (name, value) = param.split_once('=')?;
            if name.trim_matches(is_ows).eq_ignore_ascii_case("q") {
                q = parse_qvalue(value.trim_matches(is_ows))?;
                break; // Anything after the weight is an accept-extension, not a media type parameter.
            }
        }
        ranges.push(MediaRange { kind, subtype, q });
    }
    Some(ranges)
}

/// The q of the most specific range naming any of `names`; 0 when none does.
fn q_for(ranges: &[MediaRange<'_>], names: &[(&str, &str)]) -> u16 {
    let mut best: Option<(u8, u16)> = None;
    for range in ranges {
        for &(kind, subtype) in names {
            if let Some(s) = range.specificity(kind, subtype) {
                best = match best {
                    Some((bs, bq)) if bs > s || (bs == s && bq >= range.q) => Some((bs, bq)),
                    _ => Some((s, range.q)),
                };
            }
        }
    }
    best.map_or(0, |(_, q)| q)
}

fn preferences(accept: Option<&HeaderValue>) -> Preferences {
    let Some(ranges) = accept.and_then(|v| v.to_str().ok()).and_then(parse_accept) else {
        return NO_PREFERENCE;
    };
    if ranges.is_empty() {
        return NO_PREFERENCE;
    }
    Preferences {
        // A client asking for plain JSON can read a problem document: it is JSON.
        json: q_for(&ranges, &[("application", "problem+json"), ("application", "json")]),
        text: q_for(&ranges, &[("text", "plain")]),
        html: q_for(&ranges, &[("text", "html")]),
    }
}

/// The acceptable format with the highest q. Ties go to the default format, then the other one,
/// then the HTML page; when nothing is acceptable, the default format (an error is still sent).
fn choose_format(prefs: &Preferences, default: ErrorFormat, has_page: bool) -> Format {
    let order = match default {
        ErrorFormat::Text => [(Format::Text, prefs.text), (Format::Json, prefs.json), (Format::Html, prefs.html)],
        ErrorFormat::Json => [(Format::Json, prefs.json), (Format::Text, prefs.text), (Format::Html, prefs.html)],
    };
    let mut best: Option<(Format, u16)> = None;
    for (format, q) in order {
        if format == Format::Html && !has_page {
            continue;
        }
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((format, q));
        }
    }
    match best {
        Some((format, _)) => format,
        None if default == ErrorFormat::Json => Format::Json,
        None => Format::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Stack, response};
    use crate::stack::{Service, from_fn};
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    fn request(accept: Option<&'static str>) -> Request {
        let mut builder = http::Request::builder().uri("/tasks/7?token=secret-query");
        if let Some(accept) = accept {
            builder = builder.header(header::ACCEPT, accept);
        }
        builder
            .header(header::AUTHORIZATION, "Bearer secret-header")
            .extension(RequestId(HeaderValue::from_static("req-42")))
            .body(Body::empty())
            .unwrap()
    }

    fn serve(errors: Errors, make: fn() -> Response) -> Service<Request, Response> {
        Stack::new().with(errors).serve(move |_req: Request| async move { make() })
    }

    async fn body_text(res: Response) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
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
        let errors = Errors::new(
            ErrorsConfig { default_format: ErrorFormat::Json, ..Default::default() },
            &BuildContext::default(),
        )
        .unwrap();
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

        let replacing =
            Errors::new(ErrorsConfig { replace_app_errors: true, ..Default::default() }, &BuildContext::default())
                .unwrap();
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
        let all =
            Errors::new(ErrorsConfig { statuses: ErrorStatuses::All, ..Default::default() }, &BuildContext::default())
                .unwrap();
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

    fn temp_page(name: &str, html: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-errors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, html).unwrap();
        path
    }

    #[tokio::test]
    async fn custom_pages_are_served_to_browsers() {
        let page = temp_page("404.html", "<h1>Lost?</h1>");
        let ctx = BuildContext { base_dir: page.parent().unwrap().to_path_buf() };
        let config: ErrorsConfig = toml::from_str("statuses = \"all\"\npages = { 404 = \"404.html\" }").unwrap();
        let errors = Errors::new(config, &ctx).unwrap();
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

    #[test]
    fn page_mistakes_name_the_status() {
        let ctx = BuildContext { base_dir: std::env::temp_dir() };
        let missing: ErrorsConfig = toml::from_str("pages = { 503 = \"no/such/page.html\" }").unwrap();
        let err = Errors::new(missing, &ctx).unwrap_err();
        assert_eq!(err.field, Some("pages"));
        assert!(err.message.contains("503 Service Unavailable") && err.message.contains("page.html"), "{err}");

        let page = temp_page("plain-404.html", "<p>404</p>");
        let out_of_scope = ErrorsConfig { pages: BTreeMap::from([("404".into(), page)]), ..Default::default() };
        let err = Errors::new(out_of_scope, &ctx).unwrap_err();
        assert!(err.message.contains("404 Not Found") && err.message.contains("statuses = \"all\""), "{err}");

        for key in ["200", "abc", "1000", "302"] {
            let config = ErrorsConfig { pages: BTreeMap::from([(key.into(), "x.html".into())]), ..Default::default() };
            let err = Errors::new(config, &ctx).unwrap_err();
            assert!(err.message.contains(&format!("`{key}`")), "{err}");
        }
        assert!(Errors::default().with_page(StatusCode::OK, "<p>ok</p>").is_err());
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

    #[test]
    fn accept_is_parsed_with_specificity_and_q_values() {
        let prefs = |s: &'static str| preferences(Some(&HeaderValue::from_static(s)));
        assert_eq!(prefs("text/plain;q=0.3, text/*;q=0.7, */*;q=0.1"), Preferences { json: 100, text: 300, html: 700 });
        assert_eq!(prefs("TEXT/HTML; level=1; q=0.5 ; ext=1"), Preferences { json: 0, text: 0, html: 500 });
        assert_eq!(
            prefs("application/json, application/problem+json;q=0.2"),
            Preferences { json: 1000, text: 0, html: 0 }
        );
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
            // listening, caching "never interested"; recompute now that this one listens.
            tracing::callsite::rebuild_interest_cache();
            runtime.block_on(async {
                let service = serve(Errors::default(), || response::status(StatusCode::BAD_GATEWAY));
                service.call(request(None)).await;
            })
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
}
