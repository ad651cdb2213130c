//! `cargo xtask test`: lints, unit tests, then the daemon tests once per
//! daemon, several daemons side by side (they share no state: each has its
//! own data root, and the tests pick free ports and unique names).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::buildx;
use crate::daemons::{self, NAMES, describe};
use crate::root;
use crate::sh::{apt_install, run_logged, stream};

/// The daemons `cargo xtask test` runs by default: the whole matrix, the
/// longest suites first (Podman's builds are the slowest; d's suite also
/// runs the private-daemon faults), so that the short ones fill in beside
/// them. The copy tests run after all of them ([`copy_step`]). `n` is `d`
/// in a network namespace of its own: every daemon test runs there too.
/// `r` (rootless Podman) is the member's own daemon: its suite runs as the
/// member only.
const DEFAULT_DAEMONS: [&str; 8] = ["p", "r", "d", "n", "c", "a", "b", "e"];

/// How many daemons' suites run at once by default (2 cores: the suites
/// mostly wait on the daemons, 3 keeps both cores busy).
const DEFAULT_JOBS: usize = 3;

/// A daemon's suite is stopped after this long (a hung push must not hang CI).
const DAEMON_LIMIT: Duration = Duration::from_secs(40 * 60);

/// Debian packages the daemon tests use (`btrfs-progs`: the disk-quota test's
/// loop-mounted file system).
const PREREQUISITES: [&str; 4] = ["busybox-static", "skopeo", "docker-registry", "btrfs-progs"];

/// The outcome of one step.
#[derive(Debug, Default)]
struct Step {
    name: String,
    ok: bool,
    passed: u64,
    failed: u64,
    skipped: u64,
    /// Wall time of the step.
    time: Duration,
    /// Names of failed tests, or why the step failed.
    notes: Vec<String>,
}

/// Options of `cargo xtask test`.
struct Options {
    daemons: Vec<&'static str>,
    /// The daemons whose suite runs a second time as a non-root member of
    /// the `docker` group ([`MEMBER_DAEMONS`] by default).
    members: Vec<&'static str>,
    jobs: usize,
    lint: bool,
    unit: bool,
}

const USAGE: &str = "usage: cargo xtask test [--daemon a,b,c,d,e,p,n,r] [--member a,b,…|none] \
     [--jobs N] [--no-lint] [--no-unit]";

/// The daemons whose suite runs a second time as a non-root member of the
/// `docker` group (the user most people are), by default: every daemon
/// root's suites run on (`r`'s runs as the member only). What a member
/// cannot do (read the data root, mount, start daemons) skips there,
/// saying why; the rest runs as the member.
const MEMBER_DAEMONS: [&str; 7] = ["p", "d", "n", "c", "a", "b", "e"];

