//! Seeding: OCI layouts and `docker save` archives (legacy and Docker 25+)
//! imported into storage and served; a repository exported and imported back.

use std::path::Path;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::json;
use shim_registry::seed::{self, ImportOptions, SeedError};
use shim_registry::storage::{MemoryStorage, Storage};

use crate::support::{bytes, header, sha256, start_on};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Files of a fixture: archive path and content, or a symbolic link.
pub(crate) enum File {
    Data(String, Vec<u8>),
    Link(String, String),
}

fn data(path: &str, content: impl Into<Vec<u8>>) -> File {
    File::Data(path.to_owned(), content.into())
}

fn blob(content: &[u8]) -> File {
    data(
        &format!("blobs/sha256/{}", &sha256(content)["sha256:".len()..]),
        content,
    )
}

/// Writes `files` as a tar archive.
pub(crate) fn write_tar(path: &Path, files: &[File]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match f {
            File::Data(p, content) => {
                h.set_size(content.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, p, &content[..]).unwrap();
            }
            File::Link(p, target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.finish().unwrap();
}

/// Writes `files` under `dir`.
fn write_dir(dir: &Path, files: &[File]) {
    for f in files {
        if let File::Data(p, content) = f {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }
}

/// An image: config, two layers, its manifest (exact bytes).
pub(crate) struct Image {
    pub(crate) config: Vec<u8>,
    pub(crate) layers: Vec<Vec<u8>>,
    pub(crate) manifest: Vec<u8>,
}

pub(crate) fn image(seed: u64) -> Image {
    let layers = vec![bytes(3000, seed), bytes(70_000, seed + 1)];
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>() },
    }))
    .unwrap();
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(l), "size": l.len(),
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    Image {
        config,
        layers,
        manifest,
    }
}

/// The OCI layout files of `image`, named by `annotations` in `index.json`.
fn layout(image: &Image, annotations: serde_json::Value) -> Vec<File> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": sha256(&image.manifest),
            "size": image.manifest.len(),
            "annotations": annotations,
        }],
    });
    let mut files = vec![
        data("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
        data("index.json", serde_json::to_vec(&index).unwrap()),
        blob(&image.config),
        blob(&image.manifest),
    ];
    files.extend(image.layers.iter().map(|l| blob(l)));
    files
}

