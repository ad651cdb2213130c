//! `cargo xtask bench registry`: blob upload throughput, the shim's example
//! server against Debian's `docker-registry`, the same curl client for both.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bench::{
    Samples, Scratch, Server, cpu_secs, opt_u64, parse_opts, pass, ratio, sha256_file,
    shim_registry_exe, start_docker_registry, start_shim, tail_text, timed, warm,
    write_random_file,
};
use crate::sh::apt_install;

/// Seed of the blob's bytes.
const SEED: u64 = 0x5eed;
/// Targets: shim/registry throughput, and the shim's peak RSS.
const TARGET_RATIO: f64 = 3.0;
const TARGET_RSS_MIB: f64 = 64.0;
/// How long one upload may take.
const UPLOAD_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `PUT <location>?digest=` with the whole body.
    Monolithic,
    /// `PATCH <location>` chunked, then `PUT <location>?digest=` empty.
    Patch,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Monolithic => "monolithic PUT",
            Mode::Patch => "chunked PATCH+PUT",
        }
    }
}

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let opts = parse_opts(args, &["size-mib", "rounds"])?;
    let size_mib = opt_u64(&opts, "size-mib", 1024)?;
    let rounds = opt_u64(&opts, "rounds", 3)?;
    apt_install(&["docker-registry", "curl"])?;
    let shim_exe = shim_registry_exe()?;

    let scratch = Scratch::new("registry")?;
    let size = size_mib << 20;
    let blob = scratch.path("blob.bin");
    println!("writing a {size_mib} MiB incompressible blob (seed {SEED:#x})");
    write_random_file(&blob, size, SEED)?;
    let digest = sha256_file(&blob)?;
    warm(&blob)?;
    println!("blob {digest}");

    let shim = start_shim(
        &shim_exe,
        &scratch.path("shim-storage"),
        &scratch.path("shim.log"),
    )?;
    let registry = start_docker_registry(
        &scratch.path("registry-storage"),
        &scratch.path("registry.yml"),
        &scratch.path("registry.log"),
    )?;
    println!(
        "shim {} (pid {}), docker-registry {} (pid {})",
        shim.url,
        shim.pid(),
        registry.url,
        registry.pid()
    );

    let modes = [Mode::Monolithic, Mode::Patch];
    // [mode][0 = shim, 1 = registry]: MB/s.
    let mut mbps = [
        [Samples::default(), Samples::default()],
        [Samples::default(), Samples::default()],
    ];
    // [mode][who]: the server's CPU seconds (user + system) per upload.
    let mut cpu_s = mbps.clone();
    let mut n = 0;
    for round in 0..rounds {
        for (m, &mode) in modes.iter().enumerate() {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for who in order {
                let server = if who == 0 { &shim } else { &registry };
                n += 1;
                let repo = format!(
                    "bench/r{round}-{}-{n}",
                    if m == 0 { "mono" } else { "patch" }
                );
                let cpu_before = cpu_secs(server.pid());
                let secs =
                    upload(&scratch, server, &repo, &blob, &digest, mode).with_context(|| {
                        format!(
                            "{} upload into {} failed; server log: {}",
                            mode.name(),
                            if who == 0 {
                                "the shim"
                            } else {
                                "docker-registry"
                            },
                            tail_text(&server.log, 1500)
                        )
                    })?;
                let rate = size as f64 / 1e6 / secs;
                let cpu = cpu_secs(server.pid())
                    .zip(cpu_before)
                    .map(|(after, before)| after - before);
                println!(
                    "  round {} {:<18} {:<15} {secs:7.3} s  {rate:8.1} MB/s  server CPU {}",
                    round + 1,
                    mode.name(),
                    if who == 0 { "shim" } else { "docker-registry" },
                    cpu.map_or_else(|| "?".to_owned(), |c| format!("{c:.2} s")),
                );
                mbps[m][who].push(rate);
                if let Some(c) = cpu {
                    cpu_s[m][who].push(c);
                }
            }
        }
    }
    let shim_rss = shim.vm_hwm_kib().map(|k| k as f64 / 1024.0);
    let registry_rss = registry.vm_hwm_kib().map(|k| k as f64 / 1024.0);
    drop(shim);
    drop(registry);

    println!();
    println!(
        "bench registry: {size_mib} MiB blob, {rounds} round(s), curl client, \
         MB/s = 10^6 bytes/s, median (min–max); upload timed from the body's first byte to the commit's reply"
    );
    println!(
        "{:<18} | {:<26} | {:<26} | {:>14} | target",
        "mode", "shim MB/s", "docker-registry MB/s", "shim/registry"
    );
    println!("{}", "-".repeat(18 + 26 + 26 + 14 + 20));
    for (m, &mode) in modes.iter().enumerate() {
        let (r, shown) = ratio(mbps[m][0].median(), mbps[m][1].median());
        println!(
            "{:<18} | {:<26} | {:<26} | {shown:>14} | ≥ {TARGET_RATIO} {}",
            mode.name(),
            mbps[m][0].show(1),
            mbps[m][1].show(1),
            pass(r.map(|r| r >= TARGET_RATIO)),
        );
    }
    println!("server CPU s per upload (user+sys, less sensitive to a busy machine than MB/s):");
    for (m, &mode) in modes.iter().enumerate() {
        let (_, shown) = ratio(cpu_s[m][1].median(), cpu_s[m][0].median());
        println!(
            "{:<18} | shim {:<22} | docker-registry {:<22} | registry/shim {shown}",
            mode.name(),
            cpu_s[m][0].show(2),
            cpu_s[m][1].show(2),
        );
    }
    let show_mib = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} MiB"));
    println!(
        "shim peak RSS (VmHWM): {} | target < {TARGET_RSS_MIB} MiB {}",
        show_mib(shim_rss),
        pass(shim_rss.map(|v| v < TARGET_RSS_MIB))
    );
    println!(
        "docker-registry peak RSS (VmHWM, for reference): {}",
        show_mib(registry_rss)
    );
    Ok(())
}

