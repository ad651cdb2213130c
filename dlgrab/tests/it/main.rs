//! The dlgrab binary as a new user meets it, with no daemon to talk to:
//! its error messages (snapshots of stderr, so that a change shows as a
//! diff), its help and man page, and its completion scripts loaded by the
//! real shells; the `--json` document of a run that fails (`json`). The
//! errors that need a daemon are in the workspace's
//! daemon tests (`tests/tests/it/errors.rs`).

mod errors;
mod help;
mod json;
mod shells;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A socket that does not exist: no test here reaches a daemon.
const NO_DAEMON: &str = "unix:///nonexistent/dlgrab-test/docker.sock";

/// `dlgrab ARGS` in `dir`, with `DOCKER_HOST` at [`NO_DAEMON`], the Docker
/// CLI's config folder in `dir` (no contexts unless a test makes some), no
/// `RUST_LOG` and no standard input.
fn dlgrab_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dlgrab"));
    cmd.args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", NO_DAEMON)
        .env("DOCKER_CONFIG", dir.join(".docker"))
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_TLS")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `dlgrab ARGS` in a fresh folder.
fn dlgrab(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    dlgrab_in(dir.path(), args).output().expect("dlgrab runs")
}

/// The stderr of a run that failed with exit status `code`.
#[track_caller]
fn failed(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr:\n{stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}
