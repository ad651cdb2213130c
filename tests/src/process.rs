//! Running the docker CLI with a time limit.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

/// Runs `cmd` (stdin closed, output captured) and kills it after `limit`.
pub(crate) fn output_within(
    cmd: &mut Command,
    limit: Duration,
    what: &str,
) -> Result<Output, Error> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    wait_within(child, limit, what)
}

/// Collects a spawned child's piped stdout and stderr and waits for it, killing it after `limit`.
pub(crate) fn wait_within(mut child: Child, limit: Duration, what: &str) -> Result<Output, Error> {
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    args: what.to_owned(),
                    secs: limit.as_secs(),
                });
            }
            Err(e) => return Err(Error::Spawn(e)),
        }
    };
    let join = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: join(out),
        stderr: join(err),
    })
}

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// The last `max` characters of a command's combined output, for messages.
pub(crate) fn tail(output: &Output, max: usize) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(max)
        .map(|(i, _)| i)
        .unwrap_or(0);
    text[start..].to_owned()
}
