use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::*;
use crate::layer_store::tests::{Item, layer};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Lays out one layer of `driver` with id `id` under `root`: its files and
/// its gzipped tar-split; returns its tar.
fn put_layer(root: &Path, driver: &str, id: &str, items: &[Item<'_>]) -> Vec<u8> {
    let folder = match driver {
        "vfs" => root.join("vfs/dir").join(id),
        _ => root.join(driver).join(id).join("diff"),
    };
    std::fs::create_dir_all(&folder).unwrap();
    let (tar, lines) = layer(items, &folder);
    let layers = root.join(format!("{driver}-layers"));
    std::fs::create_dir_all(&layers).unwrap();
    let file = std::fs::File::create(layers.join(format!("{id}.tar-split.gz"))).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(lines.as_bytes()).unwrap();
    gz.finish().unwrap();
    tar
}

/// A graph root as Podman 4.3 leaves it after building a two-layer image
/// (the layout observed on Debian 12's Podman): returns the root, both
/// tars and the image ID.
fn graph_root(driver: &str) -> (tempfile::TempDir, Vec<u8>, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (base_id, top_id) = ("a".repeat(64), "b".repeat(64));
    let base = put_layer(root, driver, &base_id, &[Item::File(b"big", &[7u8; 3000])]);
    let top = put_layer(root, driver, &top_id, &[Item::File(b"small", b"hi\n")]);
    let layers = serde_json::json!([
        {"id": base_id, "created": "2026-12-06T08:33:06Z",
         "compressed-diff-digest": digest(&base), "diff-digest": digest(&base),
         "diff-size": base.len(), "uidset": [0], "gidset": [0]},
        {"id": top_id, "parent": base_id, "diff-digest": digest(&top),
         "diff-size": top.len()},
    ]);
    std::fs::write(
        root.join(format!("{driver}-layers/layers.json")),
        serde_json::to_vec(&layers).unwrap(),
    )
    .unwrap();
    let config = format!(
        r#"{{"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
        digest(&base),
        digest(&top)
    );
    let image_id = digest(config.as_bytes());
    let image_dir = root
        .join(format!("{driver}-images"))
        .join(&image_id["sha256:".len()..]);
    std::fs::create_dir_all(&image_dir).unwrap();
    std::fs::write(image_dir.join(big_data_name(&image_id)), &config).unwrap();
    (dir, base, top, image_id)
}

fn read_all(mut tar: LayerTar) -> Vec<u8> {
    let mut out = Vec::new();
    tar.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn big_data_names_are_those_podman_writes() {
    // Seen in a Podman 4.3 graph root: the config of image f4619f39….
    assert_eq!(
        big_data_name("sha256:f4619f39a8ab25a131d3ad31373b35f55bc81004bd87a63331cf44d2edda38ac"),
        "=c2hhMjU2OmY0NjE5ZjM5YThhYjI1YTEzMWQzYWQzMTM3M2IzNWY1NWJjODEwMDRiZDg3YTYzMzMxY2Y0NGQyZWRkYTM4YWM="
    );
    assert_eq!(big_data_name("manifest"), "manifest");
    assert_eq!(big_data_name("Manifest"), "=TWFuaWZlc3Q=");
}

#[test]
fn rebuilds_each_layer_of_each_driver() {
    for driver in SUPPORTED_DRIVERS {
        let (dir, base, top, image_id) = graph_root(driver);
        let store = ContainersStorage::open(dir.path(), driver).unwrap();
        let ids = [digest(&base), digest(&top)];
        assert_eq!(
            read_all(store.layer_tar(&ids[..1]).unwrap()),
            base,
            "{driver}"
        );
        assert_eq!(read_all(store.layer_tar(&ids).unwrap()), top, "{driver}");
        let config = store.image_config(&image_id).unwrap();
        assert_eq!(digest(&config), image_id);
    }
}

#[test]
fn a_layer_is_found_by_its_chain_first() {
    let layer = |id: &str, parent: Option<&str>, d: &str| Layer {
        id: id.into(),
        parent: parent.map(Into::into),
        diff_digest: Some(d.into()),
    };
    // The same content ("x") on two bases: the chain picks the right one.
    let layers = [
        layer("l1", None, "a"),
        layer("l2", None, "b"),
        layer("x-on-b", Some("l2"), "x"),
        layer("x-on-a", Some("l1"), "x"),
    ];
    let ids = |d: &[&str]| d.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(find_layer(&layers, &ids(&["a", "x"])), Some("x-on-a"));
    assert_eq!(find_layer(&layers, &ids(&["b", "x"])), Some("x-on-b"));
    // No chain matches: any layer of that content makes the same tar.
    assert_eq!(find_layer(&layers, &ids(&["c", "x"])), Some("x-on-b"));
    assert_eq!(find_layer(&layers, &ids(&["a", "y"])), None);
    assert_eq!(find_layer(&layers, &[]), None);
}

#[test]
fn what_cannot_be_read_is_an_error() {
    let (dir, base, _top, image_id) = graph_root("overlay");
    assert!(matches!(
        ContainersStorage::open(dir.path(), "btrfs"),
        Err(DataRootError::UnsupportedGraphDriver { .. })
    ));
    assert!(matches!(
        ContainersStorage::open(dir.path().join("nowhere"), "overlay"),
        Err(DataRootError::Read { .. })
    ));
    let store = ContainersStorage::open(dir.path(), "overlay").unwrap();
    assert!(matches!(
        store.layer_tar(&[digest(b"not there")]),
        Err(DataRootError::LayerNotInStore { .. })
    ));
    // A config that is not the image's.
    let other = digest(b"{}");
    let image_dir = dir.path().join("overlay-images").join(&other[7..]);
    std::fs::create_dir_all(&image_dir).unwrap();
    std::fs::write(image_dir.join(big_data_name(&other)), b"{ }").unwrap();
    assert!(matches!(
        store.image_config(&other),
        Err(DataRootError::ConfigMismatch { .. })
    ));
    // A file changed after the layer was stored: the read fails.
    std::fs::write(
        dir.path()
            .join("overlay")
            .join("a".repeat(64))
            .join("diff/big"),
        [8u8; 3000],
    )
    .unwrap();
    let mut out = Vec::new();
    assert!(
        store
            .layer_tar(&[digest(&base)])
            .unwrap()
            .read_to_end(&mut out)
            .is_err()
    );
    assert!(store.image_config(&image_id).is_ok());
    std::fs::write(dir.path().join("overlay-layers/layers.json"), b"[{").unwrap();
    assert!(matches!(
        store.layer_tar(&[digest(&base)]),
        Err(DataRootError::Format { .. })
    ));
}
