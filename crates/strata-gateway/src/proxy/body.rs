//! Bodies watched on their way through the proxy, so that each side is blamed for its own
//! failures: a client's request body that breaks, and an upstream's response body cut short.

use std::sync::{Arc, OnceLock};

use http::StatusCode;
use http::uri::Authority;
use strata::http::{AssignedRequestId, Body, Request, Response, response};

use super::{BAD_BODY, RouteLog, SLOW_BODY};

/// An upstream's response body (from hyper-util's client) that logs its own failure: the client
/// then sees a truncated body, and only this line tells the operator why.
pub(super) struct WatchedResponseBody {
    pub(super) inner: hyper::body::Incoming,
    pub(super) route: Arc<RouteLog>,
    pub(super) upstream: Authority,
    /// The id of the request this body answers, for the log line.
    pub(super) request_id: Option<AssignedRequestId>,
}

impl http_body::Body for WatchedResponseBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(error))) = &polled {
            log_truncated(&this.route, &this.upstream, this.request_id.as_ref(), error);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The WARN line of a response body that failed after its head was sent.
pub(crate) fn log_truncated(
    route: &str,
    upstream: &dyn std::fmt::Display,
    request_id: Option<&AssignedRequestId>,
    error: &(dyn std::error::Error + 'static),
) {
    tracing::warn!(
        route,
        %upstream,
        error = %error_chain(error),
        request_id = request_id.map(tracing::field::display),
        "upstream response body failed mid-stream; the client got a truncated response"
    );
}

/// Why the client's request body failed, recorded by [`WatchedRequestBody`] when it happens.
pub(super) struct ClientBodyFailure {
    timed_out: bool,
    /// The error and its sources, for the DEBUG line.
    error: String,
}

/// The request body as it goes upstream, recording its own failure: a failed exchange is then
/// known to be the client's doing, whatever error the upstream connection reports for it.
struct WatchedRequestBody {
    inner: Body,
    failure: Arc<OnceLock<ClientBodyFailure>>,
}

impl http_body::Body for WatchedRequestBody {
    type Data = bytes::Bytes;
    type Error = strata::http::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(error))) = &polled {
            let _ = this
                .failure
                .set(ClientBodyFailure { timed_out: is_timeout(error.as_ref()), error: error_chain(error.as_ref()) });
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an error, or one of its sources, is a timeout: the server's `body_read_timeout`, an
/// I/O timeout, or hyper's.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    if strata::http::is_read_timeout(error) {
        return true;
    }
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Wraps a request body that has something left to send in a [`WatchedRequestBody`]; a request
/// without one (most GETs) is left as it is and costs nothing.
pub(super) fn watch_request_body(req: &mut Request) -> Option<Arc<OnceLock<ClientBodyFailure>>> {
    if http_body::Body::is_end_stream(req.body()) {
        return None;
    }
    let failure = Arc::new(OnceLock::new());
    let inner = std::mem::replace(req.body_mut(), Body::empty());
    *req.body_mut() = Body::wrap(WatchedRequestBody { inner, failure: failure.clone() });
    Some(failure)
}

/// The answer when the client's own body made the exchange fail, if it did.
pub(super) fn client_body_failed(
    failure: Option<&Arc<OnceLock<ClientBodyFailure>>>,
    route: &str,
    upstream: &Authority,
) -> Option<Response> {
    let failure = failure?.get()?;
    tracing::debug!(route, %upstream, error = %failure.error, request_id = AssignedRequestId::current().map(tracing::field::display), "the client's request body failed; not forwarded");
    Some(if failure.timed_out {
        response::generated_error(StatusCode::REQUEST_TIMEOUT, SLOW_BODY)
    } else {
        response::generated_error(StatusCode::BAD_REQUEST, BAD_BODY)
    })
}

/// `error` and each of its sources, joined by `: ` (hyper's errors say what failed only in their
/// sources): for operators' logs, never for clients.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_found_anywhere_in_an_error_chain() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("reading failed")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let timed_out = Wrapper(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        assert!(is_timeout(&timed_out));
        assert_eq!(error_chain(&timed_out), "reading failed: slow");
        assert!(!is_timeout(&Wrapper(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk"))));
        assert!(is_timeout(&strata::http::BodyReadTimeout(std::time::Duration::from_secs(1))));
    }
}
