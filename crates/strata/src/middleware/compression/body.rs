//! The streaming compressor: one encoder per response body, fed frame by frame, flushed after each
//! server-sent event, so memory stays bounded whatever the body's size.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::http::{Body, BoxError};

use super::Algorithm;

/// One compressor writing into a `Vec` that is drained after every step, so what it holds is its
/// own window plus at most one frame's output.
pub(super) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    // Boxed: the brotli state is large and would bloat every variant.
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// Brotli's window: 1 MiB (lgwin 20) instead of the 4 MiB default bounds memory per response,
/// at almost no cost in ratio for typical response sizes.
const BROTLI_LGWIN: u32 = 20;
/// Brotli's internal output buffer.
const BROTLI_BUFFER: usize = 8 * 1024;

impl Encoder {
    pub(super) fn new(algorithm: Algorithm, level: i32) -> std::io::Result<Self> {
        // Levels were range-checked at build, so the conversions below cannot fail in practice.
        Ok(match algorithm {
            Algorithm::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.clamp(1, 9) as u32),
            )),
            Algorithm::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                level.clamp(0, 11) as u32,
                BROTLI_LGWIN,
            ))),
            Algorithm::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level)?),
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// Emits everything written so far as complete, decodable blocks.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Br(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    /// Ends the stream (trailer, checksum) and returns the last bytes.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }

    /// The compressed bytes produced since the last call.
    fn take_output(&mut self) -> Vec<u8> {
        match self {
            Encoder::Gzip(e) => std::mem::take(e.get_mut()),
            Encoder::Br(e) => std::mem::take(e.get_mut()),
            Encoder::Zstd(e) => std::mem::take(e.get_mut()),
        }
    }
}

/// How many input frames may be swallowed without output before yielding to the executor, so a
/// fast source of tiny frames cannot hog the thread.
const FRAMES_PER_POLL: usize = 64;

/// A response body compressed frame by frame.
pub(super) struct CompressedBody {
    pub(super) inner: Body,
    /// `None` once the stream is finished (or failed).
    pub(super) encoder: Option<Encoder>,
    /// Flush after every frame (`text/event-stream`): each event must reach the client on its own.
    pub(super) flush_every_frame: bool,
    /// Input was written since the last flush; flushed when the source goes quiet.
    pub(super) unflushed: bool,
    /// Trailers from the source, sent after the last compressed bytes.
    pub(super) trailers: Option<HeaderMap>,
}

fn data_frame(bytes: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
}

impl CompressedBody {
    /// Finishes the encoder; returns the final bytes, if any.
    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        match self.encoder.take() {
            Some(encoder) => encoder.finish().map_err(Into::into),
            None => Ok(Vec::new()),
        }
    }

    fn fail(&mut self, error: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.encoder = None;
        self.trailers = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

impl http_body::Body for CompressedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut quiet_frames = 0;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    // The source is idle: whatever the compressor holds goes out now rather than
                    // waiting for more input that may take a long time to come.
                    if this.unflushed {
                        this.unflushed = false;
                        if let Err(e) = encoder.flush() {
                            return this.fail(e);
                        }
                        let out = encoder.take_output();
                        if !out.is_empty() {
                            return data_frame(out);
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(e))) => return this.fail(e),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        let step = encoder
                            .write(&data)
                            .and_then(|()| if this.flush_every_frame { encoder.flush() } else { Ok(()) });
                        if let Err(e) = step {
                            return this.fail(e);
                        }
                        this.unflushed = !this.flush_every_frame;
                        let out = encoder.take_output();
                        if !out.is_empty() {
                            return data_frame(out);
                        }
                        quiet_frames += 1;
                        if quiet_frames >= FRAMES_PER_POLL {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            // Trailers end the body: finish now, send them after the last bytes.
                            this.trailers = Some(trailers);
                            match this.finish() {
                                Ok(out) if !out.is_empty() => return data_frame(out),
                                Ok(_) => {}
                                Err(e) => return this.fail(e),
                            }
                        }
                    }
                },
                Poll::Ready(None) => match this.finish() {
                    Ok(out) if !out.is_empty() => return data_frame(out),
                    Ok(_) => return Poll::Ready(None),
                    Err(e) => return this.fail(e),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
