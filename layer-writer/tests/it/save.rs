//! Extraction from synthetic `docker save` streams of both layouts.

use layer_writer::{BlobRef, Format, WriterOptions};
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
