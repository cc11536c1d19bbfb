//! HTTP as one instantiation of the core: [`Request`], [`Response`], [`Body`] and response helpers.

mod body;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod client_ip;
pub mod headers;
pub mod path;
pub mod response;

pub use body::{Body, BodyError, BodyReadTimeout, BoxError, is_read_timeout};

/// An HTTP request as strata's layers see it.
pub type Request = http::Request<Body>;
/// An HTTP response as strata's layers see it.
pub type Response = http::Response<Body>;
/// The rest of an HTTP stack, as seen from inside one layer.
pub type Next = crate::stack::Next<Request, Response>;
/// An HTTP stack.
pub type Stack = crate::stack::Stack<Request, Response>;
/// An HTTP stack wrapped around its endpoint.
pub type Service = crate::stack::Service<Request, Response>;
/// A named HTTP layer.
pub type NamedLayer = crate::stack::NamedLayer<Request, Response>;

/// [`crate::from_fn`] for HTTP stacks: the closure's arguments are a [`Request`] and a [`Next`], so
/// `|req, next| async move { .. }` needs no type annotations (the generic `from_fn` leaves them to
/// be inferred, which fails as soon as the body calls a method on the response).
///
/// ```
/// use strata::http::{Body, Request, Response, Stack, from_fn};
///
/// let service = Stack::new()
///     .with(from_fn(|req, next| async move {
///         let mut res = next.run(req).await;
///         res.headers_mut().insert("x-powered-by", "strata".parse().unwrap());
///         res
///     }))
///     .serve(|_req: Request| async { Response::new(Body::from("hello")) });
/// # let _ = service;
/// ```
pub fn from_fn<F, Fut>(f: F) -> crate::FromFn<F, Fut>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    crate::from_fn(f)
}

impl crate::stack::FromPanic for Response {
    /// A bare 500 marked [`GeneratedError`]: the panic message stays in the logs, never in the
    /// response.
    fn from_panic(_panic: &crate::stack::Panic<'_>) -> Self {
        let mut res = response::text(http::StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n");
        res.extensions_mut().insert(GeneratedError::new());
        res
    }
}

/// Marks a response as an error strata made (not the application), so the `errors` middleware may
/// replace its body. The core marks the 500 it answers a panic with.
///
/// Layers that answer with an error of their own (a proxy's 502, a timeout's 504, a rate limit's
/// 429) insert it in the response's extensions:
///
/// ```
/// use strata::http::GeneratedError;
///
/// let mut res = strata::http::response::status(http::StatusCode::BAD_GATEWAY);
/// res.extensions_mut().insert(GeneratedError::with_detail("The upstream server did not answer."));
/// ```
///
/// The detail is `&'static str` on purpose: it is shown to clients, so it must be a fixed sentence
/// written for them, never text built from a request, an upstream or an error value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratedError {
    detail: Option<&'static str>,
}

impl GeneratedError {
    /// A marker with the generic detail for the response's status.
    pub const fn new() -> Self {
        GeneratedError { detail: None }
    }

    /// A marker with a fixed, client-safe sentence to use as the problem's `detail`.
    pub const fn with_detail(detail: &'static str) -> Self {
        GeneratedError { detail: Some(detail) }
    }

    /// The client-safe detail, if the layer gave one.
    pub const fn detail(&self) -> Option<&'static str> {
        self.detail
    }
}

/// Why a layer answered a request by itself instead of passing it on (a `401`, a preflight's
/// `204`, a `429`…), in the response's extensions.
///
/// For people, not clients: `strata explain --request` and debugging tools show it; it is never
/// written into the response. A reason names what was checked and what failed ("origin not in
/// allow_origins", "wrong password"), never a secret the request carried.
///
/// ```
/// use strata::http::Refusal;
///
/// let mut res = strata::http::response::status(http::StatusCode::PAYLOAD_TOO_LARGE);
/// res.extensions_mut().insert(Refusal::new("body larger than max_bytes (1024)"));
/// assert_eq!(res.extensions().get::<Refusal>().unwrap().reason, "body larger than max_bytes (1024)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What the layer checked and why the request did not pass.
    pub reason: std::borrow::Cow<'static, str>,
}

impl Refusal {
    /// A refusal for this reason.
    pub fn new(reason: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Refusal { reason: reason.into() }
    }

    /// Marks `res` as answered by the layer for `reason`, and returns it.
    pub fn mark(mut res: Response, reason: impl Into<std::borrow::Cow<'static, str>>) -> Response {
        res.extensions_mut().insert(Refusal::new(reason));
        res
    }
}

