//! Extraction from synthetic `docker save` streams of both layouts.

use layer_writer::{BlobRef, Format, SaveImage, WriterOptions};
use serde_json::json;

use crate::support::*;

fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, path, data).unwrap();
}

/// 20.10–24: `<id>/…` folders and the config in name order, `manifest.json` last.
fn old_layout(s: &Synthetic, ids: &[String]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let cfg = s.image.config_digest();
    let mut items: Vec<(String, Vec<u8>)> = vec![(
        format!("{}.json", cfg.digest()),
        s.image.config_json.clone(),
    )];
    for (i, id) in ids.iter().enumerate() {
        items.push((format!("{id}/VERSION"), b"1.0".to_vec()));
        items.push((format!("{id}/json"), b"{}".to_vec()));
        items.push((format!("{id}/layer.tar"), s.tars[i].clone()));
    }
    items.sort();
    for (p, d) in &items {
        append(&mut b, p, d);
    }
    let layers: Vec<String> = ids.iter().map(|id| format!("{id}/layer.tar")).collect();
    let m = json!([{"Config": format!("{}.json", cfg.digest()), "RepoTags": ["demo:latest"], "Layers": layers}]);
    append(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
    append(&mut b, "repositories", b"{}");
    b.into_inner().unwrap()
}

/// 25+: blobs first (named by digest), then index.json and manifest.json.
fn oci_layout(s: &Synthetic, blobs: &[Vec<u8>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let cfg = s.image.config_digest();
    let mut items: Vec<(String, Vec<u8>)> = vec![(
        format!("blobs/sha256/{}", cfg.digest()),
        s.image.config_json.clone(),
    )];
    for blob in blobs {
        items.push((format!("blobs/sha256/{}", sha(blob).digest()), blob.clone()));
    }
    items.push((
        "blobs/sha256/0000000000000000000000000000000000000000000000000000000000000000".into(),
        br#"{"schemaVersion":2}"#.to_vec(),
    ));
    items.sort();
    for (p, d) in &items {
        append(&mut b, p, d);
    }
    append(
        &mut b,
        "index.json",
        br#"{"schemaVersion":2,"manifests":[]}"#,
    );
    append(&mut b, "manifest.json", b"[]");
    append(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    b.into_inner().unwrap()
}

#[tokio::test]
async fn old_layout_by_v1_id() {
    let s = synthetic();
    let save = old_layout(&s, &s.image.layer_ids);
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), WriterOptions::default());
    let out = w
        .write_from_save(&s.image, &[0, 2], std::io::Cursor::new(save))
        .await
        .unwrap();
    assert_eq!(out.config_json.as_deref(), Some(&s.image.config_json[..]));
    let got: Vec<usize> = out.layers.iter().map(|l| l.index).collect();
    assert_eq!(got.len(), 2);
    let tree = tree(dir.path(), &s.image);
    assert!(tree.contains(&"<id0>/layer.tar".into()) && tree.contains(&"<id2>/layer.tar".into()));
    assert!(
        !tree
            .iter()
            .any(|p| p.contains("<id1>") || p.contains("<diff1>")),
        "{tree:?}"
    );
}

#[tokio::test]
async fn old_layout_with_unknown_ids_is_hashed() {
    let s = synthetic();
    let ids: Vec<String> = (0..3).map(|i| format!("{i:064x}")).collect();
    let save = old_layout(&s, &ids);
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), WriterOptions::default());
    let out = w
        .write_from_save(&s.image, &[1], std::io::Cursor::new(save))
        .await
        .unwrap();
    assert_eq!(out.layers.len(), 1);
    assert_eq!(out.layers[0].diff_id, sha(&s.tars[1]));
    let tree = tree(dir.path(), &s.image);
    assert!(tree.contains(&"<id1>/layer.tar".into()), "{tree:?}");
    assert!(!tree.iter().any(|p| p.contains(".dlgrab")), "{tree:?}");
}

