//! Storage in a directory.
//!
//! Layout under the root:
//! - `blobs/<algorithm>/<hex>`: blob data;
//! - `uploads/<id>`: data of open upload sessions, and temporary files
//!   (everything here is removed when the storage is opened);
//! - `repositories/<name>/_manifests/<algorithm>/<hex>`: manifest bytes, with
//!   `<hex>.meta` beside it (media type and subject, JSON);
//! - `repositories/<name>/_tags/<tag>`: the digest the tag points at.
//!
//! Every file is written under `uploads/` first and renamed into place, so a
//! reader never sees a partial file. Repository name components cannot start
//! with `_`, so `_manifests` and `_tags` never collide with names.

use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::hashing::BlobHasher;
use super::{BlobReader, ByteStream, Reference, Storage, StorageError, StoredManifest};

/// Frames buffered between the request and the writer thread.
const WRITE_QUEUE: usize = 16;
/// Write buffer of an upload in progress.
const WRITE_BUFFER: usize = 1 << 20;

/// Keeps everything in a directory; blobs are streamed to and from files.
#[derive(Debug, Clone)]
pub struct FsStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    uploads: Mutex<HashMap<String, Upload>>,
}

#[derive(Debug)]
struct Upload {
    repository: String,
    /// `None` while a request appends to it or commits it.
    data: Option<OpenUpload>,
    touched: Instant,
}

#[derive(Debug)]
struct OpenUpload {
    file: std::fs::File,
    hasher: BlobHasher,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestMeta {
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Digest>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FsStorage {
    /// Opens (creating if needed) a storage rooted at `root`, discarding the
    /// upload sessions a previous process left behind.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        for sub in ["blobs", "repositories"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io_error(&p))?;
        }
        let uploads = root.join("uploads");
        if uploads.exists() {
            std::fs::remove_dir_all(&uploads).map_err(io_error(&uploads))?;
        }
        std::fs::create_dir_all(&uploads).map_err(io_error(&uploads))?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                uploads: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The directory this storage lives in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .root
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.inner.root.join("uploads").join(id)
    }

    fn temp_path(&self) -> PathBuf {
        self.upload_path(&format!("{}.tmp", uuid::Uuid::new_v4()))
    }

    fn repository_path(&self, repository: &str) -> PathBuf {
        self.inner.root.join("repositories").join(repository)
    }

    fn manifest_path(&self, repository: &str, digest: &Digest) -> PathBuf {
        self.repository_path(repository)
            .join("_manifests")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    fn tag_path(&self, repository: &str, tag: &str) -> PathBuf {
        self.repository_path(repository).join("_tags").join(tag)
    }

    /// Takes a session's open file out for appending or committing.
    fn take(&self, repository: &str, id: &str) -> Result<OpenUpload, StorageError> {
        let mut uploads = self.inner.uploads.lock().expect("uploads lock");
        let upload = uploads
            .get_mut(id)
            .filter(|u| u.repository == repository)
            .ok_or_else(|| StorageError::UploadUnknown { id: id.to_owned() })?;
        upload.touched = Instant::now();
        upload
            .data
            .take()
            .ok_or_else(|| StorageError::UploadBusy { id: id.to_owned() })
    }

    /// Forgets a session and removes its file.
    fn discard(&self, id: &str) {
        self.inner.uploads.lock().expect("uploads lock").remove(id);
        let path = self.upload_path(id);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove upload file");
        }
    }

