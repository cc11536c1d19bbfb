//! Listeners and connections: HTTP/1.1 with keep-alive and HTTP/2 (prior-knowledge h2c) on one port,
//! HTTPS (HTTP/1.1 and HTTP/2 over TLS) on another ([`serve_listeners`], [`crate::tls`]), header
//! size limits, a header-read timeout, graceful shutdown, and hot reload.
//!
//! The accept loop, the connection watchdog and the graceful shutdown are the library's
//! ([`strata::server`]); this module adapts the gateway to them: its [`Router`] as the handler,
//! its TLS handshake as the [`Accept`] hook, its `[server]` settings as [`ConnectionLimits`]
//! ([`connection_limits`]), and its WebSocket tunnels ([`crate::proxy::tunnels`]) to wait for.
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
//! and `workers` and `runtime` to the runtime: a change to them is logged as needing a restart. A changed
//! `[log] level` takes effect at once (unless `RUST_LOG` or `STRATA_LOG` chose the filter); a
//! changed `[log] format` needs a restart ([`crate::runtime_log`]).

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use strata::http::Request;
use strata::server::{Accept, Accepted, Connection, ConnectionLimits, GuardedIo, Handler, PlainTcp, Serve, Workers};
use strata::{Fact, Facts};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::Server;
use crate::limits::ConnectionCount;
use crate::observe::Dispatched;
use crate::routes::Router;

/// Resolving the client's address (a header walk behind a trusted proxy) and inserting it into the
/// request's extensions (an allocation) happen only for stacks with a layer, or an upstream target,
/// that reads it. Per request, not per connection: a proxy multiplexes many clients on one
/// connection.
fn with_connection_info(mut req: Request, facts: Facts, connection: &Connection<'_>) -> Request {
    if facts.has(Fact::ReadsClientAddress) {
        let info = connection.info(req.headers());
        req.extensions_mut().insert(info);
    }
    req
}

impl Router {
    /// Answers a request that arrived on `connection`; `https_port`: on a plain connection, the
    /// port of the server's TLS listener, if it has one (where `redirect_http` sends clients).
    ///
    /// Resolves the client with the router's own `trusted_proxies` (its config's), not the
    /// connection's: after a reload, the resolver and the proxies trust the same list.
    pub fn handle(&self, req: Request, connection: &Connection<'_>, https_port: Option<u16>) -> Dispatched {
        let connection = Connection { trusted: self.trusted_proxies(), ..*connection };
        let req = with_connection_info(req, self.facts(), &connection);
        if connection.secure { self.call_tls(req, connection.server_name) } else { self.call_plain(req, https_port) }
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

    /// The TLS configuration of a new handshake on the TLS listener; `None`: the current config
    /// has no `[server.tls]`.
    pub fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current.load().tls_config().cloned()
    }
}

/// What the gateway's listeners serve: the live router, and where HTTPS is served (for the plain
/// listener's redirects).
struct Gateway {
    live: Arc<LiveRouter>,
    https_port: Option<u16>,
}

impl Handler for Gateway {
    type Answer = Dispatched;

    fn handle(&self, req: Request, connection: &Connection<'_>) -> Dispatched {
        // The returned future owns its route's chain: the guard (and the router) may go at once.
        self.live.current.load().handle(req, connection, self.https_port)
    }
}

/// The TLS listener's handshake, with the live router's current certificates.
struct TlsHandshake {
    live: Arc<LiveRouter>,
    /// The configuration the listener started with, kept for handshakes while a reloaded config
    /// has no `[server.tls]` (a listener comes and goes only with a restart).
    started: Arc<rustls::ServerConfig>,
}

impl Accept for TlsHandshake {
    type Io = tokio_rustls::server::TlsStream<GuardedIo<TcpStream>>;

    async fn accept(
        &self,
        io: GuardedIo<TcpStream>,
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Option<Accepted<Self::Io>> {
        let config = self.live.tls_config().unwrap_or_else(|| self.started.clone());
        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(stream)) => {
                let server_name = stream.get_ref().1.server_name().map(|name| name.to_ascii_lowercase().into());
                Some(Accepted { io: stream, secure: true, server_name })
            }
            // Scanners and clients that distrust the certificate: not news.
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = "header_read_timeout", "TLS handshake timed out");
                None
            }
        }
    }
}

