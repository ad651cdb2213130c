//! End-to-end tests of `dlgrab --to DEST IMAGE…` between daemons of the
//! matrix: classic → containerd store, containerd store → classic,
//! 20.10 → 28.5, over unix sockets and over ssh (a throw-away sshd on
//! 127.0.0.1 whose sessions reach the destination).
//!
//! They need peer daemons besides the one under test, named in
//! `DLGRAB_TEST_PEERS` (`name=host` pairs separated by spaces, as `cargo
//! xtask test` sets them in a step of their own after the daemons' suites,
//! whose image lists they would disturb); without it they skip. Images made on a peer are removed
//! when the test ends ([`PeerImages`]).

use std::process::Output;

use serde_json::Value;
use testkit::{
    BuildKitOptions, BuiltImage, Daemon, DockerMember, Fault, ImageBuilder, Sshd, TlsProxy,
    buildx_or_skip, daemon_or_skip, succeeded, unique_name,
};

/// `name=host …` of the daemons a copy test may use besides the one under test.
const ENV_PEERS: &str = "DLGRAB_TEST_PEERS";

/// The peers named in `DLGRAB_TEST_PEERS`, each reachable, or why not.
fn peers(names: &[&str]) -> Result<Vec<Daemon>, String> {
    let spec = std::env::var(ENV_PEERS).map_err(|_| format!("{ENV_PEERS} is not set"))?;
    names
        .iter()
        .map(|name| {
            let host = spec
                .split_whitespace()
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .ok_or_else(|| format!("{ENV_PEERS} names no daemon {name}"))?;
            Daemon::try_connect(name, host).map_err(|e| format!("peer {name}: {e}"))
        })
        .collect()
}

/// The peers, or `None` after printing why the test is skipped: without
/// `DLGRAB_TEST_PEERS` (only one suite of the matrix runs these), or when a
/// peer does not answer (e.g. `cargo xtask test --daemon d` alone).
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn peers_or_skip(test: &str, names: &[&str]) -> Option<Vec<Daemon>> {
    match peers(names) {
        Ok(p) => Some(p),
        Err(why) => {
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

/// Tags made on a peer daemon, removed (then their images, if nothing else
/// holds them) when the test ends, passed or not.
struct PeerImages {
    peer: Daemon,
    refs: Vec<String>,
}

impl PeerImages {
    fn new(peer: &Daemon, refs: &[&str]) -> Self {
        PeerImages {
            peer: peer.clone(),
            refs: refs.iter().map(|r| (*r).to_owned()).collect(),
        }
    }
}

impl Drop for PeerImages {
    fn drop(&mut self) {
        for r in self.refs.iter().rev() {
            self.peer.remove_image(r);
        }
    }
}

/// The size of BASE's random file: enough to tell a whole image from the
/// two small layers, small enough to keep the suite quick.
const BIG: u64 = 4 << 20;

/// BASE (busybox + `BIG` random bytes) and IMAGE = BASE + two small
/// layers, on `d`.
fn pair(d: &Daemon, name: &str) -> (BuiltImage, BuiltImage) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64);
    let base = ImageBuilder::new(&format!("{name}:base"))
        .busybox()
        .random_file("/big", BIG, seed)
        .build(d);
    let image = ImageBuilder::new(&format!("{name}:image"))
        .busybox()
        .random_file("/big", BIG, seed)
        .file("/new.txt", "fresh content\n")
        .run("echo second > /second.txt")
        .build(d);
    assert_eq!(
        image.layer_diff_ids[..base.layer_diff_ids.len()],
        base.layer_diff_ids[..]
    );
    (base, image)
}

/// `dlgrab --to DEST --json IMAGES…` with `source_host` as DOCKER_HOST.
fn copy(
    via: &Daemon,
    source_host: &str,
    path: Option<&str>,
    dest: &str,
    images: &[&str],
) -> Output {
    let mut args = vec!["--to", dest, "--json", "-q"];
    args.extend_from_slice(images);
    let mut cmd = via.dlgrab_command(&args);
    cmd.env("DOCKER_HOST", source_host);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output().expect("dlgrab runs")
}

#[track_caller]
fn report(out: &Output) -> Value {
    let value = testkit::result(&succeeded(out));
    assert_eq!(value["ok"], true, "{value:#}");
    value
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v:#}"))
}

/// How many scratch folders of copies sit in the temporary folder.
fn scratch_entries() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(".dlgrab-copy-"))
                .count()
        })
        .unwrap_or(0)
}

