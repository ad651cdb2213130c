//! End-to-end tests of the `dlgrab` binary on the daemon under test,
//! following the original DLGrab README's examples: one history row out,
//! every row out and loaded back, the registry format served by a real
//! registry, the user's images untouched, and each error a user can meet.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use testkit::{
    BuiltImage, Daemon, Engine, ImageBuilder, daemon_or_skip, succeeded, tar_paths, unique_name,
};

fn dlgrab(daemon: &Daemon, args: &[&str]) -> Output {
    daemon.dlgrab(args)
}

fn dlgrab_command(daemon: &Daemon, args: &[&str]) -> Command {
    daemon.dlgrab_command(args)
}

#[track_caller]
fn failed_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success(),
        "dlgrab should have failed; stderr:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    assert!(
        stderr.contains(&needle.to_lowercase()),
        "stderr should mention {needle:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "dlgrab panicked:\n{stderr}");
}

/// The layers one `--json` run reports.
#[track_caller]
fn exported(stdout: &str) -> Vec<serde_json::Value> {
    testkit::items(stdout)
}

/// `sha256:<hex>` of a file's bytes.
pub(crate) fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

fn hex_of(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, h)| h)
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn three_row_image(daemon: &Daemon, prefix: &str) -> BuiltImage {
    ImageBuilder::new(&format!("{}:1", unique_name(prefix)))
        .busybox()
        .file("/a.txt", "alpha\n")
        .run("echo beta > /b.txt")
        .env("GREETING", "hello")
        .file("/c.txt", "gamma\n")
        .build(daemon)
}

#[test]
fn one_history_row_is_exported_alone() {
    let Some(d) = daemon_or_skip("one_history_row_is_exported_alone") else {
        return;
    };
    let img = three_row_image(&d, "dlgrab-e2e/row");
    let row = img
        .history
        .iter()
        .find(|r| r.created_by.contains("echo beta"))
        .expect("RUN row");
    let index = row.layer.expect("RUN makes a layer");
    let before = d.image_refs();
    let out = tempfile::tempdir().expect("tempdir");

    // The row's intermediate image ID where the daemon has one (as
    // `docker history` shows it), else the image name and the layer index.
    let args: Vec<String> = match &row.id {
        Some(id) => vec![id.clone()],
        None => vec![img.tag.clone(), "--index".into(), index.to_string()],
    };
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["-o", out.path().to_str().expect("utf-8 path")]);
    let run = dlgrab(&d, &argv);
    let stdout = succeeded(&run);
    // stderr is a pipe here: the phases come as plain lines, no cursor
    // movements or colours.
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("dlgrab: ")) && !stderr.contains('\u{1b}'),
        "{stderr}"
    );
    // One line for the layer (its index, diff ID, size and layer.tar),
    // then the closing line.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let short_diff = &img.layer_diff_ids[index][..19];
    assert!(
        lines[0].starts_with(&format!("Layer {index} ({short_diff}, "))
            && lines[0].ends_with("/layer.tar"),
        "{stdout}"
    );
    if let Some(id) = &row.id {
        assert!(
            lines[0].ends_with(&format!("{}/layer.tar", hex_of(id))),
            "{stdout}"
        );
    }
    assert_eq!(lines[1], "Export complete", "{stdout}");

    let folders: Vec<String> = listing(out.path())
        .into_iter()
        .filter(|n| n.len() == 64)
        .collect();
    assert_eq!(
        folders.len(),
        1,
        "one layer folder: {:?}",
        listing(out.path())
    );
    let folder = out.path().join(&folders[0]);
    if let Some(id) = &row.id {
        assert_eq!(folders[0], hex_of(id));
    }
    assert_eq!(
        std::fs::read_to_string(folder.join("VERSION")).expect("VERSION"),
        "1.0"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("json")).expect("json"))
            .expect("json parses");
    assert_eq!(json["id"], folders[0].as_str());
    assert_eq!(
        sha256_file(&folder.join("layer.tar")),
        img.layer_diff_ids[index]
    );
    assert_eq!(
        d.without_run_mounts(tar_paths(
            std::fs::File::open(folder.join("layer.tar")).expect("layer.tar")
        )),
        ["b.txt"]
    );
    assert!(
        !listing(out.path())
            .iter()
            .any(|n| n.starts_with(".dlgrab-")),
        "scratch left behind"
    );
    assert_eq!(d.image_refs(), before, "the image list changed");
    img.remove(&d);
}

