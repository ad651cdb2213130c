//! Finding the image config in a `docker save` stream.
//!
//! Layouts: up to 24, `<config hex>.json` beside `<v1 id>/layer.tar` folders
//! and `manifest.json`; from 25, an OCI layout (`blobs/sha256/<hex>`) plus
//! `manifest.json`, whose `Config` names the config's path. Entries are read
//! in the daemon's order; small files are kept until `manifest.json` says
//! which is the config, and reading stops as soon as the config is known.

use std::collections::HashMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::error::DriverError;

/// Files larger than this are never configs or `manifest.json`.
const SMALL: u64 = 8 << 20;
/// At most this much of small files is kept while looking.
const KEEP: usize = 64 << 20;

/// Reads a tar stream until the config of `image_id` (`sha256:…`) is found;
/// returns the config and its digest. On a classic store the image ID is
/// the config's digest; on the containerd store it names an image manifest
/// or an index, whose image manifest for `platform` (os, architecture) names
/// the config. Without a platform, an index must hold one image manifest.
/// Returns the index too, when the image ID names one.
pub(crate) fn find_config(
    archive: impl Read,
    image_id: &str,
    platform: Option<(&str, &str)>,
) -> Result<Found, DriverError> {
    let operation = "reading the saved image";
    let protocol = |e: std::io::Error| DriverError::Protocol {
        operation,
        source: Box::new(e),
    };
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    let direct = [format!("{hex}.json"), format!("blobs/sha256/{hex}")];
    // What the image ID leads to: an index names a manifest, a manifest a
    // config; `wanted` is the next blob of that chain.
    let mut wanted: Option<String> = None;
    let mut kept: HashMap<String, Vec<u8>> = HashMap::new();
    let mut kept_bytes = 0;
    let mut index = None;
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().map_err(protocol)? {
        let mut entry = entry.map_err(protocol)?;
        let path = entry
            .path()
            .map_err(protocol)?
            .to_string_lossy()
            .into_owned();
        let path = path.trim_start_matches("./").to_owned();
        if entry.header().entry_type().is_dir() || entry.size() > SMALL {
            continue;
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(protocol)?;
        let arrived = if wanted.as_deref() == Some(path.as_str()) || direct.contains(&path) {
            Some((path, data))
        } else if path == "manifest.json" && wanted.is_none() {
            let config = manifest_config(&data).ok_or_else(|| DriverError::Protocol {
                operation,
                source: "manifest.json names no config".into(),
            })?;
            wanted = Some(config);
            None
        } else {
            // Kept while the chain is unknown, and past an index or a
            // manifest too: the blob it names may have come already.
            if kept_bytes + data.len() <= KEEP {
                kept_bytes += data.len();
                kept.insert(path, data);
            }
            None
        };
        // Follow the chain, through the blobs kept so far.
        let mut next = arrived.or_else(|| {
            let blob = wanted.clone()?;
            kept.remove(&blob).map(|data| (blob, data))
        });
        while let Some((path, data)) = next.take() {
            match step(image_id, &path, data, platform)? {
                Step::Config((config, digest)) => {
                    return Ok(Found {
                        config,
                        digest,
                        index,
                    });
                }
                Step::Index(bytes, blob) => {
                    index = Some(bytes);
                    next = kept.remove(&blob).map(|data| (blob.clone(), data));
                    wanted = Some(blob);
                }
                Step::Next(blob) => {
                    next = kept.remove(&blob).map(|data| (blob.clone(), data));
                    wanted = Some(blob);
                }
            }
        }
    }
    Err(DriverError::ConfigNotFound {
        image: image_id.to_owned(),
    })
}

/// The config a save stream holds.
#[derive(Debug)]
pub(crate) struct Found {
    /// Its bytes.
    pub(crate) config: Vec<u8>,
    /// Their digest.
    pub(crate) digest: String,
    /// The index the image ID names, when it is one.
    pub(crate) index: Option<Vec<u8>>,
}

/// Where a blob of the chain leads.
enum Step {
    /// It is the index the image ID names (its bytes); this manifest next.
    Index(Vec<u8>, String),
    /// It is the config (checked against its name).
    Config((Vec<u8>, String)),
    /// It is an index or manifest naming this blob path next.
    Next(String),
}

/// Reads one blob of the chain from the image ID to the config.
fn step(
    image_id: &str,
    path: &str,
    data: Vec<u8>,
    platform: Option<(&str, &str)>,
) -> Result<Step, DriverError> {
    use crate::manifest::{self, ManifestKind};
    match manifest::kind_of("", &data) {
        ManifestKind::Image => match image_manifest_config(&data) {
            Some(config) => {
                checked(image_id, path, data)?;
                Ok(Step::Next(config))
            }
            None => Err(DriverError::Protocol {
                operation: "reading the saved image",
                source: format!("the image manifest {path} names no sha256 config").into(),
            }),
        },
        ManifestKind::Index => {
            checked(image_id, path, data.clone())?;
            let entry = match platform {
                Some((os, arch)) => manifest::manifest_for(&data, os, arch, None),
                None => manifest::index_entries(&data).and_then(|entries| {
                    let images: Vec<_> = entries
                        .into_iter()
                        .filter(|e| !e.is_attestation())
                        .collect();
                    match <[_; 1]>::try_from(images) {
                        Ok([one]) => Ok(one),
                        Err(images) => Err(manifest::IndexChoiceError::NoSuchPlatform {
                            wanted: "one platform".to_owned(),
                            present: images
                                .iter()
                                .map(|e| e.platform.clone().unwrap_or_default().to_string())
                                .collect(),
                        }),
                    }
                }),
            }
            .map_err(|source| DriverError::NoPlatformManifest {
                image: image_id.to_owned(),
                source,
            })?;
            let hex =
                entry
                    .digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| DriverError::Protocol {
                        operation: "reading the saved image",
                        source: format!("the image index names {}", entry.digest).into(),
                    })?;
            tracing::debug!(manifest = %entry.digest, "image index: the platform's manifest");
            Ok(Step::Index(data, format!("blobs/sha256/{hex}")))
        }
        ManifestKind::Other => checked(image_id, path, data).map(Step::Config),
    }
}

