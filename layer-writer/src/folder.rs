//! The images a [`Format::Seed`] or [`Format::Oci`] folder describes, and
//! the lock that serialises rewriting its top-level files.
//!
//! A folder is a small image archive that only grows: each run that writes
//! a layer records the image it belongs to in `.dlgrab/images/<config
//! hex>.json`, and the top-level files (`manifest.json`, `index.json`,
//! `repositories`) are rebuilt from every record, whatever order the runs
//! came in. A tag names one image: recording an image takes its tags away
//! from the others, as a daemon moves a tag. Records and top-level files are
//! only written under an exclusive `flock` on `.dlgrab/lock`, so runs
//! writing into one folder at once leave it consistent.
//!
//! A folder written before records existed (or a `docker save` tree) gets
//! records from its `manifest.json` the first time a layer is written.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::io_err;
use crate::{BlobRef, ImageContext, WriteError, fsx, layout, v1};

/// Hidden folder of dlgrab's own bookkeeping inside an output folder.
pub(crate) const STATE_DIR: &str = ".dlgrab";

/// What a folder remembers of one image exported into it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct ImageRecord {
    /// `sha256:<hex>` of the config, stored as `blobs/sha256/<hex>`.
    config: String,
    repo_tags: Vec<String>,
    layer_ids: Vec<String>,
    compressed: Vec<Option<BlobRecord>>,
    manifest: Option<ManifestRecord>,
    /// The index the image ID names, whose entry `manifest` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<ManifestRecord>,
    repository: String,
    tag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct BlobRecord {
    digest: String,
    size: u64,
    media_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct ManifestRecord {
    media_type: String,
    /// The manifest's bytes (JSON text) exactly as pushed.
    body: String,
}

impl ManifestRecord {
    /// A manifest or index (media type, bytes) as recorded; `None` when its
    /// bytes are not UTF-8 (never JSON then).
    fn of((media_type, body): &(String, Vec<u8>)) -> Option<Self> {
        Some(Self {
            media_type: media_type.clone(),
            body: String::from_utf8(body.clone()).ok()?,
        })
    }

    fn bytes(&self) -> (String, Vec<u8>) {
        (self.media_type.clone(), self.body.clone().into_bytes())
    }
}

/// An exclusive hold on a folder's top-level files: the writer's own mutex
/// (threads of this process) and a `flock` (other processes).
pub(crate) struct FolderLock<'a> {
    _file: fs::File,
    _guard: MutexGuard<'a, ()>,
}

impl<'a> FolderLock<'a> {
    /// Waits for the folder's lock, creating the state folder when missing.
    pub(crate) fn acquire(root: &Path, mutex: &'a Mutex<()>) -> Result<Self, WriteError> {
        let guard = mutex.lock().unwrap_or_else(|e| e.into_inner());
        let dir = root.join(STATE_DIR);
        fsx::mkdirs(&dir)?;
        let path = dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(&path)(e.into()))?;
        Ok(Self {
            _file: file,
            _guard: guard,
        })
    }
}

/// Records `image` (merged with what the folder knew of it) and returns
/// every image the folder describes. Call with the [`FolderLock`] held.
pub(crate) fn record(root: &Path, image: &ImageContext) -> Result<Vec<ImageContext>, WriteError> {
    let dir = images_dir(root);
    // The config first: records name it, and are read back through it.
    let cfg_blob = layout::oci_blob(root, &image.config_digest());
    if fs::read(&cfg_blob).ok().as_deref() != Some(&image.config_json[..]) {
        fsx::write_atomic(&cfg_blob, &image.config_json)?;
    }
    let mut records = load(root)?;
    if records.is_empty() {
        records = import_manifest_json(root);
    }
    let config = image.config_digest().to_string();
    let mut new = ImageRecord::from_context(image);
    if let Some(old) = records.iter().find(|r| r.config == config) {
        new = merge(root, old, new);
    }
    for other in records.iter_mut().filter(|r| r.config != config) {
        let before = other.repo_tags.len();
        other.repo_tags.retain(|t| !new.repo_tags.contains(t));
        if other.repo_tags.len() != before {
            tracing::debug!(image = %other.config, "tags moved to {config}");
            write_record(&dir, other)?;
        }
    }
    write_record(&dir, &new)?;
    records.retain(|r| r.config != config);
    records.push(new);
    Ok(records
        .iter()
        .filter_map(|r| match r.to_context(root) {
            Ok(c) => Some(c),
            Err(reason) => {
                tracing::warn!(image = %r.config, reason, "image record skipped");
                None
            }
        })
        .collect())
}

fn images_dir(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join("images")
}

fn load(root: &Path) -> Result<Vec<ImageRecord>, WriteError> {
    let dir = images_dir(root);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut records = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(&dir))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        match serde_json::from_slice::<ImageRecord>(&bytes) {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable image record skipped")
            }
        }
    }
    records.sort_by(|a, b| a.config.cmp(&b.config));
    Ok(records)
}

fn write_record(dir: &Path, record: &ImageRecord) -> Result<(), WriteError> {
    let hex = record.config.split_once(':').map_or("", |(_, h)| h);
    let mut bytes = serde_json::to_vec_pretty(record).expect("a record serialises");
    bytes.push(b'\n');
    fsx::write_atomic(&dir.join(format!("{hex}.json")), &bytes)
}

