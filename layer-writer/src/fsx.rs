//! Atomic file system helpers: temporary siblings, fsync, rename.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::WriteError;
use crate::error::io_err;
use crate::run::{TempKind, temp_name};

/// Creates `dir` and its parents.
pub(crate) fn mkdirs(dir: &Path) -> Result<(), WriteError> {
    fs::create_dir_all(dir).map_err(io_err(dir))
}

/// Fsyncs a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A fresh temporary file next to `target`.
pub(crate) fn temp_beside(target: &Path) -> Result<NamedTempFile, WriteError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    mkdirs(dir)?;
    temp_in(dir)
}

/// A fresh temporary file in `dir`, named after this run
/// (`.dlgrab-tmp-run-…-`, see [`crate::run`]) so a later run can sweep it
/// should this one die before removing it.
pub(crate) fn temp_in(dir: &Path) -> Result<NamedTempFile, WriteError> {
    tempfile::Builder::new()
        .prefix(&format!("{}-", temp_name(TempKind::Tmp)))
        .tempfile_in(dir)
        .map_err(io_err(dir))
}

/// Writes `bytes` to `target` atomically (temp sibling, fsync, rename).
pub(crate) fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut tmp = temp_beside(target)?;
    tmp.write_all(bytes).map_err(io_err(tmp.path()))?;
    finish(tmp, target, true)
}

/// Sets the usual mode, fsyncs and renames `tmp` to `target`; with
/// `replace` off, an existing target is [`WriteError::TargetExists`].
pub(crate) fn finish(tmp: NamedTempFile, target: &Path, replace: bool) -> Result<(), WriteError> {
    use std::os::unix::fs::PermissionsExt;
    let f = tmp.as_file();
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err(tmp.path()))?;
    f.sync_all().map_err(io_err(tmp.path()))?;
    if replace {
        tmp.persist(target).map_err(|e| WriteError::Io {
            path: target.into(),
            source: e.error,
        })?;
    } else {
        tmp.persist_noclobber(target).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                WriteError::TargetExists {
                    path: target.into(),
                }
            } else {
                WriteError::Io {
                    path: target.into(),
                    source: e.error,
                }
            }
        })?;
    }
    if let Some(dir) = target.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes `target` a hard link to `source`, atomically replacing it.
pub(crate) fn link_atomic(source: &Path, target: &Path) -> Result<(), WriteError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    mkdirs(dir)?;
    let tmp = dir.join(temp_name(TempKind::Link));
    fs::hard_link(source, &tmp).map_err(io_err(&tmp))?;
    if let Err(source) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(WriteError::Io {
            path: target.into(),
            source,
        });
    }
    Ok(())
}

/// Deletes a path (file or folder) when dropped, unless disarmed.
pub(crate) struct RemoveOnDrop(pub(crate) Option<PathBuf>);

impl RemoveOnDrop {
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }
}
