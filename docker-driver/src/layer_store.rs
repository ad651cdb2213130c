//! [`LayerStore`]: a classic image store read straight from the daemon's
//! data root, without the daemon.
//!
//! A classic store (graph drivers `overlay2`, `fuse-overlayfs`, `vfs`)
//! keeps, under its data root (`DockerRootDir`):
//!
//! ```text
//! image/<driver>/repositories.json                     names → image IDs
//! image/<driver>/imagedb/content/sha256/<id>           image configs (sha256 = image ID)
//! image/<driver>/imagedb/metadata/sha256/<id>/parent   the parent image ID, if any
//! image/<driver>/layerdb/sha256/<chain id>/            diff, cache-id, size, parent, tar-split.json.gz
//! <driver>/<cache-id>/diff                             overlay2, fuse-overlayfs: the layer's files
//! vfs/dir/<cache-id>                                   vfs: the layer's whole tree
//! ```
//!
//! [`LayerStore::layer_tar`] rebuilds a layer's exact tar from its tar-split
//! metadata and its files, as Docker does for `docker save` and push. Every
//! file is opened read-only; nothing is ever written under the data root.
//!
//! The reassembly lives here rather than in `layer-writer` because the
//! layer store is the daemon's own storage format: this crate is the one
//! that knows Docker, while `layer-writer` takes a plain tar stream from
//! whichever route produced it and verifies it against the diff ID.

mod archived;
mod tar_split;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::DataRootError;

/// Graph drivers whose layer folders [`LayerStore`] knows how to find.
pub const SUPPORTED_DRIVERS: &[&str] = &["overlay2", "fuse-overlayfs", "vfs"];

/// The chain ID of the last of `diff_ids` (base first): C0 = D0,
/// Cn = sha256(C(n-1) + " " + Dn). Empty input gives an empty string.
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut ids = diff_ids.iter();
    let Some(first) = ids.next() else {
        return String::new();
    };
    ids.fold(first.clone(), |chain, diff_id| {
        let hash = Sha256::digest(format!("{chain} {diff_id}").as_bytes());
        format!("sha256:{}", hex::encode(hash))
    })
}

/// A classic image store under a data root, opened read-only.
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
    driver: String,
}

impl LayerStore {
    /// The store of graph driver `driver` under the data root `root`;
    /// fails when `image/<driver>/layerdb/sha256` cannot be listed (no
    /// such store, or no permission) or the driver is not one of
    /// [`SUPPORTED_DRIVERS`].
    pub fn open(root: impl Into<PathBuf>, driver: &str) -> Result<Self, DataRootError> {
        let root = root.into();
        if !SUPPORTED_DRIVERS.contains(&driver) {
            return Err(DataRootError::UnsupportedGraphDriver {
                driver: driver.to_owned(),
            });
        }
        let store = Self {
            root,
            driver: driver.to_owned(),
        };
        let layers = store.image_dir().join("layerdb/sha256");
        std::fs::read_dir(&layers).map_err(|source| DataRootError::Read {
            path: layers,
            source,
        })?;
        Ok(store)
    }

    /// The classic store under the data root `root`, its graph driver
    /// being the one `image/<driver>/` exists for (the first supported one
    /// with a layer database).
    pub fn detect(root: impl Into<PathBuf>) -> Result<Self, DataRootError> {
        let root = root.into();
        let image = root.join("image");
        let entries = std::fs::read_dir(&image).map_err(|source| DataRootError::Read {
            path: image.clone(),
            source,
        })?;
        let mut found: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| image.join(name).join("layerdb").is_dir())
            .collect();
        found.sort();
        match found
            .iter()
            .find(|d| SUPPORTED_DRIVERS.contains(&d.as_str()))
        {
            Some(driver) => Self::open(root, driver),
            None => match found.into_iter().next() {
                Some(driver) => Err(DataRootError::UnsupportedGraphDriver { driver }),
                None => Err(DataRootError::NoClassicStore { root }),
            },
        }
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The graph driver, e.g. `overlay2`.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The image config stored for `image_id` (`sha256:…`), checked to
    /// hash to it.
    pub fn image_config(&self, image_id: &str) -> Result<Vec<u8>, DataRootError> {
        let hex = hex_of(image_id)?;
        let path = self.image_dir().join("imagedb/content/sha256").join(hex);
        checked_config(read(&path)?, image_id)
    }