/// The new record of an image the folder knew: layer folders already there
/// keep their names, known blobs and tags are kept, the new manifest wins.
fn merge(root: &Path, old: &ImageRecord, mut new: ImageRecord) -> ImageRecord {
    if old.layer_ids.len() == new.layer_ids.len() {
        for (i, id) in new.layer_ids.iter_mut().enumerate() {
            let here = |id: &str| !id.is_empty() && root.join(id).join("layer.tar").is_file();
            if !here(id) && here(&old.layer_ids[i]) {
                id.clone_from(&old.layer_ids[i]);
            }
        }
    }
    if old.compressed.len() == new.compressed.len() {
        for (n, o) in new.compressed.iter_mut().zip(&old.compressed) {
            if n.is_none() {
                n.clone_from(o);
            }
        }
    }
    if new.manifest.is_none() {
        new.manifest.clone_from(&old.manifest);
        new.index.clone_from(&old.index);
    }
    for t in &old.repo_tags {
        if !new.repo_tags.contains(t) {
            new.repo_tags.push(t.clone());
        }
    }
    new
}

impl ImageRecord {
    fn from_context(image: &ImageContext) -> Self {
        Self {
            config: image.config_digest().to_string(),
            repo_tags: image.repo_tags.clone(),
            layer_ids: image.layer_ids.clone(),
            compressed: image
                .compressed
                .iter()
                .map(|c| {
                    c.as_ref().map(|c| BlobRecord {
                        digest: c.digest.to_string(),
                        size: c.size,
                        media_type: c.media_type.clone(),
                    })
                })
                .collect(),
            manifest: image.manifest.as_ref().and_then(ManifestRecord::of),
            index: image.index.as_ref().and_then(ManifestRecord::of),
            repository: image.repository.clone(),
            tag: image.tag.clone(),
        }
    }

    fn to_context(&self, root: &Path) -> Result<ImageContext, &'static str> {
        let config: Digest = self.config.parse().map_err(|_| "malformed config digest")?;
        let config_json =
            fs::read(layout::oci_blob(root, &config)).map_err(|_| "config blob missing")?;
        if digest_of_reader(&config_json[..]).ok() != Some(config.clone()) {
            return Err("config blob does not match its digest");
        }
        let count = crate::config_diff_ids(
            &serde_json::from_slice(&config_json).map_err(|_| "config is not JSON")?,
        )
        .map_err(|_| "config has no diff ids")?
        .len();
        let mut layer_ids = self.layer_ids.clone();
        if layer_ids.len() != count {
            layer_ids = v1::v1_layer_ids(&config_json).map_err(|_| "config unreadable")?;
        }
        let mut compressed: Vec<Option<BlobRef>> = self
            .compressed
            .iter()
            .map(|c| {
                let c = c.as_ref()?;
                Some(BlobRef {
                    digest: c.digest.parse().ok()?,
                    size: c.size,
                    media_type: c.media_type.clone(),
                })
            })
            .collect();
        compressed.resize(count, None);
        Ok(ImageContext {
            config_json,
            repo_tags: self.repo_tags.clone(),
            layer_ids,
            compressed,
            manifest: self.manifest.as_ref().map(ManifestRecord::bytes),
            index: self.index.as_ref().map(ManifestRecord::bytes),
            repository: self.repository.clone(),
            tag: self.tag.clone(),
        })
    }
}

/// Records for the images a `manifest.json` written before records existed
/// lists (an older dlgrab's folder, or an unpacked `docker save`).
fn import_manifest_json(root: &Path) -> Vec<ImageRecord> {
    let Ok(bytes) = fs::read(root.join("manifest.json")) else {
        return Vec::new();
    };
    let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(&bytes) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in entries {
        let Some(config_path) = entry["Config"].as_str().and_then(|p| safe_join(root, p)) else {
            continue;
        };
        let Ok(config_json) = fs::read(&config_path) else {
            continue;
        };
        let Ok(stable) = v1::v1_layer_ids(&config_json) else {
            continue;
        };
        let layer_ids: Vec<String> = entry["Layers"]
            .as_array()
            .map(|layers| {
                layers
                    .iter()
                    .zip(&stable)
                    .map(|(l, s)| {
                        l.as_str()
                            .and_then(|p| p.strip_suffix("/layer.tar"))
                            .filter(|id| id.len() == 64 && !id.contains('/'))
                            .map_or_else(|| s.clone(), str::to_owned)
                    })
                    .collect()
            })
            .filter(|ids: &Vec<String>| ids.len() == stable.len())
            .unwrap_or(stable);
        let repo_tags: Vec<String> = entry["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        let Ok(mut image) = ImageContext::from_config(config_json, repo_tags) else {
            continue;
        };
        image.layer_ids = layer_ids;
        // The config must be where records look for it.
        let blob = layout::oci_blob(root, &image.config_digest());
        if !blob.is_file() && fsx::write_atomic(&blob, &image.config_json).is_err() {
            continue;
        }
        tracing::debug!(config = %image.config_digest(), "image imported from manifest.json");
        records.push(ImageRecord::from_context(&image));
    }
    records
}

/// `root/rel` when `rel` is a plain relative path inside `root`.
fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| root.join(p))
}

/// sha256 of everything `reader` yields.
pub(crate) fn digest_of_reader(mut reader: impl Read) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::pipeline::to_digest(hasher))
}

/// Whether the file at `path` exists and hashes to `digest`.
pub(crate) fn file_holds(path: &Path, digest: &Digest) -> bool {
    fs::File::open(path)
        .and_then(digest_of_reader)
        .is_ok_and(|d| &d == digest)
}
