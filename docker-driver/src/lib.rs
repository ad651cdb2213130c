//! The Docker Engine API, as dlgrab needs it.
//!
//! dlgrab exports single layers out of a local Docker daemon. This crate is
//! its only door to the daemon: [`DockerDriver`] is the seam the orchestrator
//! talks to, in this crate's own types ([`ImageDetails`], [`PushEvent`], …),
//! and [`BollardDriver`] implements it over the Engine API with
//! [bollard](https://docs.rs/bollard). No bollard type appears in the public
//! API; with the `mock` feature, `MockDockerDriver` (mockall) is available
//! for other crates' tests.
//!
//! What the driver does beyond plain API calls:
//!
//! - **Layer resolution** ([`DockerDriver::resolve`]): a tag, a digest
//!   reference, a full or short image ID, an intermediate image ID from
//!   `docker history`, or a diff ID, plus a [`LayerSelector`], become an
//!   image and the index of one of its layers.
//! - **History mapping**: the Engine API's history rows (newest first, and
//!   without the config's `empty_layer` flags) are put oldest first and
//!   matched to diff IDs; when sizes and the instructions cannot decide which
//!   rows carry a layer, the image config itself is read.
//! - **Safe untagging** ([`DockerDriver::untag`]): a tag is removed only when
//!   that cannot delete the image.
//! - **Pushing** ([`DockerDriver::push`]): the daemon's progress stream as
//!   [`PushEvent`]s, with errors inside the stream turned into
//!   [`DriverError::PushRefused`]; dropping the stream closes the request,
//!   which makes the daemon cancel the push.
//!
//! Connection: [`BollardDriver::connect`] finds the daemon as the Docker CLI
//! does ([`DaemonSelection`]: `--context`/`--host`, `DOCKER_HOST`,
//! `DOCKER_CONTEXT`, the CLI's current context, else
//! `/var/run/docker.sock`; `unix://`, `tcp://` with or without TLS,
//! `http://`, and `ssh://` as the CLI dials it: `ssh … docker system
//! dial-stdio`), and negotiates the API version down to what the daemon speaks
//! (daemons from API 1.41 on are supported).
//!
//! Without a daemon: [`LayerStore`] (a classic store's layers rebuilt from
//! its data root), [`ContentStore`] (containerd's blobs as stored) and
//! [`DataRootDriver`] (a [`DockerDriver`] over a data root) read files only;
//! what fails there is a [`DataRootError`], surfaced by a driver call as
//! [`DriverError::DataRoot`].
#![warn(missing_docs)]

mod bollard_driver;
mod config;
pub mod containers_storage;
mod content_store;
mod context;
mod data_root;
mod driver;
mod error;
mod history;
pub mod layer_store;
pub mod manifest;
mod model;
mod one_connection;
pub mod reference;
mod ssh;
mod tls;
mod transport;
mod wire;

pub use bollard_driver::BollardDriver;
pub use containers_storage::ContainersStorage;
pub use content_store::{ContentStore, ImageDocuments, read_image_documents};
pub use context::{
    ChosenBy, DEFAULT_CONTEXT, DEFAULT_HOST, DaemonEndpoint, DaemonSelection, TlsFiles,
};
pub use data_root::DataRootDriver;
#[cfg(any(test, feature = "mock"))]
pub use driver::MockDockerDriver;
pub use driver::{BoxStream, DockerDriver};
pub use error::{DataRootError, DriverError};
pub use layer_store::{
    ArchivedBlob, ArchivedLayerTar, LayerRecord, LayerStore, LayerTar, StoreLayout, blob_from_tar,
    config_from_tar,
};
pub use model::{
    BuildOptions, ContainerSummary, DaemonInfo, HistoryRow, ImageConfig, ImageDetails, ImageStore,
    ImageSummary, LayerSelector, PushEvent, ReaderContainer, RegistryCredentials, ResolvedLayer,
};
pub use reference::{ReferenceError, check_typed, familiar_tag};
pub use ssh::ReverseTunnel;
