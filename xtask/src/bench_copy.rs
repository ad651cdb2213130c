//! `cargo xtask bench copy`: `dlgrab --to DEST IMAGE` against `docker save
//! IMAGE | docker -H DEST load`, over a unix socket and through ssh.
//!
//! IMAGE is busybox + a `--base-mib` incompressible base that DEST already
//! holds (its BASE image is loaded there first) + a `--new-mib` new layer.
//! Each round removes IMAGE from DEST (BASE stays) before each tool, tools
//! interleaved round by round. Through ssh, a throw-away sshd on 127.0.0.1
//! (`testkit::Sshd`) whose sessions reach DEST: `dlgrab --to
//! ssh://dlgrab-test` against `docker save IMAGE | ssh dlgrab-test docker
//! load`. Reports median (min–max) seconds, the ratio dlgrab/docker (target
//! ≤ 0.2) and the bytes each sends.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use testkit::{Daemon, ImageBuilder, Sshd, unique_name};

use crate::bench::{
    Samples, Scratch, cargo_release_exe, opt_u64, parse_opts, pass, ratio, tail_text, timed,
    timed_pipe,
};
use crate::daemons;

/// The target: dlgrab's time over the plain pipeline's.
const TARGET: f64 = 0.2;
const LIMIT: Duration = Duration::from_secs(900);

/// Images this bench made, removed when dropped.
#[derive(Default)]
struct Made(Vec<(Daemon, String)>);

impl Drop for Made {
    fn drop(&mut self) {
        for (daemon, reference) in self.0.iter().rev() {
            daemon.remove_image(reference);
        }
    }
}

