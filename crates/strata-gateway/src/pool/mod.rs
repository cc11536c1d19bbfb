//! Keep-alive HTTP/1.1 connections to one upstream, each driven by the request that uses it.
//!
//! A general-purpose client drives every connection in a task of its own: the request's task hands
//! the request over, the connection's task writes it, reads the response and hands it back, and a
//! third short task puts the connection back in the pool once the body is done. Each hand-off may
//! wake a thread. Here the request's own task polls the connection — while sending, and then inside
//! the response body the server streams to the client — so a proxied exchange involves no other
//! task. An idle connection is not polled at all; the next request using it polls it once first,
//! which finishes the previous exchange or finds it closed (then the request goes to another
//! connection: nothing had been sent on it). A small task per pool closes, once per
//! `idle_timeout`, the idle connections past it.
//!
//! Under per-core serving ([`strata::server::Workers`]) each worker keeps its own idle list, as
//! each nginx worker keeps its own keep-alive connections: a connection's socket is registered
//! with the reactor of the worker that opened it, and a request on another worker using it would
//! have each of its reads woken across threads. A request takes only from its own worker's list,
//! and opens a connection when that is empty rather than borrow another worker's: borrowing was
//! measured to cost a cross-thread wake-up on a quarter of the requests, since a borrowed
//! connection goes back to the list of the worker that opened it, so that the borrower keeps
//! borrowing. Elsewhere (a work-stealing runtime) there is one list.
//!
//! To an `https://` upstream, a connection is TCP then a TLS handshake ([`UpstreamTls`]), both
//! within `connect_timeout`: an untrusted certificate or a name it does not cover is a failure to
//! connect, like a refused connection.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use strata::http::{Body, BoxError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::tls_client::UpstreamTls;

mod local_wake;

use local_wake::LocalWake;

type Connection = http1::Connection<TokioIo<UpstreamStream>, Body>;

/// A connection's byte stream: plain TCP, or TLS over TCP to an `https://` upstream.
pub enum UpstreamStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`, handshake done. Boxed: rustls's state is kilobytes that a plain connection
    /// need not carry (one allocation per connection, not per request).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The most idle connections kept per upstream and worker; more are closed when their requests end.
const MAX_IDLE: usize = 512;

/// Why a request could not be sent or answered.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made (refused, unreachable, timed out).
    Connect(std::io::Error),
    /// The connection failed or closed before a complete response head.
    Exchange(hyper::Error),
    /// No response head came by the deadline (connecting included).
    Timeout,
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(e) => write!(f, "connect: {e}"),
            PoolError::Exchange(e) => f.write_str(&crate::proxy::error_chain(e)),
            PoolError::Timeout => f.write_str("no response in time"),
        }
    }
}

struct Link {
    sender: http1::SendRequest<Body>,
    conn: Connection,
    /// What `sender`, `conn` and the response body are polled with (see [`LocalWake`]).
    local: Arc<LocalWake>,
    /// `local` as a waker, made once.
    waker: Waker,
    /// The response deadline of the request on this connection. One timer for the connection's
    /// life, moved later for each request — which takes no lock when the timer is still pending —
    /// rather than a timer registered in the runtime's wheel and removed again per request.
    deadline: Pin<Box<Sleep>>,
    /// The idle list of the worker whose reactor the socket is registered with.
    home: usize,
}

/// A [`Link`] where it is kept: boxed once when connected, so that handing it from the pool to a
/// request, into its response body and back moves a pointer, not the ~700 bytes of hyper's
/// connection state (several times per request).
type BoxedLink = Box<Link>;

impl Link {
    fn new(sender: http1::SendRequest<Body>, conn: Connection, deadline: Pin<Box<Sleep>>, home: usize) -> Link {
        let local = Arc::new(LocalWake::new());
        let waker = Waker::from(local.clone());
        Link { sender, conn, local, waker, deadline, home }
    }

    /// Whether the connection can take a request right now, without waiting.
    fn ready_now(&mut self, cx: &mut Context<'_>) -> bool {
        let Link { sender, conn, local, waker, .. } = self;
        let ready = local.poll(waker, cx, |cx, _| {
            if Pin::new(&mut *conn).poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            sender.poll_ready(cx).map(|ready| ready.is_ok())
        });
        matches!(ready, Poll::Ready(true))
    }
}

struct Idle {
    link: BoxedLink,
    since: Instant,
}

/// The idle connections to one upstream address.
pub struct Pool {
    /// `host:port`, as given to `connect`.
    addr: String,
    /// The TLS spoken over each connection, for an `https://` upstream.
    tls: Option<Arc<UpstreamTls>>,
    /// The route's prefix, for logs.
    route: Box<str>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    // One list per per-core worker (the first for every other thread), each locked only to push
    // or pop one entry.
    idle: Box<[Mutex<Vec<Idle>>]>,
    // Whether the task that closes expired idle connections runs (started by the first request,
    // inside the runtime: a pool is also built by `strata check`, which has none).
    sweeping: AtomicBool,
}

