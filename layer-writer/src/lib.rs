//! Verified image layers on disk.
//!
//! `layer-writer` takes one layer blob of a local image (gzip, zstd or plain
//! tar, as pushed by a Docker daemon or found in a `docker save` stream),
//! decompresses and hashes it in one streaming pass, checks it against the
//! image config's diff ID, and stores it in one of three layouts:
//!
//! - [`Format::Seed`]: the `docker save` 20.10 layout plus what keeps a
//!   tarball of the folder (`tar -C root -cf img.tar . && docker load -i
//!   img.tar`) loadable on classic and containerd image stores (see below);
//! - [`Format::Oci`]: an OCI image layout with a Docker `manifest.json`,
//!   layers stored uncompressed (blob digest = diff ID);
//! - [`Format::Registry`]: the storage tree of the CNCF distribution
//!   registry's filesystem driver.
//!
//! # The Seed folder
//!
//! ```text
//! <id>/VERSION, <id>/json, <id>/layer.tar   one folder per layer written (v1 id)
//! <config hex>.json                         the image config (hard link to its blob)
//! manifest.json                             Docker's: Config, RepoTags, Layers = <id>/layer.tar
//! repositories                              { name: { tag: <top v1 id> } }
//! oci-layout, index.json                    an OCI layout naming one manifest
//! blobs/sha256/<hex>                        config, manifest, and layer blobs
//! ```
//!
//! Classic stores load `manifest.json`; the image ID is the config digest.
//! The containerd store loads `index.json`, whose entry carries the
//! `io.containerd.image.name` and `org.opencontainers.image.ref.name`
//! annotations; there the image ID is the digest of the manifest it names:
//!
//! - When [`ImageContext::manifest`] is the image manifest as pushed (OCI or
//!   Docker schema 2, naming this config and, layer for layer, every known
//!   [`ImageContext::compressed`] blob), [`LayerWriter::write_layer`] also
//!   keeps the input bytes as received (the compressed blob, checked against
//!   [`BlobRef::digest`], else [`WriteError::BlobDigestMismatch`]) as
//!   `blobs/sha256/<compressed hex>`, in the same single pass, and
//!   `index.json` names that manifest, stored verbatim: loading gives back
//!   the original image ID. Layers not in the folder are named as the
//!   manifest names them (the loading daemon must hold them).
//! - Otherwise (no manifest, a manifest of another image, or a layer of the
//!   folder without its compressed blob, e.g. one taken from a `docker save`
//!   stream), `index.json` names a manifest built here: layers present are
//!   `blobs/sha256/<diff id>`, hard links to their `layer.tar`; absent ones
//!   are named by their compressed blob when known, else by diff ID.
//!
//! [`Format::Oci`] follows the same rule for `index.json` and the compressed
//! blobs, keeping the uncompressed `blobs/sha256/<diff id>` for
//! `manifest.json`.
//!
//! Every file is written to a temporary sibling, fsynced and renamed; on any
//! error, or when the future is dropped, nothing of the layer remains. The
//! top-level files describing the folder are rewritten after each layer.
//!
//! [`save_archive`] extracts wanted layers from a `docker save` stream (both
//! the 20.10–24 and the 25+ OCI layouts) without holding layers in memory,
//! in one pass, also when the image config is only known from the stream
//! itself ([`LayerWriter::write_from_save_reading_config`]).
//!
//! The crate does no network I/O and knows no Docker API types.
#![warn(missing_docs)]

mod error;
mod folder;
mod fsx;
mod layout;
pub mod manifest;
mod pipeline;
mod readahead;
pub mod reference;
pub mod run;
pub mod save_archive;
mod v1;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use oci_spec;
use oci_spec::image::Digest;
use serde_json::Value;

pub use error::WriteError;
pub use pipeline::diff_id_of;
pub use save_archive::{SaveExtract, SaveImage};
pub use v1::{v1_layer_ids, v1_layer_ids_below_top};

use pipeline::{Keep, Streamed};

/// The on-disk layout written by a [`LayerWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `docker save` 20.10 layout plus an OCI layout: loadable everywhere.
    #[default]
    Seed,
    /// An OCI image layout with a Docker `manifest.json`.
    Oci,
    /// The CNCF distribution registry's filesystem storage tree.
    Registry,
}

/// A content-addressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// `sha256:<hex>` of the blob's bytes.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, e.g. `application/vnd.docker.image.rootfs.diff.tar.gzip`.
    pub media_type: String,
}

