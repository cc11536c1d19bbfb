//! Serving one connection with hyper: HTTP/1.1, or HTTP/2 when the client opens with the
//! prior-knowledge preface.
//!
//! hyper-util's `auto` builder does the same, but it hands hyper the bytes it read to tell the
//! protocols apart as a read of their own. hyper's HTTP/1 read buffer then sees a partial request
//! head on its first read and doubles to 16 KiB on the second, a buffer every keep-alive
//! connection holds for its life. Here the first read hyper makes returns those bytes together
//! with what the socket already has, the whole head of a usual request, which fits the 8 KiB
//! buffer hyper starts with.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an HTTP/2 connection with prior knowledge starts with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's settings for each protocol a server speaks.
#[derive(Clone, Debug)]
pub(super) struct Protocols {
    /// HTTP/1.1.
    pub(super) http1: http1::Builder,
    /// HTTP/2 with prior knowledge, when accepted.
    pub(super) http2: Option<http2::Builder<TokioExecutor>>,
}

impl Protocols {
    /// Serves `io` with `service` in the protocol its first bytes announce. A connection that
    /// closes or is shut down gracefully before they tell ends without an error.
    pub(super) fn serve<I, S>(&self, io: I, service: S) -> Serving<'_, I, S>
    where
        I: AsyncRead + AsyncWrite + Unpin,
        S: HttpService<Incoming>,
    {
        Serving::Sniffing {
            protocols: self,
            sniff: Some(Sniff { io, service, prefix: [0; 24], filled: 0, cancelled: false }),
        }
    }
}

/// A connection whose first bytes are still being read.
struct Sniff<I, S> {
    io: I,
    service: S,
    prefix: [u8; 24],
    filled: usize,
    cancelled: bool,
}

pin_project! {
    /// The future of one connection ([`Protocols::serve`]).
    #[project = ServingProjection]
    pub(super) enum Serving<'a, I, S>
    where
        S: HttpService<Incoming>,
    {
        Sniffing { protocols: &'a Protocols, sniff: Option<Sniff<I, S>> },
        Http1 { #[pin] connection: http1::UpgradeableConnection<TokioIo<Prefixed<I>>, S> },
        // Boxed: an HTTP/2 connection's state is twice an HTTP/1 one's, which HTTP/1
        // connections would otherwise pay for too.
        Http2 { connection: Pin<Box<http2::Connection<TokioIo<Prefixed<I>>, S, TokioExecutor>>> },
        Done,
    }
}

impl<I, S> Serving<'_, I, S>
where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor: Http2ServerConnExec<S::Future, S::ResBody>,
{
    /// Asks the connection to end once its in-flight requests are answered (HTTP/2: `GOAWAY`);
    /// before its first bytes, at once.
    pub(super) fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ServingProjection::Sniffing { sniff, .. } => {
                if let Some(sniff) = sniff {
                    sniff.cancelled = true;
                }
            }
            ServingProjection::Http1 { connection } => connection.graceful_shutdown(),
            ServingProjection::Http2 { connection } => connection.as_mut().graceful_shutdown(),
            ServingProjection::Done => {}
        }
    }
}