/// Uploads `blob` into `server` under `repo` (POST not timed); returns the seconds
/// the body transfer and the commit took.
fn upload(
    scratch: &Scratch,
    server: &Server,
    repo: &str,
    blob: &Path,
    digest: &str,
    mode: Mode,
) -> Result<f64> {
    let headers = scratch.path("headers");
    let out = scratch.path("curl.out");
    let err = scratch.path("curl.err");
    let post = Command::new("curl")
        .args(["-sS", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("-D")
        .arg(&headers)
        .arg(format!("{}/v2/{repo}/blobs/uploads/", server.url))
        .output()
        .context("cannot run curl")?;
    let code = String::from_utf8_lossy(&post.stdout);
    if code != "202" {
        bail!(
            "POST uploads answered {code}: {}",
            String::from_utf8_lossy(&post.stderr)
        );
    }
    let location = absolute(&server.url, &location_header(&headers)?);

    // curl: no `Expect: 100-continue` round trip, the same for both servers.
    let base = |c: &mut Command| {
        c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", "Expect:"])
            .args(["-H", "Content-Type: application/octet-stream"]);
    };
    let check = |what: &str, t: &crate::bench::Timed, want: &str| -> Result<()> {
        let code = fs::read_to_string(&out).unwrap_or_default();
        if !t.ok() || code != want {
            bail!(
                "{what}: curl {:?}, HTTP {code}, stderr: {}",
                t.status,
                tail_text(&err, 1000)
            );
        }
        Ok(())
    };
    match mode {
        Mode::Monolithic => {
            let mut put = Command::new("curl");
            base(&mut put);
            put.arg("-T").arg(blob).arg(with_digest(&location, digest));
            let t = timed(&mut put, &out, &err, UPLOAD_LIMIT)?;
            check("PUT with body", &t, "201")?;
            Ok(t.secs)
        }
        Mode::Patch => {
            let mut patch = Command::new("curl");
            base(&mut patch);
            patch
                .args(["-X", "PATCH", "-H", "Transfer-Encoding: chunked", "-T"])
                .arg(blob)
                .arg("-D")
                .arg(&headers)
                .arg(&location);
            let t1 = timed(&mut patch, &out, &err, UPLOAD_LIMIT)?;
            check("chunked PATCH", &t1, "202")?;
            let next = absolute(&server.url, &location_header(&headers)?);
            let mut put = Command::new("curl");
            base(&mut put);
            put.args(["-X", "PUT", "--data-binary", ""])
                .arg(with_digest(&next, digest));
            let t2 = timed(&mut put, &out, &err, UPLOAD_LIMIT)?;
            check("empty PUT", &t2, "201")?;
            Ok(t1.secs + t2.secs)
        }
    }
}

/// The last `Location` header in a curl `-D` dump.
fn location_header(headers: &Path) -> Result<String> {
    let text = fs::read_to_string(headers)?;
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .next_back()
        .with_context(|| format!("no Location header in {text:?}"))
}

/// `location` resolved against `base` (`http://127.0.0.1:PORT`).
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve() {
        let b = "http://127.0.0.1:5000";
        assert_eq!(
            absolute(b, "/v2/x/blobs/uploads/1"),
            format!("{b}/v2/x/blobs/uploads/1")
        );
        assert_eq!(absolute(b, "http://h/v2/"), "http://h/v2/");
        assert_eq!(
            with_digest("/u?_state=a", "sha256:0"),
            "/u?_state=a&digest=sha256:0"
        );
        assert_eq!(with_digest("/u", "sha256:0"), "/u?digest=sha256:0");
    }
}
