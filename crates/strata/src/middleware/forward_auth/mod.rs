//! `forward_auth`: asks an auth service about each request, as Traefik's ForwardAuth and nginx's
//! `auth_request` do.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{HeaderName, StatusCode};
//! use strata::http::{Body, BoxError, Request, Response, Stack};
//! use strata::middleware::forward_auth::{ForwardAuth, OnError};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An in-process auth service; the gateway's is a real one over http(s).
//! let service = |req: http::Request<Body>| async move {
//!     let allowed = req.headers().get("authorization").is_some_and(|v| v == "Bearer s3cret");
//!     let res = match allowed {
//!         true => http::Response::builder().header("x-auth-user", "alice").body(Body::empty()),
//!         false => http::Response::builder().status(StatusCode::UNAUTHORIZED).body(Body::from("log in first")),
//!     };
//!     Ok::<_, BoxError>(res?)
//! };
//! let auth = ForwardAuth::builder()
//!     .address("http://auth.internal:9091/verify".parse()?)
//!     .auth_response_headers([HeaderName::from_static("x-auth-user")])
//!     .user_header(HeaderName::from_static("x-auth-user"))
//!     .timeout(Duration::from_secs(2))
//!     .on_error(OnError::Deny)
//!     .cache_ttl(Duration::from_secs(30))
//!     .client(std::sync::Arc::new(service))
//!     .build()?;
//! let app = Stack::new().with(auth).serve(|req: Request| async move {
//!     let user = req.headers().get("x-auth-user").cloned();
//!     Response::new(Body::from(format!("hello {:?}", user)))
//! });
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! For each request the layer sends the auth service (`address`, through an [`HttpClient`]) a
//! request without a body: method `GET` (configurable), the client's headers named in
//! `auth_request_headers` (default `Authorization` and `Cookie`: the credentials a browser or an
//! API client sends), and what the service cannot otherwise know about the original request:
//! `X-Forwarded-Method`, `X-Forwarded-Proto` (`https` when the connection is TLS),
//! `X-Forwarded-Host` (the `Host`, or the HTTP/2 authority), `X-Forwarded-Uri` (path and query)
//! and `X-Forwarded-For` (the client address, resolved through trusted proxies; absent without a
//! [`ConnectionInfo`]).
//!
//! - **A 2xx answer admits the request.** Each header named in `auth_response_headers` is first
//!   removed from the request (a client cannot send its own `X-Auth-User` past the layer, whatever
//!   the service answers), then the auth response's values are copied onto it. With `user_header`
//!   (which is copied too), its value becomes the [`AuthenticatedUser`] in the request's
//!   extensions, and in the response's for layers outside (an access log). A 2xx without that
//!   header admits the request with no user.
//! - **Any other answer goes to the client as the service made it**: its status, its headers
//!   (without hop-by-hop ones) and its body, read up to `max_body_bytes` (64 KiB by default; a
//!   longer body is dropped and the rest of the answer kept). A `302` to a login page stays a
//!   redirect, a `401` keeps its `WWW-Authenticate`. These are the service's own pages, so they are
//!   *not* marked [`GeneratedError`](crate::http::GeneratedError): an `errors` layer outside leaves them alone. A `5xx` from
//!   the service is an answer too and is passed through the same way.
//! - **No answer** (connection refused, a transport error, nothing within `timeout`, 5 s by
//!   default) is decided by `on_error`: [`OnError::Deny`] (the default) answers
//!   `503 Service Unavailable`, marked [`GeneratedError`](crate::http::GeneratedError); [`OnError::Allow`] lets the request
//!   through without a user, after removing the `auth_response_headers` all the same. Either way
//!   a warning is logged when the service stops answering and a note when it answers again, not
//!   one line per request. A denial whose body is slow or broken is still a denial: `on_error` only
//!   decides when no status came back.
//!
//! # The verdict cache
//!
//! With `cache_ttl` above zero (zero, the default, turns it off), admissions are remembered for
//! that long, so a client that sends the same request again is admitted without a round trip.
//!
//! - The key is `HMAC-SHA256(key, …)` of *everything the auth request carries*: the chosen
//!   headers' values and the forwarded method, scheme, host, URI and client address, where `key` is
//!   32 random bytes drawn when the layer is built. So the cache holds no credential, and an entry
//!   for `/public` is never used for `/admin`: an auth service may decide per path, per host or per
//!   address, and a cache keyed on the credential alone would reuse its answer where it did not
//!   give it. Polling clients and repeated loads of one page hit it; distinct URLs each ask once.
//! - Only admissions are cached, with the headers they copy and the user. Denials are not: a
//!   client that just logged in is asked about again at once, and no denial body sits in memory.
//!   An admission whose response says `Cache-Control: no-store` is not cached either.
//! - It is bounded (`cache_capacity`, default 10 000 entries, in shards with one short-held lock
//!   each; expired then oldest entries are evicted). Rebuilding the layer (a config reload) starts a
//!   new, empty cache.
//!
//! # Where to put it
//!
//! Outside the layers that need the user (`rate_limit` keyed on the user) and inside `cors` (a
//! preflight carries no credentials), `access_log` and `errors` (its `503` is a generated error).
//! The layer declares the facts `strata check` needs to say so.
//!
//! [`HttpClient`]: crate::http::client::HttpClient