#[tokio::test]
async fn oci_layout_uncompressed_and_compressed() {
    let mut s = synthetic();
    // base: uncompressed (classic 25+); middle: gzip with known digest; top: gzip, digest unknown
    let gz1 = gzip(&s.tars[1]);
    let gz2 = gzip(&s.tars[2]);
    s.image.compressed[1] = Some(BlobRef {
        digest: sha(&gz1),
        size: gz1.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    });
    let save = oci_layout(&s, &[s.tars[0].clone(), gz1, gz2]);
    for format in [Format::Seed, Format::Oci, Format::Registry] {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(
            dir.path(),
            WriterOptions {
                format,
                replace: false,
            },
        );
        let out = w
            .write_from_save_blocking(&s.image, &[0, 1, 2], std::io::Cursor::new(save.clone()))
            .unwrap();
        let mut got: Vec<usize> = out.layers.iter().map(|l| l.index).collect();
        got.sort();
        assert_eq!(got, [0, 1, 2], "{format:?}");
        assert!(out.config_json.is_some());
    }
}

#[tokio::test]
async fn missing_layer_is_reported() {
    let s = synthetic();
    let save = oci_layout(&s, &[s.tars[0].clone()]);
    let dir = tempfile::tempdir().unwrap();
    let w = writer(
        dir.path(),
        WriterOptions {
            format: Format::Oci,
            replace: false,
        },
    );
    let err = w
        .write_from_save(&s.image, &[0, 2], std::io::Cursor::new(save))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            layer_writer::WriteError::MissingFromSave { index: 2, .. }
        ),
        "{err:?}"
    );
}

/// 20.10–24 layout with the config entry placed first or after every layer.
fn old_layout_config_at(s: &Synthetic, config_first: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let cfg = s.image.config_digest();
    let config = (
        format!("{}.json", cfg.digest()),
        s.image.config_json.clone(),
    );
    if config_first {
        append(&mut b, &config.0, &config.1);
    }
    for (i, id) in s.image.layer_ids.iter().enumerate() {
        append(&mut b, &format!("{id}/VERSION"), b"1.0");
        append(&mut b, &format!("{id}/json"), b"{}");
        append(&mut b, &format!("{id}/layer.tar"), &s.tars[i]);
    }
    if !config_first {
        append(&mut b, &config.0, &config.1);
    }
    append(&mut b, "manifest.json", b"[]");
    b.into_inner().unwrap()
}

/// What a caller knows before reading the stream: no config.
fn unread(s: &Synthetic) -> SaveImage {
    let mut context = s.image.clone();
    context.config_json = Vec::new();
    SaveImage {
        context,
        config_digest: s.image.config_digest(),
        diff_ids: s.image.diff_ids().unwrap(),
    }
}

