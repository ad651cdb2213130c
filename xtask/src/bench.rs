//! `cargo xtask bench`: side-by-side benchmarks, run as real processes
//! (never timed unit tests), interleaved round by round, reported as
//! median (min–max) with ratios and PASS/MISS against targets.
//!
//! ```text
//! cargo xtask bench registry [--size-mib 1024] [--rounds 3]
//! cargo xtask bench export [--base-mib 512] [--rounds 3] [--scenarios S1,S2,S3a] [--daemon X]
//! cargo xtask bench export --scenarios nonroot,rootless,netns,remote [--base-mib 256] [--rounds 3]
//! cargo xtask bench copy [--base-mib 256] [--new-mib 2] [--rounds 3] [--from d] [--to b] [--dlgrab PATH]
//! ```
//!
//! This module holds what both share: option parsing, statistics, timed
//! processes, release builds, the two registries (the `shim-registry` binary
//! and Debian's `docker-registry`), seeded blob files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{bench_copy, bench_export, bench_files, bench_registry, root};

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench <name> [options]

  registry [--size-mib 1024] [--rounds 3]
      one incompressible blob uploaded with curl into the `shim-registry` binary
      and into Debian's docker-registry, monolithic PUT and streamed PATCH:
      MB/s, ratio shim/registry, the shim's peak RSS
  export [--base-mib 512] [--rounds 3] [--scenarios S1,S2,S3a[,S3b]] [--daemon X]
      top and middle layer of a busybox + <base-mib> image out of the test
      daemons: dlgrab vs `docker save | tar -x` vs `skopeo copy` vs `cat` (floor)
      S1 containerd store (c), S2 classic pulled image (b),
      S3a classic never-pushed (a), S3b the same on b;
      --daemon X (any of a, b, c, d, e, p) runs the scenarios its store can
      play on X instead (S1 on a containerd store, else S2 and S3)
  export --scenarios nonroot,rootless,netns,remote [--base-mib 256] [--rounds 3]
      busybox + <base-mib> + 4 MiB + 1 KiB top, never pushed: dlgrab --via auto
      vs the same user's `docker save | tar -x` through the same host; nonroot:
      the docker group member on a, b, d, p, c, e; netns: the member on n's
      unix socket; remote: root on n over tcp:// and ssh:// (a throw-away
      sshd); routes taken, ratios, peak RSS, PASS/MISS (top <= 0.15, ssh 0.3)
  copy [--base-mib 256] [--new-mib 2] [--rounds 3] [--from d] [--to b] [--dlgrab PATH]
      an image whose <base-mib> base DEST (--to) already holds plus a <new-mib> new
      layer: `dlgrab --to DEST` vs `docker save | docker -H DEST load`, and both
      through ssh (a throw-away sshd on 127.0.0.1): seconds, ratio (target <= 0.2),
      bytes sent
  files [--files 30000] [--rounds 3] [--daemon c,e] [--dlgrab PATH]
      busybox + a layer of many small files on the containerd store: dlgrab
      --format oci and the seed format vs `docker save | tar -x` of that layer
      (target: oci <= 1.5x save)";

/// `cargo xtask bench …`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    match args {
        ["registry", rest @ ..] => bench_registry::run(rest),
        ["export", rest @ ..] => bench_export::run(rest),
        ["copy", rest @ ..] => bench_copy::run(rest),
        ["files", rest @ ..] => bench_files::run(rest),
        [] | ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown benchmark {args:?}\n{USAGE}"),
    }
}

/// `--key value` / `--key=value` options; every key must be in `known`.
pub(crate) fn parse_opts<'a>(args: &[&'a str], known: &[&str]) -> Result<HashMap<String, &'a str>> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, v),
            None => {
                let Some(&v) = it.next() else {
                    bail!("{arg} needs a value\n{USAGE}");
                };
                (arg, v)
            }
        };
        let Some(key) = key.strip_prefix("--").filter(|k| known.contains(k)) else {
            bail!("unknown option {arg:?}\n{USAGE}");
        };
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// A positive number option, or its default.
pub(crate) fn opt_u64(opts: &HashMap<String, &str>, key: &str, default: u64) -> Result<u64> {
    match opts.get(key) {
        None => Ok(default),
        Some(v) => {
            let n: u64 = v.parse().with_context(|| format!("--{key} {v}"))?;
            anyhow::ensure!(n > 0, "--{key} must be positive");
            Ok(n)
        }
    }
}

/// Measurements of one quantity.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples(Vec<f64>);

