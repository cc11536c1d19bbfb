//! The HTTP/1.1 path through the targets' pools, with its retries on other targets.

use std::sync::{Arc, OnceLock};

use http::StatusCode;
use http::uri::{PathAndQuery, Uri};
use strata::http::{AssignedRequestId, Body, Request, Response, response};

use super::body::{ClientBodyFailure, client_body_failed};
use super::headers::{Via, response_headers};
use super::{BAD_TARGET, NO_ANSWER, RouteLog, TOO_SLOW, UNREACHABLE, aim};
use crate::limits::TrackedBody;
use crate::pool::PoolError;
use crate::upstream::{Outcome, Upstreams};

/// One request sent through the targets' HTTP/1.1 pools: to a first target, then, when that fails
/// in a way that is safe to repeat, to others, up to the route's `retries` and within its budget.
pub(super) struct Exchange {
    pub(super) upstreams: Arc<Upstreams>,
    pub(super) route: Arc<RouteLog>,
    pub(super) via: Option<Arc<Via>>,
    pub(super) timeout: std::time::Duration,
    pub(super) forwarded: PathAndQuery,
    pub(super) target_host: bool,
    pub(super) key: Option<u64>,
    pub(super) client_body: Option<Arc<OnceLock<ClientBodyFailure>>>,
}

impl Exchange {
    /// Sends `req` to target `first`, and to others while attempts fail in a way worth retrying:
    ///
    /// - a connection that could not be made, or failed before the request was written (any
    ///   method: the request, body included, is handed back untouched);
    /// - for a bodiless request with an idempotent method, an exchange cut before the response
    ///   head, or a `502`/`503`/`504` answer.
    ///
    /// A timeout is not retried (the request may still be running upstream, and a slow target
    /// would be given twice the time), nor is a request whose body was sent.
    pub(super) async fn run(self, mut req: Request, first: usize) -> Response {
        let upstreams = &self.upstreams;
        let retries_possible = upstreams.retries_possible();
        // Only when a retry could happen: the copy costs a header map clone.
        let head = (retries_possible && replayable(&req)).then(|| {
            let mut copy = replay_head(&req);
            copy.uri = Uri::from(self.forwarded.clone());
            copy
        });
        if retries_possible {
            upstreams.record_request();
        }
        let mut index = first;
        let mut tried: u64 = 0;
        let mut attempt: u32 = 0;
        loop {
            tried |= 1 << index;
            let target = &upstreams.targets[index];
            // Only HTTP/2 targets have none, and they never come here.
            let Some(pool) = &target.pool else {
                return response::generated_error(StatusCode::BAD_GATEWAY, UNREACHABLE);
            };
            if !aim(&mut req, target, &self.forwarded, self.target_host) {
                return response::generated_error(StatusCode::BAD_REQUEST, BAD_TARGET);
            }
            let in_flight = upstreams.begin(index);
            // The pool bounds the wait with a timer its connection keeps, rather than a timer
            // registered and removed per request here.
            let outcome = pool.send_or_return(req, std::time::Instant::now() + self.timeout).await;
            // The next attempt, when this one failed in a way that allows one.
            let retry = |attempt: u32, tried: u64| {
                (attempt < upstreams.options.retries)
                    .then(|| upstreams.pick(self.key, tried))
                    .flatten()
                    .filter(|_| upstreams.try_retry())
            };
            match outcome {
                Ok(mut res) => {
                    let status = res.status();
                    if status.is_server_error() {
                        upstreams.failed(index, Outcome::ServerError);
                    } else {
                        upstreams.succeeded(index);
                    }
                    if matches!(status.as_u16(), 502..=504)
                        && let Some(head) = &head
                        && let Some(next) = retry(attempt, tried)
                    {
                        tracing::debug!(
                            route = %self.route,
                            upstream = %target.authority,
                            %status,
                            request_id = AssignedRequestId::current().map(tracing::field::display),
                            "retrying on another upstream");
                        req = replay(head);
                        index = next;
                        attempt += 1;
                        continue;
                    }
                    response_headers(&mut res, false, self.via.as_deref());
                    return match in_flight {
                        Some(in_flight) => res.map(|inner| Body::wrap(TrackedBody::new(inner, in_flight))),
                        None => res,
                    };
                }
                Err((PoolError::Timeout, _)) => {
                    drop(in_flight);
                    if let Some(res) = client_body_failed(self.client_body.as_ref(), &self.route, &target.authority) {
                        return res;
                    }
                    upstreams.failed(index, Outcome::Timeout);
                    if let Some(failures) = self.route.failure_due() {
                        let timeout = self.timeout;
                        tracing::warn!(
                            route = %self.route,
                            upstream = %target.authority,
                            ?timeout,
                            failures,
                            request_id = AssignedRequestId::current().map(tracing::field::display),
                            "upstream did not answer in time"
                        );
                    }
                    return response::generated_error(StatusCode::GATEWAY_TIMEOUT, TOO_SLOW);
                }
                Err((error, unsent)) => {
                    drop(in_flight);
                    if let Some(res) = client_body_failed(self.client_body.as_ref(), &self.route, &target.authority) {
                        return res;
                    }
                    let connect = matches!(error, PoolError::Connect(_));
                    upstreams.failed(index, if connect { Outcome::ConnectFailure } else { Outcome::Broken });
                    let again = unsent.or_else(|| head.as_ref().map(replay));
                    let next = again.is_some().then(|| retry(attempt, tried)).flatten();
                    if let Some(failures) = self.route.failure_due() {
                        tracing::warn!(
                            route = %self.route,
                            upstream = %target.authority,
                            %error,
                            failures,
                            retrying = next.is_some(),
                            request_id = AssignedRequestId::current().map(tracing::field::display),
                            "upstream request failed"
                        );
                    }
                    if let (Some(again), Some(next)) = (again, next) {
                        req = again;
                        index = next;
                        attempt += 1;
                        continue;
                    }
                    return response::generated_error(
                        StatusCode::BAD_GATEWAY,
                        if connect { UNREACHABLE } else { NO_ANSWER },
                    );
                }
            }
        }
    }
}

/// Whether a failed exchange may be sent again: its method is idempotent (RFC 9110 §9.2.2) and it
/// has no body, so nothing of it is lost with the first attempt and sending it twice is harmless.
fn replayable(req: &Request) -> bool {
    use http::Method;
    matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
        && http_body::Body::is_end_stream(req.body())
}

/// A copy of a bodiless request, to send again after a failed exchange.
fn replay(head: &http::request::Parts) -> Request {
    let mut req = Request::new(Body::empty());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    req
}

/// The head of a bodiless request, kept to send it again.
fn replay_head(req: &Request) -> http::request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = req.method().clone();
    parts.uri = req.uri().clone();
    parts.version = req.version();
    parts.headers = req.headers().clone();
    parts
}
