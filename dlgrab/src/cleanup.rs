//! What an export leaves behind on the daemon and on disk until it ends,
//! recorded outside the export itself so that it is undone on success, on
//! error and on Ctrl-C alike.
//!
//! A temporary tag is made through [`Cleanup::tag`], in a task of its own:
//! an export dropped by Ctrl-C while the daemon is still handling the tag
//! request would otherwise untag before the daemon tags, and the tag would
//! outlive the run. [`Cleanup::run`] waits for such requests first.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docker_driver::{DockerDriver, DriverError};
use tokio::sync::RwLock;

/// How long [`Cleanup::run`] waits for tag requests still in flight.
const IN_FLIGHT_LIMIT: Duration = Duration::from_secs(30);

/// Temporary tags and scratch folders to remove when the run ends.
pub(crate) struct Cleanup {
    driver: Arc<dyn DockerDriver>,
    /// Each tag with the daemon it is on (the source's, or `--to`'s DEST).
    tags: Mutex<Vec<(Arc<dyn DockerDriver>, String)>>,
    dirs: Mutex<Vec<PathBuf>>,
    /// Containers (by name, recorded before they are asked for).
    containers: Mutex<Vec<String>>,
    /// Held for reading by every tag request in flight.
    in_flight: Arc<RwLock<()>>,
    /// Layers written in full (their folders' names): they stay even if
    /// the run is interrupted after them.
    written: Mutex<Vec<String>>,
    /// When the run began.
    started: std::time::SystemTime,
}

impl Cleanup {
    pub(crate) fn new(driver: Arc<dyn DockerDriver>) -> Self {
        Self {
            driver,
            tags: Mutex::default(),
            dirs: Mutex::default(),
            containers: Mutex::default(),
            in_flight: Arc::default(),
            written: Mutex::default(),
            started: std::time::SystemTime::now(),
        }
    }

    /// When the run began.
    pub(crate) fn started(&self) -> std::time::SystemTime {
        self.started
    }

    /// Records a layer written in full into the output folder.
    pub(crate) fn add_written(&self, id: &str) {
        lock(&self.written).push(id.to_owned());
    }

    /// The layers written in full so far.
    pub(crate) fn written(&self) -> Vec<String> {
        lock(&self.written).clone()
    }