impl Pool {
    /// A pool for `addr` (`host:port`), serving the route at `route` (named in logs).
    pub fn new(addr: String, route: Box<str>, connect_timeout: Duration, idle_timeout: Duration) -> Arc<Pool> {
        Self::with_tls(addr, None, route, connect_timeout, idle_timeout)
    }

    /// A pool for `addr` whose connections speak `tls` when given (an `https://` upstream).
    pub fn with_tls(
        addr: String,
        tls: Option<Arc<UpstreamTls>>,
        route: Box<str>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Pool> {
        let mut pool = Pool {
            addr,
            tls,
            route,
            connect_timeout,
            idle_timeout,
            idle: Box::default(),
            sweeping: AtomicBool::new(false),
        };
        pool.idle = (0..idle_lists()).map(|_| Mutex::new(Vec::new())).collect();
        Arc::new(pool)
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection or a new one, and resolves to
    /// the response head; the body keeps the connection and returns it to the pool once read.
    pub async fn send(self: &Arc<Self>, req: http::Request<Body>) -> Result<http::Response<Body>, PoolError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        self.send_or_return(req, deadline).await.map_err(|(error, _)| error)
    }

    /// [`Pool::send`] with a `deadline` for the response head (connecting included; past it,
    /// [`PoolError::Timeout`]), handing the request back with the error when none of it was written
    /// (no connection could be made, or a new one failed before the request went out): its body is
    /// untouched, so it may be sent elsewhere.
    pub async fn send_or_return(
        self: &Arc<Self>,
        mut req: http::Request<Body>,
        deadline: Instant,
    ) -> Result<http::Response<Body>, (PoolError, Option<http::Request<Body>>)> {
        if !self.sweeping.load(Ordering::Relaxed) && !self.idle_timeout.is_zero() {
            self.start_sweeping();
        }
        loop {
            let (mut link, reused) = match self.checkout() {
                Some(link) => (link, true),
                // Boxed: connecting is rare, and its state would otherwise make every request's
                // future larger.
                None => match tokio::time::timeout_at(deadline.into(), Box::pin(self.connect(deadline))).await {
                    Ok(Ok(link)) => (link, false),
                    Ok(Err(error)) => return Err((error, Some(req))),
                    Err(_) => return Err((PoolError::Timeout, None)),
                },
            };
            // A reused connection must be ready now: one poll finishes the previous exchange (or
            // finds the connection closed). One still busy — say, waiting for the rest of an upload
            // its upstream already answered — is dropped rather than waited for. A new connection
            // accepts its first request before it has been polled.
            if reused && !poll_fn(|cx| Poll::Ready(link.ready_now(cx))).await {
                continue;
            }
            let mut conn_done = false;
            let outcome = {
                let Link { sender, conn, deadline: timer, local, waker, .. } = &mut *link;
                // Later than the previous request's deadline, so the timer is moved, not registered
                // again (unless it fired while the connection was idle).
                timer.as_mut().reset(deadline.into());
                // Handing the request over wakes the connection, which the first poll below polls.
                let mut response = pin!(local.quietly(|| sender.try_send_request(req)));
                // The timer is polled once, which registers this task's waker with it; after that
                // it wakes the task when it fires, and `is_elapsed` says when to poll it again.
                let mut timer_registered = false;
                poll_fn(|cx| {
                    let exchanged = local.poll(waker, cx, |lcx, local| {
                        if let Poll::Ready(result) = response.as_mut().poll(lcx) {
                            return Poll::Ready(result);
                        }
                        // What handing the request over woke is the connection, polled now.
                        local.consumed();
                        if !conn_done && Pin::new(&mut *conn).poll(lcx).is_ready() {
                            // The connection is over: hyper answers the request with an error.
                            conn_done = true;
                            return response.as_mut().poll(lcx);
                        }
                        Poll::Pending
                    });
                    if let Poll::Ready(result) = exchanged {
                        return Poll::Ready(Some(result));
                    }
                    // Past the deadline the exchange is abandoned, and the connection with it.
                    if timer_registered && !timer.is_elapsed() {
                        return Poll::Pending;
                    }
                    timer_registered = true;
                    timer.as_mut().poll(cx).map(|()| None)
                })
                .await
            };
            let Some(outcome) = outcome else { return Err((PoolError::Timeout, None)) };
            match outcome {
                Ok(res) => {
                    let link = if conn_done { None } else { Some(link) };
                    let pool = self.clone();
                    return Ok(res.map(|incoming| {
                        Body::wrap(Driven {
                            incoming,
                            link: Mutex::new(link),
                            pool,
                            finished: false,
                            request_id: strata::http::AssignedRequestId::current(),
                        })
                    }));
                }
                Err(mut error) => match error.take_message() {
                    // Never written: safe to send on another connection.
                    Some(unsent) if reused => req = unsent,
                    unsent => return Err((PoolError::Exchange(error.into_error()), unsent)),
                },
            }
        }
    }

    /// The idle list of the calling thread's worker.
    fn home(&self) -> usize {
        strata::server::current_worker().map_or(0, |worker| worker % self.idle.len())
    }

    /// An idle connection of the caller's worker.
    fn checkout(&self) -> Option<BoxedLink> {
        let mut idle = self.idle[self.home()].lock().unwrap_or_else(PoisonError::into_inner);
        // The most recently used first: the one most likely still open.
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < self.idle_timeout && !entry.link.sender.is_closed() {
                return Some(entry.link);
            }
        }
        None
    }

