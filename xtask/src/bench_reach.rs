//! `cargo xtask bench export --scenarios nonroot,netns,remote`: layers out
//! of daemons whose data root the user cannot read or that are not local,
//! dlgrab (`--via auto`) against the same user's `docker save IMAGE | tar
//! -x` through the same socket or host, interleaved round by round.
//!
//! - `nonroot`: as the `docker` group member `dlgrab-member`
//!   ([`DockerMember`], made if missing) on the unix sockets of a, b, d
//!   (classic), p (Podman), c and e (containerd store); both commands write
//!   into a folder the member owns.
//! - `rootless`: the member on daemon r, rootless Podman run by the member
//!   itself (its store the member's own files).
//! - `netns`: the member on daemon n's unix socket (n runs in a network
//!   namespace of its own: its 127.0.0.1 is not ours).
//! - `remote`: root on daemon n over `tcp://10.203.0.2:2375`, and over
//!   `ssh://` through a throw-away sshd on 127.0.0.1 whose sessions reach
//!   n (`testkit::Sshd`); the baselines are `docker -H tcp://… save` and
//!   `docker -H ssh://… save` through the same host.
//!
//! The image, built on each daemon and never pushed: busybox, a
//! `--base-mib` incompressible base (256 MiB by default), a 4 MiB
//! incompressible middle and a 1 KiB top. Targets (issue #25): every top
//! ≤ 0.15 of save locally (unix sockets and the veth's TCP), ≤ 0.3 over
//! ssh; the base ≤ 0.5; nothing above 1.0; dlgrab's peak RSS < 64 MiB.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::{Daemon, DockerMember, ImageBuilder, MemberDir, Sshd, unique_name};

use crate::bench::{Samples, Scratch, cargo_release_exe, pass, ratio, tail_text, timed};
use crate::bench_export::{
    Made, build_with_retries, find_file, human_bytes, save_manifest, status_text,
};
use crate::daemons::{self, N_TCP_HOST, describe};
use crate::sh::apt_install;

/// The scenarios of this module, as `--scenarios` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Nonroot,
    Rootless,
    Netns,
    Remote,
}

/// `--scenarios`' list split into this module's keys and the other names.
pub(crate) fn split_keys(list: &str) -> (Vec<Key>, Vec<&str>) {
    let mut keys = Vec::new();
    let mut others = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let key = match name.to_ascii_lowercase().as_str() {
            "nonroot" => Key::Nonroot,
            "rootless" => Key::Rootless,
            "netns" => Key::Netns,
            "remote" => Key::Remote,
            _ => {
                others.push(name);
                continue;
            }
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    (keys, others)
}

/// The daemons of `nonroot`, in the order measured.
const NONROOT_DAEMONS: [&str; 6] = ["a", "b", "d", "p", "c", "e"];
/// The member's own rootless daemon (`rootless`).
const ROOTLESS_DAEMON: &str = "r";
/// The daemon in a network namespace of its own (`netns`, `remote`).
const NETNS_DAEMON: &str = "n";
/// Layers of the image: busybox, base, middle, top; measured top first.
const LAYERS: [(&str, usize); 3] = [("top", 3), ("middle", 2), ("base", 1)];
const MIDDLE_BYTES: u64 = 4 << 20;
const TOP_BYTES: u64 = 1 << 10;
/// Targets, dlgrab/save.
const TARGET_TOP_LOCAL: f64 = 0.15;
const TARGET_TOP_SSH: f64 = 0.3;
const TARGET_BASE: f64 = 0.5;
const TARGET_ANY: f64 = 1.0;
const TARGET_RSS_MIB: f64 = 64.0;
/// Every measured command is killed after this.
const LIMIT: Duration = Duration::from_secs(600);
/// The baseline: the user's own `docker save | tar -x` of one entry.
const SAVE_SCRIPT: &str = "set -o pipefail; docker save \"$1\" | tar -xf - -C \"$2\" \"$3\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Unix,
    Tcp,
    Ssh,
}

