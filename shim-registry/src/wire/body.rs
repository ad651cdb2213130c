//! Response bodies: empty, in memory, or streamed from storage.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tokio_util::io::ReaderStream;

use crate::storage::BlobReader;

/// Read size when streaming a blob out.
const READ_CHUNK: usize = 256 * 1024;

/// The body of a registry response.
pub struct ResponseBody(UnsyncBoxBody<Bytes, io::Error>);

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub(crate) fn empty() -> Self {
        Self(Empty::new().map_err(|never| match never {}).boxed_unsync())
    }

    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        Self(
            Full::new(data.into())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    }

    /// This body's first `after` bytes, then an error (which makes hyper
    /// close the connection short of the announced length).
    pub(crate) fn cut_after(self, after: u64) -> Self {
        let size = self.0.size_hint();
        Self(
            Cut {
                inner: self.0,
                left: after,
                size,
                flush: None,
            }
            .boxed_unsync(),
        )
    }

    pub(crate) fn reader(reader: BlobReader) -> Self {
        let frames = ReaderStream::with_capacity(reader, READ_CHUNK).map_ok(Frame::data);
        Self(StreamBody::new(frames).boxed_unsync())
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// A body cut short by fault injection.
struct Cut {
    inner: UnsyncBoxBody<Bytes, io::Error>,
    left: u64,
    size: SizeHint,
    /// Once the bytes are out: a pause that lets hyper flush the head and
    /// the bytes sent before the error ends the connection.
    flush: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a cut body waits for what was sent to be flushed.
const CUT_FLUSH: std::time::Duration = std::time::Duration::from_millis(50);

impl Body for Cut {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.left == 0 {
            let flush = self
                .flush
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(CUT_FLUSH)));
            if flush.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            return Poll::Ready(Some(Err(io::Error::other(
                "fault injection: response body cut short",
            ))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() as u64 > self.left {
                        data.truncate(self.left as usize);
                    }
                    self.left -= data.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}
