//! The archive route: the store route's reassembly with the layer store
//! read through the Engine API, for anyone the daemon serves (a `docker`
//! group member, a remote daemon over `ssh://` or `tcp://`). On Podman the
//! same is done with containers/storage (`<driver>-images`,
//! `<driver>-layers`: `layers.json` and the tar-splits, the layer
//! folders), which Podman's compat API mounts for its archive API too.
//!
//! A container is created (never started, no network, dlgrab's label, a
//! name carrying the run's ID) from the image being exported, with the
//! data root's image database and layer folders bind-mounted read-only.
//! The daemon mounts a stopped container's volumes for its archive API
//! (`docker cp CONTAINER:PATH -`), so the image config
//! (`imagedb/content/sha256/<id>`), each wanted layer's record
//! (`layerdb/sha256/<chain id>/`: diff ID, cache ID, tar-split) and its
//! folder come out as tars, and `docker_driver::ArchivedLayerTar` rebuilds
//! the layer's exact tar from them, verified against the diff ID by the
//! writer. The container is removed when the route ends, and by the run's
//! cleanup or the next run's sweep otherwise.
//!
//! This reads nothing the `docker` group cannot already read: any member
//! may run a container that mounts `/`. Where the daemon refuses (an
//! authorization plugin, user-namespace remapping, a mount it does not
//! allow), the route gives way to the next one with the daemon's message.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use docker_driver::containers_storage::{self, PodmanLayout};
use docker_driver::layer_store::chain_id;
use docker_driver::manifest::Platform;
use docker_driver::{
    ArchivedBlob, ArchivedLayerTar, ContentStore, DataRootError, ImageDetails, ImageDocuments,
    ImageStore, LayerRecord, ReaderContainer, StoreLayout, blob_from_tar, config_from_tar,
    read_image_documents,
};
use futures::TryStreamExt;
use layer_writer::WrittenLayer;

use super::store::{no_such_layer, write_failure};
use super::{Failure, Job, Outcome, Source};
use crate::plan::{GaveWay, Wanted};
use crate::read_ahead::ReadAhead;
use crate::temp_names;

/// Where the container sees the image and layer databases.
const IMAGE_DIR: &str = "/dlgrab-image";
/// Where the container sees the graph driver's layer folders.
const FILES_DIR: &str = "/dlgrab-layers";
/// Where the container sees Podman's layer database (`<driver>-layers`).
const LAYERS_DIR: &str = "/dlgrab-layerdb";
/// The most bytes read whole from one small archive (a layer's record: its
/// tar-split grows with the layer's file count; an image config).
const SMALL_ARCHIVE: usize = 512 << 20;

/// Where the container sees containerd's content store (its blobs).
const BLOBS_DIR: &str = "/dlgrab-blobs";

/// The archive route; gives way when the daemon refuses the container or
/// the archive, or the files read do not rebuild the layer.
pub(crate) async fn run(
    job: &Job,
    source: &Source<'_>,
    wanted: &[Wanted],
) -> anyhow::Result<Outcome> {
    let Some(root) = &source.info.root_dir else {
        anyhow::bail!("the daemon reports no data root");
    };
    let result = match &source.info.image_store {
        ImageStore::Classic { driver } => {
            let (layout, binds) = if source.info.podman {
                let layout = PodmanLayout::new(driver)?;
                let binds = vec![
                    (root.join(layout.images_dir()), IMAGE_DIR.to_owned()),
                    (root.join(layout.layers_dir()), LAYERS_DIR.to_owned()),
                    (root.join(layout.files_dir()), FILES_DIR.to_owned()),
                ];
                (Layout::Podman(layout), binds)
            } else {
                let layout = StoreLayout::new(driver)?;
                let binds = vec![
                    (root.join(layout.image_dir()), IMAGE_DIR.to_owned()),
                    (root.join(layout.files_dir()), FILES_DIR.to_owned()),
                ];
                (Layout::Docker(layout), binds)
            };
            match job.reader(source, binds).await {
                Ok(reader) => {
                    let result = job.by_archive(&reader.id, &layout, source, wanted).await;
                    job.remove_reader(&reader).await;
                    result
                }
                Err(failure) => Err(failure),
            }
        }
        // dockerd's own containerd, else the system's: the first whose
        // content store holds the image.
        ImageStore::Containerd => {
            let mut result = Err(Failure {
                written: Vec::new(),
                error: anyhow::anyhow!("no content store to read"),
                retry: true,
            });
            for blobs in ContentStore::candidates(root) {
                let binds = vec![(blobs, BLOBS_DIR.to_owned())];
                result = match job.reader(source, binds).await {
                    Ok(reader) => {
                        let result = job.by_content_archive(&reader.id, source, wanted).await;
                        job.remove_reader(&reader).await;
                        result
                    }
                    Err(failure) => Err(failure),
                };
                match &result {
                    // Another content store may hold the image; nothing
                    // was written from this one.
                    Err(f) if f.retry && f.written.is_empty() => {
                        tracing::debug!(error = %format!("{:#}", f.error), "content store candidate");
                    }
                    _ => break,
                }
            }
            result
        }
    };
    match result {
        Ok(written) => Ok(Outcome::Written(written)),
        Err(failure) => failure.into_outcome(GaveWay::Archive),
    }
}

