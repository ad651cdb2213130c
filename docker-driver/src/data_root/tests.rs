use serde_json::json;

use super::*;
use crate::layer_store::tests::{FakeRoot, Item};

/// A data root with `base` (one layer) and `app` (two, parent `base`,
/// with an ENV row between), named as `docker images` would show them.
struct Fixture {
    root: FakeRoot,
    base: String,
    app: String,
    diff_ids: Vec<String>,
    tars: Vec<Vec<u8>>,
}

fn fixture(driver: &'static str) -> Fixture {
    let root = FakeRoot::new(driver);
    let (t0, d0) = root.add_layer(&[], &[Item::File(b"bin/sh", b"sh")]);
    let (t1, d1) = root.add_layer(std::slice::from_ref(&d0), &[Item::File(b"app/run", b"run")]);
    let row = |by: &str, empty: bool| json!({"created": "2024-01-02T03:04:05.123Z", "created_by": by, "empty_layer": empty});
    let base = root.add_image(
        &json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d0]},
            "history": [row("ADD sh /bin", false)]}),
        None,
    );
    let app = root.add_image(
        &json!({"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
            "rootfs": {"type": "layers", "diff_ids": [d0, d1]},
            "history": [row("ADD sh /bin", false), row("ENV A=1", true), row("COPY run /app", false)]}),
        Some(&base),
    );
    let repos = json!({"Repositories": {
        "demo": {"demo:1": app, "demo@sha256:0123": app},
        "registry.example/base": {"registry.example/base:latest": base},
    }});
    std::fs::write(
        root.image_dir().join("repositories.json"),
        serde_json::to_vec(&repos).unwrap(),
    )
    .unwrap();
    Fixture {
        root,
        base,
        app,
        diff_ids: vec![d0, d1],
        tars: vec![t0, t1],
    }
}

#[tokio::test]
async fn info_names_the_store_and_root() {
    let f = fixture("vfs");
    let driver = DataRootDriver::open(f.root.dir.path()).unwrap();
    let info = driver.info().await.unwrap();
    assert_eq!(
        info.image_store,
        ImageStore::Classic {
            driver: "vfs".into()
        }
    );
    assert_eq!(info.root_dir.as_deref(), Some(f.root.dir.path()));
}

#[track_caller]
fn short(id: &str) -> &str {
    &id["sha256:".len().."sha256:".len() + 12]
}

#[tokio::test]
async fn resolves_names_ids_history_ids_and_diff_ids() {
    let f = fixture("overlay2");
    let driver = DataRootDriver::open(f.root.dir.path()).unwrap();
    let check = |what: String, selector: LayerSelector, image: &str, index, by_id| {
        let driver = driver.clone();
        let image = image.to_owned();
        async move {
            let r = driver.resolve(&what, selector).await.unwrap();
            assert_eq!(r.image.id, image, "{what}");
            assert_eq!(r.layer_index, index, "{what}");
            assert_eq!(r.requested_id.is_some(), by_id, "{what}");
        }
    };
    check("demo:1".into(), LayerSelector::Top, &f.app, 1, false).await;
    check(
        "docker.io/library/demo:1".into(),
        LayerSelector::Top,
        &f.app,
        1,
        false,
    )
    .await;
    check("demo:1".into(), LayerSelector::Index(0), &f.app, 0, false).await;
    check(
        "registry.example/base".into(),
        LayerSelector::Top,
        &f.base,
        0,
        false,
    )
    .await;
    check(f.app.clone(), LayerSelector::Top, &f.app, 1, true).await;
    check(short(&f.app).into(), LayerSelector::Top, &f.app, 1, true).await;
    // The history ID of the base row is the parent image's.
    check(short(&f.base).into(), LayerSelector::Top, &f.base, 0, true).await;
    // A diff ID: the tagged image with the fewest layers holding it.
    check(f.diff_ids[0].clone(), LayerSelector::Top, &f.base, 0, false).await;
    check(f.diff_ids[1].clone(), LayerSelector::Top, &f.app, 1, false).await;
    assert!(matches!(
        driver.resolve("nope:1", LayerSelector::Top).await,
        Err(DriverError::NoSuchImage { .. })
    ));
    assert!(matches!(
        driver.resolve("demo:1", LayerSelector::Index(5)).await,
        Err(DriverError::NoLayerAtIndex { index: 5, .. })
    ));
}

