//! The test daemons: `a` the machine's own; `b` and `c` Debian 13's dockerd
//! 26.x started beside it (classic store, containerd store); `d` and `e`
//! Debian sid's dockerd 28.5 (the same two stores); `p` Debian 12's Podman
//! 4.3 serving the Docker API (`podman system service`).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::{Daemon, Store};

use crate::root;
use crate::sh::{apt_install, capture, dpkg_installed, fetch_debs, run, tail_file};

/// Every daemon of the matrix, in order.
pub(crate) const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "p"];

/// What runs behind a daemon name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The machine's dockerd.
    Machine,
    /// A dockerd from a Debian suite fetched into a private apt root.
    Dockerd {
        suite: Suite,
        /// The containerd image store (`containerd-snapshotter`).
        containerd_store: bool,
    },
    /// `podman system service`.
    Podman,
}

/// A Debian suite whose docker.io xtask unpacks (never installs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    /// Debian 13: dockerd 26.x, containerd 1.7.
    Trixie,
    /// Debian sid: dockerd 28.5 (`docker.io` + `docker-cli`), containerd 2.1.
    Sid,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Trixie => "trixie",
            Suite::Sid => "sid",
        }
    }

    /// The packages to unpack (sid splits the CLI out of `docker.io`).
    fn packages(self) -> &'static [&'static str] {
        match self {
            Suite::Trixie => &["docker.io", "containerd"],
            Suite::Sid => &["docker.io", "docker-cli", "containerd"],
        }
    }

    /// The private apt state and unpacked root (trixie keeps its old folder).
    fn apt_dir(self) -> PathBuf {
        match self {
            Suite::Trixie => root().join("target/xtask/apt"),
            Suite::Sid => root().join("target/xtask/apt-sid"),
        }
    }
}

fn kind(name: &str) -> Kind {
    match name {
        "a" => Kind::Machine,
        "b" => Kind::Dockerd {
            suite: Suite::Trixie,
            containerd_store: false,
        },
        "c" => Kind::Dockerd {
            suite: Suite::Trixie,
            containerd_store: true,
        },
        "d" => Kind::Dockerd {
            suite: Suite::Sid,
            containerd_store: false,
        },
        "e" => Kind::Dockerd {
            suite: Suite::Sid,
            containerd_store: true,
        },
        "p" => Kind::Podman,
        _ => unreachable!("daemon names come from NAMES"),
    }
}

/// The process a pidfile of daemon `name` names (checked against its command line).
fn process_name(name: &str) -> &'static str {
    match kind(name) {
        Kind::Podman => "podman",
        _ => "dockerd",
    }
}

/// The machine's daemon.
const MACHINE_HOST: &str = "unix:///var/run/docker.sock";
/// Sockets, pidfiles and exec-roots (short: unix socket paths are limited to ~108 bytes).
const RUN_DIR: &str = "/run/dlgrab-xtask";
/// How long a daemon may take to answer `docker info` after starting.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopping daemon gets after SIGTERM before SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// `cargo xtask daemons up`: every daemon up, one line each; fails if any is missing.
pub(crate) fn up_all() -> Result<()> {
    let mut failed = Vec::new();
    for (name, result) in up(&NAMES) {
        match result {
            Ok(daemon) => println!("{}", describe(&daemon)),
            Err(e) => {
                eprintln!("{name} FAILED: {e:#}");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("daemon(s) {} did not come up", failed.join(", "));
    }
    Ok(())
}

/// Brings up the daemons `names`, each independently of the others' failures.
pub(crate) fn up<'a>(names: &[&'a str]) -> Vec<(&'a str, Result<Daemon>)> {
    names.iter().map(|&name| (name, up_one(name))).collect()
}

/// `cargo xtask daemons down`: stops the daemons xtask started (never the machine's own).
pub(crate) fn down_all() -> Result<()> {
    for name in NAMES {
        let pidfile = pidfile(name);
        let what = process_name(name);
        match read_pid(&pidfile, what) {
            Some(pid) => {
                stop(pid, what)?;
                // A dockerd killed hard leaves its managed containerd behind.
                let containerd = exec_root(name).join("containerd/containerd.pid");
                if let Some(pid) = read_pid(&containerd, "containerd") {
                    stop(pid, "containerd")?;
                }
                let _ = fs::remove_file(&pidfile);
                if matches!(kind(name), Kind::Podman) {
                    unmount_storage(name);
                }
                println!("{name} stopped");
            }
            None if name == "a" => println!("a left alone (the machine's daemon)"),
            None => println!("{name} was not running"),
        }
    }
    Ok(())
}

/// Podman's overlay driver bind-mounts its `storage/overlay` folder onto
/// itself and leaves it mounted when the service stops: unmounted here,
/// so that the tree can be removed.
fn unmount_storage(name: &str) {
    let overlay = state_dir(name).join("storage/overlay");
    let mounted = fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .any(|m| Path::new(m) == overlay)
    });
    if mounted {
        let done = Command::new("umount").arg(&overlay).status();
        if !done.is_ok_and(|s| s.success()) {
            eprintln!("xtask: {name}: cannot unmount {}", overlay.display());
        }
    }
}