/// The image config of `source`'s image read through a reader container
/// (classic stores only), for the push route when the layer store is not
/// readable here: with the config at hand the push can be dropped as soon
/// as the wanted layers are in. `None`, saying why in `--debug`, when the
/// daemon refuses the container or the read.
pub(crate) async fn image_config(job: &Job, source: &Source<'_>) -> Option<Vec<u8>> {
    let (Some(root), ImageStore::Classic { driver }) =
        (&source.info.root_dir, &source.info.image_store)
    else {
        return None;
    };
    let read = async {
        let layout = StoreLayout::new(driver)?;
        let binds = vec![(root.join(layout.image_dir()), IMAGE_DIR.to_owned())];
        let reader = job.reader(source, binds).await.map_err(|f| f.error)?;
        let config = job
            .archived_config(&reader.id, &Layout::Docker(layout), source.image)
            .await;
        job.remove_reader(&reader).await;
        config
    };
    match read.await {
        Ok(config) => Some(config),
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "the image config cannot be read through the daemon");
            None
        }
    }
}

/// The layer store read through the container: Docker's classic store
/// (`image/<driver>` at [`IMAGE_DIR`]) or Podman's containers/storage
/// (`<driver>-images` at [`IMAGE_DIR`], `<driver>-layers` at
/// [`LAYERS_DIR`]); the layer folders at [`FILES_DIR`] either way.
enum Layout {
    Docker(StoreLayout),
    Podman(PodmanLayout),
}

/// A reader container: never started, removed when the route ends.
struct Reader {
    name: String,
    id: String,
}

impl Job {
    /// Creates a reader container of `source`'s image with `binds`
    /// (read-only), labelled and named for this run.
    async fn reader(
        &self,
        source: &Source<'_>,
        binds: Vec<(std::path::PathBuf, String)>,
    ) -> Result<Reader, Failure> {
        let name = temp_names::container_name();
        let spec = ReaderContainer {
            name: name.clone(),
            image: source.image.id.clone(),
            labels: vec![(
                temp_names::CONTAINER_LABEL.to_owned(),
                layer_writer::run::RunId::current()
                    .map(|r| r.token())
                    .unwrap_or_default(),
            )],
            binds,
        };
        self.reporter
            .phase("creating a container to read the daemon's store".to_owned());
        match self.cleanup.create_reader(spec).await {
            Ok(id) => {
                tracing::debug!(%id, %name, "reading the daemon's store through a container");
                Ok(Reader { name, id })
            }
            Err(e) => Err(Failure {
                written: Vec::new(),
                error: anyhow::Error::new(e).context("the daemon refused the reader container"),
                retry: true,
            }),
        }
    }

    async fn remove_reader(&self, reader: &Reader) {
        if let Err(e) = self.cleanup.remove_container(&reader.name).await {
            tracing::warn!(name = %reader.name, "cannot remove the reader container: {e}");
        }
    }

