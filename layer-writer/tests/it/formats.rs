//! Each format against a golden tree.

use std::io::Cursor;

use layer_writer::{BlobRef, Format, WriteError, WriterOptions, v1_layer_ids};

use crate::support::*;

fn opts(format: Format) -> WriterOptions {
    WriterOptions {
        format,
        replace: false,
    }
}

#[test]
fn v1_ids_match_docker_save_20_10() {
    let config = std::fs::read("tests/it/fixtures/config-20.10.json").unwrap();
    let ids = v1_layer_ids(&config).unwrap();
    assert_eq!(
        ids,
        [
            "f6a6335fc71b1126c6df39978525de50f50964cfa88f12da97b03cc7b6503b38",
            "0e150019704ab1b82e0193b6232a0fa3f73dc3d9eba09148f90457f603684ef2"
        ]
    );
}

#[tokio::test]
async fn seed_json_matches_docker_save_20_10() {
    let config = std::fs::read("tests/it/fixtures/config-20.10.json").unwrap();
    let image =
        layer_writer::ImageContext::from_config(config, vec!["wtest/demo:1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Seed));
    let save = std::fs::File::open("tests/it/fixtures/save-20.10.tar").unwrap();
    let out = w.write_from_save_blocking(&image, &[0, 1], save).unwrap();
    assert_eq!(out.layers.len(), 2);
    assert!(out.config_json.is_some());
    for (i, name) in ["base", "top"].iter().enumerate() {
        let ours = std::fs::read(dir.path().join(&image.layer_ids[i]).join("json")).unwrap();
        let theirs = std::fs::read(format!("tests/it/fixtures/{name}-json-20.10.json")).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }
    // The folder named as docker save names it holds a symlink to the
    // blob, which manifest.json names, as Docker 25+'s save does.
    let manifest = read_json(dir.path().join("manifest.json"));
    let top = "0e150019704ab1b82e0193b6232a0fa3f73dc3d9eba09148f90457f603684ef2/layer.tar";
    let blob = std::fs::read_link(dir.path().join(top)).unwrap();
    assert_eq!(
        Some(manifest[0]["Layers"][1].as_str().unwrap()),
        blob.to_str().unwrap().strip_prefix("../")
    );
}

const SEED_TOP_FILES: [&str; 6] = [
    "<cfg>.json",
    "blobs/sha256/<cfg>",
    "index.json",
    "manifest.json",
    "oci-layout",
    "repositories",
];

#[tokio::test]
async fn seed_all_layers() {
    let s = synthetic();
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Seed));
    for (i, t) in s.tars.iter().enumerate() {
        // base plain, middle gzip, top zstd
        let blob = match i {
            0 => t.clone(),
            1 => gzip(t),
            _ => zstd::encode_all(&t[..], 3).unwrap(),
        };
        let l = w.write_layer(&s.image, i, Cursor::new(blob)).await.unwrap();
        assert_eq!(l.diff_id, sha(t));
        assert_eq!(l.tar_size, t.len() as u64);
        assert_eq!(l.id, s.image.layer_ids[i]);
    }
    let mut expected: Vec<String> = SEED_TOP_FILES.iter().map(|s| s.to_string()).collect();
    for i in 0..3 {
        expected.extend(["VERSION", "json", "layer.tar"].map(|f| format!("<id{i}>/{f}")));
        expected.push(format!("blobs/sha256/<diff{i}>"));
    }
    expected.push("blobs/sha256/<manifest>".into());
    let root = dir.path();
    // the manifest blob's name is not known in advance
    let idx = read_json(root.join("index.json"));
    let md = idx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let actual: Vec<String> = tree(root, &s.image)
        .into_iter()
        .map(|p| p.replace(&md, "<manifest>"))
        .collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    let mut actual_sorted = actual.clone();
    actual_sorted.sort();
    assert_eq!(actual_sorted, expected_sorted);

    let top = &s.image.layer_ids[2];
    assert_eq!(
        std::fs::read(root.join(top).join("layer.tar")).unwrap(),
        s.tars[2]
    );
    assert_eq!(
        std::fs::read(root.join(top).join("VERSION")).unwrap(),
        b"1.0"
    );
    let json = read_json(root.join(top).join("json"));
    assert_eq!(json["id"], top.as_str());
    assert_eq!(json["parent"], s.image.layer_ids[1].as_str());
    assert_eq!(json["config"]["Cmd"][0], "/bin/sh");
    let base = read_json(root.join(&s.image.layer_ids[0]).join("json"));
    assert!(base.get("parent").is_none());

    let manifest = read_json(root.join("manifest.json"));
    let cfg = s.image.config_digest();
    assert_eq!(manifest[0]["Config"], format!("{}.json", cfg.digest()));
    assert_eq!(manifest[0]["RepoTags"][0], "demo:latest");
    assert_eq!(
        manifest[0]["Layers"][0],
        format!("blobs/sha256/{}", sha(&s.tars[0]).digest())
    );
    assert_eq!(
        std::fs::read(root.join(format!("{}.json", cfg.digest()))).unwrap(),
        s.image.config_json
    );
    assert_eq!(
        read_json(root.join("repositories"))["demo"]["latest"],
        top.as_str()
    );
    assert_eq!(
        idx["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/demo:latest"
    );
    assert_eq!(
        idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let m = read_json(root.join("blobs/sha256").join(&md));
    assert_eq!(m["config"]["digest"], cfg.to_string());
    assert_eq!(m["layers"][2]["digest"], sha(&s.tars[2]).to_string());
    assert_eq!(
        m["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    // The OCI blobs hold the data; layer.tar and <cfg>.json are relative
    // symlinks to them, as in Docker 25+'s `docker save`.
    use std::os::unix::fs::MetadataExt;
    for (i, id) in s.image.layer_ids.iter().enumerate() {
        let link = root.join(id).join("layer.tar");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::Path::new("../blobs/sha256").join(sha(&s.tars[i]).digest())
        );
        let a = std::fs::metadata(&link).unwrap();
        let b =
            std::fs::metadata(root.join("blobs/sha256").join(sha(&s.tars[i]).digest())).unwrap();
        assert_eq!(a.ino(), b.ino());
        // A plain `tar -c` would store a second name of the blob as a
        // link entry without data, which containers/image reads as empty.
        assert_eq!(b.nlink(), 1, "no hard link left beside the blob");
    }
    assert_eq!(
        std::fs::read_link(root.join(format!("{}.json", cfg.digest()))).unwrap(),
        std::path::Path::new("blobs/sha256").join(cfg.digest())
    );
}

#[tokio::test]
async fn seed_top_layer_only_references_the_others() {
    let mut s = synthetic();
    let gz0 = gzip(&s.tars[0]);
    s.image.compressed[0] = Some(BlobRef {
        digest: sha(&gz0),
        size: gz0.len() as u64,
        media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Seed));
    w.write_layer(&s.image, 2, Cursor::new(gzip(&s.tars[2])))
        .await
        .unwrap();
    let root = dir.path();
    let idx = read_json(root.join("index.json"));
    let md = idx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let m = read_json(root.join("blobs/sha256").join(&md));
    assert_eq!(m["layers"][0]["digest"], sha(&gz0).to_string());
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(m["layers"][1]["digest"], sha(&s.tars[1]).to_string());
    assert_eq!(m["layers"][1]["size"], 0);
    let manifest = read_json(root.join("manifest.json"));
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 3);
    let tree = tree(root, &s.image);
    assert!(tree.contains(&"<id2>/layer.tar".to_string()));
    assert!(
        !tree
            .iter()
            .any(|p| p.starts_with("<id0>") || p.starts_with("<id1>"))
    );
}

#[tokio::test]
async fn oci_format() {
    let s = synthetic();
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Oci));
    for i in [0, 2] {
        let l = w
            .write_layer(&s.image, i, Cursor::new(gzip(&s.tars[i])))
            .await
            .unwrap();
        assert_eq!(
            l.files,
            [format!("blobs/sha256/{}", sha(&s.tars[i]).digest())].map(std::path::PathBuf::from)
        );
    }
    let root = dir.path();
    let idx = read_json(root.join("index.json"));
    let md = idx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut actual: Vec<String> = tree(root, &s.image)
        .into_iter()
        .map(|p| p.replace(&md, "<manifest>"))
        .collect();
    actual.sort();
    assert_eq!(
        actual,
        [
            "blobs/sha256/<cfg>",
            "blobs/sha256/<diff0>",
            "blobs/sha256/<diff2>",
            "blobs/sha256/<manifest>",
            "index.json",
            "manifest.json",
            "oci-layout",
            "repositories"
        ]
    );
    let manifest = read_json(root.join("manifest.json"));
    assert_eq!(
        manifest[0]["Config"],
        format!("blobs/sha256/{}", s.image.config_digest().digest())
    );
    assert_eq!(
        manifest[0]["Layers"][1],
        format!("blobs/sha256/{}", sha(&s.tars[1]).digest())
    );
    assert_eq!(
        std::fs::read(root.join("blobs/sha256").join(sha(&s.tars[2]).digest())).unwrap(),
        s.tars[2]
    );
    assert_eq!(
        read_json(root.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
}

#[tokio::test]
async fn registry_format_keeps_compressed_blobs_and_pushed_manifest() {
    let mut s = synthetic();
    let gz: Vec<Vec<u8>> = s.tars.iter().map(|t| gzip(t)).collect();
    let mt = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    for (i, g) in gz.iter().enumerate() {
        s.image.compressed[i] = Some(BlobRef {
            digest: sha(g),
            size: g.len() as u64,
            media_type: mt.into(),
        });
    }
    let pushed = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": s.image.config_digest().to_string(), "size": s.image.config_json.len()},
        "layers": gz.iter().map(|g| serde_json::json!({"mediaType": mt, "digest": sha(g).to_string(), "size": g.len()})).collect::<Vec<_>>(),
    }))
    .unwrap();
    s.image.manifest = Some((
        "application/vnd.docker.distribution.manifest.v2+json".into(),
        pushed.clone(),
    ));
    assert_eq!(s.image.repository, "library/demo");
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Registry));
    w.write_layer(&s.image, 2, Cursor::new(gz[2].clone()))
        .await
        .unwrap();
    let md = sha(&pushed).digest().to_string();
    let mut actual: Vec<String> = tree(dir.path(), &s.image)
        .into_iter()
        .map(|p| {
            p.replace(&md, "<m>")
                .replace(&format!("/{}/", &md[..2]), "/<m:2>/")
        })
        .collect();
    actual.sort();
    let r = "docker/registry/v2";
    let repo = format!("{r}/repositories/library/demo");
    let mut expected = vec![
        format!("{r}/blobs/sha256/<gz2:2>/<gz2>/data"),
        format!("{r}/blobs/sha256/<m:2>/<m>/data"),
        format!("{repo}/_layers/sha256/<gz2>/link"),
        format!("{repo}/_layers/sha256/<cfg>/link"),
        format!("{repo}/_manifests/revisions/sha256/<m>/link"),
        format!("{repo}/_manifests/tags/latest/current/link"),
        format!("{repo}/_manifests/tags/latest/index/sha256/<m>/link"),
    ];
    let cfg = s.image.config_digest().digest().to_string();
    expected.push(format!("{r}/blobs/sha256/{}/<cfg>/data", &cfg[..2]));
    expected.sort();
    assert_eq!(actual, expected);
    let root = dir.path();
    let h = sha(&gz[2]).digest().to_string();
    assert_eq!(
        std::fs::read(
            root.join(r)
                .join("blobs/sha256")
                .join(&h[..2])
                .join(&h)
                .join("data")
        )
        .unwrap(),
        gz[2]
    );
    assert_eq!(
        std::fs::read_to_string(root.join(&repo).join("_manifests/tags/latest/current/link"))
            .unwrap(),
        format!("sha256:{md}")
    );
    assert_eq!(
        std::fs::read_to_string(
            root.join(&repo)
                .join("_layers/sha256")
                .join(&h)
                .join("link")
        )
        .unwrap(),
        format!("sha256:{h}")
    );
}

