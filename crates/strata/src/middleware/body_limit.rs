//! `body_limit`: the largest request body the layers inside it (and the app or upstream) accept.
//! Anything larger gets `413 Content Too Large`.
//!
//! ```
//! use strata::http::{Request, Response, Stack};
//! use strata::middleware::BodyLimit;
//!
//! let service = Stack::new()
//!     .with(BodyLimit::bytes(1024 * 1024)?)
//!     .serve(|_req: Request| async { Response::new("small enough".into()) });
//! # let _ = service;
//! # Ok::<(), strata::middleware::ConfigError>(())
//! ```
//!
//! - **A declared length over the limit** (`Content-Length`) is answered at once, before a byte of
//!   the body is read.
//! - **A body of unknown length** (chunked HTTP/1.1, HTTP/2 without `content-length`) is counted
//!   while it streams through, never buffered: the inner layers read it as usual, and the frame that
//!   crosses the limit ends the body with an error instead. Whatever the inner layers answer after
//!   that (an app's 400 for a broken body, a proxy's 502 for an aborted upload) is replaced by the
//!   413, so the client learns the real reason.
//! - A declared length within the limit passes untouched: the server already stops a body at its
//!   declared length, so counting it again would cost for nothing.
//! - The 413 is marked [`GeneratedError`], so an `errors` layer outside formats it, and the layers
//!   outside decorate it.
//!
//! A limit is at least one byte: [`BodyLimit::bytes`] refuses 0, as the gateway's `max_bytes` key
//! does (with the `config` feature, `BodyLimitConfig` and `BodyLimit::from_config`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{StatusCode, header};
use http_body::{Body as _, Frame, SizeHint};

use super::ConfigError;
use crate::Middleware;
use crate::check::{Fact, Facts};
use crate::http::{Body, BoxError, GeneratedError, Next, Refusal, Request, Response, response};

/// What clients are told.
const DETAIL: &str = "The request body is larger than this server accepts.";
/// The body for stacks without an `errors` layer (which replaces it).
const BODY: &str = "413 Content Too Large\n\nThe request body is larger than this server accepts.\n";

/// The `body_limit` middleware. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct BodyLimit {
    max: u64,
}

impl BodyLimit {
    /// A limit of `max` bytes: at least one, else an error naming the config key `max_bytes`.
    pub fn bytes(max: u64) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::field(
                "max_bytes",
                "expected at least 1 byte (to refuse bodies entirely, refuse the methods that carry them)",
            ));
        }
        Ok(BodyLimit { max })
    }

    /// The largest accepted body, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max
    }
}

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use self::config::BodyLimitConfig;

#[cfg(feature = "config")]
mod config {
    use serde::Deserialize;

    use super::BodyLimit;
    use crate::middleware::{BuildContext, ConfigError};

    /// The `[middleware.NAME]` table of kind `body_limit`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BodyLimitConfig {
        /// The largest accepted request body, in bytes. Required.
        pub max_bytes: u64,
    }

    impl BodyLimit {
        /// Builds the table's limit through [`BodyLimit::bytes`].
        pub fn from_config(config: BodyLimitConfig, _ctx: &BuildContext) -> Result<Self, ConfigError> {
            BodyLimit::bytes(config.max_bytes)
        }
    }
}

impl Middleware<Request, Response> for BodyLimit {
    async fn handle(&self, mut req: Request, next: Next) -> Response {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let hint = req.body().size_hint();
        if declared.is_some_and(|n| n > self.max) || hint.lower() > self.max {
            let size = declared.unwrap_or(hint.lower());
            return Refusal::mark(too_large(), format!("body of {size} bytes is over max_bytes ({})", self.max));
        }
        if declared.is_some() || hint.upper().is_some_and(|n| n <= self.max) || req.body().is_end_stream() {
            return next.run(req).await;
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = std::mem::take(req.body_mut());
        *req.body_mut() = Body::wrap(Counted { inner: body, remaining: self.max, exceeded: exceeded.clone() });
        let res = next.run(req).await;
        if exceeded.load(Ordering::Acquire) {
            Refusal::mark(too_large(), format!("body grew over max_bytes ({}) while it was read", self.max))
        } else {
            res
        }
    }

    fn kind(&self) -> &'static str {
        "body_limit"
    }

