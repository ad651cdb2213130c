//! The store route and `--data-root`: layers rebuilt from a classic layer
//! store on disk, byte for byte what `docker save` gives, with and without
//! a daemon, never writing into the data root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::export::sha256_file;
use testkit::{
    BuiltImage, Daemon, Engine, ImageBuilder, Store, daemon_or_skip, succeeded, unique_name,
};

/// Removes a tag when dropped, whatever the test's outcome.
struct Untag<'a> {
    daemon: &'a Daemon,
    tag: String,
}

impl Drop for Untag<'_> {
    fn drop(&mut self) {
        self.daemon.remove_image(&self.tag);
    }
}

/// The image: busybox, a 1 MiB incompressible file, hard link, symlink,
/// a deleted file (whiteout), an opaque directory, a metadata-only row.
fn image(daemon: &Daemon, prefix: &str) -> BuiltImage {
    ImageBuilder::new(&format!("{}:1", unique_name(prefix)))
        .busybox()
        .random_file("/data/blob", 1 << 20, 14)
        .file("/etc/greeting", "hello\n")
        .hardlink("/etc/greeting-again", "/etc/greeting")
        .symlink("/etc/hi", "greeting")
        .delete("/etc/greeting-again")
        .env("STAGE", "store")
        .opaque_dir("/data")
        .file("/top.txt", "top\n")
        .build(daemon)
}

/// The daemon's data root when its classic layer store can be read here,
/// else why not (printed as a skip).
pub(crate) fn readable_store(daemon: &Daemon) -> Result<PathBuf, String> {
    if daemon.store != Store::Classic {
        return Err(format!("daemon {} has no classic image store", daemon.name));
    }
    let root = PathBuf::from(
        daemon
            .docker_stdout(["info", "--format", "{{.DockerRootDir}}"])
            .trim(),
    );
    let layers = root
        .join("image")
        .join(&daemon.driver)
        .join("layerdb/sha256");
    match std::fs::read_dir(&layers) {
        Ok(_) => Ok(root),
        Err(e) => Err(format!("{} is not readable here: {e}", layers.display())),
    }
}

/// The containerd store's content store, when this process can read it
/// (dockerd's own containerd under the data root, or the system's).
pub(crate) fn readable_content_store(daemon: &Daemon) -> Result<PathBuf, String> {
    if daemon.store != Store::Containerd || daemon.engine != Engine::Docker {
        return Err(format!(
            "daemon {} has no containerd image store",
            daemon.name
        ));
    }
    let root = PathBuf::from(
        daemon
            .docker_stdout(["info", "--format", "{{.DockerRootDir}}"])
            .trim(),
    );
    let tail = "io.containerd.content.v1.content/blobs/sha256";
    let candidates = [
        root.join("containerd/daemon").join(tail),
        Path::new("/var/lib/containerd").join(tail),
    ];
    candidates
        .iter()
        .find(|c| std::fs::read_dir(c).is_ok())
        .cloned()
        .ok_or_else(|| format!("no content store readable here under {}", root.display()))
}

/// Podman's graph root when its containers/storage can be read here, else
/// why not.
pub(crate) fn readable_podman_store(daemon: &Daemon) -> Result<PathBuf, String> {
    if daemon.engine != Engine::Podman {
        return Err(format!("daemon {} is not Podman", daemon.name));
    }
    let root = PathBuf::from(
        daemon
            .docker_stdout(["info", "--format", "{{.DockerRootDir}}"])
            .trim(),
    );
    let layers = root
        .join(format!("{}-layers", daemon.driver))
        .join("layers.json");
    match std::fs::read(&layers) {
        Ok(_) => Ok(root),
        Err(e) => Err(format!("{} is not readable here: {e}", layers.display())),
    }
}

