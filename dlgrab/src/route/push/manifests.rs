//! The manifests a push put, and the image manifest among them.

use anyhow::{Context, bail};
use docker_driver::ImageDetails;
use layer_writer::manifest::{self, ManifestKind, digest_of};
use shim_registry::oci_spec::image::Digest;

/// Every manifest a push put, in order: on the containerd store an image
/// as BuildKit makes it is an index (the image manifest, an attestation
/// manifest, then the index under the tag), as is a multi-platform image.
#[derive(Debug, Clone, Default)]
pub(crate) struct PushedManifests {
    put: Vec<(Digest, String, bytes::Bytes)>,
    refused: bool,
}

impl PushedManifests {
    /// Records a manifest put: its digest, media type and bytes.
    pub(crate) fn record(&mut self, digest: Digest, media_type: String, body: bytes::Bytes) {
        self.put.push((digest, media_type, body));
    }

    /// Records the manifest refused under the run's tag: the push's last
    /// step, after which the daemon fails the push.
    pub(crate) fn record_refused(
        &mut self,
        digest: Digest,
        media_type: String,
        body: bytes::Bytes,
    ) {
        self.put.push((digest, media_type, body));
        self.refused = true;
    }

    /// True once the manifest under the run's tag was refused: a push
    /// failing after it has ended as planned.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// The last index put that names `manifest` (media type and bytes).
    pub(crate) fn index_of(&self, manifest: &[u8]) -> Option<(String, bytes::Bytes)> {
        let digest = digest_of(manifest);
        self.put
            .iter()
            .rev()
            .filter(|(_, mt, body)| manifest::kind_of(mt, body) == ManifestKind::Index)
            .find(|(_, _, body)| {
                manifest::index_entries(body)
                    .is_ok_and(|entries| entries.iter().any(|e| *e.digest() == digest))
            })
            .map(|(_, mt, body)| (mt.clone(), body.clone()))
    }

    /// Adds what a later push put.
    pub(crate) fn extend(&mut self, other: PushedManifests) {
        self.put.extend(other.put);
        self.refused |= other.refused;
    }

