//! `cargo xtask test`: lints, unit tests, then the daemon tests once per daemon.

use std::process::Command;

use anyhow::{Result, bail};

use crate::daemons::{self, NAMES, describe};
use crate::sh::{apt_install, stream};

/// Debian packages the daemon tests use.
const PREREQUISITES: [&str; 3] = ["busybox-static", "skopeo", "docker-registry"];

/// The outcome of one step.
#[derive(Debug, Default)]
struct Step {
    name: String,
    ok: bool,
    passed: u64,
    failed: u64,
    skipped: u64,
    /// Names of failed tests, or why the step failed.
    notes: Vec<String>,
}

/// Options of `cargo xtask test`.
struct Options {
    daemons: Vec<&'static str>,
    lint: bool,
    unit: bool,
}

fn parse(args: &[&str]) -> Result<Options> {
    let mut opts = Options {
        daemons: Vec::new(),
        lint: true,
        unit: true,
    };
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        match arg {
            "--no-lint" => opts.lint = false,
            "--no-unit" => opts.unit = false,
            "--daemon" => {
                let Some(&want) = args.next() else {
                    bail!("--daemon needs one of a, b, c");
                };
                for name in want.split(',') {
                    let Some(&known) = NAMES.iter().find(|&&n| n == name) else {
                        bail!("unknown daemon {name:?}: one of a, b, c");
                    };
                    opts.daemons.push(known);
                }
            }
            _ => bail!(
                "unknown argument {arg:?}; usage: cargo xtask test [--daemon a|b|c] [--no-lint] [--no-unit]"
            ),
        }
    }
    if opts.daemons.is_empty() {
        opts.daemons = NAMES.to_vec();
    }
    Ok(opts)
}

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let opts = parse(args)?;
    let mut steps = Vec::new();

    if let Err(e) = apt_install(&PREREQUISITES) {
        steps.push(failed_step("prerequisites", format!("{e:#}")));
    }
    if opts.lint {
        steps.push(cargo_step("fmt", &["fmt", "--all", "--check"], &[]));
        steps.push(cargo_step(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        ));
    }
    if opts.unit {
        steps.push(cargo_step(
            "unit",
            &["test", "--workspace", "--exclude", "dlgrab-tests"],
            &[],
        ));
        steps.push(cargo_step(
            "testkit",
            &["test", "-p", "dlgrab-tests", "--lib"],
            &[],
        ));
    }

    // Build the daemon tests once, and the dlgrab binary they run (found
    // beside the test binary in the same target folder); each daemon run
    // below reuses both.
    let bin = cargo_step("build dlgrab", &["build", "-p", "dlgrab"], &[]);
    let build = cargo_step(
        "build it",
        &["test", "-p", "dlgrab-tests", "--test", "it", "--no-run"],
        &[],
    );
    let built = bin.ok && build.ok;
    steps.push(bin);
    steps.push(build);
    let mut hosts = Vec::new();
    for (name, result) in daemons::up(&opts.daemons) {
        match result {
            Ok(daemon) => {
                println!("{}", describe(&daemon));
                hosts.push((name, Some(daemon.host)));
            }
            Err(e) => {
                eprintln!("xtask: daemon {name} is missing: {e:#}");
                hosts.push((name, None));
                steps.push(failed_step(
                    &format!("daemon {name}"),
                    format!("daemon missing: {e:#}"),
                ));
            }
        }
    }
    if built {
        for (name, host) in hosts {
            let Some(host) = host else { continue };
            println!("\n==== daemon {name}: DOCKER_HOST={host}");
            steps.push(cargo_step(
                &format!("daemon {name}"),
                &["test", "-p", "dlgrab-tests", "--test", "it"],
                &[
                    ("DOCKER_HOST", host.as_str()),
                    ("DLGRAB_TEST_DAEMON", name),
                    ("DLGRAB_REQUIRE_DAEMON", "1"),
                ],
            ));
        }
    }

    summary(&steps)
}

fn failed_step(name: &str, why: String) -> Step {
    Step {
        name: name.to_owned(),
        notes: vec![why],
        ..Step::default()
    }
}

/// Runs `cargo <args>` with `env`, streamed, and reads libtest's counts from its output.
fn cargo_step(name: &str, args: &[&str], env: &[(&str, &str)]) -> Step {
    println!("\n==== {name}: cargo {}", args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(args).envs(env.iter().copied());
    let (status, lines) = match stream(&mut cmd) {
        Ok(done) => done,
        Err(e) => return failed_step(name, format!("{e:#}")),
    };
    let mut step = Step {
        name: name.to_owned(),
        ok: status.success(),
        ..Step::default()
    };
    for line in &lines {
        if let Some(counts) = line.strip_prefix("test result: ") {
            let (passed, failed, ignored) = parse_counts(counts);
            step.passed += passed;
            step.failed += failed;
            step.skipped += ignored;
        } else if line.starts_with("SKIP ") {
            step.skipped += 1;
        } else if let Some(test) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            step.notes.push(test.to_owned());
        }
    }
    if !step.ok && step.notes.is_empty() {
        step.notes.push(format!("cargo exited with {status}"));
    }
    step
}

/// `ok. 3 passed; 1 failed; 2 ignored; 0 measured; …` → (3, 1, 2).
fn parse_counts(text: &str) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for part in text.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(number)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = number.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => counts.0 += n,
            "failed" => counts.1 += n,
            "ignored" => counts.2 += n,
            _ => {}
        }
    }
    counts
}

/// Prints the table and the final `N passed, N failed` line; fails if any step failed.
fn summary(steps: &[Step]) -> Result<()> {
    println!("\n==== summary");
    println!(
        "{:<14} {:<6} {:>7} {:>7} {:>8}",
        "step", "result", "passed", "failed", "skipped"
    );
    for s in steps {
        let result = if s.ok { "ok" } else { "FAILED" };
        println!(
            "{:<14} {:<6} {:>7} {:>7} {:>8}",
            s.name, result, s.passed, s.failed, s.skipped
        );
        if !s.ok {
            for note in &s.notes {
                println!("    {note}");
            }
        }
    }
    let passed: u64 = steps.iter().map(|s| s.passed).sum();
    let failed: u64 = steps.iter().map(|s| s.failed).sum();
    let bad: Vec<&str> = steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    println!("{passed} passed, {failed} failed");
    if !bad.is_empty() {
        bail!("failed: {}", bad.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_counts;

    #[test]
    fn reads_libtest_counts() {
        assert_eq!(
            parse_counts(
                "ok. 3 passed; 1 failed; 2 ignored; 0 measured; 5 filtered out; finished in 0.01s"
            ),
            (3, 1, 2)
        );
        assert_eq!(
            parse_counts("FAILED. 0 passed; 4 failed; 0 ignored; 0 measured; 0 filtered out"),
            (0, 4, 0)
        );
    }
}
