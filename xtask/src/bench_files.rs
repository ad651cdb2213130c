//! `cargo xtask bench files`: a layer of many small files on the
//! containerd store, where `docker save` writes the small compressed blob
//! the store keeps and dlgrab's fixed costs show.
//!
//! The image is busybox plus one layer of `--files` files (a few bytes
//! each, made by a `RUN` of busybox's shell). Per round, interleaved:
//! `dlgrab IMAGE --format oci` (the blob as stored, its tar hashed on the
//! way), `dlgrab IMAGE` (the seed format: the layer's tar written out), and
//! `docker save IMAGE | tar -x` of that layer's entry. Target (issue #23):
//! the OCI format within 1.5× of save.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testkit::{Daemon, ImageBuilder, unique_name};

use crate::bench::{
    Samples, Scratch, cargo_release_exe, opt_u64, parse_opts, pass, ratio, tail_text, timed,
    timed_pipe,
};
use crate::daemons::{self, describe};
use crate::sh::apt_install;

/// dlgrab `--format oci` over `docker save | tar -x`.
const TARGET_OCI: f64 = 1.5;
const TOOL_LIMIT: Duration = Duration::from_secs(600);

/// The bench image on one daemon, removed when dropped.
struct Image {
    daemon: Daemon,
    tag: String,
    /// `manifest.json`'s entry of the top layer in a `docker save` stream.
    entry: String,
}

impl Drop for Image {
    fn drop(&mut self) {
        self.daemon.remove_image(&self.tag);
    }
}

#[derive(Default)]
struct Row {
    oci: Samples,
    seed: Samples,
    save: Samples,
    oci_bytes: u64,
    seed_bytes: u64,
    save_bytes: u64,
    errors: Vec<String>,
}

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let started = Instant::now();
    let opts = parse_opts(args, &["files", "rounds", "daemon", "dlgrab"])?;
    let files = opt_u64(&opts, "files", 30_000)?;
    let rounds = opt_u64(&opts, "rounds", 3)?;
    let names: Vec<&str> = opts
        .get("daemon")
        .map_or(vec!["c", "e"], |d| d.split(',').collect());
    apt_install(&["busybox-static"])?;
    let dlgrab = match opts.get("dlgrab") {
        Some(path) => fs::canonicalize(path).with_context(|| format!("--dlgrab {path}"))?,
        None => cargo_release_exe(&["-p", "dlgrab"], "dlgrab")?,
    };
    let scratch = Scratch::new("files")?;
    let mut images = Vec::new();
    for (name, daemon) in daemons::up(&names) {
        let daemon = daemon.with_context(|| format!("daemon {name} did not come up"))?;
        println!("{}", describe(&daemon));
        images.push(prepare(daemon, files)?);
    }

    let mut rows: Vec<Row> = images.iter().map(|_| Row::default()).collect();
    let mut n = 0;
    for round in 0..rounds {
        let mut order = ["oci", "seed", "save"];
        if round % 2 == 1 {
            order.reverse();
        }
        for (image, row) in images.iter().zip(&mut rows) {
            for tool in order {
                n += 1;
                let dir = scratch.path(&format!("run-{n}"));
                let line = match measure(&dlgrab, image, tool, &dir, &scratch, row) {
                    Ok(line) => line,
                    Err(e) => {
                        let text = format!("{tool}: {e:#}");
                        row.errors.push(text.clone());
                        text
                    }
                };
                let _ = fs::remove_dir_all(&dir);
                println!(
                    "  round {} {} {tool:<4}: {line}",
                    round + 1,
                    image.daemon.name
                );
            }
        }
    }

    println!();
    println!(
        "bench files: busybox + a layer of {files} small files, {rounds} round(s); seconds, median (min–max); \
         oci = dlgrab --format oci, seed = dlgrab (seed format), save = docker save | tar -x of the layer"
    );
    println!(
        "{:<28} | {:<20} | {:<20} | {:<20} | {:>8} | {:>9} | {:>12} | {:>12} | target oci/save <= {TARGET_OCI}",
        "daemon", "oci", "seed", "save", "oci/save", "seed/save", "oci bytes", "seed bytes"
    );
    let mut failed = false;
    for (image, row) in images.iter().zip(&rows) {
        let (oci, oci_text) = ratio(row.oci.median(), row.save.median());
        let (_, seed_text) = ratio(row.seed.median(), row.save.median());
        let ok = oci.map(|r| r <= TARGET_OCI);
        failed |= ok != Some(true) || !row.errors.is_empty();
        println!(
            "{:<28} | {:<20} | {:<20} | {:<20} | {oci_text:>8} | {seed_text:>9} | {:>12} | {:>12} | {}",
            format!("{} ({})", image.daemon.name, image.daemon.version),
            row.oci.show(3),
            row.seed.show(3),
            row.save.show(3),
            row.oci_bytes,
            row.seed_bytes,
            pass(ok)
        );
        println!("{:<28}   (save wrote {} bytes)", "", row.save_bytes);
        for e in &row.errors {
            println!("  error: {e}");
        }
    }
    println!("bench files took {:.0} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(!failed, "a target was missed or a tool failed");
    Ok(())
}

