//! What a listener hands each request to ([`Handler`], [`Connection`]), the hook that turns an
//! accepted socket into the stream to serve ([`Accept`]: TLS lives there), and the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ConnectionLimits;
use super::count::{ConnectionCount, LogEvery};
use super::protocol::{Protocols, Serving};
use super::watchdog::{self, ConnectionState, GuardedIo, TimedBody, TrackedBody};
use crate::http::client_ip::TrustedProxies;
use crate::http::{Body, ConnectionInfo, Request, Response, Service};

/// What a server hands each request to: a [`Service`] (a served [`Stack`](crate::Stack)), or a
/// type of the caller's that routes requests itself.
pub trait Handler: Send + Sync + 'static {
    /// The future of one answer.
    type Answer: Future<Output = Response> + Send + 'static;

    /// Answers one request that arrived on `connection`.
    fn handle(&self, req: Request, connection: &Connection<'_>) -> Self::Answer;
}

impl<H: Handler> Handler for Arc<H> {
    type Answer = H::Answer;

    fn handle(&self, req: Request, connection: &Connection<'_>) -> H::Answer {
        H::handle(self, req, connection)
    }
}

/// Every request gets its [`ConnectionInfo`], whatever the stack's facts say: the endpoint (an
/// app reading the client's address) is not among the layers that declare them.
impl Handler for Service {
    type Answer = crate::Run<Response>;

    fn handle(&self, mut req: Request, connection: &Connection<'_>) -> crate::Run<Response> {
        let info = connection.info(req.headers());
        req.extensions_mut().insert(info);
        self.call(req)
    }
}

/// The connection a request arrived on, with what it takes to resolve the client's address.
#[derive(Clone, Copy, Debug)]
pub struct Connection<'a> {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// The proxies whose forwarding header names the client (the server's
    /// [`trusted_proxies`](super::Serve::trusted_proxies)).
    pub trusted: &'a TrustedProxies,
    /// Whether the connection is TLS (as its [`Accept`] hook said).
    pub secure: bool,
    /// On a TLS connection, the server name its handshake sent (SNI), lowercase.
    pub server_name: Option<&'a str>,
}

impl Connection<'_> {
    /// Where the request with `headers` came from: the peer, or the client a trusted proxy's
    /// forwarding header names. Per request, not per connection: a proxy multiplexes many clients
    /// on one connection.
    pub fn info(&self, headers: &http::HeaderMap) -> ConnectionInfo {
        ConnectionInfo::resolve(self.peer, self.local, headers, self.trusted).over_tls(self.secure)
    }
}

/// A stream ready to serve HTTP on, with what the handshake that made it learnt.
#[derive(Debug)]
pub struct Accepted<Io> {
    /// The stream: the socket itself, or a TLS stream around it.
    pub io: Io,
    /// Whether the stream is TLS.
    pub secure: bool,
    /// The server name a TLS handshake sent (SNI), lowercase.
    pub server_name: Option<Arc<str>>,
}

/// Turns an accepted socket into the stream HTTP is served on: a TLS handshake, for example, kept
/// out of this crate so that it depends on no TLS library.
///
/// The socket comes wrapped in the connection's watchdog ([`GuardedIo`]): keep it as the
/// innermost stream so that the watchdog sees the client's bytes, not the decrypted ones.
pub trait Accept: Send + Sync + 'static {
    /// The stream served.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Makes the stream for the connection from `peer`, or `None` to close it (having logged
    /// why, if it is news). A handshake must end by `deadline` (the accept plus
    /// `header_read_timeout`): the watchdog starts with the stream it returns, so a client that
    /// stalls the handshake is the hook's to cut. The server's shutdown drops the future.
    fn accept(
        &self,
        io: GuardedIo<TcpStream>,
        peer: SocketAddr,
        deadline: Instant,
    ) -> impl Future<Output = Option<Accepted<Self::Io>>> + Send;
}

/// Plain TCP: HTTP/1.1, and HTTP/2 with prior knowledge (h2c). What [`serve`](super::serve) uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainTcp;

impl Accept for PlainTcp {
    type Io = GuardedIo<TcpStream>;

    async fn accept(&self, io: GuardedIo<TcpStream>, _: SocketAddr, _: Instant) -> Option<Accepted<Self::Io>> {
        Some(Accepted { io, secure: false, server_name: None })
    }
}

/// hyper refuses HTTP/1 read buffers smaller than this.
const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// How often refused connections and failed accepts are reported at most.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// What every listener of one server shares.
pub(super) struct Shared<H> {
    pub(super) handler: H,
    pub(super) builder: Protocols,
    pub(super) limits: ConnectionLimits,
    pub(super) trusted: Arc<TrustedProxies>,
    pub(super) count: Arc<ConnectionCount>,
    pub(super) connections: TaskTracker,
    pub(super) placement: super::workers::Placement,
    pub(super) stop: CancellationToken,
}

