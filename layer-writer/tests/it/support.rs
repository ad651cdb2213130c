//! Synthetic images and tree snapshots.

use std::io::Write;
use std::path::Path;

use layer_writer::oci_spec::image::Digest;
use layer_writer::{ImageContext, LayerWriter, WriterOptions};
use serde_json::json;
use sha2::Digest as _;

/// A small image: layers of (path, content) files.
pub(crate) struct Synthetic {
    pub(crate) tars: Vec<Vec<u8>>,
    pub(crate) image: ImageContext,
}

pub(crate) fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub(crate) fn sha(bytes: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        .parse()
        .unwrap()
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub(crate) fn synthetic() -> Synthetic {
    let tars = vec![
        tar_of(&[("a", b"hello\n")]),
        tar_of(&[("b", b"world\n"), ("c/d", b"deep\n")]),
        tar_of(&[("e", b"top\n")]),
    ];
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Labels": {"k": "v"}},
        "history": [
            {"created": "2024-01-02T03:04:01Z", "created_by": "/bin/sh -c #(nop) ADD a"},
            {"created": "2024-01-02T03:04:02Z", "created_by": "/bin/sh -c #(nop) ENV X=1", "empty_layer": true},
            {"created": "2024-01-02T03:04:03Z", "created_by": "/bin/sh -c #(nop) ADD b"},
            {"created": "2024-01-02T03:04:05Z", "created_by": "/bin/sh -c #(nop) ADD e"},
        ],
        "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| sha(t).to_string()).collect::<Vec<_>>()},
    });
    let config_json = serde_json::to_vec(&config).unwrap();
    let image = ImageContext::from_config(config_json, vec!["demo:latest".into()]).unwrap();
    Synthetic { tars, image }
}

pub(crate) fn writer(root: &Path, options: WriterOptions) -> LayerWriter {
    LayerWriter::new(root, options)
}

/// All files under `root` but the writer's own bookkeeping (`.dlgrab/`),
/// relative, sorted; `<cfg>`, `<id0>`… and `<diff0>`… stand for the config
/// digest, layer ids and diff ids.
pub(crate) fn tree(root: &Path, image: &ImageContext) -> Vec<String> {
    let mut subst: Vec<(String, String)> =
        vec![(image.config_digest().digest().to_string(), "<cfg>".into())];
    for (i, id) in image.layer_ids.iter().enumerate() {
        subst.push((id.clone(), format!("<id{i}>")));
    }
    for (i, d) in image.diff_ids().unwrap().iter().enumerate() {
        subst.push((d.digest().to_string(), format!("<diff{i}>")));
        subst.push((d.digest()[..2].to_string() + "/", format!("<diff{i}:2>/")));
    }
    for (i, c) in image.compressed.iter().enumerate() {
        if let Some(c) = c {
            subst.push((c.digest.digest().to_string(), format!("<gz{i}>")));
            subst.push((
                c.digest.digest()[..2].to_string() + "/",
                format!("<gz{i}:2>/"),
            ));
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.iter_mut().for_each(|p| {
        for (from, to) in &subst {
            *p = p.replace(from.as_str(), to);
        }
    });
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p == root.join(".dlgrab") {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

#[track_caller]
pub(crate) fn check_tree(root: &Path, image: &ImageContext, expected: &[&str]) {
    let actual = tree(root, image);
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(actual, expected, "\nactual tree:\n{}", actual.join("\n"));
}

pub(crate) fn read_json(path: impl AsRef<Path>) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path.as_ref()).unwrap()).unwrap()
}