/// One row group of the table: who runs both commands, against which host.
struct Case {
    label: String,
    /// The daemon the image was built in.
    daemon: &'static str,
    /// `DOCKER_HOST` of both commands.
    host: String,
    reach: Reach,
    /// Run as the docker group member (else as root).
    member: bool,
    /// `PATH` with the test sshd's `ssh` wrapper first (ssh only).
    path: Option<String>,
}

/// The bench image on one daemon.
struct Image {
    tag: String,
    /// Per layer of [`LAYERS`]: its entry in `docker save`'s tar.
    entries: [String; 3],
}

/// Measurements of one (case, layer).
#[derive(Default)]
struct Cell {
    dlgrab: Samples,
    save: Samples,
    rss_kib: Vec<u64>,
    routes: Vec<String>,
    layer_bytes: Option<u64>,
    /// Distinct failure texts per tool.
    errors: Vec<(&'static str, String)>,
}

impl Cell {
    fn fail(&mut self, tool: &'static str, text: String) {
        if !self.errors.iter().any(|(t, e)| *t == tool && *e == text) {
            self.errors.push((tool, text));
        }
    }
}

/// What every measurement needs.
struct Ctx {
    dlgrab: PathBuf,
    member: Option<DockerMember>,
    scratch: Scratch,
}

/// A run's output folder: the member's (removed on drop by [`MemberDir`])
/// or root's under the scratch folder.
enum RunDir {
    Member(MemberDir),
    Root(PathBuf),
}

impl RunDir {
    fn path(&self) -> &Path {
        match self {
            RunDir::Member(d) => d.path(),
            RunDir::Root(p) => p,
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let RunDir::Root(p) = self {
            let _ = fs::remove_dir_all(p);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Dlgrab,
    Save,
}

pub(crate) fn run(keys: &[Key], base_mib: u64, rounds: u64) -> Result<()> {
    let started = Instant::now();
    let mut packages = vec!["busybox-static", "time"];
    if keys.contains(&Key::Remote) {
        packages.extend(["openssh-server", "openssh-client"]);
    }
    apt_install(&packages)?;
    let dlgrab = cargo_release_exe(&["-p", "dlgrab"], "dlgrab")?;
    let version = Command::new(&dlgrab).arg("--version").output()?;
    println!("{}", String::from_utf8_lossy(&version.stdout).trim());
    let needs_member = keys
        .iter()
        .any(|k| matches!(k, Key::Nonroot | Key::Rootless | Key::Netns));
    let member = if needs_member {
        let m = DockerMember::try_get().map_err(|e| anyhow::anyhow!("docker group member: {e}"))?;
        anyhow::ensure!(
            m.can_run(&dlgrab),
            "{} cannot run {}: build into a target folder others can read",
            m.name,
            dlgrab.display()
        );
        Some(m)
    } else {
        None
    };
    let ctx = Ctx {
        dlgrab,
        member,
        scratch: Scratch::new("export-reach")?,
    };

    let mut names: Vec<&'static str> = Vec::new();
    if keys.contains(&Key::Nonroot) {
        names.extend(NONROOT_DAEMONS);
    }
    if keys.contains(&Key::Rootless) {
        names.push(ROOTLESS_DAEMON);
    }
    if keys.iter().any(|k| matches!(k, Key::Netns | Key::Remote)) {
        names.push(NETNS_DAEMON);
    }
    let mut up: HashMap<&'static str, Daemon> = HashMap::new();
    for (name, daemon) in daemons::up(&names) {
        let daemon = daemon.with_context(|| format!("daemon {name} did not come up"))?;
        println!("{}", describe(&daemon));
        up.insert(name, daemon);
    }
    // Kept until the end: the ssh cases dial through it.
    let sshd = if keys.contains(&Key::Remote) {
        let n = &up[NETNS_DAEMON];
        Some(Sshd::start(&n.host).map_err(|e| anyhow::anyhow!("sshd: {e}"))?)
    } else {
        None
    };
    let cases = cases(keys, &up, sshd.as_ref());

    let mut made = Made::default();
    let mut images: HashMap<&'static str, Image> = HashMap::new();
    let mut skipped = Vec::new();
    for (k, &name) in names.iter().enumerate() {
        let daemon = &up[name];
        let t = Instant::now();
        let seed = (u64::from(std::process::id()) << 8) + 100 + k as u64 * 4;
        match build(daemon, base_mib, seed, &mut made) {
            Ok(image) => {
                println!(
                    "{name}: {} ready in {:.0} s",
                    image.tag,
                    t.elapsed().as_secs_f64()
                );
                images.insert(name, image);
            }
            Err(e) => {
                let text = format!("building the image on {name} failed: {e:#}");
                println!("{text}");
                skipped.push(text);
            }
        }
    }
    let before: HashMap<&str, usize> = images
        .keys()
        .map(|&name| (name, dlgrab_containers(&up[name])))
        .collect();

    let mut cells: Vec<[Cell; 3]> = cases.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        let mut order = [Tool::Dlgrab, Tool::Save];
        if round % 2 == 1 {
            order.reverse();
        }
        for (c, case) in cases.iter().enumerate() {
            let Some(image) = images.get(case.daemon) else {
                continue;
            };
            for (l, &(layer_name, index)) in LAYERS.iter().enumerate() {
                let cell = &mut cells[c][l];
                for tool in order {
                    let line = match tool {
                        Tool::Dlgrab => measure_dlgrab(&ctx, case, image, index, cell),
                        Tool::Save => measure_save(&ctx, case, image, l, cell),
                    };
                    println!(
                        "  round {} {} {layer_name:<6} {tool:?}: {line}",
                        round + 1,
                        case.label
                    );
                }
            }
        }
    }
    drop(sshd);

    println!();
    println!(
        "bench export (nonroot, netns, remote): busybox + {base_mib} MiB base + {} MiB middle + {} KiB top, \
         never pushed; {rounds} round(s); seconds, median (min–max); dlgrab = --via auto (routes taken in brackets), \
         save = the same user's `docker save IMAGE | tar -x` of the layer through the same host; \
         RSS = dlgrab's max over rounds (/usr/bin/time %M)",
        MIDDLE_BYTES >> 20,
        TOP_BYTES >> 10
    );
    println!(
        "{:<36} | {:<6} | {:>9} | {:<34} | {:<22} | {:>11} | {:>7} | {:>7} | result",
        "scenario",
        "layer",
        "layer.tar",
        "dlgrab [route]",
        "save | tar -x",
        "dlgrab/save",
        "target",
        "RSS MiB"
    );
    println!("{}", "-".repeat(160));
    let mut failures = 0;
    for (c, case) in cases.iter().enumerate() {
        for (l, &(layer_name, _)) in LAYERS.iter().enumerate() {
            let cell = &cells[c][l];
            let (r, shown) = ratio(cell.dlgrab.median(), cell.save.median());
            let target = target(case.reach, l);
            let rss = cell.rss_kib.iter().max().map(|k| *k as f64 / 1024.0);
            let ok = match (r, rss) {
                (Some(r), Some(rss)) => {
                    Some(r <= target && r <= TARGET_ANY && rss < TARGET_RSS_MIB)
                }
                _ => None,
            };
            let show = |s: &Samples, tool: &str| {
                if s.is_empty() && cell.errors.iter().any(|(t, _)| *t == tool) {
                    "FAILED".to_owned()
                } else {
                    s.show(3)
                }
            };
            println!(
                "{:<36} | {:<6} | {:>9} | {:<34} | {:<22} | {:>11} | {:>7} | {:>7} | {}",
                case.label,
                layer_name,
                cell.layer_bytes.map_or_else(|| "?".to_owned(), human_bytes),
                format!(
                    "{} [{}]",
                    show(&cell.dlgrab, "dlgrab"),
                    cell.routes.join(",")
                ),
                show(&cell.save, "save"),
                shown,
                format!("≤ {target}"),
                rss.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.1}")),
                pass(ok)
            );
        }
    }
    println!(
        "targets: top ≤ {TARGET_TOP_LOCAL} of save locally (unix socket, tcp on the veth), ≤ {TARGET_TOP_SSH} over ssh; \
         base ≤ {TARGET_BASE}; middle ≤ {TARGET_ANY}; RSS < {TARGET_RSS_MIB} MiB"
    );
    for (c, case) in cases.iter().enumerate() {
        for (l, &(layer_name, _)) in LAYERS.iter().enumerate() {
            for (tool, text) in &cells[c][l].errors {
                failures += 1;
                println!(
                    "\n{tool} failed in {} {layer_name} layer:\n{text}",
                    case.label
                );
            }
        }
    }
    for (&name, &count) in &before {
        let after = dlgrab_containers(&up[name]);
        if after > count {
            failures += 1;
            println!(
                "\ndaemon {name}: {} container(s) labelled dlgrab.run left after the runs",
                after - count
            );
        }
    }
    drop(made);
    crate::bench_export::finish(
        "bench export (nonroot, netns, remote)",
        failures,
        &skipped,
        started,
    )
}

/// The cases of `keys`, in the order measured.
fn cases(keys: &[Key], up: &HashMap<&'static str, Daemon>, sshd: Option<&Sshd>) -> Vec<Case> {
    let mut out = Vec::new();
    let store = |d: &Daemon| {
        let kind = match (d.engine, d.store) {
            (testkit::Engine::Podman, _) if d.rootless => "rootless podman",
            (testkit::Engine::Podman, _) => "podman",
            (_, testkit::Store::Classic) => "classic",
            (_, testkit::Store::Containerd) => "containerd store",
        };
        let version: String = d.version.split('+').next().unwrap_or_default().to_owned();
        format!("{version} {kind}")
    };
    let unix = |key: &str, name: &'static str, d: &Daemon| Case {
        label: format!("{key} {name} ({})", store(d)),
        daemon: name,
        host: d.host.clone(),
        reach: Reach::Unix,
        member: true,
        path: None,
    };
    for &key in keys {
        match key {
            Key::Nonroot => {
                for name in NONROOT_DAEMONS {
                    out.push(unix("nonroot", name, &up[name]));
                }
            }
            Key::Rootless => out.push(unix("rootless", ROOTLESS_DAEMON, &up[ROOTLESS_DAEMON])),
            Key::Netns => out.push(unix("netns", NETNS_DAEMON, &up[NETNS_DAEMON])),
            Key::Remote => {
                let n = &up[NETNS_DAEMON];
                out.push(Case {
                    label: format!("remote tcp n ({})", store(n)),
                    daemon: NETNS_DAEMON,
                    host: N_TCP_HOST.to_owned(),
                    reach: Reach::Tcp,
                    member: false,
                    path: None,
                });
                if let Some(sshd) = sshd {
                    out.push(Case {
                        label: format!("remote ssh n ({})", store(n)),
                        daemon: NETNS_DAEMON,
                        host: sshd.url(),
                        reach: Reach::Ssh,
                        member: false,
                        path: Some(sshd.path_env()),
                    });
                }
            }
        }
    }
    out
}

/// dlgrab/save target of layer `l` of [`LAYERS`].
fn target(reach: Reach, l: usize) -> f64 {
    match (LAYERS[l].0, reach) {
        ("top", Reach::Ssh) => TARGET_TOP_SSH,
        ("top", _) => TARGET_TOP_LOCAL,
        ("base", _) => TARGET_BASE,
        _ => TARGET_ANY,
    }
}

/// Builds the bench image in `daemon` (as root, through its unix socket)
/// and reads its layers' entries in `docker save`'s tar.
fn build(daemon: &Daemon, base_mib: u64, seed: u64, made: &mut Made) -> Result<Image> {
    let tag = format!("{}:1", unique_name("dlgrab-bench/reach"));
    println!(
        "{}: building {tag} (busybox, {base_mib} MiB base, {} MiB middle, {} KiB top)",
        daemon.name,
        MIDDLE_BYTES >> 20,
        TOP_BYTES >> 10
    );
    made.0.push((daemon.clone(), tag.clone()));
    let builder = ImageBuilder::new(&tag)
        .busybox()
        .random_file("/base.bin", base_mib << 20, seed)
        .random_file("/mid/data.bin", MIDDLE_BYTES, seed + 1)
        .random_file("/top.bin", TOP_BYTES, seed + 2)
        .no_cache();
    let built = build_with_retries(&builder, daemon)?;
    anyhow::ensure!(
        built.layer_diff_ids.len() == LAYERS[0].1 + 1,
        "{} layers, not {}",
        built.layer_diff_ids.len(),
        LAYERS[0].1 + 1
    );
    let manifest = save_manifest(daemon, &tag)?;
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
    Ok(Image {
        entries: [
            entry(LAYERS[0].1)?,
            entry(LAYERS[1].1)?,
            entry(LAYERS[2].1)?,
        ],
        tag,
    })
}

/// A new empty folder for one run, the member's or root's.
fn run_dir(ctx: &Ctx, case: &Case, name: &str) -> Result<RunDir> {
    match (&ctx.member, case.member) {
        (Some(m), true) => Ok(RunDir::Member(m.scratch_dir())),
        (None, true) => bail!("{}: no docker group member", case.label),
        (_, false) => {
            let p = ctx.scratch.path(name);
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p)?;
            Ok(RunDir::Root(p))
        }
    }
}