/// `cargo xtask daemons status`: one line per daemon.
pub(crate) fn status_all() -> Result<()> {
    for name in NAMES {
        match Daemon::try_connect(name, &host(name)) {
            Ok(daemon) => println!("{} up", describe(&daemon)),
            Err(e) => println!(
                "{name} DOCKER_HOST={} down ({e}); log: {}",
                host(name),
                log_path(name).display()
            ),
        }
    }
    Ok(())
}

/// `a DOCKER_HOST=unix:///var/run/docker.sock (20.10.24+dfsg1, classic overlay2)`.
pub(crate) fn describe(d: &Daemon) -> String {
    let store = match d.store {
        Store::Classic if d.name == "p" => format!("podman, {}", d.driver),
        Store::Classic => format!("classic {}", d.driver),
        Store::Containerd => format!("containerd store, {}", d.driver),
    };
    format!("{} DOCKER_HOST={} ({}, {store})", d.name, d.host, d.version)
}

/// The `DOCKER_HOST` of a daemon.
pub(crate) fn host(name: &str) -> String {
    if name == "a" {
        MACHINE_HOST.to_owned()
    } else {
        format!("unix://{RUN_DIR}/{name}.sock")
    }
}

fn pidfile(name: &str) -> PathBuf {
    PathBuf::from(format!("{RUN_DIR}/{name}.pid"))
}

fn exec_root(name: &str) -> PathBuf {
    PathBuf::from(format!("{RUN_DIR}/{name}"))
}

/// Data root, daemon.json and log of a daemon xtask starts.
fn state_dir(name: &str) -> PathBuf {
    root().join("target/xtask/daemons").join(name)
}

fn log_path(name: &str) -> PathBuf {
    state_dir(name).join(format!("{}.log", process_name(name)))
}

fn up_one(name: &str) -> Result<Daemon> {
    let host = host(name);
    if let Ok(daemon) = Daemon::try_connect(name, &host) {
        return Ok(daemon);
    }
    fs::create_dir_all(RUN_DIR)?;
    fs::create_dir_all(state_dir(name))?;
    let (suite, containerd_store) = match kind(name) {
        Kind::Machine => return up_machine(),
        Kind::Podman => return up_podman(name),
        Kind::Dockerd {
            suite,
            containerd_store,
        } => (suite, containerd_store),
    };
    // The unpacked dockerds run the machine's runc (Debian 13's needs a newer glibc).
    if !Path::new("/usr/sbin/runc").exists() {
        apt_install(&["runc"])?;
    }
    let sbin = unpacked_docker(suite)?;
    if let Some(pid) = read_pid(&pidfile(name), "dockerd") {
        // Started earlier and still coming up (or stuck): wait for it rather than start a second.
        println!("xtask: {name}: dockerd {pid} is running, waiting for it");
        return wait_for(name, None);
    }
    // A pidfile left by a daemon that is gone would stop dockerd from starting.
    let _ = fs::remove_file(pidfile(name));
    let state = state_dir(name);
    let config = state.join("daemon.json");
    let features = if containerd_store {
        r#"{"features":{"containerd-snapshotter":true}}"#
    } else {
        "{}"
    };
    fs::write(&config, features)?;
    let log = fs::File::create(log_path(name))?;
    let apt_root = suite.apt_dir().join("root");
    let path = format!(
        "{0}/usr/bin:{0}/usr/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        apt_root.display()
    );
    println!(
        "xtask: starting daemon {name} (log: {})",
        log_path(name).display()
    );
    let child = Command::new(sbin.join("dockerd"))
        .arg("--config-file")
        .arg(&config)
        .arg(format!("--host={host}"))
        .arg("--data-root")
        .arg(state.join("data"))
        .arg("--exec-root")
        .arg(exec_root(name))
        .arg("--pidfile")
        .arg(pidfile(name))
        .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", sbin.join("dockerd").display()))?;
    wait_for(name, Some(child))
}

/// What `podman system service` reads through `CONTAINERS_CONF`: no default
/// `nofile` ulimit for containers (the sandbox refuses Podman's), and no systemd.
const PODMAN_CONF: &str = "\
[containers]
default_ulimits = []

[engine]
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
";

/// What Podman reads through `CONTAINERS_REGISTRIES_CONF`: registries on
/// loopback are insecure (plain HTTP or unverified TLS), as dockerd treats
/// 127.0.0.0/8, so that the tests' own `docker push` to a local registry
/// works (dlgrab's pushes say `tlsVerify=false` themselves). Podman matches
/// a location without a port against every port of that host.
const PODMAN_REGISTRIES: &str = "\
[[registry]]
location = \"127.0.0.1\"
insecure = true

[[registry]]
location = \"localhost\"
insecure = true
";

