//! Response bodies: empty, in memory, or streamed from storage.

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
