//! [`ContainersStorage`]: Podman's image store (containers/storage) read
//! straight from its graph root, as [`LayerStore`](crate::LayerStore)
//! reads Docker's.
//!
//! Podman (and Buildah, CRI-O) keep, under the graph root (`podman info`'s
//! `graphRoot`, which Podman's Docker-compatible API reports as
//! `DockerRootDir`; `/var/lib/containers/storage` for root,
//! `~/.local/share/containers/storage` rootless):
//!
//! ```text
//! <driver>-layers/layers.json             every layer: id, parent, diff-digest (its diff ID), …
//! <driver>-layers/<id>.tar-split.gz       the layer's tar headers and padding (tar-split)
//! <driver>-images/<image id>/=<base64 of "sha256:<image id>">   the image config
//! overlay/<id>/diff                       overlay: the layer's files
//! vfs/dir/<id>                            vfs: the layer's whole tree
//! ```
//!
//! A layer is found by its diff ID and its parents' (the image's diff IDs
//! from the base up), and its exact tar rebuilt from its tar-split and its
//! files as containers/storage does for `podman save` and push. Every file
//! is opened read-only; nothing under the graph root is written, and no
//! lock is taken: a layer removed while it is read fails the read, and the
//! caller's check of the diff ID catches anything else.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use std::io::{self, Read};

use crate::error::DataRootError;
use crate::layer_store::{LayerTar, checked_config, hex_of, read, small_files, supported_driver};

/// Graph drivers whose layer folders [`ContainersStorage`] knows how to find.
pub const SUPPORTED_DRIVERS: &[&str] = &["overlay", "vfs"];

/// A containers/storage graph root, opened read-only.
#[derive(Debug, Clone)]
pub struct ContainersStorage {
    root: PathBuf,
    layout: PodmanLayout,
}

/// Where the parts of a containers/storage graph root are, relative to it:
/// for [`ContainersStorage`], and for a reader that sees the graph root
/// through the Engine API (the archive route).
#[derive(Debug, Clone)]
pub struct PodmanLayout {
    driver: String,
}

impl PodmanLayout {
    /// The layout of graph driver `driver`, one of [`SUPPORTED_DRIVERS`].
    pub fn new(driver: &str) -> Result<Self, DataRootError> {
        Ok(Self {
            driver: supported_driver(driver, SUPPORTED_DRIVERS)?,
        })
    }

    /// The layer database: `<driver>-layers` (`layers.json`, tar-splits).
    pub fn layers_dir(&self) -> PathBuf {
        PathBuf::from(format!("{}-layers", self.driver))
    }

    /// The image database: `<driver>-images`.
    pub fn images_dir(&self) -> PathBuf {
        PathBuf::from(format!("{}-images", self.driver))
    }

    /// The graph driver's layer folders: `overlay`, or `vfs/dir`.
    pub fn files_dir(&self) -> PathBuf {
        match self.driver.as_str() {
            "vfs" => PathBuf::from("vfs/dir"),
            driver => PathBuf::from(driver),
        }
    }

    /// The image config of `image_id`, under [`Self::images_dir`].
    pub fn config_file(&self, image_id: &str) -> Result<String, DataRootError> {
        let hex = hex_of(image_id)?;
        Ok(format!("{hex}/{}", big_data_name(&format!("sha256:{hex}"))))
    }

    /// The list of layers, under [`Self::layers_dir`].
    pub fn layers_file(&self) -> &'static str {
        "layers.json"
    }

    /// Layer `layer_id`'s tar-split, under [`Self::layers_dir`].
    pub fn tar_split_file(&self, layer_id: &str) -> Result<String, DataRootError> {
        Ok(format!("{}.tar-split.gz", hex_of(layer_id)?))
    }

    /// Layer `layer_id`'s files under [`Self::files_dir`], and the last
    /// component of that path (an archive of it names its entries after it).
    pub fn layer_files(&self, layer_id: &str) -> Result<(String, String), DataRootError> {
        let id = hex_of(layer_id)?;
        Ok(match self.driver.as_str() {
            "vfs" => (id.to_owned(), id.to_owned()),
            _ => (format!("{id}/diff"), "diff".to_owned()),
        })
    }
}

/// The ID of the layer whose tar is the last of `diff_ids` (the image's
/// diff IDs from the base up), from the bytes of `layers.json`: the end of
/// a parent chain whose diff digests are `diff_ids`, else any layer with
/// that diff digest, whose files make the same tar.
pub fn layer_id(layers_json: &[u8], diff_ids: &[String]) -> Result<String, DataRootError> {
    let layers: Vec<Layer> =
        serde_json::from_slice(layers_json).map_err(|e| DataRootError::Format {
            path: PathBuf::from("layers.json"),
            source: e.into(),
        })?;
    find_layer(&layers, diff_ids)
        .map(str::to_owned)
        .ok_or_else(|| DataRootError::LayerNotInStore {
            diff_id: diff_ids.last().cloned().unwrap_or_default(),
            chain_id: crate::layer_store::chain_id(diff_ids),
        })
}