    /// The exact tar of the last of `diff_ids` (the image's diff IDs from
    /// the base up to the wanted layer), rebuilt from the layer store.
    ///
    /// Opening checks that the layer is there, that its `diff` file names
    /// that diff ID and that its folder exists; reading then fails with an
    /// [`io::Error`] when a file is missing, short or has the wrong
    /// checksum. The bytes are not hashed here: the caller verifies the
    /// whole against the diff ID.
    pub fn layer_tar(&self, diff_ids: &[String]) -> Result<LayerTar, DataRootError> {
        let diff_id = diff_ids.last().cloned().unwrap_or_default();
        let chain = chain_id(diff_ids);
        let layer = self.layer_dir(&chain)?;
        let not_there = || DataRootError::LayerNotInStore {
            diff_id: diff_id.clone(),
            chain_id: chain.clone(),
        };
        if !layer.is_dir() {
            return Err(not_there());
        }
        let recorded = read_text(&layer.join("diff"))?;
        if recorded != diff_id {
            return Err(not_there());
        }
        let cache_id = read_text(&layer.join("cache-id"))?;
        if cache_id.is_empty() || cache_id.contains('/') || cache_id.starts_with('.') {
            return Err(DataRootError::Format {
                path: layer.join("cache-id"),
                source: format!("bad cache id {cache_id:?}").into(),
            });
        }
        let folder = match self.driver.as_str() {
            "vfs" => self.root.join("vfs/dir").join(&cache_id),
            driver => self.root.join(driver).join(&cache_id).join("diff"),
        };
        std::fs::read_dir(&folder).map_err(|source| DataRootError::Read {
            path: folder.clone(),
            source,
        })?;
        tracing::debug!(%diff_id, %chain, folder = %folder.display(), "rebuilding a layer from the layer store");
        LayerTar::rebuild(&layer.join("tar-split.json.gz"), folder)
    }

    /// The `image/<driver>` folder.
    pub(crate) fn image_dir(&self) -> PathBuf {
        self.root.join("image").join(&self.driver)
    }

    /// The layer database folder of `chain_id`.
    fn layer_dir(&self, chain_id: &str) -> Result<PathBuf, DataRootError> {
        Ok(self
            .image_dir()
            .join("layerdb/sha256")
            .join(hex_of(chain_id)?))
    }

