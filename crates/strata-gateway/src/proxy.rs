//! The reverse proxy: the endpoint of an `upstream = "http://…"` route (or of a list of targets).
//!
//! - **Streaming both ways.** The request body goes upstream as it arrives and the upstream's body
//!   comes back as it arrives (hyper's `Incoming` on both sides): nothing is buffered, so large
//!   downloads, uploads, server-sent events and long polls pass through at their own pace.
//! - **Several targets** per route ([`crate::upstream`]): one is picked per request, and a failed
//!   attempt that is safe to repeat goes to another, within the route's `retries` and budget.
//! - **`https://` upstreams** speak TLS on both paths below, as [`crate::tls_client`] sets it up
//!   for the route (trusted CAs, verified name, ALPN); a certificate refused is a `502` whose
//!   reason is in the log line.
//! - **Pooled keep-alive connections**: HTTP/1.1 through [`crate::pool`] (one per target), whose connections are
//!   driven by the requests using them (no hand-off to another task per request: about a fifth less
//!   CPU per proxied request than hyper-util's client, measured under load); HTTP/2 upstreams
//!   (`http2 = true`) and upgrades through hyper-util's client. An idle connection is dropped after
//!   `idle_timeout`, shorter than the upstream's own keep-alive, so the gateway does not send a
//!   request on a connection the upstream is closing.
//! - **Hop-by-hop headers** (RFC 9110 §7.6.1: `Connection` and the headers it names, `Keep-Alive`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) are removed in both directions;
//!   an `Upgrade` request (WebSocket) keeps `Connection: upgrade` and `Upgrade`, and once the
//!   upstream answers `101` the two connections are spliced together.
//! - **Where the request came from**: `X-Forwarded-For` (the TCP peer appended to a trusted proxy's
//!   list), `X-Forwarded-Proto`, `X-Forwarded-Host`, and/or RFC 7239 `Forwarded`, per the route's
//!   `forwarded` option. The request id and the authenticated user travel as the request headers
//!   the `request_id` and `basic_auth` layers set.
//! - **`Via`** (RFC 9110 §7.6.3): `1.1 strata` (the version of the message received, then the
//!   `[server] via_pseudonym`) is appended to requests sent upstream and to the upstream's
//!   responses, unless the route sets `via = false`. A request that already names this gateway in
//!   its `Via` has come back around a loop of proxies: it is answered `508 Loop Detected`, never
//!   forwarded again (each pass would add a request until something runs out).
//! - **Failures are responses**: a refused or reset connection is a `502`, an upstream slower than
//!   the route's `timeout` is a `504`. Both carry a client-safe sentence and are marked
//!   [`GeneratedError`](strata::http::GeneratedError), so an `errors` layer formats them and every outer layer decorates them.
//! - **Each side is blamed for its own failures.** A client whose request body breaks (a malformed
//!   chunk, a body that stops arriving) gets a `400` (`408` for a timeout) and a DEBUG line: the
//!   exchange with the upstream failed because of it, and counting it as a `502` would let any client
//!   raise the gateway's error rate at will. An upstream whose response body fails after its head
//!   was sent (the client sees a truncated body: the status is gone) is logged as a WARN with the
//!   route, the upstream and the error.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{StatusCode, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use strata::BoxFuture;
use strata::Endpoint;
use strata::http::{Body, ConnectionInfo, Request, Response, response};
use tokio_util::task::TaskTracker;

use crate::config::{ForwardedHeaders, ProxyOptions, UpstreamOptions, UpstreamTarget};
use crate::pool::PoolError;
use crate::tls_client::{self, UpstreamTls};
use crate::upstream::{Backend, CountedBody, Upstreams};
use strata::http::client_ip::{TrustedProxies, write_ip};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The client-safe sentences of the proxy's own error responses.
const UNREACHABLE: &str = "The upstream server could not be reached.";
const NO_ANSWER: &str = "The upstream server closed the connection without a complete answer.";
const TOO_SLOW: &str = "The upstream server did not answer in time.";
const BAD_TARGET: &str = "The request's path cannot be forwarded.";
const LOOPED: &str = "The request has already passed through this gateway: the proxies forward it in a loop.";
const BAD_BODY: &str = "The request body could not be read.";
const SLOW_BODY: &str = "The request body did not arrive in time.";
const NO_TARGET: &str = "Every upstream server of this route is unavailable; try again later.";

/// Forwards requests to the upstream servers of one route. One per route: each route has its own
/// targets, pools and options.
pub struct Proxy {
    /// The targets, their pools and health, and how one is picked.
    upstreams: Arc<Upstreams>,
    /// HTTP/2 upstreams and upgrades (whose connections outlive the request).
    client: Client<HttpsConnector<HttpConnector>, Body>,
    scheme: Scheme,
    /// The route's prefix, removed from paths when `strip_prefix` is set.
    prefix: String,
    options: ProxyOptions,
    /// Whose forwarding headers are believed (and extended) rather than replaced.
    trusted: Arc<TrustedProxies>,
    /// The `Via` values, made once; `None` when the route sets `via = false`.
    via: Option<Arc<Via>>,
    /// The route's prefix as configured, and how often its failures are logged.
    route: Arc<RouteLog>,
}

