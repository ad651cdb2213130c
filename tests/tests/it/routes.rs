//! The push route on classic image stores, decided by what the daemon does
//! in the survey push: a pulled-then-retagged image is asked about layer by
//! layer (nothing uploaded in the survey); a never-pushed image's small top
//! layer is captured from the survey and the push dropped (capture and
//! cancel), again once the daemon asks about it, after which the daemon
//! pushes as before and keeps no tag.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use shim_registry::{ChannelSink, Registry};
use testkit::{
    BuiltImage, Daemon, Engine, ImageBuilder, Store, daemon_or_skip, succeeded, unique_name,
};

/// Says on stderr why a test did not run.
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

/// The daemon under test when it is a dockerd with a classic image store
/// (what these tests watch is how dockerd's classic store pushes; Podman's
/// containers/image pushes otherwise).
fn classic_or_skip(test: &str) -> Option<Daemon> {
    let d = daemon_or_skip(test)?;
    if d.store != Store::Classic || d.engine != Engine::Docker {
        skip(
            test,
            &format!(
                "daemon {} is not a dockerd with a classic image store",
                d.name
            ),
        );
        return None;
    }
    Some(d)
}

/// A small two-layer image: 4 MiB of random bytes, then a small top file.
fn image(d: &Daemon, prefix: &str, seed: u64) -> BuiltImage {
    ImageBuilder::new(&format!("{}:1", unique_name(prefix)))
        .random_file("/base.bin", 4 << 20, seed)
        .file("/top.txt", format!("top {seed}\n"))
        .build(d)
}

/// A three-layer image: a small base, `middle_bytes` of random bytes, a
/// small top.
fn three_layers(d: &Daemon, prefix: &str, seed: u64, middle_bytes: u64) -> BuiltImage {
    ImageBuilder::new(&format!("{}:1", unique_name(prefix)))
        .file("/base.txt", format!("base {seed}\n"))
        .random_file("/middle.bin", middle_bytes, seed)
        .file("/top.txt", format!("top {seed}\n"))
        .build(d)
}

/// Whether a `--debug` log shows the daemon saying it pushed the layer
/// `diff_id` whole.
fn pushed_whole(log: &str, diff_id: &str) -> bool {
    let short: String = diff_id
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    log.lines()
        .any(|l| l.contains(&short) && l.contains("Pushed") && !l.contains("Pushing"))
}

/// The one layer of a `--json` run, its `layer.tar` checked against its diff ID.
#[track_caller]
fn exported(out: &Output, diff_id: &str) -> serde_json::Value {
    let stdout = succeeded(out);
    let layer = testkit::items(&stdout)[0].clone();
    assert_eq!(layer["diff_id"], diff_id, "{layer}");
    let tar = testkit::exported_file(&layer, "/layer.tar");
    let data = std::fs::read(&tar).expect("layer.tar");
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&data))),
        diff_id,
        "the written layer.tar is the layer"
    );
    layer
}

/// dlgrab's temporary tags left on the daemon.
pub(crate) fn temporary_tags(d: &Daemon) -> Vec<String> {
    d.image_refs()
        .into_iter()
        .filter(|r| r.starts_with("127.0.0.1:") && r.contains("/dlgrab-"))
        .collect()
}

/// `text` without terminal colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Bytes of their own for a test's layers (from the clock; `fallback`
/// without one): a daemon keeps the digests it recorded for a layer after
/// the image is gone, so bytes pushed by an earlier run would be asked about.
pub(crate) fn fresh_seed(fallback: u64) -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(fallback, |t| t.as_nanos() as u64 ^ fallback)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Whether dlgrab can read the daemon's layer store (it then has the
/// config without the push, which capture and cancel needs); skips the
/// test with the reason when not. Probes into `out`/probe.
fn config_at_hand_or_skip(test: &str, d: &Daemon, out: &Path, img: &BuiltImage) -> bool {
    let probe = out.join("probe");
    let readable = d
        .dlgrab(&[&img.tag, "--via", "store", "-q", "-o", path_str(&probe)])
        .status
        .success();
    if !readable {
        skip(
            test,
            "the layer store is not readable here: without the config at hand the push is not cancelled",
        );
    }
    readable
}

