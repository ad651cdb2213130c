//! A throw-away OpenSSH server on 127.0.0.1 whose sessions reach a chosen
//! Docker daemon, for testing `ssh://` daemon hosts as the Docker CLI uses
//! them (`ssh … -- host docker system dial-stdio`).
//!
//! [`Sshd::start`] makes a temporary folder with a host key, a client key,
//! `authorized_keys`, an `sshd_config` (`StrictModes no`, since the files
//! sit under a temporary folder; `SetEnv DOCKER_HOST=…`, OpenSSH ≥ 7.8, so
//! the remote `docker` talks to the chosen daemon), a client `ssh_config`
//! with its own `known_hosts`, and a `bin/ssh` wrapper that runs the real
//! `ssh -F <that config>`: put [`Sshd::path_env`] first in a client's
//! `PATH` and `ssh://dlgrab-test` reaches the server ([`Sshd::dials`]
//! counts the wrapper's runs). The server runs in
//! the foreground (`sshd -D`) on a free port and is killed, and its folder
//! removed, when the value is dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The host name the client config gives the server.
pub const SSH_HOST: &str = "dlgrab-test";

/// Where Debian's `openssh-server` puts the server.
const SSHD: &str = "/usr/sbin/sshd";

/// A running test sshd; killed on drop.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Sshd {
    /// Starts a server whose sessions have `DOCKER_HOST=docker_host`.
    /// `Err` says why it cannot (no sshd installed, no ssh-keygen, …), for
    /// the caller to skip or fail with.
    pub fn start(docker_host: &str) -> Result<Sshd, String> {
        if !Path::new(SSHD).is_file() {
            return Err(format!(
                "no {SSHD}: install openssh-server (apt-get install -y openssh-server)"
            ));
        }
        // Run by root, sshd refuses to start without its privilege
        // separation folder; run by anyone else (a `docker` group member),
        // it needs none and could not make it.
        if let Err(e) = std::fs::create_dir_all("/run/sshd")
            && crate::is_root()
        {
            return Err(format!("cannot create /run/sshd: {e}"));
        }
        let dir = std::env::temp_dir().join(format!(
            "dlgrab-sshd-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(dir.join("bin")).map_err(|e| e.to_string())?;
        let guard = DirGuard(dir.clone());
        for key in ["host_key", "id"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .output()
                .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
        };
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("authorized_keys", &read("id.pub")?)?;
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".to_owned());
        let d = dir.display();
        // A few tries: the free port found may be taken before sshd binds it.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            write(
                "sshd_config",
                &format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                     AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     UsePAM no\nPermitRootLogin prohibit-password\nPidFile {d}/sshd.pid\n\
                     SetEnv DOCKER_HOST={docker_host}\n"
                ),
            )?;
            write(
                "known_hosts",
                &format!("[127.0.0.1]:{port} {}", read("host_key.pub")?),
            )?;
            write(
                "ssh_config",
                &format!(
                    "Host {SSH_HOST}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
                     IdentityFile {d}/id\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  \
                     StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n"
                ),
            )?;
            let wrapper = dir.join("bin").join("ssh");
            // Each run appends a line to `dials.log`: see [`Sshd::dials`].
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\necho \"$*\" >> {d}/dials.log\nexec /usr/bin/ssh -F {d}/ssh_config \"$@\"\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            set_executable(&wrapper)?;
            let log = std::fs::File::create(dir.join("sshd.log")).map_err(|e| e.to_string())?;
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {SSHD}: {e}"))?;
            let mut sshd = Sshd {
                child,
                dir: dir.clone(),
                port,
            };
            match sshd.wait_ready(Duration::from_secs(10)) {
                Ok(()) => {
                    std::mem::forget(guard);
                    return Ok(sshd);
                }
                Err(e) => {
                    last = e;
                    // Dropping it kills it; the folder stays for the next try.
                    let _ = sshd.child.kill();
                    let _ = sshd.child.wait();
                    sshd.dir = PathBuf::new();
                }
            }
        }
        Err(last)
    }

    /// Waits until the server greets with `SSH-`.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("sshd exited ({status}): {}", self.log()));
            }
            if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut greeting = [0u8; 4];
                if stream.read_exact(&mut greeting).is_ok() && &greeting == b"SSH-" {
                    let _ = stream.write_all(b"x\r\n");
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("sshd not ready within {limit:?}: {}", self.log()))
    }

    /// What sshd wrote on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// How many times the `ssh` wrapper has run so far: the connections
    /// clients opened (`docker system dial-stdio` included).
    pub fn dials(&self) -> usize {
        std::fs::read_to_string(self.dir.join("dials.log")).map_or(0, |log| log.lines().count())
    }

    /// `PATH` with the `ssh` wrapper first.
    pub fn path_env(&self) -> String {
        let bin = self.dir.join("bin");
        match std::env::var("PATH") {
            Ok(path) if !path.is_empty() => format!("{}:{path}", bin.display()),
            _ => format!("{}:/usr/bin:/bin", bin.display()),
        }
    }

    /// The Docker host URL of the server: `ssh://dlgrab-test`.
    pub fn url(&self) -> String {
        format!("ssh://{SSH_HOST}")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes a folder on drop unless forgotten.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn set_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())
}