    /// Tags `image` as `repo:tag`, recorded for removal before the request
    /// leaves. The request runs to its end even if the caller is dropped,
    /// and [`Cleanup::run`] waits for it, so the tag it makes is removed.
    pub(crate) async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), DriverError> {
        self.tag_on(&self.driver, image, repo, tag).await
    }

    /// [`Cleanup::tag`] on another daemon than the run's (`--to`'s DEST).
    pub(crate) async fn tag_on(
        &self,
        driver: &Arc<dyn DockerDriver>,
        image: &str,
        repo: &str,
        tag: &str,
    ) -> Result<(), DriverError> {
        lock(&self.tags).push((driver.clone(), format!("{repo}:{tag}")));
        let guard = self.in_flight.clone().read_owned().await;
        let driver = driver.clone();
        let (image, repo, tag) = (image.to_owned(), repo.to_owned(), tag.to_owned());
        let task = tokio::spawn(async move {
            let _in_flight = guard;
            let _names = crate::names_lock::hold().await;
            driver.tag(&image, &repo, &tag).await
        });
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(DriverError::Transport {
                operation: "tag",
                source: Box::new(e),
            }),
        }
    }

    /// Creates the reader container `spec` (see [`DockerDriver::create_reader`]),
    /// recorded for removal before the request leaves; like a tag, the
    /// request runs to its end even if the caller is dropped, and
    /// [`Cleanup::run`] waits for it. Returns the container's ID.
    pub(crate) async fn create_reader(
        &self,
        spec: docker_driver::ReaderContainer,
    ) -> Result<String, DriverError> {
        lock(&self.containers).push(spec.name.clone());
        let guard = self.in_flight.clone().read_owned().await;
        let driver = self.driver.clone();
        let task = tokio::spawn(async move {
            let _in_flight = guard;
            driver.create_reader(&spec).await
        });
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(DriverError::Transport {
                operation: "creating a container",
                source: Box::new(e),
            }),
        }
    }

    /// Removes one of the run's containers now; forgotten whether that
    /// worked or not.
    pub(crate) async fn remove_container(&self, name: &str) -> Result<(), DriverError> {
        lock(&self.containers).retain(|c| c != name);
        tracing::debug!(name, "removing the reader container");
        self.driver.remove_container(name).await
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
        let driver = lock(&self.tags)
            .iter()
            .find(|(_, t)| t == reference)
            .map_or_else(|| self.driver.clone(), |(d, _)| d.clone());
        tracing::debug!(reference, "removing temporary tag");
        let _names = crate::names_lock::hold().await;
        let untagged = driver.untag(reference).await;
        // Forgotten only once the daemon said it is gone: a run stopped
        // (Ctrl-C) before then removes it in [`Cleanup::run`], where a tag
        // already gone is no failure.
        if matches!(
            untagged,
            Ok(()) | Err(docker_driver::DriverError::NoSuchImage { .. })
        ) {
            lock(&self.tags).retain(|(_, t)| t != reference);
        }
        untagged
    }

    /// Removes every recorded tag and folder, returning what could not be removed.
    pub(crate) async fn run(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if tokio::time::timeout(IN_FLIGHT_LIMIT, self.in_flight.write())
            .await
            .is_err()
        {
            tracing::warn!("a tag request was still in flight after {IN_FLIGHT_LIMIT:?}");
        }
        let tags = std::mem::take(&mut *lock(&self.tags));
        for (driver, tag) in tags {
            tracing::debug!(tag, "removing temporary tag");
            let names = crate::names_lock::hold().await;
            let untagged = driver.untag(&tag).await;
            drop(names);
            if let Err(e) = untagged {
                // A tag that was recorded but never created is not a failure.
                if !matches!(e, docker_driver::DriverError::NoSuchImage { .. }) {
                    failures.push(format!("temporary tag {tag} was not removed: {e}"));
                }
            }
        }
        let containers = std::mem::take(&mut *lock(&self.containers));
        for name in containers {
            tracing::debug!(name, "removing the reader container");
            if let Err(e) = self.driver.remove_container(&name).await {
                failures.push(format!("container {name} was not removed: {e}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use docker_driver::MockDockerDriver;

    /// A Ctrl-C that drops the export while the daemon still handles the
    /// tag request: the tag is removed after it is made, not before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tag_request_in_flight_when_the_export_is_dropped_is_undone_after_it_lands() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut mock = MockDockerDriver::new();
        let seen = calls.clone();
        mock.expect_tag().times(1).returning(move |_, _, _| {
            // The daemon is slow to answer (blocks this worker only).
            std::thread::sleep(Duration::from_millis(300));
            lock(&seen).push("tag");
            Ok(())
        });
        let seen = calls.clone();
        mock.expect_untag().times(1).returning(move |reference| {
            assert_eq!(reference, "127.0.0.1:5000/dlgrab-run-x:export");
            lock(&seen).push("untag");
            Ok(())
        });
        let cleanup = Cleanup::new(Arc::new(mock));
        tokio::select! {
            _ = cleanup.tag("sha256:1", "127.0.0.1:5000/dlgrab-run-x", "export") => {
                panic!("the tag request should still be in flight")
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        assert!(cleanup.run().await.is_empty());
        assert_eq!(*lock(&calls), ["tag", "untag"]);
    }

    /// A tag is forgotten only once the daemon removed it: an untag that
    /// did not get through (here the daemon's connection failed; likewise
    /// one dropped by Ctrl-C before the answer) leaves it recorded, so the
    /// run's cleanup removes it.
    #[tokio::test]
    async fn a_tag_is_forgotten_only_once_the_daemon_removed_it() {
        let untags = Arc::new(Mutex::new(0usize));
        let mut mock = MockDockerDriver::new();
        mock.expect_tag().returning(|_, _, _| Ok(()));
        let seen = untags.clone();
        mock.expect_untag().returning(move |_| {
            let mut n = lock(&seen);
            *n += 1;
            if *n == 1 {
                Err(docker_driver::DriverError::Transport {
                    operation: "untag",
                    source: "connection reset".into(),
                })
            } else {
                Ok(())
            }
        });
        let cleanup = Cleanup::new(Arc::new(mock));
        let reference = "127.0.0.1:5000/dlgrab-run-x:export";
        cleanup
            .tag("sha256:1", "127.0.0.1:5000/dlgrab-run-x", "export")
            .await
            .unwrap();
        assert!(cleanup.remove_tag(reference).await.is_err());
        assert_eq!(lock(&cleanup.tags).len(), 1, "still recorded");
        assert!(cleanup.run().await.is_empty());
        assert_eq!(*lock(&untags), 2, "the cleanup removed it");
        // Removed by the route itself: nothing left for the cleanup.
        cleanup
            .tag("sha256:1", "127.0.0.1:5000/dlgrab-run-x", "export")
            .await
            .unwrap();
        cleanup.remove_tag(reference).await.unwrap();
        assert!(lock(&cleanup.tags).is_empty());
        assert!(cleanup.run().await.is_empty());
        assert_eq!(*lock(&untags), 3);
    }
}