/// `program` run as the case's user against its host (`DOCKER_HOST`, and
/// `PATH` through the test sshd's wrapper for ssh), no `RUST_LOG`.
fn command(ctx: &Ctx, case: &Case, program: &str) -> Command {
    let mut cmd = match (&ctx.member, case.member) {
        (Some(m), true) => m.command(Path::new(program)),
        _ => Command::new(program),
    };
    cmd.env("DOCKER_HOST", &case.host).env_remove("RUST_LOG");
    if let Some(path) = &case.path {
        cmd.env("PATH", path);
    }
    cmd
}

fn measure_dlgrab(ctx: &Ctx, case: &Case, image: &Image, index: usize, cell: &mut Cell) -> String {
    let tool = "dlgrab";
    let dir = match run_dir(ctx, case, "dlgrab-run") {
        Ok(d) => d,
        Err(e) => {
            cell.fail(tool, format!("{e:#}"));
            return "no folder".to_owned();
        }
    };
    let rss = dir.path().join("rss");
    let out_dir = dir.path().join("out");
    let mut cmd = command(ctx, case, "/usr/bin/time");
    cmd.arg("-o")
        .arg(&rss)
        .args(["-f", "%M"])
        .arg(&ctx.dlgrab)
        .arg(&image.tag);
    if index != LAYERS[0].1 {
        cmd.args(["--index", &index.to_string()]);
    }
    cmd.args(["-q", "--json", "-o"]).arg(&out_dir);
    let (out, err) = (
        ctx.scratch.path("dlgrab.out"),
        ctx.scratch.path("dlgrab.err"),
    );
    let t = match timed(&mut cmd, &out, &err, LIMIT) {
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
    let Some(layer) = find_file(&out_dir, "layer.tar") else {
        cell.fail(tool, "succeeded but wrote no layer.tar".to_owned());
        return "no layer.tar".to_owned();
    };
    let route =
        route_of(&fs::read_to_string(&out).unwrap_or_default()).unwrap_or_else(|| "?".to_owned());
    cell.dlgrab.push(t.secs);
    if !cell.routes.contains(&route) {
        cell.routes.push(route.clone());
    }
    // /usr/bin/time's last line (a failing command's status comes first).
    let kib: Option<u64> = fs::read_to_string(&rss)
        .ok()
        .and_then(|s| s.trim().lines().last().and_then(|l| l.trim().parse().ok()));
    cell.rss_kib.extend(kib);
    let bytes = fs::metadata(&layer).map(|m| m.len()).ok();
    cell.layer_bytes = bytes.or(cell.layer_bytes);
    format!(
        "{:.3} s [{route}], {} KiB RSS, {} bytes",
        t.secs,
        kib.map_or_else(|| "?".to_owned(), |k| k.to_string()),
        bytes.unwrap_or(0)
    )
}

fn measure_save(ctx: &Ctx, case: &Case, image: &Image, l: usize, cell: &mut Cell) -> String {
    let tool = "save";
    let dir = match run_dir(ctx, case, "save-run") {
        Ok(d) => d,
        Err(e) => {
            cell.fail(tool, format!("{e:#}"));
            return "no folder".to_owned();
        }
    };
    let entry = &image.entries[l];
    let mut cmd = command(ctx, case, "/bin/bash");
    cmd.args(["-c", SAVE_SCRIPT, "bash", &image.tag])
        .arg(dir.path())
        .arg(entry);
    let err = ctx.scratch.path("save.err");
    match timed(&mut cmd, &ctx.scratch.path("save.out"), &err, LIMIT) {
        Ok(t) if t.ok() && dir.path().join(entry).is_file() => {
            cell.save.push(t.secs);
            format!("{:.3} s", t.secs)
        }
        Ok(t) => {
            cell.fail(
                tool,
                format!("({}) {}", status_text(&t), tail_text(&err, 2000)),
            );
            "FAILED".to_owned()
        }
        Err(e) => {
            cell.fail(tool, format!("{e:#}"));
            "cannot run".to_owned()
        }
    }
}

/// The first `"route"` string in dlgrab's `--json` output (one document
/// or several in a row, the route at any depth).
fn route_of(text: &str) -> Option<String> {
    fn find(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(map) => map
                .get("route")
                .and_then(|r| r.as_str())
                .map(str::to_owned)
                .or_else(|| map.values().find_map(find)),
            serde_json::Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .find_map(|v| find(&v))
}

/// How many containers of dlgrab's (its label) the daemon holds.
fn dlgrab_containers(daemon: &Daemon) -> usize {
    daemon
        .try_docker_stdout(["ps", "-aq", "--filter", "label=dlgrab.run"])
        .map_or(0, |out| {
            out.lines().filter(|l| !l.trim().is_empty()).count()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_from_the_others() {
        let (keys, others) = split_keys("S1, nonroot,REMOTE,,s3a,nonroot,rootless");
        assert_eq!(keys, [Key::Nonroot, Key::Remote, Key::Rootless]);
        assert_eq!(others, ["S1", "s3a"]);
        assert_eq!(split_keys(""), (vec![], vec![]));
    }

    #[test]
    fn route_found_at_any_depth() {
        assert_eq!(
            route_of(r#"[{"diff_id":"x","route":"archive"}]"#).as_deref(),
            Some("archive")
        );
        assert_eq!(
            route_of(r#"{"layers":[{"route":"store"}]}"#).as_deref(),
            Some("store")
        );
        assert_eq!(
            route_of("{\"route\":\"push\"}\n{\"route\":\"save\"}\n").as_deref(),
            Some("push")
        );
        assert_eq!(route_of("not json"), None);
    }

    #[test]
    fn targets_by_layer_and_reach() {
        assert_eq!(target(Reach::Unix, 0), TARGET_TOP_LOCAL);
        assert_eq!(target(Reach::Tcp, 0), TARGET_TOP_LOCAL);
        assert_eq!(target(Reach::Ssh, 0), TARGET_TOP_SSH);
        assert_eq!(target(Reach::Ssh, 1), TARGET_ANY);
        assert_eq!(target(Reach::Unix, 2), TARGET_BASE);
    }
}