    /// The containerd store's documents and each wanted layer's blob as
    /// stored, through container `id`, which mounts a content store's
    /// blobs; written as the store route writes them.
    async fn by_content_archive(
        &self,
        id: &str,
        source: &Source<'_>,
        wanted: &[Wanted],
    ) -> Result<Vec<WrittenLayer>, Failure> {
        let image = source.image;
        let docs = self
            .archived_documents(id, image)
            .await
            .map_err(|e| Failure {
                written: Vec::new(),
                error: e.context("cannot read the image's manifest through the daemon"),
                retry: true,
            })?;
        let (manifest, context) = self.content_context(image, wanted, docs)?;
        let writer = self.writer();
        let mut written = Vec::new();
        for w in wanted {
            let Some(layer) = manifest.layers.get(w.index) else {
                return Err(no_such_layer(
                    written,
                    image,
                    manifest.layers.len(),
                    w.index,
                ));
            };
            self.reporter.phase(format!(
                "reading layer {} through the daemon's archive API",
                w.index
            ));
            let path = match blob_path(layer.digest.as_ref()) {
                Ok(path) => path,
                Err(e) => return Err(retry_failure(written, e)),
            };
            let blob = ReadAhead::spawn(self.driver.archive(id, &path));
            // The blob as stored: its size is the manifest's.
            let progress = self
                .reporter
                .progress(format!("layer {}", w.index), Some(layer.size));
            let blob = ArchivedBlob::new(blob);
            match self
                .write_counted(&writer, &context, w.index, blob, progress)
                .await
            {
                Ok(layer) => written.push(layer),
                Err(e) => {
                    return Err(write_failure(
                        written,
                        e,
                        w.index,
                        "the daemon's content store",
                    ));
                }
            }
        }
        Ok(written)
    }

    /// The index, manifest and config the image ID leads to, each read
    /// through container `id` when the walk asks for it.
    async fn archived_documents(
        &self,
        id: &str,
        image: &ImageDetails,
    ) -> anyhow::Result<ImageDocuments> {
        let platform = Platform::new(&image.os, &image.architecture, image.variant.as_deref());
        let mut fetched: HashMap<String, Vec<u8>> = HashMap::new();
        // An index, a manifest, a config: each round reads one more.
        for _ in 0..4 {
            let mut missing = None;
            let walked =
                read_image_documents(Path::new(BLOBS_DIR), &image.id, &platform, &mut |digest| {
                    match fetched.get(digest) {
                        Some(bytes) => Ok(bytes.clone()),
                        None => {
                            missing = Some(digest.to_owned());
                            Err(DataRootError::Read {
                                path: BLOBS_DIR.into(),
                                source: std::io::ErrorKind::NotFound.into(),
                            })
                        }
                    }
                });
            match (walked, missing) {
                (Ok(docs), _) => return Ok(docs),
                (Err(_), Some(digest)) => {
                    let tar = self.small_archive(id, &blob_path(&digest)?).await?;
                    let bytes = blob_from_tar(&tar[..], &digest)?;
                    fetched.insert(digest, bytes);
                }
                (Err(e), None) => return Err(e.into()),
            }
        }
        anyhow::bail!("the image's documents lead further than an index, a manifest and a config")
    }

    /// Reads the config and each wanted layer through container `id`.
    async fn by_archive(
        &self,
        id: &str,
        layout: &Layout,
        source: &Source<'_>,
        wanted: &[Wanted],
    ) -> Result<Vec<WrittenLayer>, Failure> {
        let image = source.image;
        let retry = |written: Vec<WrittenLayer>, error: anyhow::Error| Failure {
            written,
            error,
            retry: true,
        };
        let config = self.archived_config(id, layout, image).await;
        let podman_layers = match layout {
            Layout::Docker(_) => None,
            Layout::Podman(layout) => {
                let layers = self
                    .archived_file(id, &format!("{LAYERS_DIR}/{}", layout.layers_file()))
                    .await
                    .context("cannot read Podman's list of layers through the daemon");
                match layers {
                    Ok(layers) => Some(layers),
                    Err(e) => return Err(retry(Vec::new(), e)),
                }
            }
        };
        let config = config.map_err(|e| retry(Vec::new(), e))?;
        let context = self
            .context(image, wanted, config, None)
            .map_err(|error| Failure {
                written: Vec::new(),
                error,
                retry: false,
            })?;
        let writer = self.writer();
        let mut written = Vec::new();
        for w in wanted {
            let Some(diff_ids) = image.diff_ids.get(..=w.index) else {
                return Err(Failure {
                    error: anyhow::anyhow!(
                        "image {} has {} layers, not a layer {}",
                        image.id,
                        image.diff_ids.len(),
                        w.index
                    ),
                    written,
                    retry: false,
                });
            };
            self.reporter.phase(format!(
                "reading layer {} through the daemon's archive API",
                w.index
            ));
            let record = match layout {
                Layout::Docker(layout) => {
                    self.layer_record(id, layout, diff_ids).await.map(|record| {
                        let files = layout.layer_files(&record.cache_id);
                        (record, files)
                    })
                }
                Layout::Podman(layout) => {
                    let layers = podman_layers.as_deref().unwrap_or_default();
                    self.podman_layer_record(id, layout, layers, diff_ids).await
                }
            };
            let (record, (files, top)) = match record {
                Ok(record) => record,
                Err(e) => {
                    return Err(retry(
                        written,
                        e.context(format!("cannot read layer {}'s record", w.index)),
                    ));
                }
            };
            let folder = ReadAhead::spawn(self.driver.archive(id, &format!("{FILES_DIR}/{files}")));
            let progress = self.layer_progress(image, w.index);
            let tar = ArchivedLayerTar::new(record, folder, &top);
            match self
                .write_counted(&writer, &context, w.index, tar, progress)
                .await
            {
                Ok(layer) => written.push(layer),
                Err(e) => {
                    return Err(write_failure(
                        written,
                        e,
                        w.index,
                        "the daemon's layer store",
                    ));
                }
            }
        }
        Ok(written)
    }

