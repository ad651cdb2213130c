//! `cargo xtask bench export`: one layer out of a daemon, dlgrab against
//! `docker save | tar -x`, `skopeo copy docker-daemon:` and `cat` (the floor).
//!
//! Per scenario three layers are taken: the top (small), the middle and the
//! big base; dlgrab with `--via auto`, and on classic stores also with
//! `--via push` for the top layer (the push route where the layer store
//! cannot be read: capture and cancel on a never-pushed image).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::{BuiltImage, Daemon, ImageBuilder, unique_name};

use crate::bench::{
    Samples, Scratch, Timed, cargo_release_exe, opt_u64, parse_opts, pass, ratio,
    start_docker_registry, tail_text, timed, timed_pipe,
};
use crate::bench_reach;
use crate::daemons::{self, describe};
use crate::sh::{apt_install, capture};

/// Layers of the bench image: busybox, the big base file, middle, top.
const BASE: usize = 1;
const MIDDLE: usize = 2;
const TOP: usize = 3;
/// The size of the middle layer's random file (the app layer of S4).
const MIDDLE_BYTES: u64 = 1 << 20;
const APP_BYTES: u64 = 64 << 20;
/// Targets, dlgrab/save: the top layer with --via auto; the top of a
/// never-pushed image with --via push; the base layer (store route);
/// anything; and peak RSS.
const TARGET_PUSH: f64 = 0.05;
const TARGET_FORCED_PUSH: f64 = 0.1;
const TARGET_BASE: f64 = 0.5;
const TARGET_SAVE: f64 = 1.0;
const TARGET_RSS_MIB: f64 = 64.0;
/// Time limits.
const TOOL_LIMIT: Duration = Duration::from_secs(600);
const PUSH_LIMIT: Duration = Duration::from_secs(900);
/// Builds are tried this many times (the daemons are shared with other sessions).
const BUILD_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The containerd store, a locally built image (push route).
    Containerd,
    /// A classic store, the image pushed and pulled back (push route, HEAD first).
    Pulled,
    /// A classic store, a never-pushed image (save route).
    NeverPushed,
    /// A classic store, an app image (64 MiB app layer, small top) built on
    /// a pulled base.
    AppOnPulled,
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    key: &'static str,
    daemon: &'static str,
    kind: Kind,
}

const SPECS: [Spec; 5] = [
    Spec {
        key: "S1",
        daemon: "c",
        kind: Kind::Containerd,
    },
    Spec {
        key: "S2",
        daemon: "b",
        kind: Kind::Pulled,
    },
    Spec {
        key: "S3a",
        daemon: "a",
        kind: Kind::NeverPushed,
    },
    Spec {
        key: "S3b",
        daemon: "b",
        kind: Kind::NeverPushed,
    },
    Spec {
        key: "S4",
        daemon: "d",
        kind: Kind::AppOnPulled,
    },
];

/// The scenarios moved onto daemon `name` (`--daemon`): those its store
/// can play (S1 on a containerd store; S2 and S3 on a classic one, S3a and
/// S3b then being one), all of them unless `--scenarios` chose.
fn on_daemon(name: &str, wanted: Vec<Spec>, chosen: bool) -> Result<Vec<Spec>> {
    let Some(&daemon) = daemons::NAMES.iter().find(|&&n| n == name) else {
        bail!(
            "unknown daemon {name:?}: one of {}",
            daemons::NAMES.join(", ")
        );
    };
    let store = match daemons::up(&[daemon]).pop() {
        Some((_, Ok(d))) => d.store,
        Some((_, Err(e))) => return Err(e.context(format!("daemon {name} did not come up"))),
        None => bail!("daemon {name} did not come up"),
    };
    let fits = |kind: Kind| (kind == Kind::Containerd) == (store == testkit::Store::Containerd);
    let candidates = if chosen { wanted } else { SPECS.to_vec() };
    let mut specs: Vec<Spec> = Vec::new();
    for spec in candidates {
        if !fits(spec.kind) {
            if chosen {
                bail!(
                    "scenario {} needs another image store than daemon {name}'s",
                    spec.key
                );
            }
            continue;
        }
        if !specs.iter().any(|s| s.kind == spec.kind) {
            specs.push(Spec { daemon, ..spec });
        }
    }
    Ok(specs)
}

