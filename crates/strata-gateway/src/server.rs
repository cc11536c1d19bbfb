//! Listeners and connections: HTTP/1.1 with keep-alive and HTTP/2 (prior-knowledge h2c) on one port,
//! HTTPS (HTTP/1.1 and HTTP/2 over TLS) on another ([`serve_listeners`], [`crate::tls`]), header
//! size limits, a header-read timeout, graceful shutdown, and hot reload.
//!
//! # Reload
//!
//! The listener serves a [`LiveRouter`]: the current [`Router`] behind an atomic pointer
//! ([`arc_swap`]), read once per request without a lock. A [`Reloader`] rebuilds the whole gateway
//! from the config file (on SIGHUP, or when `--watch` sees the file change) and swaps the new router
//! in. A request holds the onion it started on (its future owns a reference to that route's chain),
//! so in-flight requests finish on the old stack while new ones get the new stack, and no
//! connection is touched. The router also carries the TLS configuration: each new handshake takes
//! the current one, so a reload changes certificates for new connections only. An invalid file is
//! logged with its `file:line:column` errors and the running config stays. Listener settings
//! (`listen`, `[server.tls] listen`, header limits, HTTP/2) belong to the sockets and connections,
//! and `workers` to the runtime: a change to them is logged as needing a restart. A changed
//! `[log] level` takes effect at once (unless `RUST_LOG` or `STRATA_LOG` chose the filter); a
//! changed `[log] format` needs a restart ([`crate::runtime_log`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use strata::http::client_ip::TrustedProxies;
use strata::http::{Body, ConnectionInfo, Request, Response, Service};
use strata::{Fact, Facts, Run};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Server;
use crate::limits::{
    self, ConnectionCount, ConnectionLimits, ConnectionState, GuardedIo, LogEvery, TimedBody, TrackedBody,
};
use crate::observe::Dispatched;
use crate::routes::Router;

/// What a listener hands each request to: a gateway's [`Router`] (live or fixed) or any library
/// [`Service`].
pub trait Handler: Send + Sync + 'static {
    /// The future of one answer.
    type Answer: Future<Output = Response> + Send + 'static;

    /// Answers one request that arrived on `connection`.
    fn handle(&self, req: Request, connection: &Connection<'_>) -> Self::Answer;

    /// The TLS configuration of a new handshake on a TLS listener; `None`: no TLS.
    fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        None
    }
}

/// The connection a request arrived on, with what it takes to resolve the client's address.
#[derive(Clone, Copy, Debug)]
pub struct Connection<'a> {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// The proxies whose forwarding header names the client: the listener's, for a [`Service`];
    /// a [`Router`] resolves with its own config's list instead, so that a reload changes it.
    pub trusted: &'a TrustedProxies,
    /// Whether the connection is TLS (HTTPS).
    pub secure: bool,
    /// On a plain connection, the port of the server's TLS listener, if it has one: where
    /// `redirect_http` sends clients.
    pub https_port: Option<u16>,
    /// On a TLS connection, the server name its handshake sent (SNI), lowercase.
    pub server_name: Option<&'a str>,
}

/// Resolving the client's address (a header walk behind a trusted proxy) and inserting it into the
/// request's extensions (an allocation) happen only for stacks with a layer, or an upstream target,
/// that reads it. Per request, not per connection: a proxy multiplexes many clients on one
/// connection.
fn with_connection_info(mut req: Request, facts: Facts, connection: &Connection<'_>) -> Request {
    if facts.has(Fact::ReadsClientAddress) {
        let info = ConnectionInfo::resolve(connection.peer, connection.local, req.headers(), connection.trusted)
            .over_tls(connection.secure);
        req.extensions_mut().insert(info);
    }
    req
}

impl Handler for Router {
    type Answer = Dispatched;

