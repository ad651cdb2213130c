//! Several references in one run: dlgrab exports every one it can, gives
//! each that fails an item with its error in the `--json` document (valid
//! against `docs/result.schema.json`), leaves nothing of the failed ones
//! in the output folder, and exits 1.

use std::path::Path;

use testkit::{ImageBuilder, daemon_or_skip, unique_name};

use crate::export::sha256_file;

/// Names in `dir` (recursively), sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            names.push(
                path.strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    names.sort();
    names
}

#[test]
fn the_references_that_can_be_exported_are_and_the_others_say_why() {
    let Some(d) = daemon_or_skip("the_references_that_can_be_exported_are_and_the_others_say_why")
    else {
        return;
    };
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/keep-going")))
        .busybox()
        .file("/a.txt", "alpha\n")
        .build(&d);
    let missing = format!("{}:404", unique_name("dlgrab-e2e/keep-going-none"));
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().to_str().expect("utf-8");
    let run = d.dlgrab(&[&missing, &img.tag, "Bad:Ref", "--json", "-o", dir]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stdout}\n{stderr}");

    let document = testkit::result(&stdout);
    assert_eq!(document["mode"], "export");
    assert_eq!(document["ok"], false);
    assert_eq!(
        document["error"]["kind"], "no_such_image",
        "the run's error is the first failed item's: {document:#}"
    );
    let items = document["items"].as_array().expect("items");
    let typed: Vec<&str> = items
        .iter()
        .map(|i| i["reference"].as_str().expect("reference"))
        .collect();
    assert_eq!(
        typed,
        [missing.as_str(), &img.tag, "Bad:Ref"],
        "{document:#}"
    );

    assert_eq!(items[0]["action"], "failed");
    assert_eq!(items[0]["error"]["kind"], "no_such_image");
    assert_eq!(items[2]["action"], "failed");
    assert_eq!(items[2]["error"]["kind"], "bad_reference");
    for failed in [&items[0], &items[2]] {
        let message = failed["error"]["message"].as_str().expect("message");
        assert!(
            stderr.contains(&format!("dlgrab: error: {message}")),
            "stderr says it too:\n{stderr}"
        );
    }

    let done = &items[1];
    assert_eq!(done["action"], "exported", "{done}");
    assert_eq!(done["error"], serde_json::Value::Null);
    assert!(
        done["route"].is_string() && done["route_reason"].is_string(),
        "{done}"
    );
    let top = img.layer_diff_ids.last().expect("a layer");
    assert_eq!(done["diff_id"], top.as_str());
    let tar = testkit::exported_file(done, "/layer.tar");
    assert_eq!(&sha256_file(&tar), top);
    assert_eq!(
        done["bytes"],
        std::fs::metadata(&tar).expect("layer.tar").len()
    );

    // Only the exported layer's folder and the image records: nothing of
    // the failed references, no scratch left.
    let names = tree(out.path());
    assert!(
        !names
            .iter()
            .any(|n| n.contains(".dlgrab-scratch") || n.contains(".dlgrab-tmp")),
        "{names:#?}"
    );
    let layer_folders: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with("/layer.tar") && !n.starts_with("blobs"))
        .collect();
    assert_eq!(layer_folders.len(), 1, "{names:#?}");
    img.remove(&d);
}

#[test]
fn a_run_where_every_reference_fails_exports_nothing() {
    let Some(d) = daemon_or_skip("a_run_where_every_reference_fails_exports_nothing") else {
        return;
    };
    let missing = format!("{}:404", unique_name("dlgrab-e2e/keep-going-none"));
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("never");
    let run = d.dlgrab(&[&missing, "--json", "-o", dir.to_str().expect("utf-8")]);
    assert_eq!(run.status.code(), Some(1));
    let document = testkit::result(&String::from_utf8_lossy(&run.stdout));
    assert_eq!(document["error"]["kind"], "no_such_image", "{document:#}");
    assert_eq!(document["items"][0]["reference"], missing.as_str());
    assert!(
        !dir.exists(),
        "the output folder is made only for a layer to write"
    );
}
