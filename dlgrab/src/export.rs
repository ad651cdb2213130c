//! The export flow: resolve each layer, get it out of the daemon by the
//! cheaper route, and hand it to the layer writer.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use docker_driver::{DaemonInfo, DockerDriver, ImageDetails, ImageStore, LayerSelector};
use futures::StreamExt;
use layer_writer::{Format, ImageContext, LayerWriter, SaveImage, WriterOptions};
use serde::Serialize;
use shim_registry::oci_spec::image::Digest;
use shim_registry::storage::{FsStorage, Storage};
use shim_registry::{ChannelSink, Registry, RegistryEvent};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cleanup::Cleanup;
use crate::cli::Via;
use crate::plan::{self, CapturePolicy, PushedManifest, Route};
use crate::report::Reporter;

/// What the user asked of this run.
#[derive(Debug, Clone)]
pub(crate) struct ExportOptions {
    pub(crate) outdir: PathBuf,
    pub(crate) format: Format,
    pub(crate) port: u16,
    pub(crate) via: Via,
    pub(crate) replace: bool,
}

/// One layer written, as `--json` reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Exported {
    pub(crate) image: String,
    pub(crate) index: usize,
    pub(crate) diff_id: String,
    pub(crate) id: String,
    pub(crate) route: &'static str,
    pub(crate) tar_size: u64,
    pub(crate) files: Vec<PathBuf>,
}

/// A layer to export: its index in the image and the ID the user typed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    index: usize,
    requested_id: Option<String>,
}

/// Runs exports against one daemon.
pub(crate) struct Exporter {
    driver: Arc<dyn DockerDriver>,
    cleanup: Arc<Cleanup>,
    reporter: Arc<Reporter>,
    options: ExportOptions,
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

