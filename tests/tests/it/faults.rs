//! Crash safety and faults, end to end: a run killed mid-export leaves
//! leftovers that the next run sweeps (a live run's are kept); a full disk,
//! an exceeded disk quota, a read-only output folder, a daemon that hangs,
//! dies or restarts in the middle of a push or a save each fail with their
//! cause named, a non-zero exit, nothing half-written and no temporary tag
//! left for good.
//!
//! The daemon faults run on a private dockerd (the binaries of daemon `d`),
//! never on the shared daemons of the matrix, and only in the suite of `d`
//! (or outside `cargo xtask test`).

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use testkit::{
    BuiltImage, Daemon, ImageBuilder, PrivateDaemon, Tmpfs, daemon_or_skip, succeeded, unique_name,
};

#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// dlgrab's temporary tags on `daemon`.
fn temp_tags(daemon: &Daemon) -> Vec<String> {
    daemon
        .image_refs()
        .into_iter()
        .filter_map(|r| r.split_whitespace().next().map(str::to_owned))
        .filter(|r| r.contains("/dlgrab-run-"))
        .collect()
}

/// dlgrab's temporary tags of image `id` on `daemon`.
fn temp_tags_of(daemon: &Daemon, id: &str) -> Vec<String> {
    daemon
        .image_refs()
        .into_iter()
        .filter(|r| r.contains("/dlgrab-run-") && r.ends_with(id))
        .collect()
}

