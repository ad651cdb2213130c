//! One lock, shared by every dlgrab process of the machine, held while a
//! run adds or removes an image name on a daemon.
//!
//! Podman (4.3 seen) changes an image's names by reading the list and
//! writing it back whole: a run removing its temporary tag while another
//! run tags the same image can drop the other run's tag (its push then
//! fails with "no such image") or bring a removed one back. Runs on one
//! machine take turns through this lock; it is advisory and, when the lock
//! file cannot be opened, skipped (with a debug event).

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

/// The held lock; dropping it releases it.
pub(crate) struct NamesLock(#[allow(dead_code)] Option<File>);

/// The lock file: one per machine (the system's temporary folder).
fn path() -> PathBuf {
    std::env::temp_dir().join("dlgrab-names.lock")
}

/// Waits for the lock (in a blocking task) and returns it held.
pub(crate) async fn hold() -> NamesLock {
    let held = tokio::task::spawn_blocking(|| {
        let file = open(&path())?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await;
    match held {
        Ok(Ok(file)) => NamesLock(Some(file)),
        Ok(Err(e)) => {
            tracing::debug!(path = %path().display(), "names lock not taken: {e}");
            NamesLock(None)
        }
        Err(e) => {
            tracing::debug!("names lock not taken: {e}");
            NamesLock(None)
        }
    }
}

/// Opens the lock file, made readable and writable by every user (root
/// and members of the docker group share it); read-only if another user
/// made it without write access (a shared lock on a read-only file still
/// excludes).
fn open(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(path)
    {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => File::open(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_holder_waits_for_the_first() {
        let first = hold().await;
        assert!(first.0.is_some(), "the lock file opens");
        let second = tokio::spawn(hold());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !second.is_finished(),
            "the second holder got in while the first held"
        );
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), second)
            .await
            .expect("the second holder gets the lock once the first lets go")
            .expect("task");
        assert!(second.0.is_some());
    }
}
