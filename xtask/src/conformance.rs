//! `cargo xtask conformance [--dev] [--src PATH]`: the OCI distribution-spec
//! conformance suite against the `shim-registry` program.
//!
//! The suite (opencontainers/distribution-spec, `conformance/`, a plain Go
//! program) is not kept in this repository, and CI reaches no Git host nor
//! Go module proxy: its source comes from `--src` or `DLGRAB_CONFORMANCE_SRC`,
//! a checkout of distribution-spec or a Git directory of it (then
//! `DLGRAB_CONFORMANCE_REV`, default `HEAD`, picks the revision, and
//! `specs-go` is taken at the revision `go.mod` pins).
//!
//! The Go toolchain and the suite's Go dependencies come from Debian's
//! packages, fetched with a private apt state into `target/xtask/conformance`
//! (the system's apt untouched) and unpacked, never installed: Go from
//! trixie, the libraries from sid, whose versions are the ones `go.mod`
//! pins; the xtask checks that they are, and `replace`s each module with
//! its unpacked source. Nothing is downloaded by Go (`GOPROXY=off`).
//!
//! The program runs on 127.0.0.1 with filesystem storage and TLS off; the
//! suite runs with `OCI_VERSION=1.1` (or `1.1+dev` with `--dev`) and
//! upload cancelling on. Its `junit.xml` marks each case with a `status`
//! attribute; the counts are printed, and any failed case fails the task.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::bench::{Scratch, shim_registry_exe, start_shim, tail_text};
use crate::root;
use crate::sh::{capture, fetch_debs, run};

/// How long one run of the suite may take (it takes seconds).
const SUITE_LIMIT: Duration = Duration::from_secs(600);

/// Go from trixie (1.24; the suite needs 1.24 or later).
const GO_SUITE: &str = "trixie";
const GO_PACKAGES: &[&str] = &["golang-1.24-go", "golang-1.24-src"];
const GO_ROOT: &str = "usr/lib/go-1.24";

/// The suite's Go modules and the Debian packages (sid) holding them.
const MODULES: &[(&str, &str)] = &[
    (
        "github.com/goccy/go-yaml",
        "golang-github-goccy-go-yaml-dev",
    ),
    (
        "github.com/opencontainers/go-digest",
        "golang-github-opencontainers-go-digest-dev",
    ),
    (
        "github.com/opencontainers/image-spec",
        "golang-github-opencontainers-image-spec-dev",
    ),
];
const LIB_SUITE: &str = "sid";
/// A module of the suite's own repository.
const SPECS_GO: &str = "github.com/opencontainers/distribution-spec/specs-go";

pub(crate) const USAGE: &str = "\
usage: cargo xtask conformance [--dev] [--src PATH]

  runs the OCI distribution-spec conformance suite against shim-registry;
  --dev: OCI_VERSION=1.1+dev (digest headers, tag parameters, sha512 cases)
  --src or DLGRAB_CONFORMANCE_SRC: a distribution-spec checkout or Git directory
  DLGRAB_CONFORMANCE_REV: the revision of a Git directory (default HEAD)";

pub(crate) fn run_suite(args: &[&str]) -> Result<()> {
    let mut dev = false;
    let mut src = std::env::var_os("DLGRAB_CONFORMANCE_SRC").map(PathBuf::from);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--dev" => dev = true,
            "--src" => src = Some(PathBuf::from(it.next().context("--src needs a path")?)),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    let Some(src) = src else {
        bail!(
            "the conformance suite's source is not in this repository and no Git host is \
             reachable from here: set DLGRAB_CONFORMANCE_SRC (or --src) to a checkout or a Git \
             directory of opencontainers/distribution-spec\n{USAGE}"
        );
    };
    let work = root().join("target/xtask/conformance");
    let suite = build_suite(&src, &work)?;
    let shim = shim_registry_exe()?;
    let version = if dev { "1.1+dev" } else { "1.1" };
    let counts = run_against(&suite, &shim, version, &work)?;
    counts.report(version)
}

/// What `junit.xml` counted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    /// Cases by `status` attribute.
    by_status: BTreeMap<String, usize>,
    /// Names of failed or errored cases.
    failed: Vec<String>,
}