mod builder;
mod cache;
#[cfg(feature = "config")]
mod config;
#[cfg(test)]
mod tests;

pub use builder::ForwardAuthBuilder;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use config::ForwardAuthConfig;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body::Body as _;

use self::cache::{Asked, VerdictCache};
use crate::check::{Fact, Facts};
use crate::http::client::HttpClient;
use crate::http::{AuthenticatedUser, Body, ConnectionInfo, Next, Refusal, Request, Response};
use crate::http::{client_ip::write_ip, response};
use crate::middleware::describe_duration;
use crate::stack::Middleware;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What clients are told when the auth service does not answer and `on_error = "deny"`.
const UNAVAILABLE: &str = "The authentication service is unavailable; retry later.";

/// What to do when the auth service gives no answer (unreachable, a transport error, a timeout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
pub enum OnError {
    /// Answer `503 Service Unavailable` (a [`GeneratedError`](crate::http::GeneratedError)): no request passes unchecked.
    #[default]
    Deny,
    /// Let the request through without a user (fail open), logged when the service stops answering.
    Allow,
}

/// The forward-auth layer (kind `forward_auth`). Build it with [`ForwardAuth::builder`].
pub struct ForwardAuth {
    address: Uri,
    method: Method,
    request_headers: Box<[HeaderName]>,
    /// Copied from an admitting answer; `user_header` is among them.
    response_headers: Box<[HeaderName]>,
    user_header: Option<HeaderName>,
    timeout: Duration,
    on_error: OnError,
    max_body_bytes: usize,
    cache: Option<VerdictCache>,
    client: Arc<dyn HttpClient>,
    /// Whether the last ask got no answer, so that an outage is logged once, not per request.
    failing: AtomicBool,
    /// Whether a denial body that could not be passed on was logged already.
    warned_body: AtomicBool,
}

impl fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("address", &self.address)
            .field("method", &self.method)
            .field("auth_request_headers", &self.request_headers)
            .field("auth_response_headers", &self.response_headers)
            .field("user_header", &self.user_header)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("cache", &self.cache.as_ref().map(|c| (c.ttl, c.capacity())))
            .finish_non_exhaustive()
    }
}

/// What an admitting answer puts on the request: the copied headers and the user.
#[derive(Debug, Default)]
struct Admission {
    headers: Vec<(HeaderName, HeaderValue)>,
    user: Option<AuthenticatedUser>,
}

/// How a request is decided: from the cache, or by asking (with the cache key to store under).
// A value of the moment, moved once: boxing the request would add an allocation to save a copy.
#[allow(clippy::large_enum_variant)]
enum Step {
    Cached(Arc<Admission>),
    Ask(http::Request<Body>, Option<[u8; 32]>),
}

