//! `ssh://` daemon hosts, dialled as the Docker CLI dials them.
//!
//! The Docker CLI (`cli/connhelper`) reaches a daemon at
//! `ssh://[user@]host[:port][/socket]` by running, for every connection,
//! `ssh -o ConnectTimeout=30 -T [-l user] [-p port] -- host docker
//! [--host unix:///socket] system dial-stdio` and speaking HTTP over that
//! process's stdin and stdout: the remote `docker` relays them to its own
//! daemon. The user's ssh configuration (`~/.ssh/config`, agents, keys,
//! known hosts) applies as it would to the CLI. The process is killed when
//! the connection is dropped.

use std::io;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::error::DriverError;

/// Where an `ssh://` host points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshTarget {
    pub(crate) user: Option<String>,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    /// The daemon's socket on the remote, when the URL names one.
    pub(crate) socket: Option<String>,
}

/// The program run for each connection (`ssh` from `PATH`, as the CLI does).
const SSH: &str = "ssh";

impl SshTarget {
    /// Parses `ssh://[user@]host[:port][/path]` with the Docker CLI's
    /// rules: no password, query or fragment.
    pub(crate) fn parse(url: &str) -> Result<Self, DriverError> {
        let invalid = || DriverError::InvalidHost {
            host: url.to_owned(),
        };
        let rest = url.strip_prefix("ssh://").ok_or_else(invalid)?;
        if rest.contains(['?', '#']) {
            return Err(invalid());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, hp)) => {
                if user.is_empty() || user.contains(':') {
                    return Err(invalid());
                }
                (Some(user.to_owned()), hp)
            }
            None => (None, authority),
        };
        let (host, port) = split_port(host_port).ok_or_else(invalid)?;
        if host.is_empty() || host.starts_with('-') {
            return Err(invalid());
        }
        let socket = match path {
            "" | "/" => None,
            p => Some(p.to_owned()),
        };
        Ok(SshTarget {
            user,
            host: host.to_owned(),
            port,
            socket,
        })
    }

    /// The arguments of `ssh`, as the Docker CLI passes them.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-o".to_owned(),
            "ConnectTimeout=30".to_owned(),
            "-T".to_owned(),
        ];
        args.extend(self.login_args());
        args.push("docker".to_owned());
        if let Some(socket) = &self.socket {
            args.extend(["--host".to_owned(), format!("unix://{socket}")]);
        }
        args.extend(["system".to_owned(), "dial-stdio".to_owned()]);
        args
    }

    /// `[-l user] [-p port] -- host`: where ssh logs in.
    fn login_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(user) = &self.user {
            args.extend(["-l".to_owned(), user.clone()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".to_owned(), port.to_string()]);
        }
        args.extend(["--".to_owned(), self.host.clone()]);
        args
    }

    /// Starts `ssh … docker system dial-stdio`: a connection to the daemon.
    pub(crate) fn dial(&self) -> io::Result<SshStream> {
        let args = self.args();
        tracing::debug!(program = SSH, ?args, "dialling the docker daemon over ssh");
        let mut child = Command::new(SSH)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {SSH}: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("ssh started without pipes"));
        };
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let keep = Arc::clone(&stderr);
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(%line, "ssh stderr");
                    let mut kept = keep.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() < 4096 {
                        if !kept.is_empty() {
                            kept.push_str("; ");
                        }
                        kept.push_str(line.trim());
                    }
                }
            });
        }
        Ok(SshStream {
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
        })
    }
}

/// How long a reverse tunnel may take to be set up.
const TUNNEL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A port on an `ssh://` host's loopback that leads to one on this
/// machine's (`ssh -N -R 0:127.0.0.1:PORT`, the remote port chosen by the
/// remote sshd): a daemon there reaches a registry here through it. The
/// user's ssh configuration applies; the ssh process is killed on drop.
#[derive(Debug)]
pub struct ReverseTunnel {
    _child: Child,
    remote_port: u16,
}

