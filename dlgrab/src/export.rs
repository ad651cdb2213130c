//! The export flow: resolve each layer, get it out of the daemon by the
//! cheapest route (see [`crate::route`]), and hand it to the layer writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use docker_driver::manifest::Platform;
use docker_driver::{DaemonInfo, DockerDriver, ImageDetails, LayerSelector};
use layer_writer::{Format, ImageContext, LayerWriter, WriterOptions};
use serde::Serialize;

use crate::cleanup::Cleanup;
use crate::cli::Via;
use crate::plan::{self, PushedManifest, Route, StoreAccess};
use crate::report::Reporter;
use crate::route;

/// What the user asked of this run.
#[derive(Debug, Clone)]
pub(crate) struct ExportOptions {
    pub(crate) outdir: PathBuf,
    pub(crate) format: Format,
    pub(crate) port: u16,
    pub(crate) via: Via,
    pub(crate) replace: bool,
    /// `--platform`: every image exported must be of it.
    pub(crate) platform: Option<Platform>,
}

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

/// A layer to export: its index in the image and the ID the user typed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) index: usize,
    pub(crate) requested_id: Option<String>,
}

/// Runs exports against one daemon.
pub(crate) struct Exporter {
    pub(crate) driver: Arc<dyn DockerDriver>,
    pub(crate) cleanup: Arc<Cleanup>,
    pub(crate) reporter: Arc<Reporter>,
    pub(crate) options: ExportOptions,
}

impl Exporter {
    pub(crate) fn new(
        driver: Arc<dyn DockerDriver>,
        cleanup: Arc<Cleanup>,
        reporter: Arc<Reporter>,
        options: ExportOptions,
    ) -> Self {
        Self {
            driver,
            cleanup,
            reporter,
            options,
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
            let resolved = self.driver.resolve(what, selector.clone()).await?;
            if let Some(platform) = &self.options.platform {
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
            .driver
            .info()
            .await
            .context("cannot talk to the Docker daemon")?;
        tracing::debug!(?info, "daemon");
        Ok(info)
    }

    /// Makes the output folder, once the layers are known to exist.
    fn make_outdir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.options.outdir).with_context(|| {
            format!(
                "cannot create the output folder {}",
                self.options.outdir.display()
            )
        })
    }

