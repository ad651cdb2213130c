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

mod write_behind;

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use self::write_behind::WriteBehind;
use super::hashing::BlobHasher;
use super::{BlobReader, ByteStream, Reference, Storage, StorageError, StoredManifest};

/// Bytes of request frames gathered before they go to the hashing and the
/// writing thread together (one hand-off each and one vectored write per
/// batch, not per frame).
const BATCH_BYTES: usize = 1 << 20;
/// At most this many frames in a batch (the usual `IOV_MAX`).
const BATCH_FRAMES: usize = 1024;
/// Batches queued between the request and each of those threads.
const WRITE_QUEUE: usize = 4;
/// Read buffer when a file is hashed again.
const READ_BUFFER: usize = 1 << 20;

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
    data: UploadFile,
    /// The digest of the data so far.
    hasher: BlobHasher,
}

/// An upload session's file.
#[derive(Debug)]
struct UploadFile {
    file: std::fs::File,
    size: u64,
    behind: WriteBehind,
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

    /// Forgets a session.
    fn forget(&self, id: &str) {
        self.inner.uploads.lock().expect("uploads lock").remove(id);
    }

    /// Forgets a session and removes its file.
    ///
    /// Inside a runtime the file is removed on a blocking thread, and nobody
    /// waits for it: freeing a large file's blocks can take a while (ext4
    /// mounted with `discard` trims them before `unlink` returns: 0.25 s per
    /// GiB on the machine this was measured on), and no reply needs to wait
    /// for a session that is already forgotten (its name is never reused).
    /// Should the runtime shut down before that thread runs, dropping the
    /// task removes the file there and then.
    fn discard(&self, id: &str) {
        self.forget(id);
        let file = RemoveOnDrop(self.upload_path(id));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(file))),
            Err(_) => drop(file),
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

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove upload file");
        }
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

/// Request frames handed on together, shared by the hashing and the writing
/// thread.
type Batch = Arc<[Bytes]>;

/// Hashes batches as they come, on a blocking thread.
fn hash_batches(
    mut hasher: BlobHasher,
    mut batches: tokio::sync::mpsc::Receiver<Batch>,
) -> BlobHasher {
    while let Some(batch) = batches.blocking_recv() {
        for frame in batch.iter() {
            hasher.update(frame);
        }
    }
    hasher
}

/// Writes batches as they come, on a blocking thread.
fn write_batches(
    mut data: UploadFile,
    mut batches: tokio::sync::mpsc::Receiver<Batch>,
) -> io::Result<UploadFile> {
    while let Some(batch) = batches.blocking_recv() {
        write_all_frames(&mut data.file, &batch)?;
        data.size += batch.iter().map(|f| f.len() as u64).sum::<u64>();
        data.behind.written(&data.file, data.size);
    }
    Ok(data)
}