    /// Resolves the client with the router's own `trusted_proxies` (its config's), not the
    /// connection's: after a reload, the resolver and the proxies trust the same list.
    fn handle(&self, req: Request, connection: &Connection<'_>) -> Dispatched {
        let connection = Connection { trusted: self.trusted_proxies(), ..*connection };
        let req = with_connection_info(req, self.facts(), &connection);
        if connection.secure {
            self.call_tls(req, connection.server_name)
        } else {
            self.call_plain(req, connection.https_port)
        }
    }

    fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        Router::tls_config(self).cloned()
    }
}

impl Handler for Service {
    type Answer = Run<Response>;

    fn handle(&self, req: Request, connection: &Connection<'_>) -> Run<Response> {
        self.call(with_connection_info(req, self.facts(), connection))
    }
}

/// The router currently served, swapped atomically by a reload.
pub struct LiveRouter {
    current: ArcSwap<Router>,
}

impl LiveRouter {
    /// Serves `router` until the first reload.
    pub fn new(router: Arc<Router>) -> Self {
        LiveRouter { current: ArcSwap::new(router) }
    }

    /// The router new requests go to.
    pub fn current(&self) -> Arc<Router> {
        self.current.load_full()
    }

    /// Sends new requests to `router`; requests already running finish on the one they started on.
    pub fn replace(&self, router: Arc<Router>) {
        self.current.store(router);
    }
}

impl Handler for LiveRouter {
    type Answer = Dispatched;

    fn handle(&self, req: Request, connection: &Connection<'_>) -> Dispatched {
        // The returned future owns its route's chain: the guard (and the router) may go at once.
        self.current.load().handle(req, connection)
    }

    fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current.load().tls_config().cloned()
    }
}

/// hyper refuses HTTP/1 read buffers smaller than this.
const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// Serves `handler` on `listener` until `shutdown` resolves, then stops accepting and gives in-flight
/// requests, and the proxy's upgraded connections ([`crate::proxy::tunnels`]), up to
/// `settings.shutdown_grace` to finish. Upgraded connections still open then end with the runtime.
///
/// Every connection runs under the limits of [`crate::limits`]: `max_connections` open at once
/// (beyond it a connection is accepted and closed at once, so that clients fail fast instead of
/// waiting in the listen queue), and the head, keep-alive, body and send timeouts.
///
/// Returns whether every connection finished within the grace period.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: &Server,
    shutdown: impl Future<Output = ()>,
) -> io::Result<bool> {
    serve_listeners(Listeners { plain: listener, tls: None, connections: None }, handler, settings, shutdown).await
}

/// The sockets one server accepts connections on.
pub struct Listeners {
    /// Plain HTTP: HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    pub plain: TcpListener,
    /// HTTPS: HTTP/1.1 and HTTP/2 over TLS, with the handler's [`Handler::tls_config`].
    pub tls: Option<TcpListener>,
    /// The count of open connections to admit them by (its `max` is the cap), for a caller that
    /// reports it (the admin listener's `strata_connections_open`); `None`: one of
    /// `max_connections`.
    pub connections: Option<Arc<ConnectionCount>>,
}

