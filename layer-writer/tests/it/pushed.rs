//! Seed and OCI folders given the manifest as pushed: the compressed blobs
//! are kept as received and `index.json` names that manifest, so that the
//! containerd image store loads the folder back under the same image ID.

use std::io::Cursor;

use layer_writer::{BlobRef, Format, ImageContext, WriteError, WriterOptions};
use serde_json::json;

use crate::support::*;

const MT_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_OCI_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MT_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MT_DOCKER_GZ: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn opts(format: Format) -> WriterOptions {
    WriterOptions {
        format,
        replace: false,
    }
}

/// The synthetic image with every layer gzip-compressed and a manifest of
/// `manifest_type` (layers of `layer_type`) naming them; returns the blobs.
fn pushed(manifest_type: &str, layer_type: &str) -> (Synthetic, Vec<Vec<u8>>, Vec<u8>) {
    let mut s = synthetic();
    let gz: Vec<Vec<u8>> = s.tars.iter().map(|t| gzip(t)).collect();
    for (i, g) in gz.iter().enumerate() {
        s.image.compressed[i] = Some(BlobRef {
            digest: sha(g),
            size: g.len() as u64,
            media_type: layer_type.into(),
        });
    }
    let config_type = if manifest_type == MT_DOCKER {
        "application/vnd.docker.container.image.v1+json"
    } else {
        "application/vnd.oci.image.config.v1+json"
    };
    // Indented, as daemons store them: the bytes must be kept verbatim.
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type,
                   "digest": s.image.config_digest().to_string(), "size": s.image.config_json.len()},
        "layers": gz.iter().map(|g| json!({"mediaType": layer_type, "digest": sha(g).to_string(), "size": g.len()})).collect::<Vec<_>>(),
    }))
    .unwrap();
    s.image.manifest = Some((manifest_type.into(), manifest.clone()));
    (s, gz, manifest)
}

fn tree_with_manifest(
    root: &std::path::Path,
    image: &ImageContext,
    manifest: &[u8],
) -> Vec<String> {
    let md = sha(manifest).digest().to_string();
    let mut t: Vec<String> = tree(root, image)
        .into_iter()
        .map(|p| p.replace(&md, "<manifest>"))
        .collect();
    t.sort();
    t
}

