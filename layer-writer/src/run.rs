//! Which run made a temporary name, and whether that run is gone.
//!
//! Every temporary name dlgrab makes (the registry tag
//! `127.0.0.1:PORT/dlgrab-run-…`, the output folder's `.dlgrab-scratch-run-…`,
//! `.dlgrab-tmp-run-…`, …) carries this process's [`RunId`]: a digest of the
//! machine and PID namespace, the boot, the pid and the process's start time
//! (in clock ticks since boot, from `/proc`). A later run reads the ID back
//! from the name and proves the run dead when the machine and namespace are
//! its own and either the boot changed, or no process has that pid, or the
//! process with that pid started at another time. Anything it cannot prove
//! (another machine or namespace, no `/proc`) is left alone.
//!
//! [`sweep_folder`] removes the leftovers of dead runs from an output folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// The kinds of temporary files and folders this workspace makes; each is
/// named `.dlgrab-<kind>-<run ID>-<n>` by [`temp_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempKind {
    /// The push route's registry storage, in the output folder.
    Scratch,
    /// A file or folder being written, renamed into place when complete.
    Tmp,
    /// An output being replaced (`--force`), removed once the new one is in.
    Old,
    /// A hard link made to be renamed over a file.
    Link,
    /// `-o -`: the layer written before it is streamed to stdout.
    Stdout,
    /// `--since`: the archive's folder before it is tarred.
    Delta,
    /// `--to`: the layers exported before they are loaded on DEST.
    Copy,
}

impl TempKind {
    /// Every kind, as the sweep looks for them.
    pub const ALL: [TempKind; 7] = [
        TempKind::Scratch,
        TempKind::Tmp,
        TempKind::Old,
        TempKind::Link,
        TempKind::Stdout,
        TempKind::Delta,
        TempKind::Copy,
    ];

    /// The name prefix of this kind, before the run ID.
    pub const fn prefix(self) -> &'static str {
        match self {
            TempKind::Scratch => ".dlgrab-scratch-",
            TempKind::Tmp => ".dlgrab-tmp-",
            TempKind::Old => ".dlgrab-old-",
            TempKind::Link => ".dlgrab-link-",
            TempKind::Stdout => ".dlgrab-stdout-",
            TempKind::Delta => ".dlgrab-delta-",
            TempKind::Copy => ".dlgrab-copy-",
        }
    }
}

/// Name prefixes of the temporary files and folders this workspace makes.
pub const TEMP_PREFIXES: [&str; 7] = {
    let mut prefixes = [""; 7];
    let mut i = 0;
    while i < TempKind::ALL.len() {
        prefixes[i] = TempKind::ALL[i].prefix();
        i += 1;
    }
    prefixes
};

/// A new temporary name of `kind` for this run (`.dlgrab-<kind>-<run>-<n>`),
/// which [`temp_entry_run`] reads back and a later run's sweep removes
/// once this run is gone.
pub fn temp_name(kind: TempKind) -> String {
    format!("{}{}", kind.prefix(), unique_name_part())
}

/// The identity of one dlgrab process, as encoded in its temporary names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    /// Digest of the machine ID and PID namespace (8 hex digits).
    pub host: String,
    /// Start of the boot ID (8 hex digits).
    pub boot: String,
    /// The process ID.
    pub pid: u32,
    /// The process's start time, in clock ticks since boot.
    pub start: u64,
}

/// Whether the run that made a name is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The process runs (or it is this very process).
    Alive,
    /// Proven gone: another boot, no such pid, or a pid reused since.
    Dead,
    /// Not provable from here (another machine or namespace, no `/proc`).
    Unknown,
}

impl RunId {
    /// This process's identity; `None` where `/proc` cannot tell it.
    pub fn current() -> Option<&'static RunId> {
        static CURRENT: OnceLock<Option<RunId>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let id = RunId {
                    host: host_digest()?,
                    boot: boot_id()?,
                    pid: std::process::id(),
                    start: start_time("self")?,
                };
                tracing::debug!(run = %id.token(), "run identity");
                Some(id)
            })
            .as_ref()
    }

    /// The ID as it appears in names: `run-HOST-BOOT-PID-START`.
    pub fn token(&self) -> String {
        format!(
            "run-{}-{}-{}-{}",
            self.host, self.boot, self.pid, self.start
        )
    }

    /// Reads the ID at the start of `rest` (what follows a name's prefix),
    /// e.g. `run-0a1b2c3d-4e5f6071-812-99931-1-…`.
    pub fn parse(rest: &str) -> Option<RunId> {
        let mut parts = rest.strip_prefix("run-")?.splitn(5, '-');
        let host = parts.next().filter(|h| is_hex8(h))?.to_owned();
        let boot = parts.next().filter(|b| is_hex8(b))?.to_owned();
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        Some(RunId {
            host,
            boot,
            pid,
            start,
        })
    }

    /// Whether the run is still there, as far as this process can prove.
    pub fn liveness(&self) -> Liveness {
        let Some(me) = RunId::current() else {
            return Liveness::Unknown;
        };
        if self.host != me.host {
            return Liveness::Unknown;
        }
        if self.boot != me.boot {
            return Liveness::Dead;
        }
        if self.pid == me.pid {
            return if self.start == me.start {
                Liveness::Alive
            } else {
                Liveness::Dead
            };
        }
        match fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => match parse_start_time(&stat) {
                Some(start) if start == self.start => Liveness::Alive,
                Some(_) => Liveness::Dead,
                None => Liveness::Unknown,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Liveness::Dead,
            Err(_) => Liveness::Unknown,
        }
    }
}

