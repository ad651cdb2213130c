//! The archive route: a `docker` group member (who cannot read the data
//! root) and a daemon reached over TCP get any layer through the Engine
//! API on every engine of the matrix (dockerd's classic and containerd
//! stores, Podman's containers/storage), the container it reads through
//! gone afterwards; a dead run's container is swept by the next run.

use std::process::Output;

use sha2::{Digest as _, Sha256};
use testkit::{
    BuiltImage, Daemon, DockerMember, Engine, ImageBuilder, daemon_or_skip, succeeded, unique_name,
};

/// Says on stderr why a test did not run.
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

/// The member, or why not (a failure under `DLGRAB_REQUIRE_DAEMON=1`).
fn member_or_skip(test: &str) -> Option<DockerMember> {
    match DockerMember::try_get() {
        Ok(member) => Some(member),
        Err(why) => {
            assert!(
                std::env::var(testkit::ENV_REQUIRE_DAEMON).as_deref() != Ok("1"),
                "{test}: no docker group member: {why}"
            );
            skip(test, &why);
            None
        }
    }
}

/// A three-layer image: 3 MiB of random bytes, many small files, a top.
fn image(d: &Daemon, seed: u64) -> BuiltImage {
    let mut builder = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/archive")))
        .random_file("/base.bin", 3 << 20, seed);
    for i in 0..3 {
        builder = builder.file(&format!("/many/f{i}.txt"), format!("file {i} {seed}\n"));
    }
    builder.file("/top.txt", format!("top {seed}\n")).build(d)
}

/// The one layer of a `--json` run: its route, its `layer.tar` checked
/// against `diff_id`.
#[track_caller]
fn exported_route(out: &Output, diff_id: &str) -> String {
    let stdout = succeeded(out);
    let layer = testkit::items(&stdout)[0].clone();
    assert_eq!(layer["diff_id"], diff_id, "{layer}");
    let data = std::fs::read(testkit::exported_file(&layer, "/layer.tar")).expect("layer.tar");
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&data))),
        diff_id,
        "the written layer.tar is the layer"
    );
    layer["route"].as_str().unwrap_or_default().to_owned()
}

