//! The export flow: resolve each layer, group the layers by image, and take
//! routes for each image's wanted layers (see [`crate::route`]) until they
//! are all written: the cheapest first, and where it gives way the next
//! cheapest for the layers it did not write.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use docker_driver::{DaemonInfo, DockerDriver, ImageDetails, LayerSelector};
use serde::Serialize;

use crate::cleanup::Cleanup;
use crate::failure::{Failure, Kind};
use crate::plan::{self, GaveWay, Route, Via, Wanted};
use crate::report::Reporter;
pub(crate) use crate::route::ExportOptions;
use crate::route::{self, Job, Outcome, Source};

/// One layer written, as `--json` reports it (in an item, which carries
/// the route and its reason).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Exported {
    pub(crate) image: String,
    pub(crate) index: usize,
    pub(crate) diff_id: String,
    pub(crate) id: String,
    #[serde(skip)]
    pub(crate) route: &'static str,
    /// Why that route was taken.
    #[serde(skip)]
    pub(crate) route_reason: String,
    pub(crate) tar_size: u64,
    pub(crate) files: Vec<PathBuf>,
}

/// What became of one reference as typed: its layer, or why not, and how
/// long its image took.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) reference: String,
    pub(crate) outcome: Result<Exported, Failure>,
    pub(crate) seconds: f64,
}

/// One reference resolved to an image ID and a layer index, or why not.
struct Resolved<'a> {
    reference: &'a str,
    layer: Result<(String, usize), Failure>,
    seconds: f64,
}

/// One image's export: the layers written, and why the others were not.
struct ImageDone {
    image: String,
    exported: Vec<Exported>,
    failure: Option<Failure>,
    seconds: f64,
}

