//! The leftovers of dead runs: a run killed before its cleanup (SIGKILL, the
//! OOM killer, a closed terminal, a daemon that went away before the untag)
//! leaves its temporary tag `127.0.0.1:PORT/dlgrab-run-…:export` on the
//! daemon and `.dlgrab-scratch-run-…`/`.dlgrab-tmp-run-…` entries in the
//! output folder. Every run sweeps them before it starts, and `dlgrab
//! --clean` with no LAYER sweeps and reports.
//!
//! Only dlgrab's own temporary names are looked at, and only those whose run
//! is proven gone ([`layer_writer::run::RunId::liveness`]): a live run's
//! names, names of another machine or PID namespace and names from before
//! run IDs existed are left alone. Removing a tag never deletes an image
//! (the driver refuses); an image whose only name is a dead run's tag is
//! reported, not deleted.

use std::path::{Path, PathBuf};

use docker_driver::{DockerDriver, DriverError};
use layer_writer::run::Liveness;

use crate::temp_names::{CONTAINER_LABEL, TAG_PATTERN, container_run, tag_run};

/// What a sweep found and did (`--clean --json` prints an item each).
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Temporary tags of dead runs, removed.
    pub(crate) tags_removed: Vec<String>,
    /// Containers of dead runs (the archive route's readers), removed.
    pub(crate) containers_removed: Vec<String>,
    /// Temporary tags of dead runs left in place, and why.
    pub(crate) tags_kept: Vec<Kept>,
    /// Scratch files and folders of dead runs, removed.
    pub(crate) files_removed: Vec<PathBuf>,
    /// Scratch files and folders of dead runs that could not be removed.
    pub(crate) files_kept: Vec<Kept>,
}

/// A leftover left in place.
#[derive(Debug)]
pub(crate) struct Kept {
    /// The tag or path.
    pub(crate) name: String,
    /// Why it stays.
    pub(crate) reason: String,
    /// Whether removing it failed (rather than being refused on purpose).
    pub(crate) failed: bool,
}

impl Swept {
    /// Whether nothing was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.tags_removed.is_empty()
            && self.containers_removed.is_empty()
            && self.tags_kept.is_empty()
            && self.files_removed.is_empty()
            && self.files_kept.is_empty()
    }

    /// One line per leftover, for the user.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for t in &self.tags_removed {
            lines.push(format!("removed temporary tag {t} of a dead dlgrab run"));
        }
        for c in &self.containers_removed {
            lines.push(format!("removed container {c} of a dead dlgrab run"));
        }
        for k in &self.tags_kept {
            lines.push(format!(
                "kept temporary tag {} of a dead dlgrab run: {}",
                k.name, k.reason
            ));
        }
        for p in &self.files_removed {
            lines.push(format!("removed {} left by a dead dlgrab run", p.display()));
        }
        for k in &self.files_kept {
            lines.push(format!(
                "could not remove {} left by a dead dlgrab run: {}",
                k.name, k.reason
            ));
        }
        lines
    }
}

/// Removes the containers of dead runs (the archive route's readers).
async fn sweep_containers(driver: &dyn DockerDriver, swept: &mut Swept) {
    let containers = match driver.list_containers(CONTAINER_LABEL).await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::debug!("cannot list containers to sweep: {e}");
            return;
        }
    };
    for container in containers {
        let Some(name) = container
            .names
            .iter()
            .find(|n| container_run(n).is_some_and(|run| run.liveness() == Liveness::Dead))
        else {
            continue;
        };
        match driver.remove_container(&container.id).await {
            Ok(()) => {
                tracing::info!(name, "removed a dead run's container");
                swept.containers_removed.push(name.clone());
            }
            Err(e) => swept.tags_kept.push(Kept {
                name: format!("container {name}"),
                reason: e.to_string(),
                failed: true,
            }),
        }
    }
}

/// Removes the temporary tags and containers of dead runs from the daemon.
pub(crate) async fn sweep_daemon(driver: &dyn DockerDriver, swept: &mut Swept) {
    sweep_containers(driver, swept).await;
    // Only the images named like a run's temporary tag, which the daemon
    // filters (listing every image takes 0.1 s and more on the containerd
    // store); `tag_run` still decides.
    let images = match driver.list_images_named(TAG_PATTERN).await {
        Ok(images) => images,
        Err(e) => {
            tracing::debug!("cannot list images to sweep: {e}");
            return;
        }
    };
    for image in images {
        for tag in &image.repo_tags {
            let Some(run) = tag_run(tag) else { continue };
            if run.liveness() != Liveness::Dead {
                continue;
            }
            let names = crate::names_lock::hold().await;
            let untagged = driver.untag(tag).await;
            drop(names);
            match untagged {
                Ok(()) => {
                    tracing::info!(tag, "removed a dead run's temporary tag");
                    swept.tags_removed.push(tag.clone());
                }
                Err(DriverError::NoSuchImage { .. }) => {}
                Err(e @ DriverError::UntagWouldDelete { .. }) => swept.tags_kept.push(Kept {
                    name: tag.clone(),
                    reason: format!(
                        "it is the only name of image {}, which dlgrab never deletes ({e})",
                        image.id
                    ),
                    failed: false,
                }),
                Err(e) => swept.tags_kept.push(Kept {
                    name: tag.clone(),
                    reason: e.to_string(),
                    failed: true,
                }),
            }
        }
    }
}

