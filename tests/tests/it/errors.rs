//! The errors a user meets that need a daemon to happen, as stderr shows
//! them (snapshots; the image's unique name is redacted).

use testkit::{ImageBuilder, daemon_or_skip, unique_name};

#[test]
fn an_index_out_of_range_names_the_image_and_the_valid_range() {
    let Some(d) = daemon_or_skip("an_index_out_of_range_names_the_image_and_the_valid_range")
    else {
        return;
    };
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/errors")))
        .busybox()
        .file("/greeting", "hello\n")
        .build(&d);
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("layers");
    let dir = dir.to_str().expect("utf-8");
    // Every route, and a data root, share the one check made when the
    // layer is resolved, before any route runs.
    for via in ["auto", "push", "save"] {
        let run = d.dlgrab(&[&img.tag, "--index", "99", "--via", via, "-o", dir]);
        assert_eq!(run.status.code(), Some(1), "{run:?}");
        let stderr = String::from_utf8_lossy(&run.stderr).replace(&img.tag, "[IMAGE]");
        insta::assert_snapshot!("index_out_of_range", stderr);
    }
    assert!(
        !std::path::Path::new(dir).exists(),
        "nothing is written for a refused index"
    );
}

/// `--to` a daemon nobody answers at: the destination's address, what
/// named it, the cause in plain words and what to try, before any image
/// is looked up.
#[test]
fn an_unreachable_destination_is_named_with_what_to_try() {
    let Some(d) = daemon_or_skip("an_unreachable_destination_is_named_with_what_to_try") else {
        return;
    };
    let run = d.dlgrab(&["busybox", "--to", "unix:///nonexistent/dlgrab-dest.sock"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("os error"), "{stderr}");
    insta::assert_snapshot!("unreachable_destination", stderr);
}