/// Asserts `storage` serves `image` as `name:tag` over HTTP.
async fn assert_served(
    storage: Arc<dyn Storage>,
    name: &str,
    tag: &str,
    manifest: &[u8],
    blobs: &[&[u8]],
) {
    let reg = start_on(storage).await;
    let r = reg
        .req(Method::GET, &format!("/v2/{name}/manifests/{tag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{name}:{tag}");
    assert_eq!(header(&r, "docker-content-digest"), sha256(manifest));
    assert_eq!(r.bytes().await.unwrap(), manifest);
    for b in blobs {
        let r = reg
            .req(Method::GET, &format!("/v2/{name}/blobs/{}", sha256(b)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap(), b);
    }
}

#[tokio::test]
async fn an_oci_layout_folder_and_its_tar() {
    let img = image(1);
    let files = layout(&img, json!({ "org.opencontainers.image.ref.name": "v1" }));
    let dir = tempfile::tempdir().unwrap();
    write_dir(&dir.path().join("layout"), &files);
    write_tar(&dir.path().join("layout.tar"), &files);
    for path in ["layout", "layout.tar"] {
        let storage = Arc::new(MemoryStorage::new());
        // A bare tag names no repository: one must be given.
        let e = seed::import(&*storage, dir.path().join(path), &ImportOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, SeedError::NoRepository { .. }), "{e}");
        let options = ImportOptions::default().repository("seeded/oci");
        let report = seed::import(&*storage, dir.path().join(path), &options)
            .await
            .unwrap();
        assert_eq!(report.images.len(), 1, "{path}");
        assert_eq!(report.images[0].repository, "seeded/oci");
        assert_eq!(report.images[0].tags, ["v1"]);
        assert_eq!(report.images[0].digest.to_string(), sha256(&img.manifest));
        assert_eq!(report.blobs_stored, 3);
        assert!(report.missing.is_empty());
        // Again: nothing new to store.
        let again = seed::import(&*storage, dir.path().join(path), &options)
            .await
            .unwrap();
        assert_eq!((again.blobs_stored, again.blobs_present), (0, 3));
        assert_served(
            storage,
            "seeded/oci",
            "v1",
            &img.manifest,
            &[&img.config, &img.layers[0], &img.layers[1]],
        )
        .await;
    }
}

#[tokio::test]
async fn a_legacy_docker_save_archive() {
    let img = image(2);
    let config_hex = &sha256(&img.config)["sha256:".len()..];
    let manifest_json = json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["example.com:5000/team/app:1", "team/app:2", "other:latest"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
    }]);
    let files = vec![
        data("manifest.json", serde_json::to_vec(&manifest_json).unwrap()),
        data("repositories", "{}"),
        data(&format!("{config_hex}.json"), img.config.clone()),
        data("aaa/VERSION", "1.0"),
        data("aaa/layer.tar", img.layers[0].clone()),
        data("bbb/layer.tar", img.layers[1].clone()),
        // Docker links a layer met twice to its first copy.
        File::Link("ccc/layer.tar".into(), "../aaa/layer.tar".into()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("save.tar");
    write_tar(&tar, &files);
    let storage = Arc::new(MemoryStorage::new());
    let report = seed::import(&*storage, &tar, &ImportOptions::default())
        .await
        .unwrap();
    let got: Vec<_> = report
        .images
        .iter()
        .map(|i| (i.repository.as_str(), i.tags.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("team/app", vec!["1".to_owned(), "2".to_owned()]),
            ("other", vec!["latest".to_owned()])
        ]
    );
    assert_eq!(report.images[0].digest, report.images[1].digest);
    assert_eq!(report.blobs_stored, 3);
    assert_eq!(report.blobs_present, 1, "the linked layer is stored once");
    // The manifest made: the config and the three layers, uncompressed.
    let (_, stored) = storage
        .get_manifest(
            "team/app",
            &shim_registry::storage::Reference::Tag("2".into()),
        )
        .await
        .unwrap()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&stored.body).unwrap();
    assert_eq!(m["config"]["digest"], sha256(&img.config));
    let layers: Vec<_> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        layers,
        [
            sha256(&img.layers[0]),
            sha256(&img.layers[1]),
            sha256(&img.layers[0])
        ]
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_served(
        storage,
        "team/app",
        "1",
        &stored.body,
        &[&img.config, &img.layers[1]],
    )
    .await;
}

#[tokio::test]
async fn a_docker_25_save_archive_keeps_its_manifest() {
    let img = image(3);
    // Docker 25+ writes both an OCI layout and the legacy manifest.json,
    // whose layers are the layout's blobs.
    let mut files = layout(
        &img,
        json!({
            "io.containerd.image.name": "docker.io/library/busybox:latest",
            "org.opencontainers.image.ref.name": "latest",
        }),
    );
    let hex = |b: &[u8]| sha256(b)["sha256:".len()..].to_owned();
    files.push(data(
        "manifest.json",
        serde_json::to_vec(&json!([{
            "Config": format!("blobs/sha256/{}", hex(&img.config)),
            "RepoTags": ["busybox:latest"],
            "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", hex(l))).collect::<Vec<_>>(),
        }]))
        .unwrap(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("save.tar");
    write_tar(&tar, &files);
    let storage = Arc::new(MemoryStorage::new());
    let report = seed::import(&*storage, &tar, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].repository, "library/busybox");
    assert_eq!(report.images[0].tags, ["latest"]);
    assert_eq!(report.images[0].media_type, OCI_MANIFEST);
    assert_served(
        storage,
        "library/busybox",
        "latest",
        &img.manifest,
        &[&img.config],
    )
    .await;
}

#[tokio::test]
async fn an_index_with_a_platform_left_out() {
    let img = image(4);
    let absent = sha256(b"another platform's manifest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            { "mediaType": OCI_MANIFEST, "digest": sha256(&img.manifest), "size": img.manifest.len(), "platform": { "os": "linux", "architecture": "amd64" } },
            { "mediaType": OCI_MANIFEST, "digest": absent, "size": 28, "platform": { "os": "linux", "architecture": "arm64" } },
        ],
    }))
    .unwrap();
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": OCI_INDEX, "digest": sha256(&index), "size": index.len(),
            "annotations": { "org.opencontainers.image.ref.name": "localhost/multi:v2" } }],
    });
    let mut files = layout(&img, json!({}));
    files[1] = data("index.json", serde_json::to_vec(&top).unwrap());
    files.push(blob(&index));
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &files);
    let storage = Arc::new(MemoryStorage::new());
    let report = seed::import(&*storage, dir.path(), &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.images[0].repository, "multi");
    assert_eq!(report.images[0].tags, ["v2"]);
    assert_eq!(report.images[0].media_type, OCI_INDEX);
    assert_eq!(
        report
            .missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [absent]
    );
    assert_served(storage.clone(), "multi", "v2", &index, &[]).await;
    assert_served(
        storage,
        "multi",
        &sha256(&img.manifest),
        &img.manifest,
        &[&img.layers[0]],
    )
    .await;
}

