//! `shim-registry`'s seeding with the daemon's own `docker save` archive
//! (legacy on Docker 20.10 and Podman, an OCI layout from Docker 25 on): the
//! registry is seeded from the archive, and the daemon pulls the image back
//! under the registry's name with the same image ID and diff IDs.

use std::process::Output;
use std::sync::Arc;

use shim_registry::Registry;
use shim_registry::seed::{self, ImportOptions};
use shim_registry::storage::MemoryStorage;
use testkit::{ImageBuilder, daemon_or_skip, unique_name};

async fn blocking(f: impl FnOnce() -> Output + Send + 'static) -> Output {
    tokio::task::spawn_blocking(f).await.expect("command task")
}

#[track_caller]
fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_save_seeded_and_pulled_back() {
    let Some(daemon) = daemon_or_skip("shim_seed::docker_save_seeded_and_pulled_back") else {
        return;
    };
    let image = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-test/shim-seed")))
        .random_file("/data/random", 200_000, 11)
        .file("/data/hello", "seeded from docker save\n")
        .build(&daemon);
    let work = tempfile::tempdir().expect("temp dir");
    let archive = work.path().join("save.tar");
    let d = daemon.clone();
    let (tag, path) = (image.tag.clone(), archive.clone());
    let saved = blocking(move || {
        d.docker([
            "save",
            "-o",
            path.to_str().expect("utf-8 path"),
            tag.as_str(),
        ])
    })
    .await;
    assert_success("docker save", &saved);

    let storage = Arc::new(MemoryStorage::new());
    let repository = unique_name("dlgrab-test/seeded");
    let options = ImportOptions::default().repository(repository.clone());
    let report = seed::import(&*storage, &archive, &options)
        .await
        .unwrap_or_else(|e| panic!("daemon {}: seeding its docker save: {e}", daemon.name));
    assert_eq!(report.images.len(), 1, "{report:?}");
    assert_eq!(report.images[0].tags, ["1"], "{report:?}");
    assert!(report.missing.is_empty(), "{report:?}");

    let handle = Registry::builder()
        .storage(storage)
        .build()
        .expect("registry builds")
        .spawn("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("registry spawns");
    let target = format!("127.0.0.1:{}/{repository}:1", handle.addr().port());
    daemon.remove_when_done(&target);
    let d = daemon.clone();
    let t = target.clone();
    let pulled = blocking(move || d.docker(["pull", t.as_str()])).await;
    assert_success("docker pull of the seeded image", &pulled);
    let original = daemon.inspect(&image.tag)["Id"].clone();
    assert_eq!(
        daemon.inspect(&target)["Id"],
        original,
        "daemon {}: the pulled image is the saved one",
        daemon.name
    );
    assert_eq!(daemon.diff_ids(&target), image.layer_diff_ids);
    handle.shutdown().await;
}
