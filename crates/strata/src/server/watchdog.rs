//! The connection watchdog: how long a client may take to send a request head, stay idle between
//! requests, stall a request body or stop reading a response.
//!
//! Each connection has one watchdog ([`watch`]): a single runtime timer that looks at the connection's
//! [`ConnectionState`] when it fires and either ends the connection or moves itself to the next
//! deadline. The state is a few atomics, updated by three small wrappers as the connection works:
//!
//! - [`GuardedIo`] around the socket notes the first byte of a request head (a read while no
//!   request is in progress) and how long a write has been blocked (the client not reading);
//! - an [`InFlight`] token lives from a request's dispatch to the end of its response body, so a
//!   long response (a download, server-sent events) is never mistaken for an idle connection;
//! - [`TimedBody`] around a request body fails the request when no byte arrives for
//!   `body_read_timeout` (a 1 byte/s upload), which the app or proxy answers as the client's fault.
//!
//! The per-request cost is two atomic updates and a clock read: no timer is registered, moved or
//! removed per request. A timer is touched when a deadline passes, about once per timeout period
//! per connection, and a request body's own timer only when a read of it has to wait.
//!
//! The deadlines, like nginx's and HAProxy's client timeouts:
//!
//! | phase | deadline | on expiry |
//! | --- | --- | --- |
//! | before the first request | accept + `header_read_timeout` | closed (no byte or no full head) |
//! | idle between requests | last response's end + `keepalive_timeout` | closed gracefully (HTTP/2: `GOAWAY`) |
//! | a later request's head | its first byte + `header_read_timeout` | closed |
//! | a write blocked | blocked since + `send_timeout` | closed |
//! | a request body read waiting | waiting since + `body_read_timeout` | the body fails → `408` |
//!
//! HTTP/2 clients that stop reading are also caught by the protocol's keep-alive pings, which a
//! client that reads nothing never acknowledges.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::ConnectionLimits;
use crate::http::{BodyReadTimeout, BoxError};

/// What one connection is doing, as the watchdog needs to know it. Times are nanoseconds since
/// the connection was accepted (`0` for "not set" where the field is optional, which is why they
/// are stored plus one).
#[derive(Debug)]
pub struct ConnectionState {
    accepted: Instant,
    /// Requests dispatched whose response body has not ended (HTTP/2: open streams).
    in_flight: AtomicU32,
    /// Requests dispatched so far.
    served: AtomicU32,
    /// Whether the connection speaks HTTP/2, where bytes between requests are the protocol's
    /// own frames (pings, settings, window updates) rather than the start of a head.
    http2: AtomicBool,
    /// When the last response ended (valid while `in_flight` is 0 and `served` > 0).
    idle_since: AtomicU64,
    /// When the first byte after the last response arrived, plus one; 0: none yet.
    head_started: AtomicU64,
    /// When a write last found the socket full, plus one; 0: the last write went through.
    write_blocked: AtomicU64,
}

/// Why a watchdog ends its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request head within `header_read_timeout`.
    Head,
    /// Idle for `keepalive_timeout` between requests.
    Idle,
    /// A write blocked for `send_timeout`.
    Send,
}

impl Expiry {
    /// The config key whose deadline passed.
    pub fn key(self) -> &'static str {
        match self {
            Expiry::Head => "header_read_timeout",
            Expiry::Idle => "keepalive_timeout",
            Expiry::Send => "send_timeout",
        }
    }
}

/// What the watchdog should do when its timer fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing has expired: look again at this time.
    Later(Instant),
    /// A deadline passed.
    Expired(Expiry),
}

impl ConnectionState {
    /// The state of a connection accepted now.
    pub fn new() -> Arc<Self> {
        Self::accepted_at(Instant::now())
    }

    fn accepted_at(accepted: Instant) -> Arc<Self> {
        Arc::new(ConnectionState {
            accepted,
            in_flight: AtomicU32::new(0),
            served: AtomicU32::new(0),
            http2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
        })
    }