/// A scenario ready to measure.
struct Scenario {
    label: String,
    kind: Kind,
    daemon: Daemon,
    /// The reference every tool is given.
    image: String,
    /// Per layer (top, middle, base): its entry in `docker save`'s tar.
    entries: [String; 3],
}

/// Measurements of one (scenario, layer).
#[derive(Default)]
struct Cell {
    dlgrab: Samples,
    /// dlgrab with `--via push` (top layer, classic stores).
    push: Samples,
    save: Samples,
    skopeo: Samples,
    floor: Samples,
    rss_kib: Vec<u64>,
    layer_bytes: Option<u64>,
    /// The routes --via auto took.
    routes: Vec<String>,
    /// Distinct failure texts per tool.
    errors: Vec<(String, String)>,
    skopeo_na: bool,
}

impl Cell {
    fn fail(&mut self, tool: &str, text: String) {
        if !self.errors.iter().any(|(t, e)| t == tool && *e == text) {
            self.errors.push((tool.to_owned(), text));
        }
    }
}

/// Images and tags this bench made, removed when dropped.
#[derive(Default)]
pub(crate) struct Made(pub(crate) Vec<(Daemon, String)>);

impl Drop for Made {
    fn drop(&mut self) {
        for (daemon, reference) in self.0.iter().rev() {
            daemon.remove_image(reference);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Dlgrab,
    DlgrabPush,
    Save,
    Skopeo,
}

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let started = Instant::now();
    let opts = parse_opts(args, &["base-mib", "rounds", "scenarios", "daemon"])?;
    let base_mib = opt_u64(&opts, "base-mib", 256)?;
    let rounds = opt_u64(&opts, "rounds", 3)?;
    // nonroot, netns and remote (other users, other reaches) run apart.
    let (reach, others) = bench_reach::split_keys(opts.get("scenarios").copied().unwrap_or(""));
    if !reach.is_empty() {
        anyhow::ensure!(
            !opts.contains_key("daemon"),
            "--daemon moves S1–S4; nonroot, netns and remote name their daemons"
        );
        let measured = bench_reach::run(&reach, base_mib, rounds);
        if others.is_empty() {
            return measured;
        }
        measured?;
    }
    let mut wanted: Vec<Spec> = match opts.get("scenarios") {
        None => SPECS[..3].to_vec(),
        Some(_) => others
            .iter()
            .map(|k| {
                SPECS
                    .iter()
                    .find(|s| s.key.eq_ignore_ascii_case(k))
                    .copied()
                    .with_context(|| {
                        format!(
                            "unknown scenario {k:?}: S1, S2, S3a, S3b, S4, nonroot, netns, remote"
                        )
                    })
            })
            .collect::<Result<_>>()?,
    };
    if let Some(name) = opts.get("daemon") {
        wanted = on_daemon(name, wanted, opts.contains_key("scenarios"))?;
    }
    apt_install(&[
        "busybox-static",
        "docker-registry",
        "skopeo",
        "curl",
        "time",
    ])?;
    let dlgrab = cargo_release_exe(&["-p", "dlgrab"], "dlgrab")?;
    let scratch = Scratch::new("export")?;

    let mut names: Vec<&str> = wanted.iter().map(|s| s.daemon).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    let mut up: HashMap<&str, Daemon> = HashMap::new();
    for (name, daemon) in daemons::up(&names) {
        let daemon = daemon.with_context(|| format!("daemon {name} did not come up"))?;
        println!("{}", describe(&daemon));
        up.insert(name, daemon);
    }

    let mut made = Made::default();
    let mut scenarios = Vec::new();
    let mut skipped = Vec::new();
    for (k, spec) in wanted.iter().enumerate() {
        let daemon = up[spec.daemon].clone();
        let t = Instant::now();
        // A seed per run and scenario: no layer is shared with another
        // scenario's image or with a leftover of an interrupted run.
        let seed = (u64::from(std::process::id()) << 8) + k as u64 * 2;
        let scenario = match prepare(spec, daemon, base_mib, seed, &scratch, &mut made) {
            Ok(s) => s,
            Err(e) => {
                let text = format!("preparing {} failed: {e:#}", spec.key);
                println!("{text}");
                skipped.push(text);
                continue;
            }
        };
        println!(
            "{}: {} ready in {:.0} s; save entries top {} middle {}",
            scenario.label,
            scenario.image,
            t.elapsed().as_secs_f64(),
            scenario.entries[0],
            scenario.entries[1]
        );
        scenarios.push(scenario);
    }

    let layers = [("top", TOP), ("middle", MIDDLE), ("base", BASE)];
    let mut cells: Vec<[Cell; 3]> = scenarios.iter().map(|_| Default::default()).collect();
    let mut n = 0u64;
    for round in 0..rounds {
        let mut order = [Tool::Dlgrab, Tool::DlgrabPush, Tool::Save, Tool::Skopeo];
        if round % 2 == 1 {
            order.reverse();
        }
        for (s, scenario) in scenarios.iter().enumerate() {
            for (l, &(layer_name, index)) in layers.iter().enumerate() {
                let cell = &mut cells[s][l];
                for tool in order {
                    // --via push only for the top layer on classic stores;
                    // skopeo (always the whole image) once per scenario.
                    let classic = scenario.kind != Kind::Containerd;
                    if (tool == Tool::DlgrabPush && (index != TOP || !classic))
                        || (tool == Tool::Skopeo && index != TOP)
                    {
                        continue;
                    }
                    n += 1;
                    let dir = scratch.path(&format!("run-{n}"));
                    let line = match tool {
                        Tool::Dlgrab => {
                            measure_dlgrab(&dlgrab, scenario, index, None, &dir, &scratch, cell)
                        }
                        Tool::DlgrabPush => measure_dlgrab(
                            &dlgrab,
                            scenario,
                            index,
                            Some("push"),
                            &dir,
                            &scratch,
                            cell,
                        ),
                        Tool::Save => measure_save(scenario, l, &dir, &scratch, cell),
                        Tool::Skopeo => measure_skopeo(scenario, &dir, &scratch, cell),
                    };
                    let _ = fs::remove_dir_all(&dir);
                    println!(
                        "  round {} {} {layer_name:<6} {tool:?}: {line}",
                        round + 1,
                        scenario.label
                    );
                }
            }
        }
    }

    println!();
    println!(
        "bench export: base layer {base_mib} MiB, middle {} MiB (S4's app layer {} MiB), {rounds} round(s); seconds, median (min–max); \
         floor = `cat` of dlgrab's layer.tar (page-cached); RSS = dlgrab's max over rounds (/usr/bin/time %M); \
         dlgrab = --via auto (route in brackets), push = --via push",
        MIDDLE_BYTES >> 20,
        APP_BYTES >> 20
    );
    println!(
        "{:<30} | {:<6} | {:>9} | {:<22} | {:<22} | {:>9} | {:<22} | {:<22} | {:<22} | {:>11} | {:>13} | {:>9} | targets",
        "scenario",
        "layer",
        "layer.tar",
        "dlgrab",
        "push",
        "push/save",
        "docker save | tar -x",
        "skopeo copy",
        "cat floor",
        "dlgrab/save",
        "dlgrab/skopeo",
        "RSS MiB"
    );
    println!("{}", "-".repeat(206));
    let mut failures = 0;
    for (s, scenario) in scenarios.iter().enumerate() {
        for (l, &(layer_name, _)) in layers.iter().enumerate() {
            let c = &cells[s][l];
            let dl = c.dlgrab.median();
            let (r_save, save_shown) = ratio(dl, c.save.median());
            let (r_push, push_shown) = ratio(c.push.median(), c.save.median());
            let (_, skopeo_shown) = ratio(dl, c.skopeo.median());
            let rss = c.rss_kib.iter().max().map(|k| *k as f64 / 1024.0);
            let mut targets = Vec::new();
            let save_target = match (scenario.kind, l) {
                (_, 0) => TARGET_PUSH,
                (Kind::Containerd, _) => TARGET_SAVE,
                (_, 2) => TARGET_BASE,
                _ => TARGET_SAVE,
            };
            targets.push(format!(
                "/save ≤ {save_target} {}",
                pass(r_save.map(|r| r <= save_target))
            ));
            if l == 0 && scenario.kind != Kind::Containerd {
                let t = if scenario.kind == Kind::NeverPushed {
                    TARGET_FORCED_PUSH
                } else {
                    TARGET_SAVE
                };
                targets.push(format!("push/save ≤ {t} {}", pass(r_push.map(|r| r <= t))));
            }
            targets.push(format!(
                "RSS < {TARGET_RSS_MIB} {}",
                pass(rss.map(|r| r < TARGET_RSS_MIB))
            ));
            let cellshow = |v: &Samples, failed: bool| {
                if v.is_empty() && failed {
                    "FAILED".to_owned()
                } else {
                    v.show(3)
                }
            };
            let failed = |tool: &str| c.errors.iter().any(|(t, _)| t == tool);
            println!(
                "{:<30} | {:<6} | {:>9} | {:<22} | {:<22} | {:>9} | {:<22} | {:<22} | {:<22} | {:>11} | {:>13} | {:>9} | {}",
                scenario.label,
                layer_name,
                c.layer_bytes.map_or_else(|| "?".to_owned(), human_bytes),
                format!(
                    "{} [{}]",
                    cellshow(&c.dlgrab, failed("dlgrab")),
                    c.routes.join(",")
                ),
                cellshow(&c.push, failed("dlgrab --via push")),
                push_shown,
                cellshow(&c.save, failed("save")),
                if c.skopeo_na {
                    "n/a (see below)".to_owned()
                } else {
                    cellshow(&c.skopeo, failed("skopeo"))
                },
                c.floor.show(3),
                save_shown,
                skopeo_shown,
                rss.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.1}")),
                targets.join("; ")
            );
        }
    }
    for (s, scenario) in scenarios.iter().enumerate() {
        for (l, &(layer_name, _)) in layers.iter().enumerate() {
            for (tool, text) in &cells[s][l].errors {
                if tool != "skopeo" || !cells[s][l].skopeo_na {
                    failures += 1;
                }
                println!(
                    "\n{tool} failed in {} {layer_name} layer:\n{text}",
                    scenario.label
                );
            }
        }
    }
    drop(made);
    finish("bench export", failures, &skipped, started)
}