/// Where a request came from, in the request's extensions.
///
/// The gateway's server sets it for stacks with a layer declaring
/// [`Fact::ReadsClientAddress`](crate::Fact::ReadsClientAddress) (an access log, a rate limit): a
/// middleware that reads it must declare that fact, and stacks without one save the cost.
///
/// A library user serving a stack with their own server inserts it the same way, resolving the
/// client once per request with [`client_ip::client_ip`] (or [`ConnectionInfo::resolve`]):
///
/// ```
/// use strata::http::ConnectionInfo;
/// use strata::http::client_ip::TrustedProxies;
///
/// let trusted = TrustedProxies::parse(["127.0.0.1/32"]).unwrap();
/// let mut req = http::Request::new(strata::http::Body::default());
/// req.headers_mut().insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
/// let info = ConnectionInfo::resolve("127.0.0.1:50000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap(), req.headers(), &trusted);
/// assert_eq!(info.client.to_string(), "203.0.113.9");
/// req.extensions_mut().insert(info);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The address of the TCP peer (a client, or a proxy in front of strata).
    pub peer: std::net::SocketAddr,
    /// The local address the connection was accepted on.
    pub local: std::net::SocketAddr,
    /// The client's address: the peer's, or, when the peer is a trusted proxy, the one its
    /// forwarding header names (see [`client_ip`]). What rate limits key on and access logs show.
    pub client: std::net::IpAddr,
    /// Whether the connection is TLS (the request's scheme is `https`); set with
    /// [`ConnectionInfo::over_tls`].
    pub secure: bool,
}

impl ConnectionInfo {
    /// A connection with no trusted proxy in front: the peer is the client.
    pub fn new(peer: std::net::SocketAddr, local: std::net::SocketAddr) -> Self {
        ConnectionInfo { peer, local, client: peer.ip().to_canonical(), secure: false }
    }

    /// A connection whose client is resolved from the request's forwarding header when `peer` is
    /// one of the `trusted` proxies.
    pub fn resolve(
        peer: std::net::SocketAddr,
        local: std::net::SocketAddr,
        headers: &http::HeaderMap,
        trusted: &client_ip::TrustedProxies,
    ) -> Self {
        ConnectionInfo { peer, local, client: client_ip::client_ip(peer.ip(), headers, trusted), secure: false }
    }

    /// The same connection, marked as TLS when `secure` (both constructors assume plain TCP).
    pub fn over_tls(self, secure: bool) -> Self {
        ConnectionInfo { secure, ..self }
    }
}

/// The request id of the current request, set by the `request_id` middleware in the request's
/// extensions for inner layers, logs and upstreams.
///
/// While the layers inside `request_id` run, the id is also the task's [`AssignedRequestId::current`], so
/// that a log line written where the request is out of reach (a caught panic, a proxy's failure)
/// still names its request:
///
/// ```
/// use strata::http::AssignedRequestId;
///
/// tracing::warn!(request_id = AssignedRequestId::current().map(tracing::field::display), "something failed");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignedRequestId(pub http::HeaderValue);

tokio::task_local! {
    /// The id of the request whose layers the task is running (see [`AssignedRequestId::scope`]).
    static CURRENT_REQUEST_ID: AssignedRequestId;
}

impl AssignedRequestId {
    /// Runs `future` with this id as the task's [`AssignedRequestId::current`].
    ///
    /// A task-local rather than a tracing span: it costs a reference count and no allocation per
    /// request, and nothing at all until a log line asks for it.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT_REQUEST_ID.scope(self, future)
    }

    /// The id of the request this task is serving, when a `request_id` layer outside the caller
    /// set one ([`AssignedRequestId::scope`]). `None` outside a request, and in tasks a request spawned.
    pub fn current() -> Option<AssignedRequestId> {
        CURRENT_REQUEST_ID.try_with(AssignedRequestId::clone).ok()
    }

    /// The id as text (the `request_id` layer only makes and accepts visible ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("<non-ASCII request id>")
    }
}

impl std::fmt::Display for AssignedRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The user an authentication layer verified, set in the request's extensions for inner layers
/// (logs, rate-limit keys, upstream headers). Also copied into the response's extensions so that
/// layers outside the authentication layer (an access log) can see it on the way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedUser(pub std::sync::Arc<str>);

/// The route a router picked for the request, in the request's extensions: its name as logs and
/// metrics show it (the prefix, `/api`, after the route's hosts when it names some,
/// `api.example.com/v1`).
///
/// The gateway's router inserts it for the routes whose stack has a layer that reads it (a
/// `headers` layer, for `{route}`); a library user routing requests inserts it the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedRoute(pub std::sync::Arc<str>);

/// A stack served straight by hyper (`hyper::server::conn::http1::Builder::serve_connection`):
/// the incoming body becomes a [`Body`] without boxing, and the call never fails.
impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Service {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Map<
        crate::stack::Run<Response>,
        fn(Response) -> Result<Response, std::convert::Infallible>,
    >;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use futures_util::FutureExt;
        crate::stack::Service::call(self, req.map(Body::from)).map(Ok)
    }
}