    fn since_accept(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.accepted).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.accepted + Duration::from_nanos(nanos)
    }

    /// A request was dispatched: the token ends its in-flight time when dropped (with the response
    /// body, or with the request if it never produced one).
    pub fn start_request(self: &Arc<Self>, version: http::Version) -> InFlight {
        if version == http::Version::HTTP_2 && !self.http2.load(Ordering::Relaxed) {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        InFlight { state: self.clone() }
    }

    fn note_read(&self) {
        // Only the first byte of a head between requests starts its clock; reads during a request
        // (its body, a pipelined head) are the request's business.
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_started.store(self.since_accept(Instant::now()) + 1, Ordering::Relaxed);
        }
    }

    fn note_write(&self, blocked: bool) {
        let current = self.write_blocked.load(Ordering::Relaxed);
        if blocked && current == 0 {
            self.write_blocked.store(self.since_accept(Instant::now()) + 1, Ordering::Relaxed);
        } else if !blocked && current != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    /// The verdict at `now`: which deadline has passed, or when the next one falls.
    pub fn check(&self, now: Instant, limits: &ConnectionLimits) -> Verdict {
        let mut next: Option<(Instant, Expiry)> = None;
        let mut consider = |at: Instant, why: Expiry| {
            if next.is_none_or(|(t, _)| at < t) {
                next = Some((at, why));
            }
        };
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != 0 {
            consider(self.at(blocked - 1) + limits.send_timeout, Expiry::Send);
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let head = self.head_started.load(Ordering::Relaxed);
            if self.served.load(Ordering::Relaxed) == 0 {
                consider(self.accepted + limits.header_read_timeout, Expiry::Head);
            } else if head != 0 {
                consider(self.at(head - 1) + limits.header_read_timeout, Expiry::Head);
            } else {
                consider(self.at(self.idle_since.load(Ordering::Relaxed)) + limits.keepalive_timeout, Expiry::Idle);
            }
        }
        match next {
            Some((at, why)) if at <= now => Verdict::Expired(why),
            Some((at, _)) => Verdict::Later(at),
            // Busy and writing freely: look again in a while (a write may block meanwhile).
            None => Verdict::Later(now + limits.send_timeout),
        }
    }
}

/// A request in progress on its connection; see [`ConnectionState::start_request`].
#[derive(Debug)]
pub struct InFlight {
    state: Arc<ConnectionState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Every end is stored, before the count drops: a watchdog that sees no request in flight
        // then sees when the last one ended, even when two HTTP/2 streams end at once.
        self.state.idle_since.store(self.state.since_accept(Instant::now()), Ordering::Relaxed);
        self.state.in_flight.fetch_sub(1, Ordering::Release);
    }
}

pin_project! {
    /// A response body that keeps a guard alive until it ends (or is dropped): its request in
    /// flight on the connection ([`InFlight`]), or any count of the caller's (a proxy's requests
    /// open on an upstream).
    #[derive(Debug)]
    pub struct TrackedBody<B, G = InFlight> {
        #[pin]
        inner: B,
        guard: G,
    }
}

impl<B, G> TrackedBody<B, G> {
    /// `inner`, keeping `guard` alive as long as it is.
    pub fn new(inner: B, guard: G) -> Self {
        TrackedBody { inner, guard }
    }
}

impl<B: HttpBody, G> HttpBody for TrackedBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A client socket that reports reads and blocked writes to its connection's state.
    #[derive(Debug)]
    pub struct GuardedIo<T> {
        #[pin]
        inner: T,
        state: Arc<ConnectionState>,
    }
}

impl<T> GuardedIo<T> {
    /// `inner`, reporting to `state`.
    pub fn new(inner: T, state: Arc<ConnectionState>) -> Self {
        GuardedIo { inner, state }
    }
}