/// The end of a bench: the skipped scenarios (each a failure), the time it
/// took, and an error when anything failed.
pub(crate) fn finish(
    what: &str,
    mut failures: usize,
    skipped: &[String],
    started: std::time::Instant,
) -> Result<()> {
    for text in skipped {
        failures += 1;
        println!("\nscenario skipped: {text}");
    }
    println!("\n{what} took {:.0} s", started.elapsed().as_secs_f64());
    if failures > 0 {
        bail!("{failures} measurement(s) failed: see above");
    }
    Ok(())
}

/// Builds the scenario's image (and for S2 pushes and pulls it back).
fn prepare(
    spec: &Spec,
    daemon: Daemon,
    base_mib: u64,
    seed: u64,
    scratch: &Scratch,
    made: &mut Made,
) -> Result<Scenario> {
    let label = format!("{} {} ({})", spec.key, kind_name(spec.kind), daemon.name);
    let tag = format!(
        "{}:1",
        unique_name(&format!("dlgrab-bench/{}", spec.key.to_lowercase()))
    );
    println!("{label}: building {tag} (busybox, {base_mib} MiB base, 1 MiB middle, small top)");
    made.0.push((daemon.clone(), tag.clone()));
    let mut builder =
        ImageBuilder::new(&tag)
            .busybox()
            .random_file("/base.bin", base_mib << 20, seed);
    if spec.kind != Kind::AppOnPulled {
        builder = builder
            .random_file("/mid/data.bin", MIDDLE_BYTES, seed + 1)
            .file("/top.txt", format!("top layer {seed}\n"));
    }
    let built = build_with_retries(&builder.no_cache(), &daemon)?;
    let image = match spec.kind {
        Kind::Pulled => {
            // Pulled, then retagged and the pulled name removed: no repo
            // digest is left, the daemon still knows every layer's digest.
            let pulled = push_and_pull_back(&daemon, &tag, &built.id, scratch, made)?;
            let retagged = format!(
                "{}:1",
                unique_name(&format!(
                    "dlgrab-bench/{}-retagged",
                    spec.key.to_lowercase()
                ))
            );
            daemon.try_docker_stdout(["tag", &pulled, &retagged])?;
            made.0.push((daemon.clone(), retagged.clone()));
            daemon.remove_image(&pulled);
            retagged
        }
        Kind::AppOnPulled => {
            let pulled = push_and_pull_back(&daemon, &tag, &built.id, scratch, made)?;
            build_app(&daemon, &pulled, &label, seed, scratch, made)?
        }
        Kind::Containerd | Kind::NeverPushed => tag,
    };
    let layer_count = daemon.try_inspect(&image)?["RootFS"]["Layers"]
        .as_array()
        .map_or(0, Vec::len);
    anyhow::ensure!(
        layer_count == TOP + 1,
        "unexpected layer count {layer_count}"
    );
    let manifest = save_manifest(&daemon, &image)?;
    let layers = manifest[0]["Layers"]
        .as_array()
        .with_context(|| format!("no Layers in manifest.json: {manifest}"))?;
    let entry = |i: usize| {
        layers
            .get(i)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| format!("manifest.json has no layer {i}: {manifest}"))
    };
    Ok(Scenario {
        label,
        kind: spec.kind,
        daemon,
        entries: [entry(TOP)?, entry(MIDDLE)?, entry(BASE)?],
        image,
    })
}

