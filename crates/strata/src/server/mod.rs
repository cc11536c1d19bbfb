//! Serving a stack: [`serve`] accepts connections on a [`TcpListener`] and answers them with a
//! [`Service`](crate::http::Service) (or any [`Handler`]) — HTTP/1.1 with keep-alive and HTTP/2
//! with prior knowledge (h2c) on one port, every request with its
//! [`ConnectionInfo`](crate::http::ConnectionInfo), under the connection limits of
//! [`ConnectionLimits`], with a graceful shutdown.
//!
//! ```no_run
//! use std::time::Duration;
//! use strata::http::{Body, Request, Response, Stack};
//! use strata::middleware::RequestId;
//! use strata::server::ConnectionLimits;
//!
//! # async fn run() -> std::io::Result<()> {
//! let service = Stack::new()
//!     .with(RequestId::default())
//!     .serve(|_req: Request| async { Response::new(Body::from("hello\n")) });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let drained = strata::serve(listener, service)
//!     .limits(ConnectionLimits { header_read_timeout: Duration::from_secs(5), ..ConnectionLimits::default() })
//!     .with_graceful_shutdown(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! if !drained {
//!     eprintln!("some connections were still open when the grace period ended");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The pieces are public for a server that needs more than one plain listener: [`Serve::new`]
//! with [`Serve::listener`] serves several listeners with one connection cap and one shutdown,
//! each with an [`Accept`] hook (a TLS handshake, for example), and [`Serve::connection_count`]
//! shares the count of open connections with a metrics endpoint.
//!
//! [`Serve::workers`] serves the connections per core: each on one of the single-threaded
//! runtimes of [`Workers`], from its accept to its end (see [`Workers`] for when to prefer it).
//!
//! Each connection is watched by one timer ([`watchdog`]): a client that sends no request head,
//! idles between requests, stalls its request body or stops reading its response is cut after the
//! matching timeout of [`ConnectionLimits`].

mod accept;
mod count;
mod protocol;
pub mod watchdog;
mod workers;

use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use accept::{Accept, Accepted, Connection, Handler, PlainTcp};
pub use count::{ConnectionCount, ConnectionSlot, LogEvery, MAX_CONNECTIONS, connection_cap, descriptor_limit};
pub use watchdog::{GuardedIo, TimedBody, TrackedBody};
pub use workers::{Workers, current_worker};

use crate::http::client_ip::TrustedProxies;

/// The limits every connection of a server obeys. The defaults are the gateway's `[server]`
/// defaults, whose keys have the same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept to the end of the first request's head (a TLS handshake included); from the
    /// first byte to the end of the head for later requests. Default 10 s.
    pub header_read_timeout: Duration,
    /// Idle time allowed between requests (HTTP/1.1 keep-alive, and HTTP/2 connections with no
    /// open stream). Default 60 s.
    pub keepalive_timeout: Duration,
    /// Time a request body may go without a byte arriving before the request fails. Default 30 s.
    pub body_read_timeout: Duration,
    /// Time a write to the client may stay blocked (the client not reading). Default 30 s.
    pub send_timeout: Duration,
    /// The most connections open at once; beyond it a connection is accepted and closed at once,
    /// so that clients fail fast instead of waiting in the listen queue. `None` (the default):
    /// derived from the open-file limit ([`connection_cap`]).
    pub max_connections: Option<usize>,
    /// Largest accepted request head (HTTP/1.1 buffer, HTTP/2 header list), in bytes. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Whether HTTP/2 with prior knowledge (h2c) is accepted beside HTTP/1.1. Default on.
    pub http2: bool,
    /// How long in-flight requests may run after the shutdown signal. Default 10 s.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: None,
            max_header_bytes: 64 * 1024,
            http2: true,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `handler` (a [`Service`](crate::http::Service), usually) on `listener`: HTTP/1.1 and h2c,
/// with the default [`ConnectionLimits`], no trusted proxy, until the signal given to
/// [`Serve::with_graceful_shutdown`] (without one, for ever). Await it; see the [module](self).
pub fn serve<H: Handler>(listener: TcpListener, handler: H) -> Serve<H> {
    Serve::new(handler).listener(listener, PlainTcp)
}

type AcceptLoop = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;
type StartLoop<H> = Box<dyn FnOnce(Arc<accept::Shared<H>>) -> AcceptLoop + Send>;

