//! Daemon tests for the writer: folders written from `docker save` streams
//! load back with `docker load`, folders written from a real push (manifest
//! and compressed blobs as the daemon pushed them) load back under the same
//! image ID, and the registry format serves to skopeo.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use layer_writer::{BlobRef, Format, ImageContext, LayerWriter, WriterOptions};
use sha2::Digest as _;
use testkit::{Daemon, ImageBuilder, Store, daemon_or_skip, unique_name};

/// `docker save <reference>` into `dir/save.tar`; returns its path.
fn save(daemon: &Daemon, reference: &str, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("save.tar");
    let out = daemon.docker(["save", "-o", path.to_str().unwrap(), reference]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The image config inside a save archive (either layout), found through `manifest.json`.
fn config_from_save(path: &Path) -> Vec<u8> {
    let read_entry = |wanted: &str| -> Option<Vec<u8>> {
        let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == wanted {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                return Some(v);
            }
        }
        None
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_entry("manifest.json").expect("manifest.json")).unwrap();
    read_entry(manifest[0]["Config"].as_str().unwrap()).expect("config")
}

fn context(config: Vec<u8>, tag: &str) -> ImageContext {
    ImageContext::from_config(config, vec![tag.to_string()]).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `tar -C root -cf <out> .`, then `docker load -i <out>`.
fn tar_and_load(daemon: &Daemon, root: &Path, work: &Path) -> String {
    let archive = work.join("img.tar");
    let st = Command::new("tar")
        .args([
            "-C",
            root.to_str().unwrap(),
            "-cf",
            archive.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let out = daemon.docker(["load", "-i", archive.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "daemon {}: docker load failed: {text}",
        daemon.name
    );
    text
}

/// The image ID a load must give back: the config digest on classic
/// stores; on the containerd store the ID is the manifest digest, so the
/// config digest is compared through `docker image inspect` there too.
#[track_caller]
#[expect(
    clippy::print_stderr,
    reason = "tests report what the containerd store did"
)]
fn check_same_image(daemon: &Daemon, tag: &str, original_id: &str, diff_ids: &[String]) {
    let inspect = daemon.inspect(tag);
    let id = inspect["Id"].as_str().unwrap_or_default();
    match daemon.store {
        Store::Classic => assert_eq!(id, original_id, "daemon {}: image ID changed", daemon.name),
        _ => {
            // Docker 28's containerd store reports no `RootFS` (nor config)
            // for an image whose layer blobs are not all in its content
            // store, as after loading only the top layer onto a base it
            // had: the image runs, the callers' `cat` checks its files.
            let Some(layers) = inspect["RootFS"]["Layers"].as_array() else {
                eprintln!(
                    "daemon {}: loaded id {id} reports no RootFS (layer blobs not in its content store)",
                    daemon.name
                );
                return;
            };
            let loaded: Vec<String> = layers
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(loaded, diff_ids, "daemon {}: layers changed", daemon.name);
            eprintln!(
                "daemon {}: original id {original_id}, loaded id {id}",
                daemon.name
            );
        }
    }
}

#[test]
fn seed_folder_of_all_layers_loads_back() {
    let Some(daemon) = daemon_or_skip("seed_folder_of_all_layers_loads_back") else {
        return;
    };
    let tag = format!("{}:1", unique_name("dlgrab-test/writer-all"));
    let built = ImageBuilder::new(&tag)
        .busybox()
        .file("/file", b"original content\n".to_vec())
        .env("K", "V")
        .file("/second", b"second\n".to_vec())
        .build(&daemon);
    let work = tempfile::tempdir().unwrap();
    let save_path = save(&daemon, &tag, work.path());
    let image = context(config_from_save(&save_path), &tag);
    if daemon.store == Store::Classic {
        assert_eq!(image.config_digest().to_string(), built.id);
    }
    let root = work.path().join("seed");
    let w = LayerWriter::new(&root, WriterOptions::default());
    let all: Vec<usize> = (0..built.layer_diff_ids.len()).collect();
    let out = runtime()
        .block_on(async {
            let f = tokio::fs::File::open(&save_path).await.unwrap();
            w.write_from_save(&image, &all, f).await
        })
        .unwrap();
    assert_eq!(out.layers.len(), all.len());
    assert!(out.config_json.is_some());

    daemon.remove_image(&tag);
    tar_and_load(&daemon, &root, work.path());
    check_same_image(&daemon, &tag, &built.id, &built.layer_diff_ids);
    assert_eq!(daemon.cat(&tag, "/file"), b"original content\n");
    assert_eq!(daemon.cat(&tag, "/second"), b"second\n");
    daemon.remove_image(&tag);
}

#[test]
fn seed_folder_of_the_top_layer_loads_onto_its_base() {
    let Some(daemon) = daemon_or_skip("seed_folder_of_the_top_layer_loads_onto_its_base") else {
        return;
    };
    let name = unique_name("dlgrab-test/writer-top");
    let base_tag = format!("{name}:base");
    let tag = format!("{name}:top");
    let base = ImageBuilder::new(&base_tag)
        .busybox()
        .file("/file", b"base\n".to_vec());
    base.build(&daemon);
    let built = ImageBuilder::new(&tag)
        .busybox()
        .file("/file", b"base\n".to_vec())
        .file("/top", b"top layer\n".to_vec())
        .build(&daemon);
    let work = tempfile::tempdir().unwrap();
    let save_path = save(&daemon, &tag, work.path());
    let image = context(config_from_save(&save_path), &tag);
    let top = built.layer_diff_ids.len() - 1;
    let root = work.path().join("seed");
    let w = LayerWriter::new(&root, WriterOptions::default());
    let out = runtime()
        .block_on(async {
            let f = tokio::fs::File::open(&save_path).await.unwrap();
            w.write_from_save(&image, &[top], f).await
        })
        .unwrap();
    assert_eq!(out.layers.len(), 1);

    daemon.remove_image(&tag);
    tar_and_load(&daemon, &root, work.path());
    check_same_image(&daemon, &tag, &built.id, &built.layer_diff_ids);
    assert_eq!(daemon.cat(&tag, "/top"), b"top layer\n");
    assert_eq!(daemon.cat(&tag, "/file"), b"base\n");
    daemon.remove_image(&tag);
    daemon.remove_image(&base_tag);
}

#[test]
#[expect(clippy::print_stderr, reason = "a skip prints its reason")]
fn registry_format_serves_to_skopeo() {
    let Some(daemon) = daemon_or_skip("registry_format_serves_to_skopeo") else {
        return;
    };
    if !have_command("skopeo") || !have_registry() {
        eprintln!("SKIP registry_format_serves_to_skopeo: docker-registry or skopeo not installed");
        return;
    }
    let tag = format!("{}:1", unique_name("dlgrab-test/writer-reg"));
    let built = ImageBuilder::new(&tag)
        .busybox()
        .file("/file", b"reg\n".to_vec())
        .build(&daemon);
    let work = tempfile::tempdir().unwrap();
    let save_path = save(&daemon, &tag, work.path());
    let image = context(config_from_save(&save_path), &tag);
    let root = work.path().join("registry");
    let w = LayerWriter::new(
        &root,
        WriterOptions {
            format: Format::Registry,
            replace: false,
        },
    );
    let all: Vec<usize> = (0..built.layer_diff_ids.len()).collect();
    w.write_from_save_blocking(&image, &all, std::fs::File::open(&save_path).unwrap())
        .unwrap();

    let server = Registry::start(work.path(), &root);
    let port = server.port;
    let reference = format!(
        "docker://127.0.0.1:{port}/{}:{}",
        image.repository, image.tag
    );
    let mut result = None;
    for _ in 0..50 {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &reference])
            .output()
            .unwrap();
        if out.status.success() {
            result = Some(out.stdout);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &reference,
            &format!("oci:{}:x", work.path().join("copy").display()),
        ])
        .output()
        .unwrap();
    drop(server);
    let inspect: serde_json::Value =
        serde_json::from_slice(&result.expect("skopeo inspect never succeeded")).unwrap();
    assert_eq!(
        inspect["Layers"].as_array().unwrap().len(),
        built.layer_diff_ids.len()
    );
    assert!(
        copy.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copy.stderr)
    );
    daemon.remove_image(&tag);
}