/// What the writer must know about the image a layer belongs to.
#[derive(Debug, Clone)]
pub struct ImageContext {
    /// The image config bytes exactly as the daemon stores them; their
    /// sha256 is the image ID.
    pub config_json: Vec<u8>,
    /// Tags such as `demo:latest`; may be empty.
    pub repo_tags: Vec<String>,
    /// Per layer index, the 64-hex folder id for [`Format::Seed`]
    /// ([`v1_layer_ids`] gives the ones `docker save` 20.10 uses).
    pub layer_ids: Vec<String>,
    /// Per layer index, the distribution (compressed) blob where known.
    pub compressed: Vec<Option<BlobRef>>,
    /// The manifest as pushed (media type, bytes), when known. With
    /// [`Format::Seed`] and [`Format::Oci`], an image manifest of this image
    /// makes [`LayerWriter::write_layer`] keep the compressed blobs as
    /// received and `index.json` name this manifest (see the crate docs).
    pub manifest: Option<(String, Vec<u8>)>,
    /// The image index the image ID names (media type, bytes), when the
    /// daemon keeps the image as one (the containerd store: BuildKit's
    /// attestations, multi-platform images) and [`Self::manifest`] is its
    /// entry for this platform. With [`Format::Seed`] and [`Format::Oci`],
    /// `index.json` then names this index, so `docker load` gives back the
    /// image under that very ID, as Docker's own save and load do; the
    /// index's other entries (attestations, other platforms) are not
    /// written, which the containerd store loads as it pulled them.
    pub index: Option<(String, Vec<u8>)>,
    /// Repository name for [`Format::Registry`], e.g. `library/demo`.
    pub repository: String,
    /// Tag for [`Format::Registry`], e.g. `latest`.
    pub tag: String,
}

impl ImageContext {
    /// A context with the v1 layer ids of [`v1_layer_ids`], no known
    /// compressed blobs nor manifest, and `repository:tag` taken from the
    /// first repo tag (or `image:latest`).
    pub fn from_config(config_json: Vec<u8>, repo_tags: Vec<String>) -> Result<Self, WriteError> {
        let layer_ids = v1_layer_ids(&config_json)?;
        let (repository, tag) = repo_tags
            .first()
            .map(|t| reference::Reference::parse(t))
            .filter(|r| r.digest().is_none() && !r.name().is_empty())
            .map(|r| (r.registry_path(), r.tag_or_default().to_owned()))
            .unwrap_or_else(|| ("image".into(), reference::DEFAULT_TAG.into()));
        Ok(Self {
            compressed: vec![None; layer_ids.len()],
            config_json,
            repo_tags,
            layer_ids,
            manifest: None,
            index: None,
            repository,
            tag,
        })
    }

    /// The diff IDs from the config's `rootfs.diff_ids`, base layer first.
    pub fn diff_ids(&self) -> Result<Vec<Digest>, WriteError> {
        let config: Value =
            serde_json::from_slice(&self.config_json).map_err(WriteError::BadConfig)?;
        config_diff_ids(&config)
    }

    /// The image ID: `sha256` of [`ImageContext::config_json`].
    pub fn config_digest(&self) -> Digest {
        use sha2::Digest as _;
        pipeline::to_digest(sha2::Sha256::new_with_prefix(&self.config_json))
    }
}

pub(crate) fn config_diff_ids(config: &Value) -> Result<Vec<Digest>, WriteError> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            WriteError::BadConfig(serde::de::Error::custom("config has no rootfs.diff_ids"))
        })?;
    ids.iter()
        .map(|v| {
            let s = v.as_str().unwrap_or_default();
            s.parse::<Digest>().map_err(|_| WriteError::BadDigest {
                value: s.to_string(),
            })
        })
        .collect()
}

/// How a [`LayerWriter`] writes.
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// The layout to write.
    pub format: Format,
    /// Replace an existing layer instead of failing with [`WriteError::TargetExists`].
    pub replace: bool,
}

/// A layer written and verified.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    /// The layer index (0 = base).
    pub index: usize,
    /// The layer's v1 id ([`ImageContext::layer_ids`]).
    pub id: String,
    /// sha256 of the uncompressed tar, checked against the config.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// The files of this layer, relative to the root, in order.
    pub files: Vec<PathBuf>,
    /// The folder already held this very layer (verified against its diff
    /// ID), so nothing of it was written again.
    pub already_there: bool,
}

impl WrittenLayer {
    fn new(
        image: &ImageContext,
        index: usize,
        diff_id: Digest,
        tar_size: u64,
        files: Vec<PathBuf>,
        already_there: bool,
    ) -> Self {
        Self {
            index,
            id: image
                .layer_ids
                .get(index)
                .cloned()
                .unwrap_or_else(|| diff_id.digest().to_string()),
            diff_id,
            tar_size,
            files,
            already_there,
        }
    }
}