#[track_caller]
fn runs(d: &Daemon, image: &str) {
    assert_eq!(
        d.cat(image, "/second.txt"),
        b"second\n",
        "{image} on {}",
        d.name
    );
}

/// A copy of IMAGE onto containerd-store `peer` that held BASE sent only
/// the layers beyond it, and `peer` has the whole image: it inspects by
/// its new ID, runs, and `docker save` gives every byte of it.
#[track_caller]
fn check_delta_onto_containerd(peer: &Daemon, report: &Value, image: &BuiltImage, base: u64) {
    check_delta_onto_containerd_with(peer, report, image, base, ("/second.txt", b"second\n"));
}

/// [`check_delta_onto_containerd`], the image checked to hold `file`.
#[track_caller]
fn check_delta_onto_containerd_with(
    peer: &Daemon,
    report: &Value,
    image: &BuiltImage,
    base: u64,
    file: (&str, &[u8]),
) {
    let layers = image.layer_diff_ids.len() as u64;
    let copied = &report["items"][0];
    assert_eq!(copied["how"], "delta", "{report:#}");
    assert_eq!(n(copied, "layers_skipped"), base, "{report:#}");
    assert_eq!(n(copied, "layers_sent"), layers - base, "{report:#}");
    assert!(n(report, "bytes_sent") < 1 << 20, "{report:#}");
    assert_eq!(peer.diff_ids(&image.tag), image.layer_diff_ids);
    let id = copied["dest_image_id"].as_str().expect("dest_image_id");
    assert_eq!(
        peer.inspect(id)["Id"],
        id,
        "{} cannot inspect {id}",
        peer.name
    );
    assert_eq!(
        peer.cat(&image.tag, file.0),
        file.1,
        "{} on {}",
        image.tag,
        peer.name
    );
    let saved = peer.docker(["save", &image.tag]);
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    assert!(
        saved.stdout.len() as u64 > BIG,
        "docker save on {} is cut short: {} bytes",
        peer.name,
        saved.stdout.len()
    );
}

/// Images as BuildKit stores them by default on the containerd store (an
/// index with a provenance attestation manifest) go to a classic and to a
/// containerd-store DEST holding their base as deltas, and to a DEST that
/// has them as tags only.
#[test]
fn copies_buildkit_images_with_attestations() {
    let test = "copies_buildkit_images_with_attestations";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(peers) = peers_or_skip(test, &["b", "c", "e"]) else {
        return;
    };
    let Some(buildx) = buildx_or_skip(test) else {
        return;
    };
    let [b, c, e] = &peers[..] else {
        unreachable!("three peers asked")
    };
    let name = unique_name("dlgrab-e2e/copy-bk");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64);
    let (base_tag, image_tag) = (format!("{name}:base"), format!("{name}:image"));
    let _on_e = PeerImages::new(e, &[&base_tag, &image_tag]);
    let _on_b = PeerImages::new(b, &[&base_tag, &image_tag]);
    let _on_c = PeerImages::new(c, &[&base_tag, &image_tag]);
    let options = BuildKitOptions::default();
    let base = ImageBuilder::new(&base_tag)
        .busybox()
        .random_file("/big", BIG, seed)
        .build_with_buildkit(e, Some(&buildx), &options);
    let image = ImageBuilder::new(&image_tag)
        .busybox()
        .random_file("/big", BIG, seed)
        .file("/top.txt", "built by buildkit\n")
        .build_with_buildkit(e, Some(&buildx), &options);
    let base_layers = base.image.layer_diff_ids.len() as u64;
    assert_eq!(
        image.image.layer_diff_ids[..base.image.layer_diff_ids.len()],
        base.image.layer_diff_ids[..]
    );
    let top = ("/top.txt", &b"built by buildkit\n"[..]);

    // To a classic DEST: BASE, then IMAGE as a delta.
    report(&copy(&d, &e.host, None, &b.host, &[&base_tag]));
    let to_b = report(&copy(&d, &e.host, None, &b.host, &[&image_tag]));
    let copied = &to_b["items"][0];
    assert_eq!(copied["how"], "delta", "{to_b:#}");
    assert_eq!(n(copied, "layers_skipped"), base_layers, "{to_b:#}");
    assert!(n(&to_b, "bytes_sent") < 1 << 20, "{to_b:#}");
    assert_eq!(b.diff_ids(&image_tag), image.image.layer_diff_ids);
    assert_eq!(b.cat(&image_tag, top.0), top.1);

    // To a containerd-store DEST: the same, the held layers named by c's blobs.
    report(&copy(&d, &e.host, None, &c.host, &[&base_tag]));
    let to_c = report(&copy(&d, &e.host, None, &c.host, &[&image_tag]));
    check_delta_onto_containerd_with(c, &to_c, &image.image, base_layers, top);
    // Both hold it now: tags only.
    for dest in [b, c] {
        let again = report(&copy(&d, &e.host, None, &dest.host, &[&image_tag]));
        assert_eq!(again["items"][0]["how"], "tags-only", "{again:#}");
        assert_eq!(n(&again, "bytes_sent"), 0, "{again:#}");
    }
}