#[test]
fn short_ids_names_and_both_routes_give_the_same_layer() {
    let Some(d) = daemon_or_skip("short_ids_names_and_both_routes_give_the_same_layer") else {
        return;
    };
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/routes")))
        .busybox()
        .random_file("/blob", 3 << 20, 7)
        .build(&d);
    let before = d.image_refs();
    let short = &hex_of(&img.id)[..12];
    let mut digests = Vec::new();
    for (what, via) in [
        (short, "push"),
        (img.tag.as_str(), "save"),
        (img.tag.as_str(), "auto"),
    ] {
        let out = tempfile::tempdir().expect("tempdir");
        let stdout = succeeded(&dlgrab(
            &d,
            &[
                what,
                "--via",
                via,
                "--json",
                "-o",
                out.path().to_str().expect("utf-8"),
            ],
        ));
        let layers = exported(&stdout);
        assert_eq!(layers.len(), 1, "{stdout}");
        assert_eq!(layers[0]["index"], 1);
        assert_eq!(layers[0]["diff_id"], img.layer_diff_ids[1].as_str());
        let tar = out
            .path()
            .join(layers[0]["id"].as_str().expect("id"))
            .join("layer.tar");
        digests.push(sha256_file(&tar));
        assert_eq!(
            d.image_refs(),
            before,
            "the image list changed after --via {via}"
        );
    }
    assert!(
        digests.iter().all(|dg| *dg == img.layer_diff_ids[1]),
        "{digests:?}"
    );
    img.remove(&d);
}

#[test]
fn a_top_layer_without_a_history_id_is_named_as_docker_save_names_it() {
    let Some(d) =
        daemon_or_skip("a_top_layer_without_a_history_id_is_named_as_docker_save_names_it")
    else {
        return;
    };
    // Saved and loaded back, the image has no intermediate images: its
    // top layer's row shows `<missing>` under the trailing ENV row, so the
    // layer's folder name (its v1 id) follows from the image config alone.
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/noparent")))
        .file("/a.txt", "alpha\n")
        .file("/c.txt", "gamma\n")
        .env("AFTER", "the last layer")
        .build(&d);
    let work = tempfile::tempdir().expect("tempdir");
    let saved = work.path().join("saved.tar");
    let save = d.docker([
        "save",
        "-o",
        saved.to_str().expect("utf-8"),
        img.tag.as_str(),
    ]);
    assert!(save.status.success(), "docker save: {save:?}");
    img.remove(&d);
    let load = d.docker(["load", "-i", saved.to_str().expect("utf-8")]);
    assert!(load.status.success(), "docker load: {load:?}");
    let before = d.image_refs();

    let mut results = Vec::new();
    for via in ["auto", "save", "push"] {
        let out = work.path().join(via);
        let stdout = succeeded(&dlgrab(
            &d,
            &[
                &img.tag,
                "--via",
                via,
                "--json",
                "-o",
                out.to_str().expect("utf-8"),
            ],
        ));
        let layers = exported(&stdout);
        assert_eq!(layers.len(), 1, "{stdout}");
        assert_eq!(layers[0]["index"], 1);
        let id = layers[0]["id"].as_str().expect("id").to_owned();
        let folder = out.join(&id);
        assert_eq!(
            sha256_file(&folder.join("layer.tar")),
            img.layer_diff_ids[1]
        );
        let json = std::fs::read(folder.join("json")).expect("json");
        results.push((via, id, json));
        assert_eq!(
            d.image_refs(),
            before,
            "the image list changed after --via {via}"
        );
    }
    let (_, id, json) = &results[0];
    for (via, other_id, other_json) in &results[1..] {
        assert_eq!(other_id, id, "--via {via} names the layer otherwise");
        assert_eq!(other_json, json, "--via {via} writes another json");
    }
    // Docker 20.10–24 save into folders named by these very ids.
    let mut names = Vec::new();
    let mut saved_json = None;
    let mut archive = tar::Archive::new(std::fs::File::open(&saved).expect("saved"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        if name == format!("{id}/json") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("json entry");
            saved_json = Some(bytes);
        }
        names.push(name);
    }
    // (Podman's save names its folders by a scheme of its own.)
    if d.engine == Engine::Docker
        && names
            .iter()
            .any(|n| n.ends_with("/layer.tar") && !n.starts_with("blobs/"))
    {
        assert!(
            names.contains(&format!("{id}/layer.tar")),
            "{id} not in {names:?}"
        );
        assert_eq!(
            saved_json.as_ref(),
            Some(json),
            "json differs from docker save's"
        );
    }
    d.remove_image(&img.tag);
}

