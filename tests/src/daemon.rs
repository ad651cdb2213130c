//! The daemon under test: finding it, its store, and running the docker CLI against it.

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::process::{output_within, tail};
use crate::{ENV_DAEMON_NAME, ENV_NETNS, ENV_REQUIRE_DAEMON, ENV_TCP_HOST, Error};

/// How long `docker info` may take before a daemon counts as not answering.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// Which image store a daemon keeps its images in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Store {
    /// The classic graph-driver store (`overlay2`, `fuse-overlayfs`, ...).
    Classic,
    /// The containerd image store (`driver-type io.containerd.snapshotter.v1`).
    Containerd,
}

/// Which engine serves the Docker API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// Docker's own dockerd.
    Docker,
    /// Podman's Docker-compatible API (`podman system service`).
    Podman,
}

/// What Podman's builder (buildah) leaves in every `RUN` layer beside what
/// the command made: the mount points of the build container.
const PODMAN_RUN_MOUNTS: [&str; 7] = [
    "dev",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "proc",
    "run",
    "sys",
];

/// A Docker daemon that answered `docker info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Its name in the test matrix (`a`, `b`, `c`; `default` outside `cargo xtask test`).
    pub name: String,
    /// Its `DOCKER_HOST`, e.g. `unix:///var/run/docker.sock`.
    pub host: String,
    /// Its image store.
    pub store: Store,
    /// Its server version, e.g. `26.1.5+dfsg1`.
    pub version: String,
    /// Its storage driver as `docker info` names it (`overlay2`, `overlayfs`, ...).
    pub driver: String,
    /// The engine behind the API.
    pub engine: Engine,
    /// A plain `tcp://` host it also listens on (no TLS), for tests of a
    /// daemon reached over TCP: from `DLGRAB_TEST_TCP_HOST` for the daemon
    /// under test ([`daemon_or_skip`]); `None` from [`Daemon::try_connect`].
    pub tcp_host: Option<String>,
    /// It runs in a network namespace of its own: its 127.0.0.1 is not
    /// ours, so it cannot reach a registry on our loopback (a push there
    /// fails with `connection refused`), as for Docker Desktop's VM,
    /// rootless Docker or Docker-in-Docker; its unix socket is ours. From
    /// `DLGRAB_TEST_NETNS=1` for the daemon under test ([`daemon_or_skip`]);
    /// `false` from [`Daemon::try_connect`].
    pub own_netns: bool,
    /// It is rootless: run by a non-root user (rootless Podman or Docker),
    /// its unix socket owned by that user, its store that user's own (so
    /// readable by them: the store route is theirs). `false` for a daemon
    /// not on a unix socket.
    pub rootless: bool,
}

/// The user owning the unix socket of `host` (`unix:///…`), if it is one.
fn socket_owner(host: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = host.strip_prefix("unix://")?;
    std::fs::metadata(path).ok().map(|m| m.uid())
}

/// `DOCKER_HOST` if set, else the default socket `unix:///var/run/docker.sock`.
pub fn default_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

/// The daemon under test, probed once per process: at [`default_host`], named
/// by `DLGRAB_TEST_DAEMON` (default `default`); its [`Daemon::tcp_host`]
/// from `DLGRAB_TEST_TCP_HOST` and [`Daemon::own_netns`] from
/// `DLGRAB_TEST_NETNS=1`, as `cargo xtask test` sets them for daemon `n`.
///
/// Without a reachable daemon it prints `SKIP <test_name>: <reason>` to
/// stderr and returns `None`; with `DLGRAB_REQUIRE_DAEMON=1` it panics instead.
/// The tests of one process that call it run one at a time, and what each
/// made is removed when it ends (see the `cleanup` module).
#[track_caller]
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
pub fn daemon_or_skip(test_name: &str) -> Option<Daemon> {
    static PROBED: OnceLock<Result<Daemon, String>> = OnceLock::new();
    let probed = PROBED.get_or_init(|| {
        let name = std::env::var(ENV_DAEMON_NAME)
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let mut daemon = Daemon::try_connect(&name, &default_host()).map_err(|e| e.to_string())?;
        daemon.tcp_host = std::env::var(ENV_TCP_HOST).ok().filter(|h| !h.is_empty());
        daemon.own_netns = std::env::var(ENV_NETNS).as_deref() == Ok("1");
        Ok(daemon)
    });
    match probed {
        Ok(daemon) => {
            // Serialises the tests of one process on the daemon (images one
            // test builds or removes would race another's build cache and its
            // "the image list is unchanged" checks) and removes what the test
            // made when it ends, even by a panic.
            crate::cleanup::enter(daemon);
            Some(daemon.clone())
        }
        Err(reason) if std::env::var(ENV_REQUIRE_DAEMON).as_deref() == Ok("1") => {
            panic!("{test_name}: no daemon ({ENV_REQUIRE_DAEMON}=1): {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP {test_name}: {reason}");
            None
        }
    }
}

