//! Tests of the test kit itself on the daemon under test: every builder
//! feature makes the layers and history rows it promises.

use testkit::{Engine, ImageBuilder, Store, daemon_or_skip, random_bytes, unique_name};

fn tag(test: &str) -> String {
    format!("{}:1", unique_name(&format!("dlgrab-test/kit-{test}")))
}

#[test]
fn daemon_reports_its_store() {
    let Some(daemon) = daemon_or_skip("kit::daemon_reports_its_store") else {
        return;
    };
    assert!(!daemon.version.is_empty());
    // The matrix of `cargo xtask test`: c is the containerd store, a and b classic.
    match daemon.name.as_str() {
        "c" => assert_eq!(daemon.store, Store::Containerd),
        "a" | "b" => assert_eq!(daemon.store, Store::Classic),
        _ => {}
    }
}

#[test]
fn every_feature_makes_its_layers_and_rows() {
    let Some(daemon) = daemon_or_skip("kit::every_feature_makes_its_layers_and_rows") else {
        return;
    };
    let builder = ImageBuilder::new(&tag("all"))
        .busybox()
        .file("/etc/motd", "hello\n")
        .random_file("/data/big", 300_000, 7)
        .run("echo hi > /x")
        .env("K", "V $x")
        .label("org.example.k", "v")
        .delete("/etc/motd")
        .symlink("/l", "/x")
        .hardlink("/h", "/x")
        .run("mkdir -p /d && echo 1 > /d/one")
        .opaque_dir("/d");
    let image = builder.build(&daemon);

    assert_eq!(image.layer_diff_ids.len(), 9);
    assert_eq!(image.history.len(), 11);
    assert_eq!(image.history_ids.len(), 9);
    assert_eq!(image.layer_diff_ids, daemon.diff_ids(&image.tag));
    assert!(image.id.starts_with("sha256:"));
    let empty: Vec<usize> = image
        .history
        .iter()
        .enumerate()
        .filter(|(_, r)| r.layer.is_none())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(empty, [4, 5], "ENV and LABEL rows make no layer");
    // The top row is the image itself.
    assert_eq!(
        image.history.last().unwrap().id.as_deref(),
        Some(image.id.as_str())
    );

    // Each history ID with a layer names an image whose top layer is that layer.
    for (k, id) in image.history_ids.iter().enumerate() {
        if let Some(id) = id {
            let diff_ids = daemon.diff_ids(id);
            assert_eq!(
                diff_ids,
                image.layer_diff_ids[..=k],
                "history row of layer {k}"
            );
        }
    }
    // Podman's builder keeps an image for some steps only.
    if daemon.store == Store::Classic && daemon.engine == Engine::Docker {
        assert!(
            image.history_ids.iter().all(Option::is_some),
            "the classic builder commits an image per step: {:?}",
            image.history_ids
        );
    }

    let config = daemon.inspect(&image.tag);
    let env = config["Config"]["Env"].to_string();
    assert!(env.contains("K=V $x"), "{env}");
    assert_eq!(config["Config"]["Labels"]["org.example.k"], "v");

    assert_eq!(
        daemon.cat(&image.tag, "/data/big"),
        random_bytes(300_000, 7)
    );
    assert_eq!(daemon.cat(&image.tag, "/l"), b"hi\n");
    assert_eq!(daemon.cat(&image.tag, "/h"), b"hi\n");
    let gone = daemon.run(&image.tag, &["/bin/busybox", "ls", "/etc/motd"]);
    assert!(!gone.status.success(), "/etc/motd was deleted: {gone:?}");
    let d = daemon.run(&image.tag, &["/bin/busybox", "ls", "-A", "/d"]);
    assert!(d.status.success() && d.stdout.is_empty(), "/d is empty");

    image.remove(&daemon);
}

#[test]
fn copy_layers_are_reproducible() {
    let Some(daemon) = daemon_or_skip("kit::copy_layers_are_reproducible") else {
        return;
    };
    let build = |t: &str| {
        ImageBuilder::new(&tag(t))
            .file("/a", "same bytes")
            .random_file("/r", 50_000, 3)
            .no_cache()
            .build(&daemon)
    };
    let one = build("rep1");
    let two = build("rep2");
    assert_eq!(one.layer_diff_ids, two.layer_diff_ids);
    one.remove(&daemon);
    two.remove(&daemon);
}

#[test]
fn image_lists_see_a_new_tag() {
    let Some(daemon) = daemon_or_skip("kit::image_lists_see_a_new_tag") else {
        return;
    };
    let image = ImageBuilder::new(&tag("list"))
        .file("/f", "list")
        .build(&daemon);
    assert!(daemon.image_ids().contains(&image.id));
    let row = format!("{} {}", image.tag, image.id);
    assert!(
        daemon.image_refs().contains(&row),
        "{row} in {:?}",
        daemon.image_refs()
    );
    image.remove(&daemon);
    assert!(!daemon.image_refs().contains(&row));
}
