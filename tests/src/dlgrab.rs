//! Running the `dlgrab` binary against the daemon under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::Daemon;

/// The dlgrab binary: `DLGRAB_BIN` when set, else the one cargo builds
/// beside the running test binary. The first call in a process runs `cargo
/// build -p dlgrab` with the test binary's profile and target folder (a
/// no-op when it is fresh), so a plain `cargo test` tests the current code.
/// Panics with cargo's output when that build fails.
#[track_caller]
pub fn dlgrab_bin() -> PathBuf {
    if let Ok(path) = std::env::var("DLGRAB_BIN") {
        return path.into();
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(bin) => bin.clone(),
        Err(why) => panic!("cannot build the dlgrab binary: {why}"),
    }
}

/// `cargo build -p dlgrab` into the target folder of the running test binary
/// (`<target>/<profile>/deps/<test>`).
fn build() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("test binary path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test binary is not in <target>/<profile>/deps")?;
    let target = profile_dir.parent().ok_or("no target folder")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no profile folder")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "-p", "dlgrab", "--bin", "dlgrab"])
        .arg("--target-dir")
        .arg(target)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::null());
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo build -p dlgrab` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = profile_dir.join("dlgrab");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} is missing after the build", bin.display()))
    }
}

/// Asserts that a dlgrab run succeeded (its status, stdout and stderr in
/// the message otherwise) and returns its stdout.
#[track_caller]
pub fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dlgrab failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The document a `dlgrab --json` run printed, checked against
/// `docs/result.schema.json`, so that every test reading one checks the
/// schema too. Panics with the document and what in it breaks the schema.
#[track_caller]
pub fn result(stdout: &str) -> serde_json::Value {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let text = include_str!("../../docs/result.schema.json");
        let schema = serde_json::from_str(text).expect("docs/result.schema.json is JSON");
        jsonschema::draft202012::new(&schema).expect("docs/result.schema.json is a JSON Schema")
    });
    let value: serde_json::Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{stdout}"));
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "--json output breaks docs/result.schema.json:\n{}\n{stdout}",
        errors.join("\n")
    );
    value
}

/// The items of the `--json` document on `stdout` ([`result`]) of a run
/// that did everything asked (`"ok": true`): one per reference as typed
/// (with `--since`, per layer archived; with `--list`, per layer).
#[track_caller]
pub fn items(stdout: &str) -> Vec<serde_json::Value> {
    let value = result(stdout);
    assert_eq!(value["ok"], true, "{value:#}");
    value["items"].as_array().cloned().expect("items")
}

/// The file a layer of `dlgrab --json` lists whose path ends with `suffix`
/// (`/layer.tar`, a blob's `/blobs/sha256/…`); panics naming the layer
/// when there is none.
#[track_caller]
pub fn exported_file(layer: &serde_json::Value, suffix: &str) -> PathBuf {
    layer["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(suffix))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no file ending in {suffix} in {layer}"))
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
