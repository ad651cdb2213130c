//! A multi-platform image as a registry serves it, pulled by the daemon
//! under test: an in-process `shim-registry` holding an image index (OCI)
//! or a manifest list (Docker) whose linux/amd64 image is whole and whose
//! linux/arm64 image has its manifest but none of its blobs, as a real
//! multi-platform image looks once only one platform's content was pulled.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use shim_registry::oci_spec::image::Digest;
use shim_registry::storage::{MemoryStorage, Storage, StoredManifest};
use shim_registry::{Registry, RegistryHandle};

use crate::image::busybox_static;
use crate::{Daemon, Error, unique_name};

/// The modification time of every entry in the fixture's layers (2023-11-14).
const MTIME: u64 = 1_700_000_000;

/// The tag the index is pushed and pulled under.
const TAG: &str = "multi";

/// Which kind of multi-platform image the registry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexFlavour {
    /// An OCI image index (`application/vnd.oci.image.index.v1+json`) of
    /// OCI manifests, with a provenance attestation manifest for the
    /// amd64 image, as BuildKit pushes one.
    Oci,
    /// A Docker manifest list
    /// (`application/vnd.docker.distribution.manifest.list.v2+json`) of
    /// Docker schema 2 manifests, no attestation.
    DockerList,
}

/// What a pulled multi-platform image is, and the registry it came from
/// (kept serving until this is dropped, as Docker Hub would be).
///
/// Its content is the test's own: a layer with the static busybox
/// (`/bin/busybox`, `/bin/sh`) and a layer with [`FILE`](Self::FILE), whose
/// text names the repository, so every fixture has its own image ID. The
/// pulled tag and the image ID are removed when the test ends.
///
/// Made and dropped outside any async runtime (it runs its own).
#[derive(Debug)]
pub struct PulledIndex {
    /// What the daemon pulled, `127.0.0.1:PORT/<repository>:multi`.
    pub reference: String,
    /// The flavour served.
    pub flavour: IndexFlavour,
    /// The linux/amd64 image's diff IDs, base first.
    pub diff_ids: Vec<String>,
    /// The digest of the index (or manifest list) under the tag.
    pub index_digest: String,
    /// The digest of the linux/amd64 image manifest.
    pub manifest_digest: String,
    /// The digest of the linux/amd64 image config.
    pub config_digest: String,
    /// The digest of the linux/arm64 manifest (its blobs are not served
    /// unless [`pull_both`](Self::pull_both) made it).
    pub missing_manifest_digest: String,
    /// With [`pull_both`](Self::pull_both): the linux/arm64/v8 image's diff
    /// IDs (the same base, another top layer) and its top file's text.
    pub arm64: Option<(Vec<String>, String)>,
    /// The digest of the attestation manifest ([`IndexFlavour::Oci`] only).
    pub attestation_digest: Option<String>,
    /// The text of [`FILE`](Self::FILE) in the image.
    pub file_text: String,
    /// The image config's labels.
    pub labels: BTreeMap<String, String>,
    /// The image ID the daemon reports for [`reference`](Self::reference).
    pub id: String,
    registry: Option<(tokio::runtime::Runtime, RegistryHandle)>,
}

impl PulledIndex {
    /// The file of the top layer.
    pub const FILE: &'static str = "/fixture.txt";

    /// Serves a `flavour` index from a new registry on 127.0.0.1 and has
    /// `daemon` pull its tag (`docker pull`, 127.0.0.1 being an insecure
    /// registry for dockerd and for the matrix's Podman); panics on failure.
    #[track_caller]
    pub fn pull(daemon: &Daemon, flavour: IndexFlavour) -> PulledIndex {
        Self::try_pull(daemon, flavour).unwrap_or_else(|e| panic!("daemon {}: {e}", daemon.name))
    }

    /// [`pull`](Self::pull), returning errors.
    pub fn try_pull(daemon: &Daemon, flavour: IndexFlavour) -> Result<PulledIndex, Error> {
        Self::serve_and_pull(daemon, flavour, false)
    }

    /// As [`pull`](Self::pull), with the linux/arm64/v8 image whole too
    /// (its own top layer and config), and pulled after the amd64 one
    /// (`docker pull --platform linux/arm64`): the containerd store then
    /// holds both platforms' content under the index; a classic store (and
    /// Podman) moves the tag to the arm64 image.
    #[track_caller]
    pub fn pull_both(daemon: &Daemon, flavour: IndexFlavour) -> PulledIndex {
        Self::serve_and_pull(daemon, flavour, true)
            .unwrap_or_else(|e| panic!("daemon {}: {e}", daemon.name))
    }

