//! Hostile input to the readers of daemon output: `docker save` streams
//! and layer blobs that are truncated, carry garbage or oversized tar
//! headers, name entries `../…` or `/…`, or are random bytes. None may
//! panic; a failure is an error with a message; nothing is written outside
//! the output folder, no temporary file stays, and every blob written is
//! the one its name says.

use std::path::Path;

use layer_writer::{Format, WriterOptions};
use proptest::prelude::*;
use sha2::Digest as _;

use crate::support::*;

/// What an entry of a hostile save stream is named.
#[derive(Debug, Clone)]
enum Name {
    /// `<id>/layer.tar` of layer `i` (20.10–24).
    V1Layer(usize),
    /// `blobs/sha256/<diff id>` of layer `i` (25+).
    Blob(usize),
    Config,
    Manifest,
    /// A name trying to leave the folder.
    Hostile(&'static str),
    /// Anything.
    Random(String),
}

/// What it holds.
#[derive(Debug, Clone)]
enum Content {
    Layer(usize),
    GzLayer(usize),
    Config,
    /// The layer's tar cut at a fraction of its length.
    Truncated(usize, f64),
    Bytes(Vec<u8>),
}

const HOSTILE: &[&str] = &[
    "../layer.tar",
    "../x/layer.tar",
    "../../escape/layer.tar",
    "/abs/layer.tar",
    "/etc/passwd",
    "blobs/sha256/../../../escape",
    "./../layer.tar",
    "..",
    "/",
    "",
];

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        (0..3usize).prop_map(Name::V1Layer),
        (0..3usize).prop_map(Name::Blob),
        Just(Name::Config),
        Just(Name::Manifest),
        prop::sample::select(HOSTILE).prop_map(Name::Hostile),
        "[a-z./]{0,40}".prop_map(Name::Random),
    ]
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        (0..3usize).prop_map(Content::Layer),
        (0..3usize).prop_map(Content::GzLayer),
        Just(Content::Config),
        ((0..3usize), 0.0..1.0f64).prop_map(|(i, f)| Content::Truncated(i, f)),
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(Content::Bytes),
    ]
}

/// How the whole stream is spoilt after it is built.
#[derive(Debug, Clone)]
enum Spoil {
    None,
    /// Cut at a fraction of its length.
    Truncate(f64),
    /// Bytes overwritten at a fraction of its length.
    Overwrite(f64, Vec<u8>),
    /// The size field of the header at a fraction set to a huge value.
    HugeSize(f64),
}

fn spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        Just(Spoil::None),
        (0.0..1.0f64).prop_map(Spoil::Truncate),
        (0.0..1.0f64, prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(f, b)| Spoil::Overwrite(f, b)),
        (0.0..1.0f64).prop_map(Spoil::HugeSize),
    ]
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::Seed),
        Just(Format::Oci),
        Just(Format::Registry)
    ]
}

