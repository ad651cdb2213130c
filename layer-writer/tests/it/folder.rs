//! A Seed (or OCI) folder is a set of images: every image a layer was
//! written for is described by the top-level files, whatever the order of
//! the writes, by one writer or several at once.

use std::io::Cursor;
use std::path::Path;

use layer_writer::{Format, ImageContext, WriterOptions};
use serde_json::{Value, json};

use crate::support::*;

/// The image made of the first `n` layers of `tars`, one history row each.
fn image_of(tars: &[Vec<u8>], n: usize, tags: &[&str]) -> ImageContext {
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": format!("2024-01-02T03:04:0{n}Z"),
        "config": {"Cmd": ["/bin/sh"]},
        "history": (0..n).map(|i| json!({"created_by": format!("ADD layer {i}")})).collect::<Vec<_>>(),
        "rootfs": {"type": "layers", "diff_ids": tars[..n].iter().map(|t| sha(t).to_string()).collect::<Vec<_>>()},
    });
    ImageContext::from_config(
        serde_json::to_vec(&config).unwrap(),
        tags.iter().map(|t| t.to_string()).collect(),
    )
    .unwrap()
}

fn tars() -> Vec<Vec<u8>> {
    vec![
        tar_of(&[("base", b"base\n")]),
        tar_of(&[("mid", b"mid\n")]),
        tar_of(&[("top", b"top\n")]),
        tar_of(&[("other", b"other\n")]),
    ]
}

fn opts(format: Format) -> WriterOptions {
    WriterOptions {
        format,
        replace: false,
    }
}

/// `manifest.json`'s entries as (config path, tags, layer paths).
fn entries(root: &Path) -> Vec<(String, Vec<String>, Vec<String>)> {
    let m = read_json(root.join("manifest.json"));
    m.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            };
            (
                e["Config"].as_str().unwrap().to_owned(),
                strings(&e["RepoTags"]),
                strings(&e["Layers"]),
            )
        })
        .collect()
}

/// The top-level files, byte for byte.
fn top_level(root: &Path) -> Vec<(String, Vec<u8>)> {
    ["manifest.json", "index.json", "repositories"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(root.join(f)).unwrap_or_default(),
            )
        })
        .collect()
}

/// Writes `(image, layer)` pairs in order, one writer per write (as separate runs).
async fn write_all(
    root: &Path,
    format: Format,
    tars: &[Vec<u8>],
    writes: &[(&ImageContext, usize)],
) {
    for (image, index) in writes {
        writer(root, opts(format))
            .write_layer(image, *index, Cursor::new(gzip(&tars[*index])))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_row_in_any_order_describes_every_image() {
    let tars = tars();
    // The rows of one image as the classic builder leaves them: each row an image.
    let base = image_of(&tars, 1, &[]);
    let mid = image_of(&tars, 2, &[]);
    let top = image_of(&tars, 3, &["demo:1"]);
    let orders: [[(&ImageContext, usize); 3]; 3] = [
        [(&top, 2), (&mid, 1), (&base, 0)],
        [(&base, 0), (&mid, 1), (&top, 2)],
        [(&mid, 1), (&top, 2), (&base, 0)],
    ];
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::Seed, Format::Oci] {
        let mut results = Vec::new();
        for (n, order) in orders.iter().enumerate() {
            let root = dir.path().join(format!("{format:?}-{n}"));
            write_all(&root, format, &tars, order).await;
            let e = entries(&root);
            assert_eq!(e.len(), 3, "{format:?} order {n}: {e:?}");
            // Base first, each entry's layers all in the folder.
            assert_eq!(
                e.iter().map(|(_, _, l)| l.len()).collect::<Vec<_>>(),
                [1, 2, 3]
            );
            for (_, _, layers) in &e {
                for l in layers {
                    assert!(root.join(l).is_file(), "{format:?} order {n}: {l} missing");
                }
            }
            assert_eq!(e[2].1, ["demo:1"]);
            let index = read_json(root.join("index.json"));
            let manifests = index["manifests"].as_array().unwrap();
            assert_eq!(manifests.len(), 3, "{format:?} order {n}: {index}");
            for m in manifests {
                let d = m["digest"].as_str().unwrap();
                let blob = root.join("blobs/sha256").join(&d[7..]);
                let manifest = read_json(&blob);
                for l in manifest["layers"].as_array().unwrap() {
                    let l = l["digest"].as_str().unwrap();
                    assert!(
                        root.join("blobs/sha256").join(&l[7..]).is_file(),
                        "{format:?} order {n}: layer blob {l} missing"
                    );
                }
            }
            assert_eq!(
                read_json(root.join("repositories"))["demo"]["1"],
                match format {
                    Format::Seed => json!(top.layer_ids[2]),
                    _ => json!(sha(&tars[2]).digest()),
                }
            );
            results.push(top_level(&root));
        }
        assert_eq!(
            results[0], results[1],
            "{format:?}: order changed the files"
        );
        assert_eq!(
            results[0], results[2],
            "{format:?}: order changed the files"
        );
    }
}

#[tokio::test]
async fn two_images_sharing_a_base_and_an_incomplete_one_last() {
    let tars = tars();
    let app1 = image_of(&tars, 3, &["app:1"]);
    // Another image on the same base: base + "other".
    let mut other_tars = vec![tars[0].clone(), tars[3].clone()];
    other_tars.push(tar_of(&[("x", b"x\n")]));
    let app2 = image_of(&other_tars, 2, &["app:2"]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // app:1 whole; of app:2 only its top layer (its base is app:1's).
    write_all(
        root,
        Format::Seed,
        &tars,
        &[(&app1, 0), (&app1, 1), (&app1, 2)],
    )
    .await;
    writer(root, opts(Format::Seed))
        .write_layer(&app2, 1, Cursor::new(other_tars[1].clone()))
        .await
        .unwrap();
    let e = entries(root);
    assert_eq!(e.len(), 2, "{e:?}");
    // app:2's base layer is found in app:1's folder.
    assert_eq!(e[0].1, ["app:2"]);
    assert_eq!(e[0].2[0], e[1].2[0]);
    assert!(e[0].2.iter().all(|l| root.join(l).is_file()));

    // A third image whose base is nowhere in the folder comes last.
    let lone = image_of(&[tar_of(&[("n", b"n\n")]), tars[2].clone()], 2, &["lone:1"]);
    writer(root, opts(Format::Seed))
        .write_layer(&lone, 1, Cursor::new(tars[2].clone()))
        .await
        .unwrap();
    let e = entries(root);
    assert_eq!(
        e.iter().map(|(_, t, _)| t[0].as_str()).collect::<Vec<_>>(),
        ["app:2", "app:1", "lone:1"]
    );
    let repos = read_json(root.join("repositories"));
    assert!(
        repos["app"]["1"].is_string()
            && repos["app"]["2"].is_string()
            && repos["lone"]["1"].is_string(),
        "{repos}"
    );
}

#[tokio::test]
async fn a_tag_names_the_image_exported_last() {
    let tars = tars();
    let old = image_of(&tars, 1, &["demo:latest", "demo:old"]);
    let new = image_of(&tars, 2, &["demo:latest"]);
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), Format::Seed, &tars, &[(&old, 0), (&new, 1)]).await;
    let e = entries(dir.path());
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].1, ["demo:old"]);
    assert_eq!(e[1].1, ["demo:latest"]);
    let tags: Vec<String> = read_json(dir.path().join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(tags, ["old", "latest"]);
}