impl<I, S> Future for Serving<'_, I, S>
where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor: Http2ServerConnExec<S::Future, S::ResBody>,
{
    type Output = Result<(), hyper::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ServingProjection::Sniffing { protocols, sniff } => {
                    let protocols = *protocols;
                    let Some(state) = sniff.as_mut() else { return Poll::Ready(Ok(())) };
                    if state.cancelled {
                        self.set(Serving::Done);
                        return Poll::Ready(Ok(()));
                    }
                    let http2 = match ready!(read_preface(state, protocols.http2.is_some(), cx)) {
                        Ok(Some(http2)) => http2,
                        // Closed (or failed) before a byte told the protocol: nothing to answer.
                        Ok(None) | Err(_) => {
                            self.set(Serving::Done);
                            return Poll::Ready(Ok(()));
                        }
                    };
                    let Some(Sniff { io, service, prefix, filled, .. }) = sniff.take() else {
                        return Poll::Ready(Ok(()));
                    };
                    let io = TokioIo::new(Prefixed { io, prefix, start: 0, end: filled });
                    let next = match &protocols.http2 {
                        Some(builder) if http2 => {
                            Serving::Http2 { connection: Box::pin(builder.serve_connection(io, service)) }
                        }
                        _ => {
                            Serving::Http1 { connection: protocols.http1.serve_connection(io, service).with_upgrades() }
                        }
                    };
                    self.set(next);
                }
                ServingProjection::Http1 { connection } => return connection.poll(cx),
                ServingProjection::Http2 { connection } => return connection.as_mut().poll(cx),
                ServingProjection::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Reads until the bytes so far show whether the connection opens with the HTTP/2 preface:
/// `Some(true)` if it does (and `http2` is accepted), `Some(false)` for HTTP/1, `None` when the
/// client closed first.
fn read_preface<I: AsyncRead + Unpin, S>(
    sniff: &mut Sniff<I, S>,
    http2: bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<bool>>> {
    if !http2 {
        // Nothing to tell apart: hyper reads the first bytes itself.
        return Poll::Ready(Ok(Some(false)));
    }
    while sniff.filled < H2_PREFACE.len() {
        let mut buf = ReadBuf::new(&mut sniff.prefix[sniff.filled..]);
        ready!(Pin::new(&mut sniff.io).poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        if read == 0 {
            // Closed: with some bytes, hyper answers them (a truncated head gets its error).
            return Poll::Ready(Ok((sniff.filled > 0).then_some(false)));
        }
        let end = sniff.filled + read;
        let matches = sniff.prefix[sniff.filled..end] == H2_PREFACE[sniff.filled..end];
        sniff.filled = end;
        if !matches {
            return Poll::Ready(Ok(Some(false)));
        }
    }
    Poll::Ready(Ok(Some(true)))
}

/// A stream whose first reads return bytes already read from it: with whatever the stream
/// itself has ready, so that the reader sees them as one read, as if never taken out.
#[derive(Debug)]
pub(super) struct Prefixed<I> {
    io: I,
    prefix: [u8; 24],
    start: usize,
    end: usize,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.start == this.end {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = (this.end - this.start).min(buf.remaining());
        buf.put_slice(&this.prefix[this.start..this.start + n]);
        this.start += n;
        if this.start == this.end && buf.remaining() > 0 {
            // Whatever the stream has now joins the prefix; a wait or an error is for the next
            // read to meet, the prefix being an answer already.
            let _ = Pin::new(&mut this.io).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefixed_returns_the_prefix_with_what_the_stream_has_in_one_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"T / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut prefix = [0; 24];
        prefix[..2].copy_from_slice(b"GE");
        let mut stream = Prefixed { io: server, prefix, start: 0, end: 2 };
        let mut buf = [0; 8192];
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn prefixed_returns_the_prefix_alone_when_the_stream_has_nothing_yet() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut prefix = [0; 24];
        prefix[..3].copy_from_slice(b"GET");
        let mut stream = Prefixed { io: server, prefix, start: 0, end: 3 };
        let mut small = [0; 2];
        assert_eq!(stream.read(&mut small).await.unwrap(), 2);
        assert_eq!(&small, b"GE");
        let mut buf = [0; 16];
        let n = tokio::time::timeout(std::time::Duration::from_secs(1), stream.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"T");
    }

    fn protocols(http2: bool) -> Protocols {
        let mut http1 = http1::Builder::new();
        http1.header_read_timeout(None);
        Protocols { http1, http2: http2.then(|| http2::Builder::new(TokioExecutor::new())) }
    }

    fn hello() -> impl HttpService<Incoming, ResBody = String, Error = std::convert::Infallible, Future: Send> + Send {
        hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("hello")))
        })
    }

    /// Serves one connection of `protocols` on a duplex stream, returning the client's end and
    /// the connection's task.
    fn serve_duplex(
        protocols: Protocols,
    ) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move { protocols.serve(server, hello()).await });
        (client, task)
    }

    async fn read_until_closed_or(client: &mut tokio::io::DuplexStream, needle: &[u8]) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buf = [0; 4096];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let n = tokio::time::timeout_at(deadline, client.read(&mut buf)).await.expect("answer in time").unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    }

    #[tokio::test]
    async fn an_http1_head_sent_in_pieces_is_answered() {
        let (mut client, _task) = serve_duplex(protocols(true));
        for piece in [&b"G"[..], b"ET / HTTP/1.1\r\nHo", b"st: x\r\n\r\n"] {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let answer = read_until_closed_or(&mut client, b"hello").await;
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&answer));
    }

    #[tokio::test]
    async fn the_http2_preface_sent_byte_by_byte_selects_http2() {
        let (mut client, _task) = serve_duplex(protocols(true));
        for byte in H2_PREFACE {
            client.write_all(&[*byte]).await.unwrap();
            tokio::task::yield_now().await;
        }
        // An empty SETTINGS frame: the client's side of the handshake.
        client.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let mut head = [0; 9];
        tokio::time::timeout(std::time::Duration::from_secs(5), client.read_exact(&mut head)).await.unwrap().unwrap();
        assert_eq!(head[3], 4, "the server's first frame is SETTINGS: {head:?}");
    }

    #[tokio::test]
    async fn without_http2_the_preface_goes_to_http1() {
        let (mut client, _task) = serve_duplex(protocols(false));
        client.write_all(H2_PREFACE).await.unwrap();
        let answer = read_until_closed_or(&mut client, b"\r\n\r\n").await;
        assert!(!answer.starts_with(&[0, 0]), "no HTTP/2 frame without HTTP/2: {answer:?}");
    }

    #[tokio::test]
    async fn a_client_that_closes_before_a_byte_ends_the_connection_without_error() {
        let (client, task) = serve_duplex(protocols(true));
        drop(client);
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap();
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_graceful_shutdown_before_the_first_byte_ends_the_connection_at_once() {
        let (_client, server) = tokio::io::duplex(1024);
        let protocols = protocols(true);
        let serving = protocols.serve(server, hello());
        tokio::pin!(serving);
        assert!(futures_util::poll!(serving.as_mut()).is_pending());
        serving.as_mut().graceful_shutdown();
        let result = tokio::time::timeout(std::time::Duration::from_secs(1), serving).await.unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}
