//! A member of the `docker` group who is not root: what most users of a
//! daemon are. Tests run dlgrab as that user through `runuser`.

use std::path::Path;
use std::process::Command;

/// The user name tests create (when run as root) and run dlgrab as.
pub const MEMBER: &str = "dlgrab-member";

/// A non-root member of the `docker` group.
#[derive(Debug, Clone)]
pub struct DockerMember {
    /// The user's name.
    pub name: String,
}

impl DockerMember {
    /// The member, made (`useradd --system -G docker`) if missing; only
    /// root can make one and switch to it, so elsewhere this says why not.
    pub fn try_get() -> Result<Self, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("switching to a docker group member needs root".into());
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
        Ok(Self {
            name: MEMBER.to_owned(),
        })
    }

    /// `program` run as the member (`runuser -u NAME --`), from `/` with
    /// the environment the returned command is given.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.name, "--"])
            .arg(program)
            .current_dir("/");
        cmd
    }
}
