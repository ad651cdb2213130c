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
use crate::{CancelOnDrop, Format, ImageContext, LayerWriter, Slot, WriteError, WrittenLayer};

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

/// An image to extract from a `docker save` stream whose config is read
/// from the stream itself, so that the stream is read only once (see
/// [`LayerWriter::write_from_save_reading_config`]).
#[derive(Debug, Clone)]
pub struct SaveImage {
    /// Everything the writer needs but the config: its `config_json` is
    /// ignored and replaced by the config found in the stream. An empty
    /// entry of `layer_ids` (the top layer's v1 id depends on the config)
    /// is filled with the [`crate::v1_layer_ids`] id once the config is
    /// read; the target of such a layer is checked then, before anything
    /// is committed.
    pub context: ImageContext,
    /// The digest of the config (on a classic image store, the image ID).
    pub config_digest: Digest,
    /// The diff IDs the daemon reports, base first. The config found must
    /// list the same ([`WriteError::ConfigMismatch`]).
    pub diff_ids: Vec<Digest>,
}

/// The image being extracted: its context, complete once the config is known.
struct Target {
    context: ImageContext,
    config_digest: Digest,
    diff_ids: Vec<Digest>,
    /// The v1 ids `docker save` 20.10–24 names layer folders with: all of
    /// them once the config is known, all but the top one's before.
    v1_ids: Vec<String>,
    config_known: bool,
}

impl Target {
    /// An image whose config is known up front.
    fn known(image: &ImageContext) -> Result<Self, WriteError> {
        Ok(Self {
            diff_ids: image.diff_ids()?,
            config_digest: image.config_digest(),
            context: image.clone(),
            v1_ids: crate::v1_layer_ids(&image.config_json).unwrap_or_default(),
            config_known: true,
        })
    }

    /// An image whose config is to be read from the stream.
    fn unread(image: SaveImage) -> Self {
        Self {
            v1_ids: crate::v1::v1_layer_ids_below_top(&image.diff_ids),
            context: image.context,
            config_digest: image.config_digest,
            diff_ids: image.diff_ids,
            config_known: false,
        }
    }