impl Samples {
    pub(crate) fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub(crate) fn median(&self) -> Option<f64> {
        let v = self.sorted();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    pub(crate) fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    pub(crate) fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }

    /// `median (min–max)` with `decimals`, or `n/a`.
    pub(crate) fn show(&self, decimals: usize) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(m), Some(lo), Some(hi)) => {
                format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
            }
            _ => "n/a".to_owned(),
        }
    }
}

/// `a / b` of two medians, formatted, or `n/a`.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> (Option<f64>, String) {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => (Some(a / b), format!("{:.3}", a / b)),
        _ => (None, "n/a".to_owned()),
    }
}

pub(crate) fn pass(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a",
    }
}

/// How a timed process ended.
#[derive(Debug)]
pub(crate) struct Timed {
    pub(crate) secs: f64,
    /// `None`: killed at the time limit.
    pub(crate) status: Option<ExitStatus>,
}

impl Timed {
    pub(crate) fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Waits for `children` (spawned at `start`) until all exit; kills all at `limit`.
fn wait_all(start: Instant, mut children: Vec<Child>, limit: Duration) -> Result<Timed> {
    let deadline = start + limit;
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    loop {
        for (c, s) in children.iter_mut().zip(statuses.iter_mut()) {
            if s.is_none() {
                *s = c.try_wait()?;
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Ok(Timed {
                secs: start.elapsed().as_secs_f64(),
                status: None,
            });
        }
        thread::sleep(Duration::from_millis(1));
    }
    let secs = start.elapsed().as_secs_f64();
    // A pipeline's status: its first failure, else the last one's.
    let status = statuses
        .iter()
        .flatten()
        .find(|s| !s.success())
        .or(statuses.last().and_then(Option::as_ref))
        .copied();
    Ok(Timed { secs, status })
}

/// Runs one process with stdin closed, stdout to `out` and stderr to `err`, timed.
pub(crate) fn timed(cmd: &mut Command, out: &Path, err: &Path, limit: Duration) -> Result<Timed> {
    cmd.stdin(Stdio::null())
        .stdout(File::create(out).with_context(|| format!("{}", out.display()))?)
        .stderr(File::create(err).with_context(|| format!("{}", err.display()))?);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    wait_all(start, vec![child], limit)
}

/// Runs `first | second` (stdin of `first` closed, stderr of both to `err`,
/// stdout of `second` to /dev/null), timed from the first spawn to the last exit.
pub(crate) fn timed_pipe(
    first: &mut Command,
    second: &mut Command,
    err: &Path,
    limit: Duration,
) -> Result<Timed> {
    let err_file = File::create(err).with_context(|| format!("{}", err.display()))?;
    first
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err_file.try_clone()?);
    let start = Instant::now();
    let mut a = first
        .spawn()
        .with_context(|| format!("cannot start {first:?}"))?;
    let pipe = a.stdout.take().expect("piped");
    second
        .stdin(Stdio::from(pipe))
        .stdout(Stdio::null())
        .stderr(err_file);
    let b = match second.spawn() {
        Ok(b) => b,
        Err(e) => {
            let _ = a.kill();
            let _ = a.wait();
            return Err(e).with_context(|| format!("cannot start {second:?}"));
        }
    };
    wait_all(start, vec![a, b], limit)
}

/// The last `max` bytes of a text file, trimmed.
pub(crate) fn tail_text(path: &Path, max: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    let mut cut = text.len().saturating_sub(max);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_owned()
}

/// A scratch folder under `target/xtask/bench/`, removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(what: &str) -> Result<Self> {
        let dir = root()
            .join("target/xtask/bench")
            .join(format!("{what}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The `shim-registry` program, built in release (its `cli` feature).
pub(crate) fn shim_registry_exe() -> Result<PathBuf> {
    cargo_release_exe(
        &[
            "-p",
            "shim-registry",
            "--features",
            "cli",
            "--bin",
            "shim-registry",
        ],
        "shim-registry",
    )
}

/// Builds a release executable with cargo and returns its path (from cargo's JSON messages).
pub(crate) fn cargo_release_exe(args: &[&str], target_name: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("$ cargo build --release {}", args.join(" "));
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("cargo build --release {} failed", args.join(" "));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == target_name
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo built no executable named {target_name}")
}

/// A port on 127.0.0.1 free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A registry process, killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    pub(crate) log: PathBuf,
    /// Kept open so that the process never writes into a closed pipe.
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn host_port(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Peak resident set (`VmHWM`) in KiB.
    pub(crate) fn vm_hwm_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name's closing parenthesis: state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// `getconf CLK_TCK`, 100 if it cannot be read.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `shim-registry` binary on a free port with fs storage in `storage`.
pub(crate) fn start_shim(exe: &Path, storage: &Path, log: &Path) -> Result<Server> {
    fs::create_dir_all(storage)?;
    let mut child = Command::new(exe)
        .args(["serve", "--addr", "127.0.0.1:0", "--storage"])
        .arg(storage)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let got = r.read_line(&mut line).map(|_| line);
        let _ = tx.send((got, r));
    });
    let mut server = Server {
        child,
        url: String::new(),
        log: log.to_owned(),
        _stdout: None,
    };
    let (line, reader) = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the shim printed no line within 30 s")?;
    let line = line?;
    server._stdout = Some(reader);
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        bail!(
            "the shim's first line is {line:?}, not `listening on …`; log: {}",
            tail_text(log, 2000)
        );
    };
    anyhow::ensure!(url.starts_with("http://127.0.0.1:"), "unexpected URL {url}");
    server.url = url.to_owned();
    wait_v2(&server)?;
    Ok(server)
}

/// Starts Debian's `docker-registry serve` with filesystem storage in `storage`.
pub(crate) fn start_docker_registry(storage: &Path, config: &Path, log: &Path) -> Result<Server> {
    fs::create_dir_all(storage)?;
    let port = free_port()?;
    let yaml = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n",
        storage.display()
    );
    fs::write(config, yaml)?;
    let out = File::create(log)?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("cannot start docker-registry (apt-get install docker-registry)")?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log: log.to_owned(),
        _stdout: None,
    };
    wait_v2(&server)?;
    Ok(server)
}

