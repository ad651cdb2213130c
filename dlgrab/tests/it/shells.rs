//! The completion scripts, loaded by the real zsh and fish: each parses,
//! and asked to complete `dlgrab --` each offers dlgrab's flags. Without
//! the shell the test prints why it skips, and fails instead when
//! `DLGRAB_REQUIRE_SHELLS=1` (as `cargo xtask test` sets it).

use std::path::Path;
use std::process::{Command, Output};

use crate::dlgrab;

/// Makes a missing shell fail the test instead of skipping it.
const REQUIRE: &str = "DLGRAB_REQUIRE_SHELLS";

/// Flags every shell must offer for `dlgrab --`.
const FLAGS: [&str; 6] = [
    "--outdir",
    "--since",
    "--index",
    "--list",
    "--context",
    "--generate",
];

/// Whether `shell` runs here; prints why a test skips when it does not.
#[track_caller]
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn shell_or_skip(shell: &str, test: &str) -> bool {
    let found = Command::new(shell)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var(REQUIRE).as_deref() != Ok("1"),
            "{test}: {shell} is not installed ({REQUIRE}=1)"
        );
        eprintln!("SKIP {test}: {shell} is not installed (apt-get install {shell})");
    }
    found
}

/// The completion script for `shell`, written to `dir/name`.
fn script(shell: &str, dir: &Path, name: &str) -> std::path::PathBuf {
    let out = dlgrab(&["--generate", shell]);
    assert!(out.status.success(), "{out:?}");
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).expect("write the script");
    path
}

#[track_caller]
fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[track_caller]
fn offers_the_flags(shell: &str, offered: &str) {
    let lines: Vec<&str> = offered
        .lines()
        .map(|l| l.split('\t').next().unwrap_or(l).trim())
        .collect();
    for flag in FLAGS {
        assert!(
            lines.contains(&flag),
            "{shell} does not offer {flag}:\n{offered}"
        );
    }
}

#[test]
fn zsh_completes_the_flags() {
    if !shell_or_skip("zsh", "zsh_completes_the_flags") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = script("zsh", dir.path(), "_dlgrab");
    ok(
        &Command::new("zsh")
            .arg("-n")
            .arg(&file)
            .output()
            .expect("zsh runs"),
        "zsh -n _dlgrab",
    );
    // An interactive zsh on a pseudo-terminal, with compinit and the
    // script in fpath, is sent `dlgrab --` and a Tab; the capture script
    // prints what compadd was given.
    let capture = dir.path().join("capture.zsh");
    std::fs::write(&capture, include_str!("zsh_complete.zsh")).expect("capture script");
    let out = Command::new("timeout")
        .args(["60", "zsh", "-f"])
        .arg(&capture)
        .arg(dir.path())
        .arg("dlgrab --")
        .env("HOME", dir.path())
        .output()
        .expect("zsh runs");
    offers_the_flags("zsh", &ok(&out, "zsh completion"));
}

#[test]
fn fish_completes_the_flags() {
    if !shell_or_skip("fish", "fish_completes_the_flags") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = script("fish", dir.path(), "dlgrab.fish");
    ok(
        &Command::new("fish")
            .arg("--no-execute")
            .arg(&file)
            .output()
            .expect("fish runs"),
        "fish --no-execute dlgrab.fish",
    );
    let out = Command::new("fish")
        .args(["--no-config", "-c"])
        .arg("source $argv[1]; complete -C 'dlgrab --'")
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .expect("fish runs");
    offers_the_flags("fish", &ok(&out, "fish completion"));
}