    /// The image manifest of `image` (media type and bytes), `None` when
    /// nothing was put: the last manifest put when it is an image manifest;
    /// when it is an index, its manifest for the image's platform, which the
    /// daemon put before it.
    pub(crate) fn image_manifest(
        &self,
        image: &ImageDetails,
    ) -> anyhow::Result<Option<(String, bytes::Bytes)>> {
        // The index when one came (it names the rest), else the last image
        // manifest that is not an attestation.
        let last = self
            .put
            .iter()
            .rev()
            .find(|(_, mt, body)| manifest::kind_of(mt, body) == ManifestKind::Index)
            .or_else(|| {
                self.put.iter().rev().find(|(_, mt, body)| {
                    manifest::kind_of(mt, body) == ManifestKind::Image
                        && !manifest::is_attestation_manifest(body)
                })
            })
            .or(self.put.last());
        let Some((_, media_type, body)) = last else {
            return Ok(None);
        };
        match manifest::kind_of(media_type, body) {
            ManifestKind::Image => Ok(Some((media_type.clone(), body.clone()))),
            ManifestKind::Index => {
                let variant = image.variant.as_deref();
                let entry = manifest::manifest_for(body, &image.os, &image.architecture, variant)
                    .context("the daemon pushed an image index")?;
                let (_, media_type, body) = self
                    .put
                    .iter()
                    .rev()
                    .find(|(digest, _, _)| digest == entry.digest())
                    .with_context(|| {
                        format!(
                            "the daemon pushed an image index whose manifest for {}/{} ({}) did not reach the temporary registry",
                            image.os, image.architecture, entry.digest()
                        )
                    })?;
                if manifest::kind_of(media_type, body) != ManifestKind::Image {
                    bail!(
                        "the image index's manifest for {}/{} ({}) is not an image manifest",
                        image.os,
                        image.architecture,
                        entry.digest()
                    );
                }
                Ok(Some((media_type.clone(), body.clone())))
            }
            ManifestKind::Other => bail!(
                "the daemon pushed a manifest that is neither an image manifest nor an index ({media_type})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use layer_writer::manifest::ManifestBlobs;

    use super::*;
    use crate::plan::tests::{image, oci_manifest};

    #[test]
    fn an_index_pushed_last_gives_the_platform_manifest_put_before_it() {
        // As the containerd store pushes a BuildKit image: the image
        // manifest, the attestation manifest, then the index under the tag.
        let image_manifest = oci_manifest(2, "image");
        let attestation = oci_manifest(1, "attestation");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#,
            digest_of(image_manifest.as_bytes()),
            digest_of(attestation.as_bytes()),
        );
        let mt = "application/vnd.oci.image.manifest.v1+json".to_owned();
        let mut pushed = PushedManifests::default();
        assert_eq!(pushed.image_manifest(&image(&[], &[], 2)).unwrap(), None);
        for body in [&image_manifest, &attestation] {
            pushed.record(digest_of(body.as_bytes()), mt.clone(), body.clone().into());
        }
        pushed.record(
            digest_of(index.as_bytes()),
            "application/vnd.oci.image.index.v1+json".into(),
            index.clone().into(),
        );
        let (media_type, body) = pushed.image_manifest(&image(&[], &[], 2)).unwrap().unwrap();
        assert_eq!(media_type, mt);
        assert_eq!(body, image_manifest.as_bytes());
        let parsed = ManifestBlobs::parse(&media_type, &body).unwrap();
        assert_eq!(parsed.layers.len(), 2);

        // Another platform: the error names the ones there.
        let mut arm = image(&[], &[], 2);
        arm.architecture = "arm64".into();
        let err = format!("{:#}", pushed.image_manifest(&arm).unwrap_err());
        assert!(
            err.contains("no manifest for linux/arm64 (it has linux/amd64)"),
            "{err}"
        );

        // The index alone (its manifest put by an earlier push only).
        let mut alone = PushedManifests::default();
        alone.record(digest_of(index.as_bytes()), String::new(), index.into());
        let err = format!(
            "{:#}",
            alone.image_manifest(&image(&[], &[], 2)).unwrap_err()
        );
        assert!(
            err.contains("did not reach the temporary registry"),
            "{err}"
        );
        // …which the survey's manifests supply.
        let mut both = PushedManifests::default();
        both.record(
            digest_of(image_manifest.as_bytes()),
            mt.clone(),
            image_manifest.clone().into(),
        );
        both.extend(alone);
        assert_eq!(
            both.image_manifest(&image(&[], &[], 2)).unwrap().unwrap().1,
            image_manifest.as_bytes()
        );
    }

    #[test]
    fn without_an_index_the_image_manifest_is_the_last_that_is_no_attestation() {
        // Docker 26.1 puts an index's manifests under the tag, the first
        // one refused ends the push before the index.
        let image_manifest = oci_manifest(2, "image");
        let attestation = oci_manifest(1, "x").replace(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.in-toto+json",
        );
        let mt = "application/vnd.oci.image.manifest.v1+json".to_owned();
        let mut pushed = PushedManifests::default();
        pushed.record_refused(
            digest_of(image_manifest.as_bytes()),
            mt.clone(),
            image_manifest.clone().into(),
        );
        pushed.record(
            digest_of(attestation.as_bytes()),
            mt.clone(),
            attestation.into(),
        );
        assert!(pushed.refused());
        assert_eq!(
            pushed
                .image_manifest(&image(&[], &[], 2))
                .unwrap()
                .unwrap()
                .1,
            image_manifest.as_bytes()
        );
    }

    #[test]
    fn a_docker_manifest_list_is_an_index_too() {
        let image_manifest = oci_manifest(1, "x").replace(
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        );
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            digest_of(image_manifest.as_bytes())
        );
        let mut pushed = PushedManifests::default();
        pushed.record(
            digest_of(image_manifest.as_bytes()),
            "application/vnd.docker.distribution.manifest.v2+json".into(),
            image_manifest.clone().into(),
        );
        pushed.record(
            digest_of(list.as_bytes()),
            "application/vnd.docker.distribution.manifest.list.v2+json".into(),
            list.into(),
        );
        assert_eq!(
            pushed
                .image_manifest(&image(&[], &[], 1))
                .unwrap()
                .unwrap()
                .1,
            image_manifest.as_bytes()
        );
    }
}