#[tokio::test]
async fn registry_format_synthesises_a_manifest() {
    let s = synthetic();
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), opts(Format::Registry));
    w.write_layer(&s.image, 1, Cursor::new(gzip(&s.tars[1])))
        .await
        .unwrap();
    let repo = dir
        .path()
        .join("docker/registry/v2/repositories/library/demo");
    let link = std::fs::read_to_string(repo.join("_manifests/tags/latest/current/link")).unwrap();
    let hex = link.trim_start_matches("sha256:");
    let m = read_json(
        dir.path()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"),
    );
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["layers"][1]["digest"], sha(&s.tars[1]).to_string());
    assert_eq!(m["layers"][1]["size"], s.tars[1].len());
    assert!(
        repo.join("_layers/sha256")
            .join(sha(&s.tars[1]).digest())
            .join("link")
            .exists()
    );
}

#[tokio::test]
async fn the_same_layer_again_is_kept_another_refused_and_replace_rewrites() {
    let s = synthetic();
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::Seed, Format::Oci, Format::Registry] {
        let root = dir.path().join(format!("{format:?}"));
        let w = writer(&root, opts(format));
        let first = w
            .write_layer(&s.image, 0, Cursor::new(s.tars[0].clone()))
            .await
            .unwrap();
        assert!(!first.already_there, "{format:?}");
        let tar = root.join(
            first
                .files
                .iter()
                .find(|f| !f.ends_with("VERSION") && !f.ends_with("json") && !f.ends_with("link"))
                .unwrap(),
        );
        let written_at = std::fs::metadata(&tar).unwrap().modified().unwrap();
        let before = tree(&root, &s.image);

        // The same layer again: nothing rewritten, the same files reported.
        let again = w
            .write_layer(&s.image, 0, Cursor::new(gzip(&s.tars[0])))
            .await
            .unwrap();
        assert!(
            again.already_there || format == Format::Registry,
            "{format:?}"
        );
        assert_eq!(again.files, first.files, "{format:?}");
        assert_eq!(tree(&root, &s.image), before, "{format:?}");
        assert_eq!(
            std::fs::metadata(&tar).unwrap().modified().unwrap(),
            written_at,
            "{format:?}: the layer was rewritten"
        );

        // A target holding something else is not overwritten unasked.
        if format != Format::Registry {
            std::fs::write(&tar, b"not the layer").unwrap();
            let err = w
                .write_layer(&s.image, 0, Cursor::new(s.tars[0].clone()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, WriteError::TargetExists { .. }),
                "{format:?}: {err:?}"
            );
            assert_eq!(std::fs::read(&tar).unwrap(), b"not the layer");
        }
        let w = writer(
            &root,
            WriterOptions {
                format,
                replace: true,
            },
        );
        w.write_layer(&s.image, 0, Cursor::new(gzip(&s.tars[0])))
            .await
            .unwrap();
        assert_eq!(tree(&root, &s.image), before, "{format:?}");
        assert_eq!(std::fs::read(&tar).unwrap(), s.tars[0], "{format:?}");
    }
}
