//! Telling image manifests from indexes, and picking a platform's image
//! manifest out of an index.
//!
//! What a daemon pushes, and what `docker save` names by the image ID, is an
//! image manifest (OCI or Docker schema 2) or, for images as BuildKit makes
//! them and multi-platform images on the containerd store, an index (OCI
//! image index or Docker manifest list) naming one image manifest per
//! platform beside attestation manifests (platform `unknown/unknown`,
//! annotation `vnd.docker.reference.type: attestation-manifest`). Both the
//! push route and the save route go through here, so an index is never read
//! as an image manifest, nor an image manifest as a config.

use serde::Deserialize;

/// OCI image manifest.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 image manifest.
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The annotation BuildKit puts on an attestation manifest's descriptor.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

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
/// by its shape (`manifests` or `layers`).
pub fn kind_of(media_type: &str, bytes: &[u8]) -> ManifestKind {
    match media_type {
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => return ManifestKind::Image,
        MT_OCI_INDEX | MT_DOCKER_LIST => return ManifestKind::Index,
        _ => {}
    }
    #[derive(Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
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

/// A platform as an index names it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Platform {
    /// E.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// E.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// E.g. `v8`; empty when none.
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// A platform of these parts (an empty variant is none).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// Whether an image of `os`/`architecture`/`variant` is of this
    /// platform, as containerd's platform matcher sees it: the same OS and
    /// architecture, and the variant when this platform names one (with
    /// arm64's default `v8` the same as none, and arm's default `v7`).
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let normal = |arch: &str, v: Option<&str>| -> Option<String> {
            match (arch, v.filter(|v| !v.is_empty())) {
                ("arm64", None | Some("v8")) => None,
                ("arm", None) => Some("v7".to_owned()),
                (_, v) => v.map(str::to_owned),
            }
        };
        self.os == os
            && self.architecture == architecture
            && (self.variant.is_none()
                || normal(&self.architecture, self.variant.as_deref())
                    == normal(architecture, variant))
    }

    /// The platform as the Engine API's `platform` query parameter takes
    /// it (an OCI platform object in JSON).
    pub fn to_api_json(&self) -> String {
        let mut value = serde_json::json!({"os": self.os, "architecture": self.architecture});
        if let Some(variant) = &self.variant {
            value["variant"] = serde_json::Value::from(variant.as_str());
        }
        value.to_string()
    }
}

/// Why a platform as typed (`os/arch[/variant]`) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid platform {typed:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
)]
pub struct PlatformParseError {
    /// What was typed.
    pub typed: String,
}

impl std::str::FromStr for Platform {
    type Err = PlatformParseError;

    /// `os/arch[/variant]` as `docker --platform` takes it, lower case.
    fn from_str(typed: &str) -> Result<Self, Self::Err> {
        let err = || PlatformParseError {
            typed: typed.to_owned(),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        let lower = typed.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Self::new(os, arch, None)),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
                Ok(Self::new(os, arch, Some(variant)))
            }
            _ => Err(err()),
        }
    }
}

/// One entry of an index.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IndexEntry {
    /// The entry's media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:…` of the manifest it names.
    pub digest: String,
    /// Its size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Its platform, when the index says.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Its annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl IndexEntry {
    /// True for an attestation manifest (provenance, SBOM) BuildKit adds.
    pub fn is_attestation(&self) -> bool {
        self.annotations
            .get(REFERENCE_TYPE)
            .is_some_and(|t| t == "attestation-manifest")
            || self
                .platform
                .as_ref()
                .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
    }
}

/// True for an attestation manifest (BuildKit's provenance or SBOM): an
/// image manifest whose layers are in-toto statements, not filesystems.
pub fn is_attestation_manifest(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Layer {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    serde_json::from_slice::<Manifest>(bytes).is_ok_and(|m| {
        !m.layers.is_empty()
            && m.layers
                .iter()
                .all(|l| l.media_type == "application/vnd.in-toto+json")
    })
}

/// Why no image manifest could be picked out of an index.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexChoiceError {
    /// The bytes are not an index.
    #[error("not an image index: {0}")]
    NotAnIndex(String),
    /// No entry is for the platform.
    #[error("the image index has no manifest for {wanted} (it has {})", list(.present))]
    NoSuchPlatform {
        /// The platform looked for.
        wanted: String,
        /// The platforms it names (attestations left out).
        present: Vec<String>,
    },
}

fn list(present: &[String]) -> String {
    if present.is_empty() {
        "none".to_owned()
    } else {
        present.join(", ")
    }
}