/// A `docker` group member (not root: DEST's content store is not
/// readable) copies to both containerd stores as deltas: DEST pushes the
/// image holding the layers to dlgrab's registry, which learns DEST's blobs
/// from the manifest; nothing of it stays on DEST.
#[test]
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn a_docker_group_member_copies_to_containerd_stores_as_deltas() {
    let test = "a_docker_group_member_copies_to_containerd_stores_as_deltas";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(peers) = peers_or_skip(test, &["c", "e"]) else {
        return;
    };
    let member = match DockerMember::try_get() {
        Ok(member) => member,
        Err(why) if std::env::var("DLGRAB_REQUIRE_DAEMON").as_deref() == Ok("1") => {
            panic!("{test}: no docker group member: {why}")
        }
        Err(why) => {
            eprintln!("SKIP {test}: {why}");
            return;
        }
    };
    let name = unique_name("dlgrab-e2e/copy-member");
    let (base, image) = pair(&d, &name);
    let base_layers = base.layer_diff_ids.len() as u64;
    for dest in &peers {
        let _on_dest = PeerImages::new(dest, &[&base.tag, &image.tag]);
        report(&copy(&d, &d.host, None, &dest.host, &[&base.tag]));
        let saved_base = saved_index(dest, &base.tag);
        let refs = dest.image_refs();
        let out = member
            .command(&testkit::dlgrab_bin())
            .args(["--to", &dest.host, "--json", "-q", &image.tag])
            .env("DOCKER_HOST", &d.host)
            .env_remove("RUST_LOG")
            .output()
            .expect("runuser runs");
        let delta = report(&out);
        check_delta_onto_containerd(dest, &delta, &image, base_layers);
        // Nothing of the push on DEST: no tag left, the base's saved
        // index unchanged (no distribution-source annotation).
        only_new(dest, &refs, &image.tag);
        assert_eq!(saved_index(dest, &base.tag), saved_base, "{}", dest.name);
    }
}

