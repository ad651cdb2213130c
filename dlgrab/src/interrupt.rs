//! Ctrl-C and SIGTERM: the work of a run raced against them, then the
//! run's cleanup whatever happened, and the exit status of an interrupted
//! run (130, as a shell reports a SIGINT).

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::cleanup::Cleanup;
use crate::report::Reporter;

/// The exit status of a run stopped by Ctrl-C or SIGTERM.
pub(crate) const INTERRUPTED: u8 = 130;

/// Runs `work` until it ends or a signal comes (a finished `work` wins over
/// a signal that came with it), then ends the progress display and runs
/// the cleanup, printing what it could not undo. `None` when interrupted.
pub(crate) async fn run_to_end<T>(
    work: impl Future<Output = T>,
    cleanup: &Cleanup,
    reporter: &Reporter,
) -> Option<T> {
    let outcome = tokio::select! {
        biased;
        result = work => Some(result),
        () = interrupted() => None,
    };
    reporter.finish();
    for failure in cleanup.run().await {
        tracing::warn!("{failure}");
        let _ = writeln!(std::io::stderr(), "dlgrab: warning: {failure}");
    }
    outcome
}

/// Says what an interrupted run left (`stopped`: what was stopped and
/// undone; `kept_in`: the output folder whose layers written in full
/// stay) and returns [`INTERRUPTED`].
pub(crate) fn exit(stopped: &str, kept_in: Option<&Path>, cleanup: &Cleanup) -> ExitCode {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "dlgrab: interrupted: {stopped}");
    let mut written = cleanup.written();
    if let Some(folder) = kept_in {
        // A layer put in place just before the interrupt, before the run
        // recorded it, is there in full all the same.
        for id in placed_since(folder, cleanup.started()) {
            if !written.contains(&id) {
                written.push(id);
            }
        }
    }
    if let Some(folder) = kept_in
        && !written.is_empty()
    {
        let _ = writeln!(
            err,
            "dlgrab: kept in {}: {} layer(s) written in full before the interrupt: {}",
            folder.display(),
            written.len(),
            written.join(", ")
        );
    }
    ExitCode::from(INTERRUPTED)
}

/// The layer folders of `folder` (64 hex digits, holding `json`,
/// `layer.tar` and `VERSION`) changed since `since`: put in place by this
/// run, in full.
fn placed_since(folder: &Path, since: std::time::SystemTime) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let is_id = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            let path = e.path();
            let whole = ["json", "layer.tar", "VERSION"]
                .iter()
                .all(|f| path.join(f).is_file());
            let recent = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            (is_id && whole && recent).then_some(name)
        })
        .collect();
    found.sort();
    found
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_folders_put_in_place_since_the_start_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let id = |c: char| c.to_string().repeat(64);
        let make = |name: &str, files: &[&str]| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path).unwrap();
            for f in files {
                std::fs::write(path.join(f), b"x").unwrap();
            }
        };
        let whole = ["json", "layer.tar", "VERSION"];
        make(&id('a'), &whole);
        let since = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        // Older than the run: not this run's.
        assert!(placed_since(dir.path(), since).is_empty());
        let since = std::time::SystemTime::UNIX_EPOCH;
        make(&id('b'), &whole);
        make(&id('c'), &["json", "layer.tar"]);
        make("not-a-layer", &whole);
        assert_eq!(placed_since(dir.path(), since), [id('a'), id('b')]);
        assert!(placed_since(&dir.path().join("nowhere"), since).is_empty());
    }
}
