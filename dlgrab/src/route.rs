//! The seam between the export flow and the ways a layer leaves the daemon.
//!
//! [`crate::plan::choose_route`] picks a [`Route`] by expected cost; [`run`]
//! takes it, one module per route, each given the same [`Job`] (the daemon,
//! the writer's options, the run's cleanup and reporter), the same
//! [`Source`] (the image and what is known of its daemon) and the layers
//! still wanted, and each returning one [`Outcome`]: written, or given way
//! to another route with the layers it did write. No route calls another
//! or back into the flow that runs it.
//!
//! - [`push`]: the daemon pushes into a temporary registry on 127.0.0.1; a
//!   survey push learns the blob digests, a capture push uploads only the
//!   wanted layers. Cheap where the daemon asks before uploading.
//! - [`save`]: one `docker save` stream, read once, keeping the wanted
//!   layers. Costs the image up to the last wanted layer; never gives way.
//! - [`store`]: the layer read from the daemon's storage on disk (a classic
//!   store's layer rebuilt from its files, a containerd store's blob as
//!   stored), read-only. Costs that layer only; needs a readable data root
//!   (or `--data-root`, offline).
//! - [`archive`]: the store route's reassembly with the classic layer store
//!   read through the Engine API (a container, never started, that mounts
//!   the data root): that layer's cost for any user the daemon serves,
//!   local or remote.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use docker_driver::manifest::Platform;
use docker_driver::{DaemonInfo, DockerDriver, ImageDetails};
use layer_writer::manifest::ManifestBlobs;
use layer_writer::{Format, ImageContext, LayerWriter, WriterOptions, WrittenLayer};

use crate::cleanup::Cleanup;
use crate::plan::{self, GaveWay, Route, Via, Wanted};
use crate::report::{self, Progress, Reporter};

pub(crate) mod archive;
pub(crate) mod push;
pub(crate) mod save;
pub(crate) mod store;

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

/// The image a route reads, and what is known of its daemon.
pub(crate) struct Source<'a> {
    pub(crate) info: &'a DaemonInfo,
    pub(crate) image: &'a ImageDetails,
    /// The daemon's storage, where this process can read it.
    pub(crate) store: Option<&'a store::Store>,
}

/// What a route did with the wanted layers of one image.
pub(crate) enum Outcome {
    /// Every wanted layer is written.
    Written(Vec<WrittenLayer>),
    /// The route gave way: the layers it wrote, why another route may take
    /// the others, and the error to report should none be allowed to
    /// (`--via` named this route).
    GaveWay {
        written: Vec<WrittenLayer>,
        because: GaveWay,
        error: anyhow::Error,
    },
}

/// A route that stopped part-way: the layers it wrote, and whether another
/// route may take the others (its input was at fault, not the output).
pub(crate) struct Failure {
    pub(crate) written: Vec<WrittenLayer>,
    pub(crate) error: anyhow::Error,
    pub(crate) retry: bool,
}

impl Failure {
    /// The route's outcome: given way (`because` says why, from the error)
    /// when another route may retry, else the error.
    pub(crate) fn into_outcome(
        self,
        because: impl FnOnce(String) -> GaveWay,
    ) -> anyhow::Result<Outcome> {
        if !self.retry {
            return Err(self.error);
        }
        Ok(Outcome::GaveWay {
            written: self.written,
            because: because(format!("{:#}", self.error)),
            error: self.error,
        })
    }
}

/// Takes `route` for the `wanted` layers of `source`.
pub(crate) async fn run(
    route: Route,
    job: &Job,
    source: &Source<'_>,
    wanted: &[Wanted],
) -> anyhow::Result<Outcome> {
    match route {
        Route::Store => store::run(job, source, wanted).await,
        Route::Archive => archive::run(job, source, wanted).await,
        Route::Push => push::run(job, source, wanted).await,
        Route::Save => save::run(job, source, wanted).await.map(Outcome::Written),
    }
}