#[track_caller]
fn check_index(root: &std::path::Path, manifest_type: &str, manifest: &[u8]) {
    let idx = read_json(root.join("index.json"));
    let entries = idx["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["mediaType"], manifest_type);
    assert_eq!(e["digest"], sha(manifest).to_string());
    assert_eq!(e["size"], manifest.len());
    assert_eq!(
        e["annotations"]["io.containerd.image.name"],
        "docker.io/library/demo:latest"
    );
    assert_eq!(
        e["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    assert_eq!(
        std::fs::read(root.join("blobs/sha256").join(sha(manifest).digest())).unwrap(),
        manifest,
        "the manifest is stored verbatim"
    );
}

#[tokio::test]
async fn seed_keeps_compressed_blobs_and_the_pushed_manifest() {
    let (s, gz, manifest) = pushed(MT_OCI, MT_OCI_GZ);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = writer(root, opts(Format::Seed));
    for i in [1, 2] {
        let l = w
            .write_layer(&s.image, i, Cursor::new(gz[i].clone()))
            .await
            .unwrap();
        assert_eq!(l.diff_id, sha(&s.tars[i]));
        assert!(
            l.files
                .contains(&format!("blobs/sha256/{}", sha(&gz[i]).digest()).into()),
            "{:?}",
            l.files
        );
    }
    // Layer 0 is absent: referenced by the manifest for a daemon holding it.
    assert_eq!(
        tree_with_manifest(root, &s.image, &manifest),
        [
            "<cfg>.json",
            "<id1>/VERSION",
            "<id1>/json",
            "<id1>/layer.tar",
            "<id2>/VERSION",
            "<id2>/json",
            "<id2>/layer.tar",
            "blobs/sha256/<cfg>",
            "blobs/sha256/<diff1>",
            "blobs/sha256/<diff2>",
            "blobs/sha256/<gz1>",
            "blobs/sha256/<gz2>",
            "blobs/sha256/<manifest>",
            "index.json",
            "manifest.json",
            "oci-layout",
            "repositories",
        ]
    );
    for i in [1, 2] {
        assert_eq!(
            std::fs::read(root.join("blobs/sha256").join(sha(&gz[i]).digest())).unwrap(),
            gz[i],
            "blob {i} is kept as received"
        );
        assert_eq!(
            std::fs::read(root.join(&s.image.layer_ids[i]).join("layer.tar")).unwrap(),
            s.tars[i]
        );
    }
    check_index(root, MT_OCI, &manifest);
    // Docker's manifest.json names the absent layer by its v1 folder (for
    // a daemon holding it) and the others by their uncompressed blobs.
    let docker = read_json(root.join("manifest.json"));
    assert_eq!(
        docker[0]["Config"],
        format!("{}.json", s.image.config_digest().digest())
    );
    assert_eq!(
        docker[0]["Layers"][0],
        format!("{}/layer.tar", s.image.layer_ids[0])
    );
    for i in 1..3 {
        assert_eq!(
            docker[0]["Layers"][i],
            format!("blobs/sha256/{}", sha(&s.tars[i]).digest())
        );
    }
}

#[tokio::test]
async fn oci_format_with_a_docker_schema2_manifest() {
    // The OCI layout holds the layer as the daemon stores it: the
    // compressed blob only, its tar hashed on the way and never written.
    let (s, gz, manifest) = pushed(MT_DOCKER, MT_DOCKER_GZ);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = writer(root, opts(Format::Oci));
    let l = w
        .write_layer(&s.image, 2, Cursor::new(gz[2].clone()))
        .await
        .unwrap();
    assert_eq!(l.diff_id, sha(&s.tars[2]));
    assert_eq!(
        l.files,
        [format!("blobs/sha256/{}", sha(&gz[2]).digest())].map(std::path::PathBuf::from)
    );
    assert_eq!(
        tree_with_manifest(root, &s.image, &manifest),
        [
            "blobs/sha256/<cfg>",
            "blobs/sha256/<gz2>",
            "blobs/sha256/<manifest>",
            "index.json",
            "manifest.json",
            "oci-layout",
            "repositories",
        ]
    );
    assert_eq!(
        std::fs::read(root.join("blobs/sha256").join(sha(&gz[2]).digest())).unwrap(),
        gz[2]
    );
    check_index(root, MT_DOCKER, &manifest);
    let docker = read_json(root.join("manifest.json"));
    assert_eq!(
        docker[0]["Layers"][2],
        format!("blobs/sha256/{}", sha(&gz[2]).digest())
    );
    // Written again: the stored blob is recognised (it decompresses to the
    // diff ID), nothing is rewritten.
    let again = w
        .write_layer(&s.image, 2, Cursor::new(gz[2].clone()))
        .await
        .unwrap();
    assert!(again.already_there, "{again:?}");
}

#[tokio::test]
async fn oci_format_checks_the_stored_blob_against_the_diff_id() {
    // A blob whose digest is the one announced but whose tar is another
    // layer's: refused, nothing left.
    let (mut s, gz, _) = pushed(MT_OCI, MT_OCI_GZ);
    s.image.compressed[2] = s.image.compressed[1].clone();
    let (mt, bytes) = s.image.manifest.take().unwrap();
    let text = String::from_utf8(bytes)
        .unwrap()
        .replace(&sha(&gz[2]).to_string(), sha(&gz[1]).as_ref());
    s.image.manifest = Some((mt, text.into_bytes()));
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Oci));
    let err = w
        .write_layer(&s.image, 2, Cursor::new(gz[1].clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::DiffIdMismatch { .. }), "{err:?}");
    check_tree(dir.path(), &s.image, &[]);
}

#[test]
fn wrong_compressed_digest_leaves_nothing() {
    for format in [Format::Seed, Format::Oci] {
        let (mut s, gz, _) = pushed(MT_OCI, MT_OCI_GZ);
        // Announce another blob of the same size: the manifest still agrees.
        let other = sha(b"not this blob");
        let (mt, bytes) = s.image.manifest.take().unwrap();
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace(&sha(&gz[1]).to_string(), other.as_ref());
        s.image.manifest = Some((mt, text.into_bytes()));
        s.image.compressed[1].as_mut().unwrap().digest = other.clone();
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path(), opts(format));
        let err = w
            .write_layer_blocking(&s.image, 1, Cursor::new(gz[1].clone()))
            .unwrap_err();
        match &err {
            WriteError::BlobDigestMismatch { expected, actual } => {
                assert_eq!(expected, &other);
                assert_eq!(actual, &sha(&gz[1]));
            }
            e => panic!("{format:?}: unexpected {e:?}"),
        }
        check_tree(dir.path(), &s.image, &[]);
    }
}

#[tokio::test]
async fn plain_tar_for_a_compressed_blob_is_a_mismatch() {
    let (s, _, _) = pushed(MT_OCI, MT_OCI_GZ);
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Seed));
    let err = w
        .write_layer(&s.image, 0, Cursor::new(s.tars[0].clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::BlobDigestMismatch { .. }),
        "{err:?}"
    );
    check_tree(dir.path(), &s.image, &[]);
}