/// `run-…-N`: this run's token and a counter, unique within the process;
/// `pid-N` where `/proc` cannot tell the run's identity (never swept).
pub fn unique_name_part() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    match RunId::current() {
        Some(id) => format!("{}-{n}", id.token()),
        None => format!("pid{}-{n}", std::process::id()),
    }
}

/// The run that made a temporary entry named `name` (one of
/// [`TEMP_PREFIXES`] and a run ID, as [`temp_name`] makes them), if it is one.
pub fn temp_entry_run(name: &str) -> Option<RunId> {
    TEMP_PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .and_then(RunId::parse)
}

/// One leftover of a dead run found by [`sweep_folder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The file or folder.
    pub path: PathBuf,
    /// The run that made it.
    pub run: String,
    /// Whether it was removed (else `error` says why not).
    pub removed: bool,
    /// Why it could not be removed.
    pub error: Option<String>,
}

/// Folders at the top of an output folder that the writer puts files in;
/// the sweep looks below these only, never through a user's other folders.
fn is_writer_folder(name: &str) -> bool {
    matches!(name, ".dlgrab" | "blobs" | "docker")
        || (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Removes the temporary entries of dead runs from `root`: at its top level
/// and inside the folders the writer fills (`.dlgrab`, `blobs`, `docker`,
/// the seed format's layer folders), never following symbolic links. Entries
/// of live runs, of runs it cannot prove dead and anything not named by
/// this workspace are left alone. A missing `root` has no leftovers.
pub fn sweep_folder(root: &Path) -> Vec<Leftover> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(root) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if sweep_entry(&entry.path(), name, &mut found) {
            continue;
        }
        if is_writer_folder(name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            sweep_below(&entry.path(), 0, &mut found);
        }
    }
    found
}

/// Removes the entries of dead runs in the top level of `dir` only (e.g.
/// the system's temporary folder).
pub fn sweep_top_level(dir: &Path) -> Vec<Leftover> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                sweep_entry(&entry.path(), name, &mut found);
            }
        }
    }
    found
}

const MAX_DEPTH: usize = 32;

fn sweep_below(dir: &Path, depth: usize, found: &mut Vec<Leftover>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if sweep_entry(&entry.path(), name, found) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sweep_below(&entry.path(), depth + 1, found);
        }
    }
}