impl ReverseTunnel {
    /// Opens the tunnel from `host` (`ssh://…`) to `local_port` on this
    /// machine's loopback.
    pub async fn open(host: &str, local_port: u16) -> Result<Self, DriverError> {
        let target = SshTarget::parse(host)?;
        let failed = |detail: String| DriverError::Tunnel {
            host: host.to_owned(),
            detail,
        };
        let mut args = vec![
            "-o".to_owned(),
            "ConnectTimeout=30".to_owned(),
            "-o".to_owned(),
            "ExitOnForwardFailure=yes".to_owned(),
            // ssh says the port it got at this level only.
            "-o".to_owned(),
            "LogLevel=INFO".to_owned(),
            "-N".to_owned(),
            "-T".to_owned(),
            "-R".to_owned(),
            format!("0:127.0.0.1:{local_port}"),
        ];
        args.extend(target.login_args());
        tracing::debug!(program = SSH, ?args, "opening a reverse tunnel");
        let mut child = Command::new(SSH)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot run {SSH}: {e}")))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| failed("ssh started without a stderr pipe".into()))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        let allocated = tokio::time::timeout(TUNNEL_LIMIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(%line, "ssh tunnel stderr");
                if let Some(port) = allocated_port(&line) {
                    return Some(port);
                }
                said.push(line);
            }
            None
        })
        .await;
        match allocated {
            Ok(Some(remote_port)) => {
                // Keep draining what ssh says, so that it never blocks.
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(%line, "ssh tunnel stderr");
                    }
                });
                Ok(Self {
                    _child: child,
                    remote_port,
                })
            }
            Ok(None) => Err(failed(format!("ssh ended: {}", said.join("; ")))),
            Err(_) => Err(failed(format!(
                "no port after {TUNNEL_LIMIT:?}: {}",
                said.join("; ")
            ))),
        }
    }

    /// The port on the remote's loopback.
    pub fn remote_port(&self) -> u16 {
        self.remote_port
    }
}

/// The port of ssh's `Allocated port N for remote forward to …`.
fn allocated_port(line: &str) -> Option<u16> {
    line.trim()
        .strip_prefix("Allocated port ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `host[:port]` (IPv6 in brackets) into the host and the port.
fn split_port(host_port: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((host_port, None)),
    }
}

/// One `ssh … dial-stdio` process as a byte stream: reads from its stdout,
/// writes to its stdin. Dropping it kills the process.
pub(crate) struct SshStream {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    /// What ssh said on stderr (the first 4 KiB), for errors.
    stderr: Arc<Mutex<String>>,
}

impl SshStream {
    /// What ssh said on stderr so far.
    fn said(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl std::fmt::Debug for SshStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshStream")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for SshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stdout).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() == before
        {
            // End of stream: ssh ended; name what it said, if anything.
            let said = this.said();
            if !said.is_empty() {
                tracing::debug!(stderr = %said, "ssh connection ended");
            }
        }
        polled
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.stdin.as_mut() {
            Some(stdin) => match Pin::new(stdin).poll_write(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                    let said = this.said();
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        if said.is_empty() {
                            "ssh ended".to_owned()
                        } else {
                            format!("ssh ended: {said}")
                        },
                    )))
                }
                other => other,
            },
            None => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the ssh connection's input is closed",
            ))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing stdin tells dial-stdio the request side is done.
        self.get_mut().stdin = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host, user, port, socket.
    type Parts<'a> = (&'a str, Option<&'a str>, Option<u16>, Option<&'a str>);

    #[track_caller]
    fn check(url: &str, expected: Option<Parts<'_>>) {
        let got = SshTarget::parse(url).ok();
        let expected = expected.map(|(host, user, port, socket)| SshTarget {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
            socket: socket.map(str::to_owned),
        });
        assert_eq!(got, expected, "{url}");
    }

    #[test]
    fn reads_the_port_ssh_allocated() {
        assert_eq!(
            allocated_port("Allocated port 41234 for remote forward to 127.0.0.1:5000"),
            Some(41234)
        );
        assert_eq!(allocated_port("Warning: Permanently added"), None);
        assert_eq!(allocated_port("Allocated port x for remote"), None);
    }

    #[test]
    fn parses_as_the_docker_cli() {
        check("ssh://far", Some(("far", None, None, None)));
        check("ssh://me@far", Some(("far", Some("me"), None, None)));
        check(
            "ssh://me@far:2222",
            Some(("far", Some("me"), Some(2222), None)),
        );
        check(
            "ssh://127.0.0.1:22/",
            Some(("127.0.0.1", None, Some(22), None)),
        );
        check(
            "ssh://far/run/user/1000/docker.sock",
            Some(("far", None, None, Some("/run/user/1000/docker.sock"))),
        );
        check("ssh://[::1]:2200", Some(("::1", None, Some(2200), None)));
        check("ssh://me:secret@far", None);
        check("ssh://far?x=1", None);
        check("ssh://far:port", None);
        check("ssh://", None);
        check("ssh://-oProxyCommand=x", None);
        check("tcp://far", None);
    }

    #[test]
    fn args_are_the_docker_clis() {
        let target = SshTarget::parse("ssh://me@far:2222/var/run/d.sock").unwrap();
        assert_eq!(
            target.args().join(" "),
            "-o ConnectTimeout=30 -T -l me -p 2222 -- far docker --host unix:///var/run/d.sock system dial-stdio"
        );
        let target = SshTarget::parse("ssh://far").unwrap();
        assert_eq!(
            target.args().join(" "),
            "-o ConnectTimeout=30 -T -- far docker system dial-stdio"
        );
    }
}