/// A route's name in the proxy's log lines, with the count that keeps an outage from writing a
/// line per request: the first failure is logged at once, then at most one line per interval
/// saying how many failed since the last.
pub(crate) struct RouteLog {
    prefix: Box<str>,
    failures: std::sync::Mutex<crate::limits::LogEvery>,
}

/// How often an upstream's failures are logged at most, after the first.
const FAILURE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl RouteLog {
    fn new(prefix: &str) -> Arc<RouteLog> {
        Arc::new(RouteLog {
            prefix: prefix.into(),
            failures: std::sync::Mutex::new(crate::limits::LogEvery::new(FAILURE_LOG_INTERVAL)),
        })
    }

    /// Counts a failure; `Some(n)` when a line is due, for the `n` failures since the last one.
    fn failure_due(&self) -> Option<u64> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).hit(tokio::time::Instant::now())
    }
}

impl std::ops::Deref for RouteLog {
    type Target = str;
    fn deref(&self) -> &str {
        &self.prefix
    }
}

impl std::fmt::Display for RouteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.prefix)
    }
}

/// This gateway's `Via` elements, one per protocol version a message can be received in.
struct Via {
    pseudonym: Box<str>,
    /// `0.9`, `1.0`, `1.1`, `2`, `3`, each followed by the pseudonym.
    values: [HeaderValue; 5],
}

impl Via {
    fn new(pseudonym: &str) -> Option<Via> {
        // The pseudonym was checked to be a token when the config was loaded.
        let value = |version: &str| HeaderValue::from_str(&format!("{version} {pseudonym}")).ok();
        Some(Via {
            pseudonym: pseudonym.into(),
            values: [value("0.9")?, value("1.0")?, value("1.1")?, value("2")?, value("3")?],
        })
    }

    /// The element for a message received in `version` (RFC 9110 §7.6.3: the protocol name is
    /// omitted for HTTP).
    fn element(&self, version: Version) -> &HeaderValue {
        let index = match version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        };
        &self.values[index]
    }

    /// Whether a request's `Via` already names this gateway: it has been here before.
    fn has_looped(&self, headers: &HeaderMap) -> bool {
        headers.get_all(header::VIA).iter().any(|value| via_names(value.as_bytes(), &self.pseudonym))
    }
}

/// Whether one `Via` field value has an element received by `pseudonym`:
/// `received-protocol RWS received-by [RWS comment]`, elements separated by commas outside comments.
fn via_names(value: &[u8], pseudonym: &str) -> bool {
    let mut depth = 0usize;
    let mut start = 0;
    for i in 0..=value.len() {
        match value.get(i) {
            Some(b'(') => depth += 1,
            Some(b')') => depth = depth.saturating_sub(1),
            Some(b',') if depth == 0 => {}
            None => {}
            Some(_) => continue,
        }
        if depth == 0 && value.get(i).is_none_or(|&b| b == b',') {
            let mut words = value[start..i].split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty());
            let received_by = words.nth(1);
            if received_by.is_some_and(|by| by.eq_ignore_ascii_case(pseudonym.as_bytes())) {
                return true;
            }
            start = i + 1;
        }
    }
    false
}

/// Appends this hop's element to a message's `Via`: the precomputed value alone when there is
/// none yet (the usual case, no allocation), else one comma-separated line.
fn append_via(headers: &mut HeaderMap, element: &HeaderValue) {
    if !headers.contains_key(header::VIA) {
        headers.insert(header::VIA, element.clone());
        return;
    }
    let mut line = Vec::new();
    for value in headers.get_all(header::VIA) {
        line.extend_from_slice(value.as_bytes());
        line.extend_from_slice(b", ");
    }
    line.extend_from_slice(element.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&line) {
        headers.insert(header::VIA, value);
    }
}

/// The upstream's response as the client gets it: without hop-by-hop headers (but `Upgrade` when
/// `switching`), with this hop's `Via`.
fn response_headers<B>(res: &mut http::Response<B>, switching: bool, via: Option<&Via>) {
    remove_hop_by_hop(res.headers_mut(), switching);
    if let Some(via) = via {
        let element = via.element(res.version());
        append_via(res.headers_mut(), element);
    }
}