/// What the auth service said.
enum Answer {
    Admitted {
        admission: Arc<Admission>,
        cacheable: bool,
    },
    Denied(Response),
    /// No answer; the reason is for the log and `explain`.
    Failed(String),
}

impl ForwardAuth {
    /// Starts a [`ForwardAuthBuilder`] with the defaults and no address.
    pub fn builder() -> ForwardAuthBuilder {
        ForwardAuthBuilder::default()
    }

    /// The auth service's URL.
    pub fn address(&self) -> &Uri {
        &self.address
    }

    /// The request sent to the auth service about `asked`.
    fn auth_request(&self, asked: &Asked<'_>) -> http::Request<Body> {
        let mut req = http::Request::new(Body::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.address.clone();
        let h = req.headers_mut();
        for name in &self.request_headers {
            for value in asked.headers.get_all(name) {
                h.append(name.clone(), value.clone());
            }
        }
        // Every part comes from a header value, a method token or a URI, so each is a valid value.
        let mut set = |name: HeaderName, bytes: &[u8]| {
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                h.insert(name, value);
            }
        };
        set(X_FORWARDED_METHOD, asked.method);
        set(X_FORWARDED_PROTO, asked.proto);
        if !asked.host.is_empty() {
            set(X_FORWARDED_HOST, asked.host);
        }
        set(X_FORWARDED_URI, asked.uri);
        if let Some(client) = asked.client {
            let mut ip = Vec::with_capacity(15);
            write_ip(&mut ip, client);
            set(X_FORWARDED_FOR, &ip);
        }
        req
    }

    /// Sends `req` and reads the answer, each step within the deadline.
    async fn ask(&self, req: http::Request<Body>) -> Answer {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let res = match tokio::time::timeout_at(deadline, self.client.send(req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Answer::Failed(format!("auth service failed: {e}")),
            Err(_) => {
                return Answer::Failed(format!(
                    "auth service gave no answer within {}",
                    describe_duration(self.timeout)
                ));
            }
        };
        let (parts, body) = res.into_parts();
        if parts.status.is_success() {
            // Read what little there is, so that the connection goes back to the pool.
            if !body.is_end_stream() {
                let _ = tokio::time::timeout_at(deadline, body.collect_limited(self.max_body_bytes)).await;
            }
            let cacheable = !no_store(&parts.headers);
            return Answer::Admitted { admission: Arc::new(self.admission(parts.headers)), cacheable };
        }
        let body = match tokio::time::timeout_at(deadline, body.collect_limited(self.max_body_bytes)).await {
            Ok(Ok(bytes)) => Body::from(bytes),
            _ => {
                // The status is the service's verdict; only its page is lost. Said once: a service
                // whose pages are all too large would otherwise log a line per denial.
                if !self.warned_body.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        status = parts.status.as_u16(),
                        max_body_bytes = self.max_body_bytes,
                        "the auth service's denial body was too large, too slow or broken; passing its status and headers on with an empty body"
                    );
                }
                Body::empty()
            }
        };
        let mut res = http::Response::from_parts(parts, body);
        strip_hop_by_hop(res.headers_mut());
        let reason = format!("auth service answered {}", res.status().as_u16());
        Answer::Denied(Refusal::mark(res, reason))
    }

    /// The headers to copy and the user, from an admitting answer's headers.
    fn admission(&self, mut headers: HeaderMap) -> Admission {
        let mut copied = Vec::new();
        for name in &self.response_headers {
            if let http::header::Entry::Occupied(entry) = headers.entry(name) {
                let (name, values) = entry.remove_entry_mult();
                copied.extend(values.map(|value| (name.clone(), value)));
            }
        }
        let user = self.user_header.as_ref().and_then(|user_header| {
            let value = copied.iter().find(|(name, _)| name == user_header)?.1.to_str().ok()?.trim();
            (!value.is_empty()).then(|| AuthenticatedUser(Arc::from(value)))
        });
        Admission { headers: copied, user }
    }

    /// Runs the inner layers with the admission's headers and user on the request.
    async fn admit(&self, mut req: Request, admission: &Admission, next: Next) -> Response {
        for name in &self.response_headers {
            req.headers_mut().remove(name);
        }
        for (name, value) in &admission.headers {
            req.headers_mut().append(name.clone(), value.clone());
        }
        let Some(user) = &admission.user else { return next.run(req).await };
        req.extensions_mut().insert(user.clone());
        let mut res = next.run(req).await;
        res.extensions_mut().insert(user.clone());
        res
    }

    /// Notes that the service answered, logging a recovery once.
    fn answered(&self) {
        // A load first: the common case writes nothing to the shared line.
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(address = %self.address, "the auth service answers again");
        }
    }

    /// Notes that the service gave no answer, logging the start of an outage once.
    fn failed(&self, why: &str) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            let mode = match self.on_error {
                OnError::Deny => "refusing requests with 503 (on_error = \"deny\") until it answers",
                OnError::Allow => "letting requests through unchecked (on_error = \"allow\") until it answers",
            };
            tracing::warn!(address = %self.address, error = why, "the auth service gives no answer; {mode}");
        }
    }
}