    /// The idle connections, in every list.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.iter().map(|list| list.lock().unwrap().len()).sum()
    }

    /// Closes the idle connections past `idle_timeout` once per `idle_timeout`, so that a pool
    /// that goes quiet does not keep connections the upstream has since closed (each a descriptor
    /// in CLOSE-WAIT) until its next request. The task holds the pool weakly and ends with it.
    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        let every = self.idle_timeout;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let stale = pool.take_expired();
                drop(pool);
                drop(stale);
            }
        });
    }

    /// Removes the expired idle connections (the first entries: they are pushed in time order).
    fn take_expired(&self) -> Vec<Idle> {
        let mut stale = Vec::new();
        for list in &self.idle {
            let mut idle = list.lock().unwrap_or_else(PoisonError::into_inner);
            let expired = idle.iter().take_while(|e| e.since.elapsed() >= self.idle_timeout).count();
            stale.extend(idle.drain(..expired));
        }
        stale
    }

    fn checkin(&self, link: BoxedLink) {
        if self.idle_timeout.is_zero() || link.sender.is_closed() {
            return;
        }
        let mut idle = self.idle[link.home].lock().unwrap_or_else(PoisonError::into_inner);
        // Entries are pushed in time order and taken from the end, so the expired ones are the
        // first few: drop them here, or under steady traffic they would never be reached.
        let expired = idle.iter().take_while(|e| e.since.elapsed() >= self.idle_timeout).count();
        let stale: Vec<Idle> = idle.drain(..expired).collect();
        if idle.len() < MAX_IDLE {
            idle.push(Idle { link, since: Instant::now() });
        }
        drop(idle);
        // Closing sockets outside the lock.
        drop(stale);
    }

    async fn connect(&self, deadline: Instant) -> Result<BoxedLink, PoolError> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let stream = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| PoolError::Connect(timed_out()))?
            .map_err(PoolError::Connect)?;
        let (sender, conn) =
            http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(PoolError::Exchange)?;
        let deadline = Box::pin(tokio::time::sleep_until(deadline.into()));
        Ok(Box::new(Link::new(sender, conn, deadline, self.home())))
    }

    /// A TCP connection, then its TLS handshake for an `https://` upstream (whose error says why
    /// the certificate was refused).
    async fn open(&self) -> std::io::Result<UpstreamStream> {
        let tcp = TcpStream::connect(&self.addr).await?;
        // Small requests go out at once instead of waiting for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(UpstreamStream::Plain(tcp)),
            Some(tls) => Ok(UpstreamStream::Tls(Box::new(tls.handshake(tcp).await?))),
        }
    }
}

