//! Where blobs, upload sessions, manifests and tags are kept.
//!
//! [`Storage`] is the seam: [`MemoryStorage`] keeps everything in memory,
//! [`FsStorage`] in a directory. Blobs are content-addressed and shared by all
//! repositories; manifests and tags belong to a repository.
//!
//! Contract for implementations:
//! - blob data is streamed in ([`Storage::append_upload`]) and out
//!   ([`Storage::open_blob_range`]) and never needs to be held whole;
//! - [`Storage::commit_upload`] verifies the digest of everything appended
//!   and keeps nothing on a mismatch ([`StorageError::DigestMismatch`]);
//! - a failed or interrupted append discards its session and data;
//! - upload sessions belong to the repository that opened them: calls that
//!   name another repository answer "unknown".

mod fs;
pub(crate) mod hashing;
mod memory;

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use oci_spec::image::Digest;
use tokio::io::AsyncRead;

pub use fs::FsStorage;
pub use memory::MemoryStorage;

/// A stream of blob data read from storage.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// A stream of incoming blob data, frame by frame (usually a request body).
pub type ByteStream<'a> = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'a>>;

/// A manifest as stored: its exact bytes, media type and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredManifest {
    /// Its media type (the `Content-Type` it was pushed with).
    pub media_type: String,
    /// Its exact bytes.
    pub body: Bytes,
    /// The manifest its `subject` field points at, if any (for referrers).
    pub subject: Option<Digest>,
}

impl StoredManifest {
    /// A manifest from its parts.
    pub fn new(media_type: impl Into<String>, body: Bytes, subject: Option<Digest>) -> Self {
        Self {
            media_type: media_type.into(),
            body,
            subject,
        }
    }
}

/// How a manifest is named in a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// By tag, e.g. `latest`.
    Tag(String),
    /// By digest.
    Digest(Digest),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tag(t) => f.write_str(t),
            Self::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// Keeps blobs, upload sessions, manifests and tags.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The size of a stored blob, or `None` when it is not stored.
    async fn stat_blob(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;

    /// Opens a stored blob for reading from its start, or `None` when it is
    /// not stored.
    async fn open_blob(&self, digest: &Digest) -> Result<Option<BlobReader>, StorageError> {
        self.open_blob_range(digest, None).await
    }

    /// Opens a stored blob for reading `range` (byte offsets, end exclusive,
    /// within the blob; the whole blob when `None`), or `None` when it is not
    /// stored.
    async fn open_blob_range(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<BlobReader>, StorageError>;

    /// Deletes a stored blob; `false` when it was not stored.
    async fn delete_blob(&self, digest: &Digest) -> Result<bool, StorageError>;

    /// Opens an upload session for `repository`; returns its id (URL-safe).
    async fn create_upload(&self, repository: &str) -> Result<String, StorageError>;

    /// Bytes received so far by a session, or `None` when it is unknown.
    async fn upload_size(&self, repository: &str, id: &str) -> Result<Option<u64>, StorageError>;

    /// Appends all of `data` to a session, hashing it as it goes; returns the
    /// session's new size. On any error the session is discarded.
    async fn append_upload(
        &self,
        repository: &str,
        id: &str,
        data: ByteStream<'_>,
    ) -> Result<u64, StorageError>;

    /// Ends a session: when the digest of its data equals `expected`, stores
    /// it as that blob and returns its size; otherwise discards it with
    /// [`StorageError::DigestMismatch`]. The session is gone either way.
    async fn commit_upload(
        &self,
        repository: &str,
        id: &str,
        expected: &Digest,
    ) -> Result<u64, StorageError>;

    /// Discards a session and its data; `false` when it was unknown.
    async fn cancel_upload(&self, repository: &str, id: &str) -> Result<bool, StorageError>;

    /// Discards sessions untouched for `idle` or longer; returns how many.
    async fn purge_stale_uploads(&self, idle: Duration) -> Result<usize, StorageError>;

    /// Stores a manifest under its digest in `repository`, and points each
    /// of `tags` at it (none: stored by digest only).
    async fn put_manifest(
        &self,
        repository: &str,
        digest: &Digest,
        manifest: StoredManifest,
        tags: &[String],
    ) -> Result<(), StorageError>;

    /// A manifest by tag or digest, with its digest; `None` when unknown.
    async fn get_manifest(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<Option<(Digest, StoredManifest)>, StorageError>;

    /// Deletes a tag (the manifest stays), or a manifest by digest (with the
    /// tags pointing at it); `false` when unknown.
    async fn delete_manifest(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<bool, StorageError>;

    /// The tags of a repository, sorted; `None` when the repository has no
    /// manifest.
    async fn list_tags(&self, repository: &str) -> Result<Option<Vec<String>>, StorageError>;

    /// The manifests of `repository` whose subject is `subject`.
    async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Vec<(Digest, StoredManifest)>, StorageError>;
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No upload session with this id (in this repository).
    #[error("upload session {id} is unknown")]
    UploadUnknown {
        /// The session id asked for.
        id: String,
    },
    /// Another request is appending to this session right now.
    #[error("upload session {id} is busy with another request")]
    UploadBusy {
        /// The session id.
        id: String,
    },
    /// The uploaded data does not have the expected digest; it was discarded.
    #[error("uploaded data has digest {actual}, not {expected}")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the data.
        actual: Digest,
    },
    /// The digest algorithm is not one this storage can compute.
    #[error("unsupported digest algorithm {algorithm}")]
    UnsupportedAlgorithm {
        /// The algorithm's name.
        algorithm: String,
    },
    /// The incoming data stream failed (usually: the client went away).
    #[error("incoming data stream failed")]
    Incoming {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the storage's files failed.
    #[error("storage i/o failed on {path}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A storage backend outside this crate failed.
    #[error("storage backend failed")]
    Backend {
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