/// Removes dead runs' scratch entries from `folder` (an output folder) and
/// from the top of the system's temporary folder (`-o -` and `--since`
/// scratch).
pub(crate) fn sweep_files(folder: Option<&Path>, swept: &mut Swept) {
    let mut leftovers = Vec::new();
    if let Some(folder) = folder {
        leftovers.extend(layer_writer::run::sweep_folder(folder));
    }
    leftovers.extend(layer_writer::run::sweep_top_level(&std::env::temp_dir()));
    for l in leftovers {
        if l.removed {
            swept.files_removed.push(l.path);
        } else {
            swept.files_kept.push(Kept {
                name: l.path.display().to_string(),
                reason: l.error.unwrap_or_default(),
                failed: true,
            });
        }
    }
}

/// Sweeps the daemon and `folder`.
pub(crate) async fn sweep(driver: &dyn DockerDriver, folder: Option<&Path>) -> Swept {
    let mut swept = Swept::default();
    sweep_daemon(driver, &mut swept).await;
    let folder = folder.map(Path::to_path_buf);
    swept = tokio::task::spawn_blocking(move || {
        sweep_files(folder.as_deref(), &mut swept);
        swept
    })
    .await
    .unwrap_or_default();
    swept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_names::user_tags;
    use docker_driver::{ImageSummary, MockDockerDriver};
    use layer_writer::run::RunId;

    fn dead_token() -> String {
        let me = RunId::current().expect("identity").clone();
        RunId {
            start: me.start + 1,
            ..me
        }
        .token()
    }

    #[test]
    fn only_dlgrab_temporary_tags_have_a_run() {
        let me = RunId::current().expect("identity").token();
        assert!(tag_run(&format!("127.0.0.1:5000/dlgrab-{me}-0:export")).is_some());
        for not_ours in [
            format!("localhost:5000/dlgrab-{me}-0:export"),
            format!("127.0.0.1:5000/other-{me}-0:export"),
            format!("127.0.0.1:5000/x/dlgrab-{me}-0:export"),
            "127.0.0.1:5000/dlgrab-1a2b3c4d:export".to_owned(),
            format!("dlgrab-{me}-0:export"),
        ] {
            assert_eq!(tag_run(&not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn user_tags_leave_out_any_runs_temporary_tags() {
        let me = RunId::current().expect("identity").token();
        let tags = vec![
            "app:1".to_owned(),
            format!("127.0.0.1:41000/dlgrab-{me}-0:export"),
            format!("127.0.0.1:41001/dlgrab-{}-0:export", dead_token()),
            "127.0.0.1:5000/team/app:2".to_owned(),
        ];
        assert_eq!(user_tags(&tags), ["app:1", "127.0.0.1:5000/team/app:2"]);
    }

    #[tokio::test]
    async fn dead_runs_tags_are_removed_live_ones_and_sole_names_kept() {
        let live = RunId::current().expect("identity").token();
        let dead = dead_token();
        let dead_tag = format!("127.0.0.1:41000/dlgrab-{dead}-0:export");
        let sole_tag = format!("127.0.0.1:41001/dlgrab-{dead}-1:export");
        let live_tag = format!("127.0.0.1:41002/dlgrab-{live}-0:export");
        let mut driver = MockDockerDriver::new();
        let container = |id: &str, name: String| docker_driver::ContainerSummary {
            id: id.into(),
            names: vec![name],
            labels: [(CONTAINER_LABEL.to_owned(), "x".to_owned())].into(),
        };
        let containers = vec![
            container("c-dead", format!("dlgrab-{dead}-2")),
            container("c-live", format!("dlgrab-{live}-2")),
            container("c-user", "dlgrab-made-by-a-user".into()),
        ];
        driver
            .expect_list_containers()
            .returning(move |_| Ok(containers.clone()));
        driver
            .expect_remove_container()
            .times(1)
            .withf(|id| id == "c-dead")
            .returning(|_| Ok(()));
        let images = vec![
            ImageSummary {
                id: "sha256:aa".into(),
                parent_id: None,
                repo_tags: vec!["user/app:1".into(), dead_tag.clone(), live_tag.clone()],
                repo_digests: vec![],
            },
            ImageSummary {
                id: "sha256:bb".into(),
                parent_id: None,
                repo_tags: vec![sole_tag.clone()],
                repo_digests: vec![],
            },
        ];
        driver
            .expect_list_images_named()
            .withf(|pattern| pattern == TAG_PATTERN)
            .returning(move |_| Ok(images.clone()));
        let (d, s) = (dead_tag.clone(), sole_tag.clone());
        driver
            .expect_untag()
            .withf(move |t| t == d || t == s)
            .times(2)
            .returning(move |t| {
                if t.contains(":41001/") {
                    Err(DriverError::UntagWouldDelete {
                        reference: t.to_owned(),
                    })
                } else {
                    Ok(())
                }
            });
        let mut swept = Swept::default();
        sweep_daemon(&driver, &mut swept).await;
        assert_eq!(swept.tags_removed, [dead_tag]);
        assert_eq!(swept.tags_kept.len(), 1);
        assert_eq!(swept.tags_kept[0].name, sole_tag);
        assert!(swept.tags_kept[0].reason.contains("sha256:bb"));
        assert_eq!(
            swept.containers_removed,
            [format!("dlgrab-{dead}-2")],
            "only the dead run's container"
        );
        assert_eq!(swept.lines().len(), 3);
    }
}