/// Whether the store route can run on `daemon` here: a readable classic
/// layer store, containerd content store or Podman store.
pub(crate) fn store_route_here(daemon: &Daemon) -> bool {
    readable_store(daemon).is_ok()
        || readable_content_store(daemon).is_ok()
        || readable_podman_store(daemon).is_ok()
}

/// Says on stderr why a test did not run.
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

/// The one layer a `--json` run reports.
#[track_caller]
fn one_layer(stdout: &str) -> serde_json::Value {
    let layers = testkit::items(stdout);
    assert_eq!(layers.len(), 1, "{stdout}");
    layers[0].clone()
}

/// The `layer.tar` a seed export wrote.
#[track_caller]
fn layer_tar(layer: &serde_json::Value) -> PathBuf {
    testkit::exported_file(layer, "/layer.tar")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn store_route_gives_what_save_gives() {
    let Some(d) = daemon_or_skip("store_route_gives_what_save_gives") else {
        return;
    };
    if let Err(why) = readable_store(&d).or_else(|_| readable_podman_store(&d)) {
        skip("store_route_gives_what_save_gives", &why);
        return;
    }
    let img = image(&d, "dlgrab-e2e/store");
    let _untag = Untag {
        daemon: &d,
        tag: img.tag.clone(),
    };
    let out = tempfile::tempdir().expect("tempdir");
    for index in 0..img.layer_diff_ids.len() {
        let index_arg = index.to_string();
        let mut tars = Vec::new();
        for via in ["store", "save"] {
            let dir = out.path().join(format!("{via}-{index}"));
            let stdout = succeeded(&d.dlgrab(&[
                &img.tag,
                "--index",
                &index_arg,
                "--via",
                via,
                "--json",
                "-o",
                path_str(&dir),
            ]));
            let layer = one_layer(&stdout);
            assert_eq!(layer["route"], via, "{layer}");
            assert_eq!(layer["diff_id"], img.layer_diff_ids[index], "{layer}");
            tars.push(std::fs::read(layer_tar(&layer)).expect("layer.tar"));
        }
        assert!(
            tars[0] == tars[1],
            "layer {index}: the store route's tar differs from docker save's"
        );
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&tars[0]))),
            img.layer_diff_ids[index]
        );
    }

    // Auto takes the store route here, and says why.
    let stdout =
        succeeded(&d.dlgrab(&[&img.tag, "--json", "-o", path_str(&out.path().join("auto"))]));
    let layer = one_layer(&stdout);
    assert_eq!(layer["route"], "store", "{layer}");
    let store = match d.engine {
        Engine::Docker => "layer store",
        Engine::Podman => "Podman's store",
    };
    assert!(
        layer["route_reason"]
            .as_str()
            .is_some_and(|r| r.contains(store)),
        "{layer}"
    );
}

/// Every file and folder of Podman's store that holds `img`: its image
/// folder, `layers.json`, `images.json`, and each layer's tar-split and
/// folder, each with its size and modification time.
fn podman_snapshot(
    root: &Path,
    driver: &str,
    img: &BuiltImage,
) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let layers = root.join(format!("{driver}-layers"));
    let images = root.join(format!("{driver}-images"));
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(layers.join("layers.json")).expect("layers.json"))
            .expect("layers.json is JSON");
    let mut paths = vec![
        layers.join("layers.json"),
        images.join("images.json"),
        images.join(hex_of(&img.id)),
    ];
    for diff_id in &img.layer_diff_ids {
        let ids: Vec<&str> = listed
            .iter()
            .filter(|l| l["diff-digest"] == diff_id.as_str())
            .filter_map(|l| l["id"].as_str())
            .collect();
        assert!(!ids.is_empty(), "layer {diff_id} is in layers.json");
        for id in ids {
            paths.push(layers.join(format!("{id}.tar-split.gz")));
            paths.push(root.join(driver).join(id));
        }
    }
    let mut seen = BTreeMap::new();
    for path in paths {
        walk(&path, &mut seen);
    }
    seen
}

