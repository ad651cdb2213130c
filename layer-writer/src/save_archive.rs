//! Extracting layers from a `docker save` stream.
//!
//! Both layouts are recognised, entry by entry, in whatever order they come:
//!
//! - 20.10–24: `<v1 id>/layer.tar` (named by [`ImageContext::layer_ids`] or
//!   by the ids of [`crate::v1_layer_ids`]), `<config hex>.json`,
//!   `manifest.json` last;
//! - 25+: an OCI layout where a layer is `blobs/sha256/<hex>`, named by its
//!   diff ID when uncompressed (classic store) or by its compressed digest
//!   (containerd store, matched against [`ImageContext::compressed`]).
//!
//! Wanted layers are streamed straight into the writer; unwanted ones are
//! read through and dropped. A non-JSON entry that no name identifies is
//! decompressed and hashed into a temporary file in the root, kept if it
//! is a wanted layer and deleted otherwise. No layer is held in memory.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use oci_spec::image::Digest;

use crate::pipeline::{self, Keep};
use crate::{CancelOnDrop, Format, ImageContext, LayerWriter, WriteError, WrittenLayer};

/// What [`LayerWriter::write_from_save`] extracted.
#[derive(Debug, Clone)]
pub struct SaveExtract {
    /// The layers written, in the order they were found in the stream.
    pub layers: Vec<WrittenLayer>,
    /// The image config, when the stream held a config matching the image.
    pub config_json: Option<Vec<u8>>,
}

/// Largest JSON entry read into memory (configs, manifests).
const MAX_JSON: u64 = 64 << 20;