#[test]
fn every_row_exported_then_loaded_gives_the_original_image() {
    let Some(d) = daemon_or_skip("every_row_exported_then_loaded_gives_the_original_image") else {
        return;
    };
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/load")))
        .busybox()
        .file("/greeting", "hello\n")
        .run("echo from-a-run >> /greeting")
        .env("MODE", "test")
        .run("rm /bin/sh.extra 2>/dev/null; mkdir -p /d && echo x > /d/x")
        .build(&d);
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("layers");
    for index in 0..img.layer_diff_ids.len() {
        succeeded(&dlgrab(
            &d,
            &[
                &img.tag,
                "--index",
                &index.to_string(),
                "-q",
                "-o",
                dir.to_str().expect("utf-8"),
            ],
        ));
    }
    let archive = out.path().join("img.tar");
    let status = Command::new("tar")
        .args([
            "-C",
            dir.to_str().expect("utf-8"),
            "-cf",
            archive.to_str().expect("utf-8"),
            ".",
        ])
        .status()
        .expect("tar runs");
    assert!(status.success());

    // Remove the image (and its intermediates), then load the folder back.
    let before = d.image_refs();
    d.docker(["image", "rm", img.tag.as_str()]);
    assert!(
        d.try_inspect(&img.id).is_err(),
        "the image should be gone before loading"
    );
    let load = d.docker(["load", "-i", archive.to_str().expect("utf-8")]);
    assert!(
        load.status.success(),
        "docker load failed: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert!(
        d.try_inspect(&img.id).is_ok(),
        "docker load did not give the original image ID back"
    );
    let run = d.run_cat(&img.id, "/greeting");
    assert!(
        run.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello\nfrom-a-run\n");
    drop(before);
    d.remove_image(&img.tag);
    d.remove_image(&img.id);
}

#[test]
fn registry_format_is_served_by_the_cncf_registry() {
    let Some(d) = daemon_or_skip("registry_format_is_served_by_the_cncf_registry") else {
        return;
    };
    let Some(registry_bin) = which("docker-registry") else {
        if std::env::var(testkit::ENV_REQUIRE_DAEMON).as_deref() == Ok("1") {
            panic!("docker-registry is not installed (apt-get install docker-registry)");
        }
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP registry_format_is_served_by_the_cncf_registry: docker-registry is not installed"
        );
        return;
    };
    // Content of its own: the registry layout is named after the image's
    // first tag, which must be this test's.
    let tag = format!("{}:1", unique_name("dlgrab-e2e/regfmt"));
    let img = ImageBuilder::new(&tag)
        .busybox()
        .file("/a.txt", format!("{tag}\n"))
        .run("echo beta > /b.txt")
        .build(&d);
    let out = tempfile::tempdir().expect("tempdir");
    let root = out.path().join("storage");
    succeeded(&dlgrab(
        &d,
        &[
            &img.tag,
            "--registry-format",
            "-q",
            "-o",
            root.to_str().expect("utf-8"),
        ],
    ));
    assert!(
        root.join("docker/registry/v2/blobs").is_dir(),
        "{:?}",
        listing(&root)
    );

    let port = free_port();
    let config = out.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        ),
    )
    .expect("config");
    let mut server = Command::new(registry_bin)
        .args(["serve", config.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry starts");
    let served = wait_for_http(port, "/v2/");
    let name = img.tag.rsplit_once(':').map(|(n, _)| n).expect("tag");
    let manifest = served
        .then(|| http_get(port, &format!("/v2/{name}/manifests/1")))
        .flatten();
    let top_layer = manifest.as_ref().and_then(|m| {
        let v: serde_json::Value = serde_json::from_slice(m).ok()?;
        v["layers"].as_array()?.last()?["digest"]
            .as_str()
            .map(str::to_owned)
    });
    let blob = top_layer
        .as_ref()
        .and_then(|dg| http_get(port, &format!("/v2/{name}/blobs/{dg}")));
    let _ = server.kill();
    let _ = server.wait();
    assert!(served, "docker-registry did not answer on 127.0.0.1:{port}");
    let manifest = manifest.expect("the registry serves the manifest");
    let top_layer = top_layer.unwrap_or_else(|| {
        panic!(
            "manifest without layers: {}",
            String::from_utf8_lossy(&manifest)
        )
    });
    let blob = blob.expect("the registry serves the top layer's blob");
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&blob))),
        top_layer
    );
    img.remove(&d);
}

