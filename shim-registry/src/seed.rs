//! Seeding: content in storage before the first request, and a repository
//! taken back out.
//!
//! [`import`] reads an [OCI image layout] (a directory, or a tar of one) or a
//! `docker save` archive (the legacy `manifest.json` with `<id>/layer.tar`,
//! and Docker 25+'s OCI-layout save) into any [`Storage`], as repositories
//! and tags. Blobs stream from the files into storage, verified against
//! their digests; an archive is read in place, never extracted.
//! [`export_oci_layout`] writes a repository (every tag) as an OCI image
//! layout directory, all at once or not at all.
//!
//! Names come from the content: `io.containerd.image.name` or
//! `org.opencontainers.image.ref.name` annotations in `index.json`, or
//! `RepoTags` in `manifest.json` (`docker.io/library/busybox:1` is stored as
//! repository `library/busybox`, tag `1`). [`ImportOptions::repository`]
//! puts everything into one repository instead, keeping the tags.
//!
//! ```no_run
//! # async fn f() -> Result<(), shim_registry::seed::SeedError> {
//! use shim_registry::seed::{self, ImportOptions};
//! use shim_registry::storage::MemoryStorage;
//!
//! let storage = MemoryStorage::new();
//! let report = seed::import(&storage, "busybox.tar", &ImportOptions::default()).await?;
//! for image in &report.images {
//!     println!("{}:{:?} = {}", image.repository, image.tags, image.digest);
//! }
//! seed::export_oci_layout(&storage, "library/busybox", "busybox-layout").await?;
//! # Ok(())
//! # }
//! ```
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/v1.1.1/image-layout.md

mod source;

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use futures_util::TryStreamExt;
use oci_spec::image::{Digest, DigestAlgorithm};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::storage::hashing::{BlobHasher, digest_of};
use crate::storage::{Reference, Storage, StorageError, StoredManifest};
use crate::wire::{valid_name, valid_tag};
use source::Source;

/// The largest `index.json`, `manifest.json`, config or manifest read.
const MAX_JSON: u64 = 32 << 20;
/// How deep indexes may nest.
const MAX_DEPTH: usize = 8;
/// Read size when streaming blobs.
const CHUNK: usize = 256 << 10;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// How [`import`] names what it stores.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Store every image in this repository (keeping the tags the content
    /// names); needed when the content names no repository.
    pub repository: Option<String>,
}

impl ImportOptions {
    /// Every image into `repository`.
    pub fn repository(mut self, repository: impl Into<String>) -> Self {
        self.repository = Some(repository.into());
        self
    }
}

/// An image [`import`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeededImage {
    /// The repository it is in.
    pub repository: String,
    /// Its tags there (empty: reachable by digest only).
    pub tags: Vec<String>,
    /// The digest of its manifest (or index).
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
}

/// What [`import`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// The images stored, in the order the content lists them.
    pub images: Vec<SeededImage>,
    /// Blobs written into storage.
    pub blobs_stored: usize,
    /// Blobs storage held already (not written again).
    pub blobs_present: usize,
    /// Blobs and manifests the content refers to but does not hold (e.g.
    /// other platforms of an index saved for one); logged, not fatal.
    pub missing: Vec<Digest>,
}

/// What [`export_oci_layout`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// The tags listed in `index.json`.
    pub tags: Vec<String>,
    /// Manifests and indexes written.
    pub manifests: usize,
    /// Other blobs written.
    pub blobs: usize,
    /// Blob bytes written (manifests included).
    pub bytes: u64,
    /// Blobs and manifests referred to but not in storage; left out.
    pub missing: Vec<Digest>,
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file (`archive:inner/path` inside an archive).
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file the content needs is not there.
    #[error("{path} is missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Neither a directory nor a tar archive holding `index.json` or
    /// `manifest.json`.
    #[error("{path} is neither an OCI image layout nor a docker save archive")]
    NotALayout {
        /// What was given.
        path: PathBuf,
    },
    /// The file is not a tar archive.
    #[error("{path} is not a tar archive")]
    NotAnArchive {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The archive is compressed; only plain tar is read.
    #[error("{path} is compressed; decompress it first (e.g. gunzip)")]
    Compressed {
        /// The file.
        path: PathBuf,
    },
    /// A JSON file is larger than seeding reads.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A JSON file does not hold what its place says.
    #[error("{path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A blob's content does not have the digest it is stored under.
    #[error("{path} has digest {actual}, not {expected}")]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// An image names no repository and none was given.
    #[error(
        "image {image} names no repository; give one (ImportOptions::repository, --seed PATH=REPO)"
    )]
    NoRepository {
        /// The image's manifest digest or config file.
        image: String,
    },
    /// A repository name or tag is not valid by the distribution spec.
    #[error("{name:?} is not a valid repository name or tag")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The repository to export has no manifest.
    #[error("repository {repository} is unknown")]
    UnknownRepository {
        /// The repository.
        repository: String,
    },
    /// The export's output exists and is not an empty directory.
    #[error("{path} already exists and is not an empty directory")]
    OutputExists {
        /// The output.
        path: PathBuf,
    },
    /// Writing the export failed (nothing was left behind).
    #[error("cannot write {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Storage failed.
    #[error("storage failed")]
    Storage {
        /// Why.
        #[from]
        source: StorageError,
    },
}