    fn serve_and_pull(
        daemon: &Daemon,
        flavour: IndexFlavour,
        both: bool,
    ) -> Result<PulledIndex, Error> {
        let registry_error = |detail: String| Error::Registry { detail };
        let prefix = match flavour {
            IndexFlavour::Oci => "dlgrab-test/pulled-oci",
            IndexFlavour::DockerList => "dlgrab-test/pulled-list",
        };
        let repository = unique_name(prefix);
        let content = Content::new(flavour, &repository, both)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| registry_error(format!("no runtime: {e}")))?;
        let storage = Arc::new(MemoryStorage::new());
        let handle = runtime
            .block_on(async {
                content.store(&*storage, &repository).await?;
                let registry = Registry::builder()
                    .storage(storage.clone())
                    .build()
                    .map_err(|e| format!("cannot build: {e}"))?;
                registry
                    .spawn("127.0.0.1:0".parse().expect("an address"))
                    .await
                    .map_err(|e| format!("cannot start: {e}"))
            })
            .map_err(registry_error)?;
        let reference = format!("127.0.0.1:{}/{repository}:{TAG}", handle.addr().port());
        let mut pulled = PulledIndex {
            reference,
            flavour,
            diff_ids: content.diff_ids.clone(),
            index_digest: content.index.0.clone(),
            manifest_digest: content.manifest.0.clone(),
            config_digest: content.config.0.clone(),
            missing_manifest_digest: content.missing_manifest.0.clone(),
            arm64: content.arm64.clone(),
            attestation_digest: content.attestation.as_ref().map(|a| a.0.clone()),
            file_text: content.file_text.clone(),
            labels: content.labels.clone(),
            id: String::new(),
            registry: Some((runtime, handle)),
        };
        // Removed newest first: the tag, then the ID should anything be left.
        daemon.remove_when_done(&pulled.config_digest);
        daemon.remove_when_done(&pulled.index_digest);
        daemon.remove_when_done(&pulled.reference);
        daemon.try_docker_stdout(["pull", pulled.reference.as_str()])?;
        if both {
            if let Some(config) = &content.arm64_config {
                daemon.remove_when_done(config);
            }
            daemon.try_docker_stdout([
                "pull",
                "--platform",
                "linux/arm64",
                pulled.reference.as_str(),
            ])?;
        }
        pulled.id = daemon.try_inspect(&pulled.reference)?["Id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(pulled)
    }

    /// The registry's `host:port`.
    pub fn registry_host(&self) -> String {
        self.reference
            .split_once('/')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_default()
    }
}

impl Drop for PulledIndex {
    fn drop(&mut self) {
        if let Some((runtime, handle)) = self.registry.take() {
            runtime.block_on(handle.shutdown());
        }
    }
}

/// A blob or manifest: its digest and bytes.
type Blob = (String, Vec<u8>);

/// Everything the registry serves (and the digests it does not).
struct Content {
    flavour: IndexFlavour,
    layers: Vec<Blob>,
    diff_ids: Vec<String>,
    config: Blob,
    manifest: Blob,
    missing_manifest: Blob,
    /// The arm64 image's blobs, when served.
    arm64_blobs: Vec<Blob>,
    arm64: Option<(Vec<String>, String)>,
    arm64_config: Option<String>,
    attestation: Option<Blob>,
    attestation_blobs: Vec<Blob>,
    index: Blob,
    file_text: String,
    labels: BTreeMap<String, String>,
}

