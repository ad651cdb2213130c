//! Running commands: quietly, with a time limit, or streamed and captured.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Runs `cmd` with stdin closed; returns (success, stdout, stderr), killing it after `limit`.
pub(crate) fn capture(cmd: &mut Command, limit: Duration) -> Result<(bool, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let read = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                s = String::from_utf8_lossy(&buf).into_owned();
            }
            s
        })
    };
    let out = read(child.stdout.take().map(|r| Box::new(r) as _));
    let err = read(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    Ok((status.is_some_and(|s| s.success()), out, err))
}

/// Runs `cmd` with inherited output; fails if it cannot start or exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// Runs `cmd`, echoing its stdout and stderr line by line as they come, and
/// returns its status with every line (stdout and stderr interleaved).
pub(crate) fn stream(cmd: &mut Command) -> Result<(ExitStatus, Vec<String>)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let pump = |r: Box<dyn Read + Send>, to_stderr: bool| {
        let lines = Arc::clone(&lines);
        thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                let line = String::from_utf8_lossy(&buf).into_owned();
                if to_stderr {
                    let _ = std::io::stderr().write_all(line.as_bytes());
                } else {
                    let _ = std::io::stdout().write_all(line.as_bytes());
                }
                lines
                    .lock()
                    .expect("no panics while locked")
                    .push(line.trim_end().to_owned());
                buf.clear();
            }
        })
    };
    let out = pump(Box::new(child.stdout.take().expect("piped")), false);
    let err = pump(Box::new(child.stderr.take().expect("piped")), true);
    let status = child.wait()?;
    let _ = out.join();
    let _ = err.join();
    let lines = std::mem::take(&mut *lines.lock().expect("no panics while locked"));
    Ok((status, lines))
}

/// Whether a Debian package is installed.
pub(crate) fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the Debian packages among `packages` that are missing (`apt-get update` first, once).
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("cannot install {}", missing.join(" ")))
}

/// The last `n` lines of a file, for error messages.
pub(crate) fn tail_file(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` with stdin closed and stdout and stderr into the file `log`,
/// killing it after `limit`; returns its status (`None` when killed) and
/// the log's lines.
pub(crate) fn run_logged(
    cmd: &mut Command,
    log: &std::path::Path,
    limit: Duration,
) -> Result<(Option<ExitStatus>, Vec<String>)> {
    let file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read(log).with_context(|| format!("cannot read {}", log.display()))?;
    let lines = String::from_utf8_lossy(&text)
        .lines()
        .map(str::to_owned)
        .collect();
    Ok((status, lines))
}

/// Downloads `packages` from Debian `suite` into `apt/debs` with a private
/// apt state under `apt` (the system's sources, lists and status untouched;
/// kept: a second run downloads nothing); returns the `.deb` files.
pub(crate) fn fetch_debs(apt: &Path, suite: &str, packages: &[&str]) -> Result<Vec<PathBuf>> {
    let debs = apt.join("debs");
    for dir in ["lists/partial", "cache/archives/partial", "debs"] {
        fs::create_dir_all(apt.join(dir))?;
    }
    let find = |package: &str| -> Option<PathBuf> {
        fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
            })
    };
    if packages.iter().any(|p| find(p).is_none()) {
        let sources = apt.join("sources.list");
        fs::write(
            &sources,
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://deb.debian.org/debian {suite} main\n"
            ),
        )?;
        let opts = [
            format!("-o=Dir::Etc::SourceList={}", sources.display()),
            "-o=Dir::Etc::SourceParts=/dev/null".to_owned(),
            format!("-o=Dir::State::Lists={}", apt.join("lists").display()),
            format!("-o=Dir::Cache={}", apt.join("cache").display()),
            "-o=Dir::State::status=/dev/null".to_owned(),
            "-o=APT::Architecture=amd64".to_owned(),
            // The debs folder is root's; no need to drop to _apt for it.
            "-o=APT::Sandbox::User=root".to_owned(),
        ];
        println!(
            "xtask: fetching Debian {suite}'s {} into {}",
            packages.join(" "),
            debs.display()
        );
        run(Command::new("apt-get").args(&opts).args(["-q", "update"]))?;
        run(Command::new("apt-get")
            .args(&opts)
            .args(["-q", "download"])
            .args(packages)
            .current_dir(&debs))?;
    }
    packages
        .iter()
        .map(|p| find(p).with_context(|| format!("apt-get download left no {p} deb")))
        .collect()
}