#[test]
fn podmans_store_is_read_never_written() {
    let test = "podmans_store_is_read_never_written";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let root = match readable_podman_store(&d) {
        Ok(root) => root,
        Err(why) => {
            skip(test, &why);
            return;
        }
    };
    let img = image(&d, "dlgrab-e2e/podman-store");
    let _untag = Untag {
        daemon: &d,
        tag: img.tag.clone(),
    };
    let before = podman_snapshot(&root, &d.driver, &img);
    let out = tempfile::tempdir().expect("tempdir");
    for index in 0..img.layer_diff_ids.len() {
        let stdout = succeeded(&d.dlgrab(&[
            &img.tag,
            "--index",
            &index.to_string(),
            "--json",
            "-o",
            path_str(out.path()),
        ]));
        let layer = one_layer(&stdout);
        assert_eq!(layer["route"], "store", "{layer}");
        assert_eq!(sha256_file(&layer_tar(&layer)), img.layer_diff_ids[index]);
    }
    // Nothing of the store was written, moved or touched.
    assert_eq!(before, podman_snapshot(&root, &d.driver, &img));
}

/// Paths under the data root that hold `img` (its configs, layer database
/// entries and layer folders), each with its size and modification time.
fn snapshot(root: &Path, driver: &str, img: &BuiltImage) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let image_dir = root.join("image").join(driver);
    let mut roots = vec![
        image_dir
            .join("imagedb/content/sha256")
            .join(hex_of(&img.id)),
    ];
    let mut chain = String::new();
    for diff_id in &img.layer_diff_ids {
        chain = if chain.is_empty() {
            diff_id.clone()
        } else {
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{chain} {diff_id}")))
            )
        };
        let layer = image_dir.join("layerdb/sha256").join(hex_of(&chain));
        let cache_id = std::fs::read_to_string(layer.join("cache-id")).expect("cache-id");
        roots.push(layer);
        roots.push(match driver {
            "vfs" => root.join("vfs/dir").join(cache_id.trim()),
            _ => root.join(driver).join(cache_id.trim()),
        });
    }
    let mut seen = BTreeMap::new();
    for path in roots {
        walk(&path, &mut seen);
    }
    assert!(seen.len() > img.layer_diff_ids.len() * 3, "{seen:?}");
    seen
}

fn walk(path: &Path, seen: &mut BTreeMap<PathBuf, (u64, SystemTime)>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    seen.insert(
        path.to_owned(),
        (meta.len(), meta.modified().expect("mtime")),
    );
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            walk(&entry.expect("entry").path(), seen);
        }
    }
}

fn hex_of(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, h)| h)
}

