//! Images as Docker 28/29 makes them, exported every way: built by BuildKit
//! (`docker buildx build --builder default`: a provenance attestation by
//! default, an SBOM, none, `COPY --link` with ENV/LABEL rows, zstd layers
//! on the containerd store) and multi-platform images pulled from a
//! registry (an OCI index with an attestation, a Docker manifest list),
//! whose other platform's content is not local.
//!
//! For each: `--list`, the top layer, every layer by each route (push,
//! save, and store where the layer store is readable), a layer by diff ID,
//! the OCI and registry formats; every written layer hashes to its diff
//! ID, the image list and the image's labels are unchanged, and the seed
//! folder of every layer loads back into an image that runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testkit::{
    BuildKitOptions, BuildKitOutput, Buildx, BuiltBy, Daemon, Engine, ImageBuilder, IndexFlavour,
    PulledIndex, Store, buildx_or_skip, daemon_or_skip, succeeded, unique_name,
};

use crate::export::sha256_file;
use crate::store::store_route_here;

/// Says on stderr why a test did not run.
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The daemon's major version, e.g. 20 for `20.10.24+dfsg1`.
fn major_version(d: &Daemon) -> u32 {
    d.version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

fn hex_of(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, h)| h)
}

/// The daemon under test and, for a dockerd, the buildx plugin (Podman
/// builds with its classic builder: no plugin needed).
fn setup(test: &str) -> Option<(Daemon, Option<Buildx>)> {
    let d = daemon_or_skip(test)?;
    if d.engine == Engine::Podman {
        return Some((d, None));
    }
    let buildx = buildx_or_skip(test)?;
    Some((d, Some(buildx)))
}

/// What a test exports: an image on the daemon, its diff IDs, and a file
/// its top layer holds.
struct Subject {
    reference: String,
    diff_ids: Vec<String>,
    file: &'static str,
    text: Vec<u8>,
    /// The digest of the platform image manifest, when known (the ID a
    /// containerd store may give the image loaded back from the seed
    /// folder, which names that manifest).
    manifest_digest: Option<String>,
    /// The daemon refuses to push it (Docker 26.1's containerd store: an
    /// index whose other platforms are not local), so `--via push` must
    /// fail with the daemon's message, and auto must take save.
    push_refused: bool,
}

/// The BuildKit image of the tests: busybox, a file, ENV and LABEL rows
/// (empty layers), a top file.
fn buildkit_image(
    test: &str,
    d: &Daemon,
    buildx: Option<&Buildx>,
    options: &BuildKitOptions,
) -> (testkit::BuildKitImage, Subject) {
    let tag = format!("{}:1", unique_name(&format!("dlgrab-e2e/bk-{test}")));
    let text = format!("{tag}\n");
    let image = ImageBuilder::new(&tag)
        .busybox()
        .file("/a.txt", "alpha\n")
        .env("STAGE", "buildkit")
        .label("org.example.fixture", test)
        .file("/top.txt", text.clone())
        .build_with_buildkit(d, buildx, options);
    assert_eq!(image.image.layer_diff_ids.len(), 3, "{image:?}");
    let empty: Vec<usize> = image
        .image
        .history
        .iter()
        .enumerate()
        .filter(|(_, r)| r.layer.is_none())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        empty,
        [2, 3],
        "ENV and LABEL rows are empty layers: {image:?}"
    );
    let subject = Subject {
        reference: tag,
        diff_ids: image.image.layer_diff_ids.clone(),
        file: "/top.txt",
        text: text.into_bytes(),
        manifest_digest: None,
        push_refused: false,
    };
    (image, subject)
}

/// What BuildKit stored: on the containerd store the image ID is the
/// digest BuildKit reports (the index's with attestations, else the
/// manifest's); on a classic store it is the config's, attestations dropped.
#[track_caller]
fn check_stored(d: &Daemon, image: &testkit::BuildKitImage, attested: bool) {
    if image.built_by != BuiltBy::BuildKit {
        return;
    }
    let digest = image.digest.as_deref().expect("buildx reports a digest");
    match d.store {
        Store::Containerd => {
            assert_eq!(image.image.id, digest, "{image:?}");
            // An index with the attestation; without, an image manifest
            // (Docker's media types unless OCI ones were asked for).
            let want: &[&str] = if attested {
                &["application/vnd.oci.image.index.v1+json"]
            } else {
                &[
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.oci.image.manifest.v1+json",
                ]
            };
            let got = image.media_type.as_deref().unwrap_or_default();
            assert!(
                want.contains(&got),
                "{got} is not one of {want:?}: {image:?}"
            );
        }
        Store::Classic => {
            // The config's digest: what `docker inspect` calls the ID.
            assert_eq!(image.image.id, digest, "{image:?}");
        }
    }
}