    /// Exports `wanted` layers of `image` by the route [`plan::choose_route`]
    /// picks; when the store route fails on its own input (a file missing
    /// or changed, a diff-ID mismatch) and was not forced, the layers it
    /// did not write go by the next cheapest route.
    async fn export_image(
        &self,
        info: &DaemonInfo,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> anyhow::Result<Vec<Exported>> {
        let (access, store) = route::store::access(info, image);
        let (route, why) = plan::choose_route(info, image, self.options.via, &access, None)?;
        // The push can be dropped once the wanted layers are in only when
        // the config comes from elsewhere: a classic daemon sends it last.
        let config_at_hand = match (&store, route) {
            (Some(route::store::Store::Layers(store)), Route::Push) => {
                store.image_config(&image.id).ok()
            }
            _ => None,
        };
        tracing::info!(image = %image.id, route = route.name(), why, "route chosen");
        let mut done: Vec<(layer_writer::WrittenLayer, Route, String)> = Vec::new();
        let mut store_failed = None;
        let left: Vec<Wanted> = match (route, store) {
            (Route::Store, Some(store)) => match self.by_store(&store, image, wanted).await {
                Ok(written) => {
                    done.extend(written.into_iter().map(|w| (w, route, why.clone())));
                    Vec::new()
                }
                Err(failure) if failure.retry && self.options.via != Via::Store => {
                    let error = format!("{:#}", failure.error);
                    tracing::debug!(image = %image.id, error, "the store route failed; taking another");
                    store_failed = Some(error);
                    let written: Vec<usize> = failure.written.iter().map(|w| w.index).collect();
                    done.extend(failure.written.into_iter().map(|w| (w, route, why.clone())));
                    wanted
                        .iter()
                        .filter(|w| !written.contains(&w.index))
                        .cloned()
                        .collect()
                }
                Err(failure) => return Err(failure.error),
            },
            _ => wanted.to_vec(),
        };
        if !left.is_empty() {
            let (route, why) = if done.is_empty() && route != Route::Store {
                (route, why)
            } else {
                let failed = StoreAccess::Unavailable("the store route failed".into());
                let (route, why) = plan::choose_route(info, image, Via::Auto, &failed, None)?;
                tracing::info!(image = %image.id, route = route.name(), why, "fallback route chosen");
                (route, why)
            };
            let (route, why, written) = match route {
                Route::Push => match self.by_push(info, image, &left, config_at_hand).await {
                    Err(e) if e.downcast_ref::<route::push::GaveUp>().is_some() => {
                        let survey = e
                            .downcast_ref::<route::push::GaveUp>()
                            .map(|g| g.0.clone())
                            .unwrap_or_default();
                        let (route, why) =
                            plan::choose_route(info, image, Via::Auto, &access, Some(&survey))?;
                        tracing::info!(image = %image.id, route = route.name(), why, "route chosen after the survey");
                        let written = match route {
                            Route::Save => self.by_save(info, image, &left).await,
                            _ => Err(e),
                        };
                        (route, why, written)
                    }
                    Err(e)
                        if self.options.via == Via::Auto
                            && e.downcast_ref::<route::push::Refused>().is_some() =>
                    {
                        let refused = e
                            .downcast_ref::<route::push::Refused>()
                            .map(|r| r.0.clone())
                            .unwrap_or_default();
                        let why = format!(
                            "the daemon's push to dlgrab's registry failed ({refused}): docker save reads the layers instead"
                        );
                        tracing::info!(image = %image.id, why, "route chosen after the push failed");
                        (Route::Save, why, self.by_save(info, image, &left).await)
                    }
                    written => (route, why, written),
                },
                Route::Save => (route, why, self.by_save(info, image, &left).await),
                Route::Store => (
                    route,
                    why,
                    Err(anyhow::anyhow!(
                        "the store route cannot be taken for image {}",
                        image.id
                    )),
                ),
            };
            let written = match (written, store_failed) {
                (Ok(written), _) => written,
                (Err(e), None) => return Err(e),
                (Err(e), Some(store)) => {
                    return Err(e.context(format!(
                        "the {} route taken after the store route failed ({store})",
                        route.name()
                    )));
                }
            };
            done.extend(written.into_iter().map(|w| (w, route, why.clone())));
        }
        Ok(done
            .into_iter()
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
                    .map(|f| self.options.outdir.join(f))
                    .collect(),
            })
            .collect())
    }

    /// The writer's view of `image`, once its config is known; announces
    /// each wanted layer's folder and refuses to overwrite one unasked.
    pub(crate) fn context(
        &self,
        image: &ImageDetails,
        wanted: &[Wanted],
        config_json: Vec<u8>,
        pushed: Option<(&PushedManifest, String, Bytes)>,
    ) -> anyhow::Result<ImageContext> {
        let stable =
            layer_writer::v1_layer_ids(&config_json).context("cannot read the image config")?;
        let layer_ids = self.name_layers(image, wanted, &stable)?;
        Ok(self.make_context(image, layer_ids, config_json, pushed))
    }

    /// The folder name of each layer (see [`plan::layer_ids`]); announces
    /// each wanted layer's folder and refuses to overwrite one unasked. A
    /// layer left unnamed by `stable` (an empty id) is announced later.
    pub(crate) fn name_layers(
        &self,
        image: &ImageDetails,
        wanted: &[Wanted],
        stable: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let requested = wanted
            .iter()
            .find_map(|w| w.requested_id.as_deref().map(|id| (w.index, id)));
        let layer_ids = plan::layer_ids(image, stable, requested)?;
        for w in wanted {
            let id = &layer_ids[w.index];
            if id.is_empty() {
                continue;
            }
            // A folder already there is kept when it holds this very layer
            // (the writer hashes it), refused otherwise unless --force.
            self.announce_folder(id);
        }
        Ok(layer_ids)
    }

    /// The original's messages naming a layer and its folder.
    pub(crate) fn announce_folder(&self, id: &str) {
        self.reporter.message(format!("Full layer id found: {id}"));
        if self.options.format == Format::Seed {
            self.reporter.message(format!(
                "Layer folder will be dumped into {}",
                self.options.outdir.join(id).display()
            ));
        }
    }

    pub(crate) fn make_context(
        &self,
        image: &ImageDetails,
        layer_ids: Vec<String>,
        config_json: Vec<u8>,
        pushed: Option<(&PushedManifest, String, Bytes)>,
    ) -> ImageContext {
        let (repository, tag) = plan::registry_name(image);
        ImageContext {
            config_json,
            // As `docker save` writes them, whatever the engine lists.
            repo_tags: crate::sweep::user_tags(&image.repo_tags)
                .iter()
                .map(|t| docker_driver::familiar_tag(t))
                .collect(),
            compressed: match &pushed {
                Some((m, _, _)) => m.layers.iter().cloned().map(Some).collect(),
                None => vec![None; image.diff_ids.len()],
            },
            layer_ids,
            manifest: pushed.map(|(_, media_type, body)| (media_type, body.to_vec())),
            index: None,
            repository,
            tag,
        }
    }

    pub(crate) fn writer(&self) -> LayerWriter {
        LayerWriter::new(
            &self.options.outdir,
            WriterOptions {
                format: self.options.format,
                replace: self.options.replace,
            },
        )
    }

    pub(crate) fn announce(&self, written: &layer_writer::WrittenLayer) {
        if written.already_there {
            self.reporter.message(format!(
                "Already there, kept: {} (the same layer)",
                self.options
                    .outdir
                    .join(written.files.last().map_or(Path::new(""), |f| f.as_path()))
                    .display()
            ));
            return;
        }
        self.cleanup.add_written(&written.id);
        for file in &written.files {
            self.reporter.message(format!(
                "Writing file: {}",
                self.options.outdir.join(file).display()
            ));
        }
    }
}

/// The error for an output that exists, when replacing it was not asked.
pub(crate) fn output_already_there(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "output already there and not this layer: {} (use --force to replace it)",
        path.display()
    )
}

#[cfg(test)]
mod tests;
