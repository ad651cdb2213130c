//! A member of the `docker` group who is not root: what most users of a
//! daemon are. Tests run dlgrab as that user through `runuser`
//! ([`DockerMember::dlgrab_command`]), writing into a folder the member
//! owns ([`DockerMember::scratch_dir`]). `cargo xtask daemons up` makes
//! every test daemon's socket group-owned by `docker`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Daemon, dlgrab_bin};

/// The user name tests create (when run as root) and run dlgrab as.
pub const MEMBER: &str = "dlgrab-member";

/// A non-root member of the `docker` group.
#[derive(Debug, Clone)]
pub struct DockerMember {
    /// The user's name.
    pub name: String,
    uid: u32,
    gid: u32,
    /// Whether this process already runs as the member (the member pass of
    /// `cargo xtask test`): programs then run directly, not through `runuser`.
    is_us: bool,
}

/// A folder owned by a [`DockerMember`] (mode 0700), removed with what is
/// in it when dropped.
#[derive(Debug)]
pub struct MemberDir {
    path: PathBuf,
}

impl MemberDir {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for MemberDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Whether this process runs as root (what starting a daemon, mounting
/// or switching users needs; a member pass runs as a `docker` group member).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // `/proc/self` belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl DockerMember {
    /// The member, made (`useradd --system -G docker`) if missing; only
    /// root can make one and switch to it, so elsewhere this says why not.
    /// A process that already runs as a non-root member of the `docker`
    /// group is that member itself.
    pub fn try_get() -> Result<Self, String> {
        if let Some(us) = Self::us()? {
            return Ok(us);
        }
        let known = Command::new("id")
            .arg(MEMBER)
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if !known.status.success() {
            let made = Command::new("useradd")
                .args(["--system", "--no-create-home", "-G", "docker", MEMBER])
                .output()
                .map_err(|e| format!("cannot run useradd: {e}"))?;
            // Another test may have made it meanwhile.
            let again = Command::new("id").arg(MEMBER).output();
            if !again.is_ok_and(|o| o.status.success()) {
                return Err(format!(
                    "useradd {MEMBER} failed: {}",
                    String::from_utf8_lossy(&made.stderr)
                ));
            }
        }
        let groups = Command::new("id")
            .args(["-nG", MEMBER])
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if !String::from_utf8_lossy(&groups.stdout)
            .split_whitespace()
            .any(|g| g == "docker")
        {
            return Err(format!("{MEMBER} is not in the docker group"));
        }
        let id = |flag: &str| -> Result<u32, String> {
            let out = Command::new("id")
                .args([flag, MEMBER])
                .output()
                .map_err(|e| format!("cannot run id: {e}"))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|e| format!("id {flag} {MEMBER}: {e}"))
        };
        Ok(Self {
            name: MEMBER.to_owned(),
            uid: id("-u")?,
            gid: id("-g")?,
            is_us: false,
        })
    }

    /// This process's user when it is not root and belongs to the `docker`
    /// group; `Err` when it is neither root nor such a member.
    fn us() -> Result<Option<Self>, String> {
        let id = |flag: &str| -> Result<String, String> {
            let out = Command::new("id")
                .arg(flag)
                .output()
                .map_err(|e| format!("cannot run id: {e}"))?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let uid = id("-u")?;
        if uid == "0" {
            return Ok(None);
        }
        if !id("-nG")?.split_whitespace().any(|g| g == "docker") {
            return Err(
                "switching to a docker group member needs root, and this user is not one".into(),
            );
        }
        let number = |s: String| s.parse().map_err(|e| format!("id: {s:?}: {e}"));
        Ok(Some(Self {
            name: id("-un")?,
            uid: number(uid)?,
            gid: number(id("-g")?)?,
            is_us: true,
        }))
    }

    /// Whether this process runs as the member itself (not root switching
    /// to it).
    pub fn is_us(&self) -> bool {
        self.is_us
    }

    /// The member's user and group IDs.
    pub fn ids(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// A new empty folder under the temporary folder, owned by the member
    /// (mode 0700), for dlgrab's output when run as the member; removed on
    /// drop. Panics if it cannot be made.
    #[track_caller]
    pub fn scratch_dir(&self) -> MemberDir {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(crate::unique_scratch_name("dlgrab-member"));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let dir = MemberDir { path };
        std::os::unix::fs::chown(&dir.path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("cannot chown {}: {e}", dir.path.display()));
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.path.display()));
        dir
    }

    /// Whether the member can run `program` (every folder above it
    /// searchable, the file executable by it).
    pub fn can_run(&self, program: &Path) -> bool {
        if self.is_us {
            return Command::new("test")
                .arg("-x")
                .arg(program)
                .status()
                .is_ok_and(|s| s.success());
        }
        Command::new("runuser")
            .args(["-u", &self.name, "--", "test", "-x"])
            .arg(program)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `program` run as the member (`runuser -u NAME --`), from `/` with
    /// the environment the returned command is given.
    pub fn command(&self, program: &Path) -> Command {
        if self.is_us {
            let mut cmd = Command::new(program);
            cmd.current_dir("/");
            return cmd;
        }
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.name, "--"])
            .arg(program)
            .current_dir("/");
        cmd
    }

    /// `dlgrab ARGS` run as the member against `daemon` (its `host` as
    /// `DOCKER_HOST`, no `RUST_LOG`, no standard input), from `/`, as
    /// [`Daemon::dlgrab_command`] does for root. Its output must go where
    /// the member can write: a [`DockerMember::scratch_dir`]. Panics if the
    /// member cannot run the binary ([`dlgrab_bin`] under a folder only
    /// root can search, e.g. a target folder under `/root`).
    #[track_caller]
    pub fn dlgrab_command(&self, daemon: &Daemon, args: &[&str]) -> Command {
        let bin = dlgrab_bin();
        assert!(
            self.can_run(&bin),
            "{} cannot run {}: build into a target folder others can read",
            self.name,
            bin.display()
        );
        let mut cmd = self.command(&bin);
        cmd.args(args)
            .env("DOCKER_HOST", &daemon.host)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::DockerMember;

    /// The member owns its scratch folder and can write there; it is gone
    /// once dropped. Needs root (to make the member and switch to it).
    #[test]
    #[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
    fn a_scratch_dir_is_the_members() {
        let member = match DockerMember::try_get() {
            Ok(member) => member,
            Err(why) => {
                eprintln!("SKIP a_scratch_dir_is_the_members: {why}");
                return;
            }
        };
        let dir = member.scratch_dir();
        let meta = std::fs::metadata(dir.path()).expect("scratch folder");
        assert_eq!((meta.uid(), meta.gid()), member.ids());
        let file = dir.path().join("written");
        let touched = member
            .command(std::path::Path::new("/usr/bin/touch"))
            .arg(&file)
            .status()
            .expect("runuser runs");
        assert!(touched.success());
        assert!(member.can_run(std::path::Path::new("/usr/bin/touch")));
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
    }
}
