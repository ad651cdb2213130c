//! Image manifests and indexes, OCI and Docker schema 2, read with
//! `oci-spec`'s types.
//!
//! What a daemon pushes, what `docker save` and the containerd content
//! store name by the image ID, and what this crate stores beside the layers
//! is an image manifest (OCI, or Docker schema 2: the same shape under
//! other media types) or, for images as BuildKit makes them and
//! multi-platform images on the containerd store, an index (OCI image index
//! or Docker manifest list) naming one image manifest per platform beside
//! attestation manifests (platform `unknown/unknown`, annotation
//! `vnd.docker.reference.type: attestation-manifest`). The push, save and
//! store routes, the driver and the writer all read them here, so an index
//! is never read as an image manifest, nor an image manifest as a config.
//!
//! Docker's media types deserialize as
//! [`MediaType::Other`](oci_spec::image::MediaType::Other); a manifest
//! list is an [`ImageIndex`] (it has no `config`); both kinds must say
//! `schemaVersion` 2, and every descriptor needs its media type, digest and
//! size, as the specifications require.

use oci_spec::image::{Arch, Descriptor, Digest, ImageIndex, ImageManifest, Os};
use serde::Deserialize;

use crate::BlobRef;

/// OCI image manifest.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 image manifest.
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The media type of an attestation manifest's layers (in-toto statements).
const MT_IN_TOTO: &str = "application/vnd.in-toto+json";
/// The annotation BuildKit puts on an attestation manifest's descriptor.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// Why a manifest or an index could not be read, or no entry picked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes are not an image manifest (OCI or Docker schema 2).
    #[error("not an image manifest")]
    NotAnImageManifest(#[source] serde_json::Error),
    /// The bytes are not an index (OCI image index or Docker manifest list).
    #[error("not an image index")]
    NotAnIndex(#[source] serde_json::Error),
    /// The document's `schemaVersion` is not 2.
    #[error("schema version {found} where 2 is required")]
    SchemaVersion {
        /// The version it says.
        found: u32,
    },
    /// No entry of the index is for the platform.
    #[error("the image index has no manifest for {wanted} (it has {})", list(.present))]
    NoSuchPlatform {
        /// The platform looked for, `os/arch[/variant]`.
        wanted: String,
        /// The platforms it names (attestations left out).
        present: Vec<String>,
    },
}

/// What a manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest: a config and layers.
    Image,
    /// An index or manifest list: manifests per platform.
    Index,
    /// Neither (not JSON, or neither shape).
    Other,
}

/// Tells an image manifest from an index: by its media type (the one it
/// was sent under, else its own `mediaType` field), and where neither says,
/// by its shape (`manifests` without `layers`, or `layers` and `config`).
pub fn kind_of(media_type: &str, bytes: &[u8]) -> ManifestKind {
    match media_type {
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => return ManifestKind::Image,
        MT_OCI_INDEX | MT_DOCKER_LIST => return ManifestKind::Index,
        _ => {}
    }
    /// Which of the telling fields are there (their values unread).
    #[derive(Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        layers: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        config: Option<serde::de::IgnoredAny>,
    }
    let Ok(shape) = serde_json::from_slice::<Shape>(bytes) else {
        return ManifestKind::Other;
    };
    match shape.media_type.as_deref() {
        Some(MT_OCI_MANIFEST | MT_DOCKER_MANIFEST) => ManifestKind::Image,
        Some(MT_OCI_INDEX | MT_DOCKER_LIST) => ManifestKind::Index,
        _ if shape.manifests.is_some() && shape.layers.is_none() => ManifestKind::Index,
        _ if shape.layers.is_some() && shape.config.is_some() => ManifestKind::Image,
        _ => ManifestKind::Other,
    }
}