/// Imports an OCI image layout or a `docker save` archive at `path` (a
/// directory or a plain tar) into `storage`; see the [module docs](self).
///
/// What was stored before an error stays stored (every blob and manifest
/// stored is complete and verified).
pub async fn import(
    storage: &dyn Storage,
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ImportReport, SeedError> {
    let path = path.as_ref();
    if let Some(repo) = &options.repository
        && !valid_name(repo)
    {
        return Err(SeedError::InvalidName { name: repo.clone() });
    }
    let source = Source::open(path).await?;
    let mut importer = Importer {
        storage,
        source: &source,
        report: ImportReport::default(),
    };
    if source.exists("index.json").await {
        importer.layout(options).await?;
    } else if source.exists("manifest.json").await {
        importer.legacy(options).await?;
    } else {
        return Err(SeedError::NotALayout {
            path: path.to_owned(),
        });
    }
    let report = importer.report;
    tracing::info!(
        path = %path.display(),
        images = report.images.len(),
        blobs_stored = report.blobs_stored,
        blobs_present = report.blobs_present,
        missing = report.missing.len(),
        "seeded"
    );
    Ok(report)
}

/// Splits an image reference into repository and tag, dropping a registry
/// host (`docker.io/library/x:1` → `library/x`, `1`) and a digest.
fn parse_image_ref(reference: &str) -> Option<(String, Option<String>)> {
    let reference = reference.split('@').next()?;
    let (name, tag) = match reference.rfind(':') {
        Some(i) if !reference[i + 1..].contains('/') => {
            (&reference[..i], Some(reference[i + 1..].to_owned()))
        }
        _ => (reference, None),
    };
    let name = match name.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => name,
    };
    (valid_name(name) && tag.as_deref().is_none_or(valid_tag)).then(|| (name.to_owned(), tag))
}

/// The archive path of a blob.
fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.digest())
}

/// A digest this crate can verify, from JSON.
fn json_digest(value: &Value) -> Option<Digest> {
    let d = Digest::try_from(value.as_str()?).ok()?;
    matches!(
        d.algorithm(),
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha384 | DigestAlgorithm::Sha512
    )
    .then_some(d)
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

struct Importer<'a> {
    storage: &'a dyn Storage,
    source: &'a Source,
    report: ImportReport,
}

/// One manifest named at the top of `index.json`, with all its tags.
struct Named {
    repository: String,
    digest: Digest,
    media_type: Option<String>,
    tags: Vec<String>,
}