/// Every file under `root` with its bytes.
fn contents(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walk(root) {
        let rel = e.strip_prefix(root).unwrap().to_string_lossy().to_string();
        out.push((rel, std::fs::read(&e).unwrap()));
    }
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

#[tokio::test]
async fn config_read_from_the_stream_gives_the_same_folder() {
    let s = synthetic();
    let streams = [
        ("old, config first", old_layout_config_at(&s, true)),
        ("old, config last", old_layout_config_at(&s, false)),
        ("oci", oci_layout(&s, &s.tars)),
    ];
    for (what, save) in streams {
        for format in [Format::Seed, Format::Oci, Format::Registry] {
            let options = WriterOptions {
                format,
                replace: false,
            };
            let known = tempfile::tempdir().unwrap();
            writer(known.path(), options.clone())
                .write_from_save(&s.image, &[0, 2], std::io::Cursor::new(save.clone()))
                .await
                .unwrap();
            let read = tempfile::tempdir().unwrap();
            let out = writer(read.path(), options)
                .write_from_save_reading_config(
                    unread(&s),
                    &[0, 2],
                    std::io::Cursor::new(save.clone()),
                )
                .await
                .unwrap();
            assert_eq!(
                out.config_json.as_deref(),
                Some(&s.image.config_json[..]),
                "{what} {format:?}"
            );
            let mut got: Vec<usize> = out.layers.iter().map(|l| l.index).collect();
            got.sort();
            assert_eq!(got, [0, 2], "{what} {format:?}");
            let (a, b) = (contents(known.path()), contents(read.path()));
            assert!(!a.is_empty());
            assert_eq!(a, b, "{what} {format:?}");
        }
    }
}

#[tokio::test]
async fn top_layer_with_a_config_dependent_name_is_found_by_hashing() {
    // The top layer's v1 id is unknown before the config: it is hashed.
    let s = synthetic();
    let save = old_layout_config_at(&s, false);
    let dir = tempfile::tempdir().unwrap();
    let out = writer(dir.path(), WriterOptions::default())
        .write_from_save_reading_config(unread(&s), &[2], std::io::Cursor::new(save))
        .await
        .unwrap();
    assert_eq!(out.layers.len(), 1);
    assert_eq!(out.layers[0].diff_id, sha(&s.tars[2]));
    let tree = tree(dir.path(), &s.image);
    assert!(tree.contains(&"<id2>/layer.tar".into()), "{tree:?}");
    assert!(tree.contains(&"<id2>/json".into()), "{tree:?}");
    assert!(
        !tree
            .iter()
            .any(|p| p.contains(".tmp") || p.contains("<id0>")),
        "{tree:?}"
    );
}

#[tokio::test]
async fn stream_without_the_config_writes_nothing() {
    let s = synthetic();
    let mut b = tar::Builder::new(Vec::new());
    for (i, id) in s.image.layer_ids.iter().enumerate() {
        append(&mut b, &format!("{id}/layer.tar"), &s.tars[i]);
    }
    // Another image's config, which must not be taken for this one's.
    append(&mut b, &format!("{}.json", "ab".repeat(32)), b"{}");
    let save = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = writer(dir.path(), WriterOptions::default())
        .write_from_save_reading_config(unread(&s), &[0, 2], std::io::Cursor::new(save))
        .await
        .unwrap_err();
    assert!(
        matches!(err, layer_writer::WriteError::ConfigMissingFromSave { .. }),
        "{err:?}"
    );
    assert!(walk(dir.path()).is_empty(), "{:?}", walk(dir.path()));
}

#[tokio::test]
async fn config_listing_other_layers_is_refused() {
    let s = synthetic();
    let save = old_layout_config_at(&s, true);
    let mut image = unread(&s);
    image.diff_ids.swap(0, 1);
    let dir = tempfile::tempdir().unwrap();
    let err = writer(dir.path(), WriterOptions::default())
        .write_from_save_reading_config(image, &[0], std::io::Cursor::new(save))
        .await
        .unwrap_err();
    assert!(
        matches!(err, layer_writer::WriteError::ConfigMismatch { .. }),
        "{err:?}"
    );
    assert!(walk(dir.path()).is_empty(), "{:?}", walk(dir.path()));
}

#[test]
fn ids_below_the_top_follow_from_diff_ids() {
    let s = synthetic();
    let below = layer_writer::v1_layer_ids_below_top(&s.image.diff_ids().unwrap());
    assert_eq!(below, s.image.layer_ids[..2]);
    assert!(layer_writer::v1_layer_ids_below_top(&[]).is_empty());
}

#[tokio::test]
async fn top_layer_id_is_taken_from_the_config_when_left_empty() {
    let s = synthetic();
    for config_first in [true, false] {
        let save = old_layout_config_at(&s, config_first);
        let mut image = unread(&s);
        image.context.layer_ids[2] = String::new();
        let dir = tempfile::tempdir().unwrap();
        let out = writer(dir.path(), WriterOptions::default())
            .write_from_save_reading_config(image, &[1, 2], std::io::Cursor::new(save))
            .await
            .unwrap();
        let top = out.layers.iter().find(|l| l.index == 2).unwrap();
        assert_eq!(top.id, s.image.layer_ids[2]);
        let tree = tree(dir.path(), &s.image);
        assert!(tree.contains(&"<id2>/layer.tar".into()), "{tree:?}");
        assert!(tree.contains(&"<id1>/layer.tar".into()), "{tree:?}");
    }
}

#[tokio::test]
async fn an_existing_folder_named_by_the_config_stops_before_any_commit() {
    let s = synthetic();
    let save = old_layout_config_at(&s, false);
    let mut image = unread(&s);
    image.context.layer_ids[2] = String::new();
    let dir = tempfile::tempdir().unwrap();
    let taken = dir.path().join(&s.image.layer_ids[2]);
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("mine"), b"user data").unwrap();
    let err = writer(dir.path(), WriterOptions::default())
        .write_from_save_reading_config(image, &[0, 2], std::io::Cursor::new(save))
        .await
        .unwrap_err();
    assert!(
        matches!(err, layer_writer::WriteError::TargetExists { .. }),
        "{err:?}"
    );
    let left: Vec<_> = walk(dir.path());
    assert_eq!(left, vec![taken.join("mine")]);
}