/// The `mediaType` a manifest or index declares, else OCI's of its kind
/// (an index's when [`kind_of`] says index, an image manifest's otherwise).
pub fn media_type_of(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Declared {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Declared>(bytes)
        .ok()
        .and_then(|d| d.media_type)
        .unwrap_or_else(|| match kind_of("", bytes) {
            ManifestKind::Index => MT_OCI_INDEX.to_owned(),
            _ => MT_OCI_MANIFEST.to_owned(),
        })
}

/// `sha256:` of `bytes`: the digest a manifest is named by.
pub fn digest_of(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    crate::pipeline::to_digest(sha2::Sha256::new_with_prefix(bytes))
}

/// Reads an image manifest, OCI or Docker schema 2 (`schemaVersion` 2).
pub fn image_manifest(bytes: &[u8]) -> Result<ImageManifest, ManifestError> {
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(ManifestError::NotAnImageManifest)?;
    schema_2(manifest.schema_version())?;
    Ok(manifest)
}

/// Reads an index, OCI image index or Docker manifest list
/// (`schemaVersion` 2).
pub fn image_index(bytes: &[u8]) -> Result<ImageIndex, ManifestError> {
    let index: ImageIndex = serde_json::from_slice(bytes).map_err(ManifestError::NotAnIndex)?;
    schema_2(index.schema_version())?;
    Ok(index)
}

/// The blobs an image manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBlobs {
    /// The manifest's media type: the one it declares, else the one it was
    /// sent or stored under.
    pub media_type: String,
    /// Its config.
    pub config: BlobRef,
    /// Its layers, base first.
    pub layers: Vec<BlobRef>,
}

impl ManifestBlobs {
    /// Reads an OCI or Docker schema 2 image manifest sent or stored under
    /// `media_type`.
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest = image_manifest(bytes)?;
        Ok(Self {
            media_type: manifest
                .media_type()
                .as_ref()
                .map_or_else(|| media_type.to_owned(), ToString::to_string),
            config: manifest.config().into(),
            layers: manifest.layers().iter().map(BlobRef::from).collect(),
        })
    }
}

impl From<&Descriptor> for BlobRef {
    fn from(d: &Descriptor) -> Self {
        Self {
            digest: d.digest().clone(),
            size: d.size(),
            media_type: d.media_type().to_string(),
        }
    }
}

/// True for an attestation manifest (BuildKit's provenance or SBOM): an
/// image manifest whose layers are in-toto statements, not filesystems.
pub fn is_attestation_manifest(bytes: &[u8]) -> bool {
    image_manifest(bytes).is_ok_and(|m| {
        !m.layers().is_empty()
            && m.layers()
                .iter()
                .all(|l| l.media_type().as_ref() == MT_IN_TOTO)
    })
}

/// True for an index entry naming an attestation manifest BuildKit adds:
/// annotated `vnd.docker.reference.type: attestation-manifest`, or of
/// platform `unknown/unknown`.
pub fn is_attestation(entry: &Descriptor) -> bool {
    entry
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REFERENCE_TYPE))
        .is_some_and(|t| t == "attestation-manifest")
        || entry.platform().as_ref().is_some_and(|p| {
            *p.os() == Os::Other("unknown".into())
                && *p.architecture() == Arch::Other("unknown".into())
        })
}

/// The entries of an index, in order.
pub fn index_entries(bytes: &[u8]) -> Result<Vec<Descriptor>, ManifestError> {
    Ok(image_index(bytes)?.manifests().clone())
}

/// The image manifest entry of `index` for `os`/`architecture` (and
/// `variant`, when given): attestation manifests are never picked; among
/// entries of that OS and architecture one of the asked variant, else the
/// first. An index of one image manifest without a platform gives that one.
pub fn manifest_for(
    index: &[u8],
    os: &str,
    architecture: &str,
    variant: Option<&str>,
) -> Result<Descriptor, ManifestError> {
    let entries = index_entries(index)?;
    let images: Vec<&Descriptor> = entries.iter().filter(|e| !is_attestation(e)).collect();
    let (os_wanted, arch_wanted) = (Os::from(os), Arch::from(architecture));
    let matching: Vec<&Descriptor> = images
        .iter()
        .copied()
        .filter(|e| {
            e.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == os_wanted && *p.architecture() == arch_wanted)
        })
        .collect();
    let by_variant = variant.and_then(|v| {
        matching
            .iter()
            .find(|e| e.platform().as_ref().and_then(|p| p.variant().as_deref()) == Some(v))
    });
    if let Some(entry) = by_variant.or(matching.first()) {
        return Ok((*entry).clone());
    }
    if let [only] = images.as_slice()
        && only.platform().is_none()
    {
        return Ok((*only).clone());
    }
    Err(ManifestError::NoSuchPlatform {
        wanted: platform_name(os, architecture, variant),
        present: images
            .iter()
            .map(|e| {
                e.platform().as_ref().map_or_else(
                    || "no platform".to_owned(),
                    |p| {
                        platform_name(
                            &p.os().to_string(),
                            &p.architecture().to_string(),
                            p.variant().as_deref(),
                        )
                    },
                )
            })
            .collect(),
    })
}