#[tokio::test]
async fn details_match_inspect_and_history() {
    let f = fixture("fuse-overlayfs");
    let driver = DataRootDriver::open(f.root.dir.path()).unwrap();
    let app = driver.inspect_image("demo:1").await.unwrap();
    assert_eq!(app.repo_tags, ["demo:1"]);
    assert_eq!(app.repo_digests, ["demo@sha256:0123"]);
    assert_eq!(app.parent.as_deref(), Some(f.base.as_str()));
    assert_eq!(app.diff_ids, f.diff_ids);
    let rows: Vec<_> = app
        .history
        .iter()
        .map(|r| (r.id.clone(), r.layer_index, r.size))
        .collect();
    assert_eq!(
        rows,
        [
            (None, Some(0), 42),
            (Some(f.base.clone()), None, 0),
            (Some(f.app.clone()), Some(1), 42),
        ]
    );
    assert_eq!(app.history[0].created, Some(1_704_164_645));
    let list = driver.list_images().await.unwrap();
    assert_eq!(list.len(), 2);
    let listed_app = list.iter().find(|i| i.id == f.app).unwrap();
    assert_eq!(listed_app.parent_id.as_deref(), Some(f.base.as_str()));
    assert_eq!(
        driver.image_config(&f.app).await.unwrap().bytes,
        driver.store().image_config(&f.app).unwrap()
    );
}

#[tokio::test]
async fn layers_come_from_the_store_and_the_daemon_calls_refuse() {
    let f = fixture("overlay2");
    let driver = DataRootDriver::open(f.root.dir.path()).unwrap();
    use std::io::Read;
    for (index, tar) in f.tars.iter().enumerate() {
        let mut out = Vec::new();
        driver
            .store()
            .layer_tar(&f.diff_ids[..=index])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(&out, tar);
    }
    assert!(matches!(
        driver.tag(&f.app, "x", "y").await,
        Err(DriverError::NoDaemon { .. })
    ));
    use futures::StreamExt;
    let first = driver.push("x", "y", None).next().await.unwrap();
    assert!(matches!(first, Err(DriverError::NoDaemon { .. })));
}

#[test]
fn rfc3339_times() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        unix_seconds("2024-01-02T03:04:05.999999999Z"),
        Some(1_704_164_645)
    );
    assert_eq!(
        unix_seconds("2024-01-02T04:04:05+01:00"),
        Some(1_704_164_645)
    );
    assert_eq!(unix_seconds("2000-03-01T00:00:00Z"), Some(951_868_800));
    assert_eq!(unix_seconds("garbage"), None);
}

#[tokio::test]
async fn data_root_failures_reach_driver_calls_as_they_are() {
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        DataRootDriver::open(empty.path()),
        Err(DataRootError::Read { .. })
    ));
    let f = fixture("overlay2");
    let driver = DataRootDriver::open(f.root.dir.path()).unwrap();
    // A config that no longer hashes to its image ID.
    let hex = &f.base["sha256:".len()..];
    std::fs::write(
        f.root.image_dir().join("imagedb/content/sha256").join(hex),
        b"{}",
    )
    .unwrap();
    let err = driver.image_config(&f.base).await.unwrap_err();
    assert!(
        matches!(
            &err,
            DriverError::DataRoot(DataRootError::ConfigMismatch { image, .. }) if *image == f.base
        ),
        "{err:?}"
    );
    // Transparent: the data root's own message and cause.
    let repositories = f.root.image_dir().join("repositories.json");
    std::fs::write(&repositories, b"not json").unwrap();
    let err = driver.inspect_image("demo:1").await.unwrap_err();
    let DriverError::DataRoot(inner @ DataRootError::Format { .. }) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(err.to_string(), inner.to_string());
    assert!(
        err.to_string()
            .contains(&repositories.display().to_string()),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}