/// Whether a response forbids storing it (`Cache-Control: no-store`).
fn no_store(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"))
}

/// Removes the headers that describe the auth service's connection, not the answer: those the
/// `Connection` header names and the fixed hop-by-hop set. The server frames the body itself.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// The parts of `req` an auth request forwards.
fn asked(req: &Request) -> Asked<'_> {
    let info = req.extensions().get::<ConnectionInfo>();
    let secure = info.is_some_and(|i| i.secure) || req.uri().scheme() == Some(&Scheme::HTTPS);
    let host = match req.headers().get(header::HOST) {
        Some(host) => host.as_bytes(),
        None => req.uri().authority().map_or(&b""[..], |a| a.as_str().as_bytes()),
    };
    Asked {
        method: req.method().as_str().as_bytes(),
        proto: if secure { b"https" } else { b"http" },
        host,
        uri: req.uri().path_and_query().map_or(&b"/"[..], |p| p.as_str().as_bytes()),
        client: info.map(|i| i.client),
        headers: req.headers(),
    }
}

impl Middleware<Request, Response> for ForwardAuth {
    async fn handle(&self, req: Request, next: Next) -> Response {
        let step = {
            let asked = asked(&req);
            match &self.cache {
                Some(cache) => {
                    let key = cache.key(&asked, &self.request_headers);
                    match cache.get(&key) {
                        Some(admission) => Step::Cached(admission),
                        None => Step::Ask(self.auth_request(&asked), Some(key)),
                    }
                }
                None => Step::Ask(self.auth_request(&asked), None),
            }
        };
        let admission = match step {
            Step::Cached(admission) => admission,
            Step::Ask(auth_req, key) => match Box::pin(self.ask(auth_req)).await {
                Answer::Admitted { admission, cacheable } => {
                    self.answered();
                    if let (Some(cache), Some(key), true) = (&self.cache, key, cacheable) {
                        cache.insert(key, admission.clone());
                    }
                    admission
                }
                Answer::Denied(res) => {
                    self.answered();
                    return res;
                }
                Answer::Failed(why) => {
                    self.failed(&why);
                    match self.on_error {
                        OnError::Deny => {
                            let res = response::generated_error(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE);
                            return Refusal::mark(res, why);
                        }
                        OnError::Allow => Arc::new(Admission::default()),
                    }
                }
            },
        };
        self.admit(req, &admission, next).await
    }

    fn kind(&self) -> &'static str {
        "forward_auth"
    }

    fn facts(&self) -> Facts {
        // It answers by itself (the service's denials) and can fail (its 503 when the service
        // is down); it reads the client address to forward it.
        let facts = Facts::of(&[Fact::ShortCircuits, Fact::CanFail, Fact::Authenticates, Fact::ReadsClientAddress]);
        match self.user_header {
            Some(_) => facts.with(Fact::SetsUser),
            None => facts,
        }
    }
}