/// A server being set up: its listeners, limits and shutdown. Awaiting it serves until the
/// shutdown signal, then stops accepting, lets in-flight requests finish within
/// [`ConnectionLimits::shutdown_grace`], and resolves to whether they all did.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve<H> {
    handler: H,
    listeners: Vec<StartLoop<H>>,
    limits: ConnectionLimits,
    trusted: Arc<TrustedProxies>,
    count: Option<Arc<ConnectionCount>>,
    upgraded: Option<TaskTracker>,
    placement: workers::Placement,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<H: Handler> Serve<H> {
    /// A server of `handler` with no listener yet: add them with [`Serve::listener`].
    pub fn new(handler: H) -> Self {
        Serve {
            handler,
            listeners: Vec::new(),
            limits: ConnectionLimits::default(),
            trusted: Arc::new(TrustedProxies::none()),
            count: None,
            upgraded: None,
            placement: workers::Placement::Here,
            shutdown: None,
        }
    }

    /// Also accepts connections on `listener`, each turned into the stream to serve by `accept`
    /// ([`PlainTcp`] for plain HTTP). Every listener shares the connection cap, the limits and
    /// the shutdown.
    pub fn listener<A: Accept>(mut self, listener: TcpListener, accept: A) -> Self {
        self.listeners.push(Box::new(move |shared| Box::pin(accept::accept_loop(shared, listener, accept))));
        self
    }

    /// The limits every connection obeys.
    pub fn limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The proxies whose forwarding header (`X-Forwarded-For`, `Forwarded`…) names the client in
    /// each request's [`ConnectionInfo`](crate::http::ConnectionInfo). None by default: the peer
    /// is the client.
    pub fn trusted_proxies(mut self, trusted: impl Into<Arc<TrustedProxies>>) -> Self {
        self.trusted = trusted.into();
        self
    }

    /// Admits connections by `count` (its maximum is the cap, instead of
    /// [`ConnectionLimits::max_connections`]), for a caller that reports how many are open.
    pub fn connection_count(mut self, count: Arc<ConnectionCount>) -> Self {
        self.count = Some(count);
        self
    }

    /// Also waits, within the shutdown grace, for the tasks of `upgraded`: connections upgraded
    /// out of HTTP (WebSocket tunnels), which the server's own connection watch no longer sees.
    pub fn upgraded_connections(mut self, upgraded: TaskTracker) -> Self {
        self.upgraded = Some(upgraded);
        self
    }

    /// Serves each accepted connection on one of `workers` (the one with the fewest open
    /// connections), instead of on the runtime the server is awaited on: per-core serving
    /// ([`Workers`]). The accept loops, the connection cap and the graceful shutdown stay where
    /// the server is awaited; a connection's TLS handshake and requests run on its worker.
    pub fn workers(mut self, workers: Arc<Workers>) -> Self {
        self.placement = workers::Placement::Workers(workers);
        self
    }

    /// Stops accepting when `signal` resolves and gives in-flight requests the grace period.
    pub fn with_graceful_shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    async fn run(self) -> io::Result<bool> {
        let Serve { handler, listeners, limits, trusted, count, upgraded, placement, shutdown } = self;
        let count = count.unwrap_or_else(|| {
            ConnectionCount::new(
                limits.max_connections.unwrap_or_else(|| connection_cap(descriptor_limit().unwrap_or(1024))),
            )
        });
        let shared = Arc::new(accept::Shared {
            handler,
            builder: accept::connection_builder(&limits),
            limits,
            trusted,
            count,
            connections: TaskTracker::new(),
            placement,
            stop: CancellationToken::new(),
        });
        let loops = futures_util::future::try_join_all(listeners.into_iter().map(|start| start(shared.clone())));
        // Accept loops end only with an error; a server without listeners waits for its signal.
        let loops = async {
            loops.await?;
            std::future::pending::<io::Result<()>>().await
        };
        let shutdown = async {
            match shutdown {
                Some(signal) => signal.await,
                None => std::future::pending().await,
            }
        };
        // Leaving the select drops the accept loops, and with them the listeners.
        tokio::select! {
            result = loops => result?,
            () = shutdown => {}
        }
        tracing::info!(grace = ?limits.shutdown_grace, "shutting down: no new connections, waiting for in-flight requests");
        let deadline = tokio::time::Instant::now() + limits.shutdown_grace;
        shared.stop.cancel();
        shared.connections.close();
        let requests_done = tokio::time::timeout_at(deadline, shared.connections.wait()).await.is_ok();
        // Upgraded connections left hyper's connections: they get what is left of the grace.
        let upgraded = upgraded.unwrap_or_default();
        upgraded.close();
        if !upgraded.is_empty() {
            tracing::info!(open = upgraded.len(), "waiting for upgraded connections to close");
        }
        let upgraded_done = tokio::time::timeout_at(deadline, upgraded.wait()).await.is_ok();
        upgraded.reopen();
        if requests_done && upgraded_done {
            Ok(true)
        } else {
            tracing::warn!(upgraded = upgraded.len(), "grace period over: closing the remaining connections");
            Ok(false)
        }
    }
}

impl<H: Handler> IntoFuture for Serve<H> {
    type Output = io::Result<bool>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<bool>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
