//! Listeners and connections: HTTP/1.1 with keep-alive and HTTP/2 (prior-knowledge h2c) on one port,
//! header size limits, a header-read timeout, graceful shutdown, and hot reload.
//!
//! # Reload
//!
//! The listener serves a [`LiveRouter`]: the current [`Router`] behind an atomic pointer
//! ([`arc_swap`]), read once per request without a lock. A [`Reloader`] rebuilds the whole gateway
//! from the config file (on SIGHUP, or when `--watch` sees the file change) and swaps the new router
//! in. A request holds the onion it started on (its future owns a reference to that route's chain),
//! so in-flight requests finish on the old stack while new ones get the new stack, and no
//! connection is touched. An invalid file is logged with its `file:line:column` errors and the
//! running config stays. Listener settings (`listen`, header limits, HTTP/2) belong to the socket
//! and connections, and `workers` to the runtime: a change to them is logged as needing a restart.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::PoisonError;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use strata::http::client_ip::TrustedProxies;
use strata::http::{Body, ConnectionInfo, Request, Response, Service};
use strata::{Fact, Facts, Run};
use tokio::net::TcpListener;

use crate::config::Server;
use crate::routes::Router;

/// What a listener hands each request to: a gateway's [`Router`] (live or fixed) or any library
/// [`Service`].
pub trait Handler: Send + Sync + 'static {
    /// Answers one request that arrived on `connection`.
    fn handle(&self, req: Request, connection: &Connection<'_>) -> Run<Response>;
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
}

/// Resolving the client's address (a header walk behind a trusted proxy) and inserting it into the
/// request's extensions (an allocation) happen only for stacks with a layer, or an upstream target,
/// that reads it. Per request, not per connection: a proxy multiplexes many clients on one
/// connection.
fn with_connection_info(mut req: Request, facts: Facts, connection: &Connection<'_>) -> Request {
    if facts.has(Fact::ReadsClientAddress) {
        let info = ConnectionInfo::resolve(connection.peer, connection.local, req.headers(), connection.trusted);
        req.extensions_mut().insert(info);
    }
    req
}

impl Handler for Router {
    /// Resolves the client with the router's own `trusted_proxies` (its config's), not the
    /// connection's: after a reload, the resolver and the proxies trust the same list.
    fn handle(&self, req: Request, connection: &Connection<'_>) -> Run<Response> {
        let connection = Connection { trusted: self.trusted_proxies(), ..*connection };
        self.call(with_connection_info(req, self.facts(), &connection))
    }
}

impl Handler for Service {
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
    fn handle(&self, req: Request, connection: &Connection<'_>) -> Run<Response> {
        // The returned future owns its route's chain: the guard (and the router) may go at once.
        self.current.load().handle(req, connection)
    }
}

/// hyper refuses HTTP/1 read buffers smaller than this.
const MIN_HTTP1_BUFFER: usize = 8 * 1024;

/// Serves `handler` on `listener` until `shutdown` resolves, then stops accepting and gives in-flight
/// requests, and the proxy's upgraded connections ([`crate::proxy::tunnels`]), up to
/// `settings.shutdown_grace` to finish. Upgraded connections still open then end with the runtime.
///
/// Returns whether every connection finished within the grace period.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: &Server,
    shutdown: impl Future<Output = ()>,
) -> io::Result<bool> {
    let builder = connection_builder(settings);
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr()?;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: pause instead of spinning or exiting.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small responses go out at once instead of waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let trusted = settings.trusted_proxies.clone();
        let hyper_service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let connection = Connection { peer, local, trusted: &trusted };
            let response = handler.handle(req.map(Body::from), &connection);
            async move { Ok::<_, Infallible>(response.await) }
        });
        // A copy per connection, carrying the connection's own header-read timer (`into_owned`
        // then copies it once more into the connection: hyper_util takes no owned builder).
        let mut builder = builder.clone();
        builder.http1().timer(HeadTimer::default());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace = ?settings.shutdown_grace, "shutting down: no new connections, waiting for in-flight requests");
    let deadline = tokio::time::Instant::now() + settings.shutdown_grace;
    let requests_done = tokio::time::timeout_at(deadline, graceful.shutdown()).await.is_ok();
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