fn have_command(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn have_registry() -> bool {
    have_command("docker-registry")
}

/// The CNCF distribution registry (Debian's `docker-registry`) serving the
/// filesystem storage under `storage` on 127.0.0.1; stopped on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    /// Starts it (config file in `work`) and waits until `GET /v2/` answers 200.
    fn start(work: &Path, storage: &Path) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = work.join(format!("registry-{port}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry { child, port };
        for _ in 0..100 {
            if registry.get_status("/v2/") == Some(200) {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry on 127.0.0.1:{port} never answered");
    }

    /// The status of a plain HTTP/1.0 `GET path`, if it answers.
    fn get_status(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A blob's file in the registry's filesystem storage.
fn stored_blob(storage: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Pushes `tag` to the registry as `127.0.0.1:<port>/<repo>:push` (tag
/// removed afterwards) and reads back the manifest the daemon put (media
/// type from its `mediaType`, bytes) from the registry's storage.
fn push_and_read_manifest(
    daemon: &Daemon,
    registry: &Registry,
    storage: &Path,
    tag: &str,
) -> (String, Vec<u8>) {
    let repo = unique_name("dlgrab-test/writer-pushed");
    let pushed = format!("127.0.0.1:{}/{repo}:push", registry.port);
    let out = daemon.docker(["tag", tag, &pushed]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = daemon.docker(["push", &pushed]);
    daemon.remove_image(&pushed);
    assert!(
        out.status.success(),
        "daemon {}: docker push failed: {}{}",
        daemon.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let link = storage
        .join("docker/registry/v2/repositories")
        .join(&repo)
        .join("_manifests/tags/push/current/link");
    let digest = std::fs::read_to_string(&link).unwrap();
    let bytes = std::fs::read(stored_blob(storage, digest.trim())).unwrap();
    assert_eq!(sha256_digest(&bytes), digest.trim());
    let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let media_type = m["mediaType"]
        .as_str()
        .expect("manifest mediaType")
        .to_string();
    (media_type, bytes)
}

#[test]
#[expect(
    clippy::print_stderr,
    reason = "a skip prints its reason; tests report the manifest kind"
)]
fn seed_folder_from_a_push_loads_back_with_the_same_id() {
    let name = "seed_folder_from_a_push_loads_back_with_the_same_id";
    let Some(daemon) = daemon_or_skip(name) else {
        return;
    };
    if !have_registry() {
        eprintln!("SKIP {name}: docker-registry not installed");
        return;
    }
    let tag = format!("{}:1", unique_name("dlgrab-test/writer-push"));
    let built = ImageBuilder::new(&tag)
        .busybox()
        .file("/file", b"pushed content\n".to_vec())
        .env("K", "V")
        .file("/second", b"second\n".to_vec())
        .build(&daemon);
    let work = tempfile::tempdir().unwrap();
    let storage = work.path().join("storage");
    let registry = Registry::start(work.path(), &storage);
    let (media_type, manifest) = push_and_read_manifest(&daemon, &registry, &storage, &tag);
    drop(registry);
    eprintln!(
        "daemon {} ({:?}) pushed a {media_type} manifest",
        daemon.name, daemon.store
    );
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = std::fs::read(stored_blob(&storage, config_digest)).unwrap();

    // The image ID: the config digest on classic stores, the manifest
    // digest on the containerd store (the manifest is pushed as stored).
    let expected_id = match daemon.store {
        Store::Classic => config_digest.to_string(),
        Store::Containerd => sha256_digest(&manifest),
    };
    assert_eq!(built.id, expected_id, "daemon {}: image ID", daemon.name);

    let mut image = context(config, &tag);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), built.layer_diff_ids.len());
    for (i, l) in layers.iter().enumerate() {
        image.compressed[i] = Some(BlobRef {
            digest: l["digest"].as_str().unwrap().parse().unwrap(),
            size: l["size"].as_u64().unwrap(),
            media_type: l["mediaType"].as_str().unwrap().to_string(),
        });
    }
    image.manifest = Some((media_type.clone(), manifest.clone()));

    let root = work.path().join("seed");
    let w = LayerWriter::new(&root, WriterOptions::default());
    runtime().block_on(async {
        for (i, l) in layers.iter().enumerate() {
            let blob = stored_blob(&storage, l["digest"].as_str().unwrap());
            let f = tokio::fs::File::open(&blob).await.unwrap();
            let written = w.write_layer(&image, i, f).await.unwrap();
            assert_eq!(written.diff_id.to_string(), built.layer_diff_ids[i]);
        }
    });
    // The folder names the pushed manifest and holds the blobs as pushed.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], sha256_digest(&manifest));
    assert_eq!(index["manifests"][0]["mediaType"], media_type.as_str());
    for l in layers {
        let d = l["digest"].as_str().unwrap();
        let kept = std::fs::read(
            root.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(kept, std::fs::read(stored_blob(&storage, d)).unwrap());
    }

    daemon.remove_image(&tag);
    assert!(
        daemon.try_inspect(&built.id).is_err(),
        "daemon {}: the image is still there after rmi",
        daemon.name
    );
    tar_and_load(&daemon, &root, work.path());
    let by_id = daemon.inspect(&built.id);
    assert_eq!(by_id["Id"], built.id.as_str());
    assert_eq!(
        daemon.inspect(&tag)["Id"],
        built.id.as_str(),
        "daemon {}: the tag names another image",
        daemon.name
    );
    assert_eq!(daemon.diff_ids(&tag), built.layer_diff_ids);
    assert_eq!(daemon.cat(&built.id, "/file"), b"pushed content\n");
    assert_eq!(daemon.cat(&tag, "/second"), b"second\n");
    daemon.remove_image(&tag);
}
