//! The test daemons: `a` the machine's own; `b` and `c` Debian 13's dockerd
//! 26.x started beside it (classic store, containerd store); `d` and `e`
//! Debian sid's dockerd 28.5 (the same two stores); `p` Debian 12's Podman
//! 4.3 serving the Docker API (`podman system service`); `n` sid's dockerd
//! 28.5 (classic store, like `d`) in a network namespace of its own
//! ([`NETNS`]): its 127.0.0.1 is not ours, so a registry on our loopback is
//! out of its reach, as for Docker Desktop's VM, rootless Docker or
//! Docker-in-Docker. `n` listens on its unix socket (the file system is
//! shared) and on [`N_TCP_HOST`] through a veth pair.
//!
//! Every socket xtask makes is group-owned by `docker` (made if missing),
//! so that a non-root member of that group can use each daemon.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::{Daemon, Store};

use crate::root;
use crate::sh::{apt_install, capture, fetch_debs, run, tail_file};

/// Every daemon of the matrix, in order.
pub(crate) const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "p", "n", "r"];

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
        /// Run in the network namespace [`NETNS`], also listening on [`N_TCP_HOST`].
        own_netns: bool,
    },
    /// `podman system service`.
    Podman,
    /// `podman system service` run by the `docker` group member
    /// `dlgrab-member` itself: rootless Podman, in a user namespace of the
    /// member's subordinate IDs, its socket and store the member's own.
    RootlessPodman,
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
            own_netns: false,
        },
        "c" => Kind::Dockerd {
            suite: Suite::Trixie,
            containerd_store: true,
            own_netns: false,
        },
        "d" => Kind::Dockerd {
            suite: Suite::Sid,
            containerd_store: false,
            own_netns: false,
        },
        "e" => Kind::Dockerd {
            suite: Suite::Sid,
            containerd_store: true,
            own_netns: false,
        },
        "p" => Kind::Podman,
        "r" => Kind::RootlessPodman,
        "n" => Kind::Dockerd {
            suite: Suite::Sid,
            containerd_store: false,
            own_netns: true,
        },
        _ => unreachable!("daemon names come from NAMES"),
    }
}

/// The process a pidfile of daemon `name` names (checked against its command line).
fn process_name(name: &str) -> &'static str {
    match kind(name) {
        Kind::Podman | Kind::RootlessPodman => "podman",
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

/// The group whose members may use every test daemon's socket.
const SOCKET_GROUP: &str = "docker";

/// Daemon `n`'s network namespace (`ip netns`), with its own loopback.
pub(crate) const NETNS: &str = "dlgrab-n";
/// The veth pair between our namespace and [`NETNS`] (names ≤ 15 bytes).
const VETH_HOST: &str = "dlgrab-n-host";
const VETH_NETNS: &str = "dlgrab-n-ns";
/// Our end of the veth pair, and [`NETNS`]'s (a /30 of their own).
const VETH_HOST_ADDR: &str = "10.203.0.1/30";
const VETH_NETNS_ADDR: &str = "10.203.0.2/30";
/// Where daemon `n` also listens: plain TCP, no TLS, no authentication.
/// Acceptable for a test daemon because that address exists only on the
/// veth pair between this machine's namespace and [`NETNS`] (no route
/// leads there from elsewhere): only processes on this machine reach it,
/// and they could reach its unix socket too, were they root or `docker`.
pub(crate) const N_TCP_HOST: &str = "tcp://10.203.0.2:2375";

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
    let group = docker_group();
    names
        .iter()
        .map(|&name| {
            let daemon = match &group {
                Ok(gid) => up_one(name, *gid),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            };
            (name, daemon)
        })
        .collect()
}

/// Whether daemon `name` runs in a network namespace of its own (its
/// 127.0.0.1 is not ours).
pub(crate) fn own_netns(name: &str) -> bool {
    matches!(
        kind(name),
        Kind::Dockerd {
            own_netns: true,
            ..
        }
    )
}

/// Whether daemon `name` is rootless (run by the `docker` group member
/// itself, not by root).
pub(crate) fn rootless(name: &str) -> bool {
    kind(name) == Kind::RootlessPodman
}