    /// The size the daemon records for the layer with this chain ID (its
    /// files, as `docker history` shows it); 0 when unknown.
    pub(crate) fn layer_size(&self, chain_id: &str) -> i64 {
        self.layer_dir(chain_id)
            .ok()
            .and_then(|dir| read_text(&dir.join("size")).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Every image ID in the image database.
    pub(crate) fn image_ids(&self) -> Result<Vec<String>, DataRootError> {
        let dir = self.image_dir().join("imagedb/content/sha256");
        let entries = std::fs::read_dir(&dir).map_err(|source| DataRootError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|hex| format!("sha256:{hex}"))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The parent image ID recorded for `image_id`, if any.
    pub(crate) fn parent(&self, image_id: &str) -> Option<String> {
        let hex = hex_of(image_id).ok()?;
        let path = self
            .image_dir()
            .join("imagedb/metadata/sha256")
            .join(hex)
            .join("parent");
        read_text(&path).ok().filter(|p| p.starts_with("sha256:"))
    }

    /// `repositories.json`: each reference (`name:tag`, `name@sha256:…`)
    /// with its image ID. Empty when the file is absent.
    pub(crate) fn references(&self) -> Result<BTreeMap<String, String>, DataRootError> {
        #[derive(serde::Deserialize)]
        struct Repositories {
            #[serde(rename = "Repositories", default)]
            repositories: BTreeMap<String, BTreeMap<String, String>>,
        }
        let path = self.image_dir().join("repositories.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => return Err(DataRootError::Read { path, source }),
        };
        let repos: Repositories =
            serde_json::from_slice(&bytes).map_err(|e| DataRootError::Format {
                path,
                source: Box::new(e),
            })?;
        Ok(repos.repositories.into_values().flatten().collect())
    }
}

/// Where a classic store keeps an image's parts, as paths relative to its
/// data root: for reading them where the data root is not a folder of this
/// machine (through the archive API of a container that mounts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayout {
    driver: String,
}

/// `driver` when it is one of `supported`, else
/// [`DataRootError::UnsupportedGraphDriver`].
pub(crate) fn supported_driver(driver: &str, supported: &[&str]) -> Result<String, DataRootError> {
    if supported.contains(&driver) {
        Ok(driver.to_owned())
    } else {
        Err(DataRootError::UnsupportedGraphDriver {
            driver: driver.to_owned(),
        })
    }
}

impl StoreLayout {
    /// The layout of graph driver `driver`, one of [`SUPPORTED_DRIVERS`].
    pub fn new(driver: &str) -> Result<Self, DataRootError> {
        Ok(Self {
            driver: supported_driver(driver, SUPPORTED_DRIVERS)?,
        })
    }

    /// The image and layer databases: `image/<driver>`.
    pub fn image_dir(&self) -> PathBuf {
        Path::new("image").join(&self.driver)
    }

    /// The graph driver's layer folders: `<driver>`, or `vfs/dir`.
    pub fn files_dir(&self) -> PathBuf {
        match self.driver.as_str() {
            "vfs" => PathBuf::from("vfs/dir"),
            driver => PathBuf::from(driver),
        }
    }

    /// The layer database folder of `chain_id`, under [`Self::image_dir`].
    pub fn layer_record(&self, chain_id: &str) -> Result<String, DataRootError> {
        Ok(format!("layerdb/sha256/{}", hex_of(chain_id)?))
    }

    /// The image config of `image_id`, under [`Self::image_dir`].
    pub fn config_file(&self, image_id: &str) -> Result<String, DataRootError> {
        Ok(format!("imagedb/content/sha256/{}", hex_of(image_id)?))
    }

    /// A layer's files under [`Self::files_dir`], and the last component
    /// of that path (an archive of it names its entries after it).
    pub fn layer_files(&self, cache_id: &str) -> (String, String) {
        match self.driver.as_str() {
            "vfs" => (cache_id.to_owned(), cache_id.to_owned()),
            _ => (format!("{cache_id}/diff"), "diff".to_owned()),
        }
    }
}

/// What the layer database records of one layer, read from a tar of its
/// folder (`layerdb/sha256/<chain id>/`).
#[derive(Debug, Clone)]
pub struct LayerRecord {
    /// The `diff` file: the layer's diff ID.
    pub diff_id: String,
    /// The `cache-id` file: the layer's folder name under the graph driver.
    pub cache_id: String,
    /// `tar-split.json.gz`, as stored.
    pub tar_split_gz: Vec<u8>,
}

impl LayerRecord {
    /// Reads the record from `tar`, a tar of the layer's database folder;
    /// `what` names it in errors. Fails when a part is missing or the cache
    /// ID is not a plain folder name.
    pub fn from_tar(tar: impl Read, what: &str) -> Result<Self, DataRootError> {
        let files = small_files(tar, what, 256 << 20)?;
        let path = |name: &str| PathBuf::from(what).join(name);
        let get = |name: &str| {
            files.get(name).cloned().ok_or_else(|| DataRootError::Read {
                path: path(name),
                source: io::Error::new(io::ErrorKind::NotFound, "not in the layer's record"),
            })
        };
        let text = |name: &str| get(name).map(|b| String::from_utf8_lossy(&b).trim().to_owned());
        let record = Self {
            diff_id: text("diff")?,
            cache_id: text("cache-id")?,
            tar_split_gz: get("tar-split.json.gz")?,
        };
        let cache_id = &record.cache_id;
        if cache_id.is_empty() || cache_id.contains('/') || cache_id.starts_with('.') {
            return Err(DataRootError::Format {
                path: path("cache-id"),
                source: format!("bad cache id {cache_id:?}").into(),
            });
        }
        Ok(record)
    }
}

/// An image config read from a tar of its file in the image database,
/// checked to hash to `image_id`.
pub fn config_from_tar(tar: impl Read, image_id: &str) -> Result<Vec<u8>, DataRootError> {
    let hex = hex_of(image_id)?;
    let files = small_files(tar, image_id, 64 << 20)?;
    let bytes = files.get(hex).cloned().ok_or_else(|| DataRootError::Read {
        path: PathBuf::from(format!("imagedb/content/sha256/{hex}")),
        source: io::Error::new(io::ErrorKind::NotFound, "not in the archive"),
    })?;
    checked_config(bytes, image_id)
}

/// `bytes` when they hash to `image_id` (the config of a classic store's
/// image), else [`DataRootError::ConfigMismatch`].
pub(crate) fn checked_config(bytes: Vec<u8>, image_id: &str) -> Result<Vec<u8>, DataRootError> {
    let expected = format!("sha256:{}", hex_of(image_id)?);
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != expected {
        return Err(DataRootError::ConfigMismatch {
            image: image_id.to_owned(),
            expected,
            actual,
        });
    }
    Ok(bytes)
}

/// The regular files of a small tar, by their last path component, at most
/// `limit` bytes in all.
pub(crate) fn small_files(
    tar: impl Read,
    what: &str,
    limit: u64,
) -> Result<BTreeMap<String, Vec<u8>>, DataRootError> {
    let failed = |source: io::Error| DataRootError::Read {
        path: PathBuf::from(what),
        source,
    };
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(failed)? {
        let mut entry = entry.map_err(failed)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        total += entry.size();
        if total > limit {
            return Err(failed(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {limit} bytes"),
            )));
        }
        let name = entry
            .path()
            .map_err(failed)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(failed)?;
        files.insert(name, data);
    }
    Ok(files)
}

/// A blob of containerd's content store (a compressed layer) streamed out
/// of the archive API's tar of its file: the file's bytes only. Its
/// consumer checks them against the blob's digest, as for any blob.
pub struct ArchivedBlob<R: Read> {
    inner: archived::ArchivedFile<R>,
}

impl<R: Read> ArchivedBlob<R> {
    /// The file inside `tar`, the archive of `…/blobs/sha256/<hex>`.
    pub fn new(tar: R) -> Self {
        Self {
            inner: archived::ArchivedFile::new(tar),
        }
    }
}

impl<R: Read> std::fmt::Debug for ArchivedBlob<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchivedBlob").finish_non_exhaustive()
    }
}