/// Builds `builder`'s image in `daemon`. Other sessions share the daemons:
/// a concurrent prune can remove an intermediate image mid-build ("unknown
/// parent image ID", "No such image"); up to [`BUILD_ATTEMPTS`] attempts,
/// each failed one's intermediate images removed.
pub(crate) fn build_with_retries(builder: &ImageBuilder, daemon: &Daemon) -> Result<BuiltImage> {
    let mut attempt = 1;
    loop {
        match builder.try_build(daemon) {
            Ok(b) => return Ok(b),
            Err(e) if attempt < BUILD_ATTEMPTS => {
                let text = e.to_string();
                remove_intermediates(daemon, &text);
                let last = text.lines().last().unwrap_or_default();
                println!("  build attempt {attempt} failed ({last}); trying again");
                attempt += 1;
            }
            Err(e) => {
                remove_intermediates(daemon, &e.to_string());
                return Err(e.into());
            }
        }
    }
}

/// Builds the app image of S4 `FROM` the pulled base: a 64 MiB
/// incompressible app layer and a small top (classic builder).
fn build_app(
    daemon: &Daemon,
    base: &str,
    label: &str,
    seed: u64,
    scratch: &Scratch,
    made: &mut Made,
) -> Result<String> {
    let dir = scratch.path("s4-context");
    fs::create_dir_all(&dir)?;
    let mut app = vec![0u8; APP_BYTES as usize];
    let mut x = seed | 1;
    for chunk in app.chunks_mut(8) {
        // xorshift64: incompressible enough for gzip.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    fs::write(dir.join("app.bin"), &app)?;
    drop(app);
    fs::write(dir.join("top.txt"), format!("top layer {seed}\n"))?;
    fs::write(
        dir.join("Dockerfile"),
        format!("FROM {base}\nCOPY app.bin /mid/app.bin\nCOPY top.txt /top.txt\n"),
    )?;
    let tag = format!("{}:1", unique_name("dlgrab-bench/s4-app"));
    println!("{label}: building {tag} FROM {base} (64 MiB app layer, small top)");
    made.0.push((daemon.clone(), tag.clone()));
    let (ok, out, err) = capture(
        daemon
            .command()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &tag])
            .arg(&dir),
        PUSH_LIMIT,
    )?;
    let _ = fs::remove_dir_all(&dir);
    if !ok {
        bail!("docker build of {tag} failed: {}{}", out.trim(), err.trim());
    }
    Ok(tag)
}

