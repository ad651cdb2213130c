//! The seed folder is a set of images, as the original DLGrab's workflow
//! needs: export the rows `docker history` lists (in any order, by the IDs it
//! shows), tar the folder, remove the image, `docker load`, and every
//! exported image is back with its ID and tags.

use std::path::Path;
use std::process::{Command, Output};

use testkit::{BuiltImage, Daemon, ImageBuilder, daemon_or_skip, succeeded, unique_name};

/// An image of four layers or more and an empty-layer row, its content
/// unique to this call from the first layer on (no other image shares a
/// row with it), plus `extra` files.
fn image(d: &Daemon, prefix: &str, extra: &[(&str, &str)]) -> BuiltImage {
    let tag = format!("{}:1", unique_name(prefix));
    // The unique file first: no row is shared with another image (removing
    // a shared row image would break other images' history on the
    // containerd store).
    let mut b = ImageBuilder::new(&tag)
        .file("/name", format!("{tag}\n"))
        .busybox()
        .run("echo ran >> /name")
        .env("MODE", "seed");
    for (path, content) in extra {
        b = b.file(path, *content);
    }
    let img = b.build(d);
    d.remove_when_done(&img.id);
    for id in img.history.iter().filter_map(|r| r.id.as_ref()) {
        d.remove_when_done(id);
    }
    img
}

/// The argument a user of the original tool types for a history row: the
/// short ID `docker history` shows, else (a `<missing>` row) the image and
/// the layer index. `None` for a row with neither ID nor layer.
fn row_args(img: &BuiltImage, row: usize) -> Option<Vec<String>> {
    let r = &img.history[row];
    match (&r.id, r.layer) {
        (Some(id), _) => Some(vec![id.trim_start_matches("sha256:")[..12].to_owned()]),
        (None, Some(layer)) => Some(vec![
            img.tag.clone(),
            "--index".to_owned(),
            layer.to_string(),
        ]),
        (None, None) => None,
    }
}

/// `dlgrab --clean -q -o DIR <row>` for each row, in `rows` order.
fn export_rows(d: &Daemon, img: &BuiltImage, rows: &[usize], dir: &Path) {
    for &row in rows {
        let Some(args) = row_args(img, row) else {
            continue;
        };
        let mut argv: Vec<&str> = vec!["--clean", "-q", "-o", dir.to_str().expect("utf-8")];
        argv.extend(args.iter().map(String::as_str));
        succeeded(&d.dlgrab(&argv));
    }
}