/// Builds busybox + one layer of `files` small files on `daemon`.
fn prepare(daemon: Daemon, files: u64) -> Result<Image> {
    let tag = format!("{}:1", unique_name("dlgrab-bench/files"));
    println!(
        "{}: building {tag} (busybox, {files} small files)",
        daemon.name
    );
    let t = Instant::now();
    let script = format!(
        "mkdir /many && cd /many && i=0 && while [ $i -lt {files} ]; do echo $i > f$i; i=$((i+1)); done"
    );
    let built = ImageBuilder::new(&tag)
        .busybox()
        .run(&script)
        .no_cache()
        .try_build(&daemon)?;
    let mut image = Image {
        daemon,
        tag,
        entry: String::new(),
    };
    anyhow::ensure!(!built.layer_diff_ids.is_empty(), "the image has no layers");
    let listing = Command::new("sh")
        .arg("-c")
        .arg(r#"docker save "$1" | tar -xOf - manifest.json"#)
        .args(["sh", &image.tag])
        .env("DOCKER_HOST", &image.daemon.host)
        .output()?;
    anyhow::ensure!(
        listing.status.success(),
        "docker save | tar failed: {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&listing.stdout).context("manifest.json of docker save")?;
    image.entry = manifest[0]["Layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l.as_str())
        .with_context(|| format!("no layers in manifest.json: {manifest}"))?
        .to_owned();
    println!(
        "{}: {} ready in {:.0} s; top layer entry {}",
        image.daemon.name,
        image.tag,
        t.elapsed().as_secs_f64(),
        image.entry
    );
    Ok(image)
}

/// One timed run of `tool`; the line to print.
fn measure(
    dlgrab: &Path,
    image: &Image,
    tool: &str,
    dir: &Path,
    scratch: &Scratch,
    row: &mut Row,
) -> Result<String> {
    let err = scratch.path("err");
    let t = if tool == "save" {
        fs::create_dir_all(dir)?;
        let mut save = image.daemon.command();
        save.args(["save", &image.tag]);
        let mut tar = Command::new("tar");
        tar.args(["-xf", "-", "-C"]).arg(dir).arg(&image.entry);
        timed_pipe(&mut save, &mut tar, &err, TOOL_LIMIT)?
    } else {
        let mut cmd = Command::new(dlgrab);
        cmd.arg(&image.tag).args(["-q", "-o"]).arg(dir);
        if tool == "oci" {
            cmd.args(["--format", "oci"]);
        }
        cmd.env("DOCKER_HOST", &image.daemon.host);
        timed(&mut cmd, &scratch.path("out"), &err, TOOL_LIMIT)?
    };
    anyhow::ensure!(t.ok(), "failed: {}", tail_text(&err, 2000));
    let bytes = du(dir);
    match tool {
        "oci" => {
            row.oci.push(t.secs);
            row.oci_bytes = bytes;
        }
        "seed" => {
            row.seed.push(t.secs);
            row.seed_bytes = bytes;
        }
        _ => {
            row.save.push(t.secs);
            row.save_bytes = bytes;
        }
    }
    Ok(format!("{:.3} s, {bytes} bytes written", t.secs))
}

/// The bytes of the regular files under `dir`.
fn du(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