/// Writes every frame, in order, with as few (vectored) writes as it takes.
fn write_all_frames(file: &mut std::fs::File, frames: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The digest of a file's contents in `algorithm`.
fn hash_file(
    path: &Path,
    algorithm: &oci_spec::image::DigestAlgorithm,
) -> Result<Digest, StorageError> {
    let mut hasher = BlobHasher::new(algorithm)?;
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut buf = vec![0u8; READ_BUFFER];
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
                data: UploadFile {
                    file,
                    size: 0,
                    behind: WriteBehind::default(),
                },
                hasher: BlobHasher::sha256(),
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
            Some(Upload { data: Some(d), .. }) => Ok(Some(d.data.size)),
            Some(_) => Err(StorageError::UploadBusy { id: id.to_owned() }),
        }
    }

    async fn append_upload(
        &self,
        repository: &str,
        id: &str,
        mut data: ByteStream<'_>,
    ) -> Result<u64, StorageError> {
        let OpenUpload { data: file, hasher } = self.take(repository, id)?;
        let mut guard = Discard {
            storage: self,
            id,
            armed: true,
        };
        // Hashing and writing each take a thread, so that they overlap.
        let (to_hasher, batches) = tokio::sync::mpsc::channel::<Batch>(WRITE_QUEUE);
        let hashing = tokio::task::spawn_blocking(move || hash_batches(hasher, batches));
        let (to_writer, batches) = tokio::sync::mpsc::channel::<Batch>(WRITE_QUEUE);
        let writing = tokio::task::spawn_blocking(move || write_batches(file, batches));
        let mut incoming = None;
        let mut batch = Vec::new();
        let mut batched = 0;
        loop {
            let end = match data.next().await {
                Some(Ok(frame)) => {
                    if !frame.is_empty() {
                        batched += frame.len();
                        batch.push(frame);
                    }
                    false
                }
                Some(Err(e)) => {
                    incoming = Some(e);
                    break;
                }
                None => true,
            };
            let full = batched >= BATCH_BYTES || batch.len() >= BATCH_FRAMES;
            if (full || end) && !batch.is_empty() {
                batched = 0;
                let shared: Batch = std::mem::take(&mut batch).into();
                if to_hasher.send(shared.clone()).await.is_err()
                    || to_writer.send(shared).await.is_err()
                {
                    break; // the writer failed; its error is below
                }
            }
            if end {
                break;
            }
        }
        drop((to_hasher, to_writer));
        let hasher = hashing.await.map_err(join_error)?;
        let written = writing.await.map_err(join_error)?;
        if let Some(source) = incoming {
            return Err(StorageError::Incoming { source });
        }
        let upload = OpenUpload {
            data: written.map_err(io_error(&self.upload_path(id)))?,
            hasher,
        };
        let size = upload.data.size;
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
        let mut guard = Discard {
            storage: self,
            id,
            armed: true,
        };
        let OpenUpload { data, hasher } = upload;
        let size = data.size;
        drop(data);
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
        if tokio::fs::try_exists(&target)
            .await
            .map_err(io_error(&target))?
        {
            // Content-addressed: the stored blob holds these very bytes, and
            // the guard discards this copy. Replacing the blob would gain
            // nothing and cost: ext4 writes a file that replaces another back
            // to disk before the rename returns.
            return Ok(size);
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_error(parent))?;
        }
        tokio::fs::rename(&path, &target)
            .await
            .map_err(io_error(&target))?;
        guard.armed = false;
        self.forget(id);
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
        tags: &[String],
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
        for tag in tags {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::hashing::digest_of;
    use oci_spec::image::DigestAlgorithm;

    /// `len` bytes that differ from one offset to the next.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i ^ (i >> 11)) as u8).collect()
    }

    /// `data` as a stream of frames of uneven sizes (empty ones included).
    fn frames(data: &[u8]) -> ByteStream<'static> {
        let sizes = [1, 0, 4096, 100_003, 1 << 20, (1 << 20) + 7, 333];
        let mut out = Vec::new();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            out.push(Ok(Bytes::copy_from_slice(&data[at..end])));
            at = end;
        }
        Box::pin(futures_util::stream::iter(out))
    }

    fn uploads_left(storage: &FsStorage) -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(storage.root().join("uploads"))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Waits (a bounded time) for the uploads folder to empty: abandoned
    /// upload files are removed on a blocking thread.
    async fn wait_uploads_empty(storage: &FsStorage) {
        for _ in 0..100 {
            if uploads_left(storage).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("upload files left: {:?}", uploads_left(storage));
    }

    #[tokio::test]
    async fn large_uneven_appends_are_stored_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        // More than the write-behind window and lag, over two requests.
        let data = pattern(45 << 20);
        let (first, second) = data.split_at((17 << 20) + 5);
        let id = storage.create_upload("r").await.unwrap();
        let size = storage.append_upload("r", &id, frames(first)).await;
        assert_eq!(size.unwrap(), first.len() as u64);
        let size = storage.append_upload("r", &id, frames(second)).await;
        assert_eq!(size.unwrap(), data.len() as u64);
        let digest = digest_of(&DigestAlgorithm::Sha256, &data).unwrap();
        let size = storage.commit_upload("r", &id, &digest).await.unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(std::fs::read(storage.blob_path(&digest)).unwrap(), data);
        assert!(uploads_left(&storage).is_empty());
    }

    #[tokio::test]
    async fn committing_a_stored_blob_again_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let data = pattern(3 << 20);
        let digest = digest_of(&DigestAlgorithm::Sha256, &data).unwrap();
        for repository in ["a", "b"] {
            let id = storage.create_upload(repository).await.unwrap();
            storage
                .append_upload(repository, &id, frames(&data))
                .await
                .unwrap();
            let size = storage.commit_upload(repository, &id, &digest).await;
            assert_eq!(size.unwrap(), data.len() as u64);
            assert_eq!(storage.upload_size(repository, &id).await.unwrap(), None);
        }
        assert_eq!(std::fs::read(storage.blob_path(&digest)).unwrap(), data);
        wait_uploads_empty(&storage).await;
    }

    #[tokio::test]
    async fn failed_appends_and_commits_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let data = pattern(3 << 20);
        // The client goes away in the middle of the body.
        let id = storage.create_upload("r").await.unwrap();
        let broken = frames(&data).chain(futures_util::stream::iter([Err(io::Error::other(
            "client gone",
        ))]));
        let result = storage.append_upload("r", &id, Box::pin(broken)).await;
        assert!(
            matches!(result, Err(StorageError::Incoming { .. })),
            "{result:?}"
        );
        assert_eq!(storage.upload_size("r", &id).await.unwrap(), None);
        // The digest does not match.
        let id = storage.create_upload("r").await.unwrap();
        storage
            .append_upload("r", &id, frames(&data))
            .await
            .unwrap();
        let wrong = digest_of(&DigestAlgorithm::Sha256, b"other").unwrap();
        let result = storage.commit_upload("r", &id, &wrong).await;
        assert!(
            matches!(result, Err(StorageError::DigestMismatch { .. })),
            "{result:?}"
        );
        assert_eq!(storage.stat_blob(&wrong).await.unwrap(), None);
        wait_uploads_empty(&storage).await;
        let stored = dir.path().join("blobs/sha256");
        assert!(!stored.exists() || std::fs::read_dir(&stored).unwrap().next().is_none());
    }
}