/// How many idle lists a pool keeps: one per per-core worker the process is likely to run (one per
/// CPU it may use); workers beyond that share lists.
fn idle_lists() -> usize {
    strata::server::Workers::available().clamp(1, 64)
}

/// A response body that drives its connection while it is read, and returns the connection to the
/// pool once it has been read to the end. When it fails (the upstream reset or closed the
/// connection mid-body) it says so in a WARN line: the client's response was cut short after its
/// status was sent, so nothing else records why.
struct Driven {
    incoming: Incoming,
    // A Mutex only to make the body `Sync` (strata's bodies are): it is never contended, and
    // `get_mut` takes no lock.
    link: Mutex<Option<BoxedLink>>,
    pool: Arc<Pool>,
    finished: bool,
    /// The id of the request this body answers, for the log line (its task-local one is gone by
    /// the time the body is read).
    request_id: Option<strata::http::AssignedRequestId>,
}

impl http_body::Body for Driven {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let incoming = &mut this.incoming;
        let link = this.link.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut conn_over = false;
        let frame = match link.as_deref_mut() {
            // Its data comes from the connection, polled here with it.
            Some(Link { conn, local, waker, .. }) => local.poll(waker, cx, |lcx, local| {
                if let Poll::Ready(frame) = Pin::new(&mut *incoming).poll_frame(lcx) {
                    return Poll::Ready(frame);
                }
                // Asking for more data woke the connection, polled now.
                local.consumed();
                if conn_over || Pin::new(&mut *conn).poll(lcx).is_pending() {
                    return Poll::Pending;
                }
                // Over: the body has now ended or failed; poll it again to say which.
                conn_over = true;
                Pin::new(&mut *incoming).poll_frame(lcx)
            }),
            None => Pin::new(&mut *incoming).poll_frame(cx),
        };
        if conn_over {
            // Never polled again once it has ended.
            *link = None;
        }
        let Poll::Ready(frame) = frame else { return Poll::Pending };
        match frame {
            None => {
                this.finished = true;
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                crate::proxy::log_truncated(&this.pool.route, &this.pool.addr, this.request_id.as_ref(), &error);
                Poll::Ready(Some(Err(error.into())))
            }
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        // A body dropped half-read leaves the connection mid-response: it cannot be reused.
        if self.finished || self.incoming.is_end_stream() {
            let link = self.link.get_mut().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(link) = link {
                self.pool.checkin(link);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A loopback HTTP/1.1 server answering `ok`, counting the connections it accepts; with
    /// `keep_alive` false it closes each connection after one response.
    async fn upstream(keep_alive: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_req: http::Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from("ok"))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, accepted)
    }

    fn request(addr: &str) -> http::Request<Body> {
        http::Request::builder().uri("/").header(http::header::HOST, addr).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (addr, accepted) = upstream(true).await;
        let pool = Pool::new(addr.clone(), "/".into(), Duration::from_secs(5), Duration::from_secs(5));
        for _ in 0..20 {
            let res = pool.send(request(&addr)).await.unwrap();
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced_without_an_error() {
        let (addr, accepted) = upstream(false).await;
        let pool = Pool::new(addr.clone(), "/".into(), Duration::from_secs(5), Duration::from_secs(5));
        for _ in 0..10 {
            let res = pool.send(request(&addr)).await.unwrap();
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
            // Give the upstream's close time to arrive, as between requests in real traffic.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn a_half_read_body_does_not_return_its_connection() {
        let (addr, accepted) = upstream(true).await;
        let pool = Pool::new(addr.clone(), "/".into(), Duration::from_secs(5), Duration::from_secs(5));
        drop(pool.send(request(&addr)).await.unwrap());
        let res = pool.send(request(&addr)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        // The body of the first was never read (not even its end): its connection was not reused.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_quiet_pool_closes_its_expired_idle_connections_by_itself() {
        let (addr, _) = upstream(true).await;
        let pool = Pool::new(addr.clone(), "/".into(), Duration::from_secs(5), Duration::from_millis(200));
        let get = || async { pool.send(request(&addr)).await.unwrap().into_body().collect().await.unwrap() };
        tokio::join!(get(), get(), get());
        assert_eq!(pool.idle_count(), 3);
        // No request comes: the sweeper alone closes them (within two of its periods).
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn expired_idle_connections_are_closed_even_under_steady_traffic() {
        let (addr, _) = upstream(true).await;
        let pool = Pool::new(addr.clone(), "/".into(), Duration::from_secs(5), Duration::from_millis(400));
        let get = || async { pool.send(request(&addr)).await.unwrap().into_body().collect().await.unwrap() };
        // Two connections in use at once, then both idle.
        tokio::join!(get(), get());
        assert_eq!(pool.idle_count(), 2);
        // One request at a time from now on: each reuses the most recent connection, so the other
        // one is never taken; it goes once expired, when a connection is returned.
        tokio::time::sleep(Duration::from_millis(250)).await;
        get().await;
        assert_eq!(pool.idle_count(), 2, "nothing expired yet");
        tokio::time::sleep(Duration::from_millis(250)).await;
        get().await;
        assert_eq!(pool.idle_count(), 1, "the unused connection expired and was closed");
    }

    /// Runs `work` on per-core worker `index` and waits for its result.
    async fn on_worker<T: Send + 'static>(
        workers: &strata::server::Workers,
        index: usize,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        workers.handle(index).unwrap().spawn(work).await.unwrap()
    }

    #[tokio::test]
    async fn each_worker_uses_only_the_idle_connections_it_opened() {
        let (addr, accepted) = upstream(true).await;
        let mut pool = Pool::new(addr.clone(), "/".into(), Duration::from_secs(5), Duration::from_secs(5));
        // Two lists whatever the CPUs of the machine running the test.
        Arc::get_mut(&mut pool).unwrap().idle = (0..2).map(|_| Mutex::new(Vec::new())).collect();
        let lists = |pool: &Pool| pool.idle.iter().map(|l| l.lock().unwrap().len()).collect::<Vec<_>>();
        let workers = strata::server::Workers::start(2).unwrap();
        let get = |pool: Arc<Pool>, addr: String| async move {
            pool.send(request(&addr)).await.unwrap().into_body().collect().await.unwrap().to_bytes()
        };
        assert_eq!(on_worker(&workers, 0, get(pool.clone(), addr.clone())).await, "ok");
        assert_eq!(lists(&pool), [1, 0]);
        // Worker 1 does not borrow worker 0's idle connection: it opens its own, kept in list 1.
        assert_eq!(on_worker(&workers, 1, get(pool.clone(), addr.clone())).await, "ok");
        assert_eq!(lists(&pool), [1, 1]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // From now on each reuses its own.
        for worker in [0, 1, 1, 0, 1] {
            assert_eq!(on_worker(&workers, worker, get(pool.clone(), addr.clone())).await, "ok");
        }
        assert_eq!(lists(&pool), [1, 1]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Outside the workers (a work-stealing runtime's thread), the first list is the one used.
        assert_eq!(pool.home(), 0);
        assert_eq!(get(pool.clone(), addr.clone()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A future that counts how often it is polled.
    struct CountPolls<F> {
        inner: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future> Future for CountPolls<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.inner.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn a_request_on_a_reused_connection_wakes_its_task_only_when_the_answer_arrives() {
        let (addr, accepted) = upstream(true).await;
        let pool = Pool::new(addr.clone(), "/".into(), Duration::from_secs(5), Duration::from_secs(5));
        // The first request opens the connection the others reuse.
        pool.send(request(&addr)).await.unwrap().into_body().collect().await.unwrap();
        for _ in 0..5 {
            let polls = Arc::new(AtomicUsize::new(0));
            let (pool, addr) = (pool.clone(), addr.clone());
            let exchange = CountPolls {
                inner: Box::pin(async move {
                    pool.send(request(&addr)).await.unwrap().into_body().collect().await.unwrap().to_bytes()
                }),
                polls: polls.clone(),
            };
            assert_eq!(tokio::spawn(exchange).await.unwrap(), "ok");
            // Once to send the request, once when the upstream's answer (head and body) is
            // readable. Handing the request to the connection, its response to the request and
            // its body to the reader wake the task too, unless they are answered where they happen.
            assert_eq!(polls.load(Ordering::SeqCst), 2);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let pool = Pool::new(addr.clone(), "/".into(), Duration::from_secs(5), Duration::from_secs(5));
        assert!(matches!(pool.send(request(&addr)).await, Err(PoolError::Connect(_))));
    }
}