/// The layers a `--json` run reports, each `layer.tar` (seed format)
/// checked against its diff ID.
#[track_caller]
fn exported(stdout: &str, subject: &Subject, indexes: &[usize]) -> Vec<Value> {
    let layers = testkit::items(stdout);
    let got: Vec<u64> = layers.iter().filter_map(|l| l["index"].as_u64()).collect();
    let want: Vec<u64> = indexes.iter().map(|&i| i as u64).collect();
    assert_eq!(got, want, "{stdout}");
    for layer in &layers {
        let index = layer["index"].as_u64().expect("index") as usize;
        assert_eq!(layer["diff_id"], subject.diff_ids[index], "{layer}");
    }
    layers
}

/// The `layer.tar` of a seed-format layer, hashed against its diff ID.
#[track_caller]
fn check_layer_tar(layer: &Value, subject: &Subject) {
    let index = layer["index"].as_u64().expect("index") as usize;
    let tar = testkit::exported_file(layer, "/layer.tar");
    assert_eq!(sha256_file(&tar), subject.diff_ids[index], "{layer}");
}

/// `dlgrab REF ARGS --json -o DIR`, its output checked to be `indexes`.
#[track_caller]
fn export(
    d: &Daemon,
    subject: &Subject,
    args: &[&str],
    dir: &Path,
    indexes: &[usize],
) -> Vec<Value> {
    let mut all = vec![subject.reference.as_str()];
    all.extend_from_slice(args);
    all.extend(["--json", "-o", path_str(dir)]);
    let out = d.dlgrab(&all);
    let stdout = succeeded(&out);
    exported(&stdout, subject, indexes)
}

