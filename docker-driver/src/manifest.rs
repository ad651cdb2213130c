//! Telling image manifests from indexes, and picking a platform's image
//! manifest out of an index.
//!
//! What a daemon pushes, and what `docker save` names by the image ID, is an
//! image manifest (OCI or Docker schema 2) or, for images as BuildKit makes
//! them and multi-platform images on the containerd store, an index (OCI
//! image index or Docker manifest list) naming one image manifest per
//! platform beside attestation manifests (platform `unknown/unknown`,
//! annotation `vnd.docker.reference.type: attestation-manifest`).
//!
//! The reading is [`layer_writer::manifest`]'s (oci-spec's types), shared
//! with the routes and the writer; this module re-exports it and gives its
//! index entries in this crate's terms ([`IndexEntry`], [`Platform`], the
//! platform as `--platform` and the Engine API take it).

use serde::Deserialize;

pub use layer_writer::manifest::{
    MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST, ManifestKind,
    is_attestation_manifest, kind_of,
};

/// Why no image manifest could be picked out of an index: `layer-writer`'s
/// [`ManifestError`](layer_writer::manifest::ManifestError) (`NotAnIndex`,
/// `NoSuchPlatform`).
pub use layer_writer::manifest::ManifestError as IndexChoiceError;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The entry's media type.
    pub media_type: String,
    /// `sha256:…` of the manifest it names.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its platform, when the index says.
    pub platform: Option<Platform>,
    /// Its annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Whether it names an attestation manifest
    /// ([`layer_writer::manifest::is_attestation`]).
    attestation: bool,
}

impl IndexEntry {
    /// True for an attestation manifest (provenance, SBOM) BuildKit adds:
    /// annotated `vnd.docker.reference.type: attestation-manifest`, or of
    /// platform `unknown/unknown`.
    pub fn is_attestation(&self) -> bool {
        self.attestation
    }
}

impl IndexEntry {
    /// The entry an index descriptor is.
    fn of(d: &layer_writer::oci_spec::image::Descriptor) -> Self {
        Self {
            media_type: d.media_type().to_string(),
            digest: d.digest().to_string(),
            size: d.size(),
            platform: d.platform().as_ref().map(|p| Platform {
                os: p.os().to_string(),
                architecture: p.architecture().to_string(),
                variant: p.variant().clone(),
            }),
            annotations: d
                .annotations()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            attestation: layer_writer::manifest::is_attestation(d),
        }
    }
}

/// The entries of an index, in order.
pub fn index_entries(bytes: &[u8]) -> Result<Vec<IndexEntry>, IndexChoiceError> {
    let entries = layer_writer::manifest::index_entries(bytes)?;
    Ok(entries.iter().map(IndexEntry::of).collect())
}

/// The image manifest entry of `index` for `os`/`architecture` (and
/// `variant`, when given), as [`layer_writer::manifest::manifest_for`]
/// picks it: attestation manifests are never picked; among entries of that
/// OS and architecture one of the asked variant, else the first. An index
/// of one image manifest without a platform gives that one.
pub fn manifest_for(
    index: &[u8],
    os: &str,
    architecture: &str,
    variant: Option<&str>,
) -> Result<IndexEntry, IndexChoiceError> {
    layer_writer::manifest::manifest_for(index, os, architecture, variant)
        .map(|d| IndexEntry::of(&d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &str) -> Vec<u8> {
        format!(r#"{{"schemaVersion":2,"mediaType":"{MT_OCI_INDEX}","manifests":[{entries}]}}"#)
            .into_bytes()
    }

    /// `sha256:` and 64 times `c`.
    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn entry(c: char, platform: &str, annotations: &str) -> String {
        format!(
            r#"{{"mediaType":"{MT_OCI_MANIFEST}","digest":"{}","size":10,"platform":{platform}{annotations}}}"#,
            digest(c)
        )
    }

    /// A BuildKit index of two platforms and an attestation.
    fn buildkit_index() -> Vec<u8> {
        index(&[
            entry('b', r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#, ""),
            entry('a', r#"{"architecture":"amd64","os":"linux"}"#, ""),
            entry(
                'c',
                r#"{"architecture":"unknown","os":"unknown"}"#,
                &format!(
                    r#","annotations":{{"vnd.docker.reference.digest":"{}","vnd.docker.reference.type":"attestation-manifest"}}"#,
                    digest('a')
                ),
            ),
        ]
        .join(","))
    }

    #[test]
    fn entries_are_given_in_this_crates_terms() {
        let entries = index_entries(&buildkit_index()).unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.digest.clone(), e.is_attestation()))
                .collect::<Vec<_>>(),
            [
                (digest('b'), false),
                (digest('a'), false),
                (digest('c'), true)
            ]
        );
        assert_eq!(entries[0].media_type, MT_OCI_MANIFEST);
        assert_eq!(entries[0].size, 10);
        assert_eq!(
            entries[0].platform,
            Some(Platform::new("linux", "arm64", Some("v8")))
        );
        assert_eq!(
            entries[2].annotations.get("vnd.docker.reference.digest"),
            Some(&digest('a'))
        );
        assert!(matches!(
            index_entries(b"{}"),
            Err(IndexChoiceError::NotAnIndex(_))
        ));
    }

    #[test]
    fn the_platform_manifest_is_picked_never_an_attestation() {
        let both = buildkit_index();
        let pick = |arch, variant| manifest_for(&both, "linux", arch, variant).map(|e| e.digest);
        assert_eq!(pick("amd64", None).unwrap(), digest('a'));
        assert_eq!(pick("arm64", Some("v8")).unwrap(), digest('b'));
        assert!(manifest_for(&both, "unknown", "unknown", None).is_err());
        assert_eq!(
            pick("s390x", None).unwrap_err().to_string(),
            "the image index has no manifest for linux/s390x (it has linux/arm64/v8, linux/amd64)"
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
}
