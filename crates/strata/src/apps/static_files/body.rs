//! The body of a file too large to read at once: read in chunks, inline or on tokio's blocking
//! pool ([`FileIo`]), one chunk at a time, so memory stays at one chunk per response whatever the
//! file's size, and a client that reads slowly slows the reads down (hyper polls for the next
//! chunk only once the last one is written).

use std::fs::File;
use std::future::Future as _;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use super::FileIo;
use crate::http::BoxError;

/// `remaining` bytes of `file`, from its current position, in chunks of at most `chunk` bytes.
pub(super) struct FileBody {
    state: State,
    remaining: u64,
    chunk: usize,
    io: FileIo,
}

enum State {
    /// Between reads: the file is here.
    Idle(File),
    /// A read runs on the blocking pool, which hands the file back with the chunk.
    Reading(JoinHandle<(File, io::Result<Bytes>)>),
    /// Ended, or failed.
    Done,
}

impl FileBody {
    pub(super) fn new(file: File, remaining: u64, chunk: usize, io: FileIo) -> Self {
        FileBody { state: State::Idle(file), remaining, chunk, io }
    }
}

/// Reads up to `len` bytes, fewer only at the end of the file.
pub(super) fn read_chunk(file: &mut File, len: usize) -> io::Result<Bytes> {
    let mut buffer = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buffer.truncate(filled);
    Ok(buffer.freeze())
}

/// The error a body ends with when the file shrank while it was sent: the response already
/// promised its `Content-Length`, so the connection is closed rather than the body padded.
#[derive(Debug)]
struct Shrank;

impl std::fmt::Display for Shrank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the file became shorter while it was being sent")
    }
}

impl std::error::Error for Shrank {}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Idle(_) if this.remaining == 0 => return Poll::Ready(None),
                State::Idle(mut file) if this.io == FileIo::Inline => {
                    let len = this.remaining.min(this.chunk as u64) as usize;
                    let chunk = match read_chunk(&mut file, len) {
                        Ok(chunk) if chunk.is_empty() => return Poll::Ready(Some(Err(Box::new(Shrank)))),
                        Ok(chunk) => chunk,
                        Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
                    };
                    this.remaining -= chunk.len() as u64;
                    this.state = State::Idle(file);
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                State::Idle(mut file) => {
                    let len = this.remaining.min(this.chunk as u64) as usize;
                    this.state = State::Reading(tokio::task::spawn_blocking(move || {
                        let chunk = read_chunk(&mut file, len);
                        (file, chunk)
                    }));
                }
                State::Reading(mut read) => match Pin::new(&mut read).poll(cx) {
                    Poll::Pending => {
                        this.state = State::Reading(read);
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok((file, Ok(chunk)))) => {
                        if chunk.is_empty() {
                            return Poll::Ready(Some(Err(Box::new(Shrank))));
                        }
                        this.remaining -= chunk.len() as u64;
                        this.state = State::Idle(file);
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Poll::Ready(Ok((_, Err(e)))) => return Poll::Ready(Some(Err(Box::new(e)))),
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 || matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