/// An sshd whose sessions reach `host`, or why not (a failure under
/// `DLGRAB_REQUIRE_DAEMON=1`).
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn sshd_or_skip(test: &str, host: &str) -> Option<Sshd> {
    match Sshd::start(host) {
        Ok(s) => Some(s),
        Err(why) => {
            assert!(
                std::env::var(testkit::ENV_REQUIRE_DAEMON).as_deref() != Ok("1"),
                "{test}: {why}"
            );
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

/// `d`'s image list is `refs` (as [`Daemon::image_refs`] gave it) but for
/// `image`.
#[track_caller]
fn only_new(d: &Daemon, refs: &[String], image: &str) {
    let mut now = d.image_refs();
    now.retain(|r| !r.starts_with(&format!("{image} ")));
    assert_eq!(now, refs, "{}: only {image} may be new", d.name);
}

/// `docker save IMAGE`'s `index.json` on `d`.
fn saved_index(d: &Daemon, image: &str) -> String {
    let saved = d.docker(["save", image]);
    assert!(saved.status.success(), "docker save {image} on {}", d.name);
    let mut archive = tar::Archive::new(&saved.stdout[..]);
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().is_ok_and(|p| p.to_str() == Some("index.json")) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("index.json");
            return text;
        }
    }
    panic!("no index.json in docker save {image} on {}", d.name)
}

/// To a containerd-store DEST over ssh: DEST pushes the image holding the
/// layers to dlgrab's registry through a reverse tunnel (`ssh -R`, one ssh
/// process besides the connection), so only the new layers go; nothing of
/// the push stays on DEST.
#[test]
fn copies_over_ssh_to_a_containerd_store_as_deltas() {
    let test = "copies_over_ssh_to_a_containerd_store_as_deltas";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(peers) = peers_or_skip(test, &["e"]) else {
        return;
    };
    let e = &peers[0];
    let Some(sshd) = sshd_or_skip(test, &e.host) else {
        return;
    };
    let path = sshd.path_env();
    let name = unique_name("dlgrab-e2e/copy-ssh-cd");
    let (base, image) = pair(&d, &name);
    let base_layers = base.layer_diff_ids.len() as u64;
    let _on_e = PeerImages::new(e, &[&base.tag, &image.tag]);
    report(&copy(&d, &d.host, None, &e.host, &[&base.tag]));
    let saved_base = saved_index(e, &base.tag);
    let refs = e.image_refs();
    let dials = sshd.dials();
    let delta = report(&copy(&d, &d.host, Some(&path), &sshd.url(), &[&image.tag]));
    assert_eq!(
        sshd.dials() - dials,
        2,
        "ssh processes of a delta copy to a containerd store: the connection and the tunnel"
    );
    check_delta_onto_containerd(e, &delta, &image, base_layers);
    only_new(e, &refs, &image.tag);
    assert_eq!(saved_index(e, &base.tag), saved_base);
}

/// A multi-platform image pulled from a registry (an OCI index with an
/// attestation manifest, its arm64 content not local) goes from the
/// containerd store to a classic DEST and to another containerd store, its
/// amd64 image whole, then as tags only.
#[test]
fn copies_a_pulled_multi_platform_index() {
    let test = "copies_a_pulled_multi_platform_index";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(peers) = peers_or_skip(test, &["b", "c", "e"]) else {
        return;
    };
    let [b, c, e] = &peers[..] else {
        unreachable!("three peers asked")
    };
    let pulled = testkit::PulledIndex::pull(e, testkit::IndexFlavour::Oci);
    let _on_b = PeerImages::new(b, &[&pulled.reference]);
    let _on_c = PeerImages::new(c, &[&pulled.reference]);
    for dest in [b, c] {
        let first = report(&copy(&d, &e.host, None, &dest.host, &[&pulled.reference]));
        let copied = &first["items"][0];
        assert_ne!(copied["how"], "tags-only", "{first:#}");
        assert_eq!(
            n(copied, "layers_sent") + n(copied, "layers_skipped"),
            pulled.diff_ids.len() as u64,
            "{first:#}"
        );
        assert_eq!(
            dest.diff_ids(&pulled.reference),
            pulled.diff_ids,
            "{}",
            dest.name
        );
        let again = report(&copy(&d, &e.host, None, &dest.host, &[&pulled.reference]));
        assert_eq!(again["items"][0]["how"], "tags-only", "{again:#}");
        assert_eq!(n(&again, "bytes_sent"), 0, "{again:#}");
    }
}

#[test]
fn copies_between_stores_sending_only_missing_layers() {
    let test = "copies_between_stores_sending_only_missing_layers";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(peers) = peers_or_skip(test, &["a", "b", "c", "e"]) else {
        return;
    };
    let [a, b, c, e] = &peers[..] else {
        unreachable!("four peers asked")
    };
    let scratch_before = scratch_entries();
    let name = unique_name("dlgrab-e2e/copy");
    let (base, image) = pair(&d, &name);
    let base_layers = base.layer_diff_ids.len() as u64;
    let layers = image.layer_diff_ids.len() as u64;
    let _on_e = PeerImages::new(e, &[&base.tag, &image.tag]);
    let _on_b = PeerImages::new(b, &[&base.tag, &image.tag]);
    let _on_c = PeerImages::new(c, &[&base.tag, &image.tag]);

    // Classic (28.5) → containerd store (28.5): BASE goes (e may hold its
    // busybox layer from its own builds), then IMAGE sends only its two
    // layers: the archive names BASE's layers by the blobs e keeps.
    let first = report(&copy(&d, &d.host, None, &e.host, &[&base.tag]));
    let sent = &first["items"][0];
    assert_eq!(
        n(sent, "layers_sent") + n(sent, "layers_skipped"),
        base_layers,
        "{first:#}"
    );
    assert!(n(&first, "bytes_sent") > BIG, "{first:#}");
    let delta = report(&copy(&d, &d.host, None, &e.host, &[&image.tag]));
    check_delta_onto_containerd(e, &delta, &image, base_layers);
    // Once more: e holds that very image, under another ID (a manifest
    // digest, the source's is a config digest): tags only, nothing sent.
    let held = report(&copy(&d, &d.host, None, &e.host, &[&image.tag]));
    assert_eq!(held["items"][0]["how"], "tags-only", "{held:#}");
    assert_eq!(n(&held, "bytes_sent"), 0, "{held:#}");
    assert_eq!(n(&held, "layers_sent"), 0, "{held:#}");

    // Containerd store → containerd store (28.5 → 26.1): a delta too. c
    // may hold a layer as a snapshot of its own build, under another blob
    // than e's: the archive names c's own blob (26.1 registered an image
    // it could not inspect by ID when it named e's).
    report(&copy(&d, &e.host, None, &c.host, &[&base.tag]));
    let to_c = report(&copy(&d, &e.host, None, &c.host, &[&image.tag]));
    check_delta_onto_containerd(c, &to_c, &image, base_layers);

    // Containerd store → classic (26.1), both images in one call: the
    // shared layers go once, and the classic image ID comes back.
    let both = report(&copy(&d, &e.host, None, &b.host, &[&base.tag, &image.tag]));
    // (b may hold BASE's busybox layer already, from its own builds.)
    assert_eq!(
        n(&both, "layers_sent") + n(&both, "layers_skipped"),
        base_layers + layers,
        "{both:#}"
    );
    let second = &both["items"][1];
    assert_eq!(n(second, "layers_skipped"), base_layers, "{both:#}");
    assert_eq!(n(second, "layers_sent"), layers - base_layers, "{both:#}");
    assert_eq!(b.inspect(&image.tag)["Id"], image.id.as_str());
    runs(b, &image.tag);
    // Again: b has the very images, so only tags, whichever store sends.
    let again = report(&copy(&d, &d.host, None, &b.host, &[&image.tag]));
    assert_eq!(again["items"][0]["how"], "tags-only", "{again:#}");
    assert_eq!(n(&again, "bytes_sent"), 0);
    let again = report(&copy(&d, &e.host, None, &b.host, &[&image.tag]));
    assert_eq!(again["items"][0]["how"], "tags-only", "{again:#}");
    assert_eq!(n(&again, "bytes_sent"), 0);

    // 20.10 → 28.5 (classic to classic): the same image ID on both.
    let name = unique_name("dlgrab-e2e/copy-old");
    let (old_base, old_image) = pair(a, &name);
    let _on_a = PeerImages::new(a, &[&old_base.tag, &old_image.tag]);
    d.remove_when_done(&old_image.tag);
    d.remove_when_done(&old_base.tag);
    report(&copy(&d, &a.host, None, &d.host, &[&old_base.tag]));
    let up = report(&copy(&d, &a.host, None, &d.host, &[&old_image.tag]));
    assert_eq!(up["items"][0]["how"], "delta", "{up:#}");
    assert!(n(&up, "bytes_sent") < 1 << 20, "{up:#}");
    assert_eq!(d.inspect(&old_image.tag)["Id"], old_image.id.as_str());
    runs(&d, &old_image.tag);
    assert_eq!(
        scratch_entries(),
        scratch_before,
        "a copy left its scratch folder"
    );
}

#[test]
fn copies_over_ssh_both_ways() {
    let test = "copies_over_ssh_both_ways";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(peers) = peers_or_skip(test, &["b", "e"]) else {
        return;
    };
    let [b, e] = &peers[..] else {
        unreachable!("two peers asked")
    };
    // The sshd's sessions reach b: `ssh://dlgrab-test` is b over ssh.
    let Some(sshd) = sshd_or_skip(test, &b.host) else {
        return;
    };
    let path = sshd.path_env();
    let name = unique_name("dlgrab-e2e/copy-ssh");
    let (base, image) = pair(&d, &name);
    let base_layers = base.layer_diff_ids.len() as u64;
    let _on_b = PeerImages::new(b, &[&base.tag, &image.tag]);
    let _on_e = PeerImages::new(e, &[&base.tag, &image.tag]);

    // To DEST over ssh (classic 28.5 → classic 26.1): BASE whole, then
    // IMAGE's new layers only, under the same image ID.
    // Each copy opens one ssh connection for all its requests to DEST
    // (each costs an ssh process and a remote `docker system dial-stdio`).
    let dials = sshd.dials();
    report(&copy(&d, &d.host, Some(&path), &sshd.url(), &[&base.tag]));
    assert_eq!(sshd.dials() - dials, 1, "ssh connections of a whole copy");
    let dials = sshd.dials();
    let delta = report(&copy(&d, &d.host, Some(&path), &sshd.url(), &[&image.tag]));
    assert_eq!(sshd.dials() - dials, 1, "ssh connections of a delta copy");
    assert_eq!(delta["items"][0]["how"], "delta", "{delta:#}");
    assert_eq!(
        n(&delta["items"][0], "layers_skipped"),
        base_layers,
        "{delta:#}"
    );
    assert!(n(&delta, "bytes_sent") < 1 << 20, "{delta:#}");
    assert_eq!(b.inspect(&image.tag)["Id"], image.id.as_str());
    runs(b, &image.tag);

    // From a source over ssh (DOCKER_HOST=ssh://…, here b) to e, which
    // holds BASE: only IMAGE's new layers leave b, read by the archive
    // route through the same ssh connection (no whole save of b's image).
    report(&copy(&d, &d.host, None, &e.host, &[&base.tag]));
    let dials = sshd.dials();
    let from = report(&copy(&d, &sshd.url(), Some(&path), &e.host, &[&image.tag]));
    assert_eq!(
        sshd.dials() - dials,
        1,
        "ssh connections of a copy from ssh"
    );
    assert_eq!(from["items"][0]["how"], "delta", "{from:#}");
    assert_eq!(
        n(&from["items"][0], "layers_skipped"),
        base_layers,
        "{from:#}"
    );
    assert_eq!(
        from["items"][0]["routes"],
        serde_json::json!(["archive"]),
        "{from:#}"
    );
    assert!(n(&from, "bytes_sent") < 1 << 20, "{from:#}");
    assert_eq!(e.diff_ids(&image.tag), image.layer_diff_ids);
    runs(e, &image.tag);
}

/// `dlgrab --to DEST --json IMAGES…` from `source_host`, with `envs` set.
fn copy_with(
    via: &Daemon,
    source_host: &str,
    envs: &[(&str, &str)],
    dest: &str,
    images: &[&str],
) -> Output {
    let mut args = vec!["--to", dest, "--json", "-q"];
    args.extend_from_slice(images);
    let mut cmd = via.dlgrab_command(&args);
    cmd.env("DOCKER_HOST", source_host)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_TLS")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT");
    for (name, value) in envs {
        cmd.env(name, value);
    }
    cmd.output().expect("dlgrab runs")
}