/// The plain `tcp://` host daemon `name` also listens on, if any.
pub(crate) fn tcp_host(name: &str) -> Option<&'static str> {
    own_netns(name).then_some(N_TCP_HOST)
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
                match kind(name) {
                    Kind::Podman => unmount_storage(name),
                    // Rootless Podman keeps its user namespace open with a
                    // pause process, which outlives the service.
                    Kind::RootlessPodman => {
                        let pause = exec_root(name).join("libpod/tmp/pause.pid");
                        if let Some(pid) = read_pid(&pause, "") {
                            stop(pid, "podman pause")?;
                        }
                    }
                    _ => {}
                }
                println!("{name} stopped");
            }
            None if name == "a" => println!("a left alone (the machine's daemon)"),
            None => println!("{name} was not running"),
        }
        if own_netns(name) {
            remove_netns()?;
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
        Store::Classic if d.name == "r" => format!("rootless podman, {}", d.driver),
        Store::Classic => format!("classic {}", d.driver),
        Store::Containerd => format!("containerd store, {}", d.driver),
    };
    let netns = match tcp_host(&d.name) {
        Some(tcp) => format!(", network namespace {NETNS}, also {tcp}"),
        None => String::new(),
    };
    format!(
        "{} DOCKER_HOST={} ({}, {store}{netns})",
        d.name, d.host, d.version
    )
}