/// Every export this module checks, then the seed folders loaded back.
#[track_caller]
fn exports_every_way(d: &Daemon, subject: &Subject) {
    let n = subject.diff_ids.len();
    let top = n - 1;
    let before = d.image_refs();
    let labels = d.inspect(&subject.reference)["Config"]["Labels"].clone();
    let saved_index = saved_index_json(d, &subject.reference);
    let out = tempfile::tempdir().expect("tempdir");

    // --list: one row per layer, base first.
    let listed = succeeded(&d.dlgrab(&["--list", &subject.reference, "--json"]));
    let rows = testkit::items(&listed);
    let listed_ids: Vec<&str> = rows.iter().filter_map(|r| r["diff_id"].as_str()).collect();
    assert_eq!(listed_ids, subject.diff_ids, "{listed}");

    // The top layer, by the route dlgrab picks.
    for layer in export(d, subject, &[], &out.path().join("top"), &[top]) {
        check_layer_tar(&layer, subject);
    }

    // Every layer by each route, into one seed folder per route.
    let mut routes = vec!["auto", "push", "save"];
    if store_route_here(d) {
        routes.push("store");
    }
    // The daemon's store through its archive API: the layer store of a
    // classic dockerd, the content store of a containerd one, Podman's
    // containers/storage.
    routes.push("archive");
    if subject.push_refused {
        routes.retain(|&via| via != "push");
        let dir = out.path().join("refused-push");
        let out = d.dlgrab(&[
            subject.reference.as_str(),
            "--via",
            "push",
            "-o",
            path_str(&dir),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains("Make sure you have all the referenced content"),
            "--via push of an index the daemon cannot push: {stderr}"
        );
    }
    let mut seeds = Vec::new();
    for via in routes {
        let dir = out.path().join(format!("every-{via}"));
        for index in 0..n {
            let layers = export(
                d,
                subject,
                &["--index", &index.to_string(), "--via", via],
                &dir,
                &[index],
            );
            for layer in &layers {
                check_layer_tar(layer, subject);
                if via != "auto" {
                    assert_eq!(layer["route"], via, "{layer}");
                }
            }
        }
        seeds.push((via, dir));
    }

    // By diff ID.
    let base = &subject.diff_ids[0];
    for layer in export(
        d,
        subject,
        &["--diff-id", base],
        &out.path().join("by-diff"),
        &[0],
    ) {
        check_layer_tar(&layer, subject);
    }

    // The OCI layout keeps the layer as one blob named by its digest: as
    // the store keeps it (compressed) on the containerd store, where the
    // push hands over the stored blob, else as its tar, by diff ID. Either
    // way its content is the layer.
    let oci = out.path().join("oci");
    let layers = export(d, subject, &["--format", "oci"], &oci, &[top]);
    let blobs: Vec<PathBuf> = layers[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f.as_str())
        .map(PathBuf::from)
        .filter(|f| f.to_string_lossy().contains("/blobs/sha256/"))
        .collect();
    assert_eq!(blobs.len(), 1, "one blob for the layer: {}", layers[0]);
    let blob = &blobs[0];
    let name = blob
        .file_name()
        .and_then(|n| n.to_str())
        .expect("blob name");
    assert_eq!(hex_of(&sha256_file(blob)), name, "{}", blob.display());
    let content = layer_writer::diff_id_of(std::fs::File::open(blob).expect("blob"))
        .expect("the blob is a layer");
    assert_eq!(
        content.to_string(),
        subject.diff_ids[top],
        "{}",
        blob.display()
    );
    if d.store == Store::Containerd && d.engine == Engine::Docker {
        assert_ne!(
            name,
            hex_of(&subject.diff_ids[top]),
            "the containerd store's blob was decompressed into the layout"
        );
    }

    // The registry layout keeps a blob that decompresses to the layer.
    let registry = out.path().join("registry");
    let layers = export(d, subject, &["--format", "registry"], &registry, &[top]);
    let found = layers[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f.as_str())
        .filter(|f| f.ends_with("/data"))
        .any(|f| {
            let file = std::fs::File::open(f).expect("blob");
            layer_writer::diff_id_of(file).is_ok_and(|dg| dg.to_string() == subject.diff_ids[top])
        });
    assert!(found, "no blob of the top layer in {}", layers[0]);

    assert_eq!(d.image_refs(), before, "the image list changed");
    assert_eq!(
        d.inspect(&subject.reference)["Config"]["Labels"],
        labels,
        "the image's labels changed"
    );
    // No trace of the pushes (`--via push`, every layer) on the stored
    // image: a containerd store labels what it pushed with the registry
    // it pushed to after a push that succeeds
    // (`containerd.io/distribution.source.127.0.0.1: dlgrab-run-…`), and
    // `docker save` shows those labels as annotations in `index.json`.
    let index = saved_index_json(d, &subject.reference);
    assert!(
        !index.contains("dlgrab-run"),
        "a trace of dlgrab's registry on the image: {index}"
    );
    assert_eq!(index, saved_index, "docker save's index.json changed");

    // Each seed folder of every layer loads back into the image.
    let original = d.inspect(&subject.reference)["Id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for (via, dir) in seeds {
        load_back(d, subject, via, &dir, &original);
    }
}

/// Says on stderr what a test did about a daemon's fault.
#[expect(clippy::print_stderr, reason = "a test says on stderr what it retried")]
fn note(what: &str) {
    eprintln!("{what}");
}

/// `index.json` of `docker save REFERENCE` (empty where the daemon writes
/// none: Docker before 25).
#[track_caller]
fn saved_index_json(d: &Daemon, reference: &str) -> String {
    let out = d.docker(["save", reference]);
    assert!(
        out.status.success(),
        "docker save {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut archive = tar::Archive::new(&out.stdout[..]);
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        if entry.path().expect("a path").as_os_str() == "index.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("index.json");
            return text;
        }
    }
    String::new()
}