/// What every route needs: the daemon, the user's options, the run's
/// cleanup (temporary tags and folders, layers written) and its reporter.
pub(crate) struct Job {
    pub(crate) driver: Arc<dyn DockerDriver>,
    pub(crate) cleanup: Arc<Cleanup>,
    pub(crate) reporter: Arc<Reporter>,
    pub(crate) options: ExportOptions,
}

impl Job {
    /// The writer's view of `image`, once its config is known; announces
    /// each wanted layer's folder and refuses to overwrite one unasked.
    pub(crate) fn context(
        &self,
        image: &ImageDetails,
        wanted: &[Wanted],
        config_json: Vec<u8>,
        pushed: Option<(&ManifestBlobs, String, Bytes)>,
    ) -> anyhow::Result<ImageContext> {
        let stable =
            layer_writer::v1_layer_ids(&config_json).context("cannot read the image config")?;
        let layer_ids = self.name_layers(image, wanted, &stable)?;
        Ok(self.make_context(image, layer_ids, config_json, pushed))
    }

    /// The folder name of each layer (see [`plan::layer_ids`]); announces
    /// each wanted layer's folder. A layer left unnamed by `stable` (an
    /// empty id) is announced later.
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

    /// The layer folder chosen, for `--debug` (the line saying what was
    /// written comes when it is).
    pub(crate) fn announce_folder(&self, id: &str) {
        tracing::debug!(
            folder = %self.options.outdir.join(id).display(),
            "full layer id found: {id}"
        );
    }

    /// The bytes of layer `index` of `image` as they are read, against its
    /// size as the daemon reports it.
    pub(crate) fn layer_progress(&self, image: &ImageDetails, index: usize) -> Progress {
        let size = image
            .history
            .iter()
            .find(|row| row.layer_index == Some(index))
            .and_then(|row| u64::try_from(row.size).ok())
            .filter(|&size| size > 0);
        self.reporter.progress(format!("layer {index}"), size)
    }

    /// The writer's view of `image` with the folder names already chosen.
    pub(crate) fn make_context(
        &self,
        image: &ImageDetails,
        layer_ids: Vec<String>,
        config_json: Vec<u8>,
        pushed: Option<(&ManifestBlobs, String, Bytes)>,
    ) -> ImageContext {
        let (repository, tag) = plan::registry_name(image);
        ImageContext {
            config_json,
            // As `docker save` writes them, whatever the engine lists.
            repo_tags: crate::temp_names::user_tags(&image.repo_tags)
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

    /// Writes layer `index` of `context` from `read`, its bytes counted by
    /// `progress`, and says so when it is written.
    pub(crate) async fn write_counted<R: std::io::Read + Send + 'static>(
        &self,
        writer: &LayerWriter,
        context: &ImageContext,
        index: usize,
        read: R,
        progress: Progress,
    ) -> Result<WrittenLayer, layer_writer::WriteError> {
        let read = progress.counting(read);
        let result = writer.write_layer_from_read(context, index, read).await;
        progress.finish();
        if let Ok(layer) = &result {
            self.announce(layer);
        }
        result
    }

    /// Says in one line what was written (or kept: the same layer was
    /// already there) and records it for the interrupt message.
    pub(crate) fn announce(&self, written: &WrittenLayer) {
        let file = written
            .files
            .iter()
            .find(|f| f.ends_with("layer.tar"))
            .or(written.files.last())
            .map_or(Path::new(""), |f| f.as_path());
        let path = self.options.outdir.join(file);
        let diff_id = written.diff_id.to_string();
        let short = diff_id.get(..19).unwrap_or(&diff_id);
        if written.already_there {
            self.reporter.message(format!(
                "Layer {} ({short}) already there, kept: {} (the same layer)",
                written.index,
                path.display()
            ));
            return;
        }
        self.cleanup.add_written(&written.id);
        self.reporter.message(format!(
            "Layer {} ({short}, {}): {}",
            written.index,
            report::bytes(written.tar_size),
            path.display()
        ));
    }
}

/// The error for an output that exists, when replacing it was not asked.
pub(crate) fn output_already_there(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "output already there and not this layer: {} (use --force to replace it)",
        path.display()
    )
}