/// An upstream's response body (from hyper-util's client) that logs its own failure: the client
/// then sees a truncated body, and only this line tells the operator why.
struct WatchedResponseBody {
    inner: hyper::body::Incoming,
    route: Arc<RouteLog>,
    upstream: Authority,
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
            log_truncated(&this.route, &this.upstream, error);
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
pub(crate) fn log_truncated(route: &str, upstream: &dyn std::fmt::Display, error: &(dyn std::error::Error + 'static)) {
    tracing::warn!(
        route,
        %upstream,
        error = %error_chain(error),
        "upstream response body failed mid-stream; the client got a truncated response"
    );
}

/// Why the client's request body failed, recorded by [`WatchedRequestBody`] when it happens.
struct ClientBodyFailure {
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
fn watch_request_body(req: Request) -> (Request, Option<Arc<OnceLock<ClientBodyFailure>>>) {
    if http_body::Body::is_end_stream(req.body()) {
        return (req, None);
    }
    let failure = Arc::new(OnceLock::new());
    let req = req.map(|inner| Body::wrap(WatchedRequestBody { inner, failure: failure.clone() }));
    (req, Some(failure))
}

/// The answer when the client's own body made the exchange fail, if it did.
fn client_body_failed(
    failure: Option<&Arc<OnceLock<ClientBodyFailure>>>,
    route: &str,
    upstream: &Authority,
) -> Option<Response> {
    let failure = failure?.get()?;
    tracing::debug!(route, %upstream, error = %failure.error, "the client's request body failed; not forwarded");
    Some(if failure.timed_out {
        response::generated_error(StatusCode::REQUEST_TIMEOUT, SLOW_BODY)
    } else {
        response::generated_error(StatusCode::BAD_REQUEST, BAD_BODY)
    })
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<&Authority> = self.upstreams.targets.iter().map(|t| &t.authority).collect();
        f.debug_struct("Proxy").field("upstreams", &targets).field("options", &self.options).finish()
    }
}

/// A request on its way upstream, before it is aimed at a target.
struct Outgoing {
    req: Request,
    /// The path and query every target gets, after its own base path.
    forwarded: PathAndQuery,
    /// Whether `Host` names the target (`preserve_host = false`, or a client that sent none).
    target_host: bool,
}

impl Proxy {
    /// A proxy to `targets` (`http[s]://host:port[/base]` URLs, checked by the config) for the
    /// route at `prefix`; `tls` holds, per target, how an `https://` one is spoken to (`None` for
    /// `http://`).
    ///
    /// `trusted` are the `[server] trusted_proxies`: forwarding headers arriving from one of them
    /// are extended, from anyone else they are the client's own claim and are replaced.
    pub fn new(
        targets: &[UpstreamTarget],
        prefix: &str,
        options: &ProxyOptions,
        upstream: &UpstreamOptions,
        trusted: Arc<TrustedProxies>,
        tls: Vec<Option<Arc<UpstreamTls>>>,
    ) -> Proxy {
        let mut http = HttpConnector::new();
        // Over TLS this bounds the TCP connection; the handshake is bounded by the route's
        // `timeout`, as the rest of the exchange is.
        http.set_connect_timeout(Some(options.connect_timeout));
        // Small requests go out at once instead of waiting for Nagle's algorithm.
        http.set_nodelay(true);
        // The TLS connector hands it `https://` URIs too.
        http.enforce_http(false);
        let connector = match tls.iter().flatten().next() {
            Some(tls) => tls.connector(http),
            None => tls_client::plain_connector(http),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(options.idle_timeout)
            .http2_only(options.http2);
        if options.idle_timeout.is_zero() {
            // For upstreams that close every connection after one response: keep none idle.
            builder.pool_max_idle_per_host(0);
        }
        let client = builder.build(connector);
        let upstreams = Arc::new(Upstreams::new(targets, prefix, options, upstream, tls));
        Proxy {
            upstreams,
            client,
            scheme: targets.first().and_then(|t| t.url.scheme().cloned()).unwrap_or(Scheme::HTTP),
            prefix: if prefix == "/" { String::new() } else { prefix.to_string() },
            options: options.clone(),
            trusted,
            via: if options.via { Via::new(&options.via_pseudonym).map(Arc::new) } else { None },
            route: RouteLog::new(prefix),
        }
    }

    /// The route's targets (for the health checks the gateway starts).
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// The path and query the targets are asked for, before each target's base path: the
    /// request's path (below the route's prefix when stripping), then the query.
    fn forwarded_path(&self, uri: &Uri) -> Option<PathAndQuery> {
        match uri.path_and_query() {
            // Nothing to change (no prefix to strip): the parsed value is reused.
            Some(pq) if (!self.options.strip_prefix || self.prefix.is_empty()) && pq.as_str().starts_with('/') => {
                Some(pq.clone())
            }
            _ => {
                let path = uri.path();
                let path = if self.options.strip_prefix { path.get(self.prefix.len()..).unwrap_or(path) } else { path };
                let query = uri.query();
                let mut pq = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1) + 1);
                if !path.starts_with('/') {
                    pq.push('/');
                }
                pq.push_str(path);
                if let Some(q) = query {
                    pq.push('?');
                    pq.push_str(q);
                }
                PathAndQuery::try_from(pq).ok()
            }
        }
    }

    /// The absolute URI of `forwarded` on `target` (for hyper-util's client).
    fn absolute_uri(&self, target: &Backend, forwarded: &PathAndQuery) -> Option<Uri> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(target.path_for(forwarded)?)
            .build()
            .ok()
    }