    /// The image config of `image` in `layout`'s image database through
    /// container `id`, checked to hash to the image ID.
    async fn archived_config(
        &self,
        id: &str,
        layout: &Layout,
        image: &ImageDetails,
    ) -> anyhow::Result<Vec<u8>> {
        let config_path = match layout {
            Layout::Docker(layout) => layout.config_file(&image.id)?,
            Layout::Podman(layout) => layout.config_file(&image.id)?,
        };
        self.small_archive(id, &format!("{IMAGE_DIR}/{config_path}"))
            .await
            .and_then(|tar| {
                Ok(match layout {
                    Layout::Docker(_) => config_from_tar(&tar[..], &image.id)?,
                    Layout::Podman(_) => containers_storage::config_from_tar(&tar[..], &image.id)?,
                })
            })
            .context("cannot read the image config through the daemon")
    }

    /// The one file at `path` in container `id`, when it is small.
    async fn archived_file(&self, id: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        let tar = self.small_archive(id, path).await?;
        Ok(containers_storage::file_from_tar(
            &tar[..],
            path,
            SMALL_ARCHIVE as u64,
        )?)
    }

    /// The record of the last of `diff_ids` in Podman's layer database
    /// (`layers`, the bytes of its `layers.json`): its layer ID, tar-split
    /// and where its files are.
    async fn podman_layer_record(
        &self,
        id: &str,
        layout: &PodmanLayout,
        layers: &[u8],
        diff_ids: &[String],
    ) -> anyhow::Result<(LayerRecord, (String, String))> {
        let layer = containers_storage::layer_id(layers, diff_ids)?;
        let split = self
            .archived_file(
                id,
                &format!("{LAYERS_DIR}/{}", layout.tar_split_file(&layer)?),
            )
            .await?;
        let files = layout.layer_files(&layer)?;
        let record = LayerRecord {
            diff_id: diff_ids.last().cloned().unwrap_or_default(),
            cache_id: layer,
            tar_split_gz: split,
        };
        Ok((record, files))
    }

    /// The record of the last of `diff_ids` in the layer database, checked
    /// to name that diff ID.
    async fn layer_record(
        &self,
        id: &str,
        layout: &StoreLayout,
        diff_ids: &[String],
    ) -> anyhow::Result<LayerRecord> {
        let chain = chain_id(diff_ids);
        let dir = layout.layer_record(&chain)?;
        let tar = self
            .small_archive(id, &format!("{IMAGE_DIR}/{dir}"))
            .await?;
        let record = LayerRecord::from_tar(&tar[..], &dir)?;
        let diff_id = diff_ids.last().map(String::as_str).unwrap_or_default();
        anyhow::ensure!(
            record.diff_id == diff_id,
            "the layer store records {} for chain ID {chain}, not {diff_id}",
            record.diff_id
        );
        Ok(record)
    }

    /// The whole archive of `path` in container `id`, when it is small.
    async fn small_archive(&self, id: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        let mut stream = self.driver.archive(id, path);
        let mut tar = Vec::new();
        while let Some(chunk) = stream.try_next().await? {
            tar.extend_from_slice(&chunk);
            anyhow::ensure!(
                tar.len() <= SMALL_ARCHIVE,
                "{} is over {} MiB",
                Path::new(path).display(),
                SMALL_ARCHIVE >> 20
            );
        }
        Ok(tar)
    }
}

/// Where the container sees blob `digest`.
fn blob_path(digest: &str) -> anyhow::Result<String> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("{digest} is not a sha256 digest"))?;
    Ok(format!("{BLOBS_DIR}/{hex}"))
}

/// A failure another route may mend, after `written`.
fn retry_failure(written: Vec<WrittenLayer>, error: anyhow::Error) -> Failure {
    Failure {
        written,
        error,
        retry: true,
    }
}