/// A classic dockerd whose layer store dlgrab can read, an image `build`
/// made on it from a fresh seed (a daemon keeps the digests it recorded for
/// a layer after the image is gone, so the same bytes pushed by an earlier
/// run would be asked about), and an output folder; `None` (the test
/// skipped, with the reason) where capture and cancel cannot be seen.
fn capture_setup(
    test: &str,
    seed: u64,
    build: impl FnOnce(&Daemon, u64) -> BuiltImage,
) -> Option<(Daemon, BuiltImage, tempfile::TempDir)> {
    let d = classic_or_skip(test)?;
    let img = build(&d, fresh_seed(seed));
    let out = tempfile::tempdir().expect("tempdir");
    if !config_at_hand_or_skip(test, &d, out.path(), &img) {
        return None;
    }
    Some((d, img, out))
}

#[test]
fn capture_and_cancel_takes_the_top_layer_then_the_daemon_pushes_as_before() {
    let test = "capture_and_cancel_takes_the_top_layer_then_the_daemon_pushes_as_before";
    let Some((d, img, out)) =
        capture_setup(test, 41, |d, seed| image(d, "dlgrab-e2e/cancel", seed))
    else {
        return;
    };
    let top = img.layer_diff_ids.len() - 1;
    let run = d.dlgrab(&[
        &img.tag,
        "--via",
        "push",
        "--json",
        "--debug",
        "-o",
        path_str(&out.path().join("top")),
    ]);
    let layer = exported(&run, &img.layer_diff_ids[top]);
    assert_eq!(layer["route"], "push", "{layer}");
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(
        log.contains("every wanted layer is in: the push is dropped"),
        "the push was not cancelled:\n{log}"
    );
    // No upload started after the cancel (counted while the registry was
    // still up).
    let plain = strip_ansi(&log);
    assert!(plain.contains("uploads_started_after_cancel=0"), "{plain}");
    assert!(temporary_tags(&d).is_empty(), "{:?}", temporary_tags(&d));

    // Again: the daemon now asks about the top layer (it recorded its
    // digest) and uploads the base unasked: the survey is dropped and a
    // capture push brings only the top, dropped once it is in.
    let run = d.dlgrab(&[
        &img.tag,
        "--via",
        "push",
        "--json",
        "--debug",
        "-o",
        path_str(&out.path().join("top-again")),
    ]);
    exported(&run, &img.layer_diff_ids[top]);
    // Unless the daemon had already finished uploading the base when it
    // said the top was there (28.5 compresses 4 MiB in a blink), or had
    // recorded the base too (20.10 may finish its upload before the
    // cancel): then the survey runs through and the capture push uploads
    // the top whole (its progress logged as an event, `status: "Pushed"`).
    let log = strip_ansi(&String::from_utf8_lossy(&run.stderr));
    assert!(
        log.contains("the wanted layers are in: the capture push is dropped")
            || log.contains("status=\"Pushed\"")
            || log.contains("status: \"Pushed\""),
        "{log}"
    );
    assert!(temporary_tags(&d).is_empty(), "{:?}", temporary_tags(&d));

    // The daemon pushes as before: the base (cancelled mid-upload, so
    // still never pushed) is uploaded whole, the top is now asked about.
    let run = d.dlgrab(&[
        &img.tag,
        "--index",
        "0",
        "--via",
        "push",
        "--json",
        "--debug",
        "-o",
        path_str(&out.path().join("base")),
    ]);
    exported(&run, &img.layer_diff_ids[0]);
    // The top is asked about: the daemon says so, or the push was dropped
    // (the base in) right after the top's HEAD, before it said so (28.5).
    let log = strip_ansi(&String::from_utf8_lossy(&run.stderr));
    assert!(
        log.contains("Layer already exists") || log.contains("method=HEAD path=/v2/"),
        "{log}"
    );
    assert!(temporary_tags(&d).is_empty(), "{:?}", temporary_tags(&d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_then_retagged_image_is_asked_about_and_nothing_crosses_in_the_survey() {
    let test = "a_pulled_then_retagged_image_is_asked_about_and_nothing_crosses_in_the_survey";
    let Some(d) = classic_or_skip(test) else {
        return;
    };
    let seed = fresh_seed(42);
    let img = image(&d, "dlgrab-e2e/pulled", seed);
    let (sink, _events) = ChannelSink::new();
    let registry = Registry::builder()
        .event_sink(Arc::new(sink))
        .build()
        .expect("registry builds");
    let handle = registry
        .spawn("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("registry spawns");
    let remote = format!(
        "127.0.0.1:{}/{}:1",
        handle.addr().port(),
        unique_name("dlgrab-e2e/pulled-remote")
    );
    d.remove_when_done(&remote);
    let retagged = format!("{}:1", unique_name("dlgrab-e2e/retagged"));
    let (dd, tag, r, t) = (d.clone(), img.tag.clone(), remote.clone(), retagged.clone());
    let run = tokio::task::spawn_blocking(move || {
        // Pulled: pushed out, removed, pulled back; then retagged and the
        // pulled name removed, so no repo digest is left.
        dd.docker_stdout(["tag", &tag, &r]);
        dd.docker_stdout(["push", &r]);
        dd.remove_image(&r);
        dd.remove_image(&tag);
        dd.docker_stdout(["pull", &r]);
        dd.docker_stdout(["tag", &r, &t]);
        dd.remove_image(&r);
        let inspect = dd.inspect(&t);
        assert!(
            inspect["RepoDigests"]
                .as_array()
                .is_none_or(|a| a.is_empty()),
            "{inspect}"
        );
        let out = tempfile::tempdir().expect("tempdir");
        let run = dd.dlgrab(&[
            &t,
            "--index",
            "0",
            "--via",
            "push",
            "--json",
            "--debug",
            "-o",
            path_str(out.path()),
        ]);
        (run, out)
    })
    .await
    .expect("commands");
    handle.shutdown().await;
    let (run, _out) = run;
    let layer = exported(&run, &img.layer_diff_ids[0]);
    assert_eq!(layer["route"], "push", "{layer}");
    let log = String::from_utf8_lossy(&run.stderr);
    // The survey: every layer asked about, none uploaded unasked.
    assert_eq!(
        log.matches("Layer already exists").count(),
        2 * img.layer_diff_ids.len() - 1,
        "every layer asked about in the survey, all but the wanted one in the capture:\n{log}"
    );
    assert!(temporary_tags(&d).is_empty(), "{:?}", temporary_tags(&d));
}

/// A daemon that recorded digests for two layers asks about both at once
/// and uploads the one between unasked. The survey answers those `HEAD`s
/// one at a time, so each "Layer already exists" matches one (should the
/// daemon be slow to report, the two form a group whose blobs the capture
/// both asks for, and the writer keeps the top's by its diff ID); the
/// survey is dropped and the middle layer never uploaded whole.
#[test]
fn two_layers_asked_about_at_once_are_captured_without_pushing_the_rest() {
    let test = "two_layers_asked_about_at_once_are_captured_without_pushing_the_rest";
    let Some((d, img, out)) = capture_setup(test, 43, |d, seed| {
        three_layers(d, "dlgrab-e2e/two-asked", seed, 16 << 20)
    }) else {
        return;
    };
    let top = img.layer_diff_ids.len() - 1;
    let export = |args: &[&str], dir: &str| {
        let mut all = vec![img.tag.as_str()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--via", "push", "--json", "--debug", "-o"]);
        let path = out.path().join(dir);
        all.push(path_str(&path));
        d.dlgrab(&all)
    };
    // The daemon records a digest for the top, then for the base (each
    // captured; the middle's upload is dropped with the survey).
    exported(&export(&[], "top"), &img.layer_diff_ids[top]);
    exported(&export(&["--index", "0"], "base"), &img.layer_diff_ids[0]);

    let run = export(&[], "top-again");
    exported(&run, &img.layer_diff_ids[top]);
    let log = strip_ansi(&String::from_utf8_lossy(&run.stderr));
    assert!(
        !pushed_whole(&log, &img.layer_diff_ids[1]),
        "the middle layer was uploaded whole:\n{log}"
    );
    assert!(temporary_tags(&d).is_empty(), "{:?}", temporary_tags(&d));
    img.remove(&d);
}

/// Each upload session's size when its last request ended, from the
/// registry's debug lines ("upload request ended").
fn upload_totals(log: &str) -> HashMap<String, u64> {
    let mut totals = HashMap::new();
    for line in log.lines().filter(|l| l.contains("upload request ended")) {
        let field = |name: &str| {
            let at = line.find(&format!(" {name}="))? + name.len() + 2;
            let value = line[at..].split_whitespace().next()?;
            Some(value.trim_matches('"').to_owned())
        };
        if let (Some(id), Some(total)) = (field("upload_id"), field("total"))
            && let Ok(total) = total.parse::<u64>()
        {
            let slot = totals.entry(id).or_insert(0);
            *slot = total.max(*slot);
        }
    }
    totals
}

/// While a push will be dropped once the wanted layers are in, the layers
/// it does not want stop being read past the size the wanted ones can
/// have: the daemon stops compressing them. Both in the survey (the top of
/// a never-pushed image, uploaded unasked) and in the capture push (the
/// top asked about, once the daemon has recorded its digest), the 48 MiB
/// middle layer is held after a few MiB, never uploaded whole, and the top
/// comes out verified.
#[test]
fn layers_not_wanted_are_held_while_the_wanted_upload() {
    let test = "layers_not_wanted_are_held_while_the_wanted_upload";
    let Some((d, img, out)) = capture_setup(test, 47, |d, seed| {
        three_layers(d, "dlgrab-e2e/held", seed, 48 << 20)
    }) else {
        return;
    };
    let top = img.layer_diff_ids.len() - 1;
    for (round, dir) in ["survey", "capture"].iter().enumerate() {
        let path = out.path().join(dir);
        let run = d.dlgrab(&[
            &img.tag,
            "--via",
            "push",
            "--json",
            "--debug",
            "-o",
            path_str(&path),
        ]);
        exported(&run, &img.layer_diff_ids[top]);
        let log = strip_ansi(&String::from_utf8_lossy(&run.stderr));
        if round == 1 {
            assert!(
                log.contains("the wanted layers were asked about"),
                "the second run did not go by a capture push:\n{log}"
            );
            assert!(
                log.contains("a wanted layer is in"),
                "the capture did not tell the top's blob by its diff ID:\n{log}"
            );
        }
        assert!(
            !pushed_whole(&log, &img.layer_diff_ids[1]),
            "round {round}: the middle layer was uploaded whole:\n{log}"
        );
        // Every upload but the wanted top's (a few bytes) is the middle's
        // or the base's: none went past the bound (2 MiB and a frame),
        // unless a push that showed no progress for 5 s (a loaded machine)
        // released the hold, which it says.
        let totals = upload_totals(&log);
        assert!(!totals.is_empty(), "round {round}: no upload seen:\n{log}");
        if log.contains("no progress while uploads are held") {
            continue;
        }
        for (upload, total) in totals {
            assert!(
                total <= 3 << 20,
                "round {round}: upload {upload} took in {total} bytes:\n{log}"
            );
        }
    }
    assert!(temporary_tags(&d).is_empty(), "{:?}", temporary_tags(&d));
    img.remove(&d);
}