    /// Turns the client's request into the upstream's: version, hop-by-hop and forwarding headers,
    /// `Host` when it is the client's. The body is moved, not read. The URI (and a target's `Host`)
    /// are set by [`aim`] for each target tried. `None` when the path cannot be forwarded.
    fn outgoing(&self, req: Request, upgrade: bool) -> Option<Outgoing> {
        // The TCP peer, even once ConnectionInfo also carries a client address resolved through
        // trusted proxies: each hop appends the address it saw, and the list stays verifiable.
        let connection = req.extensions().get::<ConnectionInfo>();
        let peer = connection.map(|c| c.peer);
        let secure = connection.is_some_and(|c| c.secure);
        let (mut parts, body) = req.into_parts();
        let forwarded = self.forwarded_path(&parts.uri)?;

        // HTTP/2 clients carry the host in the URI, HTTP/1.1 clients in `Host`.
        let client_host =
            parts.headers.get(header::HOST).cloned().or_else(|| parts.uri.authority().and_then(authority_value));
        remove_hop_by_hop(&mut parts.headers, upgrade);
        // After the hop-by-hop headers: a `Connection: via` from the client must not remove ours.
        if let Some(via) = &self.via {
            append_via(&mut parts.headers, via.element(parts.version));
        }
        if upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let mut target_host = false;
        match (&client_host, self.options.preserve_host) {
            // HTTP/2 names the host in `:authority`, which is the upstream's (the connection goes
            // where the URI points): a `Host` that differs from it is malformed (RFC 9113 §8.3.1).
            _ if self.options.http2 => {
                parts.headers.remove(header::HOST);
            }
            (Some(host), true) => {
                parts.headers.insert(header::HOST, host.clone());
            }
            _ => target_host = true,
        }
        let from_trusted_proxy = peer.is_some_and(|p| self.trusted.contains(p.ip()));
        add_forwarding(
            &mut parts.headers,
            self.options.forwarded,
            peer,
            secure,
            from_trusted_proxy,
            client_host.as_ref(),
        );
        parts.uri = Uri::from(forwarded.clone());
        parts.version = if self.options.http2 { Version::HTTP_2 } else { Version::HTTP_11 };
        // The server's extensions (its upgrade handle, our ConnectionInfo) mean nothing upstream.
        parts.extensions = http::Extensions::new();
        Some(Outgoing { req: Request::from_parts(parts, body), forwarded, target_host })
    }
}