/// [`serve`] on several listeners at once. They share one connection cap, one graceful shutdown
/// and the same limits; a TLS connection's handshake must end within `header_read_timeout` of the
/// accept (the deadline of a plain connection's first head, which then still applies), and its
/// certificates are those of the handler's current [`Handler::tls_config`], read per handshake.
pub async fn serve_listeners<H: Handler>(
    listeners: Listeners,
    handler: Arc<H>,
    settings: &Server,
    shutdown: impl Future<Output = ()>,
) -> io::Result<bool> {
    let max_connections =
        settings.max_connections.unwrap_or_else(|| limits::connection_cap(limits::descriptor_limit().unwrap_or(1024)));
    let started_tls = match &listeners.tls {
        Some(_) => Some(handler.tls_config().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a TLS listener needs a config with `[server.tls]`")
        })?),
        None => None,
    };
    let acceptor = Acceptor {
        handler,
        builder: Arc::new(connection_builder(settings)),
        limits: ConnectionLimits::of(settings),
        trusted: settings.trusted_proxies.clone(),
        max_connections,
        count: listeners.connections.clone().unwrap_or_else(|| ConnectionCount::new(max_connections)),
        connections: TaskTracker::new(),
        stop: CancellationToken::new(),
    };
    let https_port = match &listeners.tls {
        Some(tls) => Some(tls.local_addr()?.port()),
        None => None,
    };
    let plain = acceptor.accept_loop(&listeners.plain, listeners.plain.local_addr()?, Transport::Plain { https_port });
    let tls = async {
        match (&listeners.tls, started_tls) {
            (Some(listener), Some(started)) => {
                acceptor.accept_loop(listener, listener.local_addr()?, Transport::Tls { started }).await;
            }
            _ => std::future::pending::<()>().await,
        }
        Ok::<(), io::Error>(())
    };
    tokio::select! {
        () = plain => {}
        result = tls => result?,
        () = shutdown => {}
    }
    drop(listeners);
    tracing::info!(grace = ?settings.shutdown_grace, "shutting down: no new connections, waiting for in-flight requests");
    let deadline = tokio::time::Instant::now() + settings.shutdown_grace;
    acceptor.stop.cancel();
    acceptor.connections.close();
    let requests_done = tokio::time::timeout_at(deadline, acceptor.connections.wait()).await.is_ok();
    // Upgraded connections (WebSocket) left hyper's connections: they get what is left of the grace.
    let tunnels = crate::proxy::tunnels();
    tunnels.close();
    if !tunnels.is_empty() {
        tracing::info!(open = tunnels.len(), "waiting for upgraded connections to close");
    }
    let tunnels_done = tokio::time::timeout_at(deadline, tunnels.wait()).await.is_ok();
    tunnels.reopen();
    if requests_done && tunnels_done {
        Ok(true)
    } else {
        tracing::warn!(upgraded = tunnels.len(), "grace period over: closing the remaining connections");
        Ok(false)
    }
}

/// What a listener's connections are spoken over.
enum Transport {
    /// Plain TCP; `https_port`: where the TLS listener is, for `redirect_http`.
    Plain { https_port: Option<u16> },
    /// TLS; `started`: the configuration the listener started with, kept for handshakes while a
    /// reloaded config has no `[server.tls]` (a listener comes and goes only with a restart).
    Tls { started: Arc<rustls::ServerConfig> },
}

/// What every listener of one server shares.
struct Acceptor<H> {
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    trusted: Arc<TrustedProxies>,
    max_connections: usize,
    count: Arc<ConnectionCount>,
    connections: TaskTracker,
    stop: CancellationToken,
}

impl<H: Handler> Acceptor<H> {
    /// Accepts connections on `listener` until the future is dropped.
    async fn accept_loop(&self, listener: &TcpListener, local: SocketAddr, transport: Transport) {
        let mut refused = LogEvery::new(REPORT_INTERVAL);
        let mut failed = LogEvery::new(REPORT_INTERVAL);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and similar: pause instead of spinning or exiting,
                    // and say so once per interval, not once per failure.
                    if let Some(n) = failed.hit(tokio::time::Instant::now()) {
                        tracing::warn!(%error, failures = n, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = self.count.admit() else {
                drop(stream);
                if let Some(n) = refused.hit(tokio::time::Instant::now()) {
                    let max_connections = self.max_connections;
                    tracing::warn!(max_connections, refused = n, "connection limit reached: closing new connections");
                }
                continue;
            };
            // Small responses go out at once instead of waiting for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            let state = ConnectionState::new();
            let io = GuardedIo::new(stream, state.clone());
            let mut task = ConnectionTask {
                handler: self.handler.clone(),
                builder: self.builder.clone(),
                limits: self.limits,
                trusted: self.trusted.clone(),
                stop: self.stop.child_token(),
                peer,
                local,
                secure: false,
                https_port: None,
                server_name: None,
                state,
            };
            match &transport {
                Transport::Plain { https_port } => {
                    task.https_port = *https_port;
                    self.connections.spawn(async move {
                        let _slot = slot;
                        task.run(io).await;
                    });
                }
                Transport::Tls { started } => {
                    task.secure = true;
                    let config = self.handler.tls_config().unwrap_or_else(|| started.clone());
                    let deadline = tokio::time::Instant::now() + self.limits.header_read_timeout;
                    self.connections.spawn(async move {
                        let _slot = slot;
                        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
                        let stream = tokio::select! {
                            done = tokio::time::timeout_at(deadline, handshake) => match done {
                                Ok(Ok(stream)) => stream,
                                // Scanners and clients that distrust the certificate: not news.
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, timeout = "header_read_timeout", "TLS handshake timed out");
                                    return;
                                }
                            },
                            () = task.stop.cancelled() => return,
                        };
                        task.server_name =
                            stream.get_ref().1.server_name().map(|name| name.to_ascii_lowercase().into());
                        task.run(stream).await;
                    });
                }
            }
        }
    }
}