/// A tar entry whose name is written into the header as is (the tar
/// crate's builder refuses `..`, as a hostile daemon would not).
fn raw_entry(out: &mut Vec<u8>, name: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_old();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn build(s: &Synthetic, entries: &[(Name, Content)], spoil: &Spoil) -> Vec<u8> {
    let ids = layer_writer::v1_layer_ids(&s.image.config_json).unwrap();
    let diff_ids = s.image.diff_ids().unwrap();
    let mut out = Vec::new();
    for (name, content) in entries {
        let name = match name {
            Name::V1Layer(i) => format!("{}/layer.tar", ids[*i]),
            Name::Blob(i) => format!("blobs/sha256/{}", diff_ids[*i].digest()),
            Name::Config => format!("{}.json", s.image.config_digest().digest()),
            Name::Manifest => "manifest.json".to_owned(),
            Name::Hostile(n) => (*n).to_owned(),
            Name::Random(n) => n.clone(),
        };
        let data = match content {
            Content::Layer(i) => s.tars[*i].clone(),
            Content::GzLayer(i) => gzip(&s.tars[*i]),
            Content::Config => s.image.config_json.clone(),
            Content::Truncated(i, f) => {
                let t = &s.tars[*i];
                t[..(t.len() as f64 * f) as usize].to_vec()
            }
            Content::Bytes(b) => b.clone(),
        };
        raw_entry(&mut out, name.as_bytes(), &data);
    }
    out.extend_from_slice(&[0; 1024]);
    let at = |f: f64, len: usize| ((len as f64 * f) as usize).min(len.saturating_sub(1));
    match spoil {
        Spoil::None => {}
        Spoil::Truncate(f) => out.truncate(at(*f, out.len())),
        Spoil::Overwrite(f, bytes) => {
            let start = at(*f, out.len());
            for (o, b) in out[start..].iter_mut().zip(bytes) {
                *o = *b;
            }
        }
        Spoil::HugeSize(f) => {
            let header = at(*f, out.len()) / 512 * 512;
            if out.len() >= header + 512 {
                // 11 octal digits of 7: 8 GiB, far beyond the stream.
                out[header + 124..header + 135].copy_from_slice(b"77777777777");
                let block: &mut [u8; 512] = (&mut out[header..header + 512]).try_into().unwrap();
                let mut h = tar::Header::new_old();
                h.as_mut_bytes().copy_from_slice(block);
                h.set_cksum();
                block.copy_from_slice(h.as_bytes());
            }
        }
    }
    out
}

/// The output folder's own checks, whatever the outcome: nothing outside
/// `root` in `outer`, no temporary file, every content-addressed file
/// holding what its name says.
#[track_caller]
fn check_folder(outer: &Path, root: &Path) {
    let beside: Vec<_> = std::fs::read_dir(outer)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        beside.iter().all(|p| p == root),
        "written beside the output folder: {beside:?}"
    );
    for file in files(root) {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            !rel.contains(".dlgrab-tmp-"),
            "a temporary file stayed: {rel}"
        );
        // `blobs/sha256/<hex>` (seed, OCI) or `…/sha256/<hh>/<hex>/data`.
        let named = match rel.strip_suffix("/data") {
            Some(dir) => dir.rsplit('/').next(),
            None => rel.strip_prefix("blobs/sha256/"),
        };
        if let Some(hex) = named.filter(|h| h.len() == 64) {
            let Ok(bytes) = std::fs::read(&file) else {
                continue; // a dangling symlink is not a blob
            };
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                hex,
                "{rel} does not hold what its name says"
            );
        }
    }
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Hostile `docker save` streams.
    #[test]
    fn save_streams_never_panic_nor_escape(
        entries in prop::collection::vec((name(), content()), 0..8),
        spoil in spoil(),
        format in format(),
        wanted in prop::collection::btree_set(0..3usize, 1..=3),
    ) {
        let s = synthetic();
        let stream = build(&s, &entries, &spoil);
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("out");
        let w = writer(&root, WriterOptions { format, replace: false });
        let wanted: Vec<usize> = wanted.into_iter().collect();
        match w.write_from_save_blocking(&s.image, &wanted, std::io::Cursor::new(stream)) {
            Ok(extract) => {
                for layer in &extract.layers {
                    let i = s.image.diff_ids().unwrap().iter().position(|d| *d == layer.diff_id);
                    prop_assert!(i.is_some(), "a layer of another diff ID: {layer:?}");
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        check_folder(outer.path(), &root);
    }

    /// Random bytes as a whole save stream.
    #[test]
    fn random_save_streams_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let s = synthetic();
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("out");
        let w = writer(&root, WriterOptions::default());
        let r = w.write_from_save_blocking(&s.image, &[0], std::io::Cursor::new(bytes));
        let e = r.expect_err("random bytes held layer 0");
        prop_assert!(!e.to_string().is_empty());
        check_folder(outer.path(), &root);
    }

    /// Spoilt layer blobs (plain or gzip): refused with nothing written,
    /// or, where the spoiling left the tar intact (a gzip header's
    /// mtime), written and verified.
    #[test]
    fn spoilt_layer_blobs_are_refused_or_intact(
        index in 0..3usize,
        gz in any::<bool>(),
        spoil in spoil(),
        format in format(),
    ) {
        let s = synthetic();
        let blob = if gz { gzip(&s.tars[index]) } else { s.tars[index].clone() };
        let len = blob.len();
        let blob = match spoil {
            Spoil::None => blob,
            Spoil::Truncate(f) => blob[..((len as f64 * f) as usize).min(len - 1)].to_vec(),
            other => {
                // The same spoiling as a save stream's, on the blob itself.
                let mut b = blob;
                let at = ((len as f64 * match &other {
                    Spoil::Overwrite(f, _) | Spoil::HugeSize(f) => *f,
                    _ => 0.0,
                }) as usize).min(len - 1);
                match &other {
                    Spoil::Overwrite(_, bytes) => {
                        for (o, x) in b[at..].iter_mut().zip(bytes) {
                            *o = *x;
                        }
                    }
                    _ => {
                        let header = at / 512 * 512;
                        if !gz && b.len() >= header + 512 {
                            b[header + 124..header + 135].copy_from_slice(b"77777777777");
                        }
                    }
                }
                b
            }
        };
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("out");
        let w = writer(&root, WriterOptions { format, replace: false });
        match w.write_layer_blocking(&s.image, index, std::io::Cursor::new(blob)) {
            Ok(layer) => prop_assert_eq!(&layer.diff_id, &s.image.diff_ids().unwrap()[index]),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                check_tree(&root, &s.image, &[]);
            }
        }
        check_folder(outer.path(), &root);
    }
}