/// `cargo xtask bench copy …`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let opts = parse_opts(
        args,
        &["base-mib", "new-mib", "rounds", "from", "to", "dlgrab"],
    )?;
    let base_mib = opt_u64(&opts, "base-mib", 256)?;
    let new_mib = opt_u64(&opts, "new-mib", 2)?;
    let rounds = opt_u64(&opts, "rounds", 3)? as usize;
    let from = opts.get("from").copied().unwrap_or("d");
    let to = opts.get("to").copied().unwrap_or("b");
    if from == to {
        bail!("--from and --to name the same daemon ({from})");
    }
    let dlgrab = match opts.get("dlgrab") {
        Some(path) => Path::new(path).to_path_buf(),
        None => cargo_release_exe(&["-p", "dlgrab"], "dlgrab")?,
    };
    let source = Daemon::try_connect(from, &daemons::host(from))
        .with_context(|| format!("source daemon {from} (cargo xtask daemons up)"))?;
    let dest = Daemon::try_connect(to, &daemons::host(to))
        .with_context(|| format!("destination daemon {to} (cargo xtask daemons up)"))?;
    println!(
        "copy: {} → {}\n  source {}\n  dest   {}",
        from,
        to,
        daemons::describe(&source),
        daemons::describe(&dest)
    );
    let scratch = Scratch::new("copy")?;
    let mut made = Made::default();

    let name = unique_name("dlgrab-bench/copy");
    let (base_tag, image_tag) = (format!("{name}:base"), format!("{name}:image"));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    println!("building {image_tag}: busybox + {base_mib} MiB base + {new_mib} MiB new layer");
    made.0.push((source.clone(), base_tag.clone()));
    made.0.push((source.clone(), image_tag.clone()));
    made.0.push((dest.clone(), base_tag.clone()));
    made.0.push((dest.clone(), image_tag.clone()));
    ImageBuilder::new(&base_tag)
        .busybox()
        .random_file("/base.bin", base_mib << 20, seed)
        .try_build(&source)?;
    ImageBuilder::new(&image_tag)
        .busybox()
        .random_file("/base.bin", base_mib << 20, seed)
        .random_file("/new.bin", new_mib << 20, seed + 1)
        .try_build(&source)?;

    // DEST holds BASE.
    let err = scratch.path("seed.err");
    let seeded = timed_pipe(
        source.command().args(["save", &base_tag]),
        dest.command().args(["load", "-q"]),
        &err,
        LIMIT,
    )?;
    if !seeded.ok() {
        bail!("loading BASE into {to} failed: {}", tail_text(&err, 600));
    }
    let save_bytes = save_size(&source, &image_tag)?;
    println!(
        "{to} holds BASE ({:.1} s); `docker save IMAGE` is {} bytes",
        seeded.secs, save_bytes
    );

    let sshd = Sshd::start(&dest.host).map_err(|e| anyhow::anyhow!("sshd: {e}"))?;
    let path = sshd.path_env();
    let url = sshd.url();

    let mut times: [Samples; 4] = Default::default();
    let mut dlgrab_bytes: [Option<u64>; 2] = [None, None];
    let labels = [
        "dlgrab --to unix://",
        "docker save | docker -H DEST load",
        "dlgrab --to ssh://",
        "docker save | ssh docker load",
    ];
    for round in 1..=rounds {
        for (tool, label) in labels.iter().enumerate() {
            dest.remove_image(&image_tag);
            if dest.try_inspect(&image_tag).is_ok() {
                bail!("cannot remove {image_tag} from {to} before a round");
            }
            let out = scratch.path(&format!("{round}-{tool}.out"));
            let err = scratch.path(&format!("{round}-{tool}.err"));
            let t = match tool {
                0 | 2 => {
                    let dest_url = if tool == 0 { dest.host.as_str() } else { &url };
                    let mut cmd = Command::new(&dlgrab);
                    cmd.args(["--to", dest_url, "--json", "-q", &image_tag])
                        .env("DOCKER_HOST", &source.host)
                        .env("PATH", &path)
                        .env_remove("RUST_LOG");
                    timed(&mut cmd, &out, &err, LIMIT)?
                }
                1 => timed_pipe(
                    source.command().args(["save", &image_tag]),
                    dest.command().args(["load", "-q"]),
                    &err,
                    LIMIT,
                )?,
                _ => timed_pipe(
                    source.command().args(["save", &image_tag]),
                    Command::new("ssh").env("PATH", &path).args([
                        testkit::SSH_HOST,
                        "docker",
                        "load",
                        "-q",
                    ]),
                    &err,
                    LIMIT,
                )?,
            };
            if !t.ok() {
                bail!("{label} failed: {}", tail_text(&err, 800));
            }
            if dest.try_inspect(&image_tag).is_err() {
                bail!("{label} left no {image_tag} on {to}");
            }
            if tool == 0 || tool == 2 {
                let report: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&out)?)
                        .with_context(|| format!("{label}: --json output"))?;
                dlgrab_bytes[tool / 2] = report["bytes_sent"].as_u64();
            }
            println!("round {round}: {label:36} {:7.2} s", t.secs);
            times[tool].push(t.secs);
        }
    }
    drop(sshd);

    println!(
        "\n{:36} {:>22} {:>14}",
        "copy of IMAGE to DEST", "seconds", "bytes sent"
    );
    for (tool, label) in labels.iter().enumerate() {
        let bytes = match tool {
            0 | 2 => dlgrab_bytes[tool / 2].map_or("?".to_owned(), |b| b.to_string()),
            _ => save_bytes.to_string(),
        };
        println!("{label:36} {:>22} {bytes:>14}", times[tool].show(2));
    }
    for (name, d, p) in [("unix", 0, 1), ("ssh", 2, 3)] {
        let (r, text) = ratio(times[d].median(), times[p].median());
        println!(
            "ratio dlgrab/docker over {name}: {text} (target ≤ {TARGET}) {}",
            pass(r.map(|r| r <= TARGET))
        );
    }
    Ok(())
}

/// The size of `docker save IMAGE`, counted as it streams.
fn save_size(daemon: &Daemon, image: &str) -> Result<u64> {
    let mut child = daemon
        .command()
        .args(["save", image])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("docker save")?;
    let mut out = child.stdout.take().context("piped")?;
    let n = std::io::copy(&mut out, &mut std::io::sink())?;
    if !child.wait()?.success() {
        bail!("docker save {image} failed");
    }
    Ok(n)
}
