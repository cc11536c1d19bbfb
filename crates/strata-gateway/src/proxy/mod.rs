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

mod body;
mod exchange;
mod headers;

pub(crate) use body::{error_chain, log_truncated};

use std::sync::{Arc, OnceLock};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{StatusCode, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use strata::BoxFuture;
use strata::Endpoint;
use strata::http::{AssignedRequestId, Body, ConnectionInfo, Request, Response, response};
use tokio_util::task::TaskTracker;

use crate::config::{ProxyOptions, UpstreamOptions, UpstreamTarget};
use crate::tls_client::{self, UpstreamTls};
use crate::upstream::{Backend, Outcome, Upstreams};
use strata::http::client_ip::TrustedProxies;

use body::{WatchedResponseBody, client_body_failed, watch_request_body};
use exchange::Exchange;
use headers::{Via, add_forwarding, append_via, authority_value, is_upgrade, remove_hop_by_hop, response_headers};

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
    /// Answers in the targets' place (see [`Proxy::answering_with`]); `None` when serving.
    stub: Option<Arc<dyn Endpoint<Request, Response>>>,
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

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<&Authority> = self.upstreams.targets.iter().map(|t| &t.authority).collect();
        f.debug_struct("Proxy").field("upstreams", &targets).field("options", &self.options).finish()
    }
}

/// What a request on its way upstream is aimed with, once per target tried.
struct Outgoing {
    /// The path and query every target gets, after its own base path.
    forwarded: PathAndQuery,
    /// Whether `Host` names the target (`preserve_host = false`, or a client that sent none).
    target_host: bool,
}

impl Proxy {
    /// A proxy to `targets` (`http[s]://host:port[/base]` URLs, checked by the config) for the
    /// route at `prefix`, named `name` in logs (its hosts and prefix); `tls` holds, per target, how
    /// an `https://` one is spoken to (`None` for `http://`).
    ///
    /// `trusted` are the `[server] trusted_proxies`: forwarding headers arriving from one of them
    /// are extended, from anyone else they are the client's own claim and are replaced.
    pub fn new(
        targets: &[UpstreamTarget],
        prefix: &str,
        name: &str,
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
        let upstreams = Arc::new(Upstreams::new(targets, name, options, upstream, tls));
        Proxy {
            upstreams,
            client,
            scheme: targets.first().and_then(|t| t.url.scheme().cloned()).unwrap_or(Scheme::HTTP),
            prefix: if prefix == "/" { String::new() } else { prefix.to_string() },
            options: options.clone(),
            trusted,
            via: if options.via { Via::new(&options.via_pseudonym).map(Arc::new) } else { None },
            route: RouteLog::new(name),
            stub: None,
        }
    }