fn connection_builder(settings: &Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Replaced by each connection's own `HeadTimer`; set here so that the builder is complete.
        .timer(HeadTimer::default())
        .keep_alive(true)
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(MIN_HTTP1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    if !settings.http2 {
        builder = builder.http1_only();
    }
    builder
}

/// hyper's timer for one HTTP/1.1 connection, whose only use of it is the header-read timeout:
/// one deadline per request head, each later than the one before.
///
/// hyper asks for a new sleep for every head and drops it once the head is read. With
/// `TokioTimer`, each is a timer of its own: registered in the runtime's timer wheel when the
/// connection waits for the head, removed again when the head arrives — two trips through the
/// wheel's lock and an allocation per request on every keep-alive connection. Here the sleeps
/// hyper gets are only deadlines; they share one runtime timer per connection, which each new
/// head moves later. Moving a pending timer later touches no lock: the wheel reaches it at the old
/// time, finds it moved and files it again, so it handles each connection's timer about once per
/// `header_read_timeout`, not once per request. When the timer fires for a head that has since
/// arrived (the connection then busy with its request), the connection is woken once for nothing.
#[derive(Clone, Default)]
struct HeadTimer {
    shared: Arc<std::sync::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadDeadline { deadline: deadline.into(), shared: self.shared.clone() })
    }
}

/// One head's deadline on its connection's [`HeadTimer`].
struct HeadDeadline {
    deadline: tokio::time::Instant,
    shared: Arc<std::sync::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl hyper::rt::Sleep for HeadDeadline {}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        if tokio::time::Instant::now() >= deadline {
            return Poll::Ready(());
        }
        // Only the connection's own task polls it: the lock is never contended.
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let timer = shared.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
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
}

impl Reloader {
    /// Loads the config again. A valid one replaces the running router; an invalid one is logged
    /// and the running one stays. Returns whether the new config was swapped in.
    pub async fn reload(&self) -> bool {
        let path = self.path.clone();
        // Reading the file and building the layers (opening logs, reading password files) blocks.
        let built = tokio::task::spawn_blocking(move || crate::load(Some(&path))).await;
        let gateway = match built {
            Ok(Ok(gateway)) => gateway,
            Ok(Err(error)) => {
                tracing::error!("config rejected, still serving the previous one:\n{error}");
                return false;
            }
            Err(error) => {
                tracing::error!(%error, "config reload failed, still serving the previous one");
                return false;
            }
        };
        for setting in self.restart_only_changes(&gateway.server) {
            tracing::warn!("`{setting}` changed: it is fixed when strata starts, restart strata to use it");
        }
        gateway.log_warnings();
        let routes = gateway.routes.len();
        self.live.replace(gateway.router);
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
        changed
    }

    /// Reloads on every SIGHUP and, with `watch`, whenever the file's modification time or size
    /// changes (checked every `watch` interval). Runs until the task is dropped.
    ///
    /// Watching polls the file's metadata instead of using inotify: one `stat` a second costs
    /// nothing, needs no dependency, and sees every way of saving a file (in place, or an editor's
    /// write-and-rename, which an inotify watch on the old inode misses).
    pub async fn run(self, mut hangup: Hangup, watch: Option<Duration>) {
        let mut seen = file_stamp(&self.path);
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
                    seen = file_stamp(&self.path);
                    self.reload().await;
                }
                () = poll => {
                    let now = file_stamp(&self.path);
                    // A missing file is a save in progress (or a mistake): keep serving, look again.
                    if now.is_some() && now != seen {
                        seen = now;
                        tracing::info!(config = %self.path.display(), "config file changed: reloading");
                        self.reload().await;
                    }
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;
    use tokio::time::{Instant, advance};

    fn ready(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> bool {
        sleep.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())).is_ready()
    }

    fn head(timer: &HeadTimer, after: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        timer.sleep_until((Instant::now() + after).into_std())
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_deadline_resolves_when_it_passes_not_before() {
        let timer = HeadTimer::default();
        let mut sleep = head(&timer, Duration::from_secs(10));
        assert!(!ready(&mut sleep));
        advance(Duration::from_millis(9_999)).await;
        assert!(!ready(&mut sleep));
        advance(Duration::from_millis(2)).await;
        assert!(ready(&mut sleep));
    }

    #[tokio::test(start_paused = true)]
    async fn each_head_moves_the_shared_timer_to_its_own_deadline() {
        let timer = HeadTimer::default();
        let mut first = head(&timer, Duration::from_secs(10));
        assert!(!ready(&mut first));
        drop(first);
        advance(Duration::from_secs(5)).await;
        // The next head's deadline is 15 s from the start: the first one's 10 s must not end it.
        let mut second = head(&timer, Duration::from_secs(10));
        assert!(!ready(&mut second));
        advance(Duration::from_secs(6)).await;
        assert!(!ready(&mut second), "resolved at the previous head's deadline");
        advance(Duration::from_secs(5)).await;
        assert!(ready(&mut second));
        // Fired, the shared timer is armed again for the head after.
        let mut third = head(&timer, Duration::from_secs(10));
        assert!(!ready(&mut third));
        advance(Duration::from_secs(11)).await;
        assert!(ready(&mut third));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_connection_is_woken_at_its_deadline() {
        let timer = HeadTimer::default();
        let started = Instant::now();
        head(&timer, Duration::from_secs(3)).await;
        assert_eq!(started.elapsed().as_secs(), 3);
    }
}
