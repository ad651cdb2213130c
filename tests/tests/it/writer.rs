//! Daemon tests for the writer: folders written from `docker save` streams
//! load back with `docker load`, and the registry format serves to skopeo.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use layer_writer::{Format, ImageContext, LayerWriter, WriterOptions};
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

fn cat(daemon: &Daemon, image: &str, path: &str) -> Vec<u8> {
    let out = daemon.docker([
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "/bin/busybox",
        "cat",
        path,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The image ID a load must give back: the config digest on classic
/// stores; on the containerd store the ID is the manifest digest, so the
/// config digest is compared through `docker image inspect` there too.
#[track_caller]
#[expect(clippy::print_stderr, reason = "tests report what the containerd store did")]
fn check_same_image(daemon: &Daemon, tag: &str, original_id: &str, diff_ids: &[String]) {
    let inspect = daemon.inspect(tag);
    let id = inspect["Id"].as_str().unwrap_or_default();
    match daemon.store {
        Store::Classic => assert_eq!(id, original_id, "daemon {}: image ID changed", daemon.name),
        _ => {
            let loaded: Vec<String> = inspect["RootFS"]["Layers"]
                .as_array()
                .unwrap()
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
    assert_eq!(cat(&daemon, &tag, "/file"), b"original content\n");
    assert_eq!(cat(&daemon, &tag, "/second"), b"second\n");
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
    assert_eq!(cat(&daemon, &tag, "/top"), b"top layer\n");
    assert_eq!(cat(&daemon, &tag, "/file"), b"base\n");
    daemon.remove_image(&tag);
    daemon.remove_image(&base_tag);
}

#[test]
#[expect(clippy::print_stderr, reason = "a skip prints its reason")]
fn registry_format_serves_to_skopeo() {
    let Some(daemon) = daemon_or_skip("registry_format_serves_to_skopeo") else {
        return;
    };
    let have = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("docker-registry") || !have("skopeo") {
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

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = work.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        ),
    )
    .unwrap();
    let mut server = Command::new("docker-registry")
        .args(["serve", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
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
    let _ = server.kill();
    let _ = server.wait();
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