/// Daemon `p`: Debian 12's Podman serving the Docker API on its own socket,
/// with its own storage root and run root.
fn up_podman(name: &str) -> Result<Daemon> {
    if !dpkg_installed("podman") {
        apt_install(&["podman"])?;
    }
    if let Some(pid) = read_pid(&pidfile(name), "podman") {
        println!("xtask: {name}: podman {pid} is running, waiting for it");
        return wait_for(name, None);
    }
    let state = state_dir(name);
    let conf = state.join("containers.conf");
    fs::write(&conf, PODMAN_CONF)?;
    let registries = state.join("registries.conf");
    fs::write(&registries, PODMAN_REGISTRIES)?;
    let socket = format!("{RUN_DIR}/{name}.sock");
    // A socket left by a service that is gone would make the new one fail to bind.
    let _ = fs::remove_file(&socket);
    let log = fs::File::create(log_path(name))?;
    println!(
        "xtask: starting daemon {name} (podman; log: {})",
        log_path(name).display()
    );
    let child = Command::new("podman")
        .arg("--root")
        .arg(state.join("storage"))
        .arg("--runroot")
        .arg(exec_root(name))
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{socket}"))
        .env("CONTAINERS_CONF", &conf)
        .env("CONTAINERS_REGISTRIES_CONF", &registries)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start podman")?;
    fs::write(pidfile(name), child.id().to_string())?;
    wait_for(name, Some(child))
}

/// Daemon `a`: the machine's daemon, installed and started if it is not answering.
fn up_machine() -> Result<Daemon> {
    if !Path::new("/usr/sbin/dockerd").exists() && !Path::new("/usr/bin/dockerd").exists() {
        apt_install(&["docker.io"])?;
    }
    // Through the init script when there is one; that daemon is the machine's.
    let _ = capture(
        Command::new("service").args(["docker", "start"]),
        Duration::from_secs(60),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(daemon) = Daemon::try_connect("a", MACHINE_HOST) {
            return Ok(daemon);
        }
        thread::sleep(Duration::from_millis(500));
    }
    // No init system: run dockerd ourselves (then `daemons down` stops it).
    let log = fs::File::create(log_path("a"))?;
    println!(
        "xtask: starting the machine's dockerd (log: {})",
        log_path("a").display()
    );
    let child = Command::new("dockerd")
        .arg("--pidfile")
        .arg(pidfile("a"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start dockerd")?;
    wait_for("a", Some(child))
}

/// Waits (bounded) until daemon `name` answers; fails early if `child` exits.
fn wait_for(name: &str, mut child: Option<std::process::Child>) -> Result<Daemon> {
    let deadline = Instant::now() + START_LIMIT;
    let log = log_path(name);
    loop {
        match Daemon::try_connect(name, &host(name)) {
            Ok(daemon) => return Ok(daemon),
            Err(e) => {
                let exited = match child.as_mut() {
                    Some(c) => c.try_wait()?,
                    None => None,
                };
                if let Some(status) = exited {
                    bail!(
                        "daemon {name} exited ({status}) while starting; log {}:\n{}",
                        log.display(),
                        tail_file(&log, 20)
                    );
                }
                if Instant::now() >= deadline {
                    bail!(
                        "daemon {name} did not answer within {} s ({e}); log {}:\n{}",
                        START_LIMIT.as_secs(),
                        log.display(),
                        tail_file(&log, 20)
                    );
                }
            }
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// A suite's docker.io and containerd, fetched with a private apt state
/// (the system's sources and lists untouched) and unpacked; returns `usr/sbin`.
fn unpacked_docker(suite: Suite) -> Result<PathBuf> {
    let apt = suite.apt_dir();
    let sbin = apt.join("root/usr/sbin");
    if sbin.join("dockerd").exists() && apt.join("root/usr/bin/containerd").exists() {
        return Ok(sbin);
    }
    for deb in fetch_debs(&apt, suite.name(), suite.packages())? {
        run(Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(apt.join("root")))?;
    }
    anyhow::ensure!(
        sbin.join("dockerd").exists(),
        "no dockerd in the unpacked docker.io under {}",
        apt.display()
    );
    Ok(sbin)
}

/// The PID in `pidfile` if that process is alive and its command line mentions `what`.
fn read_pid(pidfile: &Path, what: &str) -> Option<u32> {
    let pid: u32 = fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains(what)
        .then_some(pid)
}

/// SIGTERM, wait up to [`STOP_LIMIT`], then SIGKILL.
fn stop(pid: u32, what: &str) -> Result<()> {
    let alive = || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            // A zombie (state Z) has exited already.
            .is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
    };
    let _ = capture(
        Command::new("kill").args(["-TERM", &pid.to_string()]),
        Duration::from_secs(5),
    );
    let deadline = Instant::now() + STOP_LIMIT;
    while alive() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    if alive() {
        eprintln!(
            "xtask: {what} {pid} ignored SIGTERM for {} s, killing it",
            STOP_LIMIT.as_secs()
        );
        let _ = capture(
            Command::new("kill").args(["-KILL", &pid.to_string()]),
            Duration::from_secs(5),
        );
    }
    Ok(())
}