impl Resolved<'_> {
    /// What became of the reference, once its image's export is `done`.
    fn attempt(self, done: &[ImageDone]) -> Attempt {
        let (outcome, seconds) = match self.layer {
            Err(failure) => (Err(failure), self.seconds),
            Ok((image, index)) => {
                let group = done.iter().find(|d| d.image == image);
                let layer = group.and_then(|g| g.exported.iter().find(|e| e.index == index));
                let outcome = match (layer, group.and_then(|g| g.failure.as_ref())) {
                    (Some(layer), _) => Ok(layer.clone()),
                    (None, Some(failure)) => Err(failure.clone()),
                    (None, None) => Err(Failure {
                        kind: Kind::Internal,
                        message: format!("layer {index} of image {image} was not written"),
                    }),
                };
                (outcome, self.seconds + group.map_or(0.0, |g| g.seconds))
            }
        };
        Attempt {
            reference: self.reference.to_owned(),
            outcome,
            seconds,
        }
    }
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

    /// Exports every layer `requests` names, image by image; the first
    /// reference that fails fails the run (after the others' layers are
    /// written).
    pub(crate) async fn run(
        &self,
        requests: &[String],
        selector: LayerSelector,
    ) -> anyhow::Result<Vec<Exported>> {
        let mut exported = Vec::new();
        for attempt in self.run_each(requests, selector).await? {
            exported.push(attempt.outcome?);
        }
        Ok(exported)
    }

    /// Exports every layer `requests` names, image by image, doing all it
    /// can: a reference that cannot be resolved or exported gets its
    /// error, the others go on (a layer appears whole or not at all). An
    /// error only when nothing could start (the daemon does not answer).
    pub(crate) async fn run_each(
        &self,
        requests: &[String],
        selector: LayerSelector,
    ) -> anyhow::Result<Vec<Attempt>> {
        let info = self.daemon_info().await?;

        // Per reference: the image and layer it resolved to, or why not.
        let mut resolved: Vec<Resolved<'_>> = Vec::new();
        let mut groups: Vec<(ImageDetails, Vec<Wanted>)> = Vec::new();
        for what in requests {
            let started = Instant::now();
            let layer = match self.resolve(what, selector.clone()).await {
                Ok(layer) => layer,
                Err(e) => {
                    resolved.push(Resolved {
                        reference: what,
                        layer: Err(Failure::of(&e)),
                        seconds: secs(started),
                    });
                    continue;
                }
            };
            let wanted = Wanted {
                index: layer.layer_index,
                requested_id: layer.requested_id,
            };
            resolved.push(Resolved {
                reference: what,
                layer: Ok((layer.image.id.clone(), wanted.index)),
                seconds: secs(started),
            });
            match groups
                .iter_mut()
                .find(|(image, _)| image.id == layer.image.id)
            {
                Some((_, layers)) if layers.iter().any(|l| l.index == wanted.index) => {}
                Some((_, layers)) => layers.push(wanted),
                None => groups.push((layer.image, vec![wanted])),
            }
        }

        let mut done: Vec<ImageDone> = Vec::new();
        if !groups.is_empty()
            && let Err(e) = self.make_outdir()
        {
            let failure = Failure::of(&e);
            for (image, _) in &groups {
                done.push(ImageDone {
                    image: image.id.clone(),
                    exported: Vec::new(),
                    failure: Some(failure.clone()),
                    seconds: 0.0,
                });
            }
            groups.clear();
        }
        for (image, wanted) in &groups {
            let started = Instant::now();
            let (exported, result) = self.export_image(&info, image, wanted).await;
            done.push(ImageDone {
                image: image.id.clone(),
                exported,
                failure: result.err().map(|e| Failure::of(&e)),
                seconds: secs(started),
            });
        }
        Ok(resolved.into_iter().map(|r| r.attempt(&done)).collect())
    }

    /// Resolves what the user typed to an image and a layer of it, of
    /// `--platform`'s platform.
    async fn resolve(
        &self,
        what: &str,
        selector: LayerSelector,
    ) -> anyhow::Result<docker_driver::ResolvedLayer> {
        let resolved = self.job.driver.resolve(what, selector).await?;
        if let Some(platform) = &self.job.options.platform {
            plan::check_platform(what, &resolved.image, platform)?;
        }
        Ok(resolved)
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
        let (exported, result) = self.export_image(&info, image, &wanted).await;
        result.map(|()| exported)
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
        std::fs::create_dir_all(&self.job.options.outdir)
            .with_context(|| {
                format!(
                    "cannot create the output folder {}",
                    self.job.options.outdir.display()
                )
            })
            .map_err(|e| Kind::Output.tag(e))
    }

    /// Exports `wanted` layers of `image`: the route [`plan::choose_route`]
    /// picks first; when it gives way (and `--via` did not name it), the
    /// layers it did not write go by the next cheapest. Each route gives
    /// way at most once and is not chosen again. The layers written, and
    /// why the others were not.
    async fn export_image(
        &self,
        info: &DaemonInfo,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> (Vec<Exported>, anyhow::Result<()>) {
        let mut done: Vec<(layer_writer::WrittenLayer, Route, String)> = Vec::new();
        let result = self.take_routes(info, image, wanted, &mut done).await;
        (self.exported(image, done), result.map_err(route_failed))
    }

    async fn take_routes(
        &self,
        info: &DaemonInfo,
        image: &ImageDetails,
        wanted: &[Wanted],
        done: &mut Vec<(layer_writer::WrittenLayer, Route, String)>,
    ) -> anyhow::Result<()> {
        let via = self.job.options.via;
        let (access, store) = route::store::access(info, image);
        let source = Source {
            info,
            image,
            store: store.as_ref(),
        };
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
                    return Ok(());
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
                return Ok(());
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

/// A route's error is of kind [`Kind::RouteFailed`], unless it says more
/// precisely what failed (the output, a hash, a timeout, an interrupt).
fn route_failed(error: anyhow::Error) -> anyhow::Error {
    match Kind::of(&error) {
        Kind::Output | Kind::VerificationFailed | Kind::Timeout | Kind::Interrupted => error,
        _ => Kind::RouteFailed.tag(error),
    }
}

/// Seconds since `started`.
fn secs(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
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
