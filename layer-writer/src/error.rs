//! The crate's error type.

use std::path::PathBuf;

use oci_spec::image::Digest;

/// Everything that can go wrong while writing a layer.
///
/// Whatever the variant, nothing of the layer being written remains on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The uncompressed tar does not hash to the expected diff ID.
    #[error("layer content is {actual}, expected diff id {expected}")]
    DiffIdMismatch {
        /// The diff ID from the image config.
        expected: Digest,
        /// sha256 of the tar actually received.
        actual: Digest,
    },
    /// The compressed blob does not hash to the distribution digest it was announced with.
    #[error("compressed blob is {actual}, expected {expected}")]
    BlobDigestMismatch {
        /// The digest from [`crate::ImageContext::compressed`].
        expected: Digest,
        /// sha256 of the bytes actually received.
        actual: Digest,
    },
    /// The first bytes are neither gzip, zstd nor a tar header.
    #[error("layer is neither gzip, zstd nor tar")]
    UnknownCompression,
    /// The gzip or zstd stream is corrupt or truncated.
    #[error("cannot decompress layer")]
    Decompress(#[source] std::io::Error),
    /// Reading the input stream failed.
    #[error("cannot read layer input")]
    Read(#[source] std::io::Error),
    /// The target exists and [`crate::WriterOptions::replace`] is off.
    #[error("{} already exists", path.display())]
    TargetExists {
        /// The existing file or folder.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("i/o error on {}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The image config (or a JSON file of a save archive) cannot be parsed.
    #[error("invalid image config")]
    BadConfig(#[source] serde_json::Error),
    /// A digest in the image config or the input is malformed.
    #[error("invalid digest {value:?}")]
    BadDigest {
        /// The offending text.
        value: String,
    },
    /// The layer index is out of range.
    #[error("no layer {index}: the image has {count}")]
    NoSuchLayer {
        /// The index asked for.
        index: usize,
        /// The number of layers of the image.
        count: usize,
    },
    /// A `docker save` stream did not contain a wanted layer.
    #[error("layer {index} ({diff_id}) not found in the save archive")]
    MissingFromSave {
        /// The layer index.
        index: usize,
        /// Its diff ID.
        diff_id: Digest,
    },
    /// A `docker save` stream ended without the image config it was
    /// expected to hold.
    #[error("image config {config} not found in the save archive")]
    ConfigMissingFromSave {
        /// The config digest looked for.
        config: Digest,
    },
    /// The image config lists other diff IDs than the daemon reported.
    #[error("image config {config} does not list the layers the daemon reports")]
    ConfigMismatch {
        /// The config's digest.
        config: Digest,
    },
    /// The `docker save` stream itself is not a readable tar.
    #[error("cannot read the save archive")]
    SaveArchive(#[source] std::io::Error),
    /// The write was abandoned (its future was dropped).
    #[error("layer write cancelled")]
    Cancelled,
    /// The blocking worker panicked.
    #[error("layer writer worker failed")]
    Worker(#[source] tokio::task::JoinError),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.into();
    move |source| WriteError::Io { path, source }
}