/// The one regular file of `tar` (the archive API's tar of a file), at
/// most `limit` bytes; `what` names it in errors.
pub fn file_from_tar(tar: impl Read, what: &str, limit: u64) -> Result<Vec<u8>, DataRootError> {
    let files = small_files(tar, what, limit)?;
    let mut files = files.into_values();
    match (files.next(), files.next()) {
        (Some(bytes), None) => Ok(bytes),
        _ => Err(DataRootError::Read {
            path: PathBuf::from(what),
            source: io::Error::new(io::ErrorKind::InvalidData, "not one file in the archive"),
        }),
    }
}

/// An image config read from the archive API's tar of its file, checked
/// to hash to `image_id`.
pub fn config_from_tar(tar: impl Read, image_id: &str) -> Result<Vec<u8>, DataRootError> {
    checked_config(file_from_tar(tar, image_id, 64 << 20)?, image_id)
}

/// One layer of `layers.json`: only the fields read.
#[derive(Debug, Deserialize)]
struct Layer {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    /// The digest of the uncompressed tar: the diff ID.
    #[serde(rename = "diff-digest", default)]
    diff_digest: Option<String>,
}

impl ContainersStorage {
    /// The store of graph driver `driver` under the graph root `root`;
    /// fails when `<driver>-layers/layers.json` cannot be read (no such
    /// store, or no permission) or the driver is not one of
    /// [`SUPPORTED_DRIVERS`].
    pub fn open(root: impl Into<PathBuf>, driver: &str) -> Result<Self, DataRootError> {
        let store = Self {
            root: root.into(),
            layout: PodmanLayout::new(driver)?,
        };
        store.layers()?;
        Ok(store)
    }

    /// The graph root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The graph driver, e.g. `overlay`.
    pub fn driver(&self) -> &str {
        &self.layout.driver
    }

    /// The image config stored for `image_id` (`sha256:…`), checked to
    /// hash to it.
    pub fn image_config(&self, image_id: &str) -> Result<Vec<u8>, DataRootError> {
        let path = self
            .root
            .join(self.layout.images_dir())
            .join(self.layout.config_file(image_id)?);
        checked_config(read(&path)?, image_id)
    }

    /// The exact tar of the last of `diff_ids` (the image's diff IDs from
    /// the base up to the wanted layer), rebuilt from the store.
    ///
    /// The layer is the one whose diff digest and parents' match
    /// `diff_ids`; failing that (an image whose layers were committed
    /// elsewhere in the tree), any layer with that diff digest, whose files
    /// make the same tar. Reading fails with an [`std::io::Error`] when a
    /// file is missing, short or has the wrong checksum; the caller
    /// verifies the whole against the diff ID.
    pub fn layer_tar(&self, diff_ids: &[String]) -> Result<LayerTar, DataRootError> {
        let diff_id = diff_ids.last().cloned().unwrap_or_default();
        let layers = self.layers()?;
        let id = find_layer(&layers, diff_ids).ok_or_else(|| DataRootError::LayerNotInStore {
            diff_id: diff_id.clone(),
            chain_id: crate::layer_store::chain_id(diff_ids),
        })?;
        let (files, _) = self.layout.layer_files(id)?;
        let folder = self.root.join(self.layout.files_dir()).join(files);
        std::fs::read_dir(&folder).map_err(|source| DataRootError::Read {
            path: folder.clone(),
            source,
        })?;
        let split = self
            .root
            .join(self.layout.layers_dir())
            .join(self.layout.tar_split_file(id)?);
        tracing::debug!(%diff_id, layer = id, folder = %folder.display(), "rebuilding a layer from containers/storage");
        LayerTar::rebuild(&split, folder)
    }

    /// Every layer of `layers.json`.
    fn layers(&self) -> Result<Vec<Layer>, DataRootError> {
        let path = self
            .root
            .join(self.layout.layers_dir())
            .join(self.layout.layers_file());
        let bytes = read(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| DataRootError::Format {
            path,
            source: e.into(),
        })
    }
}

/// The layer ID for the last of `diff_ids`: the end of a parent chain
/// whose diff digests are `diff_ids`, else any layer with the last one.
fn find_layer<'a>(layers: &'a [Layer], diff_ids: &[String]) -> Option<&'a str> {
    let digest_is = |l: &Layer, d: &String| l.diff_digest.as_ref() == Some(d);
    let mut ends: Vec<&Layer> = Vec::new();
    for (depth, diff_id) in diff_ids.iter().enumerate() {
        ends = layers
            .iter()
            .filter(|l| digest_is(l, diff_id))
            .filter(|l| match (&l.parent, depth) {
                (None, 0) => true,
                (Some(parent), d) if d > 0 => ends.iter().any(|e| &e.id == parent),
                _ => false,
            })
            .collect();
    }
    ends.first()
        .copied()
        .or_else(|| {
            let last = diff_ids.last()?;
            layers.iter().find(|l| digest_is(l, last))
        })
        .map(|l| l.id.as_str())
}

/// The file name containers/storage gives an image's "big data" item
/// `key`: the key itself when it is only `[0-9a-z.]`, else `=` and its
/// base64 (`makeBigDataBaseName`).
fn big_data_name(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        key.to_owned()
    } else {
        format!("={}", base64::engine::general_purpose::STANDARD.encode(key))
    }
}

#[cfg(test)]
mod tests;