impl Importer<'_> {
    fn invalid(&self, inner: &str, reason: impl Into<String>) -> SeedError {
        SeedError::Invalid {
            path: self.source.display(inner),
            reason: reason.into(),
        }
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        inner: &str,
    ) -> Result<(Vec<u8>, T), SeedError> {
        let bytes = self.source.read_small(inner, MAX_JSON).await?;
        let value =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid(inner, e.to_string()))?;
        Ok((bytes, value))
    }

    /// An OCI image layout: `index.json` and `blobs/`.
    async fn layout(&mut self, options: &ImportOptions) -> Result<(), SeedError> {
        let (_, index): (_, Value) = self.read_json("index.json").await?;
        let descriptors = index
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| self.invalid("index.json", "no manifests list"))?;
        let mut named: Vec<Named> = Vec::new();
        for d in descriptors {
            let digest = d
                .get("digest")
                .and_then(json_digest)
                .ok_or_else(|| self.invalid("index.json", "a manifest without a valid digest"))?;
            let annotation =
                |key: &str| d.pointer(&format!("/annotations/{}", key.replace('/', "~1")));
            let (mut repository, mut tag) = (None, None);
            if let Some(full) = annotation(ANNOTATION_CONTAINERD_NAME).and_then(Value::as_str) {
                let (r, t) = parse_image_ref(full).ok_or_else(|| SeedError::InvalidName {
                    name: full.to_owned(),
                })?;
                (repository, tag) = (Some(r), t);
            } else if let Some(name) = annotation(ANNOTATION_REF_NAME).and_then(Value::as_str) {
                if name.contains(['/', ':']) {
                    let (r, t) = parse_image_ref(name).ok_or_else(|| SeedError::InvalidName {
                        name: name.to_owned(),
                    })?;
                    (repository, tag) = (Some(r), t);
                } else if valid_tag(name) {
                    tag = Some(name.to_owned());
                } else {
                    return Err(SeedError::InvalidName {
                        name: name.to_owned(),
                    });
                }
            }
            let repository = options.repository.clone().or(repository).ok_or_else(|| {
                SeedError::NoRepository {
                    image: digest.to_string(),
                }
            })?;
            let media_type = d
                .get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match named
                .iter_mut()
                .find(|n| n.repository == repository && n.digest == digest)
            {
                Some(n) => {
                    if let Some(t) = tag
                        && !n.tags.contains(&t)
                    {
                        n.tags.push(t);
                    }
                }
                None => named.push(Named {
                    repository,
                    digest,
                    media_type,
                    tags: tag.into_iter().collect(),
                }),
            }
        }
        for n in named {
            let media_type = self
                .manifest(&n.repository, &n.digest, n.media_type, &n.tags, 0)
                .await?;
            self.report.images.push(SeededImage {
                repository: n.repository,
                tags: n.tags,
                digest: n.digest,
                media_type,
            });
        }
        Ok(())
    }

    /// Stores a manifest from `blobs/` with what it refers to (children
    /// first); returns its media type.
    fn manifest<'s>(
        &'s mut self,
        repository: &'s str,
        digest: &'s Digest,
        media_type: Option<String>,
        tags: &'s [String],
        depth: usize,
    ) -> BoxFuture<'s, Result<String, SeedError>> {
        Box::pin(async move {
            let inner = blob_path(digest);
            let body = self.source.read_small(&inner, MAX_JSON).await?;
            let actual = digest_of(digest.algorithm(), &body)?;
            if actual != *digest {
                return Err(SeedError::DigestMismatch {
                    path: self.source.display(&inner),
                    expected: digest.clone(),
                    actual,
                });
            }
            let value: Value =
                serde_json::from_slice(&body).map_err(|e| self.invalid(&inner, e.to_string()))?;
            let media_type = value
                .get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(media_type)
                .unwrap_or_else(|| {
                    if value.get("manifests").is_some() {
                        OCI_INDEX
                    } else {
                        OCI_MANIFEST
                    }
                    .to_owned()
                });
            if let Some(children) = value.get("manifests").and_then(Value::as_array) {
                if depth >= MAX_DEPTH {
                    return Err(self.invalid(&inner, "indexes nested too deep"));
                }
                for child in children {
                    let d = child
                        .get("digest")
                        .and_then(json_digest)
                        .ok_or_else(|| self.invalid(&inner, "a child without a valid digest"))?;
                    if self.source.exists(&blob_path(&d)).await {
                        let child_type = child
                            .get("mediaType")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        self.manifest(repository, &d, child_type, &[], depth + 1)
                            .await?;
                    } else if self
                        .storage
                        .get_manifest(repository, &Reference::Digest(d.clone()))
                        .await?
                        .is_none()
                    {
                        tracing::warn!(index = %digest, child = %d, "child manifest not in the seed; left out");
                        self.report.missing.push(d);
                    }
                }
            } else {
                let mut blobs = Vec::new();
                if let Some(config) = value.get("config") {
                    blobs.push(config);
                }
                if let Some(layers) = value.get("layers").and_then(Value::as_array) {
                    // Foreign layers (with `urls`) live elsewhere.
                    blobs.extend(layers.iter().filter(|l| {
                        l.get("urls")
                            .and_then(Value::as_array)
                            .is_none_or(Vec::is_empty)
                    }));
                }
                for b in blobs {
                    let d = b
                        .get("digest")
                        .and_then(json_digest)
                        .ok_or_else(|| self.invalid(&inner, "a blob without a valid digest"))?;
                    self.blob_from_layout(repository, &d).await?;
                }
            }
            let subject = value.pointer("/subject/digest").and_then(json_digest);
            let stored = StoredManifest::new(media_type.clone(), Bytes::from(body), subject);
            self.storage
                .put_manifest(repository, digest, stored, tags)
                .await?;
            tracing::debug!(repository, %digest, ?tags, "seeded manifest");
            Ok(media_type)
        })
    }

    /// Stores the blob `blobs/<alg>/<hex>` unless storage has it.
    async fn blob_from_layout(
        &mut self,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), SeedError> {
        if self.storage.stat_blob(digest).await?.is_some() {
            self.report.blobs_present += 1;
            return Ok(());
        }
        let inner = blob_path(digest);
        if !self.source.exists(&inner).await {
            tracing::warn!(%digest, "blob not in the seed; left out");
            self.report.missing.push(digest.clone());
            return Ok(());
        }
        let (reader, _) = self.source.open_file(&inner).await?;
        self.upload(repository, digest, reader, &inner).await
    }

    /// Streams `reader` into storage as `digest`.
    async fn upload(
        &mut self,
        repository: &str,
        digest: &Digest,
        reader: impl AsyncRead + Send + Unpin + 'static,
        inner: &str,
    ) -> Result<(), SeedError> {
        let id = self.storage.create_upload(repository).await?;
        let stream = ReaderStream::with_capacity(reader, CHUNK).map_ok(Bytes::from);
        self.storage
            .append_upload(repository, &id, Box::pin(stream))
            .await
            .map_err(|e| match e {
                StorageError::Incoming { source } => SeedError::Read {
                    path: self.source.display(inner),
                    source,
                },
                e => e.into(),
            })?;
        match self.storage.commit_upload(repository, &id, digest).await {
            Ok(_) => {}
            Err(StorageError::DigestMismatch { expected, actual }) => {
                return Err(SeedError::DigestMismatch {
                    path: self.source.display(inner),
                    expected,
                    actual,
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.report.blobs_stored += 1;
        Ok(())
    }

    /// A `docker save` archive without `index.json`: `manifest.json`, each
    /// image's config and `layer.tar`s, made into an OCI image manifest.
    async fn legacy(&mut self, options: &ImportOptions) -> Result<(), SeedError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let (_, entries): (_, Vec<Entry>) = self.read_json("manifest.json").await?;
        for entry in entries {
            // Where each image goes: (repository, tags).
            let mut targets: Vec<(String, Vec<String>)> = Vec::new();
            for full in entry.repo_tags.iter().flatten() {
                let (repo, tag) = parse_image_ref(full)
                    .ok_or_else(|| SeedError::InvalidName { name: full.clone() })?;
                let repo = options.repository.clone().unwrap_or(repo);
                let tags = match targets.iter_mut().find(|(r, _)| *r == repo) {
                    Some((_, tags)) => tags,
                    None => {
                        targets.push((repo, Vec::new()));
                        &mut targets.last_mut().expect("just pushed").1
                    }
                };
                if let Some(t) = tag
                    && !tags.contains(&t)
                {
                    tags.push(t);
                }
            }
            if targets.is_empty() {
                let repo = options
                    .repository
                    .clone()
                    .ok_or_else(|| SeedError::NoRepository {
                        image: entry.config.clone(),
                    })?;
                targets.push((repo, Vec::new()));
            }
            let first = targets[0].0.clone();
            let config = self.source.read_small(&entry.config, MAX_JSON).await?;
            let config_digest = digest_of(&DigestAlgorithm::Sha256, &config)?;
            let config_size = config.len();
            if self.storage.stat_blob(&config_digest).await?.is_some() {
                self.report.blobs_present += 1;
            } else {
                self.upload(
                    &first,
                    &config_digest,
                    io::Cursor::new(config),
                    &entry.config,
                )
                .await?;
            }
            let mut layers = Vec::new();
            for path in &entry.layers {
                let (digest, size, media_type) = self.hash_layer(path).await?;
                if self.storage.stat_blob(&digest).await?.is_some() {
                    self.report.blobs_present += 1;
                } else {
                    let (reader, _) = self.source.open_file(path).await?;
                    self.upload(&first, &digest, reader, path).await?;
                }
                layers.push(
                    json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size }),
                );
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": { "mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size },
                "layers": layers,
            });
            let body = Bytes::from(serde_json::to_vec(&manifest).expect("json serializes"));
            let digest = digest_of(&DigestAlgorithm::Sha256, &body)?;
            for (repository, tags) in targets {
                let stored = StoredManifest::new(OCI_MANIFEST, body.clone(), None);
                self.storage
                    .put_manifest(&repository, &digest, stored, &tags)
                    .await?;
                self.report.images.push(SeededImage {
                    repository,
                    tags,
                    digest: digest.clone(),
                    media_type: OCI_MANIFEST.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// A layer file's sha256, size and media type (by its first bytes).
    async fn hash_layer(&self, inner: &str) -> Result<(Digest, u64, &'static str), SeedError> {
        let (mut reader, _) = self.source.open_file(inner).await?;
        let mut hasher = BlobHasher::sha256();
        let mut buf = vec![0u8; CHUNK];
        let mut head = Vec::new();
        let mut size = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|source| SeedError::Read {
                    path: self.source.display(inner),
                    source,
                })?;
            if n == 0 {
                break;
            }
            if head.len() < 4 {
                head.extend_from_slice(&buf[..n.min(4 - head.len())]);
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let media_type = if head.starts_with(&[0x1f, 0x8b]) {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            OCI_LAYER
        };
        Ok((hasher.finish(), size, media_type))
    }
}

/// Writes every tag of `repository` in `storage`, with the manifests, indexes
/// and blobs they refer to, as an OCI image layout at `dir`.
///
/// `dir` must not exist or be an empty directory. The layout is made beside
/// it and renamed into place, so `dir` holds either the whole layout or
/// nothing. Every blob is verified against its digest as it is copied.
pub async fn export_oci_layout(
    storage: &dyn Storage,
    repository: &str,
    dir: impl AsRef<Path>,
) -> Result<ExportReport, SeedError> {
    let dir = dir.as_ref();
    let tags =
        storage
            .list_tags(repository)
            .await?
            .ok_or_else(|| SeedError::UnknownRepository {
                repository: repository.to_owned(),
            })?;
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| SeedError::Write { path, source }
    };
    match tokio::fs::read_dir(dir).await {
        Ok(mut rd) => {
            if rd.next_entry().await.map_err(write_error(dir))?.is_some() {
                return Err(SeedError::OutputExists {
                    path: dir.to_owned(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(SeedError::OutputExists {
                path: dir.to_owned(),
            });
        }
        Err(e) => return Err(write_error(dir)(e)),
    }
    let name = dir
        .file_name()
        .ok_or_else(|| SeedError::OutputExists {
            path: dir.to_owned(),
        })?
        .to_string_lossy();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = TempDir(parent.join(format!(".{name}.partial-{}", uuid::Uuid::new_v4())));
    tokio::fs::create_dir_all(&temp.0)
        .await
        .map_err(write_error(&temp.0))?;
    let mut exporter = Exporter {
        storage,
        repository,
        root: &temp.0,
        written: HashSet::new(),
        report: ExportReport::default(),
    };
    let mut descriptors = Vec::new();
    for tag in &tags {
        let Some((digest, manifest)) = storage
            .get_manifest(repository, &Reference::Tag(tag.clone()))
            .await?
        else {
            continue; // deleted meanwhile
        };
        exporter.manifest(&digest, &manifest, 0).await?;
        descriptors.push(json!({
            "mediaType": manifest.media_type,
            "digest": digest.to_string(),
            "size": manifest.body.len(),
            "annotations": {
                ANNOTATION_REF_NAME: tag,
                ANNOTATION_CONTAINERD_NAME: format!("{repository}:{tag}"),
            },
        }));
        exporter.report.tags.push(tag.clone());
    }
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors });
    let files = [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        (
            "index.json",
            serde_json::to_vec(&index).expect("json serializes"),
        ),
    ];
    for (file, body) in files {
        let path = temp.0.join(file);
        tokio::fs::write(&path, body)
            .await
            .map_err(write_error(&path))?;
    }
    let report = exporter.report;
    // `rename` replaces an empty directory.
    tokio::fs::rename(&temp.0, dir)
        .await
        .map_err(write_error(dir))?;
    std::mem::forget(temp);
    tracing::info!(
        repository,
        dir = %dir.display(),
        tags = report.tags.len(),
        manifests = report.manifests,
        blobs = report.blobs,
        "exported"
    );
    Ok(report)
}

/// Removes an unfinished export.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Exporter<'a> {
    storage: &'a dyn Storage,
    repository: &'a str,
    root: &'a Path,
    written: HashSet<Digest>,
    report: ExportReport,
}

impl Exporter<'_> {
    fn path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    async fn write(&mut self, digest: &Digest, body: &[u8]) -> Result<(), SeedError> {
        let path = self.path(digest);
        let error = |path: &Path| {
            let path = path.to_owned();
            move |source| SeedError::Write { path, source }
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(error(parent))?;
        }
        tokio::fs::write(&path, body).await.map_err(error(&path))?;
        self.report.bytes += body.len() as u64;
        Ok(())
    }

    /// Writes a manifest and, before it, what it refers to.
    fn manifest<'s>(
        &'s mut self,
        digest: &'s Digest,
        manifest: &'s StoredManifest,
        depth: usize,
    ) -> BoxFuture<'s, Result<(), SeedError>> {
        Box::pin(async move {
            if !self.written.insert(digest.clone()) {
                return Ok(());
            }
            let value: Value = serde_json::from_slice(&manifest.body).unwrap_or(Value::Null);
            if let Some(children) = value.get("manifests").and_then(Value::as_array) {
                for d in children
                    .iter()
                    .filter_map(|c| c.get("digest").and_then(json_digest))
                {
                    let child = self
                        .storage
                        .get_manifest(self.repository, &Reference::Digest(d.clone()))
                        .await?;
                    match child {
                        Some((d, m)) if depth < MAX_DEPTH => {
                            self.manifest(&d, &m, depth + 1).await?
                        }
                        _ => {
                            tracing::warn!(index = %digest, child = %d, "child manifest not stored; left out");
                            self.report.missing.push(d);
                        }
                    }
                }
            } else {
                let mut blobs: Vec<Digest> = Vec::new();
                if let Some(d) = value.pointer("/config/digest").and_then(json_digest) {
                    blobs.push(d);
                }
                for layer in value
                    .get("layers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let foreign = layer
                        .get("urls")
                        .and_then(Value::as_array)
                        .is_some_and(|u| !u.is_empty());
                    if let Some(d) = layer.get("digest").and_then(json_digest)
                        && !foreign
                    {
                        blobs.push(d);
                    }
                }
                for d in blobs {
                    self.blob(&d).await?;
                }
            }
            self.write(digest, &manifest.body).await?;
            self.report.manifests += 1;
            Ok(())
        })
    }

    /// Copies a blob out of storage, verifying its digest.
    async fn blob(&mut self, digest: &Digest) -> Result<(), SeedError> {
        if !self.written.insert(digest.clone()) {
            return Ok(());
        }
        let Some(mut reader) = self.storage.open_blob(digest).await? else {
            tracing::warn!(%digest, "blob not stored; left out");
            self.report.missing.push(digest.clone());
            return Ok(());
        };
        let path = self.path(digest);
        let error = |path: &Path| {
            let path = path.to_owned();
            move |source| SeedError::Write { path, source }
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(error(parent))?;
        }
        let mut file = tokio::fs::File::create(&path).await.map_err(error(&path))?;
        let mut hasher = BlobHasher::new(digest.algorithm())?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|source| SeedError::Storage {
                    source: StorageError::Backend {
                        source: Box::new(source),
                    },
                })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await.map_err(error(&path))?;
            self.report.bytes += n as u64;
        }
        file.flush().await.map_err(error(&path))?;
        let actual = hasher.finish();
        if actual != *digest {
            return Err(SeedError::DigestMismatch {
                path: path.clone(),
                expected: digest.clone(),
                actual,
            });
        }
        self.report.blobs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(reference: &str, expected: Option<(&str, Option<&str>)>) {
        let got = parse_image_ref(reference);
        let got = got.as_ref().map(|(r, t)| (r.as_str(), t.as_deref()));
        assert_eq!(got, expected, "{reference}");
    }

    #[test]
    fn image_references() {
        check("busybox:latest", Some(("busybox", Some("latest"))));
        check("busybox", Some(("busybox", None)));
        check(
            "docker.io/library/busybox:1.36",
            Some(("library/busybox", Some("1.36"))),
        );
        check("localhost:5000/a/b:v1", Some(("a/b", Some("v1"))));
        check("localhost/a", Some(("a", None)));
        check("team/app:x@sha256:abcd", Some(("team/app", Some("x"))));
        check("Upper:x", None);
        check("a:-bad", None);
    }
}