/// Removes the image, loads a tar of `dir`, and checks the image is back
/// (same diff IDs; the same ID on a classic store) and runs.
#[track_caller]
fn load_back(d: &Daemon, subject: &Subject, via: &str, dir: &Path, original: &str) {
    let archive = dir.with_extension("tar");
    let status = Command::new("tar")
        .args(["-C", path_str(dir), "-cf", path_str(&archive), "."])
        .status()
        .expect("tar runs");
    assert!(status.success());
    d.remove_image(&subject.reference);
    assert!(
        d.try_inspect(&subject.reference).is_err(),
        "{} should be gone before loading",
        subject.reference
    );
    let load = d.docker(["load", "-i", path_str(&archive)]);
    assert!(
        load.status.success(),
        "--via {via}: docker load failed: {}{}",
        String::from_utf8_lossy(&load.stdout),
        String::from_utf8_lossy(&load.stderr)
    );
    let loaded = d.try_inspect(&subject.reference).unwrap_or_else(|e| {
        panic!(
            "--via {via}: {} not there after docker load ({e}); it said: {}",
            subject.reference,
            String::from_utf8_lossy(&load.stdout)
        )
    });
    d.remove_when_done(loaded["Id"].as_str().unwrap_or_default());
    assert_eq!(
        d.diff_ids(&subject.reference),
        subject.diff_ids,
        "--via {via}: loaded diff IDs"
    );
    let id = loaded["Id"].as_str().unwrap_or_default();
    match d.store {
        Store::Classic => assert_eq!(id, original, "--via {via}: the loaded image's ID"),
        // The seed folder names the platform manifest: its digest, or the
        // original ID, is the loaded image's.
        Store::Containerd => {
            let known = [Some(original), subject.manifest_digest.as_deref()];
            if subject.manifest_digest.is_some() {
                assert!(
                    known.contains(&Some(id)),
                    "--via {via}: loaded as {id}, not {original} or {:?}",
                    subject.manifest_digest
                );
            }
        }
    }
    let mut run = d.run(&subject.reference, &["/bin/busybox", "true"]);
    if !run.status.success()
        && d.store == Store::Containerd
        && String::from_utf8_lossy(&run.stderr).contains("parent snapshot")
    {
        // Docker 26.1's containerd store: a layer snapshot another image
        // (removed by an earlier test) left is garbage-collected under the
        // loaded image's unpack, which found it and skipped it; Docker's
        // own `docker save | docker load` meets the same. Loading again
        // unpacks it anew.
        note(&format!(
            "--via {via}: the daemon lost a parent snapshot; loading again: {}",
            String::from_utf8_lossy(&run.stderr)
        ));
        let again = d.docker(["load", "-i", path_str(&archive)]);
        assert!(
            again.status.success(),
            "--via {via}: docker load again failed"
        );
        run = d.run(&subject.reference, &["/bin/busybox", "true"]);
    }
    assert!(
        run.status.success(),
        "--via {via}: the loaded image does not run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let cat = d.run_cat(&subject.reference, subject.file);
    assert!(
        cat.status.success(),
        "--via {via}: cat {} in the loaded image failed: {}",
        subject.file,
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(cat.stdout, subject.text, "--via {via}: {}", subject.file);
}

/// `--since BASE`: BASE is the subject's first two steps built alike (the
/// same two layers); the archive of the layers beyond it is small (the
/// busybox layer stays out) and loads back over BASE into the image.
fn since_loads_back(
    d: &Daemon,
    buildx: Option<&Buildx>,
    options: &BuildKitOptions,
    subject: &Subject,
    test: &str,
) {
    let base_tag = format!("{}:1", unique_name(&format!("dlgrab-e2e/bk-base-{test}")));
    let base = ImageBuilder::new(&base_tag)
        .busybox()
        .file("/a.txt", "alpha\n")
        .build_with_buildkit(d, buildx, options);
    d.remove_when_done(&base_tag);
    assert_eq!(
        base.image.layer_diff_ids[..],
        subject.diff_ids[..2],
        "the base is not the subject's first two layers: {base:?}"
    );
    let original = d.inspect(&subject.reference)["Id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let out = tempfile::tempdir().expect("tempdir");
    let archive = out.path().join("since.tar");
    succeeded(&d.dlgrab(&[
        "--since",
        &base_tag,
        &subject.reference,
        "-q",
        "-o",
        path_str(&archive),
    ]));
    let size = std::fs::metadata(&archive).expect("archive").len();
    assert!(
        size < 512 << 10,
        "the archive ({size} bytes) holds more than the top layer"
    );
    let dir = out.path().join("since");
    std::fs::create_dir(&dir).expect("mkdir");
    let status = Command::new("tar")
        .args(["-C", path_str(&dir), "-xf", path_str(&archive)])
        .status()
        .expect("tar runs");
    assert!(status.success());
    load_back(d, subject, "--since", &dir, &original);
}

#[test]
fn buildkit_default_with_provenance_exports_every_way() {
    let test = "buildkit::buildkit_default_with_provenance_exports_every_way";
    let Some((d, buildx)) = setup(test) else {
        return;
    };
    let options = BuildKitOptions::default();
    let (image, subject) = buildkit_image("prov", &d, buildx.as_ref(), &options);
    check_stored(&d, &image, true);
    exports_every_way(&d, &subject);
    since_loads_back(&d, buildx.as_ref(), &options, &subject, "prov");
}

#[test]
fn buildkit_without_provenance_exports_every_way() {
    let test = "buildkit::buildkit_without_provenance_exports_every_way";
    let Some((d, buildx)) = setup(test) else {
        return;
    };
    let options = BuildKitOptions {
        provenance: Some(false),
        ..BuildKitOptions::default()
    };
    let (image, subject) = buildkit_image("noprov", &d, buildx.as_ref(), &options);
    check_stored(&d, &image, false);
    exports_every_way(&d, &subject);
    since_loads_back(&d, buildx.as_ref(), &options, &subject, "noprov");
}

/// `--sbom=true` runs BuildKit's scanner image (`docker/buildkit-syft-scanner`
/// from Docker Hub) in a container with the default network: where the
/// daemon can have neither (no registry in reach, `--bridge=none`), the
/// test says so and stops. A classic store refuses attestations asked for.
#[test]
fn buildkit_with_sbom_exports_every_way() {
    let test = "buildkit::buildkit_with_sbom_exports_every_way";
    let Some((d, buildx)) = setup(test) else {
        return;
    };
    if d.engine == Engine::Docker && d.store == Store::Classic {
        skip(
            test,
            &format!(
                "daemon {}: the docker driver on a classic store refuses attestations asked for",
                d.name
            ),
        );
        return;
    }
    let options = BuildKitOptions {
        sbom: true,
        ..BuildKitOptions::default()
    };
    let tag = format!("{}:1", unique_name("dlgrab-e2e/bk-sbom"));
    let text = format!("{tag}\n");
    let built = ImageBuilder::new(&tag)
        .busybox()
        .env("STAGE", "sbom")
        .file("/top.txt", text.clone())
        .try_build_with_buildkit(&d, buildx.as_ref(), &options);
    let image = match built {
        Ok(image) => image,
        Err(e) => {
            let why = e.to_string();
            if why.contains("buildkit-syft-scanner") || why.contains("network bridge not found") {
                skip(
                    test,
                    &format!("daemon {}: no SBOM scanner can run here: {why}", d.name),
                );
                return;
            }
            panic!("daemon {}: {why}", d.name);
        }
    };
    check_stored(&d, &image, true);
    let subject = Subject {
        reference: tag,
        diff_ids: image.image.layer_diff_ids.clone(),
        file: "/top.txt",
        text: text.into_bytes(),
        manifest_digest: None,
        push_refused: false,
    };
    exports_every_way(&d, &subject);
}

#[test]
fn buildkit_copy_link_with_env_and_label_rows_exports_every_way() {
    let test = "buildkit::buildkit_copy_link_with_env_and_label_rows_exports_every_way";
    let Some((d, buildx)) = setup(test) else {
        return;
    };
    // The Dockerfile frontend built into dockerd takes `COPY --link` from
    // Docker 23 (BuildKit 0.11; 20.10's answers `Unknown flag: link`), and
    // no other frontend can be pulled here.
    if d.engine == Engine::Docker && major_version(&d) < 23 {
        skip(
            test,
            &format!(
                "daemon {} ({}): its builtin Dockerfile frontend has no COPY --link",
                d.name, d.version
            ),
        );
        return;
    }
    let options = BuildKitOptions {
        link: true,
        ..BuildKitOptions::default()
    };
    let (image, subject) = buildkit_image("link", &d, buildx.as_ref(), &options);
    check_stored(&d, &image, true);
    let config = d.inspect(&subject.reference);
    assert_eq!(config["Config"]["Labels"]["org.example.fixture"], "link");
    assert!(
        config["Config"]["Env"]
            .to_string()
            .contains("STAGE=buildkit"),
        "{config}"
    );
    exports_every_way(&d, &subject);
}

#[test]
fn buildkit_zstd_layers_export_every_way() {
    let test = "buildkit::buildkit_zstd_layers_export_every_way";
    let Some((d, buildx)) = setup(test) else {
        return;
    };
    if d.store != Store::Containerd {
        skip(
            test,
            &format!(
                "daemon {} keeps no compressed layers (no containerd store)",
                d.name
            ),
        );
        return;
    }
    let options = BuildKitOptions {
        output: BuildKitOutput::Zstd,
        ..BuildKitOptions::default()
    };
    let (image, subject) = buildkit_image("zstd", &d, buildx.as_ref(), &options);
    check_stored(&d, &image, true);
    // The fixture is what it claims: the store holds zstd layers.
    let saved = tempfile::tempdir().expect("tempdir");
    let tar = saved.path().join("saved.tar");
    d.docker_stdout(["save", "-o", path_str(&tar), subject.reference.as_str()]);
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).expect("saved"));
    let mut zstd_layers = 0;
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut head = [0u8; 4];
        if entry.header().size().unwrap_or(0) >= 4
            && std::io::Read::read_exact(&mut entry, &mut head).is_ok()
            && head == [0x28, 0xb5, 0x2f, 0xfd]
        {
            zstd_layers += 1;
        }
    }
    assert!(
        zstd_layers >= subject.diff_ids.len(),
        "{zstd_layers} zstd blobs in the saved image, expected {}",
        subject.diff_ids.len()
    );
    exports_every_way(&d, &subject);
    since_loads_back(&d, buildx.as_ref(), &options, &subject, "zstd");
}

