//! The save route: one `docker save` stream, read through once, keeping
//! only the wanted layers (and, on a classic store, the config met on the
//! way).

use anyhow::Context;
use docker_driver::{DaemonInfo, ImageDetails, ImageStore};
use futures::StreamExt;
use layer_writer::SaveImage;
use shim_registry::oci_spec::image::Digest;

use super::{Job, Source, output_already_there};
use crate::plan::Wanted;

/// The save route: the image config first (the folder names depend on
/// it), then one pass over a `docker save` stream. It never gives way.
pub(crate) async fn run(
    job: &Job,
    source: &Source<'_>,
    wanted: &[Wanted],
) -> anyhow::Result<Vec<layer_writer::WrittenLayer>> {
    job.by_save(source.info, source.image, wanted).await
}

impl Job {
    async fn by_save(
        &self,
        info: &DaemonInfo,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> anyhow::Result<Vec<layer_writer::WrittenLayer>> {
        // The stream is about the image's size: its layers' sizes as the
        // daemon reports them (the total grows if more comes).
        let size: u64 = image
            .history
            .iter()
            .map(|row| u64::try_from(row.size).unwrap_or(0))
            .sum();
        let stream = || {
            let progress = self
                .reporter
                .progress("docker save stream", (size > 0).then_some(size));
            let stream = self.driver.export_images(std::slice::from_ref(&image.id));
            tokio_util::io::StreamReader::new(stream.map(move |r| {
                if let Ok(chunk) = &r {
                    progress.inc(chunk.len() as u64);
                }
                r.map_err(std::io::Error::other)
            }))
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
            let config = self
                .driver
                .image_config(&image.id)
                .await
                .context("cannot read the image config")?;
            let mut context = self.context(image, wanted, config.bytes, None)?;
            // The index the image ID names: a loaded folder comes back
            // under that ID.
            context.index = config
                .index
                .map(|bytes| (layer_writer::manifest::media_type_of(&bytes), bytes));
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