    /// This proxy, handing each request to `stub` instead of sending it: the request `stub` gets
    /// is the one the first target picked would get (path, `Host`, `Via` and forwarding headers).
    /// For `strata explain --request`, which shows what the upstream would see without calling it.
    pub fn answering_with(self, stub: Arc<dyn Endpoint<Request, Response>>) -> Proxy {
        Proxy { stub: Some(stub), ..self }
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
                // A `rewrite` in the route may have moved the path out from under the prefix:
                // then it is forwarded whole.
                let below =
                    path.strip_prefix(self.prefix.as_str()).filter(|rest| rest.is_empty() || rest.starts_with('/'));
                let path = if self.options.strip_prefix { below.unwrap_or(path) } else { path };
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

    /// Turns the client's request into the upstream's, in place: version, hop-by-hop and
    /// forwarding headers, `Host` when it is the client's. The body is left where it is, unread. The
    /// URI (and a target's `Host`) are set by [`aim`] for each target tried. `None` when the path
    /// cannot be forwarded.
    ///
    /// In place rather than taken apart and put back together: each move of a request copies its
    /// ~250 bytes, and the proxy's path moved it several times per request.
    fn outgoing(&self, req: &mut Request, upgrade: bool) -> Option<Outgoing> {
        // The TCP peer, even once ConnectionInfo also carries a client address resolved through
        // trusted proxies: each hop appends the address it saw, and the list stays verifiable.
        let connection = req.extensions().get::<ConnectionInfo>();
        let peer = connection.map(|c| c.peer);
        let secure = connection.is_some_and(|c| c.secure);
        let forwarded = self.forwarded_path(req.uri())?;

        // HTTP/2 clients carry the host in the URI, HTTP/1.1 clients in `Host`.
        let client_host =
            req.headers().get(header::HOST).cloned().or_else(|| req.uri().authority().and_then(authority_value));
        let version = req.version();
        let headers = req.headers_mut();
        remove_hop_by_hop(headers, upgrade);
        // After the hop-by-hop headers: a `Connection: via` from the client must not remove ours.
        if let Some(via) = &self.via {
            append_via(headers, via.element(version));
        }
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let mut target_host = false;
        match (&client_host, self.options.preserve_host) {
            // HTTP/2 names the host in `:authority`, which is the upstream's (the connection goes
            // where the URI points): a `Host` that differs from it is malformed (RFC 9113 §8.3.1).
            _ if self.options.http2 => {
                headers.remove(header::HOST);
            }
            (Some(host), true) => {
                headers.insert(header::HOST, host.clone());
            }
            _ => target_host = true,
        }
        let from_trusted_proxy = peer.is_some_and(|p| self.trusted.contains(p.ip()));
        add_forwarding(headers, self.options.forwarded, peer, secure, from_trusted_proxy, client_host.as_ref());
        *req.version_mut() = if self.options.http2 { Version::HTTP_2 } else { Version::HTTP_11 };
        // The server's extensions (its upgrade handle, our ConnectionInfo) mean nothing upstream.
        *req.extensions_mut() = http::Extensions::new();
        Some(Outgoing { forwarded, target_host })
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

/// The answer when every target is out: `503` with `Retry-After`.
fn no_target(upstreams: &Upstreams, route: &RouteLog) -> Response {
    if let Some(failures) = route.failure_due() {
        tracing::warn!(%route, failures, request_id = AssignedRequestId::current().map(tracing::field::display), "every upstream of the route is out (ejected or failing health checks)");
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
            tracing::debug!(route = %self.route, request_id = AssignedRequestId::current().map(tracing::field::display), "request loop refused: Via names this gateway");
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
        let Some(Outgoing { forwarded, target_host }) = self.outgoing(&mut req, upgrade) else {
            return Box::pin(std::future::ready(response::generated_error(StatusCode::BAD_REQUEST, BAD_TARGET)));
        };
        if let Some(stub) = &self.stub {
            if !aim(&mut req, &self.upstreams.targets[first], &forwarded, target_host) {
                return Box::pin(std::future::ready(response::generated_error(StatusCode::BAD_REQUEST, BAD_TARGET)));
            }
            return stub.call(req);
        }
        let client_body = watch_request_body(&mut req);
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
            // Allocated first, so that the future (the pool's send and its timeout inside it) is
            // written straight into the box: `Box::pin(future)` builds it on the stack and copies
            // all of it, ~650 bytes of memcpy per request.
            let slot = Box::new_uninit();
            let boxed = Box::write(slot, exchange.run(req, first));
            return Box::into_pin(boxed);
        }
        let upstreams = self.upstreams.clone();
        let target = &upstreams.targets[first];
        let Some(uri) = self.absolute_uri(target, &forwarded) else {
            return Box::pin(std::future::ready(response::generated_error(StatusCode::BAD_REQUEST, BAD_TARGET)));
        };
        *req.uri_mut() = uri;
        if target_host {
            req.headers_mut().insert(header::HOST, target.host.clone());
        }
        let timeout = self.options.timeout;
        let upstream = target.authority.clone();
        let route = self.route.clone();
        let via = self.via.clone();
        let client = self.client.clone();
        Box::pin(async move {
            let in_flight = upstreams.begin(first);
            let mut res = match tokio::time::timeout(timeout, client.request(req)).await {
                Ok(Ok(res)) => res,
                Ok(Err(error)) => {
                    if let Some(res) = client_body_failed(client_body.as_ref(), &route, &upstream) {
                        return res;
                    }
                    let connect = error.is_connect();
                    upstreams.failed(first, if connect { Outcome::ConnectFailure } else { Outcome::Broken });
                    // The error names the upstream and the OS error: useful to operators, kept from clients.
                    if let Some(failures) = route.failure_due() {
                        tracing::warn!(
                            %route,
                            %upstream,
                            error = %error_chain(&error),
                            failures,
                            request_id = AssignedRequestId::current().map(tracing::field::display),
                            "upstream request failed"
                        );
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
                    upstreams.failed(first, Outcome::Timeout);
                    if let Some(failures) = route.failure_due() {
                        tracing::warn!(%route, %upstream, ?timeout, failures, request_id = AssignedRequestId::current().map(tracing::field::display), "upstream did not answer in time");
                    }
                    return response::generated_error(StatusCode::GATEWAY_TIMEOUT, TOO_SLOW);
                }
            };
            drop(in_flight);
            if res.status().is_server_error() {
                upstreams.failed(first, Outcome::ServerError);
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
            // The body is read after this request's task-local id is gone: it keeps its own.
            let request_id = AssignedRequestId::current();
            res.map(|incoming| Body::wrap(WatchedResponseBody { inner: incoming, route, upstream, request_id }))
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use headers::X_FORWARDED_HOST;
    use strata::http::GeneratedError;

    fn proxy(upstream: &str, prefix: &str, options: ProxyOptions) -> Proxy {
        let targets = [UpstreamTarget { url: upstream.parse().unwrap(), weight: 1 }];
        Proxy::new(
            &targets,
            prefix,
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
        fn aimed(&self, mut req: Request) -> Request {
            let Outgoing { forwarded, target_host } = self.outgoing(&mut req, false).unwrap();
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
        // A path a rewrite moved out from under the prefix is forwarded whole.
        assert_eq!(
            strip.upstream_uri(&"/apix/y".parse().unwrap()).unwrap().to_string(),
            "http://127.0.0.1:9/app/apix/y"
        );
        assert_eq!(strip.upstream_uri(&"/v2".parse().unwrap()).unwrap().to_string(), "http://127.0.0.1:9/app/v2");
        let root = proxy("http://127.0.0.1:9", "/", ProxyOptions { strip_prefix: true, ..Default::default() });
        assert_eq!(root.upstream_uri(&"/x".parse().unwrap()).unwrap().to_string(), "http://127.0.0.1:9/x");
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
