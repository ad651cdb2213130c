//! Manifests as dlgrab reads them.

use anyhow::Context;
use layer_writer::BlobRef;
use shim_registry::oci_spec::image::Digest;

/// `sha256:` of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        .parse()
        .expect("a sha256 digest is valid")
}

/// The media type an index says it has (OCI's when it says none).
pub(crate) fn index_media_type(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
        .unwrap_or_else(|| docker_driver::manifest::MT_OCI_INDEX.to_owned())
}

/// The blobs a pushed manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushedManifest {
    pub(crate) media_type: String,
    pub(crate) config: BlobRef,
    pub(crate) layers: Vec<BlobRef>,
}

impl PushedManifest {
    /// Reads a Docker schema 2 or OCI image manifest.
    pub(crate) fn parse(media_type: &str, bytes: &[u8]) -> anyhow::Result<Self> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).context("the pushed manifest is not JSON")?;
        let blob = |v: &serde_json::Value| -> anyhow::Result<BlobRef> {
            let digest: Digest = v["digest"]
                .as_str()
                .context("a descriptor of the pushed manifest has no digest")?
                .parse()
                .context("a descriptor of the pushed manifest has a malformed digest")?;
            Ok(BlobRef {
                digest,
                size: v["size"].as_u64().unwrap_or(0),
                media_type: v["mediaType"].as_str().unwrap_or_default().to_owned(),
            })
        };
        let config = blob(&value["config"])?;
        let layers = value["layers"]
            .as_array()
            .context("the pushed manifest is not an image manifest (no layers)")?
            .iter()
            .map(blob)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let media_type = value["mediaType"].as_str().unwrap_or(media_type).to_owned();
        Ok(Self {
            media_type,
            config,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::digest;

    #[test]
    fn manifests_of_both_kinds_parse() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{c}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{l}"}}]}}"#,
            c = digest('c'),
            l = digest('1')
        );
        let m = PushedManifest::parse("x", docker.as_bytes()).unwrap();
        assert_eq!(
            m.media_type,
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(m.config.digest, digest('c'));
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 9);
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{c}","size":1}},"layers":[]}}"#,
            c = digest('c')
        );
        let m = PushedManifest::parse("application/vnd.oci.image.manifest.v1+json", oci.as_bytes())
            .unwrap();
        assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
        assert!(PushedManifest::parse("x", br#"{"manifests":[]}"#).is_err());
        assert!(PushedManifest::parse("x", b"not json").is_err());
    }
}