#[tokio::test]
async fn the_same_row_again_changes_nothing() {
    let tars = tars();
    let top = image_of(&tars, 3, &["demo:1"]);
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), Format::Seed, &tars, &[(&top, 2), (&top, 0)]).await;
    let before = top_level(dir.path());
    let again = writer(dir.path(), opts(Format::Seed))
        .write_layer(&top, 2, Cursor::new(tars[2].clone()))
        .await
        .unwrap();
    assert!(again.already_there);
    assert_eq!(top_level(dir.path()), before);
    assert_eq!(entries(dir.path()).len(), 1);
}

#[test]
fn writers_at_once_leave_every_image_described() {
    // Separate writers share no mutex: only the folder's file lock orders them.
    let tars = tars();
    let images: Vec<ImageContext> = (0..6)
        .map(|i| {
            let mut t = tars.clone();
            t[0] = tar_of(&[("n", format!("{i}\n").as_bytes())]);
            image_of(&t, 3, &[&format!("img:{i}")])
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::thread::scope(|s| {
        for image in &images {
            let root = root.clone();
            let tars = tars.clone();
            s.spawn(move || {
                let w = writer(&root, opts(Format::Seed));
                for i in [2, 1] {
                    w.write_layer_blocking(image, i, Cursor::new(tars[i].clone()))
                        .unwrap();
                }
            });
        }
    });
    let e = entries(&root);
    assert_eq!(e.len(), 6, "{e:?}");
    let index = read_json(root.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 6);
    let repos = read_json(root.join("repositories"));
    assert_eq!(repos["img"].as_object().unwrap().len(), 6, "{repos}");
}

#[tokio::test]
async fn a_folder_from_before_records_keeps_its_image() {
    let tars = tars();
    let first = image_of(&tars, 1, &["first:1"]);
    let second = image_of(&[tar_of(&[("s", b"s\n")])], 1, &["second:1"]);
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), Format::Seed, &tars, &[(&first, 0)]).await;
    // As an older dlgrab (or an unpacked docker save) left it: no records.
    std::fs::remove_dir_all(dir.path().join(".dlgrab")).unwrap();
    writer(dir.path(), opts(Format::Seed))
        .write_layer(&second, 0, Cursor::new(tar_of(&[("s", b"s\n")])))
        .await
        .unwrap();
    let tags: Vec<String> = entries(dir.path())
        .into_iter()
        .flat_map(|(_, t, _)| t)
        .collect();
    assert_eq!(tags, ["first:1", "second:1"]);
}