/// Writes verified layers under a root folder.
#[derive(Debug, Clone)]
pub struct LayerWriter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    options: WriterOptions,
    /// Serialises the rewriting of the top-level files between this
    /// process's threads (a `flock` does it between processes).
    index_lock: Mutex<()>,
}

impl LayerWriter {
    /// A writer for `root` (created when missing).
    pub fn new(root: impl Into<PathBuf>, options: WriterOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                root: root.into(),
                options,
                index_lock: Mutex::new(()),
            }),
        }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Streams `blob` (gzip, zstd or plain tar, detected from the first
    /// bytes), decompressing while streaming, checks sha256(tar) ==
    /// `diff_ids[index]`, writes the format atomically, then updates the
    /// top-level files that keep the folder loadable. On any error, and when
    /// the future is dropped, nothing of this layer remains.
    ///
    /// `blob` is taken to be the distribution blob
    /// `image.compressed[index]` when that is known: with
    /// [`Format::Registry`], or with [`Format::Seed`] and [`Format::Oci`]
    /// given a pushed [`ImageContext::manifest`], its bytes as received are
    /// kept too and must hash to that digest
    /// ([`WriteError::BlobDigestMismatch`]).
    pub async fn write_layer<R>(
        &self,
        image: &ImageContext,
        index: usize,
        blob: R,
    ) -> Result<WrittenLayer, WriteError>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        self.write_layer_from_read(image, index, readahead::ReadAhead::spawn(blob))
            .await
    }

    /// [`LayerWriter::write_layer`] from a blocking reader (a file, a tar
    /// rebuilt from files): read, hashed and written on one blocking
    /// thread, with no hop through the runtime. Dropping the future stops
    /// the thread at its next read and removes what it wrote.
    pub async fn write_layer_from_read<R>(
        &self,
        image: &ImageContext,
        index: usize,
        blob: R,
    ) -> Result<WrittenLayer, WriteError>
    where
        R: std::io::Read + Send + 'static,
    {
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = cancel.0.clone();
        let this = self.clone();
        let image = image.clone();
        let task =
            tokio::task::spawn_blocking(move || this.write_layer_sync(&image, index, blob, &flag));
        let result = task.await.map_err(WriteError::Worker)?;
        drop(cancel);
        result
    }

    /// Blocking version of [`LayerWriter::write_layer`].
    pub fn write_layer_blocking(
        &self,
        image: &ImageContext,
        index: usize,
        blob: impl std::io::Read,
    ) -> Result<WrittenLayer, WriteError> {
        self.write_layer_sync(image, index, blob, &AtomicBool::new(false))
    }

    pub(crate) fn write_layer_sync(
        &self,
        image: &ImageContext,
        index: usize,
        blob: impl std::io::Read,
        cancel: &AtomicBool,
    ) -> Result<WrittenLayer, WriteError> {
        let diff_ids = image.diff_ids()?;
        let expected = match self.check_target(image, &diff_ids, index)? {
            Slot::Free(expected) => expected,
            Slot::Holds => return self.record_present(image, index),
        };
        let streamed = self.stream(image, index, blob, cancel, true)?;
        if streamed.diff_id != expected {
            return Err(WriteError::DiffIdMismatch {
                expected,
                actual: streamed.diff_id,
            });
        }
        self.commit(image, index, streamed, cancel)
    }

    /// Checks the index, and that the layer's target is free or already
    /// holds this very layer (read and hashed to be sure).
    pub(crate) fn check_target(
        &self,
        image: &ImageContext,
        diff_ids: &[Digest],
        index: usize,
    ) -> Result<Slot, WriteError> {
        let count = diff_ids.len();
        let expected = diff_ids
            .get(index)
            .cloned()
            .ok_or(WriteError::NoSuchLayer { index, count })?;
        if self.inner.options.format == Format::Seed && image.layer_ids.len() <= index {
            return Err(WriteError::NoSuchLayer {
                index,
                count: image.layer_ids.len(),
            });
        }
        if self.inner.options.replace {
            return Ok(Slot::Free(expected));
        }
        let format = self.inner.options.format;
        let root = &self.inner.root;
        let targets = layout::layer_targets(root, format, image, &expected, index);
        let Some(existing) = targets.into_iter().find(|t| t.exists()) else {
            return Ok(Slot::Free(expected));
        };
        // The registry layout also stores other blobs than the layer's tar:
        // its commit keeps what is there, content-addressed.
        if format == Format::Registry || layout::holds_layer(root, format, image, &expected, index)
        {
            tracing::debug!(index, path = %existing.display(), "layer already in the folder");
            return Ok(if format == Format::Registry {
                Slot::Free(expected)
            } else {
                Slot::Holds
            });
        }
        Err(WriteError::TargetExists { path: existing })
    }

    /// Records the image of a layer the folder already holds and refreshes
    /// the top-level files, writing nothing of the layer.
    pub(crate) fn record_present(
        &self,
        image: &ImageContext,
        index: usize,
    ) -> Result<WrittenLayer, WriteError> {
        let diff_id = image
            .diff_ids()?
            .get(index)
            .cloned()
            .ok_or(WriteError::NoSuchLayer {
                index,
                count: image.layer_ids.len(),
            })?;
        let root = &self.inner.root;
        let format = self.inner.options.format;
        let files = layout::layer_files(root, format, image, &diff_id, index);
        let tar_size = files
            .last()
            .and_then(|f| std::fs::metadata(root.join(f)).ok())
            .map_or(0, |m| m.len());
        {
            let _lock = folder::FolderLock::acquire(root, &self.inner.index_lock)?;
            layout::refresh(root, format, image)?;
        }
        tracing::info!(index, %diff_id, root = %root.display(), "layer already there; image recorded");
        Ok(WrittenLayer::new(
            image, index, diff_id, tar_size, files, true,
        ))
    }

    /// Streams one layer into temporary files. `as_pushed`: the input is
    /// the distribution blob itself (not a `docker save` entry), so that with
    /// [`Format::Seed`] or [`Format::Oci`] and a usable pushed manifest its
    /// raw bytes are kept too.
    pub(crate) fn stream(
        &self,
        image: &ImageContext,
        index: usize,
        blob: impl std::io::Read,
        cancel: &AtomicBool,
        as_pushed: bool,
    ) -> Result<Streamed, WriteError> {
        let root = &self.inner.root;
        fsx::mkdirs(root)?;
        let compressed = image.compressed.get(index).is_some_and(Option::is_some);
        let pushed = as_pushed && compressed && layout::pushed_manifest(image).is_some();
        let keep = match self.inner.options.format {
            Format::Registry if compressed => Keep::RawIfCompressed,
            // The OCI layout holds the blob as the daemon stores it: the
            // tar is hashed on the way, never written.
            Format::Oci if pushed => Keep::RawIfCompressed,
            Format::Seed if pushed => Keep::TarAndRaw,
            _ => Keep::Tar,
        };
        let streamed = pipeline::stream_layer(blob, root, keep, cancel)?;
        tracing::debug!(index, diff_id = %streamed.diff_id, tar_size = streamed.tar_size,
            compression = ?streamed.compression, raw_size = streamed.raw_size, "layer streamed");
        Ok(streamed)
    }

    /// Moves a verified temporary file into place and refreshes the top-level files.
    pub(crate) fn commit(
        &self,
        image: &ImageContext,
        index: usize,
        streamed: Streamed,
        cancel: &AtomicBool,
    ) -> Result<WrittenLayer, WriteError> {
        if cancel.load(Ordering::Relaxed) {
            return Err(WriteError::Cancelled);
        }
        if (streamed.raw_kept || streamed.raw_wanted)
            && let Some(Some(c)) = image.compressed.get(index)
            && c.digest != streamed.raw_digest
        {
            return Err(WriteError::BlobDigestMismatch {
                expected: c.digest.clone(),
                actual: streamed.raw_digest,
            });
        }
        let root = &self.inner.root;
        let (diff_id, tar_size) = (streamed.diff_id.clone(), streamed.tar_size);
        let (files, already_there) = {
            let _lock = folder::FolderLock::acquire(root, &self.inner.index_lock)?;
            let committed =
                layout::commit_layer(root, &self.inner.options, image, index, streamed)?;
            layout::refresh(root, self.inner.options.format, image)?;
            committed
        };
        tracing::info!(index, %diff_id, root = %root.display(), "layer written");
        Ok(WrittenLayer::new(
            image,
            index,
            diff_id,
            tar_size,
            files,
            already_there,
        ))
    }

    /// Rewrites the top-level files from what the folder holds now.
    pub fn refresh_index(&self, image: &ImageContext) -> Result<(), WriteError> {
        fsx::mkdirs(&self.inner.root)?;
        let _lock = folder::FolderLock::acquire(&self.inner.root, &self.inner.index_lock)?;
        layout::refresh(&self.inner.root, self.inner.options.format, image)
    }

    pub(crate) fn options(&self) -> &WriterOptions {
        &self.inner.options
    }
}

/// What [`LayerWriter::check_target`] found where a layer goes.
#[derive(Debug)]
pub(crate) enum Slot {
    /// Nothing (or nothing to keep): write the layer, whose diff ID this is.
    Free(Digest),
    /// This very layer (diff ID checked): record its image, write nothing.
    Holds,
}

/// Tells the blocking worker to stop when the `write_layer` future is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