    /// Writes `data` to `path` atomically (temporary file, then rename).
    async fn write_atomically(&self, path: &Path, data: &[u8]) -> Result<(), StorageError> {
        let temp = self.temp_path();
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_error(parent))?;
        }
        tokio::fs::write(&temp, data)
            .await
            .map_err(io_error(&temp))?;
        if let Err(e) = tokio::fs::rename(&temp, path).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(io_error(path)(e));
        }
        Ok(())
    }

    async fn read_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<StoredManifest>, StorageError> {
        let path = self.manifest_path(repository, digest);
        let body = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let meta_path = path.with_extension("meta");
        let meta = tokio::fs::read(&meta_path)
            .await
            .map_err(io_error(&meta_path))?;
        let meta: ManifestMeta = serde_json::from_slice(&meta).map_err(|e| StorageError::Io {
            path: meta_path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        Ok(Some(StoredManifest::new(
            meta.media_type,
            Bytes::from(body),
            meta.subject,
        )))
    }

    async fn read_tag(&self, repository: &str, tag: &str) -> Result<Option<Digest>, StorageError> {
        let path = self.tag_path(repository, tag);
        match tokio::fs::read_to_string(&path).await {
            Ok(s) => Ok(Digest::try_from(s.trim()).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Names of the regular files in `dir` (empty when it does not exist).
    async fn file_names(dir: &Path) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(io_error(dir)(e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(io_error(dir))? {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Discards a session when an append is interrupted (its future dropped).
struct Discard<'a> {
    storage: &'a FsStorage,
    id: &'a str,
    armed: bool,
}

impl Drop for Discard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.storage.discard(self.id);
        }
    }
}

/// Hashes and writes frames as they come, on a blocking thread.
fn write_frames(
    upload: OpenUpload,
    mut frames: tokio::sync::mpsc::Receiver<Bytes>,
) -> io::Result<OpenUpload> {
    let OpenUpload {
        file,
        mut hasher,
        mut size,
    } = upload;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    while let Some(frame) = frames.blocking_recv() {
        hasher.update(&frame);
        out.write_all(&frame)?;
        size += frame.len() as u64;
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(OpenUpload { file, hasher, size })
}

/// The digest of a file's contents in `algorithm`.
fn hash_file(
    path: &Path,
    algorithm: &oci_spec::image::DigestAlgorithm,
) -> Result<Digest, StorageError> {
    let mut hasher = BlobHasher::new(algorithm)?;
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut buf = vec![0u8; WRITE_BUFFER];
    loop {
        let n = file.read(&mut buf).map_err(io_error(path))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageError::Backend { source: e.into() }
}

#[async_trait::async_trait]
impl Storage for FsStorage {
    async fn stat_blob(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    async fn open_blob_range(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<BlobReader>, StorageError> {
        let path = self.blob_path(digest);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        match range {
            None => Ok(Some(Box::pin(file))),
            Some(r) => {
                file.seek(io::SeekFrom::Start(r.start))
                    .await
                    .map_err(io_error(&path))?;
                let len = r.end.saturating_sub(r.start);
                Ok(Some(Box::pin(file.take(len))))
            }
        }
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<bool, StorageError> {
        let path = self.blob_path(digest);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    async fn create_upload(&self, repository: &str) -> Result<String, StorageError> {
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.upload_path(&id);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(io_error(&path))?
            .into_std()
            .await;
        let upload = Upload {
            repository: repository.to_owned(),
            data: Some(OpenUpload {
                file,
                hasher: BlobHasher::sha256(),
                size: 0,
            }),
            touched: Instant::now(),
        };
        self.inner
            .uploads
            .lock()
            .expect("uploads lock")
            .insert(id.clone(), upload);
        Ok(id)
    }

    async fn upload_size(&self, repository: &str, id: &str) -> Result<Option<u64>, StorageError> {
        let uploads = self.inner.uploads.lock().expect("uploads lock");
        match uploads.get(id).filter(|u| u.repository == repository) {
            None => Ok(None),
            Some(Upload { data: Some(d), .. }) => Ok(Some(d.size)),
            Some(_) => Err(StorageError::UploadBusy { id: id.to_owned() }),
        }
    }

    async fn append_upload(
        &self,
        repository: &str,
        id: &str,
        mut data: ByteStream<'_>,
    ) -> Result<u64, StorageError> {
        let upload = self.take(repository, id)?;
        let mut guard = Discard {
            storage: self,
            id,
            armed: true,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || write_frames(upload, rx));
        let mut incoming = None;
        while let Some(frame) = data.next().await {
            match frame {
                Ok(frame) if frame.is_empty() => {}
                Ok(frame) => {
                    if tx.send(frame).await.is_err() {
                        break; // the writer failed; its error is below
                    }
                }
                Err(e) => {
                    incoming = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(join_error)?;
        if let Some(source) = incoming {
            return Err(StorageError::Incoming { source });
        }
        let upload = written.map_err(io_error(&self.upload_path(id)))?;
        let size = upload.size;
        let mut uploads = self.inner.uploads.lock().expect("uploads lock");
        let entry = uploads
            .get_mut(id)
            .ok_or_else(|| StorageError::UploadUnknown { id: id.to_owned() })?;
        entry.data = Some(upload);
        entry.touched = Instant::now();
        guard.armed = false;
        Ok(size)
    }

    async fn commit_upload(
        &self,
        repository: &str,
        id: &str,
        expected: &Digest,
    ) -> Result<u64, StorageError> {
        let upload = self.take(repository, id)?;
        let _guard = Discard {
            storage: self,
            id,
            armed: true,
        };
        let OpenUpload { file, hasher, size } = upload;
        drop(file);
        let path = self.upload_path(id);
        let actual = if hasher.algorithm() == *expected.algorithm() {
            hasher.finish()
        } else {
            let p = path.clone();
            let algorithm = expected.algorithm().clone();
            tokio::task::spawn_blocking(move || hash_file(&p, &algorithm))
                .await
                .map_err(join_error)??
        };
        if actual != *expected {
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.blob_path(expected);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_error(parent))?;
        }
        tokio::fs::rename(&path, &target)
            .await
            .map_err(io_error(&target))?;
        Ok(size)
    }

    async fn cancel_upload(&self, repository: &str, id: &str) -> Result<bool, StorageError> {
        let known = {
            let uploads = self.inner.uploads.lock().expect("uploads lock");
            uploads.get(id).is_some_and(|u| u.repository == repository)
        };
        if known {
            self.discard(id);
        }
        Ok(known)
    }

    async fn purge_stale_uploads(&self, idle: Duration) -> Result<usize, StorageError> {
        let stale: Vec<String> = {
            let uploads = self.inner.uploads.lock().expect("uploads lock");
            uploads
                .iter()
                .filter(|(_, u)| u.data.is_some() && u.touched.elapsed() >= idle)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in &stale {
            self.discard(id);
        }
        Ok(stale.len())
    }

    async fn put_manifest(
        &self,
        repository: &str,
        digest: &Digest,
        manifest: StoredManifest,
        tag: Option<&str>,
    ) -> Result<(), StorageError> {
        let path = self.manifest_path(repository, digest);
        let meta = ManifestMeta {
            media_type: manifest.media_type,
            subject: manifest.subject,
        };
        let meta = serde_json::to_vec(&meta).expect("manifest metadata serializes");
        self.write_atomically(&path.with_extension("meta"), &meta)
            .await?;
        self.write_atomically(&path, &manifest.body).await?;
        if let Some(tag) = tag {
            self.write_atomically(&self.tag_path(repository, tag), digest.as_ref().as_bytes())
                .await?;
        }
        Ok(())
    }

    async fn get_manifest(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<Option<(Digest, StoredManifest)>, StorageError> {
        let digest = match reference {
            Reference::Tag(t) => match self.read_tag(repository, t).await? {
                Some(d) => d,
                None => return Ok(None),
            },
            Reference::Digest(d) => d.clone(),
        };
        Ok(self
            .read_manifest(repository, &digest)
            .await?
            .map(|m| (digest, m)))
    }

    async fn delete_manifest(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<bool, StorageError> {
        let remove = |path: PathBuf| async move {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_error(&path)(e)),
            }
        };
        match reference {
            Reference::Tag(t) => remove(self.tag_path(repository, t)).await,
            Reference::Digest(d) => {
                let path = self.manifest_path(repository, d);
                if !remove(path.clone()).await? {
                    return Ok(false);
                }
                remove(path.with_extension("meta")).await?;
                let tags_dir = self.repository_path(repository).join("_tags");
                for tag in Self::file_names(&tags_dir).await? {
                    if self.read_tag(repository, &tag).await?.as_ref() == Some(d) {
                        remove(tags_dir.join(&tag)).await?;
                    }
                }
                Ok(true)
            }
        }
    }

    async fn list_tags(&self, repository: &str) -> Result<Option<Vec<String>>, StorageError> {
        let repo = self.repository_path(repository);
        if !tokio::fs::try_exists(repo.join("_manifests"))
            .await
            .map_err(io_error(&repo))?
        {
            return Ok(None);
        }
        Ok(Some(Self::file_names(&repo.join("_tags")).await?))
    }

    async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Vec<(Digest, StoredManifest)>, StorageError> {
        let manifests = self.repository_path(repository).join("_manifests");
        let mut found = Vec::new();
        for algorithm in Self::file_names(&manifests).await? {
            let dir = manifests.join(&algorithm);
            for name in Self::file_names(&dir).await? {
                let Some(hex) = name.strip_suffix(".meta") else {
                    continue;
                };
                let meta_path = dir.join(&name);
                let Ok(meta) = tokio::fs::read(&meta_path).await else {
                    continue; // deleted meanwhile
                };
                let Ok(meta) = serde_json::from_slice::<ManifestMeta>(&meta) else {
                    continue;
                };
                if meta.subject.as_ref() != Some(subject) {
                    continue;
                }
                let Ok(digest) = Digest::try_from(format!("{algorithm}:{hex}")) else {
                    continue;
                };
                if let Some(m) = self.read_manifest(repository, &digest).await? {
                    found.push((digest, m));
                }
            }
        }
        Ok(found)
    }
}