/// The temporary tag of the run with this pid (`…/dlgrab-run-HOST-BOOT-PID-START-N:export`).
fn tag_of(daemon: &Daemon, pid: u32) -> Option<String> {
    temp_tags(daemon).into_iter().find(|t| {
        t.split("/dlgrab-run-")
            .nth(1)
            .and_then(|rest| rest.split('-').nth(2))
            == Some(pid.to_string().as_str())
    })
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dlgrab did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Starts `dlgrab args` and stops it (SIGSTOP) once its temporary tag is on
/// the daemon: the run is then frozen mid-push, alive, its tag and scratch
/// folder in place. The scratch folder (in `-o`'s folder) is watched, a
/// cheap look every few milliseconds, and the tag checked once it is there:
/// a push on the containerd store is over in a fraction of a second. A run
/// that ended first is tried again (eight times).
fn stopped_mid_push(daemon: &Daemon, args: &[&str]) -> (Child, String) {
    let out = args
        .iter()
        .position(|a| *a == "-o")
        .and_then(|i| args.get(i + 1))
        .map(Path::new)
        .expect("the run writes into a folder (-o)");
    for _ in 0..8 {
        let mut child = daemon
            .dlgrab_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dlgrab starts");
        let pid = child.id();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            let pid_part = format!("-{pid}-");
            let scratch = listing(out)
                .iter()
                .any(|n| n.starts_with(".dlgrab-scratch-run-") && n.contains(&pid_part));
            if scratch {
                signal(pid, "STOP");
                if let Some(tag) = tag_of(daemon, pid) {
                    return (child, tag);
                }
                // Not tagged yet, or untagged already: look again (a run
                // that ends is tried anew).
                signal(pid, "CONT");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        signal(pid, "KILL");
        let _ = child.wait();
    }
    panic!("never caught dlgrab mid-push in eight tries");
}

/// Ctrl-C while the daemon pushes: exit 130, the temporary tag removed, no
/// scratch folder or partial output left, the image list as before.
#[test]
fn ctrl_c_mid_push_leaves_nothing() {
    let Some(daemon) = daemon_or_skip("faults::ctrl_c_mid_push_leaves_nothing") else {
        return;
    };
    let img = big_image(&daemon, "dlgrab-e2e/ctrl-c", 16 << 20, 0xc7c);
    let before = daemon.image_refs();
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().to_str().expect("utf-8");
    let (mut child, tag) = stopped_mid_push(&daemon, &[&img.tag, "--via", "push", "-q", "-o", dir]);
    let pid = child.id();
    signal(pid, "INT");
    signal(pid, "CONT");
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{}", stderr_of(&mut child));
    assert!(
        !daemon.image_refs().contains(&tag),
        "the temporary tag {tag} is left"
    );
    assert_eq!(daemon.image_refs(), before, "the image list changed");
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
    img.remove(&daemon);
}

fn big_image(daemon: &Daemon, prefix: &str, size: u64, seed: u64) -> BuiltImage {
    ImageBuilder::new(&format!("{}:1", unique_name(prefix)))
        .random_file("/big", size, seed)
        .build(daemon)
}

#[test]
fn a_killed_runs_leftovers_are_swept_and_a_live_runs_are_not() {
    let Some(d) =
        daemon_or_skip("faults::a_killed_runs_leftovers_are_swept_and_a_live_runs_are_not")
    else {
        return;
    };
    let img = big_image(&d, "dlgrab-e2e/sweep", 64 << 20, 31);
    let before = d.image_refs();
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().to_str().expect("utf-8");
    let args = [img.tag.as_str(), "--via", "push", "-q", "-o", dir];

    // A run killed mid-push, as by the OOM killer.
    let (mut dead, dead_tag) = stopped_mid_push(&d, &args);
    d.remove_when_done(&dead_tag);
    let dead_pid = format!("-{}-", dead.id());
    signal(dead.id(), "KILL");
    let _ = dead.wait();
    let left = listing(out.path());
    assert!(
        left.iter()
            .any(|n| n.starts_with(".dlgrab-scratch-run-") && n.contains(&dead_pid)),
        "the killed run left no scratch folder: {left:?}"
    );
    assert!(temp_tags(&d).contains(&dead_tag));

    // The next run sweeps them as it starts; frozen (alive) mid-push, its
    // own leftovers-to-be are in place.
    let (mut live, live_tag) = stopped_mid_push(&d, &args);
    d.remove_when_done(&live_tag);
    let live_pid = format!("-{}-", live.id());
    let tags = temp_tags(&d);
    assert!(
        !tags.contains(&dead_tag),
        "the dead run's tag stayed: {tags:?}"
    );
    let now = listing(out.path());
    assert!(
        !now.iter().any(|n| n.contains(&dead_pid)),
        "the dead run's scratch stayed: {now:?}"
    );
    let live_scratch: Vec<&String> = now
        .iter()
        .filter(|n| n.starts_with(".dlgrab-scratch-") && n.contains(&live_pid))
        .collect();
    assert_eq!(live_scratch.len(), 1, "{now:?}");

    // `dlgrab --clean` leaves a live run's tag and scratch alone...
    let clean = d.dlgrab(&["--clean", "--json", "-o", dir]);
    let report = testkit::result(&succeeded(&clean));
    assert!(!report.to_string().contains(&live_pid), "{report}");
    assert!(temp_tags(&d).contains(&live_tag));
    assert!(listing(out.path()).contains(live_scratch[0]));

    // ...and removes them, and says so, once that run is dead.
    signal(live.id(), "KILL");
    let _ = live.wait();
    let clean = d.dlgrab(&["--clean", "--json", "-o", dir]);
    let report = testkit::items(&succeeded(&clean));
    let removed = |what: &str| -> Vec<&str> {
        report
            .iter()
            .filter(|i| i["what"] == what && i["action"] == "removed")
            .filter_map(|i| i["name"].as_str())
            .collect()
    };
    assert_eq!(removed("tag"), [live_tag.as_str()], "{report:#?}");
    let files = removed("file");
    assert!(
        files
            .iter()
            .any(|p| p.contains(".dlgrab-scratch-run-") && p.contains(&live_pid)),
        "{report:#?}"
    );
    assert!(temp_tags(&d).is_empty(), "{:?}", temp_tags(&d));
    assert!(
        !listing(out.path())
            .iter()
            .any(|n| n.starts_with(".dlgrab-")),
        "{:?}",
        listing(out.path())
    );
    let again = d.dlgrab(&["--clean", "-o", dir]);
    let again = succeeded(&again);
    assert!(
        !again.contains("temporary tag") && !again.contains(dir),
        "{again}"
    );

    // An export then runs as usual, and the user's images are as they were.
    succeeded(&d.dlgrab(&[&img.tag, "-q", "-o", dir]));
    assert_eq!(d.image_refs(), before, "the user's images changed");
    img.remove(&d);
}

#[track_caller]
fn failed_naming(out: &std::process::Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "stderr should name {needle:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The routes that can run on `daemon` for these tests.
fn routes(daemon: &Daemon) -> Vec<&'static str> {
    let mut routes = vec!["push", "save"];
    if daemon.name != "p" {
        routes.push("store");
    }
    routes
}

#[test]
fn a_full_disk_is_named_and_leaves_nothing() {
    let Some(d) = daemon_or_skip("faults::a_full_disk_is_named_and_leaves_nothing") else {
        return;
    };
    let fs = match Tmpfs::mount(4 << 20, false) {
        Ok(fs) => fs,
        Err(why) => {
            skip("faults::a_full_disk_is_named_and_leaves_nothing", &why);
            return;
        }
    };
    let img = big_image(&d, "dlgrab-e2e/enospc", 16 << 20, 32);
    every_route_fails_naming(&d, &img, fs.path(), "no space left on device");
    img.remove(&d);
}

/// Exports `img` into `out` by every route `d` has: each fails within 40 s
/// naming `cause`, and leaves nothing in `out` and no temporary tag.
fn every_route_fails_naming(d: &Daemon, img: &BuiltImage, out: &Path, cause: &str) {
    let dir = out.to_str().expect("utf-8");
    // Built before the clock starts.
    testkit::dlgrab_bin();
    for via in routes(d) {
        let started = Instant::now();
        let run = d.dlgrab(&[&img.tag, "--via", via, "-o", dir]);
        if via == "store" && String::from_utf8_lossy(&run.stderr).contains("data root") {
            continue; // the data root is not readable here
        }
        failed_naming(&run, cause);
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "--via {via}: {cause} took {:?} to report",
            started.elapsed()
        );
        assert!(
            listing(out).is_empty(),
            "--via {via} left {:?}",
            listing(out)
        );
        assert_eq!(temp_tags_of(d, &img.id), [] as [String; 0], "--via {via}");
    }
}

/// A btrfs image loop-mounted on a new folder, its top-level qgroup limited
/// to `limit` bytes: writes beyond fail with EDQUOT, for root too (a qgroup
/// limit knows no CAP_SYS_RESOURCE exemption). This kernel has neither
/// tmpfs quotas (CONFIG_TMPFS_QUOTA) nor ext4's (CONFIG_QFMT_V2), hence
/// btrfs. Unmounted and removed on drop, nothing recursively.
struct QuotaFs {
    dir: std::path::PathBuf,
    mounted: bool,
}

impl QuotaFs {
    /// Needs root, a loop device and `mkfs.btrfs` (btrfs-progs); the error
    /// says what failed.
    fn mount(limit: u64) -> Result<QuotaFs, String> {
        let dir = std::env::temp_dir().join(unique_name("dlgrab-quota"));
        std::fs::create_dir_all(dir.join("mnt"))
            .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mut fs = QuotaFs {
            dir,
            mounted: false,
        };
        let image = fs.dir.join("image");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(128 << 20))
            .map_err(|e| format!("creating {}: {e}", image.display()))?;
        let mnt = fs.path();
        let run = |program: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let out = Command::new(program)
                .args(args)
                .output()
                .map_err(|e| format!("cannot run {program}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(
            "mkfs.btrfs",
            &["-q".as_ref(), "-f".as_ref(), "-M".as_ref(), image.as_ref()],
        )?;
        run(
            "mount",
            &["-o".as_ref(), "loop".as_ref(), image.as_ref(), mnt.as_ref()],
        )?;
        fs.mounted = true;
        run(
            "btrfs",
            &["quota".as_ref(), "enable".as_ref(), mnt.as_ref()],
        )?;
        let limit = limit.to_string();
        run(
            "btrfs",
            &[
                "qgroup".as_ref(),
                "limit".as_ref(),
                limit.as_ref(),
                mnt.as_ref(),
            ],
        )?;
        Ok(fs)
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.join("mnt")
    }
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        if self.mounted {
            // The loop device is freed with the mount (mount -o loop).
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
        let _ = std::fs::remove_file(self.dir.join("image"));
        let _ = std::fs::remove_dir(self.path());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_disk_quota_exceeded_is_named_and_leaves_nothing() {
    const TEST: &str = "faults::a_disk_quota_exceeded_is_named_and_leaves_nothing";
    let Some(d) = daemon_or_skip(TEST) else {
        return;
    };
    let fs = match QuotaFs::mount(4 << 20) {
        Ok(fs) => fs,
        Err(why) => {
            skip(TEST, &why);
            return;
        }
    };
    let img = big_image(&d, "dlgrab-e2e/edquot", 16 << 20, 33);
    every_route_fails_naming(&d, &img, &fs.path(), "disk quota exceeded");
    img.remove(&d);
}

#[test]
fn a_read_only_output_folder_is_named() {
    let Some(d) = daemon_or_skip("faults::a_read_only_output_folder_is_named") else {
        return;
    };
    let fs = match Tmpfs::mount(1 << 20, true) {
        Ok(fs) => fs,
        Err(why) => {
            skip("faults::a_read_only_output_folder_is_named", &why);
            return;
        }
    };
    let img = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-e2e/rofs")))
        .file("/f", "read-only\n")
        .build(&d);

    let dir = fs.path().to_str().expect("utf-8");
    for via in ["push", "save"] {
        let out = d.dlgrab(&[&img.tag, "--via", via, "-o", dir]);
        failed_naming(&out, "read-only file system");
        assert_eq!(temp_tags_of(&d, &img.id), [] as [String; 0], "--via {via}");
    }
    img.remove(&d);
}

/// The private-daemon tests run in the suite of `d` only (same binaries),
/// or outside `cargo xtask test`.
fn private_daemon_or_skip(test: &str) -> Option<(Daemon, PrivateDaemon)> {
    let d = daemon_or_skip(test)?;
    if !matches!(d.name.as_str(), "d" | "default") {
        skip(test, "runs in the suite of daemon d only");
        return None;
    }
    if !testkit::is_root() {
        skip(test, "starting a private dockerd needs root");
        return None;
    }
    match PrivateDaemon::start() {
        Ok(p) => Some((d, p)),
        Err(why) if std::env::var(testkit::ENV_REQUIRE_DAEMON).as_deref() == Ok("1") => {
            panic!("{test}: no private dockerd: {why}")
        }
        Err(why) => {
            skip(test, &format!("no private dockerd: {why}"));
            None
        }
    }
}

/// Starts `dlgrab args` on `daemon` with stderr piped; once `ready` says
/// so, stops it (SIGSTOP), runs `fault`, and lets it go on (SIGCONT).
fn frozen_while(
    daemon: &Daemon,
    args: &[&str],
    ready: impl Fn(u32) -> bool,
    fault: impl FnOnce(),
) -> Child {
    let mut child = daemon
        .dlgrab_command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dlgrab starts");
    let pid = child.id();
    let start = Instant::now();
    while !ready(pid) {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "dlgrab ended ({status}) before the fault:\n{}",
                stderr_of(&mut child)
            );
        }
        assert!(start.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(pid, "STOP");
    fault();
    signal(pid, "CONT");
    child
}

#[test]
fn a_daemon_that_hangs_dies_or_restarts_mid_export() {
    let test = "faults::a_daemon_that_hangs_dies_or_restarts_mid_export";
    let Some((_d, mut p)) = private_daemon_or_skip(test) else {
        return;
    };
    let img = big_image(&p.daemon, "dlgrab-e2e/private", 64 << 20, 33);
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().to_str().expect("utf-8");
    let daemon = p.daemon.clone();

    // 1. The daemon hangs mid-push (SIGSTOP): --timeout names it.
    let pd = p.pid().expect("dockerd runs");
    let mut child = frozen_while(
        &daemon,
        &[&img.tag, "--via", "push", "--timeout", "3", "-q", "-o", dir],
        |pid| tag_of(&daemon, pid).is_some(),
        || signal(pd, "STOP"),
    );
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    signal(pd, "CONT");
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sent nothing for 3 s"), "{stderr}");
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
    let clean = daemon.dlgrab(&["--clean", "-o", dir]);
    succeeded(&clean);
    assert!(temp_tags(&daemon).is_empty(), "{:?}", temp_tags(&daemon));

    // 2. The daemon is killed mid-push, then restarted: the error names the
    // lost daemon; the tag it kept is swept by the next run.
    let mut killed = false;
    let mut child = frozen_while(
        &daemon,
        &[&img.tag, "--via", "push", "-q", "-o", dir],
        |pid| tag_of(&daemon, pid).is_some(),
        || {
            p.kill();
            killed = true;
        },
    );
    assert!(killed);
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("docker daemon"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
    p.restart().expect("the private dockerd restarts");
    let daemon = p.daemon.clone();
    let left = temp_tags(&daemon);
    let next = daemon.dlgrab(&[&img.tag, "--via", "push", "-o", dir]);
    let stdout = succeeded(&next);
    for tag in &left {
        assert!(stdout.contains(tag.as_str()), "{tag} not swept:\n{stdout}");
    }
    assert!(temp_tags(&daemon).is_empty(), "{:?}", temp_tags(&daemon));
    std::fs::remove_dir_all(out.path()).expect("empty the output");
    std::fs::create_dir(out.path()).expect("mkdir");

    // 3. The daemon is killed mid-save: the cut stream is named, nothing is
    // left half-written.
    let mut child = frozen_while(
        &daemon,
        &[&img.tag, "--via", "save", "-q", "-o", dir],
        |_| {
            listing(out.path())
                .iter()
                .any(|n| n.starts_with(".dlgrab-tmp-"))
        },
        || p.kill(),
    );
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("save"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !listing(out.path())
            .iter()
            .any(|n| n.starts_with(".dlgrab-") || n.len() == 64),
        "{:?}",
        listing(out.path())
    );
}