fn parse(args: &[&str]) -> Result<Options> {
    let mut opts = Options {
        daemons: Vec::new(),
        members: MEMBER_DAEMONS.to_vec(),
        jobs: DEFAULT_JOBS,
        lint: true,
        unit: true,
    };
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        match arg {
            "--no-lint" => opts.lint = false,
            "--no-unit" => opts.unit = false,
            "--daemon" => {
                let Some(&want) = args.next() else {
                    bail!("--daemon needs names among {}", NAMES.join(", "));
                };
                for name in want.split(',') {
                    let Some(&known) = NAMES.iter().find(|&&n| n == name) else {
                        bail!("unknown daemon {name:?}: one of {}", NAMES.join(", "));
                    };
                    if !opts.daemons.contains(&known) {
                        opts.daemons.push(known);
                    }
                }
            }
            "--member" => {
                let Some(&want) = args.next() else {
                    bail!("--member needs names among {}, or none", NAMES.join(", "));
                };
                opts.members.clear();
                for name in want.split(',').filter(|&n| n != "none") {
                    let Some(&known) = NAMES.iter().find(|&&n| n == name) else {
                        bail!("unknown daemon {name:?}: one of {}", NAMES.join(", "));
                    };
                    if !opts.members.contains(&known) {
                        opts.members.push(known);
                    }
                }
            }
            "--jobs" => {
                let jobs = args.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0);
                let Some(jobs) = jobs else {
                    bail!("--jobs needs a number above 0");
                };
                opts.jobs = jobs;
            }
            _ => bail!("unknown argument {arg:?}; {USAGE}"),
        }
    }
    if opts.daemons.is_empty() {
        opts.daemons = DEFAULT_DAEMONS.to_vec();
    }
    // A member pass needs its daemon up, that is, in the run.
    let daemons = opts.daemons.clone();
    opts.members.retain(|m| daemons.contains(m));
    Ok(opts)
}

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let opts = parse(args)?;
    let mut steps = Vec::new();

    if let Err(e) = apt_install(&PREREQUISITES) {
        steps.push(failed_step("prerequisites", format!("{e:#}")));
    }
    if opts.lint {
        steps.push(cargo_step("fmt", &["fmt", "--all", "--check"], &[]));
        steps.push(cargo_step(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        ));
    }
    if opts.unit {
        steps.push(cargo_step(
            "unit",
            &[
                "test",
                "--workspace",
                "--exclude",
                "dlgrab-tests",
                "--features",
                "shim-registry/cli",
            ],
            // dlgrab's completion tests load the scripts in zsh and fish
            // (.ci/run installs them): a missing shell fails, not skips.
            &[
                ("DLGRAB_REQUIRE_SKOPEO", "1"),
                ("DLGRAB_REQUIRE_SHELLS", "1"),
            ],
        ));
        steps.push(cargo_step(
            "testkit",
            &["test", "-p", "dlgrab-tests", "--lib"],
            &[],
        ));
        steps.push(cargo_step("package", &["xtask", "package"], &[]));
        // The static binary, tarball and .deb, checked in a scratch
        // container on the machine's dockerd (daemon a), before any
        // daemon's suite runs beside it.
        steps.push(cargo_step(
            "dist",
            &["xtask", "dist", "--check"],
            &[("DOCKER_HOST", "unix:///var/run/docker.sock")],
        ));
    }

    // Build the daemon tests once, and the dlgrab binary they run (found
    // beside the test binary in the same target folder); each daemon run
    // below reuses both.
    let bin = cargo_step("build dlgrab", &["build", "-p", "dlgrab"], &[]);
    let (mut build, lines) = cargo_step_lines(
        "build it",
        &["test", "-p", "dlgrab-tests", "--test", "it", "--no-run"],
        &[],
    );
    // `cargo test --no-run` names the test binary it built; the daemon
    // runs below start it directly, side by side, without cargo's lock.
    let it_exe = lines
        .iter()
        .rev()
        .find_map(|l| executable(l))
        // Relative to the workspace root; the runs start in `tests/`.
        .map(|p| root().join(p));
    if build.ok && it_exe.is_none() {
        build.ok = false;
        build
            .notes
            .push("cargo named no test executable".to_owned());
    }
    let built = bin.ok && build.ok;
    steps.push(bin);
    steps.push(build);
    // The BuildKit tests' docker-buildx plugin; without it they fail
    // (`DLGRAB_REQUIRE_BUILDX=1`), each saying so.
    let buildx_config = match buildx::plugin_config() {
        Ok(config) => Some(config),
        Err(e) => {
            steps.push(failed_step("buildx", format!("{e:#}")));
            None
        }
    };
    let mut hosts = Vec::new();
    for (name, result) in daemons::up(&opts.daemons) {
        match result {
            Ok(daemon) => {
                println!("{}", describe(&daemon));
                hosts.push((name, Some(daemon.host)));
            }
            Err(e) => {
                eprintln!("xtask: daemon {name} is missing: {e:#}");
                hosts.push((name, None));
                steps.push(failed_step(
                    &format!("daemon {name}"),
                    format!("daemon missing: {e:#}"),
                ));
            }
        }
    }
    if let (true, Some(exe)) = (built, it_exe) {
        let up: Vec<(&str, String)> = hosts
            .into_iter()
            .filter_map(|(name, host)| Some((name, host?)))
            .collect();
        let copy = copy_step(&exe, &up, buildx_config.clone());
        // A rootless daemon is the member's own: its suite runs as the
        // member only.
        let member_only = |name: &str| daemons::rootless(name);
        let mut suites: Vec<Suite> = up
            .iter()
            .filter(|(name, _)| !member_only(name))
            .map(|(name, host)| Suite {
                name,
                host: host.clone(),
                member: None,
            })
            .collect();
        let members: Vec<&(&str, String)> = up
            .iter()
            .filter(|(n, _)| opts.members.contains(n) || member_only(n))
            .collect();
        if !members.is_empty() {
            match Member::get() {
                Ok(member) => {
                    for (name, host) in members {
                        // A member-only suite where its daemon stands in
                        // the run's order; another right after the
                        // daemon's own suite, or as soon as it is done
                        // ([`daemon_steps`] never runs both at once).
                        let at = if member_only(name) {
                            up.iter()
                                .position(|(n, _)| n == name)
                                .unwrap_or(suites.len())
                        } else {
                            suites
                                .iter()
                                .position(|s| s.name == *name)
                                .map_or(suites.len(), |i| i + 3)
                        }
                        .min(suites.len());
                        suites.insert(
                            at,
                            Suite {
                                name,
                                host: host.clone(),
                                member: Some(member.clone()),
                            },
                        );
                    }
                }
                Err(e) => steps.push(failed_step("member", format!("{e:#}"))),
            }
        }
        steps.extend(daemon_steps(
            &exe,
            suites,
            opts.jobs,
            buildx_config.as_deref(),
        ));
        steps.extend(copy.map(|run| run()));
    }

    summary(&steps)
}

