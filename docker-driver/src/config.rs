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
/// returns the config and its digest. `classic_id` says the image ID is the
/// config's digest (classic store).
pub(crate) fn find_config(
    archive: impl Read,
    image_id: &str,
) -> Result<(Vec<u8>, String), DriverError> {
    let operation = "reading the saved image";
    let protocol = |e: std::io::Error| DriverError::Protocol {
        operation,
        source: Box::new(e),
    };
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    let direct = [format!("{hex}.json"), format!("blobs/sha256/{hex}")];
    let mut wanted: Option<String> = None;
    let mut kept: HashMap<String, Vec<u8>> = HashMap::new();
    let mut kept_bytes = 0;
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
        if wanted.as_deref() == Some(path.as_str()) {
            return checked(image_id, &path, data);
        }
        if direct.contains(&path) {
            // On the containerd store the image ID is the manifest's digest:
            // the blob it names is the manifest, which names the config.
            let Some(config) = image_manifest_config(&data) else {
                return checked(image_id, &path, data);
            };
            if let Some(data) = kept.remove(&config) {
                return checked(image_id, &config, data);
            }
            wanted = Some(config);
            kept.clear();
            continue;
        }
        if path == "manifest.json" {
            let config = manifest_config(&data).ok_or_else(|| DriverError::Protocol {
                operation,
                source: "manifest.json names no config".into(),
            })?;
            if let Some(data) = kept.remove(&config) {
                return checked(image_id, &config, data);
            }
            wanted = Some(config);
            kept.clear();
        } else if wanted.is_none() && kept_bytes + data.len() <= KEEP {
            kept_bytes += data.len();
            kept.insert(path, data);
        }
    }
    Err(DriverError::ConfigNotFound {
        image: image_id.to_owned(),
    })
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
    value.get("layers")?.as_array()?;
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
        let (got, digest) = find_config(&tar[..], &id).unwrap();
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
        let (got, digest) = find_config(&tar[..], &id).unwrap();
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
        assert_eq!(find_config(&tar[..], &id).unwrap().0, config);
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
        let (got, digest) = find_config(&tar[..], &id).unwrap();
        assert_eq!(got, config);
        assert_eq!(digest, format!("sha256:{}", sha(config)));
    }

    #[test]
    fn missing_and_corrupt() {
        let id = format!("sha256:{}", "a".repeat(64));
        let tar = archive(&[("repositories", b"{}")]);
        assert!(matches!(
            find_config(&tar[..], &id),
            Err(DriverError::ConfigNotFound { .. })
        ));
        let tar = archive(&[(&format!("{}.json", "a".repeat(64)), b"{}")]);
        assert!(matches!(
            find_config(&tar[..], &id),
            Err(DriverError::ConfigMismatch { .. })
        ));
    }

    /// Whatever the stream holds, `find_config` returns: an error, or a
    /// config whose bytes hash to the digest it reports.
    fn returns_sanely(tar: &[u8], id: &str) {
        if let Ok((config, digest)) = find_config(tar, id) {
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
            let got = find_config(&bytes[..], &id);
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
            let got = find_config(&tar[..], &format!("sha256:{}", "b".repeat(64)));
            proptest::prop_assert!(
                matches!(got, Err(DriverError::ConfigNotFound { .. })),
                "{:?}",
                got
            );
        }
    }
}