impl Daemon {
    /// Probes the daemon at `host` with `docker info` and names it `name`.
    pub fn try_connect(name: &str, host: &str) -> Result<Daemon, Error> {
        let args = ["info", "--format", "{{json .}}"];
        let out = output_within(
            Command::new("docker").args(args).env("DOCKER_HOST", host),
            PROBE_LIMIT,
            "info",
        )?;
        let bad = |detail: String| Error::BadOutput {
            args: "info".to_owned(),
            detail,
        };
        if !out.status.success() {
            return Err(Error::DockerFailed {
                args: format!("info (DOCKER_HOST={host})"),
                status: out.status.to_string(),
                output: tail(&out, 600),
            });
        }
        let info: Value = serde_json::from_slice(&out.stdout).map_err(|e| bad(e.to_string()))?;
        let version = info["ServerVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if version.is_empty() {
            return Err(Error::DockerFailed {
                args: format!("info (DOCKER_HOST={host})"),
                status: out.status.to_string(),
                output: tail(&out, 600),
            });
        }
        let containerd = info["DriverStatus"].as_array().is_some_and(|rows| {
            rows.iter().any(|row| {
                row[0].as_str() == Some("driver-type")
                    && row[1].as_str() == Some("io.containerd.snapshotter.v1")
            })
        });
        // Podman names itself in its version's components only.
        let components = output_within(
            Command::new("docker")
                .args(["version", "--format", "{{json .Server.Components}}"])
                .env("DOCKER_HOST", host),
            PROBE_LIMIT,
            "version",
        )?;
        let engine = if String::from_utf8_lossy(&components.stdout).contains("\"Podman Engine\"") {
            Engine::Podman
        } else {
            Engine::Docker
        };
        Ok(Daemon {
            name: name.to_owned(),
            host: host.to_owned(),
            engine,
            store: if containerd {
                Store::Containerd
            } else {
                Store::Classic
            },
            version,
            driver: info["Driver"].as_str().unwrap_or_default().to_owned(),
            tcp_host: None,
            own_netns: false,
            rootless: socket_owner(host).is_some_and(|uid| uid != 0),
        })
    }

    /// This daemon reached over its plain [`Daemon::tcp_host`] instead
    /// (`host` replaced: [`Daemon::dlgrab`] and [`Daemon::docker`] go over
    /// TCP), or `None` when it has none.
    pub fn over_tcp(&self) -> Option<Daemon> {
        let tcp = self.tcp_host.clone()?;
        Some(Daemon {
            host: tcp,
            ..self.clone()
        })
    }

    /// Whether the daemon can reach a registry a test serves on our
    /// 127.0.0.1 (a `docker push`/`pull` to `127.0.0.1:PORT`): not when it
    /// runs in a network namespace of its own ([`Daemon::own_netns`]).
    pub fn reaches_our_loopback(&self) -> bool {
        !self.own_netns
    }

    /// `paths` of a layer made by a `RUN` step, less what the engine's
    /// builder adds to every such layer (Podman: the build container's
    /// mount points, and `etc` when nothing else under it is left).
    pub fn without_run_mounts(&self, paths: Vec<String>) -> Vec<String> {
        if self.engine != Engine::Podman {
            return paths;
        }
        let kept: Vec<String> = paths
            .into_iter()
            .filter(|p| !PODMAN_RUN_MOUNTS.contains(&p.as_str()))
            .collect();
        let etc_used = kept.iter().any(|p| p.starts_with("etc/"));
        kept.into_iter()
            .filter(|p| etc_used || p != "etc")
            .collect()
    }