#[test]
fn the_image_list_is_unchanged_with_and_without_clean() {
    let Some(d) = daemon_or_skip("the_image_list_is_unchanged_with_and_without_clean") else {
        return;
    };
    let img = three_row_image(&d, "dlgrab-e2e/clean");
    let before = d.image_refs();
    for extra in [&["--clean"][..], &[][..]] {
        for via in ["push", "save"] {
            let out = tempfile::tempdir().expect("tempdir");
            let mut args = vec![
                img.tag.as_str(),
                "--via",
                via,
                "-q",
                "-o",
                out.path().to_str().expect("utf-8"),
            ];
            args.extend_from_slice(extra);
            succeeded(&dlgrab(&d, &args));
            assert_eq!(
                d.image_refs(),
                before,
                "image list changed ({via} {extra:?})"
            );
        }
    }
    img.remove(&d);
}

/// A daemon remembers where it pushed a layer, by registry host and port:
/// asked again on a port an earlier run used, it looks for the layer in that
/// run's repository (Podman by `HEAD` and a mount, dockerd by a mount). The
/// capture must still get the layer uploaded, not a claim of it.
#[test]
fn a_run_on_the_port_an_earlier_run_used_still_gets_the_layer() {
    let Some(d) = daemon_or_skip("a_run_on_the_port_an_earlier_run_used_still_gets_the_layer")
    else {
        return;
    };
    let img = three_row_image(&d, "dlgrab-e2e/same-port");
    let top = img.layer_diff_ids.last().expect("layers").clone();
    let port = free_port().to_string();
    for run in 0..2 {
        let out = tempfile::tempdir().expect("tempdir");
        let dir = out.path().to_str().expect("utf-8");
        let args = [
            img.tag.as_str(),
            "--via",
            "push",
            "-p",
            &port,
            "--json",
            "-o",
            dir,
        ];
        let layers = exported(&succeeded(&dlgrab(&d, &args)));
        let tar = out
            .path()
            .join(layers[0]["id"].as_str().expect("id"))
            .join("layer.tar");
        assert_eq!(sha256_file(&tar), top, "run {run}: the top layer's tar");
    }
    img.remove(&d);
}