    /// Takes the config entry's bytes if they are this image's config.
    fn accept_config(&mut self, bytes: Vec<u8>) -> Result<bool, WriteError> {
        use sha2::Digest as _;
        let digest = pipeline::to_digest(sha2::Sha256::new_with_prefix(&bytes));
        if digest != self.config_digest {
            return Ok(false);
        }
        if !self.config_known {
            let config: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(WriteError::BadConfig)?;
            let listed = crate::config_diff_ids(&config)?;
            if listed != self.diff_ids {
                return Err(WriteError::ConfigMismatch {
                    config: self.config_digest.clone(),
                });
            }
            self.v1_ids = crate::v1_layer_ids(&bytes)?;
            for (id, v1) in self.context.layer_ids.iter_mut().zip(&self.v1_ids) {
                if id.is_empty() {
                    id.clone_from(v1);
                }
            }
            self.context.config_json = bytes;
            self.config_known = true;
        }
        Ok(true)
    }
}

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
        let target = Target::known(image)?;
        self.save_async(target, indexes, save_stream).await
    }

    /// Like [`LayerWriter::write_from_save`], for an image whose config is
    /// not known yet: it is taken from the stream (the entry whose sha256
    /// is [`SaveImage::config_digest`]), so the stream is read once.
    ///
    /// Layers are recognised by their diff IDs and by the v1 ids `docker
    /// save` 20.10–24 names them with (all but the top layer's follow from
    /// the diff IDs alone), else by hashing. A wanted layer met before the
    /// config waits as a verified temporary file and is committed once the
    /// config has been read. Fails with [`WriteError::ConfigMissingFromSave`]
    /// if the stream ends without the config; nothing is written then.
    pub async fn write_from_save_reading_config<R>(
        &self,
        image: SaveImage,
        indexes: &[usize],
        save_stream: R,
    ) -> Result<SaveExtract, WriteError>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        self.save_async(Target::unread(image), indexes, save_stream)
            .await
    }

    async fn save_async<R>(
        &self,
        target: Target,
        indexes: &[usize],
        save_stream: R,
    ) -> Result<SaveExtract, WriteError>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = cancel.0.clone();
        let this = self.clone();
        let indexes = indexes.to_vec();
        let reader = crate::readahead::ReadAhead::spawn(save_stream);
        let task =
            tokio::task::spawn_blocking(move || this.save_sync(target, &indexes, reader, &flag));
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
        let target = Target::known(image)?;
        self.save_sync(target, indexes, save_stream, &AtomicBool::new(false))
    }

    fn save_sync(
        &self,
        mut target: Target,
        indexes: &[usize],
        save_stream: impl Read,
        cancel: &AtomicBool,
    ) -> Result<SaveExtract, WriteError> {
        let diff_ids = target.diff_ids.clone();
        crate::fsx::mkdirs(self.root())?;
        let mut pending: BTreeSet<usize> = BTreeSet::new();
        // Layers whose name, hence target, is known only with the config.
        let mut unnamed: Vec<usize> = Vec::new();
        // Layers the folder already holds: their image is recorded, no more.
        let mut present: Vec<usize> = Vec::new();
        for &i in indexes {
            if target
                .context
                .layer_ids
                .get(i)
                .is_some_and(String::is_empty)
            {
                unnamed.push(i);
            } else if let Slot::Holds = self.check_target(&target.context, &diff_ids, i)? {
                present.push(i);
                continue;
            }
            pending.insert(i);
        }
        let config_names = [
            format!("{}.json", target.config_digest.digest()),
            format!("blobs/sha256/{}", target.config_digest.digest()),
        ];
        let mut out = SaveExtract {
            layers: Vec::new(),
            config_json: None,
        };
        // Wanted layers streamed and verified before the config was read.
        let mut waiting: Vec<(usize, pipeline::Streamed)> = Vec::new();
        // An OCI-layout stream (Docker 25+) holds the image's manifest and
        // its layer blobs as the daemon stores them: with Seed and Oci and
        // no manifest known, both are kept, so that `index.json` names that
        // very manifest (on the containerd store, the image ID).
        let want_manifest = matches!(self.options().format, Format::Seed | Format::Oci)
            && crate::layout::pushed_manifest(&target.context).is_none();
        let mut oci_layout = false;
        let mut manifest: Option<(String, Vec<u8>)> = None;

        let mut archive = tar::Archive::new(save_stream);
        let entries = archive.entries().map_err(WriteError::SaveArchive)?;
        for entry in entries {
            let manifest_missing = want_manifest && oci_layout && manifest.is_none();
            if pending.is_empty() && out.config_json.is_some() && !manifest_missing {
                break;
            }
            let mut entry = entry.map_err(WriteError::SaveArchive)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(WriteError::SaveArchive)?;
            let name = path.to_string_lossy().trim_start_matches("./").to_string();
            oci_layout |= name.starts_with("blobs/");

            if config_names.contains(&name) {
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(MAX_JSON)
                    .read_to_end(&mut bytes)
                    .map_err(WriteError::SaveArchive)?;
                if target.accept_config(bytes)? {
                    tracing::debug!(entry = %name, "image config found in save stream");
                    // Named now: checked before anything is committed.
                    for i in unnamed.drain(..) {
                        if let Slot::Holds = self.check_target(&target.context, &diff_ids, i)? {
                            pending.remove(&i);
                            waiting.retain(|(j, _)| *j != i);
                            present.push(i);
                        }
                    }
                    out.config_json = Some(target.context.config_json.clone());
                    for (i, streamed) in waiting.drain(..) {
                        out.layers
                            .push(self.commit(&target.context, i, streamed, cancel)?);
                    }
                }
                continue;
            }
            let identified = identify(&name, &target.context, &target.v1_ids, &diff_ids);
            // A blob no name identifies may be the manifest: JSON is never a layer.
            let mut head = [0u8; 1];
            let mut n = 0;
            if want_manifest
                && manifest.is_none()
                && name.starts_with("blobs/sha256/")
                && matches!(identified, Identified::Unknown)
            {
                n = entry.read(&mut head).map_err(WriteError::SaveArchive)?;
                if n == 1 && head[0] == b'{' {
                    manifest = read_manifest(&name, &mut entry, &target.config_digest)?;
                    if manifest.is_some() {
                        tracing::debug!(entry = %name, "image manifest found in save stream");
                    }
                    continue;
                }
            }
            let mut entry = std::io::Cursor::new(head).take(n as u64).chain(entry);
            let index = match identified {
                Identified::Layer(i) => Some(i),
                Identified::Other => continue,
                Identified::Unknown => None,
            };
            let found = match index {
                Some(i) if pending.contains(&i) => {
                    tracing::debug!(entry = %name, index = i, "layer found in save stream");
                    let streamed = self.stream(&target.context, i, &mut entry, cancel, false)?;
                    if streamed.diff_id != diff_ids[i] {
                        return Err(WriteError::DiffIdMismatch {
                            expected: diff_ids[i].clone(),
                            actual: streamed.diff_id,
                        });
                    }
                    Some((i, streamed))
                }
                Some(_) => None, // known and unwanted: read through by the iterator
                None if pending.is_empty() => None,
                None => {
                    let keep = match self.options().format {
                        _ if !(want_manifest && name.starts_with("blobs/")) => Keep::Tar,
                        // The blob as stored is the OCI layout's layer.
                        Format::Oci => Keep::RawIfCompressed,
                        _ => Keep::TarAndRaw,
                    };
                    let hit =
                        self.hash_unknown(&name, &mut entry, &pending, &diff_ids, keep, cancel)?;
                    // The blob as stored, to be kept beside the layer.
                    if let Some((i, streamed)) = &hit
                        && (streamed.raw_copy.is_some() || streamed.raw_kept)
                        && let Some(slot) = target.context.compressed.get_mut(*i)
                    {
                        *slot = Some(crate::BlobRef {
                            digest: streamed.raw_digest.clone(),
                            size: streamed.raw_size,
                            media_type: compressed_media_type(streamed.compression),
                        });
                    }
                    hit
                }
            };
            if let Some((i, streamed)) = found {
                pending.remove(&i);
                if target.config_known {
                    out.layers
                        .push(self.commit(&target.context, i, streamed, cancel)?);
                } else {
                    waiting.push((i, streamed));
                }
            }
        }
        if !target.config_known {
            return Err(WriteError::ConfigMissingFromSave {
                config: target.config_digest,
            });
        }
        if let Some(m) = manifest {
            adopt_manifest(&mut target.context, m);
        }
        let image = &target.context;
        for i in present {
            out.layers.push(self.record_present(image, i)?);
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
        if image.manifest.is_some() && !out.layers.is_empty() {
            // Layers committed before the manifest was read: name it now.
            self.refresh_index(image)?;
        }
        Ok(out)
    }

    /// Decompresses and hashes an entry no name identifies into a
    /// temporary file; returns it if it is a pending layer (else it is
    /// deleted). JSON entries (manifests, v1 `json` files) are skipped.
    fn hash_unknown(
        &self,
        name: &str,
        entry: &mut impl Read,
        pending: &BTreeSet<usize>,
        diff_ids: &[Digest],
        keep: Keep,
        cancel: &AtomicBool,
    ) -> Result<Option<(usize, pipeline::Streamed)>, WriteError> {
        let mut head = [0u8; 1];
        let n = entry.read(&mut head).map_err(WriteError::SaveArchive)?;
        if n == 0 || head[0] == b'{' || head[0] == b'[' {
            return Ok(None); // JSON: a manifest, index or v1 json
        }
        let reader = std::io::Cursor::new(head).take(n as u64).chain(entry);
        let streamed = match pipeline::stream_layer(reader, self.root(), keep, cancel) {
            Ok(s) => s,
            Err(WriteError::Read(e)) => return Err(WriteError::SaveArchive(e)),
            Err(e @ (WriteError::Io { .. } | WriteError::Cancelled)) => return Err(e),
            Err(e) => {
                tracing::debug!(entry = %name, error = %e, "unrecognised entry skipped");
                return Ok(None);
            }
        };
        let hit = pending
            .iter()
            .copied()
            .find(|i| diff_ids[*i] == streamed.diff_id);
        if let Some(i) = hit {
            tracing::debug!(entry = %name, index = i, "layer identified by hashing");
        }
        Ok(hit.map(|i| (i, streamed)))
    }
}

