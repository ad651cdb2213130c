//! Names the commit dlgrab is built from, for `dlgrab --version`:
//! `DLGRAB_VERSION` is `<version> (commit <short hash>)`, or `(commit
//! unknown)` when built outside a git checkout (a packaged crate) or
//! without git. `DLGRAB_COMMIT` in the build's environment overrides the
//! hash (a build from a source archive that knows its commit).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DLGRAB_COMMIT");
    let commit = std::env::var("DLGRAB_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    println!("cargo:rustc-env=DLGRAB_VERSION={version} (commit {commit})");
}

/// `git rev-parse --short HEAD` in this crate's checkout, asking cargo to
/// run this again when HEAD moves (a commit, a checkout). `None` without
/// git or outside a checkout.
fn git_commit() -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .current_dir(&dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    // HEAD names the branch; the branch's ref file (or packed-refs, once
    // git packs it) names the commit. Only paths that exist: cargo reruns a
    // build script on every build when one it watches is missing.
    let path = |name: &str| Some(Path::new(&dir).join(git(&["rev-parse", "--git-path", name])?));
    let mut watched = vec![path("HEAD")?];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|b| path(&b)) {
        // A packed branch gets its file back at the next commit: watch its folder.
        match branch.parent() {
            Some(folder) if !branch.exists() => watched.push(folder.to_path_buf()),
            _ => watched.push(branch),
        }
    }
    watched.extend(path("packed-refs"));
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(commit)
}