/// `docker context create NAME --docker SPEC` in the CLI config folder `config`.
#[track_caller]
fn create_context(config: &std::path::Path, name: &str, spec: &str) {
    let out = std::process::Command::new("docker")
        .args(["context", "create", name, "--docker", spec])
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker context create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The peer `name` and a TLS proxy in front of it, or `None` after saying why.
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn peer_behind_tls(test: &str, name: &str) -> Option<(Daemon, TlsProxy)> {
    let peer = peers_or_skip(test, &[name])?.pop()?;
    match TlsProxy::start(&peer.host) {
        Ok(proxy) => Some((peer, proxy)),
        Err(why) => {
            assert!(
                std::env::var(testkit::ENV_REQUIRE_DAEMON).as_deref() != Ok("1"),
                "{test}: {why}"
            );
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

#[test]
fn copies_to_tcp_with_tls_and_to_contexts() {
    let test = "copies_to_tcp_with_tls_and_to_contexts";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some((b, proxy)) = peer_behind_tls(test, "b") else {
        return;
    };
    let name = unique_name("dlgrab-e2e/copy-tls");
    let (base, image) = pair(&d, &name);
    let base_layers = base.layer_diff_ids.len() as u64;
    let _on_b = PeerImages::new(&b, &[&base.tag, &image.tag]);
    let certs = proxy.cert_path().display().to_string();
    let tls_env = [
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", certs.as_str()),
    ];

    // Without the client's TLS material the proxy lets nothing through.
    let plain = copy_with(&d, &d.host, &[], &proxy.host(), &[&base.tag]);
    assert!(
        !plain.status.success(),
        "a plain HTTP copy went through the TLS proxy"
    );
    assert!(proxy.refused() > 0, "the proxy saw no refused handshake");
    assert_eq!(proxy.sessions(), 0);
    assert!(b.try_inspect(&base.tag).is_err(), "{} reached b", base.tag);

    // DOCKER_TLS_VERIFY + DOCKER_CERT_PATH, as the Docker CLI reads them.
    let first = report(&copy_with(
        &d,
        &d.host,
        &tls_env,
        &proxy.host(),
        &[&base.tag],
    ));
    assert!(proxy.sessions() > 0, "no TLS session through the proxy");
    assert_eq!(b.inspect(&base.tag)["Id"], base.id.as_str(), "{first:#}");

    // A context with the same material in the CLI's store.
    let config = tempfile::tempdir().expect("a temporary folder");
    let ca = proxy.cert_path().join("ca.pem");
    let cert = proxy.cert_path().join("cert.pem");
    let key = proxy.cert_path().join("key.pem");
    create_context(
        config.path(),
        "dlgrab-tls",
        &format!(
            "host={},ca={},cert={},key={}",
            proxy.host(),
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    create_context(config.path(), "dlgrab-unix", &format!("host={}", b.host));
    let config_env = [(
        "DOCKER_CONFIG",
        config.path().to_str().expect("a UTF-8 path"),
    )];
    let sessions = proxy.sessions();
    let delta = report(&copy_with(
        &d,
        &d.host,
        &config_env,
        "dlgrab-tls",
        &[&image.tag],
    ));
    assert_eq!(delta["items"][0]["how"], "delta", "{delta:#}");
    assert_eq!(
        n(&delta["items"][0], "layers_skipped"),
        base_layers,
        "{delta:#}"
    );
    assert!(
        proxy.sessions() > sessions,
        "the context's copy did not go through the proxy"
    );
    assert_eq!(b.inspect(&image.tag)["Id"], image.id.as_str());
    runs(&b, &image.tag);

    // A context naming a unix socket: IMAGE again, once b lost it.
    b.remove_image(&image.tag);
    assert!(b.try_inspect(&image.tag).is_err());
    let sessions = proxy.sessions();
    let again = report(&copy_with(
        &d,
        &d.host,
        &config_env,
        "dlgrab-unix",
        &[&image.tag],
    ));
    assert_eq!(again["items"][0]["how"], "delta", "{again:#}");
    assert_eq!(
        proxy.sessions(),
        sessions,
        "the unix context went through the proxy"
    );
    assert_eq!(b.inspect(&image.tag)["Id"], image.id.as_str());

    // A context that does not exist is refused, naming it.
    let missing = copy_with(
        &d,
        &d.host,
        &config_env,
        "dlgrab-no-such-context",
        &[&image.tag],
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("dlgrab-no-such-context"), "{stderr}");
}

/// Waits up to `limit` for `child` to exit.
fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// Kills a child left running when a test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Every image row (temporary tags included), and every image ID.
type Listing = (Vec<String>, Vec<String>);

/// What a daemon lists: every image row (temporary tags included) and ID.
fn listing(d: &Daemon) -> Listing {
    (d.image_refs(), d.image_ids())
}

/// A copy to b through a TLS proxy that can stall or cut the load: the
/// daemon under test, b behind the proxy, an image and its base on the
/// source (both removed from b when done), and what both daemons and the
/// scratch folders held before.
struct FaultedCopy {
    d: Daemon,
    b: Daemon,
    proxy: TlsProxy,
    base: BuiltImage,
    image: BuiltImage,
    certs: String,
    /// b's listing, then d's.
    before: (Listing, Listing),
    scratch_before: usize,
    _on_b: PeerImages,
}

impl FaultedCopy {
    /// `None` (the test skipped, with the reason) without the daemons.
    fn set_up(test: &str, prefix: &str) -> Option<Self> {
        let d = daemon_or_skip(test)?;
        let (b, proxy) = peer_behind_tls(test, "b")?;
        let scratch_before = scratch_entries();
        let (base, image) = pair(&d, &unique_name(prefix));
        let on_b = PeerImages::new(&b, &[&base.tag, &image.tag]);
        let before = (listing(&b), listing(&d));
        let certs = proxy.cert_path().display().to_string();
        Some(Self {
            d,
            b,
            proxy,
            base,
            image,
            certs,
            before,
            scratch_before,
            _on_b: on_b,
        })
    }

    /// Neither daemon's images changed and no scratch folder was left.
    fn nothing_changed(&self) {
        assert_eq!(listing(&self.b), self.before.0, "b's images changed");
        assert_eq!(listing(&self.d), self.before.1, "d's images changed");
        assert_eq!(
            scratch_entries(),
            self.scratch_before,
            "a scratch folder was left"
        );
    }
}

#[test]
fn ctrl_c_mid_load_leaves_nothing() {
    let Some(c) = FaultedCopy::set_up("ctrl_c_mid_load_leaves_nothing", "dlgrab-e2e/copy-int")
    else {
        return;
    };
    let (d, proxy, base) = (&c.d, &c.proxy, &c.base);

    // The load's body stops halfway: dlgrab is mid-copy, waiting.
    proxy.set_fault(Fault::Stall { after: 1 << 20 });
    let mut cmd = d.dlgrab_command(&["--to", &proxy.host(), "-q", &base.tag]);
    cmd.env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &c.certs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("dlgrab starts"));
    let start = std::time::Instant::now();
    while proxy.faulted() == 0 && start.elapsed() < std::time::Duration::from_secs(120) {
        assert!(
            matches!(child.0.try_wait(), Ok(None)),
            "dlgrab ended before its load was stalled"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(proxy.faulted(), 1, "the load never reached the stall");
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = wait_exit(&mut child.0, std::time::Duration::from_secs(60))
        .expect("dlgrab did not stop within 60 s of SIGINT");
    let mut stderr = String::new();
    if let Some(mut err) = child.0.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // The proxy closed the daemon's side when dlgrab went: b aborted the load.
    c.nothing_changed();
}

/// A load cut midway fails that image, leaves nothing on DEST, and the
/// copy goes on to the next image.
#[test]
fn a_load_cut_midway_fails_and_leaves_nothing() {
    let Some(c) = FaultedCopy::set_up(
        "a_load_cut_midway_fails_and_leaves_nothing",
        "dlgrab-e2e/copy-cut",
    ) else {
        return;
    };
    let (d, proxy, base, image) = (&c.d, &c.proxy, &c.base, &c.image);
    let tls_env = [
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", c.certs.as_str()),
    ];

    // The connection carrying the load is cut after 1 MiB of its body.
    proxy.set_fault(Fault::Cut { after: 1 << 20 });
    let out = copy_with(
        d,
        &d.host,
        &tls_env,
        &proxy.host(),
        &[&base.tag, &image.tag],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The copy goes on past the failed image: the next one is tried (and
    // cut too).
    assert_eq!(proxy.faulted(), 2, "{stderr}");
    let report = testkit::result(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["ok"], false, "{report:#}");
    for (item, tag) in report["items"]
        .as_array()
        .expect("items")
        .iter()
        .zip([&base.tag, &image.tag])
    {
        assert_eq!(item["reference"], tag.as_str(), "{report:#}");
        assert_eq!(item["action"], "failed", "{report:#}");
        let message = item["error"]["message"].as_str().expect("a message");
        assert!(
            message.starts_with(&format!("cannot copy {tag}")) && message.contains("load"),
            "{message}"
        );
        assert!(
            stderr.contains(&format!("dlgrab: error: {message}")),
            "{stderr}"
        );
    }
    c.nothing_changed();
}

/// A `--to` killed (SIGKILL: no cleanup) while its layers sit in its
/// scratch folder leaves that folder in the temporary folder, named with
/// the run's identity; the next run sweeps it.
#[test]
fn a_killed_copys_scratch_is_swept_by_the_next_run() {
    let test = "a_killed_copys_scratch_is_swept_by_the_next_run";
    let Some(d) = daemon_or_skip(test) else {
        return;
    };
    let Some(peers) = peers_or_skip(test, &["b"]) else {
        return;
    };
    let b = &peers[0];
    let name = unique_name("dlgrab-e2e/copy-killed");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos() as u64);
    let base = ImageBuilder::new(&format!("{name}:base"))
        .busybox()
        .build(&d);
    // A big layer beyond BASE: its export and load take long enough to
    // find the scratch folder and kill the run while it is there.
    let image = ImageBuilder::new(&format!("{name}:image"))
        .busybox()
        .random_file("/big", 48 << 20, seed)
        .build(&d);
    let _on_b = PeerImages::new(b, &[&base.tag, &image.tag]);
    report(&copy(&d, &d.host, None, &b.host, &[&base.tag]));

    // Its own temporary folder: only this test's runs write there.
    let tmp = tempfile::tempdir().expect("tempdir");
    let scratch_in = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".dlgrab-copy-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut cmd = d.dlgrab_command(&["--to", &b.host, "-q", &image.tag]);
    cmd.env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = KillOnDrop(cmd.spawn().expect("dlgrab starts"));
    let start = std::time::Instant::now();
    let mut seen = Vec::new();
    while seen.is_empty() && start.elapsed() < std::time::Duration::from_secs(120) {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("dlgrab ended ({status}) before its scratch folder was seen");
        }
        seen = scratch_in(tmp.path());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(!seen.is_empty(), "no scratch folder within 120 s");
    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();
    assert_eq!(
        scratch_in(tmp.path()),
        seen,
        "a killed run cannot remove its scratch folder"
    );

    // The next run (here `--clean`) finds the dead run's folder and removes it.
    let mut clean = d.dlgrab_command(&["--clean", "--json"]);
    clean.env("TMPDIR", tmp.path());
    let swept = report(&clean.output().expect("dlgrab runs"));
    let removed: Vec<std::path::PathBuf> = swept["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {swept:#}"))
        .iter()
        .filter(|i| i["what"] == "file" && i["action"] == "removed")
        .filter_map(|i| i["name"].as_str().map(std::path::PathBuf::from))
        .collect();
    for folder in &seen {
        assert!(
            removed.contains(folder),
            "{} not swept: {swept:#}",
            folder.display()
        );
    }
    assert!(scratch_in(tmp.path()).is_empty(), "{swept:#}");
}