#[test]
fn data_root_exports_without_a_daemon() {
    let Some(d) = daemon_or_skip("data_root_exports_without_a_daemon") else {
        return;
    };
    let root = match readable_store(&d) {
        Ok(root) => root,
        Err(why) => {
            skip("data_root_exports_without_a_daemon", &why);
            return;
        }
    };
    let img = image(&d, "dlgrab-e2e/offline");
    let _untag = Untag {
        daemon: &d,
        tag: img.tag.clone(),
    };
    let before = snapshot(&root, &d.driver, &img);
    let out = tempfile::tempdir().expect("tempdir");
    let top = img.layer_diff_ids.len() - 1;
    let short = hex_of(&img.id)[..12].to_owned();
    let cases: Vec<(Vec<String>, usize)> = vec![
        (vec![img.tag.clone()], top),
        (vec![img.id.clone()], top),
        (vec![short.clone()], top),
        (vec![img.layer_diff_ids[1].clone()], 1),
        (vec![img.tag.clone(), "--index".into(), "0".into()], 0),
    ];
    let mut run = 0;
    for format in ["seed", "oci", "registry"] {
        for (what, index) in &cases {
            run += 1;
            let dir = out.path().join(format!("{format}-{run}"));
            let mut args: Vec<&str> = what.iter().map(String::as_str).collect();
            args.extend([
                "--data-root",
                path_str(&root),
                "--format",
                format,
                "--json",
                "-o",
                path_str(&dir),
            ]);
            // No daemon answers here: everything comes from the data root.
            let output = d
                .dlgrab_command(&args)
                .env("DOCKER_HOST", "unix:///nonexistent/dlgrab-no-daemon.sock")
                .output()
                .expect("dlgrab runs");
            let layer = one_layer(&succeeded(&output));
            assert_eq!(layer["route"], "store", "{args:?}: {layer}");
            assert_eq!(layer["index"], *index, "{args:?}: {layer}");
            assert_eq!(
                layer["diff_id"], img.layer_diff_ids[*index],
                "{args:?}: {layer}"
            );
            match format {
                "seed" => assert_eq!(sha256_file(&layer_tar(&layer)), img.layer_diff_ids[*index]),
                "oci" => {
                    let blob = dir
                        .join("blobs/sha256")
                        .join(hex_of(&img.layer_diff_ids[*index]));
                    assert_eq!(sha256_file(&blob), img.layer_diff_ids[*index]);
                }
                _ => assert!(
                    dir.join("docker/registry/v2").is_dir(),
                    "{:?}",
                    layer["files"]
                ),
            }
        }
    }

    // --list reads the same history as the daemon's.
    let output = d
        .dlgrab_command(&["--data-root", path_str(&root), "--list", &img.tag, "--json"])
        .env("DOCKER_HOST", "unix:///nonexistent/dlgrab-no-daemon.sock")
        .output()
        .expect("dlgrab runs");
    let listed: Vec<String> = testkit::items(&succeeded(&output))
        .iter()
        .filter_map(|row| row["diff_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, img.layer_diff_ids);

    // Routes that need a daemon say so.
    let output = d
        .dlgrab_command(&[
            "--data-root",
            path_str(&root),
            &img.tag,
            "--via",
            "save",
            "-o",
            path_str(&out.path().join("save")),
        ])
        .env("DOCKER_HOST", "unix:///nonexistent/dlgrab-no-daemon.sock")
        .output()
        .expect("dlgrab runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs a running docker daemon"), "{stderr}");

    assert_eq!(
        snapshot(&root, &d.driver, &img),
        before,
        "the data root changed under dlgrab"
    );
}

#[test]
fn the_containerd_store_is_read_from_its_content_store() {
    let test = "store::the_containerd_store_is_read_from_its_content_store";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    if let Err(why) = readable_content_store(&d) {
        skip(test, &why);
        return;
    }
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/content")))
        .busybox()
        .file("/x.txt", "x\n")
        .build(&d);
    let _untag = Untag {
        daemon: &d,
        tag: img.tag.clone(),
    };
    let before = d.image_refs();
    let top = img.layer_diff_ids.len() - 1;
    let out = tempfile::tempdir().expect("tempdir");
    for args in [&["--via", "store"][..], &[], &["--index", "0"]] {
        let dir = out.path().join(format!("seed-{}", args.len()));
        let mut all = vec![img.tag.as_str()];
        all.extend_from_slice(args);
        all.extend(["--json", "-o", path_str(&dir)]);
        let layer = one_layer(&succeeded(&d.dlgrab(&all)));
        assert_eq!(layer["route"], "store", "{args:?}: {layer}");
        let index = layer["index"].as_u64().expect("index") as usize;
        assert_eq!(
            index,
            if args.len() == 2 && args[0] == "--index" {
                0
            } else {
                top
            }
        );
        assert_eq!(sha256_file(&layer_tar(&layer)), img.layer_diff_ids[index]);
    }
    // The OCI layout holds the blob as stored: named by its own digest,
    // not the diff ID, and decompressing to the layer.
    let oci = out.path().join("oci");
    let layer = one_layer(&succeeded(&d.dlgrab(&[
        &img.tag,
        "--format",
        "oci",
        "--json",
        "-o",
        path_str(&oci),
    ])));
    assert_eq!(layer["route"], "store", "{layer}");
    let blob = layer["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f.as_str())
        .map(PathBuf::from)
        .find(|f| f.to_string_lossy().contains("/blobs/sha256/"))
        .unwrap_or_else(|| panic!("no blob in {layer}"));
    let name = blob.file_name().and_then(|n| n.to_str()).expect("name");
    assert_eq!(hex_of(&sha256_file(&blob)), name);
    assert_ne!(name, hex_of(&img.layer_diff_ids[top]), "stored compressed");
    let content =
        layer_writer::diff_id_of(std::fs::File::open(&blob).expect("blob")).expect("a layer");
    assert_eq!(content.to_string(), img.layer_diff_ids[top]);
    assert_eq!(d.image_refs(), before, "the image list changed");
}

/// Copies what [`snapshot`] lists of `img` (and `repositories.json`) from
/// the data root `root` into `copy`; device files (overlay whiteouts) are
/// left out, their entries carry no data.
fn copy_image(root: &Path, driver: &str, img: &BuiltImage, copy: &Path) {
    let repositories = Path::new("image").join(driver).join("repositories.json");
    std::fs::create_dir_all(copy.join("image").join(driver)).expect("mkdir");
    std::fs::copy(root.join(&repositories), copy.join(&repositories)).expect("copy");
    for path in snapshot(root, driver, img).keys() {
        let relative = path.strip_prefix(root).expect("under the data root");
        let target = copy.join(relative);
        let meta = std::fs::symlink_metadata(path).expect("metadata");
        if meta.is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
        } else if meta.file_type().is_symlink() {
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            let link = std::fs::read_link(path).expect("readlink");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
        } else if meta.is_file() {
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::copy(path, &target).expect("copy");
        }
    }
}

#[test]
fn a_changed_layer_file_is_caught() {
    let Some(d) = daemon_or_skip("a_changed_layer_file_is_caught") else {
        return;
    };
    let root = match readable_store(&d) {
        Ok(root) => root,
        Err(why) => {
            skip("a_changed_layer_file_is_caught", &why);
            return;
        }
    };
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/changed")))
        .busybox()
        .file("/top.txt", "top\n")
        .build(&d);
    let _untag = Untag {
        daemon: &d,
        tag: img.tag.clone(),
    };
    let copy = tempfile::tempdir().expect("tempdir");
    copy_image(&root, &d.driver, &img, copy.path());
    let export = |what: &str, out: &Path| {
        d.dlgrab_command(&[
            "--data-root",
            path_str(copy.path()),
            what,
            "--json",
            "-o",
            path_str(out),
        ])
        .env("DOCKER_HOST", "unix:///nonexistent/dlgrab-no-daemon.sock")
        .output()
        .expect("dlgrab runs")
    };
    let out = tempfile::tempdir().expect("tempdir");
    // The copy exports as the original does.
    let layer = one_layer(&succeeded(&export(&img.tag, &out.path().join("good"))));
    assert_eq!(sha256_file(&layer_tar(&layer)), img.layer_diff_ids[1]);

    // The same bytes count, other content: the CRC of tar-split catches it,
    // and the other routes need a daemon.
    let changed = walk_find(copy.path(), "top.txt").expect("top.txt in the copied layer");
    std::fs::write(&changed, "TOP\n").expect("write the copy");
    let output = export(&img.tag, &out.path().join("bad"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("after the store route failed"), "{stderr}");
    assert!(stderr.contains("checksum"), "{stderr}");
    assert!(!out.path().join("bad").join(hex_of(&img.id)).exists());
}

/// The first file named `name` below `dir`.
fn walk_find(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut seen = BTreeMap::new();
    walk(dir, &mut seen);
    seen.into_keys()
        .find(|p| p.file_name().is_some_and(|n| n == name))
}