/// The entries of an index, in order.
pub fn index_entries(bytes: &[u8]) -> Result<Vec<IndexEntry>, IndexChoiceError> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<IndexEntry>,
    }
    serde_json::from_slice::<Index>(bytes)
        .map(|i| i.manifests)
        .map_err(|e| IndexChoiceError::NotAnIndex(e.to_string()))
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
) -> Result<IndexEntry, IndexChoiceError> {
    let entries = index_entries(index)?;
    let images: Vec<&IndexEntry> = entries.iter().filter(|e| !e.is_attestation()).collect();
    let matching: Vec<&IndexEntry> = images
        .iter()
        .copied()
        .filter(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == architecture)
        })
        .collect();
    let by_variant = variant.and_then(|v| {
        matching
            .iter()
            .find(|e| e.platform.as_ref().and_then(|p| p.variant.as_deref()) == Some(v))
    });
    if let Some(entry) = by_variant.or(matching.first()) {
        return Ok((*entry).clone());
    }
    if let [only] = images.as_slice()
        && only.platform.is_none()
    {
        return Ok((*only).clone());
    }
    let wanted = Platform {
        os: os.to_owned(),
        architecture: architecture.to_owned(),
        variant: variant.map(str::to_owned),
    };
    Err(IndexChoiceError::NoSuchPlatform {
        wanted: wanted.to_string(),
        present: images
            .iter()
            .map(|e| {
                e.platform
                    .as_ref()
                    .map_or_else(|| "no platform".to_owned(), Platform::to_string)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &str) -> Vec<u8> {
        format!(r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_INDEX}","manifests":[{entries}]}}"#)
            .into_bytes()
    }

    const AMD64: &str = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":10,"platform":{"architecture":"amd64","os":"linux"}}"#;
    const ARM64: &str = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":10,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}"#;
    const ATTEST: &str = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":10,"platform":{"architecture":"unknown","os":"unknown"},"annotations":{"vnd.docker.reference.digest":"sha256:aa","vnd.docker.reference.type":"attestation-manifest"}}"#;

    #[test]
    fn kinds_by_media_type_then_field_then_shape() {
        assert_eq!(kind_of(MT_OCI_INDEX, b"{}"), ManifestKind::Index);
        assert_eq!(kind_of(MT_DOCKER_LIST, b"{}"), ManifestKind::Index);
        assert_eq!(kind_of(MT_DOCKER_MANIFEST, b"{}"), ManifestKind::Image);
        assert_eq!(kind_of("", &index(AMD64)), ManifestKind::Index);
        assert_eq!(
            kind_of("", br#"{"schemaVersion":2,"manifests":[]}"#),
            ManifestKind::Index
        );
        assert_eq!(
            kind_of("", br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            ManifestKind::Image
        );
        assert_eq!(
            kind_of("", br#"{"architecture":"amd64"}"#),
            ManifestKind::Other
        );
        assert_eq!(kind_of("", b"not json"), ManifestKind::Other);
    }

    #[test]
    fn the_platform_manifest_is_picked_never_an_attestation() {
        let both = index(&format!("{ATTEST},{ARM64},{AMD64}"));
        assert_eq!(
            manifest_for(&both, "linux", "amd64", None).unwrap().digest,
            "sha256:aa"
        );
        assert_eq!(
            manifest_for(&both, "linux", "arm64", None).unwrap().digest,
            "sha256:bb"
        );
        assert_eq!(
            manifest_for(&both, "linux", "arm64", Some("v8"))
                .unwrap()
                .digest,
            "sha256:bb"
        );
        let only_attestation = index(ATTEST);
        assert!(manifest_for(&only_attestation, "unknown", "unknown", None).is_err());
    }

    #[test]
    fn an_absent_platform_names_the_ones_there() {
        let both = index(&format!("{AMD64},{ARM64},{ATTEST}"));
        let err = manifest_for(&both, "linux", "s390x", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image index has no manifest for linux/s390x (it has linux/amd64, linux/arm64/v8)"
        );
    }

    #[test]
    fn platforms_parse_as_docker_takes_them() {
        let p: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(p, Platform::new("linux", "amd64", None));
        assert_eq!(p.to_string(), "linux/amd64");
        let p: Platform = "Linux/ARM64/v8".parse().unwrap();
        assert_eq!(p, Platform::new("linux", "arm64", Some("v8")));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&p.to_api_json()).unwrap(),
            serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
        );
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/amd 64",
        ] {
            let err = bad.parse::<Platform>().unwrap_err();
            assert!(
                err.to_string().contains("expected os/arch[/variant]"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn platforms_match_as_containerd_matches_them() {
        let arm64: Platform = "linux/arm64".parse().unwrap();
        assert!(arm64.matches("linux", "arm64", None));
        assert!(arm64.matches("linux", "arm64", Some("v8")));
        assert!(!arm64.matches("linux", "amd64", None));
        assert!(!arm64.matches("windows", "arm64", None));
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(v8.matches("linux", "arm64", None));
        let arm_v6: Platform = "linux/arm/v6".parse().unwrap();
        assert!(!arm_v6.matches("linux", "arm", None));
        assert!(arm_v6.matches("linux", "arm", Some("v6")));
        let arm_v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(arm_v7.matches("linux", "arm", None));
    }

    #[test]
    fn one_entry_without_platform_is_taken() {
        let one = index(
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:dd","size":3}"#,
        );
        assert_eq!(
            manifest_for(&one, "linux", "amd64", None).unwrap().digest,
            "sha256:dd"
        );
        assert!(matches!(
            manifest_for(b"{}", "linux", "amd64", None),
            Err(IndexChoiceError::NotAnIndex(_))
        ));
    }
}
