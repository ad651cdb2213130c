//! [`ContentStore`]: the blobs of a containerd image store, read straight
//! from containerd's content store on disk, without the daemon.
//!
//! On the containerd image store an image ID is the digest of the image's
//! manifest or index, and every blob the image names (index, manifests,
//! config, compressed layers) sits in the content store as
//! `io.containerd.content.v1.content/blobs/sha256/<hex>`, byte for byte as
//! a registry would serve it. dockerd's own containerd keeps it under
//! `<DockerRootDir>/containerd/daemon/`; a system containerd (Docker CE's
//! packages) under `/var/lib/containerd/`. Every blob read here is checked
//! against its digest (a layer by the reader's consumer, which hashes it
//! while it streams); nothing is ever written.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::DataRootError;
use crate::manifest::{self, ManifestKind, Platform};

/// The content store's folder under a containerd root.
const CONTENT: &str = "io.containerd.content.v1.content/blobs/sha256";
/// The most a manifest, index or config may weigh here.
pub(crate) const DOCUMENT_LIMIT: u64 = 16 << 20;

/// A containerd content store, opened read-only.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
}

/// What an image ID leads to in the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDocuments {
    /// The index the image ID names, when it names one (media type, bytes).
    pub index: Option<(String, Vec<u8>)>,
    /// The image manifest of the platform (media type, bytes).
    pub manifest: (String, Vec<u8>),
    /// The image config the manifest names.
    pub config: Vec<u8>,
}

impl ContentStore {
    /// Where a daemon with data root `root` may keep its content store:
    /// dockerd's own containerd, then the system's.
    pub fn candidates(root: &Path) -> [PathBuf; 2] {
        [
            root.join("containerd/daemon").join(CONTENT),
            Path::new("/var/lib/containerd").join(CONTENT),
        ]
    }

    /// The content store, among [`candidates`](Self::candidates), that
    /// holds `probe` (a digest the image store names, e.g. an image ID);
    /// fails when none can be read or none holds it.
    pub fn open(root: &Path, probe: &str) -> Result<Self, DataRootError> {
        let hex = hex_of(probe)?;
        let mut last = None;
        for blobs in Self::candidates(root) {
            match std::fs::metadata(blobs.join(hex)) {
                Ok(m) if m.is_file() => return Ok(Self { blobs }),
                Ok(_) => {}
                Err(source) => last = Some((blobs, source)),
            }
        }
        let (path, source) = last.unwrap_or_else(|| {
            (
                root.join("containerd/daemon").join(CONTENT),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        });
        Err(DataRootError::Read {
            path: path.join(hex),
            source,
        })
    }

    /// The file holding blob `digest` (`sha256:<hex>`).
    pub fn path(&self, digest: &str) -> Result<PathBuf, DataRootError> {
        Ok(self.blobs.join(hex_of(digest)?))
    }

    /// Opens blob `digest` for reading; its consumer checks its digest.
    pub fn open_blob(&self, digest: &str) -> Result<File, DataRootError> {
        let path = self.path(digest)?;
        File::open(&path).map_err(|source| DataRootError::Read { path, source })
    }

    /// A small blob (a manifest, an index, a config), checked against its
    /// digest.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>, DataRootError> {
        let path = self.path(digest)?;
        let read_err = |source| DataRootError::Read {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        File::open(&path)
            .map_err(read_err)?
            .take(DOCUMENT_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        checked(bytes, digest, &path)
    }

    /// The index (if the ID names one), the image manifest for `platform`
    /// and the config of the image whose ID is `id`, each checked against
    /// its digest. Attestation manifests are never taken.
    pub fn image_documents(
        &self,
        id: &str,
        platform: &Platform,
    ) -> Result<ImageDocuments, DataRootError> {
        read_image_documents(&self.blobs, id, platform, &mut |digest| self.read(digest))
    }
}

/// `bytes` when they hash to `digest` and are a document's size at most.
pub(crate) fn checked(bytes: Vec<u8>, digest: &str, path: &Path) -> Result<Vec<u8>, DataRootError> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if bytes.len() as u64 > DOCUMENT_LIMIT || actual != digest {
        return Err(DataRootError::Content {
            path: path.to_path_buf(),
            detail: format!("the blob does not hash to its name ({actual})"),
        });
    }
    Ok(bytes)
}

/// [`ContentStore::image_documents`] with the blobs read by `read` (each
/// checked against its digest), e.g. through the archive API of a
/// container that mounts the content store; `blobs` names the folder in
/// messages.
pub fn read_image_documents(
    blobs: &Path,
    id: &str,
    platform: &Platform,
    read: &mut dyn FnMut(&str) -> Result<Vec<u8>, DataRootError>,
) -> Result<ImageDocuments, DataRootError> {
    {
        let root = read(id)?;
        let content = |detail: String| DataRootError::Content {
            path: blobs.join(hex_of(id).unwrap_or_default()),
            detail,
        };
        let (index, manifest) = match manifest::kind_of("", &root) {
            ManifestKind::Image => (None, (media_type_of(&root), root)),
            ManifestKind::Index => {
                let entry = manifest::manifest_for(
                    &root,
                    &platform.os,
                    &platform.architecture,
                    platform.variant.as_deref(),
                )
                .map_err(|e| content(e.to_string()))?;
                let bytes = read(&entry.digest)?;
                if manifest::kind_of(&entry.media_type, &bytes) != ManifestKind::Image {
                    return Err(content(format!(
                        "the index's manifest for {platform} ({}) is not an image manifest",
                        entry.digest
                    )));
                }
                let media_type = if entry.media_type.is_empty() {
                    media_type_of(&bytes)
                } else {
                    entry.media_type
                };
                (Some((media_type_of(&root), root)), (media_type, bytes))
            }
            ManifestKind::Other => {
                return Err(content("neither an image manifest nor an index".into()));
            }
        };
        #[derive(serde::Deserialize)]
        struct Descriptor {
            digest: String,
        }
        #[derive(serde::Deserialize)]
        struct Manifest {
            config: Descriptor,
        }
        let config_digest = serde_json::from_slice::<Manifest>(&manifest.1)
            .map_err(|e| content(format!("the image manifest has no config: {e}")))?
            .config
            .digest;
        let config = read(&config_digest)?;
        Ok(ImageDocuments {
            index,
            manifest,
            config,
        })
    }
}

/// The `mediaType` a manifest or index names, else OCI's of its kind.
fn media_type_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Typed>(bytes)
        .ok()
        .and_then(|t| t.media_type)
        .unwrap_or_else(|| match manifest::kind_of("", bytes) {
            ManifestKind::Index => manifest::MT_OCI_INDEX.to_owned(),
            _ => manifest::MT_OCI_MANIFEST.to_owned(),
        })
}