impl Counts {
    fn get(&self, status: &str) -> usize {
        self.by_status.get(status).copied().unwrap_or(0)
    }

    fn report(&self, version: &str) -> Result<()> {
        let failed = self.get("failure") + self.get("error");
        let others: usize = self
            .by_status
            .iter()
            .filter(|(s, _)| !["passed", "failure", "error", "skipped"].contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum();
        for name in self.failed.iter().take(40) {
            println!("  failed: {name}");
        }
        println!("distribution-spec conformance, OCI_VERSION={version}:");
        println!(
            "conformance: {} passed, {failed} failed, {} skipped",
            self.get("passed"),
            self.get("skipped")
        );
        ensure!(
            others == 0,
            "cases with an unknown status: {:?}",
            self.by_status
        );
        ensure!(self.get("passed") > 0, "the suite reported no passed case");
        ensure!(failed == 0, "{failed} conformance cases failed");
        Ok(())
    }
}

/// Counts the `<testcase … status="…">` elements of a junit report.
fn count_junit(xml: &str) -> Counts {
    let mut counts = Counts::default();
    for piece in xml.split("<testcase").skip(1) {
        let tag = piece.split('>').next().unwrap_or("");
        let attr = |name: &str| {
            let key = format!(" {name}=\"");
            let start = tag.find(&key)? + key.len();
            Some(tag[start..].split('"').next()?.to_owned())
        };
        let status = attr("status").unwrap_or_else(|| "none".to_owned());
        if status == "failure" || status == "error" {
            counts
                .failed
                .push(attr("name").unwrap_or_default().replace("&#34;", "\""));
        }
        *counts.by_status.entry(status).or_default() += 1;
    }
    counts
}

/// Starts the program, runs the suite against it, counts the report.
fn run_against(suite: &Path, shim: &Path, version: &str, work: &Path) -> Result<Counts> {
    let scratch = Scratch::new("conformance")?;
    let server = start_shim(shim, &scratch.path("storage"), &scratch.path("shim.log"))?;
    let results = work.join(format!("results-{}", version.replace('+', "-")));
    if results.exists() {
        fs::remove_dir_all(&results)?;
    }
    println!(
        "$ OCI_VERSION={version} OCI_REGISTRY={} conformance",
        server.host_port()
    );
    let (_, stdout, stderr) = capture(
        Command::new(suite)
            .current_dir(work)
            .env("OCI_REGISTRY", server.host_port())
            .env("OCI_TLS", "disabled")
            .env("OCI_VERSION", version)
            .env("OCI_API_BLOBS_UPLOAD_CANCEL", "true")
            .env("OCI_RESULTS_DIR", &results)
            .env("OCI_LOG", "error"),
        SUITE_LIMIT,
    )?;
    fs::write(work.join("suite-stdout.txt"), &stdout)?;
    let junit = results.join("junit.xml");
    let xml = fs::read_to_string(&junit).with_context(|| {
        format!(
            "the suite wrote no {}; its stderr: {}; the shim's log: {}",
            junit.display(),
            stderr.trim(),
            tail_text(&server.log, 1500)
        )
    })?;
    println!(
        "reports: {} (junit.xml, report.html); suite output: {}",
        results.display(),
        work.join("suite-stdout.txt").display()
    );
    Ok(count_junit(&xml))
}

/// Builds the suite from `src` into `work/conformance`; returns its path.
fn build_suite(src: &Path, work: &Path) -> Result<PathBuf> {
    let tree = work.join("src");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    fs::create_dir_all(&tree)?;
    let rev = source_tree(src, &tree)?;
    let module_dir = tree.join("conformance");
    let go_mod = fs::read_to_string(module_dir.join("go.mod")).context("the suite's go.mod")?;
    let requires = requirements(&go_mod);
    let go_version = go_mod
        .lines()
        .find_map(|l| l.strip_prefix("go "))
        .unwrap_or("")
        .trim()
        .to_owned();
    ensure!(
        version_at_most(&go_version, "1.24.99"),
        "the suite needs Go {go_version}; this xtask brings Go 1.24 (update GO_PACKAGES)"
    );

    let root_dir = work.join("root");
    let go_pkgs: Vec<&str> = GO_PACKAGES.to_vec();
    let lib_pkgs: Vec<&str> = MODULES.iter().map(|(_, p)| *p).collect();
    let go_debs = fetch_debs(&work.join(format!("apt-{GO_SUITE}")), GO_SUITE, &go_pkgs)?;
    let lib_debs = fetch_debs(&work.join(format!("apt-{LIB_SUITE}")), LIB_SUITE, &lib_pkgs)?;
    for deb in go_debs.iter().chain(&lib_debs) {
        run(Command::new("dpkg").arg("-x").arg(deb).arg(&root_dir))?;
    }

    // Every required module: from the source tree (specs-go) or a Debian
    // package of exactly the pinned version.
    let gocode = root_dir.join("usr/share/gocode/src");
    let mut edit = Command::new(go_bin(&root_dir));
    edit.args(["mod", "edit"]).current_dir(&module_dir);
    println!("the suite's Go modules:");
    for (module, version) in &requires {
        if module == SPECS_GO {
            println!("  {module} {version}: from the suite's own source");
            edit.arg(format!("-replace={module}=../specs-go"));
            continue;
        }
        let Some((_, package)) = MODULES.iter().find(|(m, _)| m == module) else {
            bail!("go.mod requires {module}, for which this xtask knows no Debian package");
        };
        let deb = lib_debs
            .iter()
            .find(|d| file_name(d).starts_with(&format!("{package}_")))
            .context("a fetched package is missing")?;
        let deb_version = file_name(deb)
            .split('_')
            .nth(1)
            .and_then(|v| v.split('-').next())
            .unwrap_or("")
            .to_owned();
        ensure!(
            version.trim_start_matches('v') == deb_version,
            "go.mod pins {module} {version}, Debian {LIB_SUITE} has {package} {deb_version}"
        );
        println!("  {module} {version}: Debian {LIB_SUITE} {package} {deb_version}");
        edit.arg(format!(
            "-replace={module}={}",
            gocode.join(module).display()
        ));
    }
    go_env(&mut edit, &root_dir, work);
    run(&mut edit)?;

    let exe = work.join("conformance");
    let mut build = Command::new(go_bin(&root_dir));
    build
        .args(["build", "-o"])
        .arg(&exe)
        .arg(format!("-ldflags=-X main.Version={rev}"))
        .arg(".")
        .current_dir(&module_dir);
    go_env(&mut build, &root_dir, work);
    println!("$ go build (the conformance suite at {rev})");
    run(&mut build)?;
    Ok(exe)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn go_bin(root_dir: &Path) -> PathBuf {
    root_dir.join(GO_ROOT).join("bin/go")
}

/// A Go environment that never reaches the network.
fn go_env(cmd: &mut Command, root_dir: &Path, work: &Path) {
    cmd.env("GOROOT", root_dir.join(GO_ROOT))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPATH", work.join("gopath"))
        .env("GOCACHE", work.join("gocache"))
        .env("CGO_ENABLED", "0");
}

/// Puts the suite's `conformance/` and `specs-go/` into `tree`; returns the
/// revision it names them by.
fn source_tree(src: &Path, tree: &Path) -> Result<String> {
    let git_dir = if src.join("objects").is_dir() && src.join("HEAD").is_file() {
        Some(src.to_owned())
    } else if src.join(".git").exists() {
        Some(src.join(".git"))
    } else {
        None
    };
    if src.join("conformance/go.mod").is_file() {
        // A checkout: as it is.
        for dir in ["conformance", "specs-go"] {
            run(Command::new("cp").arg("-r").arg(src.join(dir)).arg(tree))?;
        }
        let rev = git_dir
            .and_then(|g| git(&g, &["rev-parse", "--short", "HEAD"]).ok())
            .unwrap_or_else(|| "checkout".to_owned());
        println!("the suite from the checkout {} ({rev})", src.display());
        return Ok(rev);
    }
    let Some(git_dir) = git_dir else {
        bail!(
            "{} is neither a distribution-spec checkout nor a Git directory of one",
            src.display()
        );
    };
    let rev = std::env::var("DLGRAB_CONFORMANCE_REV").unwrap_or_else(|_| "HEAD".to_owned());
    let commit = git(
        &git_dir,
        &["rev-parse", "--short", &format!("{rev}^{{commit}}")],
    )?;
    extract(&git_dir, &commit, "conformance", tree)?;
    // specs-go at the revision go.mod pins (a pseudo-version's last part).
    let go_mod = fs::read_to_string(tree.join("conformance/go.mod"))?;
    let pinned = requirements(&go_mod)
        .into_iter()
        .find(|(m, _)| m == SPECS_GO)
        .and_then(|(_, v)| v.rsplit('-').next().map(str::to_owned))
        .filter(|c| c.len() >= 12 && c.chars().all(|ch| ch.is_ascii_hexdigit()));
    let specs_rev = pinned.unwrap_or_else(|| commit.clone());
    extract(&git_dir, &specs_rev, "specs-go", tree)?;
    println!(
        "the suite from {} at {commit} (specs-go at {specs_rev})",
        git_dir.display()
    );
    Ok(commit)
}

fn git(git_dir: &Path, args: &[&str]) -> Result<String> {
    let (ok, out, err) = capture(
        Command::new("git").arg("--git-dir").arg(git_dir).args(args),
        Duration::from_secs(60),
    )?;
    ensure!(ok, "git {} failed: {}", args.join(" "), err.trim());
    Ok(out.trim().to_owned())
}

/// `git archive REV PATH | tar -x -C tree`.
fn extract(git_dir: &Path, rev: &str, path: &str, tree: &Path) -> Result<()> {
    let archive = tree.join(format!("{path}.tar"));
    run(Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["archive", "--format=tar", "-o"])
        .arg(&archive)
        .args([rev, path]))?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(tree))?;
    fs::remove_file(&archive)?;
    Ok(())
}

