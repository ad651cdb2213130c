//! What the registry tells an embedding program.

use bytes::Bytes;
use oci_spec::image::Digest;
use tokio::sync::mpsc;

/// Something that happened in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryEvent {
    /// An upload session was opened.
    UploadStarted {
        /// The repository pushed to.
        repository: String,
        /// The session's id (as in its `Location`).
        upload_id: String,
    },
    /// Bytes of an upload arrived (sent at most every MiB and at the end of
    /// each request).
    BytesReceived {
        /// The repository pushed to.
        repository: String,
        /// The session's id.
        upload_id: String,
        /// Bytes received so far in this session.
        total: u64,
    },
    /// A blob was verified against its digest and stored.
    BlobCommitted {
        /// The repository pushed to.
        repository: String,
        /// The blob's digest.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
    /// A client asked whether a blob exists (`HEAD`), and got this answer.
    BlobHeadAnswered {
        /// The repository asked about.
        repository: String,
        /// The blob asked about.
        digest: Digest,
        /// Whether the answer was "present".
        present: bool,
    },
    /// A manifest was stored.
    ManifestPut {
        /// The repository pushed to.
        repository: String,
        /// The tag or digest it was pushed by.
        reference: String,
        /// Its digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
        /// Its exact bytes.
        body: Bytes,
    },
    /// A well-formed manifest was refused by
    /// [`PresencePolicy::refuse_manifest`](crate::PresencePolicy::refuse_manifest)
    /// ([push control](crate::push_control)):
    /// the client got `403 DENIED`, nothing was stored.
    ManifestRefused {
        /// The repository pushed to.
        repository: String,
        /// The tag or digest it was pushed by.
        reference: String,
        /// Its digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
        /// Its exact bytes.
        body: Bytes,
    },
    /// The registry's own storage failed while taking a blob (a full disk,
    /// a read-only or vanished folder): the client gets a 5xx, or a later
    /// "upload unknown", and this event keeps the cause.
    StorageFailed {
        /// The repository pushed to.
        repository: String,
        /// The upload session, when there was one.
        upload_id: Option<String>,
        /// The storage error with its causes (e.g. `storage i/o failed on
        /// …: No space left on device (os error 28)`).
        message: String,
    },
    /// An upload session grew to the size the registry's
    /// [`UploadHold`](crate::push_control::UploadHold) allows: its body is
    /// not read until the hold is raised or released ([push
    /// control](crate::push_control)).
    UploadHeld {
        /// The repository pushed to.
        repository: String,
        /// The session's id.
        upload_id: String,
        /// The bytes taken in before the hold.
        total: u64,
    },
    /// An upload went past the registry's upload budget
    /// ([`RegistryBuilder::upload_budget`](crate::RegistryBuilder::upload_budget)):
    /// it was answered `413` and its data discarded.
    UploadBudgetSpent {
        /// The repository pushed to.
        repository: String,
        /// The upload session, when there was one.
        upload_id: Option<String>,
    },
}

/// Receives [`RegistryEvent`]s.
///
/// Called synchronously from request handlers: implementations must not
/// block (send to a channel instead; see [`ChannelSink`]).
pub trait EventSink: Send + Sync {
    /// One event happened.
    fn event(&self, event: &RegistryEvent);
}

/// An [`EventSink`] that sends every event into an unbounded channel.
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: mpsc::UnboundedSender<RegistryEvent>,
}

impl ChannelSink {
    /// A sink and the receiving end of its channel. Events sent after the
    /// receiver is dropped are discarded.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<RegistryEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

impl EventSink for ChannelSink {
    fn event(&self, event: &RegistryEvent) {
        // A closed receiver only means nobody listens any more.
        let _ = self.tx.send(event.clone());
    }
}

/// The default sink: events go nowhere.
pub(crate) struct NoEvents;

impl EventSink for NoEvents {
    fn event(&self, _event: &RegistryEvent) {}
}
