//! The store route: each wanted layer read from the daemon's own storage on
//! disk. On a classic store its exact tar is rebuilt from the layer store
//! under the data root (`docker_driver::LayerStore`), as Docker itself does
//! for save and push; on the containerd store its blob is read as stored
//! from containerd's content store (`docker_driver::ContentStore`), with the
//! index, manifest and config the image ID leads to. Either way the layer
//! writer verifies it (the diff ID; a stored blob also its digest). Only
//! files are read; nothing under the data root is written. Also the only
//! route of `--data-root` (no daemon).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use docker_driver::manifest::Platform;
use docker_driver::{
    ContainersStorage, ContentStore, DaemonInfo, DataRootDriver, DataRootError, DockerDriver,
    ImageDetails, ImageDocuments, ImageStore, LayerStore, LayerTar,
};
use layer_writer::manifest::{ManifestBlobs, digest_of};
use layer_writer::{ImageContext, WriteError, WrittenLayer};

use super::{Failure, Job, Outcome, Source, output_already_there};
use crate::plan::{GaveWay, StoreAccess, Wanted};

/// The daemon's storage, read from disk.
pub(crate) enum Store {
    /// A classic store's layer store.
    Layers(LayerStore),
    /// The containerd store's content store.
    Content(ContentStore),
    /// Podman's containers/storage.
    Containers(ContainersStorage),
}

/// A store that keeps each layer as its files and its tar-split, from
/// which its exact tar is rebuilt: Docker's classic layer store and
/// Podman's containers/storage.
trait SplitStore {
    /// What the store is called in messages.
    const NAME: &'static str;
    /// The image config stored for the image ID, checked against it.
    fn image_config(&self, image_id: &str) -> Result<Vec<u8>, DataRootError>;
    /// The exact tar of the last of `diff_ids`.
    fn layer_tar(&self, diff_ids: &[String]) -> Result<LayerTar, DataRootError>;
}

impl SplitStore for LayerStore {
    const NAME: &'static str = "the layer store";
    fn image_config(&self, image_id: &str) -> Result<Vec<u8>, DataRootError> {
        LayerStore::image_config(self, image_id)
    }
    fn layer_tar(&self, diff_ids: &[String]) -> Result<LayerTar, DataRootError> {
        LayerStore::layer_tar(self, diff_ids)
    }
}

impl SplitStore for ContainersStorage {
    const NAME: &'static str = "Podman's store";
    fn image_config(&self, image_id: &str) -> Result<Vec<u8>, DataRootError> {
        ContainersStorage::image_config(self, image_id)
    }
    fn layer_tar(&self, diff_ids: &[String]) -> Result<LayerTar, DataRootError> {
        ContainersStorage::layer_tar(self, diff_ids)
    }
}

/// Whether the daemon's storage can be read for `image`, and the store
/// when it can.
pub(crate) fn access(info: &DaemonInfo, image: &ImageDetails) -> (StoreAccess, Option<Store>) {
    let unavailable = |why: String| (StoreAccess::Unavailable(why), None);
    if let Some(host) = &info.elsewhere {
        return unavailable(format!("the daemon at {host} runs on another machine"));
    }
    let Some(root) = &info.root_dir else {
        return unavailable("the daemon reports no data root".into());
    };
    let opened = match &info.image_store {
        ImageStore::Containerd => ContentStore::open(root, &image.id).map(Store::Content),
        ImageStore::Classic { driver } if info.podman => {
            ContainersStorage::open(root, driver).map(Store::Containers)
        }
        ImageStore::Classic { driver } => LayerStore::open(root, driver).map(Store::Layers),
    };
    match opened {
        Ok(store) => (StoreAccess::Readable, Some(store)),
        Err(e) => unavailable(format!("{:#}", anyhow::Error::new(e))),
    }
}

/// The driver of `--data-root DIR`: the data root's images, no daemon.
pub(crate) fn offline_driver(root: &Path) -> anyhow::Result<Arc<dyn DockerDriver>> {
    let driver = DataRootDriver::open(root)
        .with_context(|| format!("cannot read the Docker data root {}", root.display()))?;
    tracing::debug!(root = %root.display(), driver = driver.store().driver(), "exporting from a data root, without a daemon");
    Ok(Arc::new(driver))
}

/// The store route, from whichever store the daemon keeps: gives way when
/// the store itself fails (a file missing or changed, a diff-ID mismatch),
/// with the layers written before.
pub(crate) async fn run(
    job: &Job,
    source: &Source<'_>,
    wanted: &[Wanted],
) -> anyhow::Result<Outcome> {
    let image = source.image;
    let written = match source.store {
        Some(Store::Layers(layers)) => job.by_layer_store(layers, image, wanted).await,
        Some(Store::Containers(podman)) => job.by_layer_store(podman, image, wanted).await,
        Some(Store::Content(content)) => job.by_content_store(content, image, wanted).await,
        None => anyhow::bail!("the daemon's storage of image {} cannot be read", image.id),
    };
    match written {
        Ok(written) => Ok(Outcome::Written(written)),
        Err(failure) => failure.into_outcome(GaveWay::Store),
    }
}