/// `tar -C dir -cf <tmp>/img.tar .`
fn tar_folder(dir: &Path, into: &Path) -> std::path::PathBuf {
    let archive = into.join("img.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("tar runs");
    assert!(status.success());
    archive
}

/// Removes the images (tags, row images, IDs) so that loading must bring them back.
fn remove_all(d: &Daemon, images: &[&BuiltImage]) {
    for img in images {
        d.remove_image(&img.tag);
        d.remove_image(&img.id);
        for id in img.history.iter().rev().filter_map(|r| r.id.as_ref()) {
            d.remove_image(id);
        }
        assert!(
            d.try_inspect(&img.id).is_err(),
            "{} should be gone before loading",
            img.tag
        );
    }
}

fn load(d: &Daemon, archive: &Path) -> Output {
    d.docker(["load", "-i", archive.to_str().expect("utf-8")])
}

/// `docker load -i archive`, which must succeed.
#[track_caller]
fn load_ok(d: &Daemon, archive: &Path, what: &str) {
    let out = load(d, archive);
    assert!(
        out.status.success(),
        "{what}docker load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image is back with its ID and tag, and runs.
#[track_caller]
fn assert_back(d: &Daemon, img: &BuiltImage) {
    let inspect = d
        .try_inspect(&img.tag)
        .unwrap_or_else(|e| panic!("{} is not back after docker load: {e}", img.tag));
    assert_eq!(inspect["Id"].as_str(), Some(img.id.as_str()), "{}", img.tag);
    assert_eq!(
        d.cat(&img.tag, "/name"),
        format!("{}\nran\n", img.tag).into_bytes()
    );
}

/// History rows, newest first, as `docker history` prints them.
fn top_first(img: &BuiltImage) -> Vec<usize> {
    (0..img.history.len()).rev().collect()
}

#[test]
fn rows_in_any_order_load_back_as_the_image() {
    let Some(d) = daemon_or_skip("rows_in_any_order_load_back_as_the_image") else {
        return;
    };
    let img = image(&d, "dlgrab-e2e/seed-rows", &[("/last", "last\n")]);
    let top = top_first(&img);
    let base = top.iter().rev().copied().collect::<Vec<_>>();
    // A fixed shuffle: middle rows first, then the top, then the base.
    let mut shuffled: Vec<usize> = top[1..top.len() - 1].to_vec();
    shuffled.rotate_left(1);
    shuffled.extend([top[0], top[top.len() - 1]]);
    for (name, order) in [
        ("top-first", top),
        ("base-first", base),
        ("shuffled", shuffled),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("layers");
        export_rows(&d, &img, &order, &dir);
        let archive = tar_folder(&dir, tmp.path());
        remove_all(&d, &[&img]);
        load_ok(&d, &archive, &format!("{name}: "));
        assert_back(&d, &img);
        // Every row with an image ID of its own came back as that image.
        for id in img.history.iter().filter_map(|r| r.id.as_ref()) {
            assert!(d.try_inspect(id).is_ok(), "{name}: row image {id} not back");
        }
    }
}

#[test]
fn images_sharing_a_base_and_one_row_of_another_load_together() {
    let Some(d) = daemon_or_skip("images_sharing_a_base_and_one_row_of_another_load_together")
    else {
        return;
    };
    let first = image(&d, "dlgrab-e2e/seed-first", &[]);
    // The same steps plus one: only its top row is new.
    let second = {
        let tag = format!("{}:1", unique_name("dlgrab-e2e/seed-second"));
        let img = ImageBuilder::new(&tag)
            .file("/name", format!("{}\n", first.tag))
            .busybox()
            .run("echo ran >> /name")
            .env("MODE", "seed")
            .file("/second", "second\n")
            .build(&d);
        d.remove_when_done(&img.id);
        img
    };
    assert_eq!(
        second.layer_diff_ids[..first.layer_diff_ids.len()],
        first.layer_diff_ids[..]
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("layers");
    export_rows(&d, &first, &top_first(&first), &dir);
    // One row into a folder that already holds another image.
    succeeded(&d.dlgrab(&[&second.tag, "-q", "-o", dir.to_str().expect("utf-8")]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("JSON");
    let tags: Vec<&str> = manifest
        .as_array()
        .expect("array")
        .iter()
        .flat_map(|e| e["RepoTags"].as_array().expect("tags").iter())
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        tags.contains(&first.tag.as_str()) && tags.contains(&second.tag.as_str()),
        "{tags:?}"
    );

    let archive = tar_folder(&dir, tmp.path());
    remove_all(&d, &[&second, &first]);
    load_ok(&d, &archive, "");
    assert_back(&d, &first);
    let inspect = d.try_inspect(&second.tag).expect("second image back");
    assert_eq!(inspect["Id"].as_str(), Some(second.id.as_str()));
    assert_eq!(d.cat(&second.tag, "/second"), b"second\n");
}

#[test]
fn an_image_missing_its_base_does_not_keep_a_whole_one_from_loading() {
    let Some(d) =
        daemon_or_skip("an_image_missing_its_base_does_not_keep_a_whole_one_from_loading")
    else {
        return;
    };
    let whole = image(&d, "dlgrab-e2e/seed-whole", &[]);
    let partial = image(&d, "dlgrab-e2e/seed-partial", &[("/p", "p\n")]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("layers");
    // The partial image first, so that export order cannot be what helps.
    succeeded(&d.dlgrab(&[&partial.tag, "-q", "-o", dir.to_str().expect("utf-8")]));
    export_rows(&d, &whole, &top_first(&whole), &dir);
    let archive = tar_folder(&dir, tmp.path());
    remove_all(&d, &[&whole, &partial]);
    let out = load(&d, &archive);
    // Docker may report the partial image's failure; the whole one loads.
    assert!(
        d.try_inspect(&whole.tag).is_ok(),
        "the whole image is not back; docker load said ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_back(&d, &whole);
}

#[test]
fn two_runs_at_once_into_one_folder() {
    let Some(d) = daemon_or_skip("two_runs_at_once_into_one_folder") else {
        return;
    };
    let one = image(&d, "dlgrab-e2e/seed-one", &[("/one", "1\n")]);
    let two = image(&d, "dlgrab-e2e/seed-two", &[("/two", "2\n")]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("layers");
    let dir_arg = dir.to_str().expect("utf-8").to_owned();
    // Each run exports every layer of its image (by index), both at once.
    let spawn = |img: &BuiltImage| {
        let mut children = Vec::new();
        for i in 0..img.layer_diff_ids.len() {
            children.push(
                d.dlgrab_command(&[&img.tag, "--index", &i.to_string(), "-q", "-o", &dir_arg])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("dlgrab starts"),
            );
        }
        children
    };
    let children: Vec<_> = spawn(&one).into_iter().chain(spawn(&two)).collect();
    for child in children {
        succeeded(&child.wait_with_output().expect("dlgrab ends"));
    }
    let entries: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("JSON");
    assert_eq!(entries.as_array().map(Vec::len), Some(2), "{entries}");
    // Each run's temporary tag is on the image while the others inspect it:
    // none of them may be written as a name.
    for entry in entries.as_array().into_iter().flatten() {
        let tags = entry["RepoTags"].as_array().cloned().unwrap_or_default();
        assert!(
            tags.iter()
                .all(|t| !t.as_str().unwrap_or_default().contains("/dlgrab-run-")),
            "a temporary tag was written: {entry}"
        );
    }
    let archive = tar_folder(&dir, tmp.path());
    remove_all(&d, &[&one, &two]);
    load_ok(&d, &archive, "");
    assert_back(&d, &one);
    assert_back(&d, &two);
}
