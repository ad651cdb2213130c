//! The store route: each wanted layer's exact tar rebuilt from the classic
//! layer store under the daemon's data root (`docker_driver::LayerStore`),
//! as Docker itself does for save and push, and verified against its diff
//! ID by the layer writer. Only files are read; nothing under the data root
//! is written. Also the only route of `--data-root` (no daemon).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use docker_driver::{
    DaemonInfo, DataRootDriver, DockerDriver, ImageDetails, ImageStore, LayerStore, LayerTar,
};
use layer_writer::{WriteError, WrittenLayer};
use tokio::io::AsyncRead;

use crate::export::{Exporter, Wanted, output_already_there};
use crate::plan::StoreAccess;

/// Whether the daemon's layer store can be read, and the store when it can.
pub(crate) fn access(info: &DaemonInfo) -> (StoreAccess, Option<LayerStore>) {
    let unavailable = |why: String| (StoreAccess::Unavailable(why), None);
    if let Some(host) = &info.elsewhere {
        return unavailable(format!("the daemon at {host} runs on another machine"));
    }
    match (&info.image_store, &info.root_dir) {
        (ImageStore::Containerd, _) => {
            unavailable("the containerd image store keeps no classic layer store".into())
        }
        (ImageStore::Classic { .. }, None) => unavailable("the daemon reports no data root".into()),
        (ImageStore::Classic { driver }, Some(root)) => match LayerStore::open(root, driver) {
            Ok(store) => (StoreAccess::Readable, Some(store)),
            Err(e) => unavailable(format!("{:#}", anyhow::Error::new(e))),
        },
    }
}

/// The driver of `--data-root DIR`: the data root's images, no daemon.
pub(crate) fn offline_driver(root: &Path) -> anyhow::Result<Arc<dyn DockerDriver>> {
    let driver = DataRootDriver::open(root)
        .with_context(|| format!("cannot read the Docker data root {}", root.display()))?;
    tracing::debug!(root = %root.display(), driver = driver.store().driver(), "exporting from a data root, without a daemon");
    Ok(Arc::new(driver))
}

/// A failed store route: the layers it did write, and whether another
/// route may take the others (the failure was the store's, not the
/// output's).
pub(crate) struct Failure {
    pub(crate) written: Vec<WrittenLayer>,
    pub(crate) error: anyhow::Error,
    pub(crate) retry: bool,
}

impl Exporter {
    /// The store route: the config from the image database, then each
    /// wanted layer rebuilt from the layer store and written.
    pub(crate) async fn by_store(
        &self,
        store: &LayerStore,
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
                continue;
            };
            let tar = match store.layer_tar(diff_ids) {
                Ok(tar) => tar,
                Err(e) => {
                    return Err(Failure {
                        written,
                        error: anyhow::Error::new(e)
                            .context(format!("cannot open layer {} in the layer store", w.index)),
                        retry: true,
                    });
                }
            };
            self.reporter
                .phase(format!("rebuilding layer {} from the layer store", w.index));
            match writer.write_layer(&context, w.index, reader(tar)).await {
                Ok(layer) => {
                    self.announce(&layer);
                    written.push(layer);
                }
                Err(e) => {
                    let retry = matches!(
                        e,
                        WriteError::DiffIdMismatch { .. }
                            | WriteError::Read(_)
                            | WriteError::Decompress(_)
                            | WriteError::UnknownCompression
                    );
                    let error = match e {
                        WriteError::TargetExists { path } => output_already_there(&path),
                        e => anyhow::Error::new(e).context(format!(
                            "cannot write layer {} from the layer store",
                            w.index
                        )),
                    };
                    return Err(Failure {
                        written,
                        error,
                        retry,
                    });
                }
            }
        }
        Ok(written)
    }
}

/// The rebuilt tar as an async reader: a blocking task reads it in
/// 256 KiB pieces and stops when the reader is dropped.
fn reader(mut tar: LayerTar) -> impl AsyncRead + Send + Unpin + 'static {
    const PIECE: usize = 256 << 10;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut piece = vec![0u8; PIECE];
            let mut filled = 0;
            let end = loop {
                match tar.read(&mut piece[filled..]) {
                    Ok(0) => break true,
                    Ok(n) => {
                        filled += n;
                        if filled == PIECE {
                            break false;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            };
            piece.truncate(filled);
            if filled > 0 && tx.blocking_send(Ok(Bytes::from(piece))).is_err() {
                return;
            }
            if end {
                return;
            }
        }
    });
    let pieces = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    tokio_util::io::StreamReader::new(Box::pin(pieces))
}