#[tokio::test]
async fn export_and_import_back() {
    let storage = Arc::new(MemoryStorage::new());
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (image(5), image(6));
    for (img, tag) in [(&a, "one"), (&b, "two")] {
        let src = dir.path().join(tag);
        write_dir(
            &src,
            &layout(img, json!({ "org.opencontainers.image.ref.name": tag })),
        );
        seed::import(
            &*storage,
            &src,
            &ImportOptions::default().repository("round/trip"),
        )
        .await
        .unwrap();
    }
    let out = dir.path().join("out");
    let report = seed::export_oci_layout(&*storage, "round/trip", &out)
        .await
        .unwrap();
    assert_eq!(report.tags, ["one", "two"]);
    assert_eq!((report.manifests, report.blobs), (2, 6));
    assert!(out.join("oci-layout").is_file());
    // Only the layout: no temporary folder left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    let back = Arc::new(MemoryStorage::new());
    let report = seed::import(&*back, &out, &ImportOptions::default())
        .await
        .unwrap();
    let got: Vec<_> = report
        .images
        .iter()
        .map(|i| (i.repository.clone(), i.tags.clone(), i.digest.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "round/trip".to_owned(),
                vec!["one".to_owned()],
                sha256(&a.manifest)
            ),
            (
                "round/trip".to_owned(),
                vec!["two".to_owned()],
                sha256(&b.manifest)
            ),
        ]
    );
    assert_served(back, "round/trip", "two", &b.manifest, &[&b.layers[1]]).await;

    // The output must not exist (or be empty); unknown repositories are errors.
    let e = seed::export_oci_layout(&*storage, "round/trip", &out)
        .await
        .unwrap_err();
    assert!(matches!(e, SeedError::OutputExists { .. }), "{e}");
    let e = seed::export_oci_layout(&*storage, "nope", dir.path().join("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, SeedError::UnknownRepository { .. }), "{e}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    seed::export_oci_layout(&*storage, "round/trip", &empty)
        .await
        .unwrap();
    assert!(empty.join("index.json").is_file());
}

#[tokio::test]
async fn bad_seeds_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let storage = MemoryStorage::new();
    let opts = ImportOptions::default().repository("x");
    let import = |p: std::path::PathBuf| {
        let storage = storage.clone();
        let opts = opts.clone();
        async move { seed::import(&storage, p, &opts).await.unwrap_err() }
    };

    let gz = dir.path().join("save.tar.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    assert!(matches!(import(gz).await, SeedError::Compressed { .. }));

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(import(empty).await, SeedError::NotALayout { .. }));

    assert!(matches!(
        import(dir.path().join("absent")).await,
        SeedError::Read { .. }
    ));

    // A blob whose content is not its name: refused, its manifest not stored.
    let img = image(7);
    let mut files = layout(&img, json!({ "org.opencontainers.image.ref.name": "t" }));
    let layer_path = format!(
        "blobs/sha256/{}",
        &sha256(&img.layers[0])["sha256:".len()..]
    );
    for f in &mut files {
        if let File::Data(p, content) = f
            && *p == layer_path
        {
            content[0] ^= 1;
        }
    }
    let bad = dir.path().join("bad");
    write_dir(&bad, &files);
    let e = import(bad).await;
    assert!(matches!(e, SeedError::DigestMismatch { .. }), "{e}");
    assert!(storage.list_tags("x").await.unwrap().is_none());

    // Paths from manifest.json stay inside the seed.
    let escape = dir.path().join("escape");
    write_dir(
        &escape,
        &[data(
            "manifest.json",
            serde_json::to_vec(
                &json!([{ "Config": "../bad/index.json", "RepoTags": ["a:b"], "Layers": [] }]),
            )
            .unwrap(),
        )],
    );
    assert!(matches!(import(escape).await, SeedError::Missing { .. }));
}
