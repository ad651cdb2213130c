//! The run's temporary names, made and read back in one place: the
//! registry repository of its temporary tag (`127.0.0.1:PORT/dlgrab-run-…`)
//! and its scratch folders (in the output folder or the system's temporary
//! folder, as [`layer_writer::run::temp_name`] makes them). Each carries
//! the run's ID, so that a later run's sweep ([`crate::sweep`]) finds the
//! leftovers of a dead one.

use std::path::{Path, PathBuf};

use layer_writer::run::{RunId, TempKind, temp_name, unique_name_part};

/// The names of runs' temporary tags, as the Engine API's `reference`
/// filter matches them (see [`tag_run`]).
pub(crate) const TAG_PATTERN: &str = "127.0.0.1:*/dlgrab-*";

/// A new repository name for this run's temporary registry
/// (`dlgrab-run-…-N`).
pub(crate) fn repository() -> String {
    format!("dlgrab-{}", unique_name_part())
}

/// The label every container of dlgrab's carries, its value the run's
/// token; the sweep lists containers by it.
pub(crate) const CONTAINER_LABEL: &str = "dlgrab.run";

/// A new name for one of this run's containers (`dlgrab-run-…-N`).
pub(crate) fn container_name() -> String {
    format!("dlgrab-{}", unique_name_part())
}

/// The run that made container `name`, if it is one of dlgrab's.
pub(crate) fn container_run(name: &str) -> Option<RunId> {
    let rest = name.strip_prefix("dlgrab-")?;
    let (run, n) = rest.rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    RunId::parse(run)
}

/// The run that made temporary tag `reference`
/// (`127.0.0.1:PORT/dlgrab-run-…:TAG`), if it is one of dlgrab's.
pub(crate) fn tag_run(reference: &str) -> Option<RunId> {
    let rest = reference.strip_prefix("127.0.0.1:")?;
    let (port, rest) = rest.split_once('/')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (repo, _tag) = rest.rsplit_once(':')?;
    RunId::parse(repo.strip_prefix("dlgrab-")?)
}

/// `tags` without dlgrab's temporary ones: an image being exported by
/// another run at the same moment carries that run's tag, which must not
/// be copied into an output or onto another daemon.
pub(crate) fn user_tags(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter(|t| tag_run(t).is_none())
        .cloned()
        .collect()
}

/// A new scratch entry of `kind` in `folder`.
pub(crate) fn scratch_in(folder: &Path, kind: TempKind) -> PathBuf {
    folder.join(temp_name(kind))
}

/// A new scratch entry of `kind` in the system's temporary folder (swept
/// by every run).
pub(crate) fn scratch_in_temp(kind: TempKind) -> PathBuf {
    scratch_in(&std::env::temp_dir(), kind)
}

/// Removes a scratch folder; one already gone is fine, one that cannot go
/// yet is left to the next run's sweep.
pub(crate) async fn remove(dir: &Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::debug!(dir = %dir.display(), "scratch not removed yet: {e}"),
    }
}