#[tokio::test]
async fn a_manifest_of_another_image_is_ignored() {
    let (mut s, gz, _) = pushed(MT_OCI, MT_OCI_GZ);
    let other = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(b"{}").to_string(), "size": 2},
        "layers": [],
    }))
    .unwrap();
    s.image.manifest = Some((MT_OCI.into(), other));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = writer(root, opts(Format::Seed));
    w.write_layer(&s.image, 2, Cursor::new(gz[2].clone()))
        .await
        .unwrap();
    // Today's behaviour: our own manifest, layer.tar linked by diff ID.
    let t = tree(root, &s.image);
    assert!(t.contains(&"blobs/sha256/<diff2>".to_string()), "{t:?}");
    assert!(!t.contains(&"blobs/sha256/<gz2>".to_string()), "{t:?}");
    let idx = read_json(root.join("index.json"));
    let md = idx["manifests"][0]["digest"].as_str().unwrap();
    let m = read_json(
        root.join("blobs/sha256")
            .join(md.trim_start_matches("sha256:")),
    );
    assert_eq!(m["layers"][2]["digest"], sha(&s.tars[2]).to_string());
}

#[tokio::test]
async fn a_layer_without_its_compressed_blob_falls_back_to_our_manifest() {
    // Layer 2 came from a `docker save` stream (no raw blob): the pushed
    // manifest would name a blob the folder lacks, so our own is used.
    let (s, gz, manifest) = pushed(MT_OCI, MT_OCI_GZ);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = writer(root, opts(Format::Seed));
    w.write_layer(&s.image, 1, Cursor::new(gz[1].clone()))
        .await
        .unwrap();
    check_index(root, MT_OCI, &manifest);
    let save = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(s.tars[2].len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        let name = format!("{}/layer.tar", s.image.layer_ids[2]);
        b.append_data(&mut h, name, &s.tars[2][..]).unwrap();
        b.into_inner().unwrap()
    };
    w.write_from_save_blocking(&s.image, &[2], Cursor::new(save))
        .unwrap();
    let idx = read_json(root.join("index.json"));
    assert_eq!(idx["manifests"][0]["mediaType"], MT_OCI);
    assert_ne!(idx["manifests"][0]["digest"], sha(&manifest).to_string());
    let t = tree(root, &s.image);
    for p in [
        "blobs/sha256/<diff1>",
        "blobs/sha256/<diff2>",
        "blobs/sha256/<gz1>",
    ] {
        assert!(t.contains(&p.to_string()), "{p} missing from {t:?}");
    }
    assert!(
        !root
            .join("blobs/sha256")
            .join(sha(&manifest).digest())
            .exists(),
        "the replaced manifest is removed"
    );
}

const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An index (as BuildKit makes one) naming `manifest` and an attestation.
fn index_naming(manifest: &[u8]) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [
            {"mediaType": MT_OCI, "digest": sha(manifest).to_string(), "size": manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": MT_OCI, "digest": format!("sha256:{}", "a".repeat(64)), "size": 9,
             "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        ],
    }))
    .unwrap()
}

#[test]
fn an_index_naming_the_manifest_is_what_index_json_names() {
    // The containerd store keeps a BuildKit image as an index: its ID is
    // the index's digest, which a load gives back only from the index.
    for format in [Format::Seed, Format::Oci] {
        let (mut s, gz, manifest) = pushed(MT_OCI, MT_OCI_GZ);
        let index = index_naming(&manifest);
        s.image.index = Some((MT_OCI_INDEX.into(), index.clone()));
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path(), opts(format));
        let rt = tokio::runtime::Runtime::new().unwrap();
        for (i, g) in gz.iter().enumerate() {
            rt.block_on(w.write_layer(&s.image, i, Cursor::new(g.clone())))
                .unwrap();
        }
        check_index(dir.path(), MT_OCI_INDEX, &index);
        // Both are there as blobs, byte for byte.
        for bytes in [&index, &manifest] {
            let blob = dir.path().join("blobs/sha256").join(sha(bytes).digest());
            assert_eq!(&std::fs::read(&blob).unwrap(), bytes, "{format:?}");
        }
        // A later run into the folder, knowing no index, keeps it.
        let mut again = s.image.clone();
        again.index = None;
        again.manifest = None;
        rt.block_on(w.write_layer(&again, 0, Cursor::new(gz[0].clone())))
            .unwrap();
        check_index(dir.path(), MT_OCI_INDEX, &index);
    }
}

#[test]
fn an_index_naming_another_manifest_is_not_used() {
    let (mut s, gz, manifest) = pushed(MT_OCI, MT_OCI_GZ);
    let other = index_naming(b"{\"another\":\"manifest\"}");
    s.image.index = Some((MT_OCI_INDEX.into(), other));
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Seed));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (i, g) in gz.iter().enumerate() {
        rt.block_on(w.write_layer(&s.image, i, Cursor::new(g.clone())))
            .unwrap();
    }
    check_index(dir.path(), MT_OCI, &manifest);
}
