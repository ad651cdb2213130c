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
    let written = cleanup.written();
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