/// Points a request at `target`: the origin-form URI with the target's base path (HTTP/1.1 on its
/// own connection names the target that way) and, when `target_host`, the target's `Host`.
fn aim(req: &mut Request, target: &Backend, forwarded: &PathAndQuery, target_host: bool) -> bool {
    let Some(pq) = target.path_for(forwarded) else { return false };
    *req.uri_mut() = Uri::from(pq);
    if target_host {
        req.headers_mut().insert(header::HOST, target.host.clone());
    }
    true
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

/// The answer when every target is out: `503` with `Retry-After`.
fn no_target(upstreams: &Upstreams, route: &RouteLog) -> Response {
    if let Some(failures) = route.failure_due() {
        tracing::warn!(%route, failures, "every upstream of the route is out (ejected or failing health checks)");
    }
    let mut res = response::generated_error(StatusCode::SERVICE_UNAVAILABLE, NO_TARGET);
    let wait = upstreams.retry_after().as_secs();
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
    res
}

impl Endpoint<Request, Response> for Proxy {
    fn call(&self, mut req: Request) -> BoxFuture<Response> {
        if self.via.as_ref().is_some_and(|via| via.has_looped(req.headers())) {
            // Anyone can send this header: a DEBUG line, the 508 shows in the access log.
            tracing::debug!(route = %self.route, "request loop refused: Via names this gateway");
            return Box::pin(std::future::ready(response::generated_error(StatusCode::LOOP_DETECTED, LOOPED)));
        }
        let key = self.upstreams.hash_key(&req);
        let Some(first) = self.upstreams.pick(key, 0) else {
            return Box::pin(std::future::ready(no_target(&self.upstreams, &self.route)));
        };
        let upgrade = is_upgrade(req.headers());
        // Taken before the request is rebuilt: it is how the client's connection is handed over
        // once the 101 has been sent.
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let Some(Outgoing { req: outgoing, forwarded, target_host }) = self.outgoing(req, upgrade) else {
            return Box::pin(std::future::ready(response::generated_error(StatusCode::BAD_REQUEST, BAD_TARGET)));
        };
        let (outgoing, client_body) = watch_request_body(outgoing);
        if !self.options.http2 && !upgrade {
            let exchange = Exchange {
                upstreams: self.upstreams.clone(),
                route: self.route.clone(),
                via: self.via.clone(),
                timeout: self.options.timeout,
                forwarded,
                target_host,
                key,
                client_body,
            };
            return Box::pin(exchange.run(outgoing, first));
        }
        let upstreams = self.upstreams.clone();
        let target = &upstreams.targets[first];
        let Some(uri) = self.absolute_uri(target, &forwarded) else {
            return Box::pin(std::future::ready(response::generated_error(StatusCode::BAD_REQUEST, BAD_TARGET)));
        };
        let mut outgoing = outgoing;
        *outgoing.uri_mut() = uri;
        if target_host {
            outgoing.headers_mut().insert(header::HOST, target.host.clone());
        }
        let timeout = self.options.timeout;
        let upstream = target.authority.clone();
        let route = self.route.clone();
        let via = self.via.clone();
        let client = self.client.clone();
        Box::pin(async move {
            let in_flight = upstreams.begin(first);
            let mut res = match tokio::time::timeout(timeout, client.request(outgoing)).await {
                Ok(Ok(res)) => res,
                Ok(Err(error)) => {
                    if let Some(res) = client_body_failed(client_body.as_ref(), &route, &upstream) {
                        return res;
                    }
                    upstreams.failed(first);
                    let connect = error.is_connect();
                    // The error names the upstream and the OS error: useful to operators, kept from clients.
                    if let Some(failures) = route.failure_due() {
                        tracing::warn!(%route, %upstream, error = %error_chain(&error), failures, "upstream request failed");
                    }
                    return response::generated_error(
                        StatusCode::BAD_GATEWAY,
                        if connect { UNREACHABLE } else { NO_ANSWER },
                    );
                }
                Err(_) => {
                    if let Some(res) = client_body_failed(client_body.as_ref(), &route, &upstream) {
                        return res;
                    }
                    upstreams.failed(first);
                    if let Some(failures) = route.failure_due() {
                        tracing::warn!(%route, %upstream, ?timeout, failures, "upstream did not answer in time");
                    }
                    return response::generated_error(StatusCode::GATEWAY_TIMEOUT, TOO_SLOW);
                }
            };
            drop(in_flight);
            if res.status().is_server_error() {
                upstreams.failed(first);
            } else {
                upstreams.succeeded(first);
            }
            let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
            if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
                splice(client_upgrade, hyper::upgrade::on(&mut res), upstream.clone());
            }
            response_headers(&mut res, switching, via.as_deref());
            if switching {
                res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            if http_body::Body::is_end_stream(res.body()) {
                return res.map(Body::from);
            }
            // The pool's bodies report their own failures; these are hyper-util's.
            res.map(|incoming| Body::wrap(WatchedResponseBody { inner: incoming, route, upstream }))
        })
    }
}

/// One request sent through the targets' HTTP/1.1 pools: to a first target, then, when that fails
/// in a way that is safe to repeat, to others, up to the route's `retries` and within its budget.
struct Exchange {
    upstreams: Arc<Upstreams>,
    route: Arc<RouteLog>,
    via: Option<Arc<Via>>,
    timeout: std::time::Duration,
    forwarded: PathAndQuery,
    target_host: bool,
    key: Option<u64>,
    client_body: Option<Arc<OnceLock<ClientBodyFailure>>>,
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
    async fn run(self, mut req: Request, first: usize) -> Response {
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
            let outcome = tokio::time::timeout(self.timeout, pool.send_or_return(req)).await;
            // The next attempt, when this one failed in a way that allows one.
            let retry = |attempt: u32, tried: u64| {
                (attempt < upstreams.options.retries)
                    .then(|| upstreams.pick(self.key, tried))
                    .flatten()
                    .filter(|_| upstreams.try_retry())
            };
            match outcome {
                Ok(Ok(mut res)) => {
                    let status = res.status();
                    if status.is_server_error() {
                        upstreams.failed(index);
                    } else {
                        upstreams.succeeded(index);
                    }
                    if matches!(status.as_u16(), 502..=504)
                        && let Some(head) = &head
                        && let Some(next) = retry(attempt, tried)
                    {
                        tracing::debug!(route = %self.route, upstream = %target.authority, %status, "retrying on another upstream");
                        req = replay(head);
                        index = next;
                        attempt += 1;
                        continue;
                    }
                    response_headers(&mut res, false, self.via.as_deref());
                    return match in_flight {
                        Some(in_flight) => res.map(|inner| Body::wrap(CountedBody { inner, _in_flight: in_flight })),
                        None => res,
                    };
                }
                Ok(Err((error, unsent))) => {
                    drop(in_flight);
                    if let Some(res) = client_body_failed(self.client_body.as_ref(), &self.route, &target.authority) {
                        return res;
                    }
                    upstreams.failed(index);
                    let connect = matches!(error, PoolError::Connect(_));
                    let again = unsent.or_else(|| head.as_ref().map(replay));
                    let next = again.is_some().then(|| retry(attempt, tried)).flatten();
                    if let Some(failures) = self.route.failure_due() {
                        tracing::warn!(
                            route = %self.route,
                            upstream = %target.authority,
                            %error,
                            failures,
                            retrying = next.is_some(),
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
                Err(_) => {
                    drop(in_flight);
                    if let Some(res) = client_body_failed(self.client_body.as_ref(), &self.route, &target.authority) {
                        return res;
                    }
                    upstreams.failed(index);
                    if let Some(failures) = self.route.failure_due() {
                        let timeout = self.timeout;
                        tracing::warn!(route = %self.route, upstream = %target.authority, ?timeout, failures, "upstream did not answer in time");
                    }
                    return response::generated_error(StatusCode::GATEWAY_TIMEOUT, TOO_SLOW);
                }
            }
        }
    }
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

/// The upgraded connections (WebSocket and the like) of this process, still open.
///
/// Once upgraded, a connection has left hyper's server connection, so the graceful shutdown's
/// connection watch no longer sees it: the server waits for these too, within the same grace
/// period, and the ones still open when it ends are closed.
pub fn tunnels() -> &'static TaskTracker {
    static TUNNELS: OnceLock<TaskTracker> = OnceLock::new();
    TUNNELS.get_or_init(TaskTracker::new)
}

/// Copies bytes both ways between the client's and the upstream's upgraded connections until
/// either side closes.
fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, name: Authority) {
    tunnels().spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(upstream = %name, %error, "upgraded connection ended with an error");
                }
            }
            Err(error) => tracing::debug!(upstream = %name, %error, "connection upgrade failed"),
        }
    });
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