impl Content {
    fn new(flavour: IndexFlavour, repository: &str, both: bool) -> Result<Content, Error> {
        let context = |e: io::Error| Error::Context(e);
        let busybox = busybox_static()?;
        let file_text = format!("{repository}\n");
        let mut base = tar::Builder::new(Vec::new());
        append(&mut base, tar::EntryType::Directory, "bin/", 0o755, &[])?;
        append(
            &mut base,
            tar::EntryType::Regular,
            "bin/busybox",
            0o755,
            &busybox,
        )?;
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        base.append_link(&mut h, "bin/sh", "busybox")
            .map_err(context)?;
        let mut top = tar::Builder::new(Vec::new());
        append(
            &mut top,
            tar::EntryType::Regular,
            PulledIndex::FILE.trim_start_matches('/'),
            0o644,
            file_text.as_bytes(),
        )?;
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in [base, top] {
            let plain = tar.into_inner().map_err(context)?;
            diff_ids.push(digest(&plain));
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(&plain).map_err(context)?;
            let gz = gz.finish().map_err(context)?;
            layers.push((digest(&gz), gz));
        }
        let (manifest_type, config_type, layer_type, index_type) = match flavour {
            IndexFlavour::Oci => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.index.v1+json",
            ),
            IndexFlavour::DockerList => (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ),
        };
        let labels: BTreeMap<String, String> = [
            ("org.example.fixture".to_owned(), format!("{flavour:?}")),
            ("org.example.repository".to_owned(), repository.to_owned()),
        ]
        .into();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {
                "Cmd": ["/bin/busybox", "true"],
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [
                {"created": "2023-11-14T22:13:20Z", "created_by": "COPY busybox / # buildkit"},
                {"created": "2023-11-14T22:13:20Z", "created_by": "LABEL org.example.fixture", "empty_layer": true},
                {"created": "2023-11-14T22:13:20Z", "created_by": "COPY fixture.txt / # buildkit"},
            ],
        });
        let config = blob(&config);
        let descriptor = |media_type: &str, (d, b): &Blob| json!({"mediaType": media_type, "digest": d, "size": b.len()});
        let manifest = blob(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": descriptor(config_type, &config),
            "layers": layers.iter().map(|l| descriptor(layer_type, l)).collect::<Vec<_>>(),
        }));
        // The other platform: its manifest is served, its blobs are not.
        let absent = |what: &str| {
            let bytes = format!("{repository} arm64 {what}").into_bytes();
            (digest(&bytes), bytes)
        };
        let (missing_manifest, arm64_blobs, arm64, arm64_config) = if both {
            // A whole arm64 image: the same base, its own top file.
            let arm_text = format!("{repository} arm64\n");
            let mut top = tar::Builder::new(Vec::new());
            append(
                &mut top,
                tar::EntryType::Regular,
                PulledIndex::FILE.trim_start_matches('/'),
                0o644,
                arm_text.as_bytes(),
            )?;
            let plain = top.into_inner().map_err(context)?;
            let arm_diff_ids = vec![diff_ids[0].clone(), digest(&plain)];
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(&plain).map_err(context)?;
            let gz = gz.finish().map_err(context)?;
            let arm_top = (digest(&gz), gz);
            let arm_config = blob(&json!({
                "architecture": "arm64",
                "variant": "v8",
                "os": "linux",
                "created": "2023-11-14T22:13:20Z",
                "config": {"Cmd": ["/bin/busybox", "true"], "Labels": labels},
                "rootfs": {"type": "layers", "diff_ids": arm_diff_ids},
                "history": [
                    {"created": "2023-11-14T22:13:20Z", "created_by": "COPY busybox / # buildkit"},
                    {"created": "2023-11-14T22:13:20Z", "created_by": "COPY fixture.txt / # buildkit"},
                ],
            }));
            let manifest = blob(&json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": descriptor(config_type, &arm_config),
                "layers": [descriptor(layer_type, &layers[0]), descriptor(layer_type, &arm_top)],
            }));
            let config_digest = arm_config.0.clone();
            (
                manifest,
                vec![arm_config, arm_top],
                Some((arm_diff_ids, arm_text)),
                Some(config_digest),
            )
        } else {
            let manifest = blob(&json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": descriptor(config_type, &absent("config")),
                "layers": [descriptor(layer_type, &absent("layer"))],
            }));
            (manifest, Vec::new(), None, None)
        };
        let mut entries = vec![
            platform(descriptor(manifest_type, &manifest), "amd64", None),
            platform(
                descriptor(manifest_type, &missing_manifest),
                "arm64",
                Some("v8"),
            ),
        ];
        let mut attestation = None;
        let mut attestation_blobs = Vec::new();
        if flavour == IndexFlavour::Oci {
            let statement = blob(&json!({
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": "https://slsa.dev/provenance/v0.2",
                "subject": [{
                    "name": format!("pkg:docker/{repository}@{TAG}?platform=linux%2Famd64"),
                    "digest": {"sha256": manifest.0.trim_start_matches("sha256:")},
                }],
                "predicate": {"buildType": "https://mobyproject.org/buildkit@v1"},
            }));
            // An SBOM beside the provenance, as `--sbom=true` adds one.
            let sbom = blob(&json!({
                "_type": "https://in-toto.io/Statement/v0.6",
                "predicateType": "https://spdx.dev/Document",
                "subject": [{
                    "name": format!("pkg:docker/{repository}@{TAG}?platform=linux%2Famd64"),
                    "digest": {"sha256": manifest.0.trim_start_matches("sha256:")},
                }],
                "predicate": {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "packages": []},
            }));
            let att_config = blob(&json!({
                "architecture": "unknown",
                "os": "unknown",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [statement.0, sbom.0]},
            }));
            let in_toto = |statement: &Blob, predicate: &str| {
                let mut layer = descriptor("application/vnd.in-toto+json", statement);
                layer["annotations"] = json!({"in-toto.io/predicate-type": predicate});
                layer
            };
            let att = blob(&json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": descriptor(config_type, &att_config),
                "layers": [
                    in_toto(&statement, "https://slsa.dev/provenance/v0.2"),
                    in_toto(&sbom, "https://spdx.dev/Document"),
                ],
            }));
            let mut entry = platform(descriptor(manifest_type, &att), "unknown", None);
            entry["platform"]["os"] = json!("unknown");
            entry["annotations"] = json!({
                "vnd.docker.reference.digest": manifest.0,
                "vnd.docker.reference.type": "attestation-manifest",
            });
            entries.push(entry);
            attestation_blobs = vec![statement, sbom, att_config];
            attestation = Some(att);
        }
        let index = blob(&json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": entries,
        }));
        Ok(Content {
            flavour,
            layers,
            diff_ids,
            config,
            manifest,
            missing_manifest,
            arm64_blobs,
            arm64,
            arm64_config,
            attestation,
            attestation_blobs,
            index,
            file_text,
            labels,
        })
    }

    /// Puts every blob and manifest into `storage` under `repository`, the
    /// index under [`TAG`].
    async fn store(&self, storage: &dyn Storage, repository: &str) -> Result<(), String> {
        let mut blobs = vec![&self.config];
        blobs.extend(&self.layers);
        blobs.extend(&self.attestation_blobs);
        blobs.extend(&self.arm64_blobs);
        for (d, bytes) in blobs {
            let id = storage
                .create_upload(repository)
                .await
                .map_err(|e| format!("upload: {e}"))?;
            let data = futures::stream::iter([Ok(Bytes::from(bytes.clone()))]);
            storage
                .append_upload(repository, &id, Box::pin(data))
                .await
                .map_err(|e| format!("upload: {e}"))?;
            storage
                .commit_upload(repository, &id, &parse(d)?)
                .await
                .map_err(|e| format!("commit {d}: {e}"))?;
        }
        let (manifest_type, index_type) = match self.flavour {
            IndexFlavour::Oci => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.index.v1+json",
            ),
            IndexFlavour::DockerList => (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ),
        };
        let mut manifests = vec![
            (&self.manifest, manifest_type, Vec::new()),
            (&self.missing_manifest, manifest_type, Vec::new()),
        ];
        if let Some(att) = &self.attestation {
            manifests.push((att, manifest_type, Vec::new()));
        }
        manifests.push((&self.index, index_type, vec![TAG.to_owned()]));
        for ((d, bytes), media_type, tags) in manifests {
            let stored = StoredManifest::new(media_type, Bytes::from(bytes.clone()), None);
            storage
                .put_manifest(repository, &parse(d)?, stored, &tags)
                .await
                .map_err(|e| format!("manifest {d}: {e}"))?;
        }
        Ok(())
    }
}

fn parse(d: &str) -> Result<Digest, String> {
    Digest::from_str(d).map_err(|e| format!("digest {d}: {e}"))
}

/// A descriptor with a `platform`.
fn platform(mut descriptor: Value, architecture: &str, variant: Option<&str>) -> Value {
    descriptor["platform"] = json!({"architecture": architecture, "os": "linux"});
    if let Some(v) = variant {
        descriptor["platform"]["variant"] = json!(v);
    }
    descriptor
}

/// A JSON document as bytes, with its digest.
fn blob(value: &Value) -> Blob {
    let bytes = serde_json::to_vec(value).expect("JSON serialises");
    (digest(&bytes), bytes)
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    mode: u32,
    data: &[u8],
) -> Result<(), Error> {
    let mut h = header(kind, mode, data.len() as u64);
    tar.append_data(&mut h, name, data).map_err(Error::Context)
}
