//! What a test made on the daemon is removed when the test ends, passed,
//! failed or panicked.
//!
//! [`daemon_or_skip`](crate::daemon_or_skip) opens a scope on the test's
//! thread; it ends when that thread does (libtest runs each test on a thread
//! of its own and joins it), also after a panic. At its end it removes, on
//! the daemon under test:
//! - every tag whose repository starts with a name [`unique_name`](crate::unique_name)
//!   returned on that thread (tests name their images that way);
//! - every reference passed to [`Daemon::remove_when_done`] (image IDs a
//!   test loaded, tags it made under other names), newest first.
//!
//! Only then is the daemon handed to the next test of the process.

use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard};

use crate::Daemon;

/// The daemon lock of a process and the clean-up of the test holding it.
struct Scope {
    daemon: Daemon,
    references: Vec<String>,
    repositories: Vec<String>,
    _held: MutexGuard<'static, ()>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
    /// Names `unique_name` returned on this thread before a scope opened.
    static NAMES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Takes the process's daemon lock for the current thread (once) and opens
/// its clean-up scope.
pub(crate) fn enter(daemon: &Daemon) {
    static DAEMON: Mutex<()> = Mutex::new(());
    let open = SCOPE.with(|s| s.borrow().is_some());
    if open {
        return;
    }
    // A test that panicked while holding it poisons nothing we keep.
    let held = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let repositories = NAMES.with(|n| std::mem::take(&mut *n.borrow_mut()));
    SCOPE.with(|s| {
        *s.borrow_mut() = Some(Scope {
            daemon: daemon.clone(),
            references: Vec::new(),
            repositories,
            _held: held,
        });
    });
}

/// Remembers a repository name made on this thread.
pub(crate) fn note_repository(name: &str) {
    let added = SCOPE.with(|s| {
        s.borrow_mut()
            .as_mut()
            .map(|scope| scope.repositories.push(name.to_owned()))
            .is_some()
    });
    if !added {
        NAMES.with(|n| n.borrow_mut().push(name.to_owned()));
    }
}

impl Daemon {
    /// Removes `reference` (an image ID or a tag) from this daemon when the
    /// current test ends, whatever its outcome. Outside a test scope (no
    /// [`daemon_or_skip`](crate::daemon_or_skip) on this thread) it does nothing.
    pub fn remove_when_done(&self, reference: &str) {
        SCOPE.with(|s| {
            if let Some(scope) = s.borrow_mut().as_mut() {
                scope.references.push(reference.to_owned());
            }
        });
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let mut doomed: Vec<String> = Vec::new();
        if !self.repositories.is_empty() {
            let listed = self.daemon.try_docker_stdout([
                "image",
                "ls",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]);
            for line in listed.unwrap_or_default().lines() {
                let repo = line.rsplit_once(':').map_or(line, |(r, _)| r);
                // Podman lists a name without a registry under `localhost/`.
                let repo = repo.strip_prefix("localhost/").unwrap_or(repo);
                if self
                    .repositories
                    .iter()
                    .any(|name| repo == name || repo.starts_with(&format!("{name}-")))
                {
                    doomed.push(line.to_owned());
                }
            }
        }
        doomed.extend(self.references.drain(..).rev());
        for reference in doomed {
            let _ = self
                .daemon
                .try_docker_stdout(["image", "rm", reference.as_str()]);
        }
    }
}
