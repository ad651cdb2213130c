//! The [`DockerDriver`] trait.

use async_trait::async_trait;

use crate::error::DriverError;
use crate::model::{
    BuildOptions, ContainerSummary, DaemonInfo, ImageConfig, ImageDetails, ImageSummary,
    LayerSelector, PushEvent, ReaderContainer, RegistryCredentials, ResolvedLayer,
};

/// A boxed, sendable stream.
pub type BoxStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = T> + Send + 'static>>;

/// What dlgrab asks of a Docker daemon.
///
/// [`crate::BollardDriver`] implements it over the Engine API; with the
/// `mock` feature, `MockDockerDriver` is a mockall double.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait DockerDriver: Send + Sync {
    /// The daemon's version, API version, image store and platform.
    async fn info(&self) -> Result<DaemonInfo, DriverError>;

    /// An image by name, digest reference or ID, with its history mapped to
    /// its layers.
    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails, DriverError>;

    /// The image config, byte for byte as the daemon stores it.
    ///
    /// On a classic store, the sha256 of these bytes is the image ID; on the
    /// containerd store the image ID is the manifest (or index) digest and
    /// these bytes hash to the manifest's config digest. The Engine API has
    /// no call that returns these bytes, so they are read out of a
    /// `docker save` stream, which is dropped as soon as the config has been
    /// seen (on 20.10 `<id>.json` sorts among the layer folders; from 25 the
    /// config is a blob of the OCI layout, located through `manifest.json`).
    /// When the image ID names an index, its bytes come with the config.
    async fn image_config(&self, reference: &str) -> Result<ImageConfig, DriverError>;

    /// Resolves what the user typed to an image and one of its layers.
    ///
    /// `what` is a `name[:tag]`, a `name@sha256:…`, a full or short image ID
    /// (with or without `sha256:`), an intermediate image ID shown by
    /// `docker history`, or a diff ID. For a diff ID, [`LayerSelector::Top`]
    /// means that very layer (in a tagged image holding it if there is one,
    /// else in the image with the fewest layers); other selectors then apply
    /// to the chosen image.
    async fn resolve(
        &self,
        what: &str,
        selector: LayerSelector,
    ) -> Result<ResolvedLayer, DriverError>;

    /// An image's ID and its layers' diff IDs (base first), from one
    /// inspect: cheaper than [`DockerDriver::inspect_image`], which also
    /// maps the history.
    async fn image_diff_ids(&self, reference: &str) -> Result<(String, Vec<String>), DriverError> {
        let details = self.inspect_image(reference).await?;
        Ok((details.id, details.diff_ids))
    }

    /// All images, intermediate ones included (`all=true`).
    async fn list_images(&self) -> Result<Vec<ImageSummary>, DriverError>;

    /// Images with a tag whose name matches `pattern` (the Engine API's
    /// `reference` filter, `path.Match` syntax: `127.0.0.1:*/dlgrab-*`),
    /// each with all its tags; the caller still checks the names (a daemon
    /// may filter loosely). Much cheaper than [`DockerDriver::list_images`]
    /// where the daemon filters: the containerd store lists every image
    /// slowly. By default, every image.
    async fn list_images_named(&self, pattern: &str) -> Result<Vec<ImageSummary>, DriverError> {
        let _ = pattern;
        self.list_images().await
    }

    /// Tags `image` as `repo:tag`.
    async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), DriverError>;

    /// Removes the tag `reference` (e.g. `127.0.0.1:5000/dlgrab-x:t`) and
    /// never deletes an image: fails with [`DriverError::UntagWouldDelete`]
    /// without calling the daemon's delete when the image would go with it.
    async fn untag(&self, reference: &str) -> Result<(), DriverError>;

    /// Pushes `repo:tag`, reporting the daemon's progress; the daemon
    /// presents `credentials` to the registry when it asks (none: an empty
    /// `X-Registry-Auth`). An error in the progress ends the stream with
    /// [`DriverError::PushRefused`]. Dropping the stream closes the request;
    /// the daemon then cancels the push.
    fn push(
        &self,
        repo: &str,
        tag: &str,
        credentials: Option<RegistryCredentials>,
    ) -> BoxStream<Result<PushEvent, DriverError>>;

    /// `docker save` of these references, as the daemon streams it.
    fn export_images(&self, references: &[String]) -> BoxStream<Result<bytes::Bytes, DriverError>>;

    /// `docker load` of an archive; returns the daemon's `Loaded image: …`
    /// and `Loaded image ID: …` lines.
    async fn load(&self, archive: BoxStream<bytes::Bytes>) -> Result<Vec<String>, DriverError>;

    /// Builds an image from a context tar holding a `Dockerfile`; returns the
    /// image ID.
    async fn build(
        &self,
        context_tar: bytes::Bytes,
        options: BuildOptions,
    ) -> Result<String, DriverError>;

    /// Removes an image without force (plain `docker rmi`), for tests.
    async fn remove_image(&self, reference: &str) -> Result<(), DriverError>;

    /// Creates (never starts) a container to read the daemon's files
    /// through [`DockerDriver::archive`]; returns its ID.
    async fn create_reader(&self, spec: &ReaderContainer) -> Result<String, DriverError>;

    /// The tar the archive API streams for `path` in `container` (`docker
    /// cp CONTAINER:PATH -`): a folder's entries are named after its last
    /// component (`diff/…` for `…/diff`).
    fn archive(&self, container: &str, path: &str) -> BoxStream<Result<bytes::Bytes, DriverError>>;

    /// Removes a container and its anonymous volumes, stopped or not; a
    /// container already gone is not an error.
    async fn remove_container(&self, id: &str) -> Result<(), DriverError>;

    /// The containers, running or not, that carry the label `key`.
    async fn list_containers(&self, key: &str) -> Result<Vec<ContainerSummary>, DriverError>;
}
