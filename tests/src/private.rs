//! Throwaway daemons and file systems for fault tests: a size-limited or
//! read-only tmpfs ([`Tmpfs`]) and a private dockerd ([`PrivateDaemon`])
//! that a test may stop, kill and restart without touching the shared
//! daemons of the matrix. Both undo themselves on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::Daemon;

/// A tmpfs mounted on a fresh folder, unmounted and removed on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes (read-only when `read_only`) on a new
    /// folder under the system's temporary folder. Needs root (or
    /// CAP_SYS_ADMIN); the error says why it could not.
    pub fn mount(size: u64, read_only: bool) -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(crate::unique_name("dlgrab-tmpfs"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mut options = format!("size={size}");
        if read_only {
            options.push_str(",ro");
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount -t tmpfs failed (not root?): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// How long a private dockerd may take to answer after starting.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A dockerd of its own (Docker 28.5 with the classic store, from the
/// binaries `cargo xtask daemons up` fetched for daemon `d`): own socket,
/// data root and exec root. Stopped and its folders removed on drop.
#[derive(Debug)]
pub struct PrivateDaemon {
    /// The daemon as the test kit knows it (its `host` is the private socket).
    pub daemon: Daemon,
    dockerd: PathBuf,
    run_dir: PathBuf,
    data_root: PathBuf,
    /// Flags beyond the defaults ([`Self::start_with`]).
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateDaemon {
    /// The dockerd binary: `DLGRAB_PRIVATE_DOCKERD`, else the one xtask
    /// unpacked for daemon `d`.
    fn binary() -> PathBuf {
        std::env::var_os("DLGRAB_PRIVATE_DOCKERD").map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/xtask/apt-sid/root/usr/sbin/dockerd")
            },
            PathBuf::from,
        )
    }

    /// Starts one; the error says why it could not (no binary, not root,
    /// no answer within a minute).
    pub fn start() -> Result<PrivateDaemon, String> {
        Self::start_with(&[])
    }

    /// Starts one with `extra` flags too (`--authorization-plugin=NAME`,
    /// `--userns-remap=default`, …).
    pub fn start_with(extra: &[&str]) -> Result<PrivateDaemon, String> {
        let dockerd = Self::binary();
        if !dockerd.is_file() {
            return Err(format!(
                "no dockerd at {} (run `cargo xtask daemons up`)",
                dockerd.display()
            ));
        }
        let name = crate::unique_name("p");
        // Unix socket paths are short: keep the run folder's name small.
        let run_dir = PathBuf::from(format!("/run/dlgrab-private-{}", std::process::id()));
        let data_root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/xtask/daemons")
            .join(format!("private-{name}"));
        for dir in [&run_dir, &data_root] {
            std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        }
        let data_root = data_root.canonicalize().unwrap_or(data_root);
        let host = format!("unix://{}/docker.sock", run_dir.display());
        let mut daemon = PrivateDaemon {
            daemon: Daemon {
                name: "private".to_owned(),
                host,
                store: crate::Store::Classic,
                version: String::new(),
                driver: String::new(),
                engine: crate::Engine::Docker,
                tcp_host: None,
                own_netns: false,
                rootless: false,
            },
            dockerd,
            run_dir,
            data_root,
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
            child: None,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let apt_root = self
            .dockerd
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = format!(
            "{0}/usr/bin:{0}/usr/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            apt_root.display()
        );
        let log = std::fs::File::create(self.data_root.join("dockerd.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        // Not the machine's /etc/docker/daemon.json.
        let config = self.data_root.join("daemon.json");
        std::fs::write(&config, "{}").map_err(|e| format!("daemon.json: {e}"))?;
        let child = Command::new(&self.dockerd)
            .arg("--config-file")
            .arg(&config)
            .arg(format!("--host={}", self.daemon.host))
            .arg("--data-root")
            .arg(self.data_root.join("data"))
            .arg("--exec-root")
            .arg(self.run_dir.join("x"))
            .arg("--pidfile")
            .arg(self.run_dir.join("dockerd.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(&self.extra)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.dockerd.display()))?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(d) = Daemon::try_connect("private", &self.daemon.host) {
                self.daemon = d;
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "the private dockerd exited ({status}); log: {}",
                    self.data_root.join("dockerd.log").display()
                ));
            }
            if start.elapsed() > START_LIMIT {
                return Err("the private dockerd did not answer within a minute".to_owned());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The dockerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, …) to the dockerd.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
        }
    }

    /// Kills the dockerd hard (SIGKILL, as a crash or the OOM killer would)
    /// and its containerd, and waits for both to be gone.
    pub fn kill(&mut self) {
        self.signal("KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.kill_containerd();
    }

    fn kill_containerd(&self) {
        let pidfile = self.run_dir.join("x/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid = pid.trim().to_owned();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            let start = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists()
                && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_file(pidfile);
        }
    }

    /// Starts the dockerd again on the same data root (after [`Self::kill`]).
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            self.kill();
        }
        let _ = std::fs::remove_file(self.run_dir.join("dockerd.pid"));
        self.spawn()
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        self.signal("CONT");
        self.signal("TERM");
        if let Some(mut child) = self.child.take() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_containerd();
        // Whatever a hard kill left mounted under the data root.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.data_root.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.data_root);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