/// Reads the rest of a JSON blob (its `{` read already) of an OCI-layout
/// stream: `Some` when it is the image manifest of `config` (its bytes
/// hashing to the blob's name).
fn read_manifest(
    name: &str,
    entry: &mut impl Read,
    config: &Digest,
) -> Result<Option<(String, Vec<u8>)>, WriteError> {
    let Some(hex) = name.strip_prefix("blobs/sha256/") else {
        return Ok(None);
    };
    let mut bytes = b"{".to_vec();
    entry
        .take(MAX_JSON)
        .read_to_end(&mut bytes)
        .map_err(WriteError::SaveArchive)?;
    // Configs and indexes are JSON blobs too: not taken.
    let Ok(manifest) = crate::manifest::image_manifest(&bytes) else {
        return Ok(None);
    };
    let Some(media_type) = manifest
        .media_type()
        .as_ref()
        .map(ToString::to_string)
        .filter(|t| {
            t == crate::manifest::MT_OCI_MANIFEST || t == crate::manifest::MT_DOCKER_MANIFEST
        })
    else {
        return Ok(None);
    };
    Ok(
        (crate::manifest::digest_of(&bytes).digest() == hex
            && manifest.config().digest() == config)
            .then_some((media_type, bytes)),
    )
}

/// Takes a manifest found in the stream as the image's, with the layer
/// descriptors it names (where they agree with the blobs seen).
fn adopt_manifest(image: &mut ImageContext, (media_type, bytes): (String, Vec<u8>)) {
    let Ok(manifest) = crate::manifest::ManifestBlobs::parse(&media_type, &bytes) else {
        return;
    };
    if manifest.layers.len() != image.compressed.len() {
        return;
    }
    for (known, named) in image.compressed.iter_mut().zip(manifest.layers) {
        if known.as_ref().is_some_and(|k| k.digest != named.digest) {
            return;
        }
        *known = Some(named);
    }
    image.manifest = Some((media_type, bytes));
}

/// The OCI media type of a layer blob compressed as detected.
fn compressed_media_type(c: pipeline::Compression) -> String {
    match c {
        pipeline::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        pipeline::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        pipeline::Compression::None => crate::layout::MT_OCI_TAR,
    }
    .to_owned()
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
            .or_else(|| v1_ids.iter().position(|x| x == id))
            .filter(|_| !id.is_empty());
        return pos.map_or(Identified::Unknown, Identified::Layer);
    }
    // Podman's archives: `<hex>.tar` at the top, named by diff ID.
    if let Some(hex) = name.strip_suffix(".tar").filter(|h| !h.contains('/')) {
        return diff_ids
            .iter()
            .position(|d| d.digest() == hex)
            .map_or(Identified::Unknown, Identified::Layer);
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
