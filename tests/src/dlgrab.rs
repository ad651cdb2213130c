//! Running the `dlgrab` binary against the daemon under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::Daemon;

/// The dlgrab binary: `DLGRAB_BIN` when set, else the one cargo built beside
/// the running test binary (`cargo build -p dlgrab`; `cargo xtask test`
/// builds it). Panics with what to run when it is missing.
#[track_caller]
pub fn dlgrab_bin() -> PathBuf {
    if let Ok(path) = std::env::var("DLGRAB_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("dlgrab");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p dlgrab` first (cargo xtask test does)",
        bin.display()
    );
    bin
}

impl Daemon {
    /// `dlgrab ARGS` talking to this daemon (`DOCKER_HOST` set, no `RUST_LOG`,
    /// no standard input), ready to run.
    #[track_caller]
    pub fn dlgrab_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(dlgrab_bin());
        cmd.args(args)
            .env("DOCKER_HOST", &self.host)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `dlgrab ARGS` against this daemon and returns its output.
    #[track_caller]
    pub fn dlgrab(&self, args: &[&str]) -> Output {
        self.dlgrab_command(args).output().expect("dlgrab runs")
    }
}