fn authority_value(authority: &Authority) -> Option<HeaderValue> {
    HeaderValue::from_str(authority.as_str()).ok()
}

/// Whether the request asks to switch protocols (`Connection: upgrade` with an `Upgrade` header).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_options(headers).any(|o| o.eq_ignore_ascii_case("upgrade"))
}

/// The comma-separated options of every `Connection` header, trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// Removes the headers that describe one connection, not the message (RFC 9110 §7.6.1). With
/// `keep_upgrade`, `Upgrade` stays (the caller sets `Connection: upgrade` again).
///
/// One walk over the names finds what is there: most messages carry none of these headers, or only
/// `Connection`, and every `remove` hashes its name whether or not the header is present.
fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present: Vec<HeaderName> = Vec::new();
    let mut connection = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if is_hop_by_hop(name, keep_upgrade) {
            present.push(name.clone());
        }
    }
    if connection {
        // The headers it names are hop-by-hop too.
        // `keep-alive` (its header is in the list already) and `close` are what upstreams send;
        // skipping them saves parsing a name per response.
        let named = connection_options(headers)
            .filter(|o| !o.eq_ignore_ascii_case("keep-alive") && !o.eq_ignore_ascii_case("close"));
        for option in named {
            if let Ok(name) = HeaderName::from_bytes(option.as_bytes())
                && !(keep_upgrade && name == header::UPGRADE)
                && !present.contains(&name)
            {
                present.push(name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in present {
        headers.remove(name);
    }
}

/// The hop-by-hop headers every message loses; `Proxy-Authorization`, `Proxy-Connection`, … are
/// meant for a proxy, which the gateway is.
fn is_hop_by_hop(name: &HeaderName, keep_upgrade: bool) -> bool {
    *name == KEEP_ALIVE
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || (*name == header::UPGRADE && !keep_upgrade)
        || name.as_str().starts_with("proxy-")
}

/// Adds the forwarding headers the route asks for.
///
/// From a trusted proxy (`[server] trusted_proxies`), the incoming headers describe the hops before
/// it: `X-Forwarded-For` and `Forwarded` are appended to, and its `X-Forwarded-Proto` and
/// `X-Forwarded-Host` are kept (a TLS-terminating load balancer says `https`, and the upstream must
/// build `https` links). From anyone else they are the client's unverifiable claim: all of them are
/// dropped, so an upstream that believes them cannot be fooled, and this hop's own values replace
/// them. A route with `forwarded = "none"` sends none at all. The peer is the TCP peer; `secure`:
/// it connected over TLS (`proto=https`).
fn add_forwarding(
    headers: &mut HeaderMap,
    mode: ForwardedHeaders,
    peer: Option<SocketAddr>,
    secure: bool,
    from_trusted_proxy: bool,
    host: Option<&HeaderValue>,
) {
    if !from_trusted_proxy || mode == ForwardedHeaders::None {
        // Removed only when present: a clean request (the usual case) costs a walk over the names.
        let claimed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| {
                **n == X_FORWARDED_FOR
                    || **n == X_FORWARDED_PROTO
                    || **n == X_FORWARDED_HOST
                    || **n == header::FORWARDED
            })
            .cloned()
            .collect();
        for name in claimed {
            headers.remove(name);
        }
    }
    let ip = peer.map(|p| p.ip());
    if matches!(mode, ForwardedHeaders::XForwarded | ForwardedHeaders::Both) {
        if let Some(ip) = ip {
            if headers.contains_key(&X_FORWARDED_FOR) {
                append_list(headers, X_FORWARDED_FOR, &ip.to_string());
            } else {
                headers.insert(X_FORWARDED_FOR, ip_value(ip));
            }
        }
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if secure { "https" } else { "http" }));
        }
        if let Some(host) = host.filter(|_| !headers.contains_key(X_FORWARDED_HOST)) {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
    if matches!(mode, ForwardedHeaders::Forwarded | ForwardedHeaders::Both) {
        append_list(headers, header::FORWARDED, &forwarded_element(ip, secure, host));
    }
}

/// An address as a header value, written without the formatting machinery for IPv4.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(39);
    write_ip(&mut text, ip);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or(HeaderValue::from_static("unknown"))
}

/// One RFC 7239 element: `for=192.0.2.1;proto=http;host=example.com`, IPv6 and ports quoted.
fn forwarded_element(ip: Option<IpAddr>, secure: bool, host: Option<&HeaderValue>) -> String {
    let mut element = match ip {
        Some(IpAddr::V4(v4)) => format!("for={v4};"),
        Some(IpAddr::V6(v6)) => format!("for=\"[{v6}]\";"),
        None => String::new(),
    };
    element.push_str(if secure { "proto=https" } else { "proto=http" });
    // A host that would need escaping is left out rather than risk breaking the header's syntax.
    if let Some(host) = host
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b)))
    {
        if host.contains(':') {
            element.push_str(&format!(";host=\"{host}\""));
        } else {
            element.push_str(&format!(";host={host}"));
        }
    }
    element
}

