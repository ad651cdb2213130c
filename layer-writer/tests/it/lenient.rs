//! Layers Docker holds that a strict tar parser refuses are copied as they
//! are: the writer checks their bytes against the diff ID and parses nothing.
//! (Go's archive/tar, hence `docker import`, takes each of these.)

use std::io::Cursor;

use layer_writer::{Format, ImageContext, WriterOptions};
use serde_json::json;

use crate::support::*;

/// One 512-byte ustar header block of `kind` for `name` with `size` bytes.
fn header(name: &str, kind: u8, size: usize) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// `data` padded to a whole number of blocks.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out.resize(data.len().div_ceil(512) * 512, 0);
    out
}

fn entry(name: &str, kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = header(name, kind, data.len());
    out.extend(padded(data));
    out
}

fn pax(records: &[(&str, &str)]) -> Vec<u8> {
    let mut body = String::new();
    for (k, v) in records {
        let rest = format!(" {k}={v}\n");
        let mut len = rest.len() + 1;
        while format!("{len}{rest}").len() != len {
            len += 1;
        }
        body.push_str(&format!("{len}{rest}"));
    }
    body.into_bytes()
}

fn end() -> Vec<u8> {
    vec![0; 1024]
}

/// The layers: two GNU long names for one member, two PAX headers for one
/// member, a PAX header with no member after it.
fn odd_tars() -> Vec<(&'static str, Vec<u8>)> {
    let long = format!("{}/file", "d".repeat(120));
    let mut two_long_names = entry("././@LongLink", b'L', format!("{long}\0").as_bytes());
    two_long_names.extend(entry("././@LongLink", b'L', format!("{long}\0").as_bytes()));
    two_long_names.extend(entry("short", b'0', b"long-named\n"));
    two_long_names.extend(end());

    let mut two_pax = entry("PaxHeaders/a", b'x', &pax(&[("path", "first")]));
    two_pax.extend(entry("PaxHeaders/a", b'x', &pax(&[("path", "second")])));
    two_pax.extend(entry("a", b'0', b"pax twice\n"));
    two_pax.extend(end());

    let mut pax_at_end = entry("plain", b'0', b"plain\n");
    pax_at_end.extend(entry("PaxHeaders/z", b'x', &pax(&[("path", "nothing")])));
    pax_at_end.extend(end());

    vec![
        ("two long names", two_long_names),
        ("two pax headers", two_pax),
        ("pax header with no member", pax_at_end),
    ]
}

fn image_of(tars: &[Vec<u8>]) -> ImageContext {
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "history": tars.iter().map(|_| json!({"created_by": "docker import"})).collect::<Vec<_>>(),
        "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| sha(t).to_string()).collect::<Vec<_>>()},
    });
    ImageContext::from_config(
        serde_json::to_vec(&config).unwrap(),
        vec!["odd:tars".into()],
    )
    .unwrap()
}

#[test]
fn the_tar_crate_refuses_what_go_accepts() {
    // The fixture is what a strict parser refuses: the point of this module.
    for (what, tar) in odd_tars() {
        let mut archive = tar::Archive::new(Cursor::new(tar));
        let walked: Result<Vec<_>, _> = archive.entries().unwrap().map(|e| e.map(|_| ())).collect();
        assert!(walked.is_err(), "{what}: the tar crate took it");
    }
}

#[test]
fn layers_a_strict_parser_refuses_are_written_in_every_format() {
    let tars: Vec<Vec<u8>> = odd_tars().into_iter().map(|(_, t)| t).collect();
    let image = image_of(&tars);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for format in [Format::Seed, Format::Oci, Format::Registry] {
        for compressed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let w = writer(
                dir.path(),
                WriterOptions {
                    format,
                    replace: false,
                },
            );
            for (index, tar) in tars.iter().enumerate() {
                let blob = if compressed { gzip(tar) } else { tar.clone() };
                let written = rt
                    .block_on(w.write_layer(&image, index, Cursor::new(blob)))
                    .unwrap_or_else(|e| panic!("{format:?} layer {index}: {e}"));
                assert_eq!(written.diff_id, sha(tar), "{format:?} layer {index}");
            }
        }
    }
}
