//! The push route: the daemon pushes the image into a temporary registry
//! on 127.0.0.1, twice: a survey push learns each layer's blob digest
//! without any layer data crossing, a capture push uploads only the wanted
//! layers (and the config).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use docker_driver::ImageDetails;
use futures::StreamExt;
use shim_registry::oci_spec::image::Digest;
use shim_registry::storage::{FsStorage, Storage};
use shim_registry::{ChannelSink, Registry, RegistryEvent};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::export::{Exporter, Wanted, output_already_there};
use crate::plan::{CapturePolicy, PushedManifest};

impl Exporter {
    /// The push route: a survey push learns the layers' blob digests, a
    /// capture push uploads only the wanted ones.
    pub(crate) async fn by_push(
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
                .map_err(|e| match e {
                    layer_writer::WriteError::TargetExists { path } => output_already_there(&path),
                    e => anyhow::Error::new(e).context(format!("cannot write layer {}", w.index)),
                })?;
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
