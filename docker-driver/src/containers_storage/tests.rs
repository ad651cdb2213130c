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

/// A tar of one file `name` holding `data`, as the archive API gives it.
fn one_file_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    builder.append_data(&mut header, name, data).unwrap();
    builder.into_inner().unwrap()
}

#[test]
fn the_layout_names_what_the_store_route_reads() {
    for driver in SUPPORTED_DRIVERS {
        let (dir, base, top, image_id) = graph_root(driver);
        let root = dir.path();
        let layout = PodmanLayout::new(driver).unwrap();
        // The config, the layer list, each layer's tar-split and files are
        // where the layout says, as the archive route reads them.
        let config_path = root
            .join(layout.images_dir())
            .join(layout.config_file(&image_id).unwrap());
        let config = std::fs::read(&config_path).unwrap();
        let name = config_path.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            config_from_tar(&one_file_tar(name, &config)[..], &image_id).unwrap(),
            config
        );
        let json =
            std::fs::read(root.join(layout.layers_dir()).join(layout.layers_file())).unwrap();
        let ids = [digest(&base), digest(&top)];
        let top_id = layer_id(&json, &ids).unwrap();
        assert_eq!(top_id, "b".repeat(64));
        assert_eq!(layer_id(&json, &ids[..1]).unwrap(), "a".repeat(64));
        assert!(
            root.join(layout.layers_dir())
                .join(layout.tar_split_file(&top_id).unwrap())
                .is_file()
        );
        let (files, last) = layout.layer_files(&top_id).unwrap();
        let folder = root.join(layout.files_dir()).join(&files);
        assert!(folder.join("small").is_file(), "{}", folder.display());
        assert!(files.ends_with(&last));
        assert!(matches!(
            layer_id(&json, &[digest(b"nothing")]),
            Err(DataRootError::LayerNotInStore { .. })
        ));
    }
    assert!(PodmanLayout::new("overlay2").is_err());
    assert!(
        PodmanLayout::new("overlay")
            .unwrap()
            .layer_files("../x")
            .is_err()
    );
}

#[test]
fn an_archive_must_hold_one_file() {
    let tar = one_file_tar("layers.json", b"[]");
    assert_eq!(
        file_from_tar(&tar[..], "layers.json", 1 << 20).unwrap(),
        b"[]"
    );
    let mut two = tar::Builder::new(Vec::new());
    for name in ["a", "b"] {
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        two.append_data(&mut header, name, &b"x"[..]).unwrap();
    }
    let two = two.into_inner().unwrap();
    assert!(file_from_tar(&two[..], "two", 1 << 20).is_err());
    assert!(file_from_tar(&tar[..], "big", 1).is_err());
    // A config that is not the image's.
    let config = one_file_tar("=x", b"{}");
    assert!(matches!(
        config_from_tar(&config[..], &digest(b"other")),
        Err(DataRootError::ConfigMismatch { .. })
    ));
}
