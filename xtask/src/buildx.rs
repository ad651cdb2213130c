//! docker-buildx as a Docker CLI plugin for the daemon tests: Debian sid's
//! `docker-buildx` package, fetched with a private apt state and unpacked
//! (never installed), and a Docker CLI config folder whose
//! `cli-plugins/docker-buildx` is that binary. `cargo xtask test` hands the
//! folder to the tests (`DLGRAB_BUILDX_CONFIG`); each test run copies it
//! into a temporary `DOCKER_CONFIG` of its own (buildx writes state there).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::root;
use crate::sh::{capture, fetch_debs, run};

/// Where the Debian package puts the plugin, relative to the unpacked root.
const PLUGIN: &str = "usr/libexec/docker/cli-plugins/docker-buildx";

/// The Docker CLI config folder holding `cli-plugins/docker-buildx`
/// (`target/xtask/docker-config`), made once: Debian sid's `docker-buildx`
/// fetched into sid's private apt state (`target/xtask/apt-sid`) and
/// unpacked into `target/xtask/buildx`.
pub(crate) fn plugin_config() -> Result<PathBuf> {
    let config = root().join("target/xtask/docker-config");
    let link = config.join("cli-plugins/docker-buildx");
    let unpacked = root().join("target/xtask/buildx");
    let plugin = unpacked.join(PLUGIN);
    if !plugin.is_file() {
        let apt = root().join("target/xtask/apt-sid");
        for deb in fetch_debs(&apt, "sid", &["docker-buildx"])? {
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
        }
        ensure!(
            plugin.is_file(),
            "the unpacked docker-buildx has no {PLUGIN} under {}",
            unpacked.display()
        );
    }
    if fs::read_link(&link).ok().as_deref() != Some(plugin.as_path()) {
        fs::create_dir_all(config.join("cli-plugins"))?;
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&plugin, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    check(&config)?;
    Ok(config)
}

/// `docker buildx version` with that config folder (copied into a scratch
/// one: buildx may write state beside its plugin); fails with its output.
fn check(config: &Path) -> Result<()> {
    let scratch = root().join(format!(
        "target/xtask/docker-config-check-{}",
        std::process::id()
    ));
    fs::create_dir_all(scratch.join("cli-plugins"))?;
    let plugin = fs::read_link(config.join("cli-plugins/docker-buildx"))?;
    let _ = fs::remove_file(scratch.join("cli-plugins/docker-buildx"));
    std::os::unix::fs::symlink(plugin, scratch.join("cli-plugins/docker-buildx"))?;
    let result = capture(
        Command::new("docker")
            .args(["buildx", "version"])
            .env("DOCKER_CONFIG", &scratch),
        Duration::from_secs(30),
    );
    let _ = fs::remove_dir_all(&scratch);
    let (ok, out, err) = result?;
    ensure!(
        ok && out.contains("buildx"),
        "`docker buildx version` with DOCKER_CONFIG={} failed:\n{out}{err}",
        config.display()
    );
    println!("xtask: {}", out.trim());
    Ok(())
}