/// The connection limits of a `[server]` section (the keys of the same names).
pub fn connection_limits(settings: &Server) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: settings.header_read_timeout,
        keepalive_timeout: settings.keepalive_timeout,
        body_read_timeout: settings.body_read_timeout,
        send_timeout: settings.send_timeout,
        max_connections: settings.max_connections,
        max_header_bytes: settings.max_header_bytes,
        http2: settings.http2,
        shutdown_grace: settings.shutdown_grace,
    }
}

/// Serves `handler` on `listener` with the `[server]` settings until `shutdown` resolves, then
/// stops accepting and gives in-flight requests, and the proxy's upgraded connections
/// ([`crate::proxy::tunnels`]), up to `settings.shutdown_grace` to finish. Upgraded connections
/// still open then end with the runtime.
///
/// Every connection runs under the limits of [`strata::server`]: `max_connections` open at once
/// (beyond it a connection is accepted and closed at once, so that clients fail fast instead of
/// waiting in the listen queue), and the head, keep-alive, body and send timeouts.
///
/// Returns whether every connection finished within the grace period.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    settings: &Server,
    shutdown: impl Future<Output = ()>,
) -> io::Result<bool> {
    let server = strata::serve(listener, handler)
        .limits(connection_limits(settings))
        .trusted_proxies(settings.trusted_proxies.clone())
        .upgraded_connections(crate::proxy::tunnels().clone());
    serve_until(server, shutdown).await
}

/// Runs `server` until `shutdown` resolves, then lets it drain. The gateway's shutdown futures
/// borrow from their callers (and need not be `Send`): they are awaited here, beside the server.
async fn serve_until<H: Handler>(server: Serve<H>, shutdown: impl Future<Output = ()>) -> io::Result<bool> {
    let stop = CancellationToken::new();
    let mut served = server.with_graceful_shutdown(stop.clone().cancelled_owned()).into_future();
    tokio::select! {
        result = &mut served => return result,
        () = shutdown => stop.cancel(),
    }
    served.await
}

/// The sockets one server accepts connections on.
pub struct Listeners {
    /// Plain HTTP: HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    pub plain: TcpListener,
    /// HTTPS: HTTP/1.1 and HTTP/2 over TLS, with the router's current TLS configuration.
    pub tls: Option<TcpListener>,
    /// The count of open connections to admit them by (its `max` is the cap), for a caller that
    /// reports it (the admin listener's `strata_connections_open`); `None`: one of
    /// `max_connections`.
    pub connections: Option<Arc<ConnectionCount>>,
    /// The per-core runtimes that serve the connections (`runtime = "per_core"`); `None`: the
    /// runtime the listeners are served on.
    pub workers: Option<Arc<Workers>>,
}

/// [`serve`] of the live router on several listeners at once. They share one connection cap, one
/// graceful shutdown and the same limits; a TLS connection's handshake must end within
/// `header_read_timeout` of the accept (the deadline of a plain connection's first head, which
/// then still applies), and its certificates are those of the router's current config, read per
/// handshake.
pub async fn serve_listeners(
    listeners: Listeners,
    live: Arc<LiveRouter>,
    settings: &Server,
    shutdown: impl Future<Output = ()>,
) -> io::Result<bool> {
    let Listeners { plain, tls, connections, workers } = listeners;
    let started_tls = match &tls {
        Some(_) => Some(live.tls_config().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a TLS listener needs a config with `[server.tls]`")
        })?),
        None => None,
    };
    let https_port = match &tls {
        Some(tls) => Some(tls.local_addr()?.port()),
        None => None,
    };
    let mut server = Serve::new(Gateway { live: live.clone(), https_port })
        .listener(plain, PlainTcp)
        .limits(connection_limits(settings))
        .trusted_proxies(settings.trusted_proxies.clone())
        .upgraded_connections(crate::proxy::tunnels().clone());
    if let (Some(listener), Some(started)) = (tls, started_tls) {
        server = server.listener(listener, TlsHandshake { live, started });
    }
    if let Some(count) = connections {
        server = server.connection_count(count);
    }
    if let Some(workers) = workers {
        server = server.workers(workers);
    }
    serve_until(server, shutdown).await
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
        if new.runtime != old.runtime {
            changed.push("runtime");
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