/// One accepted connection, with what serving it takes.
struct ConnectionTask<H> {
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    trusted: Arc<TrustedProxies>,
    stop: CancellationToken,
    peer: SocketAddr,
    local: SocketAddr,
    secure: bool,
    https_port: Option<u16>,
    /// The TLS handshake's SNI, lowercase.
    server_name: Option<Arc<str>>,
    state: Arc<ConnectionState>,
}

impl<H: Handler> ConnectionTask<H> {
    /// Serves HTTP on `io` (the socket, or the TLS stream around it) under the connection's
    /// watchdog, until it ends.
    async fn run<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let ConnectionTask {
            handler,
            builder,
            limits,
            trusted,
            stop,
            peer,
            local,
            secure,
            https_port,
            server_name,
            state,
        } = self;
        let request_state = state.clone();
        let hyper_service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let connection =
                Connection { peer, local, trusted: &trusted, secure, https_port, server_name: server_name.as_deref() };
            let in_flight = request_state.start_request(req.version());
            let req = req.map(|body| {
                // Bodies that are already complete (most requests: none at all) need no timer.
                if body.is_end_stream() {
                    Body::from(body)
                } else {
                    Body::wrap(TimedBody::new(body, limits.body_read_timeout))
                }
            });
            let response = handler.handle(req, &connection);
            async move { Ok::<_, Infallible>(response.await.map(|body| TrackedBody::new(body, in_flight))) }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service).into_owned();
        let graceful = |c: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(c);
        match limits::watch(connection, graceful, state, limits, stop).await {
            (Some(expiry), _) => tracing::debug!(%peer, timeout = expiry.key(), "connection timed out"),
            (None, Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            (None, Ok(())) => {}
        }
    }
}

/// How often refused connections and failed accepts are reported at most.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