/// Waits (at most 30 s) until `GET /v2/` answers 200.
fn wait_v2(server: &Server) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
            .arg(format!("{}/v2/", server.url))
            .output()
            .context("cannot run curl")?;
        if out.stdout == b"200" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer GET /v2/ within 30 s; log: {}",
                server.url,
                tail_text(&server.log, 2000)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The `index`-th SplitMix64 word for `seed`: the same as testkit's `RandomReader`.
fn word(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes `size` bytes of `testkit::random_bytes(size, seed)` to `path`, a
/// word at a time (testkit's reader goes byte by byte, slow unoptimised).
pub(crate) fn write_random_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < size {
        let n = usize::try_from((size - pos).min(buf.len() as u64))?;
        for (k, chunk) in buf[..n].chunks_mut(8).enumerate() {
            let w = word(seed, pos / 8 + k as u64).to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        f.write_all(&buf[..n])?;
        pos += n as u64;
    }
    f.flush()?;
    Ok(())
}

/// `sha256:<hex>` of a file, by `sha256sum`.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("cannot run sha256sum")?;
    anyhow::ensure!(out.status.success(), "sha256sum {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    anyhow::ensure!(hex.len() == 64, "sha256sum printed {text:?}");
    Ok(format!("sha256:{hex}"))
}

/// Reads a file once into nothing (warms the page cache).
pub(crate) fn warm(path: &Path) -> Result<()> {
    let mut f = File::open(path)?;
    std::io::copy(&mut f, &mut std::io::sink())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_file_matches_testkit() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for size in [0u64, 5, 8, 13, (1 << 20) + 3] {
            let p = dir.join(format!("r{size}"));
            write_random_file(&p, size, 7).unwrap();
            let want = testkit::random_bytes(usize::try_from(size).unwrap(), 7);
            assert_eq!(fs::read(&p).unwrap(), want, "size {size}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn samples_median_min_max() {
        let mut s = Samples::default();
        assert_eq!(s.show(1), "n/a");
        for v in [3.0, 1.0, 2.0] {
            s.push(v);
        }
        assert_eq!(s.median(), Some(2.0));
        s.push(10.0);
        assert_eq!(s.median(), Some(2.5));
        assert_eq!(s.show(1), "2.5 (1.0–10.0)");
    }

    #[test]
    fn own_cpu_time_reads() {
        let t = cpu_secs(std::process::id()).unwrap();
        assert!(t >= 0.0);
    }

    #[test]
    fn options_parse() {
        let o = parse_opts(&["--rounds", "2", "--size-mib=8"], &["rounds", "size-mib"]).unwrap();
        assert_eq!(opt_u64(&o, "rounds", 3).unwrap(), 2);
        assert_eq!(opt_u64(&o, "size-mib", 1).unwrap(), 8);
        assert_eq!(opt_u64(&o, "other", 5).unwrap(), 5);
        assert!(parse_opts(&["--nope", "1"], &["rounds"]).is_err());
    }
}