impl<T: AsyncRead> AsyncRead for GuardedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.note_read();
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for GuardedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, buf);
        this.state.note_write(result.is_pending());
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        this.state.note_write(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.inner.poll_flush(cx);
        this.state.note_write(result.is_pending());
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Drives `connection` under its watchdog until it ends, a deadline passes, or `stop` asks every
/// connection to finish (server shutdown). `graceful` starts a connection's graceful close: an idle
/// HTTP/1.1 connection closes, a busy one closes after its response, HTTP/2 sends `GOAWAY`.
///
/// The socket is read and written while `connection` is polled, here: after each poll the watchdog
/// sees whether a write has just blocked, and brings its timer forward to that write's deadline.
///
/// Returns why the watchdog ended the connection, if it did. The future registers its wake-ups
/// (shutdown, deadlines) once, with the waker of its first poll: poll it from one task for its
/// whole life, as a connection's task does.
pub async fn watch<C, E>(
    connection: C,
    graceful: impl Fn(Pin<&mut C>),
    state: Arc<ConnectionState>,
    limits: ConnectionLimits,
    stop: tokio_util::sync::CancellationToken,
) -> (Option<Expiry>, Result<(), E>)
where
    C: Future<Output = Result<(), E>>,
{
    /// How long an idle connection asked to close gracefully has before it is dropped.
    const CLOSE_GRACE: Duration = Duration::from_secs(5);
    tokio::pin!(connection);
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let mut draining = false;
    let mut closing_idle = false;
    let mut seen_block = 0;
    let timer = tokio::time::sleep_until(state.accepted + limits.header_read_timeout);
    tokio::pin!(timer);
    // Whether `stopped` and `timer` hold this task's waker. The connection is polled several times
    // per request, and polling either again would only register the same waker again (a lock for
    // `stopped`, atomic swaps for `timer`): once registered, cheap reads say when they are due —
    // `is_cancelled` and `is_elapsed` — and only then are they polled. The task's waker does not
    // change between polls (this future is the task's own, polled by nothing else).
    let mut stop_registered = false;
    let mut timer_registered = false;
    let stop = &stop;
    std::future::poll_fn(move |cx| {
        loop {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready((None, result));
            }
            if !draining && (!stop_registered || stop.is_cancelled()) {
                stop_registered = true;
                if stopped.as_mut().poll(cx).is_ready() {
                    draining = true;
                    graceful(connection.as_mut());
                    continue;
                }
            }
            let blocked = state.write_blocked.load(Ordering::Relaxed);
            if blocked != seen_block {
                seen_block = blocked;
                let due = state.at(blocked.saturating_sub(1)) + limits.send_timeout;
                if blocked != 0 && due < timer.deadline() {
                    timer.as_mut().reset(due);
                    timer_registered = false;
                }
            }
            if timer_registered && !timer.is_elapsed() {
                return Poll::Pending;
            }
            if timer.as_mut().poll(cx).is_pending() {
                timer_registered = true;
                return Poll::Pending;
            }
            timer_registered = false;
            let now = Instant::now();
            match state.check(now, &limits) {
                Verdict::Later(at) => timer.as_mut().reset(at),
                Verdict::Expired(Expiry::Idle) if !closing_idle => {
                    closing_idle = true;
                    graceful(connection.as_mut());
                    timer.as_mut().reset(now + CLOSE_GRACE);
                }
                Verdict::Expired(why) => return Poll::Ready((Some(why), Ok(()))),
            }
        }
    })
    .await
}

pin_project! {
    /// A request body that fails when no byte arrives for a while (nginx's `client_body_timeout`).
    ///
    /// The timer exists only while a read waits: a body that arrives with its head, as most do,
    /// never registers one.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        timeout: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        waiting: bool,
    }
}

