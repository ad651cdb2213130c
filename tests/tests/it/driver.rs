//! `docker_driver::BollardDriver` against the daemon under test.

use std::time::Duration;

use bytes::Bytes;
use docker_driver::{BollardDriver, DockerDriver, DriverError, ImageStore, LayerSelector};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use testkit::{BuiltImage, Daemon, Engine, ImageBuilder, Store, daemon_or_skip, unique_name};

/// The driver test image: busybox, a file, ENV, RUN, LABEL; built by each
/// test under a name of its own, so that the test's scope removes it when
/// the test ends (the daemon is left as found).
fn image(daemon: &Daemon) -> BuiltImage {
    ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-test/driver")))
        .busybox()
        .file("/a", b"hello".to_vec())
        .env("K", "V")
        .run("echo hi > /x")
        .label("k", "v")
        .random_file("/big", 64 << 10, 7)
        .build(daemon)
}

async fn driver(daemon: &Daemon) -> BollardDriver {
    BollardDriver::connect_with(&daemon.host).await.unwrap()
}

#[tokio::test]
async fn info_names_version_and_store() {
    let Some(daemon) = daemon_or_skip("info_names_version_and_store") else {
        return;
    };
    let info = driver(&daemon).await.info().await.unwrap();
    assert_eq!(info.podman, daemon.engine == Engine::Podman, "{info:?}");
    assert_eq!(info.server_version, daemon.version);
    let store = match info.image_store {
        ImageStore::Classic { driver } => {
            assert_eq!(driver, daemon.driver);
            Store::Classic
        }
        ImageStore::Containerd => Store::Containerd,
    };
    assert_eq!(store, daemon.store);
    assert_eq!(info.os, "linux");
    assert!(info.api_version.starts_with("1."), "{}", info.api_version);
}

#[tokio::test]
async fn history_maps_rows_to_layers() {
    let Some(daemon) = daemon_or_skip("history_maps_rows_to_layers") else {
        return;
    };
    let built = image(&daemon);
    let driver = driver(&daemon).await;
    let details = driver.inspect_image(&built.tag).await.unwrap();
    assert_eq!(details.id, built.id);
    assert_eq!(details.diff_ids, built.layer_diff_ids);
    let rows: Vec<_> = details
        .history
        .iter()
        .map(|r| (r.id.clone(), r.layer_index))
        .collect();
    let expected: Vec<_> = built
        .history
        .iter()
        .map(|r| (r.id.clone(), r.layer))
        .collect();
    assert_eq!(rows, expected);
    // Each row's image (the classic builder's intermediate images) has the
    // diff IDs up to that row.
    let mut layers_so_far = 0;
    for row in &details.history {
        if let Some(index) = row.layer_index {
            layers_so_far = index + 1;
        }
        if let Some(id) = &row.id {
            let intermediate = driver.inspect_image(id).await.unwrap();
            assert_eq!(
                intermediate.diff_ids,
                details.diff_ids[..layers_so_far],
                "row {id} ({})",
                row.created_by
            );
        }
    }
}

#[tokio::test]
async fn resolves_tags_ids_and_diff_ids() {
    let Some(daemon) = daemon_or_skip("resolves_tags_ids_and_diff_ids") else {
        return;
    };
    let built = image(&daemon);
    let driver = driver(&daemon).await;
    let top = built.layer_diff_ids.len() - 1;

    let r = driver
        .resolve(&built.tag, LayerSelector::Top)
        .await
        .unwrap();
    assert_eq!(
        (r.image.id.as_str(), r.layer_index),
        (built.id.as_str(), top)
    );
    assert_eq!(r.requested_id, None);
    let r = driver
        .resolve(&built.tag, LayerSelector::Index(1))
        .await
        .unwrap();
    assert_eq!(r.diff_id(), built.layer_diff_ids[1]);

    let short = &built.id["sha256:".len().."sha256:".len() + 12];
    for what in [built.id.as_str(), &built.id["sha256:".len()..], short] {
        let r = driver.resolve(what, LayerSelector::Top).await.unwrap();
        assert_eq!(r.image.id, built.id, "{what}");
        assert_eq!(r.requested_id.as_deref(), Some(built.id.as_str()), "{what}");
        assert_eq!(r.layer_index, top, "{what}");
    }

    // An intermediate image from `docker history` (classic builder).
    if let Some(Some(intermediate)) = built.history_ids.get(1) {
        let r = driver
            .resolve(intermediate, LayerSelector::Top)
            .await
            .unwrap();
        assert_eq!(&r.image.id, intermediate);
        assert_eq!(r.layer_index, 1);
        assert_eq!(r.diff_id(), built.layer_diff_ids[1]);
    }

    // A diff ID.
    let r = driver
        .resolve(&built.layer_diff_ids[1], LayerSelector::Top)
        .await
        .unwrap();
    assert_eq!(r.diff_id(), built.layer_diff_ids[1]);
    assert_eq!(r.requested_id, None);

    let err = driver
        .resolve(&built.tag, LayerSelector::Index(99))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DriverError::NoLayerAtIndex { index: 99, count, .. } if count == built.layer_diff_ids.len()),
        "{err:?}"
    );
    let err = driver
        .resolve("dlgrab-test/no-such-image:1", LayerSelector::Top)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NoSuchImage { .. }), "{err:?}");
}