/// Removes `path` when its name is a dead run's; true when it was one.
fn sweep_entry(path: &Path, name: &str, found: &mut Vec<Leftover>) -> bool {
    let Some(run) = temp_entry_run(name) else {
        return false;
    };
    if run.liveness() != Liveness::Dead {
        return true;
    }
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    let (removed, error) = match result {
        Ok(()) => (true, None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
        Err(e) => (false, Some(e.to_string())),
    };
    tracing::info!(path = %path.display(), removed, "leftover of a dead run");
    found.push(Leftover {
        path: path.to_path_buf(),
        run: run.token(),
        removed,
        error,
    });
    true
}

fn is_hex8(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Digest of the machine ID (or host name) and the PID namespace: runs are
/// compared by pid only within one.
fn host_digest() -> Option<String> {
    let machine = fs::read_to_string("/etc/machine-id")
        .or_else(|_| fs::read_to_string("/var/lib/dbus/machine-id"))
        .or_else(|_| fs::read_to_string("/proc/sys/kernel/hostname"))
        .ok()?;
    let pid_ns = fs::read_link("/proc/self/ns/pid").ok()?;
    let mut h = Sha256::new();
    h.update(machine.trim().as_bytes());
    h.update(b"\0");
    h.update(pid_ns.as_os_str().as_encoded_bytes());
    Some(hex::encode(&h.finalize()[..4]))
}

fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let hex: String = id
        .trim()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    (hex.len() == 8).then_some(hex)
}

fn start_time(pid: &str) -> Option<u64> {
    parse_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of `/proc/PID/stat` (the command name, field 2, may hold
/// spaces and parentheses: count from its closing one).
fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_temporary_name_made_is_read_back_as_this_runs() {
        let me = RunId::current().expect("/proc tells this process's identity");
        for kind in TempKind::ALL {
            let name = temp_name(kind);
            assert!(name.starts_with(kind.prefix()), "{name}");
            assert_eq!(temp_entry_run(&name).as_ref(), Some(me), "{name}");
        }
        assert_eq!(TEMP_PREFIXES.len(), TempKind::ALL.len());
    }

    #[test]
    fn own_run_is_alive_and_round_trips() {
        let me = RunId::current().expect("/proc tells this process's identity");
        let parsed = RunId::parse(&format!("{}-7-extra", me.token())).expect("parses");
        assert_eq!(&parsed, me);
        assert_eq!(parsed.liveness(), Liveness::Alive);
        assert!(unique_name_part().starts_with(&me.token()));
    }

    #[test]
    fn other_start_time_or_boot_is_dead_other_host_unknown() {
        let me = RunId::current().expect("identity").clone();
        let reused = RunId {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(reused.liveness(), Liveness::Dead);
        let rebooted = RunId {
            boot: if me.boot == "00000000" {
                "00000001".into()
            } else {
                "00000000".into()
            },
            ..me.clone()
        };
        assert_eq!(rebooted.liveness(), Liveness::Dead);
        let elsewhere = RunId {
            host: if me.host == "00000000" {
                "00000001".into()
            } else {
                "00000000".into()
            },
            start: 1,
            ..me
        };
        assert_eq!(elsewhere.liveness(), Liveness::Unknown);
    }

    #[test]
    fn a_live_child_is_alive_until_it_is_reaped() {
        let me = RunId::current().expect("identity").clone();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let pid = child.id();
        let start = start_time(&pid.to_string()).expect("child's start time");
        let run = RunId { pid, start, ..me };
        assert_eq!(run.liveness(), Liveness::Alive);
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert_eq!(run.liveness(), Liveness::Dead);
    }

    #[test]
    fn names_that_are_not_a_runs_are_not_parsed() {
        for name in [
            ".dlgrab-tmp-abc123",
            ".dlgrab-scratch-1a2b3c4d5e",
            ".dlgrab",
            "layer.tar",
            ".dlgrab-tmp-run-zz-00000000-1-2",
            ".dlgrab-tmp-run-00000000-00000000-x-2",
        ] {
            assert_eq!(temp_entry_run(name), None, "{name}");
        }
        assert!(temp_entry_run(".dlgrab-tmp-run-0a1b2c3d-00000000-12-34-Xy9").is_some());
    }

    #[test]
    fn start_time_is_read_past_a_command_with_parentheses() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_start_time(stat), Some(123_456));
    }

    #[test]
    fn sweep_removes_dead_runs_entries_only() {
        let me = RunId::current().expect("identity").clone();
        let dead = RunId {
            start: me.start + 1,
            ..me.clone()
        }
        .token();
        let live = me.token();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let hexdir = root.join("a".repeat(64));
        fs::create_dir_all(root.join(".dlgrab/images")).expect("mkdir");
        fs::create_dir_all(&hexdir).expect("mkdir");
        fs::create_dir_all(root.join("user/sub")).expect("mkdir");
        let dead_entries = [
            root.join(format!(".dlgrab-scratch-{dead}-0")),
            root.join(format!(".dlgrab-tmp-{dead}-1abc")),
            root.join(format!(".dlgrab/images/.dlgrab-tmp-{dead}-2")),
            hexdir.join(format!(".dlgrab-tmp-{dead}-3")),
        ];
        let kept = [
            root.join(format!(".dlgrab-scratch-{live}-0")),
            root.join(format!(".dlgrab-tmp-{live}-1")),
            root.join(".dlgrab-tmp-oldstyle"),
            root.join(format!("user/sub/.dlgrab-tmp-{dead}-4")),
            root.join(format!("not-ours-{dead}")),
            hexdir.join("layer.tar"),
        ];
        fs::create_dir(&dead_entries[0]).expect("mkdir");
        fs::write(dead_entries[0].join("blob"), b"x").expect("write");
        for p in dead_entries[1..].iter().chain(&kept) {
            fs::write(p, b"x").expect("write");
        }
        let found = sweep_folder(root);
        let mut removed: Vec<_> = found.iter().map(|l| l.path.clone()).collect();
        removed.sort();
        let mut expected = dead_entries.to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        assert!(found.iter().all(|l| l.removed && l.run == dead));
        for p in &dead_entries {
            assert!(!p.exists(), "{}", p.display());
        }
        for p in &kept {
            assert!(p.exists(), "{}", p.display());
        }
        assert!(sweep_folder(&root.join("missing")).is_empty());
    }

    /// A killed `--to` leaves its scratch folder in the temporary folder;
    /// the next run's sweep of that folder's top removes it, a live run's
    /// stays.
    #[test]
    fn a_dead_copys_scratch_is_swept_from_the_top_of_the_temp_folder() {
        let me = RunId::current().expect("identity").clone();
        let dead = RunId {
            start: me.start + 1,
            ..me.clone()
        }
        .token();
        let dir = tempfile::tempdir().expect("tempdir");
        let dead_copy = dir.path().join(format!(".dlgrab-copy-{dead}-0"));
        let live_copy = dir.path().join(format!(".dlgrab-copy-{}-1", me.token()));
        for d in [&dead_copy, &live_copy] {
            fs::create_dir_all(d.join("layers")).expect("mkdir");
            fs::write(d.join("layers/layer.tar"), b"x").expect("write");
        }
        let found = sweep_top_level(dir.path());
        assert_eq!(
            found.iter().map(|l| &l.path).collect::<Vec<_>>(),
            [&dead_copy]
        );
        assert!(!dead_copy.exists() && live_copy.exists());
    }
}