/// One run of the integration tests: against daemon `name`, as root or as
/// a `docker` group member.
struct Suite {
    name: &'static str,
    host: String,
    member: Option<Member>,
}

impl Suite {
    /// The step's name and log file's stem: `a`, or `a-member`.
    fn label(&self) -> String {
        match self.member {
            None => self.name.to_owned(),
            Some(_) => format!("{}-member", self.name),
        }
    }
}

/// The non-root `docker` group member the member passes run as (testkit
/// makes the user), and a home folder of its own.
#[derive(Clone)]
struct Member {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl Member {
    fn get() -> Result<Member> {
        let member = testkit::DockerMember::try_get()
            .map_err(|e| anyhow::anyhow!("no docker group member to run as: {e}"))?;
        let (uid, gid) = member.ids();
        let home = root().join("target/xtask/member-home");
        std::fs::create_dir_all(&home)?;
        std::os::unix::fs::chown(&home, Some(uid), Some(gid))?;
        Ok(Member { uid, gid, home })
    }
}

/// Runs the suites, up to `jobs` at a time but never two on one daemon at
/// once (each checks that its daemon's image list ends as it began), each
/// into its own log; returns one step per suite, in the given order.
fn daemon_steps(
    exe: &Path,
    suites: Vec<Suite>,
    jobs: usize,
    buildx_config: Option<&Path>,
) -> Vec<Step> {
    let logs = root().join("target/xtask/test-logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        return vec![failed_step("daemon logs", format!("{e:#}"))];
    }
    let order: Vec<String> = suites.iter().map(Suite::label).collect();
    let jobs = jobs.min(suites.len()).max(1);
    println!(
        "\n==== daemon tests: {} ({jobs} at a time; logs in {})",
        order.join(", "),
        logs.display()
    );
    let queue = Arc::new(Mutex::new((VecDeque::from(suites), Vec::<&str>::new())));
    let done = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (queue, done, logs) = (Arc::clone(&queue), Arc::clone(&done), logs.clone());
            let exe = exe.to_path_buf();
            let buildx_config = buildx_config.map(Path::to_path_buf);
            thread::spawn(move || {
                loop {
                    let next = {
                        let mut guard = queue.lock().expect("no panics while locked");
                        let (waiting, busy) = &mut *guard;
                        if waiting.is_empty() {
                            break;
                        }
                        let free = waiting.iter().position(|s| !busy.contains(&s.name));
                        free.and_then(|i| waiting.remove(i))
                            .inspect(|s| busy.push(s.name))
                    };
                    let Some(suite) = next else {
                        // Every waiting suite's daemon is busy: wait a little.
                        thread::sleep(Duration::from_secs(2));
                        continue;
                    };
                    let log = logs.join(format!("{}.log", suite.label()));
                    let step = daemon_step(&exe, &suite, buildx_config.as_deref(), &log);
                    done.lock().expect("no panics while locked").push(step);
                    let mut guard = queue.lock().expect("no panics while locked");
                    guard.1.retain(|&n| n != suite.name);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let mut steps = std::mem::take(&mut *done.lock().expect("no panics while locked"));
    steps.sort_by_key(|s| order.iter().position(|n| s.name == format!("daemon {n}")));
    steps
}

/// The daemon the copy (`--to`) tests run from, and the peers they copy to.
const COPY_FROM: &str = "d";
const COPY_PEERS: [&str; 4] = ["a", "b", "c", "e"];

/// The copy tests, as a step to run once every daemon's suite is done:
/// they make images on their peers, which would disturb those daemons'
/// own suites running beside them (their "the image list is unchanged"
/// checks, the pushes they watch). `None` unless d and every peer are up.
fn copy_step<'a>(
    exe: &'a Path,
    up: &[(&'static str, String)],
    buildx_config: Option<PathBuf>,
) -> Option<impl FnOnce() -> Step + 'a> {
    let host = |name: &str| up.iter().find(|(n, _)| *n == name).map(|(_, h)| h.clone());
    let from = host(COPY_FROM)?;
    let peers = COPY_PEERS
        .iter()
        .map(|n| Some(format!("{n}={}", host(n)?)))
        .collect::<Option<Vec<_>>>()?
        .join(" ");
    Some(move || {
        let logs = root().join("target/xtask/test-logs");
        let mut cmd = Command::new(exe);
        cmd.arg("copy::")
            .current_dir(root().join("tests"))
            .env("CARGO_MANIFEST_DIR", root().join("tests"))
            .env("DOCKER_HOST", &from)
            .env("DLGRAB_TEST_DAEMON", COPY_FROM)
            .env("DLGRAB_REQUIRE_DAEMON", "1")
            .env("DLGRAB_TEST_PEERS", peers)
            .env(testkit::ENV_REQUIRE_BUILDX, "1");
        if let Some(config) = &buildx_config {
            cmd.env(testkit::ENV_BUILDX_CONFIG, config);
        }
        suite_step("copy", cmd, &from, &logs.join("copy.log"))
    })
}

/// Tests left out on a daemon in a network namespace of its own (`n`): each
/// has the daemon reach a registry on our 127.0.0.1, which it cannot there
/// (pulling a test image from a local registry, `docker push` into the
/// shim, or `--via push`, which then fails with the daemon's `connection
/// refused` as asked). What such a daemon serves (auto, the store and
/// archive routes, `--since`, the seed formats) runs there in full.
const NEEDS_OUR_LOOPBACK: &[&str] = &[
    "archive::a_docker_group_member_captures_and_cancels_a_push",
    "buildkit::a_pulled_docker_manifest_list_exports_every_way",
    "buildkit::a_pulled_oci_index_with_an_attestation_exports_every_way",
    "buildkit::buildkit_copy_link_with_env_and_label_rows_exports_every_way",
    "buildkit::buildkit_default_with_provenance_exports_every_way",
    "buildkit::buildkit_with_sbom_exports_every_way",
    "buildkit::buildkit_without_provenance_exports_every_way",
    "buildkit::buildkit_zstd_layers_export_every_way",
    "copy::copies_buildkit_images_with_attestations",
    "export::a_run_on_the_port_an_earlier_run_used_still_gets_the_layer",
    "export::a_top_layer_without_a_history_id_is_named_as_docker_save_names_it",
    "export::short_ids_names_and_both_routes_give_the_same_layer",
    "export::sigterm_stops_the_export_and_leaves_nothing_behind",
    "export::the_image_list_is_unchanged_with_and_without_clean",
    "faults::a_disk_quota_exceeded_is_named_and_leaves_nothing",
    "faults::a_full_disk_is_named_and_leaves_nothing",
    "imported::an_imported_tar_a_strict_parser_refuses_goes_by_every_route",
    "platform::an_absent_platform_is_an_error_naming_the_ones_there",
    "platform::another_local_platform_is_exported_where_the_daemon_selects_it",
    "registry::dlgrab_registry_answers_only_its_run",
    "registry::docker_login_push_and_pull_with_bearer_tokens",
    "registry::docker_push_into_the_shim",
    "routes::a_pulled_then_retagged_image_is_asked_about_and_nothing_crosses_in_the_survey",
    "routes::capture_and_cancel_takes_the_top_layer_then_the_daemon_pushes_as_before",
    "routes::layers_not_wanted_are_held_while_the_wanted_upload",
    "routes::two_layers_asked_about_at_once_are_captured_without_pushing_the_rest",
    "shim_seed::docker_save_seeded_and_pulled_back",
    "writer::seed_folder_from_a_push_loads_back_with_the_same_id",
];

/// One daemon's run of the integration-test binary, its output in `log`.
/// (The `--to` tests skip there: no peers; see [`copy_step`].) The
/// BuildKit tests get `buildx_config` (a Docker CLI config folder with the
/// docker-buildx plugin) and must have it. A daemon in a network namespace
/// of its own (`n`) gets `DLGRAB_TEST_NETNS=1` and its plain TCP host in
/// `DLGRAB_TEST_TCP_HOST`.
fn daemon_step(exe: &Path, suite: &Suite, buildx_config: Option<&Path>, log: &Path) -> Step {
    let (name, host) = (suite.name, suite.host.as_str());
    let mut cmd = match &suite.member {
        None => Command::new(exe),
        Some(member) => {
            // `--init-groups`: the member's groups, `docker` among them.
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", member.uid))
                .arg(format!("--regid={}", member.gid))
                .args(["--init-groups", "--"])
                .arg(exe)
                .env("HOME", &member.home)
                // The binary "build dlgrab" made, beside `deps/` where the
                // test binary is: the member has no cargo to build it.
                .env(
                    "DLGRAB_BIN",
                    exe.parent()
                        .and_then(Path::parent)
                        .map_or_else(|| root().join("target/debug/dlgrab"), |p| p.join("dlgrab")),
                )
                .env("USER", testkit::MEMBER)
                .env("TMPDIR", "/tmp")
                // insta finds the snapshots by `cargo metadata`, and the
                // member has no cargo.
                .env("INSTA_WORKSPACE_ROOT", root())
                .env("INSTA_UPDATE", "no");
            cmd
        }
    };
    cmd.current_dir(root().join("tests"))
        .env("CARGO_MANIFEST_DIR", root().join("tests"))
        .env("DOCKER_HOST", host)
        .env("DLGRAB_TEST_DAEMON", name)
        .env("DLGRAB_REQUIRE_DAEMON", "1")
        .env(testkit::ENV_REQUIRE_BUILDX, "1");
    if let Some(config) = buildx_config {
        cmd.env(testkit::ENV_BUILDX_CONFIG, config);
    }
    if daemons::own_netns(name) {
        cmd.env(testkit::ENV_NETNS, "1");
        for test in NEEDS_OUR_LOOPBACK {
            cmd.args(["--skip", test]);
        }
    }
    if let Some(tcp) = daemons::tcp_host(name) {
        cmd.env(testkit::ENV_TCP_HOST, tcp);
    }
    suite_step(&format!("daemon {}", suite.label()), cmd, host, log)
}

/// Runs `cmd` (the integration-test binary), its output in `log`, and
/// reads its counts.
fn suite_step(step_name: &str, mut cmd: Command, host: &str, log: &Path) -> Step {
    let step_name = step_name.to_owned();
    let name = step_name.trim_start_matches("daemon ").to_owned();
    println!("==== {step_name}: started, DOCKER_HOST={host}");
    let started = Instant::now();
    let (status, lines) = match run_logged(&mut cmd, log, DAEMON_LIMIT) {
        Ok(done) => done,
        Err(e) => return failed_step(&step_name, format!("{e:#}")),
    };
    let mut step = read_step(&step_name, status.is_some_and(|s| s.success()), &lines);
    step.time = started.elapsed();
    if status.is_none() {
        step.notes
            .push(format!("stopped after {} min", DAEMON_LIMIT.as_secs() / 60));
    }
    let result = if step.ok { "ok" } else { "FAILED" };
    println!(
        "==== {step_name}: {result}, {} passed, {} failed, {} skipped in {:.0} s (log: {})",
        step.passed,
        step.failed,
        step.skipped,
        step.time.as_secs_f64(),
        log.display()
    );
    if !step.ok {
        // The failures' own output, as libtest prints it at the end.
        let from = lines
            .iter()
            .position(|l| l == "failures:")
            .unwrap_or(lines.len().saturating_sub(40));
        for line in lines[from..].iter().take(400) {
            println!("[{name}] {line}");
        }
    }
    step
}

fn failed_step(name: &str, why: String) -> Step {
    Step {
        name: name.to_owned(),
        notes: vec![why],
        ..Step::default()
    }
}

/// Runs `cargo <args>` with `env`, streamed, and reads libtest's counts from its output.
fn cargo_step(name: &str, args: &[&str], env: &[(&str, &str)]) -> Step {
    cargo_step_lines(name, args, env).0
}

/// [`cargo_step`], also returning every line cargo printed.
fn cargo_step_lines(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Step, Vec<String>) {
    println!("\n==== {name}: cargo {}", args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(args).envs(env.iter().copied());
    let started = Instant::now();
    let (status, lines) = match stream(&mut cmd) {
        Ok(done) => done,
        Err(e) => return (failed_step(name, format!("{e:#}")), Vec::new()),
    };
    let mut step = read_step(name, status.success(), &lines);
    step.time = started.elapsed();
    if !step.ok && step.notes.is_empty() {
        step.notes.push(format!("cargo exited with {status}"));
    }
    (step, lines)
}

/// `  Executable tests/it.rs (target/debug/deps/it-0123abcd)` → the path.
fn executable(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("Executable ")?;
    rest.rsplit_once('(')?.1.strip_suffix(')')
}

/// A step's outcome read from libtest's output lines.
fn read_step(name: &str, ok: bool, lines: &[String]) -> Step {
    let mut step = Step {
        name: name.to_owned(),
        ok,
        ..Step::default()
    };
    for line in lines {
        if let Some(counts) = line.strip_prefix("test result: ") {
            let (passed, failed, ignored) = parse_counts(counts);
            step.passed += passed;
            step.failed += failed;
            step.skipped += ignored;
        } else if line.starts_with("SKIP ") {
            step.skipped += 1;
        } else if let Some(test) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            step.notes.push(test.to_owned());
        }
    }
    if !step.ok && step.notes.is_empty() {
        step.notes.push("exited with a failure".to_owned());
    }
    step
}

/// `ok. 3 passed; 1 failed; 2 ignored; 0 measured; …` → (3, 1, 2).
fn parse_counts(text: &str) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for part in text.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(number)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = number.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => counts.0 += n,
            "failed" => counts.1 += n,
            "ignored" => counts.2 += n,
            _ => {}
        }
    }
    counts
}

/// Prints the table and the final `N passed, N failed` line; fails if any step failed.
fn summary(steps: &[Step]) -> Result<()> {
    println!("\n==== summary");
    println!(
        "{:<14} {:<6} {:>7} {:>7} {:>8} {:>8}",
        "step", "result", "passed", "failed", "skipped", "time"
    );
    for s in steps {
        let result = if s.ok { "ok" } else { "FAILED" };
        let secs = s.time.as_secs();
        println!(
            "{:<14} {:<6} {:>7} {:>7} {:>8} {:>4}m{:02}s",
            s.name,
            result,
            s.passed,
            s.failed,
            s.skipped,
            secs / 60,
            secs % 60
        );
        if !s.ok {
            for note in &s.notes {
                println!("    {note}");
            }
        }
    }
    let passed: u64 = steps.iter().map(|s| s.passed).sum();
    let failed: u64 = steps.iter().map(|s| s.failed).sum();
    let bad: Vec<&str> = steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    println!("{passed} passed, {failed} failed");
    if !bad.is_empty() {
        bail!("failed: {}", bad.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MEMBER_DAEMONS, executable, parse, parse_counts};

    #[test]
    fn reads_the_test_executable() {
        assert_eq!(
            executable("  Executable tests/it/main.rs (target/debug/deps/it-0123abcd)"),
            Some("target/debug/deps/it-0123abcd")
        );
        assert_eq!(executable("   Compiling dlgrab v0.1.0"), None);
    }

    #[test]
    fn member_passes_are_picked_among_the_daemons_run() {
        let members = |args: &[&str]| parse(args).expect("valid").members;
        assert_eq!(members(&[]), MEMBER_DAEMONS.to_vec());
        assert_eq!(members(&["--daemon", "a,b"]), vec!["a", "b"]);
        assert_eq!(members(&["--daemon", "r,a"]), vec!["a"]);
        assert_eq!(members(&["--member", "b,b", "--daemon", "a,b"]), vec!["b"]);
        assert!(members(&["--member", "none"]).is_empty());
        assert!(parse(&["--member", "z"]).is_err());
        assert!(parse(&["--member"]).is_err());
    }

    #[test]
    fn reads_libtest_counts() {
        assert_eq!(
            parse_counts(
                "ok. 3 passed; 1 failed; 2 ignored; 0 measured; 5 filtered out; finished in 0.01s"
            ),
            (3, 1, 2)
        );
        assert_eq!(
            parse_counts("FAILED. 0 passed; 4 failed; 0 ignored; 0 measured; 0 filtered out"),
            (0, 4, 0)
        );
    }
}