/// The `Config` path of the first `manifest.json` entry.
fn manifest_config(manifest: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "Config")]
        config: String,
    }
    let entries: Vec<Entry> = serde_json::from_slice(manifest).ok()?;
    entries.into_iter().next().map(|e| e.config)
}

/// The blob path of the config an OCI or Docker image manifest names, or
/// `None` when `data` is not an image manifest.
fn image_manifest_config(data: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let digest = value.get("config")?.get("digest")?.as_str()?;
    let hex = digest.strip_prefix("sha256:")?;
    Some(format!("blobs/sha256/{hex}"))
}

/// Checks the config against the digest its name carries.
fn checked(image_id: &str, path: &str, data: Vec<u8>) -> Result<(Vec<u8>, String), DriverError> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let name = path.rsplit('/').next().unwrap_or(path);
    let expected = format!("sha256:{}", name.trim_end_matches(".json"));
    if actual != expected {
        return Err(DriverError::ConfigMismatch {
            image: image_id.to_owned(),
            expected,
            actual,
        });
    }
    Ok((data, actual))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn classic_layout() {
        let config = br#"{"architecture":"amd64"}"#;
        let id = format!("sha256:{}", sha(config));
        let tar = archive(&[
            ("0000/layer.tar", b"layer"),
            (&format!("{}.json", sha(config)), config),
            ("manifest.json", b"[]"),
        ]);
        let Found {
            config: got,
            digest,
            ..
        } = find_config(&tar[..], &id, None).unwrap();
        assert_eq!(got, config);
        assert_eq!(digest, id);
    }

    #[test]
    fn containerd_image_id_names_the_manifest_blob() {
        // The blob named by the image ID is the manifest; its config comes
        // before it in the stream, and manifest.json comes last.
        let config = br#"{"os":"linux","rootfs":{"diff_ids":[]}}"#;
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{}","size":1}},"layers":[]}}"#,
            sha(config)
        );
        let id = format!("sha256:{}", sha(manifest.as_bytes()));
        let tar = archive(&[
            (&format!("blobs/sha256/{}", sha(config)), config),
            (
                &format!("blobs/sha256/{}", sha(manifest.as_bytes())),
                manifest.as_bytes(),
            ),
            ("index.json", b"{}"),
        ]);
        let Found {
            config: got,
            digest,
            ..
        } = find_config(&tar[..], &id, None).unwrap();
        assert_eq!(got, config);
        assert_eq!(digest, format!("sha256:{}", sha(config)));
        // …and when the config comes after the manifest.
        let tar = archive(&[
            (
                &format!("blobs/sha256/{}", sha(manifest.as_bytes())),
                manifest.as_bytes(),
            ),
            (&format!("blobs/sha256/{}", sha(config)), config),
        ]);
        assert_eq!(find_config(&tar[..], &id, None).unwrap().config, config);
    }

    /// A BuildKit-made image on the containerd store: the image ID names an
    /// index holding the amd64 and arm64 manifests and an attestation.
    fn buildkit_index(order: &[usize]) -> (Vec<u8>, String, Vec<u8>) {
        let config =
            br#"{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[]}}"#,
            sha(&config),
            config.len()
        );
        let attestation = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{},"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":9,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            sha(attestation.as_bytes()),
            attestation.len(),
            "b".repeat(64),
            sha(manifest.as_bytes()),
            manifest.len()
        );
        let id = format!("sha256:{}", sha(index.as_bytes()));
        let files: Vec<(String, Vec<u8>)> = vec![
            (format!("blobs/sha256/{}", sha(&config)), config.clone()),
            (
                format!("blobs/sha256/{}", sha(manifest.as_bytes())),
                manifest.into_bytes(),
            ),
            (
                format!("blobs/sha256/{}", sha(index.as_bytes())),
                index.into_bytes(),
            ),
            (
                format!("blobs/sha256/{}", sha(attestation.as_bytes())),
                attestation.as_bytes().to_vec(),
            ),
            ("index.json".to_owned(), b"{}".to_vec()),
        ];
        let ordered: Vec<(&str, &[u8])> = order
            .iter()
            .map(|&i| (files[i].0.as_str(), files[i].1.as_slice()))
            .collect();
        (archive(&ordered), id, config)
    }

    #[test]
    fn an_index_leads_to_the_platform_manifest_then_its_config() {
        for order in [
            [0, 1, 2, 3, 4],
            [2, 1, 0, 3, 4],
            [3, 2, 0, 1, 4],
            [1, 2, 3, 0, 4],
        ] {
            let (tar, id, config) = buildkit_index(&order);
            let found = find_config(&tar[..], &id, Some(("linux", "amd64")))
                .unwrap_or_else(|e| panic!("{order:?}: {e}"));
            let (got, digest) = (found.config, found.digest);
            assert_eq!(got, config, "{order:?}");
            let index = found.index.expect("the index comes with the config");
            assert_eq!(format!("sha256:{}", sha(&index)), id, "{order:?}");
            assert_eq!(digest, format!("sha256:{}", sha(&config)));
        }
    }

    #[test]
    fn an_index_without_the_platform_names_those_it_has() {
        let (tar, id, _) = buildkit_index(&[0, 1, 2, 3, 4]);
        let err = find_config(&tar[..], &id, Some(("linux", "s390x"))).unwrap_err();
        let DriverError::NoPlatformManifest { source, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            source.to_string(),
            "the image index has no manifest for linux/s390x (it has linux/arm64, linux/amd64)"
        );
        // Without a platform, two image manifests cannot be told apart.
        assert!(matches!(
            find_config(&tar[..], &id, None),
            Err(DriverError::NoPlatformManifest { .. })
        ));
    }

    #[test]
    fn oci_layout_through_manifest() {
        // Containerd store: the image ID is the manifest's digest, not the
        // config's; manifest.json (here after the blobs) names the config.
        let config = br#"{"os":"linux"}"#;
        let path = format!("blobs/sha256/{}", sha(config));
        let manifest = format!(r#"[{{"Config":"{path}","RepoTags":[],"Layers":[]}}]"#);
        let tar = archive(&[
            (&path, config),
            ("blobs/sha256/ffff", b"other"),
            ("index.json", b"{}"),
            ("manifest.json", manifest.as_bytes()),
        ]);
        let id = format!("sha256:{}", "e".repeat(64));
        let Found {
            config: got,
            digest,
            ..
        } = find_config(&tar[..], &id, None).unwrap();
        assert_eq!(got, config);
        assert_eq!(digest, format!("sha256:{}", sha(config)));
    }

    #[test]
    fn missing_and_corrupt() {
        let id = format!("sha256:{}", "a".repeat(64));
        let tar = archive(&[("repositories", b"{}")]);
        assert!(matches!(
            find_config(&tar[..], &id, None),
            Err(DriverError::ConfigNotFound { .. })
        ));
        let tar = archive(&[(&format!("{}.json", "a".repeat(64)), b"{}")]);
        assert!(matches!(
            find_config(&tar[..], &id, None),
            Err(DriverError::ConfigMismatch { .. })
        ));
    }

    /// Whatever the stream holds, `find_config` returns: an error, or a
    /// config whose bytes hash to the digest it reports.
    fn returns_sanely(tar: &[u8], id: &str) {
        if let Ok(Found { config, digest, .. }) = find_config(tar, id, None) {
            assert_eq!(digest, format!("sha256:{}", sha(&config)));
        }
    }

    fn classic(config: &[u8]) -> (Vec<u8>, String) {
        let id = format!("sha256:{}", sha(config));
        let tar = archive(&[
            ("0000/layer.tar", &[7u8; 3000][..]),
            (&format!("{}.json", sha(config)), config),
            (
                "manifest.json",
                format!(r#"[{{"Config":"{}.json"}}]"#, sha(config)).as_bytes(),
            ),
        ]);
        (tar, id)
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_are_an_error(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let id = format!("sha256:{}", "a".repeat(64));
            let got = find_config(&bytes[..], &id, None);
            proptest::prop_assert!(got.is_err());
        }

        #[test]
        fn a_stream_cut_anywhere_never_panics(cut in 0usize..8192) {
            let (tar, id) = classic(br#"{"architecture":"amd64"}"#);
            let cut = cut.min(tar.len());
            returns_sanely(&tar[..cut], &id);
        }

        #[test]
        fn overwritten_bytes_never_panic(at in 0usize..8192, junk in proptest::collection::vec(proptest::num::u8::ANY, 1..600)) {
            let (mut tar, id) = classic(br#"{"os":"linux"}"#);
            let at = at.min(tar.len());
            let end = (at + junk.len()).min(tar.len());
            tar[at..end].copy_from_slice(&junk[..end - at]);
            returns_sanely(&tar, &id);
        }

        #[test]
        fn hostile_names_are_only_names(name in "(\\.\\./|/|[a-z]{1,8}/){0,6}[a-z0-9.]{1,12}") {
            // manifest.json naming any path: it is looked for among the
            // stream's entries, never opened on disk.
            let manifest = format!(r#"[{{"Config":"{name}"}}]"#);
            let tar = archive(&[("manifest.json", manifest.as_bytes())]);
            let got = find_config(&tar[..], &format!("sha256:{}", "b".repeat(64)), None);
            proptest::prop_assert!(
                matches!(got, Err(DriverError::ConfigNotFound { .. })),
                "{:?}",
                got
            );
        }
    }
}