/// `os/arch[/variant]` (an empty variant is none).
fn platform_name(os: &str, architecture: &str, variant: Option<&str>) -> String {
    match variant.filter(|v| !v.is_empty()) {
        Some(variant) => format!("{os}/{architecture}/{variant}"),
        None => format!("{os}/{architecture}"),
    }
}

fn list(present: &[String]) -> String {
    if present.is_empty() {
        "none".to_owned()
    } else {
        present.join(", ")
    }
}

fn schema_2(found: u32) -> Result<(), ManifestError> {
    if found == 2 {
        Ok(())
    } else {
        Err(ManifestError::SchemaVersion { found })
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::image::MediaType;

    use super::*;

    /// `sha256:` and 64 times `c`.
    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// An image manifest as Docker 20.10 pushes it to a registry (schema 2,
    /// indented by three spaces as distribution marshals it).
    fn docker_20_10_manifest() -> String {
        format!(
            r#"{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {{
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1457,
      "digest": "{config}"
   }},
   "layers": [
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 2818413,
         "digest": "{base}"
      }},
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 140,
         "digest": "{top}"
      }}
   ]
}}"#,
            config = digest('c'),
            base = digest('1'),
            top = digest('2'),
        )
    }

    /// A multi-platform manifest list as Docker Hub serves it and a
    /// daemon pushes it again (Windows entries carry `os.version`).
    fn docker_manifest_list() -> String {
        format!(
            r#"{{
   "manifests": [
      {{
         "digest": "{amd64}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{
            "architecture": "amd64",
            "os": "linux"
         }},
         "size": 528
      }},
      {{
         "digest": "{arm_v6}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{
            "architecture": "arm",
            "os": "linux",
            "variant": "v6"
         }},
         "size": 528
      }},
      {{
         "digest": "{arm_v7}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{
            "architecture": "arm",
            "os": "linux",
            "variant": "v7"
         }},
         "size": 528
      }},
      {{
         "digest": "{windows}",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {{
            "architecture": "amd64",
            "os": "windows",
            "os.version": "10.0.17763.5458"
         }},
         "size": 1125
      }}
   ],
   "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
   "schemaVersion": 2
}}"#,
            amd64 = digest('a'),
            arm_v6 = digest('6'),
            arm_v7 = digest('7'),
            windows = digest('f'),
        )
    }

    /// The index BuildKit (Docker 24+, containerd store) makes of a build
    /// with provenance: the image manifest and its attestation manifest.
    fn buildkit_index() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{image}","size":673,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{attestation}","size":566,"annotations":{{"vnd.docker.reference.digest":"{image}","vnd.docker.reference.type":"attestation-manifest"}},"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#,
            image = digest('a'),
            attestation = digest('b'),
        )
    }

    /// The attestation manifest that index names.
    fn buildkit_attestation() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":167}},"layers":[{{"mediaType":"application/vnd.in-toto+json","digest":"{statement}","size":1411,"annotations":{{"in-toto.io/predicate-type":"https://slsa.dev/provenance/v0.2"}}}}]}}"#,
            config = digest('c'),
            statement = digest('d'),
        )
    }

    /// An OCI image manifest as Podman 3/4 (containers/image) pushes it:
    /// no `mediaType` of its own.
    fn podman_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1032}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":2814559}}],"annotations":{{"org.opencontainers.image.base.digest":"","org.opencontainers.image.base.name":""}}}}"#,
            config = digest('c'),
            layer = digest('1'),
        )
    }

    #[track_caller]
    fn check_kind(media_type: &str, bytes: &str, expected: ManifestKind) {
        assert_eq!(kind_of(media_type, bytes.as_bytes()), expected);
    }

    #[test]
    fn kinds_by_media_type_then_field_then_shape() {
        check_kind(MT_OCI_INDEX, "{}", ManifestKind::Index);
        check_kind(MT_DOCKER_LIST, "{}", ManifestKind::Index);
        check_kind(MT_DOCKER_MANIFEST, "{}", ManifestKind::Image);
        check_kind(MT_OCI_MANIFEST, "{}", ManifestKind::Image);
        check_kind("", &buildkit_index(), ManifestKind::Index);
        check_kind("", &docker_manifest_list(), ManifestKind::Index);
        check_kind("", &docker_20_10_manifest(), ManifestKind::Image);
        check_kind("", &podman_manifest(), ManifestKind::Image);
        check_kind(
            "",
            r#"{"schemaVersion":2,"manifests":[]}"#,
            ManifestKind::Index,
        );
        check_kind(
            "",
            r#"{"schemaVersion":2,"config":{},"layers":[]}"#,
            ManifestKind::Image,
        );
        check_kind("", r#"{"architecture":"amd64"}"#, ManifestKind::Other);
        check_kind("", "not json", ManifestKind::Other);
        // The declared type wins over the shape.
        check_kind(
            "",
            &format!(r#"{{"mediaType":"{MT_OCI_MANIFEST}","manifests":[]}}"#),
            ManifestKind::Image,
        );
    }

    #[test]
    fn a_docker_20_10_schema_2_manifest_parses() {
        let body = docker_20_10_manifest();
        let typed = image_manifest(body.as_bytes()).unwrap();
        assert_eq!(
            typed.media_type(),
            &Some(MediaType::Other(MT_DOCKER_MANIFEST.into()))
        );
        assert_eq!(
            typed.config().media_type(),
            &MediaType::Other("application/vnd.docker.container.image.v1+json".into())
        );
        let blobs = ManifestBlobs::parse("whatever it was sent as", body.as_bytes()).unwrap();
        assert_eq!(blobs.media_type, MT_DOCKER_MANIFEST);
        assert_eq!(
            blobs.config,
            BlobRef {
                digest: digest('c').parse().unwrap(),
                size: 1457,
                media_type: "application/vnd.docker.container.image.v1+json".into(),
            }
        );
        assert_eq!(
            blobs.layers,
            [('1', 2818413), ('2', 140)].map(|(c, size)| BlobRef {
                digest: digest(c).parse().unwrap(),
                size,
                media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
            })
        );
        assert_eq!(media_type_of(body.as_bytes()), MT_DOCKER_MANIFEST);
        assert!(!is_attestation_manifest(body.as_bytes()));
    }

    #[test]
    fn a_podman_manifest_without_media_type_takes_the_one_it_came_under() {
        let body = podman_manifest();
        let blobs = ManifestBlobs::parse(MT_OCI_MANIFEST, body.as_bytes()).unwrap();
        assert_eq!(blobs.media_type, MT_OCI_MANIFEST);
        assert_eq!(blobs.layers.len(), 1);
        assert_eq!(
            blobs.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(media_type_of(body.as_bytes()), MT_OCI_MANIFEST);
    }

    #[test]
    fn a_docker_manifest_list_is_an_index() {
        let list = docker_manifest_list();
        assert!(matches!(
            ManifestBlobs::parse(MT_DOCKER_LIST, list.as_bytes()),
            Err(ManifestError::NotAnImageManifest(_))
        ));
        let entries = index_entries(list.as_bytes()).unwrap();
        assert_eq!(entries.len(), 4);
        assert!(entries.iter().all(|e| !is_attestation(e)));
        assert_eq!(
            entries[0].media_type(),
            &MediaType::Other(MT_DOCKER_MANIFEST.into())
        );
        assert_eq!(media_type_of(list.as_bytes()), MT_DOCKER_LIST);
        let pick = |os, arch, variant| {
            manifest_for(list.as_bytes(), os, arch, variant)
                .map(|e| e.digest().to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(pick("linux", "amd64", None), Ok(digest('a')));
        assert_eq!(pick("windows", "amd64", None), Ok(digest('f')));
        assert_eq!(pick("linux", "arm", Some("v7")), Ok(digest('7')));
        // No variant asked: the first of that architecture.
        assert_eq!(pick("linux", "arm", None), Ok(digest('6')));
        // A variant not there: still the first of that architecture.
        assert_eq!(pick("linux", "arm", Some("v5")), Ok(digest('6')));
        assert_eq!(
            pick("linux", "arm64", Some("v8")),
            Err(
                "the image index has no manifest for linux/arm64/v8 (it has linux/amd64, \
                 linux/arm/v6, linux/arm/v7, windows/amd64)"
                    .into()
            )
        );
    }

    #[test]
    fn a_buildkit_index_gives_the_platform_manifest_never_the_attestation() {
        let index = buildkit_index();
        let entries = index_entries(index.as_bytes()).unwrap();
        assert_eq!(
            entries.iter().map(is_attestation).collect::<Vec<_>>(),
            [false, true]
        );
        let entry = manifest_for(index.as_bytes(), "linux", "amd64", None).unwrap();
        assert_eq!(entry.digest().to_string(), digest('a'));
        assert_eq!(entry.media_type(), &MediaType::ImageManifest);
        let err = manifest_for(index.as_bytes(), "unknown", "unknown", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image index has no manifest for unknown/unknown (it has linux/amd64)"
        );
        let err = manifest_for(index.as_bytes(), "linux", "s390x", None).unwrap_err();
        assert!(
            matches!(&err, ManifestError::NoSuchPlatform { wanted, present }
                if wanted == "linux/s390x" && present == &["linux/amd64"]),
            "{err}"
        );

        let attestation = buildkit_attestation();
        assert!(is_attestation_manifest(attestation.as_bytes()));
        assert_eq!(kind_of("", attestation.as_bytes()), ManifestKind::Image);
        assert!(!is_attestation_manifest(index.as_bytes()));
        assert!(!is_attestation_manifest(b"not json"));
    }

    #[test]
    fn attestations_are_told_by_annotation_or_unknown_platform() {
        let entry = |rest: &str| -> Descriptor {
            serde_json::from_str(&format!(
                r#"{{"mediaType":"{MT_OCI_MANIFEST}","digest":"{}","size":1{rest}}}"#,
                digest('e')
            ))
            .unwrap()
        };
        assert!(!is_attestation(&entry("")));
        assert!(is_attestation(&entry(
            r#","annotations":{"vnd.docker.reference.type":"attestation-manifest"}"#
        )));
        assert!(is_attestation(&entry(
            r#","platform":{"architecture":"unknown","os":"unknown"}"#
        )));
        assert!(!is_attestation(&entry(
            r#","platform":{"architecture":"unknown","os":"linux"}"#
        )));
        assert!(!is_attestation(&entry(
            r#","annotations":{"vnd.docker.reference.type":"other"}"#
        )));
    }

    #[test]
    fn one_entry_without_platform_is_taken() {
        let one = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_INDEX}","manifests":[{{"mediaType":"{MT_OCI_MANIFEST}","digest":"{}","size":3}}]}}"#,
            digest('d')
        );
        let entry = manifest_for(one.as_bytes(), "linux", "amd64", None).unwrap();
        assert_eq!(entry.digest().to_string(), digest('d'));
        assert_eq!(
            manifest_for(
                br#"{"schemaVersion":2,"manifests":[]}"#,
                "linux",
                "amd64",
                None
            )
            .unwrap_err()
            .to_string(),
            "the image index has no manifest for linux/amd64 (it has none)"
        );
        assert!(matches!(
            manifest_for(b"{}", "linux", "amd64", None),
            Err(ManifestError::NotAnIndex(_))
        ));
    }

    #[test]
    fn what_is_not_a_schema_2_manifest_is_refused() {
        assert!(matches!(
            ManifestBlobs::parse(MT_OCI_MANIFEST, b"not json"),
            Err(ManifestError::NotAnImageManifest(_))
        ));
        assert!(matches!(
            ManifestBlobs::parse(MT_OCI_INDEX, buildkit_index().as_bytes()),
            Err(ManifestError::NotAnImageManifest(_))
        ));
        let three = podman_manifest().replace(r#""schemaVersion":2"#, r#""schemaVersion":3"#);
        assert!(matches!(
            ManifestBlobs::parse(MT_OCI_MANIFEST, three.as_bytes()),
            Err(ManifestError::SchemaVersion { found: 3 })
        ));
        // Schema 1 (signed, `fsLayers`): no config.
        let schema_1 = format!(
            r#"{{"schemaVersion":1,"name":"demo","tag":"latest","architecture":"amd64","fsLayers":[{{"blobSum":"{}"}}],"history":[]}}"#,
            digest('1')
        );
        assert!(matches!(
            ManifestBlobs::parse("", schema_1.as_bytes()),
            Err(ManifestError::NotAnImageManifest(_))
        ));
        // A descriptor's digest must be one.
        let short = podman_manifest().replace(&digest('1'), "sha256:11");
        assert!(ManifestBlobs::parse(MT_OCI_MANIFEST, short.as_bytes()).is_err());
        assert!(matches!(
            image_index(
                buildkit_index()
                    .replace(r#""schemaVersion":2"#, r#""schemaVersion":1"#)
                    .as_bytes()
            ),
            Err(ManifestError::SchemaVersion { found: 1 })
        ));
    }

    #[test]
    fn digests_are_sha256_of_the_bytes() {
        assert_eq!(
            digest_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
