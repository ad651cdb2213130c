//! `cargo xtask demo`: builds `dlgrab-demo:latest` in the daemon dlgrab
//! itself would use (`DOCKER_HOST`, `DOCKER_CONTEXT`, the current context,
//! else the default socket: the same `docker_driver::DaemonSelection`) and
//! exports its top layer with dlgrab.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use testkit::ImageBuilder;

use docker_driver::{ChosenBy, DaemonSelection};
use testkit::Daemon;

use crate::sh::apt_install;

const IMAGE: &str = "dlgrab-demo:latest";
const OUT: &str = "target/demo-out";

pub(crate) fn run() -> Result<()> {
    apt_install(&["busybox-static"])?;
    let daemon = chosen_daemon()?;
    println!(
        "  {:?} {}, {:?} image store, {}",
        daemon.engine, daemon.version, daemon.store, daemon.driver
    );

    println!("building {IMAGE}: busybox, two files, an ENV row, a RUN");
    let image = ImageBuilder::new(IMAGE)
        .busybox()
        .file("/etc/motd", "exported by dlgrab\n")
        .env("DEMO", "1")
        .random_file("/data/blob.bin", 256 * 1024, 2024)
        .run("echo built > /data/stamp && ln -s /data/stamp /stamp")
        .build(&daemon);
    println!(
        "image {} with {} layers:",
        image.id,
        image.layer_diff_ids.len()
    );
    for (k, diff) in image.layer_diff_ids.iter().enumerate() {
        println!("  layer {k}: {diff}");
    }

    let out = Path::new(OUT);
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("cannot clear {OUT}"))?;
    }
    println!("\n$ cargo run -p dlgrab --release -- {IMAGE} -o {OUT}");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let result = Command::new(cargo)
        .args([
            "run",
            "-q",
            "-p",
            "dlgrab",
            "--release",
            "--",
            IMAGE,
            "-o",
            OUT,
        ])
        .output()
        .context("cannot run cargo")?;
    print!("{}", String::from_utf8_lossy(&result.stdout));
    if !result.status.success() {
        eprint!("{}", String::from_utf8_lossy(&result.stderr));
        bail!(
            "dlgrab failed ({}) exporting {IMAGE}: see its stderr above",
            result.status
        );
    }

    println!("\n{OUT}:");
    let mut files = Vec::new();
    walk(out, &mut files)?;
    files.sort();
    for (path, size) in &files {
        println!(
            "  {}  ({size} bytes)",
            path.strip_prefix(out).unwrap_or(path).display()
        );
    }
    let tars: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    if tars.is_empty() {
        bail!("dlgrab succeeded but wrote no layer.tar under {OUT}");
    }
    for (tar, _) in tars {
        println!("\n$ tar -tvf {}", tar.display());
        let list = Command::new("tar").arg("-tvf").arg(tar).output()?;
        let text = String::from_utf8_lossy(&list.stdout);
        for line in text.lines().take(15) {
            println!("  {line}");
        }
        let n = text.lines().count();
        if n > 15 {
            println!("  … {} more entries", n - 15);
        }
    }
    Ok(())
}

/// The daemon dlgrab would use, chosen by the same code, probed with
/// `docker info`; dlgrab itself is then run with the environment untouched.
fn chosen_daemon() -> Result<Daemon> {
    let endpoint = DaemonSelection::default()
        .resolve()
        .context("cannot tell which Docker daemon dlgrab would use")?;
    println!(
        "daemon: {} ({}), as dlgrab chooses it",
        endpoint.host, endpoint.chosen_by
    );
    if endpoint.tls.is_some() && !matches!(endpoint.chosen_by, ChosenBy::DockerHost) {
        bail!(
            "the demo builds its image with DOCKER_HOST and cannot carry the TLS files of context {}: \
             set DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH instead",
            endpoint.context
        );
    }
    Daemon::try_connect("demo", &endpoint.host).map_err(|e| {
        anyhow::anyhow!(
            "cannot use the Docker daemon at {} ({}): {e}. {}",
            endpoint.host,
            endpoint.chosen_by,
            endpoint.chosen_by.how_to_change()
        )
    })
}

fn walk(dir: &Path, files: &mut Vec<(std::path::PathBuf, u64)>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(&entry.path(), files)?;
        } else {
            files.push((entry.path(), meta.len()));
        }
    }
    Ok(())
}