#[test]
fn errors_are_clear_and_exit_non_zero() {
    let Some(d) = daemon_or_skip("errors_are_clear_and_exit_non_zero") else {
        return;
    };
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().to_str().expect("utf-8");

    // Daemon unreachable.
    let gone = dlgrab_command(&d, &["busybox", "-o", dir])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("dlgrab runs");
    failed_with(&gone, "/nonexistent/docker.sock");

    // No such image.
    failed_with(
        &dlgrab(&d, &["dlgrab-e2e/no-such-image:404", "-o", dir]),
        "no such image",
    );

    // The same layer again: kept as it is, nothing rewritten.
    let img = three_row_image(&d, "dlgrab-e2e/errors");
    let top_diff = &img.layer_diff_ids[img.layer_diff_ids.len() - 1];
    let first = exported(&succeeded(&dlgrab(&d, &[&img.tag, "--json", "-o", dir])));
    let tar = out
        .path()
        .join(first[0]["id"].as_str().expect("id"))
        .join("layer.tar");
    let written_at = std::fs::metadata(&tar)
        .and_then(|m| m.modified())
        .expect("mtime");
    let manifest = std::fs::read(out.path().join("manifest.json")).expect("manifest.json");
    let again = succeeded(&dlgrab(&d, &[&img.tag, "-o", dir]));
    assert!(again.contains("already there, kept"), "{again}");
    assert_eq!(
        std::fs::metadata(&tar)
            .and_then(|m| m.modified())
            .expect("mtime"),
        written_at
    );
    assert_eq!(
        std::fs::read(out.path().join("manifest.json")).expect("manifest.json"),
        manifest
    );
    // A folder holding something else is refused and left as it is…
    std::fs::write(&tar, b"not the layer").expect("overwrite");
    failed_with(&dlgrab(&d, &[&img.tag, "-o", dir]), "already there");
    assert_eq!(std::fs::read(&tar).expect("tar"), b"not the layer");
    // …and --force replaces it.
    succeeded(&dlgrab(&d, &[&img.tag, "--force", "-q", "-o", dir]));
    assert_eq!(&sha256_file(&tar), top_diff);

    // Port taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let other = tempfile::tempdir().expect("tempdir");
    failed_with(
        &dlgrab(
            &d,
            &[
                &img.tag,
                "--via",
                "push",
                "-p",
                &port,
                "-o",
                other.path().to_str().expect("utf-8"),
            ],
        ),
        "port",
    );
    assert!(
        listing(other.path())
            .iter()
            .all(|n| !n.starts_with(".dlgrab-")),
        "{:?}",
        listing(other.path())
    );

    // Ambiguous short ID: a one-character prefix that two images share.
    let ids = d.image_ids();
    let shared = ids
        .iter()
        .map(|id| hex_of(id).chars().next().expect("hex"))
        .find(|c| ids.iter().filter(|id| hex_of(id).starts_with(*c)).count() > 1);
    if let Some(c) = shared {
        failed_with(
            &dlgrab(
                &d,
                &[&c.to_string(), "-o", other.path().to_str().expect("utf-8")],
            ),
            "ambiguous",
        );
    }
    img.remove(&d);
}

#[test]
fn sigterm_stops_the_export_and_leaves_nothing_behind() {
    let Some(d) = daemon_or_skip("sigterm_stops_the_export_and_leaves_nothing_behind") else {
        return;
    };
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/sigterm")))
        .busybox()
        .random_file("/big", 192 << 20, 11)
        .build(&d);
    let before = d.image_refs();
    let out = tempfile::tempdir().expect("tempdir");
    let mut child = dlgrab_command(
        &d,
        &[
            &img.tag,
            "--via",
            "push",
            "-q",
            "-o",
            out.path().to_str().expect("utf-8"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("dlgrab starts");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    // A layer in the folder must be whole, and said to be there.
    let whole = || {
        let folder = listing(out.path())
            .into_iter()
            .find(|n| n.len() == 64)
            .unwrap_or_else(|| panic!("no layer folder: {:?}", listing(out.path())));
        assert_eq!(
            sha256_file(&out.path().join(&folder).join("layer.tar")),
            img.layer_diff_ids[1]
        );
        assert!(
            !listing(out.path())
                .iter()
                .any(|n| n.starts_with(".dlgrab-")),
            "scratch left: {:?}",
            listing(out.path())
        );
    };
    match status.code() {
        // Stopped before the layer was in place: nothing is left; after
        // (the signal came while the run tidied up): the layer is whole,
        // and the run says it kept it.
        Some(130) if listing(out.path()).is_empty() => {}
        Some(130) => {
            whole();
            assert!(
                stderr.contains("written in full before the interrupt"),
                "output left without a word; stderr:\n{stderr}"
            );
        }
        // The export beat the signal: then it must be whole.
        Some(0) => whole(),
        other => panic!("unexpected exit {other:?}; stderr:\n{stderr}"),
    }
    assert_eq!(
        d.image_refs(),
        before,
        "temporary tag left behind; stderr:\n{stderr}"
    );
    img.remove(&d);
}

fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("dlgrab did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits (at most 15 s) for `GET path` on 127.0.0.1:port to answer at all.
fn wait_for_http(port: u16, path: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if http_status(port, path).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let (status, _) = http_request(port, path)?;
    Some(status)
}

/// The body of a 200 answer to `GET path`.
fn http_get(port: u16, path: &str) -> Option<Vec<u8>> {
    match http_request(port, path)? {
        (200, body) => Some(body),
        _ => None,
    }
}

/// A minimal HTTP/1.0 GET on loopback (no keep-alive, body to EOF).
fn http_request(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response[split + 4..].to_vec()))
}
