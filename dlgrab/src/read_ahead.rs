//! A byte stream read ahead on the async runtime and handed to blocking
//! code as a [`Read`], in batches.
//!
//! `SyncIoBridge` over a `StreamReader` polls the stream from the blocking
//! thread: each socket read waits for the runtime's I/O driver to wake that
//! thread, and nothing is read while the blocking side hashes and writes.
//! Here a task reads the stream while the blocking side works, and hands
//! over what it has gathered whenever the reader can take it (at most
//! [`BATCH`] at a time, [`BATCHES`] batches ahead), so a 256 MiB layer
//! crosses threads a few hundred times instead of tens of thousands.

use std::io::{self, Read};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

/// The most bytes handed over at once.
const BATCH: usize = 1 << 20;
/// How many batches may wait for the reader.
const BATCHES: usize = 8;

/// The blocking side: reads what the task gathered.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    ended: bool,
}

impl ReadAhead {
    /// Starts reading `stream` on the current runtime. Dropping the reader
    /// stops the task at its next hand-over.
    pub(crate) fn spawn<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(BATCHES);
        tokio::spawn(forward(stream, tx));
        Self {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

/// Reads `stream` into `tx`: a chunk goes on at once when the channel has
/// room; while it has none, chunks gather (up to [`BATCH`]) and go as one.
async fn forward<S, E>(stream: S, tx: mpsc::Sender<io::Result<Bytes>>)
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let mut stream = std::pin::pin!(stream);
    let mut gathered = BytesMut::new();
    loop {
        // Gather what is ready now, up to a batch.
        let next = loop {
            if gathered.len() >= BATCH {
                break None;
            }
            match futures::FutureExt::now_or_never(stream.next()) {
                Some(Some(Ok(chunk))) => gathered.extend_from_slice(&chunk),
                Some(other) => break Some(other),
                None => break None,
            }
        };
        if !gathered.is_empty() {
            let batch = gathered.split().freeze();
            if tx.send(Ok(batch)).await.is_err() {
                return; // the reader is gone
            }
        }
        let item = match next {
            Some(item) => item,
            None if gathered.len() >= BATCH => continue,
            None => stream.next().await,
        };
        match item {
            Some(Ok(chunk)) => gathered.extend_from_slice(&chunk),
            Some(Err(e)) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
            None => return,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(batch)) => self.current = batch,
                Some(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                None => self.ended = true,
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_byte_arrives_in_order_then_the_end() {
        let chunks: Vec<Result<Bytes, io::Error>> = (0..5000u32)
            .map(|i| Ok(Bytes::from(vec![(i % 251) as u8; 1 + (i as usize % 700)])))
            .collect();
        let expected: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.as_ref().expect("ok").to_vec())
            .collect();
        let mut reader = ReadAhead::spawn(futures::stream::iter(chunks));
        let got = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).map(|_| got)
        })
        .await
        .expect("join")
        .expect("read");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_error_is_a_read_error_after_the_bytes_before_it() {
        let chunks: Vec<Result<Bytes, io::Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Err(io::Error::other("connection reset")),
            Ok(Bytes::from_static(b"never")),
        ];
        let mut reader = ReadAhead::spawn(futures::stream::iter(chunks));
        let (got, err) = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let err = reader.read_to_end(&mut got).expect_err("an error");
            (got, err)
        })
        .await
        .expect("join");
        assert_eq!(got, b"abc");
        assert!(err.to_string().contains("connection reset"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_reader_stops_the_task() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        // An endless stream that counts the chunks taken from it.
        let taken = Arc::new(AtomicUsize::new(0));
        let counter = taken.clone();
        let stream = futures::stream::repeat_with(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, io::Error>(Bytes::from(vec![7; 4096]))
        });
        let mut reader = ReadAhead::spawn(stream);
        let reader = tokio::task::spawn_blocking(move || {
            let mut first = [0u8; 10];
            reader.read_exact(&mut first).map(|()| reader)
        })
        .await
        .expect("join")
        .expect("read");
        drop(reader);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let after_drop = taken.load(Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(taken.load(Ordering::SeqCst), after_drop, "still reading");
        // What was read ahead is bounded: the batches the channel holds.
        assert!(
            after_drop * 4096 <= (BATCHES + 3) * BATCH,
            "{after_drop} chunks"
        );
    }
}