    async fn export_image(
        &self,
        info: &DaemonInfo,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> anyhow::Result<Vec<Exported>> {
        let (route, why) = plan::choose_route(info, image, self.options.via);
        tracing::info!(image = %image.id, ?route, why, "route chosen");
        let written = match route {
            Route::Push => self.by_push(image, wanted).await?,
            Route::Save => self.by_save(info, image, wanted).await?,
        };
        Ok(written
            .into_iter()
            .map(|w| Exported {
                image: image.id.clone(),
                index: w.index,
                diff_id: w.diff_id.to_string(),
                id: w.id,
                route: match route {
                    Route::Push => "push",
                    Route::Save => "save",
                },
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
    fn context(
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
    fn name_layers(
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
            self.announce_folder(id);
            if self.options.format == Format::Seed {
                let folder = self.options.outdir.join(id);
                if folder.exists() && !self.options.replace {
                    return Err(output_already_there(&folder));
                }
            }
        }
        Ok(layer_ids)
    }

    /// The original's messages naming a layer and its folder.
    fn announce_folder(&self, id: &str) {
        self.reporter.message(format!("Full layer id found: {id}"));
        if self.options.format == Format::Seed {
            self.reporter.message(format!(
                "Layer folder will be dumped into {}",
                self.options.outdir.join(id).display()
            ));
        }
    }

    fn make_context(
        &self,
        image: &ImageDetails,
        layer_ids: Vec<String>,
        config_json: Vec<u8>,
        pushed: Option<(&PushedManifest, String, Bytes)>,
    ) -> ImageContext {
        let (repository, tag) = plan::registry_name(image);
        ImageContext {
            config_json,
            repo_tags: image.repo_tags.clone(),
            compressed: match &pushed {
                Some((m, _, _)) => m.layers.iter().cloned().map(Some).collect(),
                None => vec![None; image.diff_ids.len()],
            },
            layer_ids,
            manifest: pushed.map(|(_, media_type, body)| (media_type, body.to_vec())),
            repository,
            tag,
        }
    }

    fn writer(&self) -> LayerWriter {
        LayerWriter::new(
            &self.options.outdir,
            WriterOptions {
                format: self.options.format,
                replace: self.options.replace,
            },
        )
    }

    fn announce(&self, written: &layer_writer::WrittenLayer) {
        for file in &written.files {
            self.reporter.message(format!(
                "Writing file: {}",
                self.options.outdir.join(file).display()
            ));
        }
    }

    /// The push route: a survey push learns the layers' blob digests, a
    /// capture push uploads only the wanted ones.
    async fn by_push(
        &self,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> anyhow::Result<Vec<layer_writer::WrittenLayer>> {
        let scratch = scratch_dir(&self.options.outdir);
        self.cleanup.add_dir(scratch.clone());
        let storage =
            Arc::new(FsStorage::new(&scratch).with_context(|| {
                format!("cannot create the scratch folder {}", scratch.display())
            })?);
        let policy = Arc::new(CapturePolicy::new());
        let (sink, mut events) = ChannelSink::new();
        let registry = Registry::builder()
            .storage(storage.clone())
            .presence(policy.clone())
            .event_sink(Arc::new(sink))
            .build()
            .context("cannot set up the temporary registry")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.options.port));
        let handle = registry.spawn(addr).await.with_context(|| {
            format!("cannot start the temporary registry on {addr} (is the port taken?)")
        })?;
        let repo = format!(
            "127.0.0.1:{}/dlgrab-{}",
            handle.addr().port(),
            unique_suffix()
        );
        let tag = "export";
        let reference = format!("{repo}:{tag}");
        tracing::debug!(registry = %handle.url(), reference, "temporary registry up");

        self.cleanup.add_tag(&reference);
        let pushed = async {
            self.driver
                .tag(&image.id, &repo, tag)
                .await
                .context("cannot tag the image for the push")?;
            self.reporter
                .phase("survey push: learning the layers' blob digests");
            let (media_type, body) = self
                .push(&repo, tag, &mut events)
                .await
                .context("survey push")?
                .context(
                    "the survey push ended without a manifest reaching the temporary registry",
                )?;
            let survey = PushedManifest::parse(&media_type, &body)?;
            if survey.layers.len() != image.diff_ids.len() {
                bail!(
                    "the daemon pushed a manifest of {} layers for an image of {}",
                    survey.layers.len(),
                    image.diff_ids.len()
                );
            }
            let mut capture: Vec<Digest> = wanted
                .iter()
                .map(|w| survey.layers[w.index].digest.clone())
                .collect();
            capture.push(survey.config.digest.clone());
            policy.capture(capture);
            self.reporter
                .phase("capture push: uploading the wanted layers");
            // The containerd store finds the survey's manifest already there
            // and does not put it again: the survey's then stands.
            let captured = self
                .push(&repo, tag, &mut events)
                .await
                .context("capture push")?;
            Ok(captured.unwrap_or((media_type, body)))
        }
        .await;
        let untagged = self.cleanup.remove_tag(&reference).await;
        handle.shutdown().await;
        let (media_type, body) = pushed?;
        untagged.with_context(|| format!("cannot remove the temporary tag {reference}"))?;
        let manifest = PushedManifest::parse(&media_type, &body)?;

        let config_json = read_blob(storage.as_ref(), &manifest.config.digest).await?;
        let context = self.context(
            image,
            wanted,
            config_json,
            Some((&manifest, media_type, body)),
        )?;
        let writer = self.writer();
        let mut written = Vec::new();
        for w in wanted {
            let blob = &manifest.layers[w.index].digest;
            let reader = storage
                .open_blob(blob)
                .await
                .context("cannot read a captured layer")?
                .with_context(|| format!("the daemon did not upload layer {} ({blob})", w.index))?;
            self.reporter.phase(format!("writing layer {}", w.index));
            let layer = writer
                .write_layer(&context, w.index, reader)
                .await
                .with_context(|| format!("cannot write layer {}", w.index))?;
            self.announce(&layer);
            written.push(layer);
        }
        drop(storage);
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        Ok(written)
    }

    /// Pushes `repo:tag`, following the registry's events, and returns the
    /// manifest the daemon put, if it put one.
    async fn push(
        &self,
        repo: &str,
        tag: &str,
        events: &mut UnboundedReceiver<RegistryEvent>,
    ) -> anyhow::Result<Option<(String, Bytes)>> {
        let mut stream = self.driver.push(repo, tag);
        let mut manifest = None;
        let mut bars = HashMap::new();
        let mut on_event = |event: RegistryEvent| match event {
            RegistryEvent::ManifestPut {
                media_type,
                body,
                reference,
                ..
            } => {
                tracing::debug!(reference, media_type, "manifest put");
                manifest = Some((media_type, body));
            }
            RegistryEvent::UploadStarted { upload_id, .. } => {
                if let Some(bar) = self.reporter.bytes_bar("receiving blob", None) {
                    bars.insert(upload_id, bar);
                }
            }
            RegistryEvent::BytesReceived {
                upload_id, total, ..
            } => {
                if let Some(bar) = bars.get(&upload_id) {
                    bar.set_position(total);
                }
            }
            RegistryEvent::BlobCommitted { digest, size, .. } => {
                tracing::debug!(%digest, size, "blob received");
            }
            other => tracing::trace!(?other, "registry event"),
        };
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => break,
                    Some(Ok(event)) => tracing::debug!(?event, "push progress"),
                    Some(Err(e)) => return Err(e).context("the daemon's push failed"),
                },
                Some(event) = events.recv() => on_event(event),
            }
        }
        while let Ok(event) = events.try_recv() {
            on_event(event);
        }
        for bar in bars.values() {
            bar.finish_and_clear();
        }
        Ok(manifest)
    }

    /// The save route: the image config first (the folder names depend on
    /// it), then one pass over a `docker save` stream.
    async fn by_save(
        &self,
        info: &DaemonInfo,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> anyhow::Result<Vec<layer_writer::WrittenLayer>> {
        let stream = || {
            let stream = self.driver.export_images(std::slice::from_ref(&image.id));
            tokio_util::io::StreamReader::new(stream.map(|r| r.map_err(std::io::Error::other)))
        };
        let indexes: Vec<usize> = wanted.iter().map(|w| w.index).collect();
        let config_digest = match info.image_store {
            ImageStore::Classic { .. } => image.id.parse::<Digest>().ok(),
            ImageStore::Containerd => None,
        };
        let Some(config_digest) = config_digest else {
            // The image ID is not the config's digest (containerd store):
            // the config is looked up in a first stream.
            self.reporter.phase("reading the image config");
            let config_json = self
                .driver
                .image_config(&image.id)
                .await
                .context("cannot read the image config")?;
            let context = self.context(image, wanted, config_json, None)?;
            self.reporter
                .phase("reading the layers out of a docker save stream");
            let extract = self
                .writer()
                .write_from_save(&context, &indexes, stream())
                .await
                .map_err(save_error)?;
            for layer in &extract.layers {
                self.announce(layer);
            }
            return Ok(extract.layers);
        };

        // Classic store: the config digest is the image ID, so the config is
        // recognised in the one save stream read for the layers. Only the
        // top layer's v1 id needs it; history usually names that layer.
        let diff_ids = image
            .diff_ids
            .iter()
            .map(|d| d.parse::<Digest>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("image {} reports a malformed diff ID", image.id))?;
        let mut stable = layer_writer::v1_layer_ids_below_top(&diff_ids);
        stable.push(String::new());
        let layer_ids = self.name_layers(image, wanted, &stable)?;
        let unnamed: Vec<usize> = indexes
            .iter()
            .copied()
            .filter(|&i| layer_ids[i].is_empty())
            .collect();
        let save_image = SaveImage {
            context: self.make_context(image, layer_ids, Vec::new(), None),
            config_digest,
            diff_ids,
        };
        self.reporter
            .phase("reading the layers out of a docker save stream");
        let extract = self
            .writer()
            .write_from_save_reading_config(save_image, &indexes, stream())
            .await
            .map_err(save_error)?;
        for layer in &extract.layers {
            if unnamed.contains(&layer.index) {
                self.announce_folder(&layer.id);
            }
            self.announce(layer);
        }
        Ok(extract.layers)
    }
}

/// The user-facing error of a failed save-route extraction.
fn save_error(e: layer_writer::WriteError) -> anyhow::Error {
    match e {
        layer_writer::WriteError::TargetExists { path } => output_already_there(&path),
        e => anyhow::Error::new(e).context("cannot export from the docker save stream"),
    }
}

/// The error for an output that exists, when replacing it was not asked.
fn output_already_there(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "output already there: {} (use --force to replace it)",
        path.display()
    )
}

/// Reads a small blob (the image config) whole, checking its digest.
async fn read_blob(storage: &dyn Storage, digest: &Digest) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut reader = storage
        .open_blob(digest)
        .await
        .context("cannot read the image config")?
        .with_context(|| format!("the daemon did not upload the image config {digest}"))?;
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .await
        .context("cannot read the image config")?;
    Ok(bytes)
}

/// A scratch folder inside the output folder (same file system: the layer
/// writer's renames stay cheap), removed when the run ends.
fn scratch_dir(outdir: &Path) -> PathBuf {
    outdir.join(format!(".dlgrab-scratch-{}", unique_suffix()))
}

/// A suffix unique to this process and moment.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:08x}", std::process::id(), nanos)
}

#[cfg(test)]
mod tests;
