//! The docker-buildx CLI plugin, in a Docker CLI config folder of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{output_within, tail};
use crate::{Daemon, ENV_BUILDX_CONFIG, ENV_REQUIRE_BUILDX};

/// Where a plugin is looked for when `DLGRAB_BUILDX_CONFIG` is not set:
/// what `cargo xtask buildx` made, then the Docker CLI's own places.
const PLUGIN_PLACES: [&str; 4] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/xtask/docker-config/cli-plugins/docker-buildx"
    ),
    "/usr/libexec/docker/cli-plugins/docker-buildx",
    "/usr/lib/docker/cli-plugins/docker-buildx",
    "/usr/local/lib/docker/cli-plugins/docker-buildx",
];

/// How long `docker buildx version` may take.
const VERSION_LIMIT: Duration = Duration::from_secs(30);

/// A temporary Docker CLI config folder (`DOCKER_CONFIG`) whose only
/// content is `cli-plugins/docker-buildx`, a link to the plugin; removed
/// when dropped. buildx writes its state (`buildx/`) there, never into the
/// user's `~/.docker`.
#[derive(Debug)]
pub struct Buildx {
    config: PathBuf,
    version: String,
}

impl Buildx {
    /// The plugin named by `DLGRAB_BUILDX_CONFIG` (a config folder with
    /// `cli-plugins/docker-buildx`), else the first of the places the
    /// Docker CLI and `cargo xtask buildx` put it, in a config folder of
    /// its own; checked with `docker buildx version`.
    pub fn try_new() -> Result<Buildx, String> {
        let plugin = match std::env::var_os(ENV_BUILDX_CONFIG).filter(|v| !v.is_empty()) {
            Some(config) => {
                let plugin = Path::new(&config).join("cli-plugins/docker-buildx");
                if !plugin.is_file() {
                    return Err(format!(
                        "{ENV_BUILDX_CONFIG}={}: no cli-plugins/docker-buildx there",
                        Path::new(&config).display()
                    ));
                }
                plugin
            }
            None => PLUGIN_PLACES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    format!(
                        "no docker-buildx plugin ({ENV_BUILDX_CONFIG} unset; `cargo xtask buildx` fetches one)"
                    )
                })?,
        };
        let plugin = plugin
            .canonicalize()
            .map_err(|e| format!("{}: {e}", plugin.display()))?;
        let config = std::env::temp_dir().join(crate::unique_scratch_name("dlgrab-buildx"));
        let made = std::fs::create_dir_all(config.join("cli-plugins")).and_then(|()| {
            std::os::unix::fs::symlink(&plugin, config.join("cli-plugins/docker-buildx"))
        });
        let mut buildx = Buildx {
            config,
            version: String::new(),
        };
        made.map_err(|e| format!("cannot make {}: {e}", buildx.config.display()))?;
        let out = output_within(
            Command::new("docker")
                .args(["buildx", "version"])
                .env("DOCKER_CONFIG", &buildx.config),
            VERSION_LIMIT,
            "buildx version",
        )
        .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "`docker buildx version` with {} failed ({}): {}",
                plugin.display(),
                out.status,
                tail(&out, 600)
            ));
        }
        buildx.version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok(buildx)
    }

    /// What `docker buildx version` said, e.g.
    /// `github.com/docker/buildx 0.30.1 …`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The temporary `DOCKER_CONFIG` folder.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// `docker buildx` aimed at `daemon` (`DOCKER_HOST` and this
    /// `DOCKER_CONFIG` set), to add arguments to.
    pub fn command(&self, daemon: &Daemon) -> Command {
        let mut cmd = daemon.command();
        cmd.env("DOCKER_CONFIG", &self.config).arg("buildx");
        cmd
    }
}

impl Drop for Buildx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config);
    }
}

/// The docker-buildx plugin for a test ([`Buildx::try_new`]); without one
/// it prints `SKIP <test_name>: <reason>` and returns `None`, or panics
/// when `DLGRAB_REQUIRE_BUILDX=1` (as `cargo xtask test` sets).
#[track_caller]
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
pub fn buildx_or_skip(test_name: &str) -> Option<Buildx> {
    match Buildx::try_new() {
        Ok(buildx) => Some(buildx),
        Err(reason) if std::env::var(ENV_REQUIRE_BUILDX).as_deref() == Ok("1") => {
            panic!("{test_name}: no docker-buildx ({ENV_REQUIRE_BUILDX}=1): {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP {test_name}: {reason}");
            None
        }
    }
}