impl Job {
    /// The containerd store's route: the index, manifest and config the
    /// image ID leads to, then each wanted layer's blob as stored, written
    /// as a pushed one (a seed folder keeps it beside the tar, an OCI
    /// layout as is, and `index.json` names the image's own index).
    async fn by_content_store(
        &self,
        store: &ContentStore,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> Result<Vec<WrittenLayer>, Failure> {
        let mut written = Vec::new();
        let platform = Platform::new(&image.os, &image.architecture, image.variant.as_deref());
        let docs = store
            .image_documents(&image.id, &platform)
            .map_err(|e| Failure {
                written: Vec::new(),
                error: anyhow::Error::new(e).context("cannot read the image's manifest"),
                retry: true,
            })?;
        let (manifest, context) = self.content_context(image, wanted, docs)?;
        let writer = self.writer();
        for w in wanted {
            let Some(layer) = manifest.layers.get(w.index) else {
                return Err(no_such_layer(
                    written,
                    image,
                    manifest.layers.len(),
                    w.index,
                ));
            };
            let digest = layer.digest.to_string();
            let file = match store.open_blob(&digest) {
                Ok(file) => file,
                Err(e) => {
                    return Err(Failure {
                        written,
                        error: anyhow::Error::new(e).context(format!(
                            "cannot open layer {} in the content store",
                            w.index
                        )),
                        retry: true,
                    });
                }
            };
            self.reporter
                .phase(format!("reading layer {} from the content store", w.index));
            // The blob as stored: its size is the manifest's.
            let progress = self
                .reporter
                .progress(format!("layer {}", w.index), Some(layer.size));
            match self
                .write_counted(&writer, &context, w.index, file, progress)
                .await
            {
                Ok(layer) => written.push(layer),
                Err(e) => return Err(write_failure(written, e, w.index, "the content store")),
            }
        }
        Ok(written)
    }

    /// The stored manifest's layers and the writer's view of `image` from
    /// the documents its ID leads to in a content store: layers are
    /// written as pushed ones (a seed folder keeps the blob beside the tar,
    /// an OCI layout as is, and `index.json` names the image's own index).
    pub(crate) fn content_context(
        &self,
        image: &ImageDetails,
        wanted: &[Wanted],
        docs: ImageDocuments,
    ) -> Result<(ManifestBlobs, ImageContext), Failure> {
        let retry = |error: anyhow::Error| Failure {
            written: Vec::new(),
            error,
            retry: true,
        };
        let (media_type, body) = docs.manifest;
        let manifest = ManifestBlobs::parse(&media_type, &body)
            .context("cannot read the stored manifest")
            .map_err(retry)?;
        if manifest.layers.len() != image.diff_ids.len() {
            return Err(retry(anyhow::anyhow!(
                "the stored manifest names {} layers, the image has {}",
                manifest.layers.len(),
                image.diff_ids.len()
            )));
        }
        let mut context = self
            .context(
                image,
                wanted,
                docs.config,
                Some((&manifest, media_type, Bytes::from(body))),
            )
            .map_err(|error| Failure {
                written: Vec::new(),
                error,
                retry: false,
            })?;
        context.index = docs
            .index
            .filter(|(_, bytes)| digest_of(bytes).to_string() == image.id);
        Ok((manifest, context))
    }

    /// The route of a store of files and tar-splits (Docker's classic
    /// store, Podman's): the config from the image database, then each
    /// wanted layer rebuilt from the store and written.
    async fn by_layer_store<S: SplitStore>(
        &self,
        store: &S,
        image: &ImageDetails,
        wanted: &[Wanted],
    ) -> Result<Vec<WrittenLayer>, Failure> {
        let mut written = Vec::new();
        let config_json = match store.image_config(&image.id) {
            Ok(config) => config,
            Err(e) => {
                return Err(Failure {
                    written,
                    error: anyhow::Error::new(e).context("cannot read the image config"),
                    retry: true,
                });
            }
        };
        let context = match self.context(image, wanted, config_json, None) {
            Ok(context) => context,
            Err(error) => {
                return Err(Failure {
                    written,
                    error,
                    retry: false,
                });
            }
        };
        let writer = self.writer();
        for w in wanted {
            let Some(diff_ids) = image.diff_ids.get(..=w.index) else {
                return Err(no_such_layer(written, image, image.diff_ids.len(), w.index));
            };
            let tar = match store.layer_tar(diff_ids) {
                Ok(tar) => tar,
                Err(e) => {
                    return Err(Failure {
                        written,
                        error: anyhow::Error::new(e).context(format!(
                            "cannot open layer {} in {}",
                            w.index,
                            S::NAME
                        )),
                        retry: true,
                    });
                }
            };
            self.reporter
                .phase(format!("rebuilding layer {} from {}", w.index, S::NAME));
            let progress = self.layer_progress(image, w.index);
            match self
                .write_counted(&writer, &context, w.index, tar, progress)
                .await
            {
                Ok(layer) => written.push(layer),
                Err(e) => return Err(write_failure(written, e, w.index, S::NAME)),
            }
        }
        Ok(written)
    }
}

/// A wanted index beyond the image's `count` layers: a caller's mistake,
/// which no other route would mend.
pub(crate) fn no_such_layer(
    written: Vec<WrittenLayer>,
    image: &ImageDetails,
    count: usize,
    index: usize,
) -> Failure {
    Failure {
        written,
        error: anyhow::anyhow!("image {} has {count} layers, not a layer {index}", image.id),
        retry: false,
    }
}

/// A write that failed: another route may retry when the store's input was
/// at fault (a mismatch, a read or decompression error), not the output.
pub(crate) fn write_failure(
    written: Vec<WrittenLayer>,
    e: WriteError,
    index: usize,
    from: &str,
) -> Failure {
    let retry = matches!(
        e,
        WriteError::DiffIdMismatch { .. }
            | WriteError::BlobDigestMismatch { .. }
            | WriteError::Read(_)
            | WriteError::Decompress(_)
            | WriteError::UnknownCompression
    );
    let error = match e {
        WriteError::TargetExists { path } => output_already_there(&path),
        e => anyhow::Error::new(e).context(format!("cannot write layer {index} from {from}")),
    };
    Failure {
        written,
        error,
        retry,
    }
}