impl<B> TimedBody<B> {
    /// `inner`, failing after `timeout` without a frame.
    pub fn new(inner: B, timeout: Duration) -> Self {
        TimedBody { inner, timeout, timer: None, waiting: false }
    }
}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + *this.timeout;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !*this.waiting {
                    // A new wait: its own full timeout, counted from now.
                    *this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout(*this.timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(20),
            ..ConnectionLimits::default()
        }
    }

    fn expect_later(state: &ConnectionState, after: Duration) {
        let now = Instant::now();
        assert_eq!(state.check(now, &limits()), Verdict::Later(now + after));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_at_accept_plus_the_head_timeout() {
        let state = ConnectionState::new();
        expect_later(&state, Duration::from_secs(10));
        advance(Duration::from_secs(4)).await;
        // A byte does not restart the first request's clock.
        state.note_read();
        expect_later(&state, Duration::from_secs(6));
        advance(Duration::from_secs(6)).await;
        assert_eq!(state.check(Instant::now(), &limits()), Verdict::Expired(Expiry::Head));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_has_no_head_or_idle_deadline() {
        let state = ConnectionState::new();
        let request = state.start_request(http::Version::HTTP_11);
        advance(Duration::from_secs(100)).await;
        // Busy and writing freely: looked at again one send timeout later, nothing expired.
        expect_later(&state, Duration::from_secs(20));
        drop(request);
        // Idle from now: the keep-alive timeout, not the head timeout.
        expect_later(&state, Duration::from_secs(60));
        advance(Duration::from_secs(60)).await;
        assert_eq!(state.check(Instant::now(), &limits()), Verdict::Expired(Expiry::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_head_is_timed_from_its_first_byte() {
        let state = ConnectionState::new();
        drop(state.start_request(http::Version::HTTP_11));
        advance(Duration::from_secs(30)).await;
        state.note_read();
        expect_later(&state, Duration::from_secs(10));
        advance(Duration::from_secs(5)).await;
        // More bytes of the same head do not move its deadline.
        state.note_read();
        expect_later(&state, Duration::from_secs(5));
        advance(Duration::from_secs(5)).await;
        assert_eq!(state.check(Instant::now(), &limits()), Verdict::Expired(Expiry::Head));
        // The head's dispatch clears it.
        let _request = state.start_request(http::Version::HTTP_11);
        expect_later(&state, Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_expires_after_the_send_timeout_even_mid_request() {
        let state = ConnectionState::new();
        let _request = state.start_request(http::Version::HTTP_11);
        state.note_write(true);
        advance(Duration::from_secs(15)).await;
        // Still blocked: the first blocked moment counts.
        state.note_write(true);
        expect_later(&state, Duration::from_secs(5));
        advance(Duration::from_secs(5)).await;
        assert_eq!(state.check(Instant::now(), &limits()), Verdict::Expired(Expiry::Send));
        // A write that goes through clears it.
        state.note_write(false);
        expect_later(&state, Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_during_a_request_do_not_start_a_head() {
        let state = ConnectionState::new();
        let request = state.start_request(http::Version::HTTP_11);
        state.note_read();
        drop(request);
        advance(Duration::from_secs(30)).await;
        // Idle, not a head started 30 s ago.
        expect_later(&state, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_requests_do_not_start_a_head() {
        let state = ConnectionState::new();
        drop(state.start_request(http::Version::HTTP_2));
        advance(Duration::from_secs(1)).await;
        // A ping or a window update: the connection is still idle, on the keep-alive clock.
        state.note_read();
        expect_later(&state, Duration::from_secs(59));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_its_timeout_and_a_flowing_one_does_not() {
        use http_body_util::BodyExt;
        /// A body fed by a channel, as a client's upload arrives.
        struct Fed(tokio::sync::mpsc::Receiver<Bytes>);
        impl HttpBody for Fed {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = TimedBody::new(Fed(rx), Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => got.extend_from_slice(&f.into_data().unwrap()),
                    Err(e) => return (got, Some(e.to_string())),
                }
            }
            (got, None)
        });
        for _ in 0..3 {
            advance(Duration::from_secs(4)).await;
            tx.send(Bytes::from_static(b"x")).await.unwrap();
        }
        advance(Duration::from_secs(6)).await;
        let (got, error) = reader.await.unwrap();
        assert_eq!(got, b"xxx", "each byte within 4 s of the last keeps the body alive");
        assert!(error.unwrap().contains("no byte of the request body arrived for 5s"));
    }
}