    fn facts(&self) -> Facts {
        // It answers by itself, with an error response of its own making.
        Facts::of(&[Fact::ShortCircuits, Fact::CanFail])
    }
}

fn too_large() -> Response {
    let mut res = response::text(StatusCode::PAYLOAD_TOO_LARGE, BODY);
    // The unread rest of the body would be read as the next request: close instead.
    res.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    res.extensions_mut().insert(GeneratedError::with_detail(DETAIL));
    res
}

/// A request body that fails once more than the limit has passed through.
struct Counted {
    inner: Body,
    remaining: u64,
    exceeded: Arc<AtomicBool>,
}

/// The error a [`Counted`] body ends with.
#[derive(Debug)]
struct LimitExceeded;

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body is larger than the configured limit")
    }
}

impl std::error::Error for LimitExceeded {}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.exceeded.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(LimitExceeded))));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            match this.remaining.checked_sub(data.len() as u64) {
                Some(left) => this.remaining = left,
                None => {
                    this.exceeded.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(LimitExceeded))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Stack;

    /// An app that reads the whole body (up to 1 MB) and answers with its length.
    fn reading_app() -> crate::http::Service {
        Stack::new().with(BodyLimit::bytes(10).unwrap()).serve(|req: Request| async move {
            match req.into_body().collect_limited(1 << 20).await {
                Ok(bytes) => response::text(StatusCode::OK, bytes.len().to_string()),
                Err(_) => response::text(StatusCode::BAD_REQUEST, "broken body"),
            }
        })
    }

    /// A body of unknown length, made of the given chunks.
    fn chunked(chunks: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))).collect();
        Body::wrap(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
    }

    fn request(body: Body, content_length: Option<&'static str>) -> Request {
        let mut req = Request::new(body);
        if let Some(n) = content_length {
            req.headers_mut().insert(header::CONTENT_LENGTH, http::HeaderValue::from_static(n));
        }
        req
    }

    #[test]
    fn a_zero_limit_is_a_build_error() {
        assert_eq!(BodyLimit::bytes(0).unwrap_err().field, Some("max_bytes"));
        assert_eq!(BodyLimit::bytes(1).unwrap().max_bytes(), 1);
    }

    #[cfg(feature = "config")]
    #[test]
    fn a_zero_limit_in_the_config_is_the_same_error() {
        let from_config = |max_bytes| {
            BodyLimit::from_config(BodyLimitConfig { max_bytes }, &crate::middleware::BuildContext::default())
        };
        assert_eq!(from_config(0).unwrap_err(), BodyLimit::bytes(0).unwrap_err());
        assert_eq!(from_config(10).unwrap().max_bytes(), 10);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_the_app() {
        let service = Stack::new()
            .with(BodyLimit::bytes(10).unwrap())
            .serve(|_req: Request| async { response::status(StatusCode::OK) });
        let res = service.call(request(chunked(&["x"]), Some("11"))).await;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(DETAIL));
        let reason = res.extensions().get::<Refusal>().map(|r| r.reason.clone());
        assert_eq!(reason.as_deref(), Some("body of 11 bytes is over max_bytes (10)"));
        let res = service.call(request(Body::from("0123456789ab"), None)).await;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "an in-memory body knows its size");
    }

    #[tokio::test]
    async fn streamed_bodies_are_counted_without_buffering() {
        let service = reading_app();
        let res = service.call(request(chunked(&["01234", "56789"]), None)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.into_body().collect_limited(100).await.unwrap(), "10");
        // The app saw a broken body and answered 400; the client is told the real reason.
        let res = service.call(request(chunked(&["01234", "56789", "x"]), None)).await;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let reason = res.extensions().get::<Refusal>().map(|r| r.reason.clone());
        assert_eq!(reason.as_deref(), Some("body grew over max_bytes (10) while it was read"));
        assert_eq!(res.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn an_app_that_answers_without_reading_keeps_its_answer() {
        let service = Stack::new()
            .with(BodyLimit::bytes(3).unwrap())
            .serve(|_req: Request| async { response::status(StatusCode::ACCEPTED) });
        let res = service.call(request(chunked(&["0123456789"]), None)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
}