fn connection_builder(settings: &Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The connection's watchdog times the head (from the accept, or from a later head's first
        // byte) and the idle time between requests; hyper's own head timer would start at the end
        // of each response and so cut keep-alive connections at the head timeout.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(settings.max_header_bytes.max(MIN_HTTP1_BUFFER));
    // Pings find HTTP/2 clients that stopped reading (they never acknowledge): one per half send
    // timeout, each with the other half to be answered.
    let half_send = (settings.send_timeout / 2).max(Duration::from_millis(500));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(half_send))
        .keep_alive_timeout(half_send);
    if !settings.http2 {
        builder = builder.http1_only();
    }
    builder
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called (inside a Tokio runtime), not when the future is
/// first polled: call it before the listener is bound, or a SIGTERM that arrives between the first
/// request and the first poll would end the process by the signal's default action, skipping the
/// graceful shutdown.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let received = |s: io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = received(interrupt) => tracing::info!("received SIGINT"),
                () = received(terminate) => tracing::info!("received SIGTERM"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("received Ctrl-C");
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// Rebuilds the gateway from its config file and swaps the new router into a [`LiveRouter`].
pub struct Reloader {
    /// The config file.
    pub path: PathBuf,
    /// What the listener serves.
    pub live: Arc<LiveRouter>,
    /// The `[server]` settings the listener was started with (what a reload cannot change).
    pub running: Server,
    /// Whether `--listen` overrides the config's `listen` (then a changed `listen` is not news).
    pub listen_overridden: bool,
    /// Whether `--tls-listen` overrides the config's `[server.tls] listen`.
    pub tls_listen_overridden: bool,
    /// The `[admin]` section the admin listener was started with (a change needs a restart).
    pub admin: Option<crate::config::Admin>,
    /// The runtime log, whose level a reloaded `[log] level` changes.
    pub runtime_log: Option<crate::runtime_log::RuntimeLog>,
    /// The certificate and key files of the config being served, watched with the config file.
    tls_files: std::sync::Mutex<Vec<PathBuf>>,
    /// The access-log outputs of the config being served: a reloaded config's layers open theirs
    /// through it, so a file keeps one output (and its rotation) across reloads.
    log_outputs: strata::middleware::LogOutputs,
}

impl Reloader {
    /// Reloads `path` into `live`, which serves the config whose `[server]` settings are `running`
    /// and whose access logs were opened through `log_outputs`.
    pub fn new(
        path: PathBuf,
        live: Arc<LiveRouter>,
        running: Server,
        log_outputs: strata::middleware::LogOutputs,
    ) -> Reloader {
        let tls_files = std::sync::Mutex::new(tls_files(&path, &running));
        Reloader {
            path,
            live,
            running,
            listen_overridden: false,
            tls_listen_overridden: false,
            admin: None,
            runtime_log: None,
            tls_files,
            log_outputs,
        }
    }

    /// Loads the config again. A valid one replaces the running router; an invalid one is logged
    /// and the running one stays. Returns whether the new config was swapped in.
    ///
    /// Under systemd it is announced with `RELOADING=1` and ends with `READY=1` whatever the outcome:
    /// `systemctl reload` waits for that ([`crate::systemd`]).
    pub async fn reload(&self) -> bool {
        crate::systemd::reloading();
        let swapped = self.load_and_swap().await;
        crate::systemd::ready(if swapped {
            "serving the reloaded config"
        } else {
            "config rejected: serving the previous one"
        });
        swapped
    }

    async fn load_and_swap(&self) -> bool {
        let (path, log_outputs) = (self.path.clone(), self.log_outputs.clone());
        // Reading the file and building the layers (opening logs, reading password files) blocks.
        let built = tokio::task::spawn_blocking(move || crate::load_with_log(Some(&path), &log_outputs)).await;
        let (gateway, log) = match built {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(error)) => {
                crate::metrics::global().reloaded(false);
                tracing::error!("config rejected, still serving the previous one:\n{error}");
                return false;
            }
            Err(error) => {
                crate::metrics::global().reloaded(false);
                tracing::error!(%error, "config reload failed, still serving the previous one");
                return false;
            }
        };
        let mut restart_only = self.restart_only_changes(&gateway.server);
        let admin = |a: &Option<crate::config::Admin>| a.as_ref().map(|a| (a.listen, a.allow.clone()));
        if admin(&gateway.admin) != admin(&self.admin) {
            restart_only.push("[admin]");
        }
        if let Some(runtime_log) = &self.runtime_log {
            restart_only.extend(runtime_log.reload(&log));
        }
        for setting in restart_only {
            tracing::warn!("`{setting}` changed: it is fixed when strata starts, restart strata to use it");
        }
        gateway.log_warnings();
        gateway.start();
        *self.tls_files.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            tls_files(&self.path, &gateway.server);
        let routes = gateway.routes.len();
        let names = gateway.router.route_names();
        self.live.replace(gateway.router);
        crate::metrics::global().retain_routes(&names);
        crate::metrics::global().reloaded(true);
        tracing::info!(config = %self.path.display(), routes, "config reloaded");
        true
    }

    fn restart_only_changes(&self, new: &Server) -> Vec<&'static str> {
        let old = &self.running;
        let mut changed = Vec::new();
        if new.listen != old.listen && !self.listen_overridden {
            changed.push("listen");
        }
        if new.header_read_timeout != old.header_read_timeout {
            changed.push("header_read_timeout");
        }
        if new.keepalive_timeout != old.keepalive_timeout {
            changed.push("keepalive_timeout");
        }
        if new.body_read_timeout != old.body_read_timeout {
            changed.push("body_read_timeout");
        }
        if new.send_timeout != old.send_timeout {
            changed.push("send_timeout");
        }
        if new.max_connections != old.max_connections {
            changed.push("max_connections");
        }
        if new.max_header_bytes != old.max_header_bytes {
            changed.push("max_header_bytes");
        }
        if new.shutdown_grace != old.shutdown_grace {
            changed.push("shutdown_grace");
        }
        if new.http2 != old.http2 {
            changed.push("http2");
        }
        if new.workers != old.workers {
            changed.push("workers");
        }
        // Certificates reload; the TLS listener itself is bound at the start.
        match (&new.tls, &old.tls) {
            (Some(new), Some(old)) if new.listen != old.listen && !self.tls_listen_overridden => {
                changed.push("[server.tls] listen");
            }
            (Some(_), None) | (None, Some(_)) => changed.push("[server.tls]"),
            _ => {}
        }
        changed
    }

    /// Reloads on every SIGHUP and, with `watch`, whenever the modification time or size of the
    /// config file, or of a certificate or key file it names, changes (checked every `watch`
    /// interval): a renewed certificate (certbot replaces the files its `live/` links point to) is
    /// served without a signal. Runs until the task is dropped.
    ///
    /// Watching polls the files' metadata instead of using inotify: a few `stat`s a second cost
    /// nothing, need no dependency, and see every way of saving a file (in place, or an editor's
    /// write-and-rename, which an inotify watch on the old inode misses).
    pub async fn run(self, mut hangup: Hangup, watch: Option<Duration>) {
        let mut seen = self.stamps();
        let mut tick = watch.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let poll = async {
                match tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = hangup.recv() => {
                    tracing::info!("received SIGHUP: reloading the config");
                    self.reload().await;
                    seen = self.stamps();
                }
                () = poll => {
                    let now = self.stamps();
                    // A missing file is a save in progress (or a mistake): keep serving, look again.
                    if now.iter().all(Option::is_some) && now != seen {
                        let config_changed = now.first() != seen.first();
                        tracing::info!(
                            config = %self.path.display(),
                            "{}: reloading",
                            if config_changed { "config file changed" } else { "a certificate or key file changed" }
                        );
                        self.reload().await;
                        // What the reloaded config names (a new certificate file is watched from now).
                        seen = self.stamps();
                    }
                }
            }
        }
    }

    /// The config file's stamp, then each watched certificate and key file's.
    fn stamps(&self) -> Vec<Option<(std::time::SystemTime, u64)>> {
        let files = self.tls_files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::iter::once(&self.path).chain(files.iter()).map(|p| file_stamp(p)).collect()
    }
}

/// The certificate and key files of `server`'s `[server.tls]`, found from the folder of the config
/// file at `config` as the config's own paths are.
fn tls_files(config: &std::path::Path, server: &Server) -> Vec<PathBuf> {
    let dir = config.parent().unwrap_or(std::path::Path::new(""));
    let pairs = server.tls.iter().flat_map(|tls| tls.certificates.iter());
    pairs.flat_map(|pair| [dir.join(&pair.cert), dir.join(&pair.key)]).collect()
}

fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// SIGHUP, registered before the server announces itself: the default action of an unhandled
/// SIGHUP is to terminate the process.
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Starts listening for SIGHUP (inside a Tokio runtime).
    pub fn register() -> Hangup {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
            if let Err(error) = &signal {
                tracing::warn!(%error, "cannot listen for SIGHUP: reload by signal is off");
            }
            Hangup { signal: signal.ok() }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// Resolves at the next SIGHUP (never, where there are none).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}
