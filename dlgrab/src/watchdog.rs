//! `--timeout`: a [`DockerDriver`] whose push and save streams end with
//! [`DriverError::Stalled`] when the daemon sends nothing for too long, so a
//! hung daemon or push fails with a clear message instead of waiting
//! forever. The limit is on silence, not on the whole transfer: a large
//! layer that keeps moving is never cut. Single calls (tag, untag, inspect,
//! …) get the same limit for their answer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use docker_driver::{
    BoxStream, BuildOptions, DaemonInfo, DockerDriver, DriverError, ImageConfig, ImageDetails,
    ImageSummary, LayerSelector, PushEvent, RegistryCredentials, ResolvedLayer,
};
use futures::StreamExt;

/// Wraps a driver's streams with an inactivity limit.
pub(crate) struct Watchdog {
    inner: Arc<dyn DockerDriver>,
    limit: Duration,
}

impl Watchdog {
    /// `inner` with `limit` of silence allowed per stream.
    pub(crate) fn new(inner: Arc<dyn DockerDriver>, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

/// Ends `stream` with [`DriverError::Stalled`] after `limit` without an item.
fn watched<T: Send + 'static>(
    stream: BoxStream<Result<T, DriverError>>,
    limit: Duration,
    operation: &'static str,
) -> BoxStream<Result<T, DriverError>> {
    let seconds = limit.as_secs();
    Box::pin(futures::stream::unfold(
        Some(stream),
        move |state| async move {
            let mut stream = state?;
            match tokio::time::timeout(limit, stream.next()).await {
                Ok(Some(item)) => Some((item, Some(stream))),
                Ok(None) => None,
                Err(_) => {
                    tracing::warn!(operation, seconds, "the daemon's stream stalled");
                    Some((Err(DriverError::Stalled { operation, seconds }), None))
                }
            }
        },
    ))
}

impl Watchdog {
    /// `call`, ended with [`DriverError::Stalled`] after the limit: a hung
    /// daemon does not answer a tag or an untag either.
    async fn limited<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, DriverError>>,
    ) -> Result<T, DriverError> {
        tokio::time::timeout(self.limit, call)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(operation, "the daemon did not answer");
                Err(DriverError::Stalled {
                    operation,
                    seconds: self.limit.as_secs(),
                })
            })
    }
}

#[async_trait]
impl DockerDriver for Watchdog {
    async fn info(&self) -> Result<DaemonInfo, DriverError> {
        self.limited("daemon info", self.inner.info()).await
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails, DriverError> {
        self.limited("image inspect", self.inner.inspect_image(reference))
            .await
    }

    async fn image_config(&self, reference: &str) -> Result<ImageConfig, DriverError> {
        self.limited("image config", self.inner.image_config(reference))
            .await
    }

    async fn resolve(
        &self,
        what: &str,
        selector: LayerSelector,
    ) -> Result<ResolvedLayer, DriverError> {
        self.limited("layer lookup", self.inner.resolve(what, selector))
            .await
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, DriverError> {
        self.limited("image list", self.inner.list_images()).await
    }

    async fn list_images_named(&self, pattern: &str) -> Result<Vec<ImageSummary>, DriverError> {
        self.limited("image list", self.inner.list_images_named(pattern))
            .await
    }

    async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), DriverError> {
        self.limited("tag", self.inner.tag(image, repo, tag)).await
    }

    async fn untag(&self, reference: &str) -> Result<(), DriverError> {
        self.limited("untag", self.inner.untag(reference)).await
    }

    fn push(
        &self,
        repo: &str,
        tag: &str,
        credentials: Option<RegistryCredentials>,
    ) -> BoxStream<Result<PushEvent, DriverError>> {
        watched(self.inner.push(repo, tag, credentials), self.limit, "push")
    }

    fn export_images(&self, references: &[String]) -> BoxStream<Result<bytes::Bytes, DriverError>> {
        watched(
            self.inner.export_images(references),
            self.limit,
            "image save",
        )
    }

    async fn load(&self, archive: BoxStream<bytes::Bytes>) -> Result<Vec<String>, DriverError> {
        self.inner.load(archive).await
    }

    async fn build(
        &self,
        context_tar: bytes::Bytes,
        options: BuildOptions,
    ) -> Result<String, DriverError> {
        self.inner.build(context_tar, options).await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), DriverError> {
        self.inner.remove_image(reference).await
    }

    async fn create_reader(
        &self,
        spec: &docker_driver::ReaderContainer,
    ) -> Result<String, DriverError> {
        self.limited("creating a container", self.inner.create_reader(spec))
            .await
    }

    fn archive(&self, container: &str, path: &str) -> BoxStream<Result<bytes::Bytes, DriverError>> {
        watched(
            self.inner.archive(container, path),
            self.limit,
            "reading a container's files",
        )
    }

    async fn remove_container(&self, id: &str) -> Result<(), DriverError> {
        self.limited("removing a container", self.inner.remove_container(id))
            .await
    }

    async fn list_containers(
        &self,
        key: &str,
    ) -> Result<Vec<docker_driver::ContainerSummary>, DriverError> {
        self.limited("listing containers", self.inner.list_containers(key))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_stream_ends_stalled_a_moving_one_does_not() {
        let moving: BoxStream<Result<u32, DriverError>> =
            Box::pin(futures::stream::iter(0..5).then(|i| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(i)
            }));
        // Half a second in all, but never more than a tenth of one silent.
        let items: Vec<_> = watched(moving, Duration::from_millis(400), "push")
            .collect()
            .await;
        assert_eq!(items.len(), 5);
        assert!(items.iter().all(Result::is_ok));

        let silent: BoxStream<Result<u32, DriverError>> =
            Box::pin(futures::stream::iter([Ok(1)]).chain(futures::stream::pending()));
        let items: Vec<_> = watched(silent, Duration::from_secs(1), "push")
            .collect()
            .await;
        assert_eq!(items.len(), 2);
        let err = items[1].as_ref().expect_err("stalled");
        assert!(
            matches!(
                err,
                DriverError::Stalled {
                    operation: "push",
                    seconds: 1
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("--timeout"), "{err}");
    }
}
