//! `--platform`: which platform's image of a multi-platform image is
//! exported. The daemon's own platform unless the flag says otherwise;
//! a platform the image does not have here is an error naming those it
//! has. Another local platform is exported where the daemon can select one
//! (the containerd store from Docker 28.1, API 1.49); a classic store holds
//! one platform per tag.

use std::path::Path;

use serde_json::Value;
use testkit::{Daemon, Engine, IndexFlavour, PulledIndex, Store, daemon_or_skip, succeeded};

use crate::export::sha256_file;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `(major, minor)` of the daemon's version, e.g. `(28, 5)`.
fn version(d: &Daemon) -> (u32, u32) {
    let mut parts = d
        .version
        .split(['.', '+', '-'])
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Whether the daemon selects a platform of a local index by the API's
/// `platform` parameter (inspect from API 1.49: Docker 28.1).
fn selects_platforms(d: &Daemon) -> bool {
    d.store == Store::Containerd && d.engine == Engine::Docker && version(d) >= (28, 1)
}

/// `dlgrab REF ARGS --json -o DIR`: the one layer it reports, its
/// `layer.tar` checked against the diff ID it reports.
#[track_caller]
fn export_one(d: &Daemon, reference: &str, args: &[&str], dir: &Path) -> Value {
    let mut all = vec![reference];
    all.extend_from_slice(args);
    all.extend(["--json", "-o", path_str(dir)]);
    let stdout = succeeded(&d.dlgrab(&all));
    let layers = testkit::items(&stdout);
    let [layer] = layers.as_slice() else {
        panic!("{args:?}: one layer expected: {stdout}");
    };
    let tar = testkit::exported_file(layer, "/layer.tar");
    assert_eq!(sha256_file(&tar), layer["diff_id"], "{args:?}: {layer}");
    layer.clone()
}

/// `dlgrab ARGS` fails, names `wanted` as absent and every one of
/// `present` among the platforms there, and writes nothing.
#[track_caller]
fn refused(d: &Daemon, args: &[&str], wanted: &str, present: &[&str], dir: &Path) {
    let out = d.dlgrab(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    assert!(
        stderr.contains(&format!("has no {wanted} image here")),
        "{args:?}: {stderr}"
    );
    for p in present {
        assert!(stderr.contains(p), "{args:?}: {p} not named: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.exists(), "{args:?} wrote {}", dir.display());
}

#[test]
fn an_absent_platform_is_an_error_naming_the_ones_there() {
    let Some(d) = daemon_or_skip("platform::an_absent_platform_is_an_error_naming_the_ones_there")
    else {
        return;
    };
    let pulled = PulledIndex::pull(&d, IndexFlavour::Oci);
    let before = d.image_refs();
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("s390x");
    // Where the daemon lists its index's platforms, the arm64 one is named
    // as not being here.
    let mut present = vec!["linux/amd64"];
    if d.store == Store::Containerd && d.engine == Engine::Docker && version(&d) >= (28, 0) {
        present.push("linux/arm64/v8 (content not here)");
    }
    for args in [
        vec![pulled.reference.as_str(), "--platform", "linux/s390x"],
        vec![
            pulled.reference.as_str(),
            "--platform",
            "linux/s390x",
            "--via",
            "save",
        ],
        vec![
            "--list",
            pulled.reference.as_str(),
            "--platform",
            "linux/s390x",
        ],
    ] {
        let mut args = args;
        args.extend(["-o", path_str(&dir)]);
        refused(&d, &args, "linux/s390x", &present, &dir);
    }
    // A malformed platform is a usage error.
    let bad = d.dlgrab(&[pulled.reference.as_str(), "--platform", "s390x"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("expected os/arch[/variant]"),
        "{bad:?}"
    );

    // The daemon's own platform, said or not, is the one exported.
    for args in [&["--platform", "linux/amd64"][..], &[]] {
        let layer = export_one(&d, &pulled.reference, args, &out.path().join("amd64"));
        assert_eq!(layer["diff_id"], pulled.diff_ids[1], "{args:?}: {layer}");
    }
    assert_eq!(d.image_refs(), before, "the image list changed");
}

#[test]
fn another_local_platform_is_exported_where_the_daemon_selects_it() {
    let Some(d) =
        daemon_or_skip("platform::another_local_platform_is_exported_where_the_daemon_selects_it")
    else {
        return;
    };
    let pulled = PulledIndex::pull_both(&d, IndexFlavour::Oci);
    let (arm_ids, arm_text) = pulled.arm64.clone().expect("the arm64 image is served");
    assert_ne!(arm_ids[1], pulled.diff_ids[1], "the platforms' tops differ");
    let before = d.image_refs();
    let out = tempfile::tempdir().expect("tempdir");
    let arm = ["--platform", "linux/arm64"];

    if selects_platforms(&d) {
        // Both platforms are local: each layer of either, by every route.
        for via in ["auto", "push", "save"] {
            for (index, want) in arm_ids.iter().enumerate() {
                let index = index.to_string();
                let mut args = arm.to_vec();
                args.extend(["--index", &index, "--via", via]);
                let dir = out.path().join(format!("arm64-{via}"));
                let layer = export_one(&d, &pulled.reference, &args, &dir);
                assert_eq!(&layer["diff_id"], want, "{args:?}: {layer}");
                if via != "auto" {
                    assert_eq!(layer["route"], via, "{layer}");
                }
            }
            let dir = out.path().join(format!("amd64-{via}"));
            let layer = export_one(&d, &pulled.reference, &["--via", via], &dir);
            assert_eq!(layer["diff_id"], pulled.diff_ids[1], "--via {via}: {layer}");
        }
        // The arm64 top holds the arm64 file.
        let dir = out.path().join("arm64-top");
        let layer = export_one(&d, &pulled.reference, &arm, &dir);
        let tar = testkit::exported_file(&layer, "/layer.tar");
        let mut archive = tar::Archive::new(std::fs::File::open(&tar).expect("layer.tar"));
        let mut text = String::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.path().expect("path").ends_with("fixture.txt") {
                std::io::Read::read_to_string(&mut entry, &mut text).expect("text");
            }
        }
        assert_eq!(text, arm_text);
        // --list reads the arm64 image.
        let listed = succeeded(&d.dlgrab(&[
            "--list",
            &pulled.reference,
            "--json",
            "--platform",
            "linux/arm64",
        ]));
        assert!(listed.contains(arm_ids[1].as_str()), "{listed}");
        assert!(!listed.contains(pulled.diff_ids[1].as_str()), "{listed}");
    } else if d.store == Store::Containerd {
        // Docker before 28.1 shows the image as its own platform only.
        let dir = out.path().join("arm64");
        let mut args = vec![pulled.reference.as_str()];
        args.extend(arm);
        args.extend(["-o", path_str(&dir)]);
        refused(&d, &args, "linux/arm64", &["linux/amd64"], &dir);
    } else {
        // A classic store (and Podman) moved the tag to the arm64 image.
        let layer = export_one(&d, &pulled.reference, &arm, &out.path().join("arm64"));
        assert_eq!(layer["diff_id"], arm_ids[1], "{layer}");
        let layer = export_one(&d, &pulled.reference, &[], &out.path().join("default"));
        assert_eq!(layer["diff_id"], arm_ids[1], "{layer}");
        let dir = out.path().join("amd64");
        let mut args = vec![pulled.reference.as_str()];
        args.extend(["--platform", "linux/amd64", "-o", path_str(&dir)]);
        refused(&d, &args, "linux/amd64", &["linux/arm64"], &dir);
    }
    assert_eq!(d.image_refs(), before, "the image list changed");
}