impl LayerWriter {
    /// Reads a `docker save` stream and writes the layers at `indexes` of
    /// `image`, as [`LayerWriter::write_layer`] would, without buffering
    /// layers in memory. Fails with [`WriteError::MissingFromSave`] if a
    /// wanted layer is not in the stream (the layers written stay).
    pub async fn write_from_save<R>(
        &self,
        image: &ImageContext,
        indexes: &[usize],
        save_stream: R,
    ) -> Result<SaveExtract, WriteError>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = cancel.0.clone();
        let this = self.clone();
        let image = image.clone();
        let indexes = indexes.to_vec();
        let task = tokio::task::spawn_blocking(move || {
            let reader = tokio_util::io::SyncIoBridge::new(save_stream);
            this.save_sync(&image, &indexes, reader, &flag)
        });
        let result = task.await.map_err(WriteError::Worker)?;
        drop(cancel);
        result
    }

    /// Blocking version of [`LayerWriter::write_from_save`].
    pub fn write_from_save_blocking(
        &self,
        image: &ImageContext,
        indexes: &[usize],
        save_stream: impl Read,
    ) -> Result<SaveExtract, WriteError> {
        self.save_sync(image, indexes, save_stream, &AtomicBool::new(false))
    }

    fn save_sync(
        &self,
        image: &ImageContext,
        indexes: &[usize],
        save_stream: impl Read,
        cancel: &AtomicBool,
    ) -> Result<SaveExtract, WriteError> {
        let diff_ids = image.diff_ids()?;
        crate::fsx::mkdirs(self.root())?;
        let mut pending: BTreeSet<usize> = BTreeSet::new();
        for &i in indexes {
            self.check_target(image, &diff_ids, i)?;
            pending.insert(i);
        }
        let v1_ids = crate::v1_layer_ids(&image.config_json).unwrap_or_default();
        let config_digest = image.config_digest();
        let config_names = [
            format!("{}.json", config_digest.digest()),
            format!("blobs/sha256/{}", config_digest.digest()),
        ];
        let mut out = SaveExtract {
            layers: Vec::new(),
            config_json: None,
        };

        let mut archive = tar::Archive::new(save_stream);
        let entries = archive.entries().map_err(WriteError::SaveArchive)?;
        for entry in entries {
            if pending.is_empty() && out.config_json.is_some() {
                break;
            }
            let mut entry = entry.map_err(WriteError::SaveArchive)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(WriteError::SaveArchive)?;
            let name = path.to_string_lossy().trim_start_matches("./").to_string();

            if config_names.contains(&name) {
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(MAX_JSON)
                    .read_to_end(&mut bytes)
                    .map_err(WriteError::SaveArchive)?;
                if bytes == image.config_json {
                    out.config_json = Some(bytes);
                }
                continue;
            }
            let index = match identify(&name, image, &v1_ids, &diff_ids) {
                Identified::Layer(i) => Some(i),
                Identified::Other => continue,
                Identified::Unknown => None,
            };
            match index {
                Some(i) if pending.contains(&i) => {
                    tracing::debug!(entry = %name, index = i, "layer found in save stream");
                    let streamed = self.stream(image, i, &mut entry, cancel, false)?;
                    if streamed.diff_id != diff_ids[i] {
                        return Err(WriteError::DiffIdMismatch {
                            expected: diff_ids[i].clone(),
                            actual: streamed.diff_id,
                        });
                    }
                    out.layers.push(self.commit(image, i, streamed, cancel)?);
                    pending.remove(&i);
                }
                Some(_) => {} // known and unwanted: read through by the iterator
                None if pending.is_empty() => {}
                None => {
                    let mut head = [0u8; 1];
                    let n = entry.read(&mut head).map_err(WriteError::SaveArchive)?;
                    if n == 0 || head[0] == b'{' || head[0] == b'[' {
                        continue; // JSON: a manifest, index or v1 json
                    }
                    let reader = std::io::Cursor::new(head).take(n as u64).chain(&mut entry);
                    let streamed = match pipeline::stream_layer(
                        reader,
                        self.root(),
                        Keep::Tar,
                        cancel,
                    ) {
                        Ok(s) => s,
                        Err(WriteError::Read(e)) => return Err(WriteError::SaveArchive(e)),
                        Err(WriteError::Io { path, source }) => {
                            return Err(WriteError::Io { path, source });
                        }
                        Err(WriteError::Cancelled) => return Err(WriteError::Cancelled),
                        Err(e) => {
                            tracing::debug!(entry = %name, error = %e, "unrecognised entry skipped");
                            continue;
                        }
                    };
                    let hit = pending
                        .iter()
                        .copied()
                        .find(|i| diff_ids[*i] == streamed.diff_id);
                    if let Some(i) = hit {
                        tracing::debug!(entry = %name, index = i, "layer identified by hashing");
                        out.layers.push(self.commit(image, i, streamed, cancel)?);
                        pending.remove(&i);
                    }
                }
            }
        }

        // Layers sharing a diff ID with one written (docker save keeps one copy).
        for i in pending.clone() {
            let Some(done) = out
                .layers
                .iter()
                .find(|l| l.diff_id == diff_ids[i])
                .cloned()
            else {
                return Err(WriteError::MissingFromSave {
                    index: i,
                    diff_id: diff_ids[i].clone(),
                });
            };
            let source = self.root().join(
                &done.files[match self.options().format {
                    Format::Seed => 2,
                    _ => 0,
                }],
            );
            let file = std::fs::File::open(&source).map_err(crate::error::io_err(&source))?;
            out.layers
                .push(self.write_layer_sync(image, i, file, cancel)?);
            pending.remove(&i);
        }
        Ok(out)
    }
}

enum Identified {
    Layer(usize),
    /// Not a layer: metadata.
    Other,
    /// Possibly a layer no name identifies.
    Unknown,
}

fn identify(
    name: &str,
    image: &ImageContext,
    v1_ids: &[String],
    diff_ids: &[Digest],
) -> Identified {
    if let Some(id) = name
        .strip_suffix("/layer.tar")
        .filter(|id| !id.contains('/'))
    {
        let pos = image
            .layer_ids
            .iter()
            .position(|x| x == id)
            .or_else(|| v1_ids.iter().position(|x| x == id));
        return pos.map_or(Identified::Unknown, Identified::Layer);
    }
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        if let Some(i) = diff_ids.iter().position(|d| d.digest() == hex) {
            return Identified::Layer(i);
        }
        let by_compressed = image
            .compressed
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.digest.digest() == hex));
        return by_compressed.map_or(Identified::Unknown, Identified::Layer);
    }
    Identified::Other
}