/// Accepts connections on `listener` until the future is dropped (or the listener has no local
/// address, the one error returned).
pub(super) async fn accept_loop<H: Handler, A: Accept>(
    shared: Arc<Shared<H>>,
    listener: TcpListener,
    accept: A,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let accept = Arc::new(accept);
    let mut refused = LogEvery::new(REPORT_INTERVAL);
    let mut failed = LogEvery::new(REPORT_INTERVAL);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and similar: pause instead of spinning or exiting,
                // and say so once per interval, not once per failure.
                if let Some(n) = failed.hit(Instant::now()) {
                    tracing::warn!(%error, failures = n, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = shared.count.admit() else {
            drop(stream);
            if let Some(n) = refused.hit(Instant::now()) {
                let max_connections = shared.count.max();
                tracing::warn!(max_connections, refused = n, "connection limit reached: closing new connections");
            }
            continue;
        };
        // Small responses go out at once instead of waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let socket = match shared.placement.detach(stream) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot hand the connection to a worker");
                continue;
            }
        };
        let deadline = Instant::now() + shared.limits.header_read_timeout;
        let stop = shared.stop.child_token();
        let (serving, accept) = (shared.clone(), accept.clone());
        shared.placement.spawn(&shared.connections, async move {
            let _slot = slot;
            let stream = match socket.attach() {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "cannot register the connection with its worker");
                    return;
                }
            };
            let state = ConnectionState::new();
            let io = GuardedIo::new(stream, state.clone());
            let accepted = tokio::select! {
                accepted = accept.accept(io, peer, deadline) => accepted,
                () = stop.cancelled() => return,
            };
            let Some(accepted) = accepted else { return };
            let task = ConnectionTask {
                shared: serving,
                stop,
                peer,
                local,
                secure: accepted.secure,
                server_name: accepted.server_name,
                state,
            };
            task.run(accepted.io).await;
        });
    }
}

/// One accepted connection, with what serving it takes.
struct ConnectionTask<H> {
    shared: Arc<Shared<H>>,
    stop: CancellationToken,
    peer: SocketAddr,
    local: SocketAddr,
    secure: bool,
    /// The TLS handshake's SNI, lowercase.
    server_name: Option<Arc<str>>,
    state: Arc<ConnectionState>,
}

impl<H: Handler> ConnectionTask<H> {
    /// Serves HTTP on `io` (the socket, or the TLS stream around it) under the connection's
    /// watchdog, until it ends.
    async fn run<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ConnectionTask { shared, stop, peer, local, secure, server_name, state } = self;
        let limits = shared.limits;
        let request_state = state.clone();
        let serving = shared.clone();
        let hyper_service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let connection =
                Connection { peer, local, trusted: &serving.trusted, secure, server_name: server_name.as_deref() };
            let in_flight = request_state.start_request(req.version());
            let req = req.map(|body| {
                // Bodies that are already complete (most requests: none at all) need no timer.
                if body.is_end_stream() {
                    Body::from(body)
                } else {
                    Body::wrap(TimedBody::new(body, limits.body_read_timeout))
                }
            });
            let response = serving.handler.handle(req, &connection);
            async move { Ok::<_, Infallible>(response.await.map(|body| TrackedBody::new(body, in_flight))) }
        });
        // Boxed: the task then holds one copy of the connection's state for its whole life, where
        // the async functions it passes through would each keep room for one.
        let connection = Box::pin(shared.builder.serve(io, hyper_service));
        let graceful = |c: Pin<&mut Pin<Box<Serving<'_, _, _>>>>| c.get_mut().as_mut().graceful_shutdown();
        match watchdog::watch(connection, graceful, state, limits, stop).await {
            (Some(expiry), _) => tracing::debug!(%peer, timeout = expiry.key(), "connection timed out"),
            (None, Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            (None, Ok(())) => {}
        }
    }
}

/// hyper's connection settings for `limits`.
pub(super) fn connection_builder(limits: &ConnectionLimits) -> Protocols {
    let mut http1 = http1::Builder::new();
    http1
        // The connection's watchdog times the head (from the accept, or from a later head's first
        // byte) and the idle time between requests; hyper's own head timer would start at the end
        // of each response and so cut keep-alive connections at the head timeout.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUFFER));
    // Pings find HTTP/2 clients that stopped reading (they never acknowledge): one per half send
    // timeout, each with the other half to be answered.
    let half_send = (limits.send_timeout / 2).max(Duration::from_millis(500));
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(half_send))
        .keep_alive_timeout(half_send);
    Protocols { http1, http2: limits.http2.then_some(http2) }
}