/// The pulled fixture as a [`Subject`], its ID checked: the index's digest
/// on the containerd store, the amd64 config's on a classic store.
#[track_caller]
fn pulled_subject(d: &Daemon, pulled: &PulledIndex) -> Subject {
    match d.store {
        Store::Containerd => assert_eq!(pulled.id, pulled.index_digest, "{pulled:?}"),
        Store::Classic => assert_eq!(
            hex_of(&pulled.id),
            hex_of(&pulled.config_digest),
            "{pulled:?}"
        ),
    }
    assert_eq!(d.diff_ids(&pulled.reference), pulled.diff_ids);
    let labels = &d.inspect(&pulled.reference)["Config"]["Labels"];
    for (k, v) in &pulled.labels {
        assert_eq!(labels[k], v.as_str(), "label {k}: {labels}");
    }
    Subject {
        reference: pulled.reference.clone(),
        diff_ids: pulled.diff_ids.clone(),
        file: PulledIndex::FILE,
        text: pulled.file_text.clone().into_bytes(),
        manifest_digest: Some(pulled.manifest_digest.clone()),
        // API 1.46 (Docker 27) pushes the platform's manifest instead.
        push_refused: d.store == Store::Containerd
            && d.engine == Engine::Docker
            && major_version(d) < 27,
    }
}

#[test]
fn a_pulled_oci_index_with_an_attestation_exports_every_way() {
    let Some(d) =
        daemon_or_skip("buildkit::a_pulled_oci_index_with_an_attestation_exports_every_way")
    else {
        return;
    };
    let pulled = PulledIndex::pull(&d, IndexFlavour::Oci);
    let subject = pulled_subject(&d, &pulled);
    exports_every_way(&d, &subject);
}

#[test]
fn a_pulled_docker_manifest_list_exports_every_way() {
    let Some(d) = daemon_or_skip("buildkit::a_pulled_docker_manifest_list_exports_every_way")
    else {
        return;
    };
    let pulled = PulledIndex::pull(&d, IndexFlavour::DockerList);
    let subject = pulled_subject(&d, &pulled);
    exports_every_way(&d, &subject);
}
