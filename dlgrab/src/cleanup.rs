//! What an export leaves behind on the daemon and on disk until it ends,
//! recorded outside the export itself so that it is undone on success, on
//! error and on Ctrl-C alike.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use docker_driver::DockerDriver;

/// Temporary tags and scratch folders to remove when the run ends.
pub(crate) struct Cleanup {
    driver: Arc<dyn DockerDriver>,
    tags: Mutex<Vec<String>>,
    dirs: Mutex<Vec<PathBuf>>,
}

impl Cleanup {
    pub(crate) fn new(driver: Arc<dyn DockerDriver>) -> Self {
        Self {
            driver,
            tags: Mutex::default(),
            dirs: Mutex::default(),
        }
    }

    /// Records a temporary tag before it is created.
    pub(crate) fn add_tag(&self, reference: &str) {
        lock(&self.tags).push(reference.to_owned());
    }

    /// Records a scratch folder before it is created.
    pub(crate) fn add_dir(&self, dir: PathBuf) {
        lock(&self.dirs).push(dir);
    }

    /// Removes one temporary tag now; it is forgotten whether that worked or not.
    pub(crate) async fn remove_tag(
        &self,
        reference: &str,
    ) -> Result<(), docker_driver::DriverError> {
        lock(&self.tags).retain(|t| t != reference);
        tracing::debug!(reference, "removing temporary tag");
        self.driver.untag(reference).await
    }

    /// Removes every recorded tag and folder, returning what could not be removed.
    pub(crate) async fn run(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let tags = std::mem::take(&mut *lock(&self.tags));
        for tag in tags {
            tracing::debug!(tag, "removing temporary tag");
            if let Err(e) = self.driver.untag(&tag).await {
                // A tag that was recorded but never created is not a failure.
                if !matches!(e, docker_driver::DriverError::NoSuchImage { .. }) {
                    failures.push(format!("temporary tag {tag} was not removed: {e}"));
                }
            }
        }
        let dirs = std::mem::take(&mut *lock(&self.dirs));
        for dir in dirs {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!(
                    "scratch folder {} was not removed: {e}",
                    dir.display()
                )),
            }
        }
        failures
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