/// `require` lines of a go.mod: (module, version).
fn requirements(go_mod: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut block = false;
    for line in go_mod.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        let entry = if block {
            if line == ")" {
                block = false;
                continue;
            }
            line
        } else if line == "require (" {
            block = true;
            continue;
        } else if let Some(rest) = line.strip_prefix("require ") {
            rest
        } else {
            continue;
        };
        let mut parts = entry.split_whitespace();
        if let (Some(m), Some(v)) = (parts.next(), parts.next()) {
            out.push((m.to_owned(), v.to_owned()));
        }
    }
    out
}

/// Whether dotted version `a` ≤ `b`.
fn version_at_most(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) <= parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_counted_by_status() {
        let xml = r#"<testsuites><testsuite name="x">
            <testcase name="a" classname="" time="0.1" status="passed"><system-err>&lt;testcase</system-err></testcase>
            <testcase name="b/c &#34;q&#34;" status="failure"><failure message="m"/></testcase>
            <testcase name="d" status="skipped"><system-out>range request unsupported</system-out></testcase>
            <testcase name="e" time="1" status="passed"></testcase>
        </testsuite></testsuites>"#;
        let c = count_junit(xml);
        assert_eq!(c.get("passed"), 2);
        assert_eq!(c.get("failure"), 1);
        assert_eq!(c.get("skipped"), 1);
        assert_eq!(c.failed, ["b/c \"q\""]);
        assert!(c.report("1.1").is_err());
    }

    #[test]
    fn go_mod_requirements() {
        let m = "module x\n\ngo 1.24.0\n\nrequire (\n\tgithub.com/a/b v1.2.3\n\tgithub.com/c/d v0.0.0-20240926185104-8376368dd8aa // indirect\n)\nrequire e.org/f v2.0.0\n";
        assert_eq!(
            requirements(m),
            [
                ("github.com/a/b".to_owned(), "v1.2.3".to_owned()),
                (
                    "github.com/c/d".to_owned(),
                    "v0.0.0-20240926185104-8376368dd8aa".to_owned()
                ),
                ("e.org/f".to_owned(), "v2.0.0".to_owned()),
            ]
        );
        assert!(version_at_most("1.24.0", "1.24.99"));
        assert!(!version_at_most("1.25", "1.24.99"));
    }
}
