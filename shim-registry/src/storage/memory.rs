//! Storage in memory.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use oci_spec::image::Digest;

use super::hashing::{BlobHasher, digest_of};
use super::{BlobReader, ByteStream, Reference, Storage, StorageError, StoredManifest};

/// Keeps everything in memory; for tests and short-lived registries.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    blobs: RwLock<HashMap<Digest, Bytes>>,
    uploads: Mutex<HashMap<String, Upload>>,
    repositories: RwLock<HashMap<String, Repository>>,
}

#[derive(Debug)]
struct Upload {
    repository: String,
    /// `None` while a request appends to it.
    data: Option<(Vec<u8>, BlobHasher)>,
    touched: Instant,
}

#[derive(Debug, Default)]
struct Repository {
    manifests: HashMap<Digest, StoredManifest>,
    tags: BTreeMap<String, Digest>,
}

impl std::fmt::Debug for BlobHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobHasher({})", self.algorithm())
    }
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a session's data out for appending or committing.
    fn take(&self, repository: &str, id: &str) -> Result<(Vec<u8>, BlobHasher), StorageError> {
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

    fn remove_upload(&self, id: &str) {
        self.inner.uploads.lock().expect("uploads lock").remove(id);
    }
}

/// Removes a session when an append is interrupted (its future dropped).
struct Discard<'a> {
    storage: &'a MemoryStorage,
    id: &'a str,
    armed: bool,
}

impl Drop for Discard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.storage.remove_upload(self.id);
        }
    }
}

#[async_trait::async_trait]
impl Storage for MemoryStorage {
    async fn stat_blob(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let blobs = self.inner.blobs.read().expect("blobs lock");
        Ok(blobs.get(digest).map(|b| b.len() as u64))
    }

    async fn open_blob_range(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<BlobReader>, StorageError> {
        let blob = self
            .inner
            .blobs
            .read()
            .expect("blobs lock")
            .get(digest)
            .cloned();
        Ok(blob.map(|b| {
            let b = match range {
                Some(r) => {
                    let len = b.len() as u64;
                    let start = r.start.min(len) as usize;
                    let end = r.end.min(len).max(r.start.min(len)) as usize;
                    b.slice(start..end)
                }
                None => b,
            };
            Box::pin(std::io::Cursor::new(b)) as BlobReader
        }))
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<bool, StorageError> {
        let mut blobs = self.inner.blobs.write().expect("blobs lock");
        Ok(blobs.remove(digest).is_some())
    }

    async fn create_upload(&self, repository: &str) -> Result<String, StorageError> {
        let id = uuid::Uuid::new_v4().to_string();
        let upload = Upload {
            repository: repository.to_owned(),
            data: Some((Vec::new(), BlobHasher::sha256())),
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
            Some(Upload {
                data: Some((data, _)),
                ..
            }) => Ok(Some(data.len() as u64)),
            Some(_) => Err(StorageError::UploadBusy { id: id.to_owned() }),
        }
    }

    async fn append_upload(
        &self,
        repository: &str,
        id: &str,
        mut data: ByteStream<'_>,
    ) -> Result<u64, StorageError> {
        let (mut buf, mut hasher) = self.take(repository, id)?;
        let mut guard = Discard {
            storage: self,
            id,
            armed: true,
        };
        while let Some(frame) = data.next().await {
            let frame = frame.map_err(|source| StorageError::Incoming { source })?;
            hasher.update(&frame);
            buf.extend_from_slice(&frame);
        }
        let size = buf.len() as u64;
        let mut uploads = self.inner.uploads.lock().expect("uploads lock");
        let upload = uploads
            .get_mut(id)
            .ok_or_else(|| StorageError::UploadUnknown { id: id.to_owned() })?;
        upload.data = Some((buf, hasher));
        upload.touched = Instant::now();
        guard.armed = false;
        Ok(size)
    }

    async fn commit_upload(
        &self,
        repository: &str,
        id: &str,
        expected: &Digest,
    ) -> Result<u64, StorageError> {
        let (buf, hasher) = self.take(repository, id)?;
        self.remove_upload(id);
        let actual = if hasher.algorithm() == *expected.algorithm() {
            hasher.finish()
        } else {
            digest_of(expected.algorithm(), &buf)?
        };
        if actual != *expected {
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let size = buf.len() as u64;
        self.inner
            .blobs
            .write()
            .expect("blobs lock")
            .insert(expected.clone(), Bytes::from(buf));
        Ok(size)
    }

    async fn cancel_upload(&self, repository: &str, id: &str) -> Result<bool, StorageError> {
        let mut uploads = self.inner.uploads.lock().expect("uploads lock");
        if uploads.get(id).is_some_and(|u| u.repository == repository) {
            uploads.remove(id);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn purge_stale_uploads(&self, idle: Duration) -> Result<usize, StorageError> {
        let mut uploads = self.inner.uploads.lock().expect("uploads lock");
        let before = uploads.len();
        // Sessions being appended to are left alone.
        uploads.retain(|_, u| u.data.is_none() || u.touched.elapsed() < idle);
        Ok(before - uploads.len())
    }

    async fn put_manifest(
        &self,
        repository: &str,
        digest: &Digest,
        manifest: StoredManifest,
        tags: &[String],
    ) -> Result<(), StorageError> {
        let mut repos = self.inner.repositories.write().expect("repositories lock");
        let repo = repos.entry(repository.to_owned()).or_default();
        repo.manifests.insert(digest.clone(), manifest);
        for tag in tags {
            repo.tags.insert(tag.clone(), digest.clone());
        }
        Ok(())
    }

    async fn get_manifest(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<Option<(Digest, StoredManifest)>, StorageError> {
        let repos = self.inner.repositories.read().expect("repositories lock");
        let Some(repo) = repos.get(repository) else {
            return Ok(None);
        };
        let digest = match reference {
            Reference::Tag(t) => match repo.tags.get(t) {
                Some(d) => d,
                None => return Ok(None),
            },
            Reference::Digest(d) => d,
        };
        Ok(repo
            .manifests
            .get(digest)
            .map(|m| (digest.clone(), m.clone())))
    }

    async fn delete_manifest(
        &self,
        repository: &str,
        reference: &Reference,
    ) -> Result<bool, StorageError> {
        let mut repos = self.inner.repositories.write().expect("repositories lock");
        let Some(repo) = repos.get_mut(repository) else {
            return Ok(false);
        };
        match reference {
            Reference::Tag(t) => Ok(repo.tags.remove(t).is_some()),
            Reference::Digest(d) => {
                if repo.manifests.remove(d).is_none() {
                    return Ok(false);
                }
                repo.tags.retain(|_, v| v != d);
                Ok(true)
            }
        }
    }

    async fn list_tags(&self, repository: &str) -> Result<Option<Vec<String>>, StorageError> {
        let repos = self.inner.repositories.read().expect("repositories lock");
        Ok(repos
            .get(repository)
            .map(|r| r.tags.keys().cloned().collect()))
    }

    async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Vec<(Digest, StoredManifest)>, StorageError> {
        let repos = self.inner.repositories.read().expect("repositories lock");
        let Some(repo) = repos.get(repository) else {
            return Ok(Vec::new());
        };
        let mut found: Vec<_> = repo
            .manifests
            .iter()
            .filter(|(_, m)| m.subject.as_ref() == Some(subject))
            .map(|(d, m)| (d.clone(), m.clone()))
            .collect();
        found.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        Ok(found)
    }
}
