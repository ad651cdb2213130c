//! The export flow: resolve each layer, group the layers by image, and take
//! routes for each image's wanted layers (see [`crate::route`]) until they
//! are all written: the cheapest first, and where it gives way the next
//! cheapest for the layers it did not write.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use docker_driver::{DaemonInfo, DockerDriver, ImageDetails, LayerSelector};
use serde::Serialize;

use crate::cleanup::Cleanup;
use crate::plan::{self, GaveWay, Route, Via, Wanted};
use crate::report::Reporter;
pub(crate) use crate::route::ExportOptions;
use crate::route::{self, Job, Outcome, Source};

/// One layer written, as `--json` reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Exported {
    pub(crate) image: String,
    pub(crate) index: usize,
    pub(crate) diff_id: String,
    pub(crate) id: String,
    pub(crate) route: &'static str,
    /// Why that route was taken.
    pub(crate) route_reason: String,
    pub(crate) tar_size: u64,
    pub(crate) files: Vec<PathBuf>,
}

/// Runs exports against one daemon.
pub(crate) struct Exporter {
    job: Job,
}

impl Exporter {
    pub(crate) fn new(
        driver: Arc<dyn DockerDriver>,
        cleanup: Arc<Cleanup>,
        reporter: Arc<Reporter>,
        options: ExportOptions,
    ) -> Self {
        Self {
            job: Job {
                driver,
                cleanup,
                reporter,
                options,
            },
        }
    }

    /// Exports every layer `requests` names, image by image.
    pub(crate) async fn run(
        &self,
        requests: &[String],
        selector: LayerSelector,
    ) -> anyhow::Result<Vec<Exported>> {
        let info = self.daemon_info().await?;

        let mut groups: Vec<(ImageDetails, Vec<Wanted>)> = Vec::new();
        for what in requests {
            let resolved = self.job.driver.resolve(what, selector.clone()).await?;
            if let Some(platform) = &self.job.options.platform {
                plan::check_platform(what, &resolved.image, platform)?;
            }
            let wanted = Wanted {
                index: resolved.layer_index,
                requested_id: resolved.requested_id,
            };
            match groups
                .iter_mut()
                .find(|(image, _)| image.id == resolved.image.id)
            {
                Some((_, layers)) if layers.iter().any(|l| l.index == wanted.index) => {}
                Some((_, layers)) => layers.push(wanted),
                None => groups.push((resolved.image, vec![wanted])),
            }
        }

        self.make_outdir()?;
        let mut exported = Vec::new();
        for (image, wanted) in &groups {
            exported.extend(self.export_image(&info, image, wanted).await?);
        }
        Ok(exported)
    }

    /// Exports the layers at `indexes` of one image in a single pass (one
    /// push or one save stream), as `--since` needs.
    pub(crate) async fn run_indexes(
        &self,
        image: &ImageDetails,
        indexes: &[usize],
    ) -> anyhow::Result<Vec<Exported>> {
        let info = self.daemon_info().await?;
        let wanted: Vec<Wanted> = indexes
            .iter()
            .map(|&index| Wanted {
                index,
                requested_id: None,
            })
            .collect();
        self.make_outdir()?;
        self.export_image(&info, image, &wanted).await
    }

    /// Asks the daemon what it is.
    async fn daemon_info(&self) -> anyhow::Result<DaemonInfo> {
        let info = self
            .job
            .driver
            .info()
            .await
            .context("cannot talk to the Docker daemon")?;
        tracing::debug!(?info, "daemon");
        Ok(info)
    }

    /// Makes the output folder, once the layers are known to exist.
    fn make_outdir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.job.options.outdir).with_context(|| {
            format!(
                "cannot create the output folder {}",
                self.job.options.outdir.display()
            )
        })
    }

    /// Exports `wanted` layers of `image`: the route [`plan::choose_route`]
    /// picks first; when it gives way (and `--via` did not name it), the
    /// layers it did not write go by the next cheapest. Each route gives
    /// way at most once and is not chosen again.
    async fn export_image(
        &self,
        info: &DaemonInfo,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> anyhow::Result<Vec<Exported>> {
        let via = self.job.options.via;
        let (access, store) = route::store::access(info, image);
        let source = Source {
            info,
            image,
            store: store.as_ref(),
        };
        let mut done: Vec<(layer_writer::WrittenLayer, Route, String)> = Vec::new();
        let mut left = wanted.to_vec();
        let mut gave_way: Vec<GaveWay> = Vec::new();
        // Three routes at most: each gives way once, save never does.
        for _ in 0..4 {
            let (route, why) = plan::choose_route(info, image, via, &access, &gave_way)?;
            let event = if gave_way.is_empty() {
                "route chosen"
            } else {
                "fallback route chosen"
            };
            tracing::info!(image = %image.id, route = route.name(), why, "{event}");
            let outcome = route::run(route, &self.job, &source, &left)
                .await
                .map_err(|e| after_store_failure(e, route, &gave_way))?;
            let (written, because, error) = match outcome {
                Outcome::Written(written) => {
                    done.extend(written.into_iter().map(|w| (w, route, why.clone())));
                    return Ok(self.exported(image, done));
                }
                Outcome::GaveWay {
                    written,
                    because,
                    error,
                } => (written, because, error),
            };
            left.retain(|w| !written.iter().any(|l| l.index == w.index));
            done.extend(written.into_iter().map(|w| (w, route, why.clone())));
            if via != Via::Auto {
                return Err(error);
            }
            tracing::debug!(image = %image.id, route = route.name(), error = format!("{error:#}"), "the route gave way");
            if left.is_empty() {
                return Ok(self.exported(image, done));
            }
            gave_way.push(because);
        }
        anyhow::bail!(
            "no route could export the layers of image {} ({:?})",
            image.id,
            gave_way
        )
    }

    /// The `--json` rows of the layers written.
    fn exported(
        &self,
        image: &ImageDetails,
        done: Vec<(layer_writer::WrittenLayer, Route, String)>,
    ) -> Vec<Exported> {
        done.into_iter()
            .map(|(w, route, why)| Exported {
                image: image.id.clone(),
                index: w.index,
                diff_id: w.diff_id.to_string(),
                id: w.id,
                route: route.name(),
                route_reason: why,
                tar_size: w.tar_size,
                files: w
                    .files
                    .iter()
                    .map(|f| self.job.options.outdir.join(f))
                    .collect(),
            })
            .collect()
    }
}

/// The error of a route taken after the store route failed says so.
fn after_store_failure(error: anyhow::Error, route: Route, gave_way: &[GaveWay]) -> anyhow::Error {
    match GaveWay::store_failure(gave_way) {
        Some(store) => error.context(format!(
            "the {} route taken after the store route failed ({store})",
            route.name()
        )),
        None => error,
    }
}

#[cfg(test)]
mod tests;