/// `sha256:<64 hex>` → the hex; anything else is refused (no path can be
/// made of it).
fn hex_of(digest: &str) -> Result<&str, DataRootError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| DataRootError::NotADigest {
            digest: digest.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// A content store under `root` (dockerd's own) holding `blobs`.
    fn store(root: &Path, blobs: &[&[u8]]) {
        let dir = root.join("containerd/daemon").join(CONTENT);
        std::fs::create_dir_all(&dir).unwrap();
        for b in blobs {
            std::fs::write(dir.join(hex_of(&digest(b)).unwrap()), b).unwrap();
        }
    }

    #[test]
    fn an_index_leads_to_the_platform_manifest_and_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
            digest(config),
            config.len()
        );
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            "a".repeat(64),
            digest(manifest.as_bytes()),
            manifest.len()
        );
        store(dir.path(), &[config, manifest.as_bytes(), index.as_bytes()]);
        let id = digest(index.as_bytes());
        let cs = ContentStore::open(dir.path(), &id).unwrap();
        let docs = cs
            .image_documents(&id, &Platform::new("linux", "arm64", None))
            .unwrap();
        assert_eq!(docs.config, config);
        assert_eq!(docs.manifest.1, manifest.as_bytes());
        assert_eq!(docs.manifest.0, manifest::MT_OCI_MANIFEST);
        assert_eq!(docs.index.unwrap().1, index.as_bytes());
        // The amd64 manifest is not here: an error naming it.
        let err = cs
            .image_documents(&id, &Platform::new("linux", "amd64", None))
            .unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        // A manifest ID is its own image manifest.
        let docs = cs
            .image_documents(&digest(manifest.as_bytes()), &Platform::default())
            .unwrap();
        assert_eq!(docs.index, None);
        assert_eq!(docs.config, config);
    }

    #[test]
    fn a_blob_that_does_not_hash_to_its_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &[b"{}"]);
        let id = digest(b"{}");
        let cs = ContentStore::open(dir.path(), &id).unwrap();
        std::fs::write(cs.path(&id).unwrap(), b"{ }").unwrap();
        let err = cs.read(&id).unwrap_err();
        assert!(matches!(err, DataRootError::Content { .. }), "{err}");
        assert!(err.to_string().contains("unexpected content"), "{err}");
    }

    #[test]
    fn no_store_holding_the_probe_and_bad_digests_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let probe = digest(b"nowhere");
        assert!(ContentStore::open(dir.path(), &probe).is_err());
        for bad in ["sha256:../../etc/passwd", "md5:00", "sha256:abc", ""] {
            assert!(ContentStore::open(dir.path(), bad).is_err(), "{bad}");
        }
    }
}
