//! The body type every strata request and response carries.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A request or response body.
///
/// Empty and in-memory bodies, and the server's incoming bodies, are held without boxing, so the
/// common cases cost no allocation; anything else implementing [`http_body::Body`] can be wrapped,
/// `Sync` or not (see [`Body::new`]).
#[derive(Debug)]
pub struct Body {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Empty,
    Full(Option<Bytes>),
    Incoming(hyper::body::Incoming),
    Boxed(BoxBody<Bytes, BoxError>),
    Unsync(UnsyncBody),
}

/// A body that is `Send` but not `Sync` (axum's body, most bodies of tower-http's wrappers).
///
/// A [`Body`] is `Sync`, so that a layer may hold `&Request` across an `.await`. This one is made
/// `Sync` by being reached only through `&mut`: its `Mutex` is never locked (`get_mut` needs no
/// lock, since `&mut` already proves no one else holds it), and the `&self` methods of
/// [`http_body::Body`] answer from what the last poll left, which is exact because a body changes
/// only when it is polled.
struct UnsyncBody {
    body: std::sync::Mutex<UnsyncBoxBody<Bytes, BoxError>>,
    size_hint: SizeHint,
    end_stream: bool,
}

impl UnsyncBody {
    fn new(body: UnsyncBoxBody<Bytes, BoxError>) -> Self {
        UnsyncBody { size_hint: body.size_hint(), end_stream: body.is_end_stream(), body: std::sync::Mutex::new(body) }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Never locked, so never poisoned; `into_inner` only satisfies the type.
        let body = self.body.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let polled = Pin::new(&mut *body).poll_frame(cx);
        self.size_hint = body.size_hint();
        self.end_stream = body.is_end_stream();
        polled
    }
}

impl std::fmt::Debug for UnsyncBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsyncBody").field("size_hint", &self.size_hint).field("end_stream", &self.end_stream).finish()
    }
}

impl Body {
    /// An empty body.
    pub const fn empty() -> Self {
        Body { inner: Inner::Empty }
    }

    /// A body made of one in-memory chunk.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() { Self::empty() } else { Body { inner: Inner::Full(Some(bytes)) } }
    }

    /// Any other body: a stream, a file, a compressor's output.
    pub fn wrap<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Body { inner: Inner::Boxed(body.map_err(Into::into).boxed()) }
    }

    /// Any body that is `Send`, `Sync` or not: an axum or tower-http body, a body of any tower
    /// service. A strata [`Body`] or hyper's incoming body is taken as it is (no box, no copy);
    /// anything else is boxed and keeps its [`size_hint`](http_body::Body::size_hint) and
    /// [`is_end_stream`](http_body::Body::is_end_stream), so a fixed-size response keeps its
    /// `content-length`.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut body = Some(body);
        let any = &mut body as &mut dyn std::any::Any;
        if let Some(same) = any.downcast_mut::<Option<Body>>() {
            return same.take().unwrap_or_default();
        }
        if let Some(incoming) = any.downcast_mut::<Option<hyper::body::Incoming>>() {
            return incoming.take().map(Body::from).unwrap_or_default();
        }
        match body {
            Some(body) => Body { inner: Inner::Unsync(UnsyncBody::new(UnsyncBoxBody::new(body.map_err(Into::into)))) },
            None => Body::empty(),
        }
    }

    /// The bytes of the body when it is already in memory (empty or one chunk), without consuming it.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Empty => Some(&[]),
            Inner::Full(Some(b)) => Some(b),
            Inner::Full(None) => Some(&[]),
            _ => None,
        }
    }

    /// Reads the whole body into memory, failing once more than `limit` bytes have arrived.
    pub async fn collect_limited(self, limit: usize) -> Result<Bytes, BodyError> {
        match self.inner {
            Inner::Empty => return Ok(Bytes::new()),
            Inner::Full(b) => {
                let b = b.unwrap_or_default();
                return if b.len() > limit { Err(BodyError::TooLarge { limit }) } else { Ok(b) };
            }
            _ => {}
        }
        let mut body = self;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(BodyError::Read)?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(BodyError::TooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    }
}

/// Why a body could not be read into memory.
#[derive(Debug)]
pub enum BodyError {
    /// The body was larger than the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body failed while being read (the client went away, the stream broke).
    Read(BoxError),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(f, "body larger than {limit} bytes"),
            BodyError::Read(e) => write!(f, "reading the body failed: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A request body that stalled: no byte arrived for the given time (the gateway's
/// `body_read_timeout`). The client's fault, answered `408 Request Timeout`; see
/// [`is_read_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReadTimeout(pub std::time::Duration);

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no byte of the request body arrived for {:?}", self.0)
    }
}

impl std::error::Error for BodyReadTimeout {}

/// Whether a body error, or any error in its source chain, is a [`BodyReadTimeout`].
pub fn is_read_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyReadTimeout>() {
            return true;
        }
        current = e.source();
    }
    false
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<hyper::body::Incoming> for Body {
    fn from(incoming: hyper::body::Incoming) -> Self {
        Body { inner: Inner::Incoming(incoming) }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::full(b)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::full(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::full(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::full(v)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Incoming(i) => Pin::new(i).poll_frame(cx).map_err(Into::into),
            Inner::Boxed(b) => Pin::new(b).poll_frame(cx),
            Inner::Unsync(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty | Inner::Full(None) => true,
            Inner::Full(Some(_)) => false,
            Inner::Incoming(i) => i.is_end_stream(),
            Inner::Boxed(b) => b.is_end_stream(),
            Inner::Unsync(b) => b.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty | Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Incoming(i) => i.size_hint(),
            Inner::Boxed(b) => b.size_hint(),
            Inner::Unsync(b) => b.size_hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn full_bodies_know_their_size_and_end() {
        let b = Body::from("hello");
        assert_eq!(b.size_hint().exact(), Some(5));
        assert!(!b.is_end_stream());
        assert_eq!(block_on(b.collect_limited(5)).unwrap(), "hello");
        assert!(Body::from("").is_end_stream());
    }

    #[test]
    fn collect_stops_at_the_limit() {
        assert!(matches!(block_on(Body::from("hello").collect_limited(4)), Err(BodyError::TooLarge { limit: 4 })));
        let streamed = Body::wrap(http_body_util::Full::new(Bytes::from_static(b"0123456789")));
        assert!(matches!(block_on(streamed.collect_limited(9)), Err(BodyError::TooLarge { limit: 9 })));
        let streamed = Body::wrap(http_body_util::Full::new(Bytes::from_static(b"0123456789")));
        assert_eq!(block_on(streamed.collect_limited(10)).unwrap(), "0123456789");
    }

    /// A body that is `Send` but not `Sync`, as axum's is.
    struct NotSync(Option<Bytes>, std::marker::PhantomData<std::cell::Cell<()>>);

    impl http_body::Body for NotSync {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
        }
    }

    #[test]
    fn a_body_that_is_not_sync_keeps_its_size_and_end_as_it_is_read() {
        let mut body = Body::new(NotSync(Some(Bytes::from_static(b"hello")), std::marker::PhantomData));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let frame = block_on(body.frame()).unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.is_end_stream());
    }

    #[test]
    fn new_takes_a_strata_body_as_it_is() {
        let body = Body::new(Body::from("hello"));
        assert_eq!(body.as_bytes(), Some(&b"hello"[..]));
    }
}
