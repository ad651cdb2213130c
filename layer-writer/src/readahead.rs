//! Reading an async source from the blocking thread that parses it.
//!
//! A task on the runtime reads the source ahead into a bounded queue of
//! chunks while the blocking thread parses, so the two overlap. Reading
//! through `tokio_util::io::SyncIoBridge` instead makes every read a
//! round trip: the connection task reads the socket only once the parser
//! asks, and each ask parks one thread and wakes another (measured on a
//! 512 MiB save stream: some 36 000 futex calls and 0.7 s of system time).

use std::io::{self, Read};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Bytes asked of the source per read.
const CHUNK: usize = 256 << 10;
/// Chunks read ahead.
const QUEUE: usize = 8;

/// A chunk: a buffer of [`CHUNK`] bytes and how many of them were read.
type Chunk = (Vec<u8>, usize);

/// A blocking [`Read`] over an async source read ahead on the runtime.
/// Buffers go back to the reading task once read, so the same few stay in
/// use (fresh pages are costly on virtual machines that hand freed memory
/// back to their host). Dropping it stops the reading task and drops the
/// source.
pub(crate) struct ReadAhead {
    chunks: mpsc::Receiver<io::Result<Chunk>>,
    spent: mpsc::UnboundedSender<Vec<u8>>,
    current: Chunk,
    at: usize,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    /// Starts reading `source`; must be called within a Tokio runtime.
    pub(crate) fn spawn<R>(source: R) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (tx, chunks) = mpsc::channel(QUEUE);
        let (spent, mut recycled) = mpsc::unbounded_channel::<Vec<u8>>();
        let task = tokio::spawn(async move {
            let mut source = source;
            loop {
                let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
                let item = match source.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => Ok((buf, n)),
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Self {
            chunks,
            spent,
            current: (Vec::new(), 0),
            at: 0,
            task,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.at == self.current.1 {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    let (spent, _) = std::mem::replace(&mut self.current, chunk);
                    self.at = 0;
                    if spent.len() == CHUNK {
                        let _ = self.spent.send(spent);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let (data, len) = (&self.current.0, self.current.1);
        let n = buf.len().min(len - self.at);
        buf[..n].copy_from_slice(&data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_everything_in_order_in_small_and_large_reads() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let source = std::io::Cursor::new(data.clone());
        let got = tokio::task::spawn_blocking(move || {
            let mut reader = ReadAhead::spawn(source);
            let mut out = Vec::new();
            let mut small = [0u8; 512];
            let n = reader.read(&mut small).unwrap();
            out.extend_from_slice(&small[..n]);
            reader.read_to_end(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_error_reaches_the_reader() {
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Err(io::Error::other("broken source")))
            }
        }
        let err = tokio::task::spawn_blocking(|| {
            let mut buf = Vec::new();
            ReadAhead::spawn(Failing).read_to_end(&mut buf).unwrap_err()
        })
        .await
        .unwrap();
        assert_eq!(err.to_string(), "broken source");
    }
}
