//! `cargo xtask`: the project's developer commands (daemons, tests, demo).
//!
//! ```text
//! cargo xtask daemons up|down|status   the test daemons a, b, c, d, e, p, n
//! cargo xtask test [--daemon X,Y] [--jobs N] [--no-lint] [--no-unit]
//! cargo xtask demo                     build a demo image and export it with dlgrab
//! cargo xtask dist [--check]           static binary, tarball, .deb into target/dist (--check: test them)
//! cargo xtask dist completions|man     only completions or the man page
//! cargo xtask bench registry|export|copy side-by-side benchmarks (see bench.rs)
//! cargo xtask conformance [--dev]      the OCI conformance suite against shim-registry
//! cargo xtask package                  shim-registry packaged, used by a crate outside the workspace
//! cargo xtask buildx                   fetch docker-buildx, print its DOCKER_CONFIG folder
//! ```

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask is a command-line tool that reports to its user"
)]

mod bench;
mod bench_copy;
mod bench_export;
mod bench_files;
mod bench_reach;
mod bench_registry;
mod buildx;
mod conformance;
mod daemons;
mod demo;
mod dist;
mod package;
mod sh;
mod test;
#[cfg(test)]
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

  daemons up|down|status   start, stop or show the test daemons a–e, p, n
  test [--daemon a,b,…] [--jobs N] [--no-lint] [--no-unit]
                           fmt, clippy, unit tests, then the daemon tests per
                           daemon, N daemons at a time (default 3)
  demo                     build dlgrab-demo:latest in daemon a and export it with dlgrab
  dist [--check]           a static x86_64 binary, completions, man page, a tarball and
                           a .deb into target/dist; --check also tests them (a scratch
                           container on the machine's Docker, dpkg --root)
  dist completions|man     only the shell completions or the man page
  bench registry|export|copy [options]
                           side-by-side benchmarks; `cargo xtask bench` lists them
  conformance [--dev] [--src PATH]
                           the OCI distribution-spec conformance suite against
                           shim-registry (source: DLGRAB_CONFORMANCE_SRC)
  package                  cargo package shim-registry, then push to and pull from
                           it in a crate outside the workspace (no clap in its tree)
  buildx                   fetch Debian sid's docker-buildx and print the Docker
                           CLI config folder the BuildKit tests use";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    std::env::set_current_dir(root())?;
    match args.as_slice() {
        ["daemons", "up"] => daemons::up_all(),
        ["daemons", "down"] => daemons::down_all(),
        ["daemons", "status"] => daemons::status_all(),
        ["test", rest @ ..] => test::run(rest),
        ["demo"] => demo::run(),
        ["dist", rest @ ..] => dist::run(rest),
        ["bench", rest @ ..] => bench::run(rest),
        ["conformance", rest @ ..] => conformance::run_suite(rest),
        ["package"] => package::run(),
        ["buildx"] => buildx::plugin_config().map(|config| {
            println!("{}={}", testkit::ENV_BUILDX_CONFIG, config.display());
        }),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown command {args:?}\n{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's folder.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