/// dlgrab's containers on the daemon (by their label).
fn dlgrab_containers(d: &Daemon) -> Vec<String> {
    d.docker_stdout([
        "ps",
        "-a",
        "--filter",
        "label=dlgrab.run",
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// As a member of the `docker` group, auto takes the archive route for the
/// base, a middle and the top layer on every engine, each verified, and no
/// container is left. On a rootless daemon (the member's own, its store
/// the member's files) auto takes the store route instead, and `--via
/// archive` gives each layer too.
#[test]
fn a_docker_group_member_gets_every_layer_by_the_archive_route() {
    let test = "a_docker_group_member_gets_every_layer_by_the_archive_route";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(member) = member_or_skip(test) else {
        return;
    };
    let img = image(&d, 251);
    let before = dlgrab_containers(&d);
    let (auto, runs): (_, &[&[&str]]) = if d.rootless {
        ("store", &[&[], &["--via", "archive"]])
    } else {
        ("archive", &[&[]])
    };
    for (index, diff_id) in img.layer_diff_ids.iter().enumerate() {
        for extra in runs {
            let out = member.scratch_dir();
            let index_arg = index.to_string();
            let mut args = vec![
                img.tag.as_str(),
                "--index",
                &index_arg,
                "--json",
                "-q",
                "-o",
                out.path().to_str().expect("utf-8"),
            ];
            args.extend_from_slice(extra);
            let run = member
                .dlgrab_command(&d, &args)
                .output()
                .expect("dlgrab runs");
            let route = exported_route(&run, diff_id);
            let want = if extra.is_empty() { auto } else { "archive" };
            assert_eq!(route, want, "layer {index} on {} {extra:?}", d.name);
        }
    }
    assert_eq!(dlgrab_containers(&d), before, "a container was left");
}

/// Over `tcp://` (a daemon dlgrab takes for another machine's), auto
/// reads the top layer through the archive API on a classic store.
#[test]
fn a_daemon_over_tcp_gives_its_top_layer_by_the_archive_route() {
    let test = "a_daemon_over_tcp_gives_its_top_layer_by_the_archive_route";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(tcp) = d.over_tcp() else {
        skip(test, &format!("daemon {} has no tcp host", d.name));
        return;
    };
    let img = image(&tcp, 252);
    let out = tempfile::tempdir().expect("tempdir");
    let run = tcp.dlgrab(&[
        &img.tag,
        "--json",
        "-q",
        "-o",
        out.path().to_str().expect("utf-8"),
    ]);
    let top = img.layer_diff_ids.last().expect("a layer");
    assert_eq!(exported_route(&run, top), "archive");
    assert!(dlgrab_containers(&d).is_empty(), "a container was left");
}

/// A container named by a run that is dead (killed before removing it) is
/// removed by the next run's sweep (`--clean`); the user's containers stay.
#[test]
fn a_dead_runs_container_is_swept_by_the_next_run() {
    let test = "a_dead_runs_container_is_swept_by_the_next_run";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let img = image(&d, 253);
    // A real run's container name, read from its log: that run has ended,
    // so the same name now carries a dead run's identity.
    let out = tempfile::tempdir().expect("tempdir");
    let run = d.dlgrab(&[
        &img.tag,
        "--via",
        "archive",
        "--debug",
        "-o",
        out.path().to_str().expect("utf-8"),
    ]);
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{log}");
    let name = log
        .split(|c: char| c.is_whitespace() || c == '"' || c == '=')
        .find(|w| w.starts_with("dlgrab-run-"))
        .unwrap_or_else(|| panic!("no container name in the log:\n{log}"))
        .to_owned();
    assert!(
        dlgrab_containers(&d).is_empty(),
        "the run left its container"
    );
    let create = |name: &str, label: &str| {
        let out = d.docker([
            "create",
            "--name",
            name,
            "--label",
            label,
            "--network",
            "none",
            &img.tag,
            "/never",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    create(&name, "dlgrab.run=dead");
    let users = unique_name("users-container").replace(['/', ':'], "-");
    create(&users, "owner=user");
    let _remove = RemoveOnDrop(&d, vec![name.clone(), users.clone()]);
    let clean = d.dlgrab(&["--clean", "--json"]);
    let swept = testkit::items(&succeeded(&clean));
    assert!(
        swept.iter().any(|i| i["what"] == "container"
            && i["action"] == "removed"
            && i["name"] == name.as_str()),
        "{name} not swept: {swept:#?}"
    );
    let left = d.docker_stdout(["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!left.lines().any(|n| n == name), "{left}");
    assert!(
        left.lines().any(|n| n == users),
        "the user's container went"
    );
}

/// Removes containers when the test ends, also on panic.
struct RemoveOnDrop<'a>(&'a Daemon, Vec<String>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = self.0.docker(["rm", "-f", name.as_str()]);
        }
    }
}

/// A `docker` group member's `--via push` of a never-pushed image on a
/// classic dockerd: the image config is read through a reader container
/// (the layer store is not readable to the member), so the push is dropped
/// as soon as the top layer is in (capture and cancel), no container and
/// no temporary tag left.
#[test]
fn a_docker_group_member_captures_and_cancels_a_push() {
    let test = "a_docker_group_member_captures_and_cancels_a_push";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    if d.engine != Engine::Docker || d.store != testkit::Store::Classic {
        skip(test, &format!("daemon {} is not a classic dockerd", d.name));
        return;
    }
    let Some(member) = member_or_skip(test) else {
        return;
    };
    let seed = crate::routes::fresh_seed(257);
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/member-push")))
        .random_file("/base.bin", 4 << 20, seed)
        .file("/top.txt", format!("top {seed}\n"))
        .build(&d);
    let before = dlgrab_containers(&d);
    let out = member.scratch_dir();
    let run = member
        .dlgrab_command(
            &d,
            &[
                &img.tag,
                "--via",
                "push",
                "--json",
                "--debug",
                "-o",
                out.path().to_str().expect("utf-8"),
            ],
        )
        .output()
        .expect("dlgrab runs");
    let top = img.layer_diff_ids.last().expect("a top layer");
    assert_eq!(exported_route(&run, top), "push");
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(
        log.contains("every wanted layer is in: the push is dropped"),
        "the push was not cancelled:\n{log}"
    );
    assert_eq!(dlgrab_containers(&d), before, "a container was left");
    let tags = crate::routes::temporary_tags(&d);
    assert!(tags.is_empty(), "{tags:?}");
}

/// A daemon whose authorization plugin refuses bind mounts (dockerd's
/// answer for such a plugin, given by testkit's `AuthzProxy` in front of
/// the daemon under test): a `docker` group member's export gives way from
/// the archive route to the next, saying why in `--json`; `--via archive`
/// fails with the plugin's words; no container is left. (On a rootless
/// daemon auto takes the member's own store first, archive never tried.)
#[test]
fn a_refused_reader_container_gives_way_with_the_reason() {
    let test = "a_refused_reader_container_gives_way_with_the_reason";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(member) = member_or_skip(test) else {
        return;
    };
    if !d.host.starts_with("unix://") {
        skip(test, &format!("daemon {} is not on a unix socket", d.name));
        return;
    }
    let proxy = testkit::AuthzProxy::start(&d.host).expect("the authz proxy starts");
    let img = image(&d, 254);
    let before = dlgrab_containers(&d);
    // The member's dlgrab through the proxy, with `extra` arguments; its
    // output folder lives as long as the result.
    let through_proxy = |extra: &[&str]| {
        let out = member.scratch_dir();
        let mut args = vec![img.tag.as_str(), "-o", out.path().to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        let run = member
            .dlgrab_command(&d, &args)
            .env("DOCKER_HOST", proxy.host())
            .output()
            .expect("dlgrab runs");
        (out, run)
    };
    let (_out, run) = through_proxy(&["--json", "-q"]);
    let top = img.layer_diff_ids.last().expect("a top layer");
    let route = exported_route(&run, top);
    if d.rootless {
        assert_eq!(route, "store", "the member's own store comes first");
    } else {
        assert_ne!(route, "archive");
        let layer = testkit::items(&String::from_utf8_lossy(&run.stdout))[0].clone();
        let reason = layer["route_reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("the archive route gave way")
                && reason.contains(testkit::AUTHZ_PLUGIN)
                && reason.contains(testkit::AUTHZ_MESSAGE),
            "{layer}"
        );
        assert!(proxy.refused() >= 1, "the proxy saw no container creation");
    }

    // Forced, the route fails with the plugin's words.
    let (_forced, run) = through_proxy(&["--via", "archive"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains(testkit::AUTHZ_MESSAGE), "{stderr}");
    assert_eq!(dlgrab_containers(&d), before, "a container was left");
}

/// The private dockerd of d's suite (d's binaries), as a test that starts
/// one needs: on d only, as root (starting a daemon needs it), with the
/// member to run dlgrab as.
fn private_member_or_skip(test: &str) -> Option<DockerMember> {
    let d = daemon_or_skip(test)?;
    if !matches!(d.name.as_str(), "d" | "default") {
        skip(
            test,
            "runs in the suite of daemon d only (its private dockerd)",
        );
        return None;
    }
    if !testkit::is_root() {
        skip(test, "starting a private dockerd needs root");
        return None;
    }
    member_or_skip(test)
}

/// A real authorization plugin: a private dockerd started with
/// `--authorization-plugin` asks testkit's `AuthzPlugin`, which refuses a
/// container creation binding a host path. A member's auto export gives
/// way from the archive route with the daemon's own words in `--json`,
/// `--via archive` fails with them, and no container is left.
#[test]
fn a_real_authorization_plugin_refusing_the_reader_makes_auto_give_way() {
    let test = "a_real_authorization_plugin_refusing_the_reader_makes_auto_give_way";
    let Some(member) = private_member_or_skip(test) else {
        return;
    };
    let plugin = testkit::AuthzPlugin::start().expect("the authorization plugin starts");
    let private =
        testkit::PrivateDaemon::start_with(&[&format!("--authorization-plugin={}", plugin.name())])
            .expect("a private dockerd with the plugin");
    let p = &private.daemon;
    let img = image(p, 253);
    let run = |extra: &[&str]| {
        let out = member.scratch_dir();
        let mut args = vec![img.tag.as_str(), "-o", out.path().to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        let run = member
            .dlgrab_command(p, &args)
            .output()
            .expect("dlgrab runs");
        (out, run)
    };
    let (_out, auto) = run(&["--json", "-q"]);
    let top = img.layer_diff_ids.last().expect("a top layer");
    assert_ne!(exported_route(&auto, top), "archive");
    let layer = testkit::items(&String::from_utf8_lossy(&auto.stdout))[0].clone();
    let reason = layer["route_reason"].as_str().unwrap_or_default();
    let denied = format!("authorization denied by plugin {}", plugin.name());
    assert!(
        reason.contains("the archive route gave way")
            && reason.contains(&denied)
            && reason.contains(testkit::AUTHZ_MESSAGE),
        "{layer}"
    );
    assert!(plugin.refused() >= 1, "the plugin refused nothing");

    let (_forced, forced) = run(&["--via", "archive"]);
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(!forced.status.success(), "{stderr}");
    assert!(stderr.contains(&denied), "{stderr}");
    assert!(dlgrab_containers(p).is_empty(), "a container was left");
    assert!(
        plugin.asked() > plugin.refused(),
        "the daemon asked the plugin"
    );
}

/// A daemon started with `--userns-remap=default` (its data root one level
/// down, owned by the remapped root; dockerd adds the `dockremap` user and
/// its subordinate IDs if missing) does not refuse the reader container:
/// it creates it in the remapped namespace, and its archive API reads the
/// bound data root as the daemon. A member's auto export takes the archive
/// route there, `--via archive` too, each verified; no container is left.
#[test]
fn a_daemon_with_userns_remap_gives_a_member_the_layer_by_the_archive_route() {
    let test = "a_daemon_with_userns_remap_gives_a_member_the_layer_by_the_archive_route";
    let Some(member) = private_member_or_skip(test) else {
        return;
    };
    let private = testkit::PrivateDaemon::start_with(&["--userns-remap=default"])
        .expect("a private dockerd with --userns-remap");
    let p = &private.daemon;
    let root = p.docker_stdout(["info", "--format", "{{.DockerRootDir}}"]);
    assert!(
        root.trim().ends_with(|c: char| c.is_ascii_digit()),
        "the data root is the remapped one: {root}"
    );
    let img = image(p, 252);
    let top = img.layer_diff_ids.last().expect("a top layer");
    for args in [&["--json", "-q"][..], &["--via", "archive", "--json", "-q"]] {
        let out = member.scratch_dir();
        let mut all = vec![img.tag.as_str(), "-o", out.path().to_str().expect("utf-8")];
        all.extend_from_slice(args);
        let run = member
            .dlgrab_command(p, &all)
            .output()
            .expect("dlgrab runs");
        assert_eq!(exported_route(&run, top), "archive", "{args:?}");
    }
    assert!(dlgrab_containers(p).is_empty(), "a container was left");
}
