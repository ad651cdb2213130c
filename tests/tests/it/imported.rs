//! Layers Docker takes from `docker import` that a strict tar parser
//! refuses (two GNU long-name headers or two PAX headers for one member, a
//! PAX header with no member after it; Go's archive/tar accepts each): dlgrab
//! is never stricter than the daemon about a layer it only copies. Every
//! route gives the layer, checked against its diff ID, and the seed folder
//! loads back.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use testkit::{Daemon, daemon_or_skip, succeeded, unique_name};

use crate::export::sha256_file;

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

fn entry(name: &str, kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = header(name, kind, data.len());
    out.extend(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn pax(key: &str, value: &str) -> Vec<u8> {
    let rest = format!(" {key}={value}\n");
    let mut len = rest.len() + 1;
    while format!("{len}{rest}").len() != len {
        len += 1;
    }
    format!("{len}{rest}").into_bytes()
}

/// A tar Go's archive/tar reads and the `tar` crate refuses: a member
/// with two long names, one with two PAX headers, and a PAX header last.
fn odd_tar() -> Vec<u8> {
    let long = format!("{}/file", "d".repeat(120));
    let mut tar = entry("././@LongLink", b'L', format!("{long}\0").as_bytes());
    tar.extend(entry("././@LongLink", b'L', format!("{long}\0").as_bytes()));
    tar.extend(entry("short", b'0', b"long-named\n"));
    tar.extend(entry("PaxHeaders/a", b'x', &pax("path", "first")));
    tar.extend(entry("PaxHeaders/a", b'x', &pax("path", "second")));
    tar.extend(entry("a", b'0', b"pax twice\n"));
    tar.extend(entry("PaxHeaders/z", b'x', &pax("path", "nothing")));
    tar.extend(vec![0; 1024]);
    tar
}

/// `docker import -` of `tar` as `reference`, removed when the test ends.
fn import(daemon: &Daemon, reference: &str, tar: &[u8]) {
    daemon.remove_when_done(reference);
    let mut child = daemon
        .command()
        .args(["import", "-", reference])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker import runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(tar)
        .expect("tar sent");
    let out = child.wait_with_output().expect("docker import ends");
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one layer file of a seed folder's `manifest.json`.
fn seed_layer(dir: &Path) -> std::path::PathBuf {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest.json is JSON");
    let layer = manifest[0]["Layers"][0].as_str().expect("a layer path");
    dir.join(layer)
}

#[test]
fn an_imported_tar_a_strict_parser_refuses_goes_by_every_route() {
    let Some(d) =
        daemon_or_skip("imported::an_imported_tar_a_strict_parser_refuses_goes_by_every_route")
    else {
        return;
    };
    let tar = odd_tar();
    let reference = format!("{}:1", unique_name("dlgrab-test/imported-odd"));
    import(&d, &reference, &tar);
    let diff_ids = d.diff_ids(&reference);
    assert_eq!(diff_ids.len(), 1, "one layer");
    let before = d.image_refs();
    let mut routes = vec!["auto", "save", "push"];
    if crate::store::store_route_here(&d) {
        routes.push("store");
    }
    for via in routes {
        for format in ["seed", "oci"] {
            let out = tempfile::tempdir().expect("temp dir");
            succeeded(&d.dlgrab(&[
                &reference,
                "-o",
                &out.path().to_string_lossy(),
                "--via",
                via,
                "--format",
                format,
                "-q",
            ]));
            let layer = if format == "seed" {
                seed_layer(out.path())
            } else {
                // The OCI layout keeps the layer under its blob digest; its
                // uncompressed bytes are what the diff ID names.
                let blobs = out.path().join("blobs/sha256");
                let found = std::fs::read_dir(&blobs)
                    .expect("blobs")
                    .map(|e| e.expect("entry").path())
                    .find(|p| {
                        layer_writer::diff_id_of(std::fs::File::open(p).expect("blob"))
                            .is_ok_and(|id| id.to_string() == diff_ids[0])
                    });
                found.unwrap_or_else(|| panic!("--via {via} --format oci: no blob is the layer"))
            };
            if format == "seed" {
                assert_eq!(
                    sha256_file(&layer),
                    diff_ids[0],
                    "--via {via}: layer.tar is not the imported layer"
                );
            }
        }
    }
    // The seed folder loads back, as that image, once the image is gone.
    let out = tempfile::tempdir().expect("temp dir");
    succeeded(&d.dlgrab(&[&reference, "-o", &out.path().to_string_lossy(), "-q"]));
    let scratch = tempfile::tempdir().expect("temp dir");
    let archive = scratch.path().join("folder.tar");
    let tarred = std::process::Command::new("tar")
        .args([
            "-C",
            &out.path().to_string_lossy(),
            "-cf",
            &archive.to_string_lossy(),
            ".",
        ])
        .status()
        .expect("tar runs");
    assert!(tarred.success());
    let removed = d.docker(["rmi", &reference]);
    assert!(
        removed.status.success(),
        "docker rmi: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let loaded = d.docker(["load", "-i", &archive.to_string_lossy()]);
    assert!(
        loaded.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert_eq!(d.diff_ids(&reference), diff_ids);
    assert_eq!(d.image_refs(), before, "the image list changed");
}