/// Appends `item` to a comma-separated header, folding repeated headers into one line.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let existing: Vec<&str> = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).collect();
    let value = if existing.is_empty() { item.to_string() } else { format!("{}, {item}", existing.join(", ")) };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::http::GeneratedError;

    fn proxy(upstream: &str, prefix: &str, options: ProxyOptions) -> Proxy {
        let targets = [UpstreamTarget { url: upstream.parse().unwrap(), weight: 1 }];
        Proxy::new(
            &targets,
            prefix,
            &options,
            &UpstreamOptions::default(),
            Arc::new(TrustedProxies::none()),
            vec![None],
        )
    }

    impl Proxy {
        /// The absolute URI the (first) target is asked for.
        fn upstream_uri(&self, uri: &Uri) -> Option<Uri> {
            self.absolute_uri(&self.upstreams.targets[0], &self.forwarded_path(uri)?)
        }

        /// The request as sent to the (first) target.
        fn aimed(&self, req: Request) -> Request {
            let Outgoing { mut req, forwarded, target_host } = self.outgoing(req, false).unwrap();
            assert!(aim(&mut req, &self.upstreams.targets[0], &forwarded, target_host));
            req
        }
    }

    #[tokio::test]
    async fn paths_keep_or_lose_the_prefix_and_gain_the_base_path() {
        let keep = proxy("http://127.0.0.1:9", "/api", ProxyOptions::default());
        let uri: Uri = "/api/tasks?x=1".parse().unwrap();
        assert_eq!(keep.upstream_uri(&uri).unwrap().to_string(), "http://127.0.0.1:9/api/tasks?x=1");
        let strip = proxy("http://127.0.0.1:9/app/", "/api", ProxyOptions { strip_prefix: true, ..Default::default() });
        assert_eq!(strip.upstream_uri(&uri).unwrap().to_string(), "http://127.0.0.1:9/app/tasks?x=1");
        assert_eq!(strip.upstream_uri(&"/api".parse().unwrap()).unwrap().to_string(), "http://127.0.0.1:9/app/");
        let root = proxy("http://127.0.0.1:9", "/", ProxyOptions { strip_prefix: true, ..Default::default() });
        assert_eq!(root.upstream_uri(&"/x".parse().unwrap()).unwrap().to_string(), "http://127.0.0.1:9/x");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for octets in [[0, 0, 0, 0], [127, 0, 0, 1], [9, 10, 99, 100], [255, 254, 200, 101], [192, 0, 2, 7]] {
            let ip = IpAddr::from(octets);
            assert_eq!(ip_value(ip).to_str().unwrap(), ip.to_string());
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_value(v6).to_str().unwrap(), "2001:db8::1");
    }

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic eA=="));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        remove_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-request-id"]);
    }

    #[test]
    fn upgrades_keep_their_upgrade_header() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(!h.contains_key(header::CONNECTION));
        let mut plain = HeaderMap::new();
        plain.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&plain), "Upgrade without Connection: upgrade is not a request to switch");
    }

    /// What a client or a proxy in front of strata might send.
    fn incoming_forwarding_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("public.example"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=203.0.113.1"));
        h
    }

    #[test]
    fn forwarding_headers_from_a_trusted_proxy_are_extended() {
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let host = HeaderValue::from_static("app.example:8080");
        let mut h = incoming_forwarding_headers();
        add_forwarding(&mut h, ForwardedHeaders::Both, Some(peer), false, true, Some(&host));
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.1, 198.51.100.2, 192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https", "the TLS-terminating proxy's word is kept");
        assert_eq!(h[X_FORWARDED_HOST], "public.example");
        assert_eq!(h[header::FORWARDED], "for=203.0.113.1, for=192.0.2.7;proto=http;host=\"app.example:8080\"");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(forwarded_element(Some(v6.ip()), false, None), "for=\"[::1]\";proto=http");
        assert_eq!(forwarded_element(Some(v6.ip()), true, None), "for=\"[::1]\";proto=https");
        let mut none = incoming_forwarding_headers();
        add_forwarding(&mut none, ForwardedHeaders::None, Some(peer), false, true, Some(&host));
        assert!(none.is_empty(), "forwarded = \"none\" sends none: {none:?}");
    }

    #[test]
    fn forwarding_headers_from_anyone_else_are_replaced() {
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let host = HeaderValue::from_static("app.example:8080");
        let mut h = incoming_forwarding_headers();
        add_forwarding(&mut h, ForwardedHeaders::Both, Some(peer), false, false, Some(&host));
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "app.example:8080");
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=http;host=\"app.example:8080\"");
        // Over TLS this hop says `https`, whatever the client claimed.
        let mut h = incoming_forwarding_headers();
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        add_forwarding(&mut h, ForwardedHeaders::Both, Some(peer), true, false, Some(&host));
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=https;host=\"app.example:8080\"");
        // A route that sends none still drops the client's claims.
        let mut h = incoming_forwarding_headers();
        add_forwarding(&mut h, ForwardedHeaders::None, Some(peer), false, false, Some(&host));
        assert!(h.is_empty(), "{h:?}");
    }

    #[tokio::test]
    async fn outgoing_requests_get_the_upstream_uri_and_host() {
        let p = proxy("http://127.0.0.1:9", "/", ProxyOptions::default());
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = "/x".parse().unwrap();
        req.headers_mut().insert(header::HOST, HeaderValue::from_static("front.example"));
        let out = p.aimed(req);
        assert_eq!(out.uri(), "/x");
        assert_eq!(out.headers()[header::HOST], "front.example");
        assert_eq!(out.headers()[X_FORWARDED_HOST], "front.example");
        let rewrite = proxy("http://127.0.0.1:9", "/", ProxyOptions { preserve_host: false, ..Default::default() });
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = "http://front.example/x".parse().unwrap();
        *req.version_mut() = Version::HTTP_2;
        let out = rewrite.aimed(req);
        assert_eq!(out.headers()[header::HOST], "127.0.0.1:9");
        assert_eq!(out.headers()[X_FORWARDED_HOST], "front.example");
        assert_eq!(out.version(), Version::HTTP_11);
    }

    #[test]
    fn via_elements_are_found_in_any_position_and_not_inside_comments() {
        assert!(via_names(b"1.1 strata", "strata"));
        assert!(via_names(b"1.0 fred, 1.1 nginx,1.1 Strata (front)", "strata"));
        assert!(via_names(b"HTTP/2 strata", "strata"));
        assert!(!via_names(b"1.1 strata-edge, 1.1 example.com:8080", "strata"));
        assert!(!via_names(b"1.1 nginx (with, 1.1 strata inside a comment)", "strata"));
        assert!(!via_names(b"strata", "strata"), "the first word is the protocol, not the name");
        assert!(!via_names(b"", "strata"));
    }

    #[test]
    fn via_is_appended_as_one_list() {
        let via = Via::new("edge").unwrap();
        assert_eq!(via.element(Version::HTTP_10), "1.0 edge");
        assert_eq!(via.element(Version::HTTP_11), "1.1 edge");
        assert_eq!(via.element(Version::HTTP_2), "2 edge");
        let mut h = HeaderMap::new();
        append_via(&mut h, via.element(Version::HTTP_11));
        assert_eq!(h[header::VIA], "1.1 edge");
        let mut h = HeaderMap::new();
        h.append(header::VIA, HeaderValue::from_static("1.0 fred"));
        h.append(header::VIA, HeaderValue::from_static("1.1 nginx"));
        append_via(&mut h, via.element(Version::HTTP_2));
        assert_eq!(h.get_all(header::VIA).iter().collect::<Vec<_>>(), ["1.0 fred, 1.1 nginx, 2 edge"]);
    }

    #[tokio::test]
    async fn outgoing_requests_carry_via_unless_the_route_turns_it_off() {
        let request = || {
            let mut req = Request::new(Body::empty());
            *req.uri_mut() = "/x".parse().unwrap();
            *req.version_mut() = Version::HTTP_10;
            req.headers_mut().insert(header::VIA, HeaderValue::from_static("1.1 cdn"));
            // A client naming Via as hop-by-hop does not remove this hop's element.
            req.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("via"));
            req
        };
        let on = proxy("http://127.0.0.1:9", "/", ProxyOptions::default());
        assert_eq!(on.aimed(request()).headers()[header::VIA], "1.0 strata");
        let off = proxy("http://127.0.0.1:9", "/", ProxyOptions { via: false, ..Default::default() });
        assert!(off.aimed(request()).headers().get(header::VIA).is_none());
        let mut kept = request();
        kept.headers_mut().remove(header::CONNECTION);
        assert_eq!(on.aimed(kept).headers()[header::VIA], "1.1 cdn, 1.0 strata");
    }

    #[tokio::test]
    async fn a_request_that_names_this_gateway_in_via_is_a_marked_508() {
        // Nothing listens there: a forwarded request would be a 502, not a 508.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let looped = || {
            let mut req = Request::new(Body::empty());
            *req.uri_mut() = "/".parse().unwrap();
            req.headers_mut().insert(header::VIA, HeaderValue::from_static("1.1 nginx, 1.1 edge"));
            req
        };
        let options = ProxyOptions { via_pseudonym: "edge".into(), ..Default::default() };
        let res = proxy(&format!("http://127.0.0.1:{port}"), "/", options.clone()).call(looped()).await;
        assert_eq!(res.status(), StatusCode::LOOP_DETECTED);
        assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(LOOPED));
        // Another gateway's name, or Via turned off: forwarded (and refused by the closed port).
        let other = ProxyOptions { via_pseudonym: "inner".into(), ..Default::default() };
        let res = proxy(&format!("http://127.0.0.1:{port}"), "/", other).call(looped()).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let off = ProxyOptions { via: false, ..options };
        let res = proxy(&format!("http://127.0.0.1:{port}"), "/", off).call(looped()).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    }

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

    #[tokio::test]
    async fn a_closed_port_is_a_marked_502() {
        // Bind then drop: the port is free and nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let p = proxy(&format!("http://127.0.0.1:{port}"), "/", ProxyOptions::default());
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = "/".parse().unwrap();
        let res = p.call(req).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(res.extensions().get::<GeneratedError>().and_then(|g| g.detail()), Some(UNREACHABLE));
    }
}