    /// A `docker` command aimed at this daemon (`DOCKER_HOST` set), to add
    /// arguments and pipes to.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", &self.host);
        cmd
    }

    /// Runs `docker <args>` against this daemon and returns what it did;
    /// panics only when the CLI cannot be started.
    pub fn docker<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command()
            .args(args)
            .output()
            .expect("cannot run the docker CLI")
    }

    /// Runs `docker <args>` and returns its stdout; an error says what failed.
    pub fn try_docker_stdout<I, S>(&self, args: I) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.command().args(&args).output().map_err(Error::Spawn)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::DockerFailed {
                args: args
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                status: out.status.to_string(),
                output: tail(&out, 2000),
            })
        }
    }

    /// Runs `docker <args>` and returns its stdout; panics if it fails.
    #[track_caller]
    pub fn docker_stdout<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.try_docker_stdout(args)
            .unwrap_or_else(|e| panic!("daemon {}: {e}", self.name))
    }

    /// IDs of all images (`docker image ls -a -q --no-trunc`), sorted and
    /// deduplicated, for "the image list is unchanged" checks.
    #[track_caller]
    pub fn image_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .docker_stdout(["image", "ls", "-a", "-q", "--no-trunc"])
            .lines()
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Every image row as `<repository>:<tag> <id>`, sorted.
    #[track_caller]
    pub fn image_refs(&self) -> Vec<String> {
        let mut refs: Vec<String> = self
            .docker_stdout([
                "image",
                "ls",
                "-a",
                "--no-trunc",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.ID}}",
            ])
            .lines()
            .map(str::to_owned)
            .collect();
        refs.sort();
        refs
    }

    /// `docker image inspect <reference>` (the first object of its array).
    pub fn try_inspect(&self, reference: &str) -> Result<Value, Error> {
        let text = self.try_docker_stdout(["image", "inspect", reference])?;
        let mut all: Value = serde_json::from_str(&text).map_err(|e| Error::BadOutput {
            args: format!("image inspect {reference}"),
            detail: e.to_string(),
        })?;
        Ok(all[0].take())
    }

    /// `docker image inspect <reference>`; panics if it fails.
    #[track_caller]
    pub fn inspect(&self, reference: &str) -> Value {
        self.try_inspect(reference)
            .unwrap_or_else(|e| panic!("daemon {}: {e}", self.name))
    }

    /// Runs `command` in a throw-away container of `image` (no network, no
    /// pull) and returns what it did, the container removed after.
    ///
    /// Not `docker run --rm`: through Podman 4.3's compat API the CLI then
    /// exits 0 whatever the command's status.
    pub fn run(&self, image: &str, command: &[&str]) -> Output {
        let name = crate::unique_name("dlgrab-run");
        let mut args = vec![
            "run",
            "--name",
            &name,
            "--pull",
            "never",
            "--network",
            "none",
            image,
        ];
        args.extend_from_slice(command);
        let out = self.docker(args);
        let _ = self.docker(["rm", "-f", name.as_str()]);
        out
    }

    /// Runs busybox `cat PATH` in a throw-away container of `image`
    /// (no network) and returns what it did.
    pub fn run_cat(&self, image: &str, path: &str) -> Output {
        self.run(image, &["/bin/busybox", "cat", path])
    }

    /// The contents of `path` in `image`, read by [`Daemon::run_cat`];
    /// panics with the CLI's stderr if it fails.
    #[track_caller]
    pub fn cat(&self, image: &str, path: &str) -> Vec<u8> {
        let mut out = self.run_cat(image, path);
        if out.status.success() && out.stdout.is_empty() {
            // `docker run` of a container that exits at once now and then
            // ends with status 0 and none of its output (seen once on
            // 26.1, its attach losing the race): asked once more.
            out = self.run_cat(image, path);
        }
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The diff IDs (`RootFS.Layers`, base first) of an image.
    #[track_caller]
    pub fn diff_ids(&self, reference: &str) -> Vec<String> {
        strings(&self.inspect(reference)["RootFS"]["Layers"])
    }

    /// Removes an image by tag or ID, best effort (for clean-up; errors are ignored).
    pub fn remove_image(&self, reference: &str) {
        let _ = self.docker(["image", "rm", reference]);
    }
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