#[tokio::test]
async fn tag_then_untag_leaves_the_images_as_they_were() {
    let Some(daemon) = daemon_or_skip("tag_then_untag_leaves_the_images_as_they_were") else {
        return;
    };
    let built = image(&daemon);
    let driver = driver(&daemon).await;
    let repo = format!("127.0.0.1:5000/{}", unique_name("dlgrab-test/tag"));
    let ids = daemon.image_ids();
    let before = daemon.inspect(&built.id);
    driver.tag(&built.id, &repo, "t").await.unwrap();
    let tagged = driver.inspect_image(&built.id).await.unwrap();
    assert!(tagged.repo_tags.contains(&format!("{repo}:t")));
    driver.untag(&format!("{repo}:t")).await.unwrap();
    assert_eq!(daemon.image_ids(), ids);
    let after = daemon.inspect(&built.id);
    assert_eq!(after["RepoTags"], before["RepoTags"]);
    assert_eq!(after["RepoDigests"], before["RepoDigests"]);
}

#[tokio::test]
async fn untag_refuses_to_delete_an_image() {
    let Some(daemon) = daemon_or_skip("untag_refuses_to_delete_an_image") else {
        return;
    };
    let tag = format!("{}:1", unique_name("dlgrab-test/only-tag"));
    let built = ImageBuilder::new(&tag)
        // Unique content: an image left tagged by an earlier run must not
        // be reused from the build cache with a second tag on it.
        .file("/only", tag.as_bytes().to_vec())
        .build(&daemon);
    let driver = driver(&daemon).await;
    let ids = daemon.image_ids();
    let err = driver.untag(&tag).await.unwrap_err();
    assert!(
        matches!(&err, DriverError::UntagWouldDelete { reference } if *reference == tag),
        "{err:?}"
    );
    assert_eq!(daemon.image_ids(), ids);
    assert_eq!(daemon.inspect(&tag)["Id"], built.id.as_str());
    driver.remove_image(&tag).await.unwrap();
}

#[tokio::test]
async fn push_to_a_closed_port_fails() {
    let Some(daemon) = daemon_or_skip("push_to_a_closed_port_fails") else {
        return;
    };
    let built = image(&daemon);
    let driver = driver(&daemon).await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let repo = format!("127.0.0.1:{port}/{}", unique_name("dlgrab-test/push"));
    driver.tag(&built.id, &repo, "t").await.unwrap();
    let events = tokio::time::timeout(
        Duration::from_secs(120),
        driver.push(&repo, "t", None).collect::<Vec<_>>(),
    )
    .await;
    driver.untag(&format!("{repo}:t")).await.unwrap();
    let events = events.expect("the push did not end within 2 minutes");
    match events.last() {
        Some(Err(DriverError::PushRefused { message, .. })) => {
            assert!(!message.is_empty());
        }
        other => panic!("{other:?} in {events:?}"),
    }
}

#[tokio::test]
async fn save_then_load() {
    let Some(daemon) = daemon_or_skip("save_then_load") else {
        return;
    };
    let built = image(&daemon);
    let driver = driver(&daemon).await;
    let archive: Vec<Bytes> = driver
        .export_images(std::slice::from_ref(&built.tag))
        .try_collect()
        .await
        .unwrap();
    assert!(archive.iter().map(Bytes::len).sum::<usize>() > 64 << 10);
    let loaded = driver
        .load(futures::stream::iter(archive).boxed())
        .await
        .unwrap();
    assert!(
        loaded
            .iter()
            .any(|l| l.contains(&built.tag) || l.contains(&built.id)),
        "{loaded:?}"
    );
}

#[tokio::test]
async fn image_config_is_the_stored_config() {
    let Some(daemon) = daemon_or_skip("image_config_is_the_stored_config") else {
        return;
    };
    let built = image(&daemon);
    let driver = driver(&daemon).await;
    let config = driver.image_config(&built.tag).await.unwrap().bytes;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    if daemon.store == Store::Classic {
        assert_eq!(digest, built.id);
    }
    let json: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        json["rootfs"]["diff_ids"],
        serde_json::json!(built.layer_diff_ids)
    );
}
