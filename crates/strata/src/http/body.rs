//! The body type every strata request and response carries.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A request or response body.
///
/// Empty and in-memory bodies, and the server's incoming bodies, are held without boxing, so the
/// common cases cost no allocation; anything else implementing [`http_body::Body`] can be wrapped.
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty | Inner::Full(None) => true,
            Inner::Full(Some(_)) => false,
            Inner::Incoming(i) => i.is_end_stream(),
            Inner::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty | Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Incoming(i) => i.size_hint(),
            Inner::Boxed(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

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
}