impl<R: Read> Read for ArchivedBlob<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// A small blob (a manifest, an index, a config) out of the archive
/// API's tar of its file, checked against `digest`.
pub fn blob_from_tar(tar: impl Read, digest: &str) -> Result<Vec<u8>, DataRootError> {
    let what = format!("blobs/sha256/{}", hex_of(digest)?);
    let mut bytes = Vec::new();
    ArchivedBlob::new(tar)
        .take(crate::content_store::DOCUMENT_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| DataRootError::Read {
            path: PathBuf::from(&what),
            source,
        })?;
    crate::content_store::checked(bytes, digest, Path::new(&what))
}

/// A layer's tar rebuilt from its [`LayerRecord`] and a tar of its folder
/// as the archive API streams it (entries named `<top>/…`): the store
/// route's reassembly for a data root that is not a folder of this machine.
/// As with [`LayerTar`], the caller verifies the whole against the diff ID.
pub struct ArchivedLayerTar<R: Read> {
    inner: tar_split::Assembler<TarSplitLines, archived::ArchivedFiles<R>>,
}

/// A layer record's tar-split JSON lines, decompressed from memory.
type TarSplitLines = BufReader<flate2::read::GzDecoder<io::Cursor<Vec<u8>>>>;

impl<R: Read> ArchivedLayerTar<R> {
    /// The layer `record` describes, its files read from `folder`.
    pub fn new(record: LayerRecord, folder: R, top: &str) -> Self {
        let lines = BufReader::with_capacity(
            256 << 10,
            flate2::read::GzDecoder::new(io::Cursor::new(record.tar_split_gz)),
        );
        Self {
            inner: tar_split::Assembler::with_files(
                lines,
                archived::ArchivedFiles::new(folder, top),
            ),
        }
    }
}

impl<R: Read> std::fmt::Debug for ArchivedLayerTar<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchivedLayerTar").finish_non_exhaustive()
    }
}

impl<R: Read> Read for ArchivedLayerTar<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// A layer's tar rebuilt from the layer store (see
/// [`LayerStore::layer_tar`]).
pub struct LayerTar {
    inner: tar_split::Assembler<BufReader<flate2::read::GzDecoder<BufReader<File>>>>,
}

impl LayerTar {
    /// The tar the gzipped tar-split stream `split` describes, its files'
    /// data read from `folder` (opened here; read as the tar is).
    pub(crate) fn rebuild(split: &Path, folder: PathBuf) -> Result<Self, DataRootError> {
        let file = File::open(split).map_err(|source| DataRootError::Read {
            path: split.to_owned(),
            source,
        })?;
        let lines = BufReader::with_capacity(
            256 << 10,
            flate2::read::GzDecoder::new(BufReader::new(file)),
        );
        Ok(Self {
            inner: tar_split::Assembler::new(lines, folder),
        })
    }
}

impl std::fmt::Debug for LayerTar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerTar").finish_non_exhaustive()
    }
}

impl Read for LayerTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// The 64 hex digits of `sha256:<hex>` (or bare hex).
pub(crate) fn hex_of(id: &str) -> Result<&str, DataRootError> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(DataRootError::NotADigest {
            digest: id.to_owned(),
        })
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, DataRootError> {
    std::fs::read(path).map_err(|source| DataRootError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, DataRootError> {
    let bytes = read(path)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

#[cfg(test)]
pub(crate) mod tests;