/// The `DOCKER_HOST` of a daemon.
pub(crate) fn host(name: &str) -> String {
    if name == "a" {
        MACHINE_HOST.to_owned()
    } else if kind(name) == Kind::RootlessPodman {
        // In the member's own runtime folder (mode 0700): only it may use it.
        format!("unix://{}/podman.sock", exec_root(name).display())
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

/// Daemon `name` up (started unless it answers already), its socket
/// usable by the group `gid` (`docker`), and `n`'s TCP host answering.
fn up_one(name: &str, gid: u32) -> Result<Daemon> {
    let daemon = start(name)?;
    if !matches!(kind(name), Kind::Machine | Kind::RootlessPodman) {
        share_socket(name, gid)?;
    }
    if let Some(tcp) = tcp_host(name) {
        Daemon::try_connect(name, tcp)
            .with_context(|| format!("daemon {name} answers on {}, not on {tcp}", host(name)))?;
    }
    Ok(daemon)
}

/// Starts daemon `name` unless it answers already, and waits until it does.
fn start(name: &str) -> Result<Daemon> {
    let host = host(name);
    if let Ok(daemon) = Daemon::try_connect(name, &host) {
        return Ok(daemon);
    }
    fs::create_dir_all(RUN_DIR)?;
    fs::create_dir_all(state_dir(name))?;
    let (suite, containerd_store, own_netns) = match kind(name) {
        Kind::Machine => return up_machine(),
        Kind::Podman => return up_podman(name),
        Kind::RootlessPodman => return up_rootless_podman(name),
        Kind::Dockerd {
            suite,
            containerd_store,
            own_netns,
        } => (suite, containerd_store, own_netns),
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
    let dockerd = sbin.join("dockerd");
    let mut cmd = if own_netns {
        make_netns()?;
        // nsenter enters the network namespace only and execs dockerd (the
        // child's PID is dockerd's). Not `ip netns exec`: it also enters a
        // mount namespace of its own with a fresh /sys, which hides the
        // cgroup mounts (dockerd: `Devices cgroup isn't mounted`).
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{NETNS}"))
            .arg("--")
            .arg(&dockerd);
        // Plain TCP needs `--tls=false` said outright (dockerd 27+); see N_TCP_HOST.
        cmd.arg(format!("--host={N_TCP_HOST}")).arg("--tls=false");
        cmd
    } else {
        Command::new(&dockerd)
    };
    let child = cmd
        .arg("--config-file")
        .arg(&config)
        .arg(format!("--host={host}"))
        .arg(format!("--group={SOCKET_GROUP}"))
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
        .with_context(|| format!("cannot start {}", dockerd.display()))?;
    wait_for(name, Some(child))
}

/// The `docker` group's ID, the group made (`groupadd --system`) if missing.
fn docker_group() -> Result<u32> {
    let gid = || -> Option<u32> {
        let (ok, out, _) = capture(
            Command::new("getent").args(["group", SOCKET_GROUP]),
            Duration::from_secs(10),
        )
        .ok()?;
        // `docker:x:105:member,…`
        ok.then(|| out.split(':').nth(2)?.trim().parse().ok())
            .flatten()
    };
    if let Some(gid) = gid() {
        return Ok(gid);
    }
    println!("xtask: making the group {SOCKET_GROUP}");
    let (ok, _, err) = capture(
        Command::new("groupadd").args(["--system", SOCKET_GROUP]),
        Duration::from_secs(10),
    )?;
    // Made meanwhile by someone else is as good.
    gid().with_context(|| {
        format!(
            "no group {SOCKET_GROUP} (groupadd {}: {})",
            if ok { "succeeded" } else { "failed" },
            err.trim()
        )
    })
}

/// Daemon `name`'s socket group-owned by `gid` and read-write for it
/// (dockerd does so itself with `--group`; Podman's service does not).
fn share_socket(name: &str, gid: u32) -> Result<()> {
    let socket = PathBuf::from(format!("{RUN_DIR}/{name}.sock"));
    let meta = fs::metadata(&socket).with_context(|| format!("{}", socket.display()))?;
    if meta.gid() != gid {
        std::os::unix::fs::chown(&socket, None, Some(gid))
            .with_context(|| format!("chgrp {SOCKET_GROUP} {}", socket.display()))?;
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o060 != 0o060 {
        fs::set_permissions(&socket, fs::Permissions::from_mode(mode | 0o660))
            .with_context(|| format!("chmod g+rw {}", socket.display()))?;
    }
    Ok(())
}

/// The network namespace [`NETNS`] with its loopback up, and the veth pair
/// to it, addressed and up; what is there already is kept.
fn make_netns() -> Result<()> {
    apt_install(&["iproute2"])?;
    if !Path::new("/run/netns").join(NETNS).exists() {
        ip(&["netns", "add", NETNS])?;
    }
    ip(&["-n", NETNS, "link", "set", "lo", "up"])?;
    let whole = ip(&["link", "show", VETH_HOST]).is_ok()
        && ip(&["-n", NETNS, "link", "show", VETH_NETNS]).is_ok();
    if !whole {
        // Our end left alone (its peer went with an earlier namespace).
        let _ = ip(&["link", "del", VETH_HOST]);
        ip(&[
            "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NETNS, "netns", NETNS,
        ])?;
    }
    ip(&["addr", "replace", VETH_HOST_ADDR, "dev", VETH_HOST])?;
    ip(&["link", "set", VETH_HOST, "up"])?;
    ip(&[
        "-n",
        NETNS,
        "addr",
        "replace",
        VETH_NETNS_ADDR,
        "dev",
        VETH_NETNS,
    ])?;
    ip(&["-n", NETNS, "link", "set", VETH_NETNS, "up"])?;
    Ok(())
}

/// Deletes [`NETNS`] and the veth pair (once its daemon has stopped).
fn remove_netns() -> Result<()> {
    let mut removed = false;
    if Path::new("/run/netns").join(NETNS).exists() {
        ip(&["netns", "del", NETNS])?;
        removed = true;
    }
    // Deleting the namespace deletes its end, hence the pair; unless a
    // process still holds the namespace.
    if ip(&["link", "show", VETH_HOST]).is_ok() {
        ip(&["link", "del", VETH_HOST])?;
        removed = true;
    }
    if removed {
        println!("network namespace {NETNS} and veth {VETH_HOST} removed");
    }
    Ok(())
}

/// `ip ARGS`, its stderr in the error.
fn ip(args: &[&str]) -> Result<()> {
    let (ok, _, err) = capture(Command::new("ip").args(args), Duration::from_secs(10))?;
    anyhow::ensure!(ok, "ip {} failed: {}", args.join(" "), err.trim());
    Ok(())
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
    apt_install(&["podman"])?;
    if let Some(pid) = read_pid(&pidfile(name), "podman") {
        println!("xtask: {name}: podman {pid} is running, waiting for it");
        return wait_for(name, None);
    }
    let socket = PathBuf::from(format!("{RUN_DIR}/{name}.sock"));
    podman_service(name, Command::new("podman"), &exec_root(name), &socket)
}

/// Daemon `r`: Debian 12's Podman run by the `docker` group member
/// `dlgrab-member` (testkit makes the user): rootless, in a user namespace
/// of the member's subordinate IDs (`/etc/subuid`, `/etc/subgid`, added
/// when missing; `newuidmap` from Debian's `uidmap`), its store under
/// `target/xtask/daemons/r/storage` and its runtime folder, socket
/// included, in `/run/dlgrab-xtask/r` (`XDG_RUNTIME_DIR`, mode 0700): the
/// socket only the member may use, as a rootless user's own. It picks its
/// storage driver itself (vfs here).
fn up_rootless_podman(name: &str) -> Result<Daemon> {
    // `newuidmap` and user-mode networking, which Podman only recommends.
    apt_install(&["podman", "uidmap", "slirp4netns"])?;
    if let Some(pid) = read_pid(&pidfile(name), "podman") {
        println!("xtask: {name}: podman {pid} is running, waiting for it");
        return wait_for(name, None);
    }
    let member = testkit::DockerMember::try_get()
        .map_err(|e| anyhow::anyhow!("no docker group member to run rootless Podman: {e}"))?;
    let (uid, gid) = member.ids();
    for file in ["/etc/subuid", "/etc/subgid"] {
        subordinate_ids(Path::new(file), &member.name)?;
    }
    let own = |path: &Path, mode: u32| -> Result<()> {
        fs::create_dir_all(path)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let state = state_dir(name);
    let home = root().join("target/xtask/member-home");
    own(&state, 0o755)?;
    own(&state.join("storage"), 0o700)?;
    own(&home, 0o700)?;
    let runtime = exec_root(name);
    own(&runtime, 0o700)?;
    let mut podman = Command::new("setpriv");
    podman
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--init-groups", "--", "podman"])
        .current_dir("/")
        .env("HOME", &home)
        .env("USER", &member.name)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME");
    podman_service(
        name,
        podman,
        &runtime.join("runroot"),
        &runtime.join("podman.sock"),
    )
}

/// Starts `podman` (the command given, to which the arguments are added)
/// as `system service` for daemon `name` on `socket`, its store in the
/// daemon's state folder with [`PODMAN_CONF`] and [`PODMAN_REGISTRIES`],
/// and waits until it answers.
fn podman_service(
    name: &str,
    mut podman: Command,
    runroot: &Path,
    socket: &Path,
) -> Result<Daemon> {
    let state = state_dir(name);
    let conf = state.join("containers.conf");
    fs::write(&conf, PODMAN_CONF)?;
    let registries = state.join("registries.conf");
    fs::write(&registries, PODMAN_REGISTRIES)?;
    // A socket left by a service that is gone would make the new one fail to bind.
    let _ = fs::remove_file(socket);
    let log = fs::File::create(log_path(name))?;
    println!(
        "xtask: starting daemon {name} (podman; log: {})",
        log_path(name).display()
    );
    let child = podman
        .arg("--root")
        .arg(state.join("storage"))
        .arg("--runroot")
        .arg(runroot)
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", socket.display()))
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

/// `user`'s line in `file` (`/etc/subuid` or `/etc/subgid`), added when
/// missing: 65536 IDs above every range there.
fn subordinate_ids(file: &Path, user: &str) -> Result<()> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let mut end = 165_536_u64;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&user) {
            return Ok(());
        }
        if let [_, start, count] = fields[..]
            && let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.parse::<u64>())
        {
            end = end.max(start + count);
        }
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{user}:{end}:65536\n"));
    fs::write(file, text).with_context(|| format!("cannot add {user} to {}", file.display()))
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