/// Removes, best effort, the intermediate images a failed classic build
/// committed (the `---> <id>` lines of its output; never an image with a tag
/// or children, which `docker image rm` refuses without `--force`).
fn remove_intermediates(daemon: &Daemon, build_output: &str) {
    let ids: Vec<&str> = build_output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("---> "))
        .map(str::trim)
        .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    for id in ids.iter().rev() {
        daemon.remove_image(id);
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Containerd => "containerd",
        Kind::Pulled => "classic pulled",
        Kind::NeverPushed => "classic never-pushed",
        Kind::AppOnPulled => "classic app on pulled base",
    }
}

/// Pushes `tag` into a throw-away docker-registry, removes the image, pulls it
/// back (so that the daemon knows its digests) and returns the pulled name.
fn push_and_pull_back(
    daemon: &Daemon,
    tag: &str,
    id: &str,
    scratch: &Scratch,
    made: &mut Made,
) -> Result<String> {
    let registry = start_docker_registry(
        &scratch.path("s2-registry"),
        &scratch.path("s2-registry.yml"),
        &scratch.path("s2-registry.log"),
    )?;
    let remote = format!(
        "{}/dlgrab-bench-s2-{}:1",
        registry.host_port(),
        std::process::id()
    );
    daemon.try_docker_stdout(["tag", tag, &remote])?;
    made.0.push((daemon.clone(), remote.clone()));
    let docker = |args: &[&str]| -> Result<()> {
        let (ok, out, err) = capture(daemon.command().args(args), PUSH_LIMIT)?;
        if !ok {
            bail!(
                "docker {} failed: {}{}",
                args.join(" "),
                out.trim(),
                err.trim()
            );
        }
        Ok(())
    };
    let t = Instant::now();
    docker(&["push", &remote])?;
    println!("  pushed {remote} in {:.0} s", t.elapsed().as_secs_f64());
    daemon.remove_image(&remote);
    daemon.remove_image(tag);
    if daemon.try_inspect(id).is_ok() {
        bail!(
            "image {id} is still in daemon {} after removing its tags",
            daemon.name
        );
    }
    let t = Instant::now();
    docker(&["pull", &remote])?;
    println!("  pulled it back in {:.0} s", t.elapsed().as_secs_f64());
    let inspect = daemon.try_inspect(&remote)?;
    anyhow::ensure!(
        inspect["RepoDigests"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "the pulled image has no RepoDigests"
    );
    drop(registry);
    Ok(remote)
}

/// `manifest.json` of `docker save IMAGE`.
pub(crate) fn save_manifest(daemon: &Daemon, image: &str) -> Result<serde_json::Value> {
    let (ok, out, err) = capture(
        Command::new("sh")
            .args([
                "-c",
                "docker save \"$1\" | tar -xOf - manifest.json",
                "sh",
                image,
            ])
            .env("DOCKER_HOST", &daemon.host),
        TOOL_LIMIT,
    )?;
    if !ok {
        bail!(
            "docker save {image} | tar -xOf - manifest.json failed: {}",
            err.trim()
        );
    }
    serde_json::from_str(&out).with_context(|| format!("manifest.json of {image}: {out:?}"))
}

fn measure_dlgrab(
    exe: &Path,
    scenario: &Scenario,
    index: usize,
    via: Option<&str>,
    dir: &Path,
    scratch: &Scratch,
    cell: &mut Cell,
) -> String {
    let rss = scratch.path("rss");
    let _ = fs::remove_file(&rss);
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-o").arg(&rss).args(["-f", "%M"]).arg(exe);
    cmd.arg(&scenario.image);
    if index != TOP {
        cmd.args(["--index", &index.to_string()]);
    }
    if let Some(via) = via {
        cmd.args(["--via", via]);
    }
    let tool = if via.is_some() {
        "dlgrab --via push"
    } else {
        "dlgrab"
    };
    cmd.args(["-q", "--json", "-o"])
        .arg(dir)
        .env("DOCKER_HOST", &scenario.daemon.host);
    let err = scratch.path("dlgrab.err");
    let t = match timed(&mut cmd, &scratch.path("dlgrab.out"), &err, TOOL_LIMIT) {
        Ok(t) => t,
        Err(e) => {
            cell.fail(tool, format!("{e:#}"));
            return "cannot run".to_owned();
        }
    };
    if !t.ok() {
        let status = status_text(&t);
        cell.fail(tool, format!("({status}) {}", tail_text(&err, 4000)));
        return format!("FAILED ({status})");
    }
    let Some(layer) = find_file(dir, "layer.tar") else {
        cell.fail(
            tool,
            format!("succeeded but wrote no layer.tar under {}", dir.display()),
        );
        return "no layer.tar".to_owned();
    };
    let route = fs::read_to_string(scratch.path("dlgrab.out"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["items"][0]["route"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    if via.is_some() {
        cell.push.push(t.secs);
    } else {
        cell.dlgrab.push(t.secs);
        if !cell.routes.contains(&route) {
            cell.routes.push(route.clone());
        }
    }
    let kib = fs::read_to_string(&rss)
        .ok()
        .and_then(|s| s.trim().lines().last().and_then(|l| l.trim().parse().ok()));
    if let Some(kib) = kib {
        cell.rss_kib.push(kib);
    }
    let bytes = fs::metadata(&layer).map(|m| m.len()).ok();
    cell.layer_bytes = bytes.or(cell.layer_bytes);
    // The floor: reading the layer once.
    let mut cat = Command::new("cat");
    cat.arg(&layer);
    let floor = timed(
        &mut cat,
        Path::new("/dev/null"),
        &scratch.path("cat.err"),
        TOOL_LIMIT,
    );
    let floor = match floor {
        Ok(f) if f.ok() => {
            cell.floor.push(f.secs);
            format!("{:.3} s", f.secs)
        }
        _ => "failed".to_owned(),
    };
    format!(
        "{:.3} s [{route}], {} KiB RSS, {} bytes; cat {floor}",
        t.secs,
        kib.map_or_else(|| "?".to_owned(), |k: u64| k.to_string()),
        bytes.unwrap_or(0)
    )
}

fn measure_save(
    scenario: &Scenario,
    layer: usize,
    dir: &Path,
    scratch: &Scratch,
    cell: &mut Cell,
) -> String {
    let entry = &scenario.entries[layer];
    if let Err(e) = fs::create_dir_all(dir) {
        cell.fail("save", e.to_string());
        return "cannot create dir".to_owned();
    }
    let mut save = scenario.daemon.command();
    save.args(["save", &scenario.image]);
    let mut tar = Command::new("tar");
    tar.args(["-xf", "-", "-C"]).arg(dir).arg(entry);
    let err = scratch.path("save.err");
    match timed_pipe(&mut save, &mut tar, &err, TOOL_LIMIT) {
        Ok(t) if t.ok() && dir.join(entry).is_file() => {
            cell.save.push(t.secs);
            format!("{:.3} s", t.secs)
        }
        Ok(t) => {
            cell.fail(
                "save",
                format!("({}) {}", status_text(&t), tail_text(&err, 2000)),
            );
            "FAILED".to_owned()
        }
        Err(e) => {
            cell.fail("save", format!("{e:#}"));
            "cannot run".to_owned()
        }
    }
}

fn measure_skopeo(scenario: &Scenario, dir: &Path, scratch: &Scratch, cell: &mut Cell) -> String {
    if cell.skopeo_na {
        return "n/a".to_owned();
    }
    let mut cmd = Command::new("skopeo");
    // skopeo's docker-daemon transport ignores DOCKER_HOST.
    cmd.args(["copy", "-q", "--src-daemon-host", &scenario.daemon.host])
        .arg(format!("docker-daemon:{}", scenario.image))
        .arg(format!("dir:{}", dir.display()))
        .env("DOCKER_HOST", &scenario.daemon.host);
    let err = scratch.path("skopeo.err");
    match timed(&mut cmd, &scratch.path("skopeo.out"), &err, TOOL_LIMIT) {
        Ok(t) if t.ok() => {
            cell.skopeo.push(t.secs);
            format!("{:.3} s", t.secs)
        }
        Ok(t) => {
            let text = tail_text(&err, 2000);
            // A client too old for the daemon's API fails the same every time.
            if cell.skopeo.is_empty() {
                cell.skopeo_na = true;
            }
            cell.fail("skopeo", format!("({}) {text}", status_text(&t)));
            format!("n/a: {text}")
        }
        Err(e) => {
            cell.skopeo_na = true;
            cell.fail("skopeo", format!("{e:#}"));
            "cannot run".to_owned()
        }
    }
}

/// The first file named `name` under `dir`.
pub(crate) fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    let mut budget = 10_000;
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).ok()? {
            budget -= 1;
            if budget == 0 {
                return None;
            }
            let entry = entry.ok()?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name() == name {
                return Some(path);
            }
        }
    }
    None
}

pub(crate) fn status_text(t: &Timed) -> String {
    t.status
        .map_or_else(|| "killed at the time limit".to_owned(), |s| s.to_string())
}

pub(crate) fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / 1_048_576.0)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}
