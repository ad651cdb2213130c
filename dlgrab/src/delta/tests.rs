//! The pure parts of `--since` and `-o -`: which layers are new, which flag
//! combinations are refused, and the archive's hard links.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::*;

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("sha256:{n}")).collect()
}

#[test]
fn new_layers_are_those_beyond_the_common_prefix() {
    let base = ids(&["a", "b"]);
    assert_eq!(
        new_layers(&base, &ids(&["a", "b", "c", "d"]), "base", "img").expect("delta"),
        2..4
    );
    // A base that went on differently still shares the prefix.
    assert_eq!(
        new_layers(&ids(&["a", "x", "y"]), &ids(&["a", "b"]), "base", "img").expect("delta"),
        1..2
    );
}

#[test]
fn unrelated_base_is_refused() {
    let err = new_layers(&ids(&["x"]), &ids(&["a", "b"]), "other:1", "img:1")
        .expect_err("no common layer");
    let text = format!("{err:#}");
    assert!(text.contains("other:1 is not a base of img:1"), "{text}");
    assert!(new_layers(&[], &ids(&["a"]), "b", "i").is_err());
}

#[test]
fn nothing_new_is_refused() {
    let err = new_layers(&ids(&["a", "b"]), &ids(&["a", "b"]), "b", "i").expect_err("same");
    assert!(format!("{err:#}").contains("nothing new"), "{err:#}");
    let err = new_layers(&ids(&["a", "b", "c"]), &ids(&["a", "b"]), "b", "i").expect_err("older");
    assert!(format!("{err:#}").contains("nothing new"), "{err:#}");
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// [`target_for`] asked for `layers`, `--since`, `-o output`, `--json`
/// and the seed format or another.
fn target(
    layers: &[String],
    since: Option<&str>,
    output: &Path,
    json: bool,
    seed_format: bool,
) -> anyhow::Result<Target> {
    target_for(&Asked {
        images: layers,
        since,
        output,
        json,
        format: if seed_format {
            layer_writer::Format::Seed
        } else {
            layer_writer::Format::Oci
        },
    })
}

#[test]
fn targets_follow_the_flags() {
    let dir = Path::new("out");
    let stdout = Path::new("-");
    assert_eq!(
        target(&names(&["a", "b"]), None, dir, false, true).expect("folder"),
        Target::Folder
    );
    assert_eq!(
        target(&names(&["a"]), None, stdout, false, true).expect("stdout"),
        Target::LayerToStdout
    );
    assert_eq!(
        target(
            &names(&["img"]),
            Some("base"),
            Path::new("d.tar"),
            true,
            true
        )
        .expect("since"),
        Target::Since {
            base: "base".into(),
            image: "img".into(),
            archive: Some("d.tar".into()),
        }
    );
    assert_eq!(
        target(&names(&["img"]), Some("base"), stdout, false, true).expect("since"),
        Target::Since {
            base: "base".into(),
            image: "img".into(),
            archive: None,
        }
    );
}

#[track_caller]
fn refused(result: anyhow::Result<Target>, needle: &str) {
    let err = result.expect_err("refused");
    assert!(format!("{err:#}").contains(needle), "{err:#}");
}

#[test]
fn flag_combinations_are_refused() {
    let stdout = Path::new("-");
    refused(
        target(&names(&["a", "b"]), None, stdout, false, true),
        "2 layers",
    );
    refused(
        target(&names(&["a"]), None, stdout, false, false),
        "--format",
    );
    refused(target(&names(&["a"]), None, stdout, true, true), "--json");
    refused(
        target(
            &names(&["a", "b"]),
            Some("base"),
            Path::new("d.tar"),
            false,
            true,
        ),
        "exactly one IMAGE",
    );
    refused(
        target(&[], Some("base"), Path::new("d.tar"), false, true),
        "exactly one IMAGE",
    );
    refused(
        target(&names(&["a"]), Some("base"), Path::new("."), false, true),
        "-o FILE",
    );
}

#[test]
fn the_archive_keeps_hard_links_and_skips_scratch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("id/")).expect("mkdir");
    std::fs::create_dir_all(root.join("blobs/sha256")).expect("mkdir");
    std::fs::create_dir_all(root.join(".dlgrab-scratch-1")).expect("mkdir");
    std::fs::write(root.join("id/layer.tar"), vec![7u8; 10_000]).expect("write");
    std::fs::hard_link(root.join("id/layer.tar"), root.join("blobs/sha256/abc")).expect("link");
    std::fs::write(root.join("manifest.json"), b"[]").expect("write");
    std::fs::write(root.join(".dlgrab-scratch-1/junk"), b"x").expect("write");

    let bytes = write_tar(root, Vec::new(), &AtomicBool::new(false)).expect("tar");
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut seen = Vec::new();
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        let link = entry
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().into_owned());
        seen.push((
            path.trim_end_matches('/').to_owned(),
            kind,
            link,
            entry.size(),
        ));
    }
    let paths: Vec<&str> = seen.iter().map(|(p, ..)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "blobs",
            "blobs/sha256",
            "blobs/sha256/abc",
            "id",
            "id/layer.tar",
            "manifest.json"
        ]
    );
    // The first path of the file carries the data, the second links to it.
    assert_eq!(seen[2].1, tar::EntryType::Regular);
    assert_eq!(seen[2].3, 10_000);
    assert_eq!(seen[4].1, tar::EntryType::Link);
    assert_eq!(seen[4].2.as_deref(), Some("blobs/sha256/abc"));
    assert!(bytes.len() < 20_000, "data stored once: {}", bytes.len());
}

#[test]
fn a_cancelled_archive_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), b"data").expect("write");
    assert!(write_tar(dir.path(), Vec::new(), &AtomicBool::new(true)).is_err());
}
