//! What handlers take from a request: its parts, and its body as an upload
//! stream that reports progress, spends the upload budget and waits while
//! the upload hold holds the session.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::Method;
use http_body::Body;
use http_body_util::BodyDataStream;

use crate::budget::{BudgetExhausted, UploadBudget};
use crate::events::{EventSink, RegistryEvent};
use crate::push_control::UploadHold;
use crate::state::Shared;
use crate::storage::ByteStream;

/// The parts of a request the handlers need, with the body split off.
pub(super) struct Incoming<B> {
    pub(super) method: Method,
    pub(super) headers: http::HeaderMap,
    pub(super) query: Vec<(String, String)>,
    pub(super) body: B,
}

/// The request body as a stream of data frames, reporting progress of the
/// upload `upload_id` (whose size before this request was `base`), taking
/// each frame from the upload budget and waiting while the upload hold
/// holds the session.
pub(super) fn upload_stream<B>(
    body: B,
    shared: &Shared,
    repository: &str,
    upload_id: &str,
    base: u64,
) -> ByteStream<'static>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = Arc::new(Ingest {
        events: shared.events.clone(),
        budget: shared.upload_budget.clone(),
        hold: shared.upload_hold.clone(),
        shutdowns: shared.shutdowns.subscribe(),
        repository: repository.to_owned(),
        upload_id: upload_id.to_owned(),
        total: AtomicU64::new(base),
        reported: AtomicU64::new(base),
    });
    let stream = BodyDataStream::new(body)
        .map_err(|e| io::Error::other(e.into()))
        .and_then(move |frame| {
            let state = state.clone();
            async move {
                state.take(&frame).await?;
                Ok(frame)
            }
        });
    Box::pin(stream)
}

/// One request's share of an upload session, as its frames arrive.
struct Ingest {
    events: Arc<dyn EventSink>,
    budget: Option<Arc<UploadBudget>>,
    hold: Option<UploadHold>,
    /// Changes when a server of this registry shuts down.
    shutdowns: tokio::sync::watch::Receiver<u64>,
    repository: String,
    upload_id: String,
    /// The session's size with the frames taken so far.
    total: AtomicU64,
    /// The size last reported in a `BytesReceived` event.
    reported: AtomicU64,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        tracing::debug!(
            repository = self.repository,
            upload_id = self.upload_id,
            total = self.total.load(Ordering::Relaxed),
            "upload request ended"
        );
    }
}

impl Ingest {
    /// Progress is reported at most this often (in bytes).
    const EVERY: u64 = 1 << 20;

    /// Takes one frame: from the budget, past the hold, into the count.
    /// Frames come one at a time (the stream polls one future at a time).
    async fn take(&self, frame: &Bytes) -> io::Result<()> {
        let len = frame.len() as u64;
        if let Some(budget) = &self.budget
            && !budget.take(len)
        {
            return Err(io::Error::other(BudgetExhausted));
        }
        let total = self.total.load(Ordering::Relaxed);
        let after = total.saturating_add(len);
        if let Some(hold) = &self.hold
            && hold.holds(after)
        {
            tracing::debug!(
                repository = self.repository,
                upload_id = self.upload_id,
                total,
                "upload held"
            );
            self.events.event(&RegistryEvent::UploadHeld {
                repository: self.repository.clone(),
                upload_id: self.upload_id.clone(),
                total,
            });
            let mut shutdowns = self.shutdowns.clone();
            tokio::select! {
                () = hold.admit(after) => {
                    tracing::debug!(upload_id = self.upload_id, "upload resumed");
                }
                _ = shutdowns.changed() => {
                    tracing::debug!(upload_id = self.upload_id, "held upload ended by shutdown");
                    return Err(io::Error::other("the registry is shutting down"));
                }
            }
        }
        self.total.store(after, Ordering::Relaxed);
        if after - self.reported.load(Ordering::Relaxed) >= Self::EVERY {
            self.reported.store(after, Ordering::Relaxed);
            self.events.event(&RegistryEvent::BytesReceived {
                repository: self.repository.clone(),
                upload_id: self.upload_id.clone(),
                total: after,
            });
        }
        Ok(())
    }
}
