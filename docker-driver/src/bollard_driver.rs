//! [`BollardDriver`]: [`DockerDriver`] over the Engine API.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::ClientVersion;
use bollard::query_parameters::{
    BuildImageOptions, BuilderVersion, CreateContainerOptions, DownloadFromContainerOptions,
    ImportImageOptions, ListContainersOptions, ListImagesOptions, RemoveContainerOptions,
    RemoveImageOptions, TagImageOptions,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use http::Method;
use http_body_util::BodyExt;
use tokio::sync::OnceCell;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::io::{StreamReader, SyncIoBridge};
use tracing::{debug, warn};

use crate::context::{DaemonEndpoint, DaemonSelection};
use crate::driver::{BoxStream, DockerDriver};
use crate::error::DriverError;
use crate::history::{self, ApiRow};
use crate::manifest::Platform;
use crate::model::{
    BuildOptions, ContainerSummary, DaemonInfo, ImageConfig, ImageDetails, ImageStore,
    ImageSummary, LayerSelector, PushEvent, ReaderContainer, RegistryCredentials, ResolvedLayer,
};
use crate::reference::{self, Typed};
use crate::transport::{self, Transport};
use crate::{config, wire};

/// For calls that answer at once (ping, inspect, tag, list, …).
const SHORT: Duration = Duration::from_secs(120);
/// Until the first response byte of save, load and build: the daemon may
/// work a long time before it answers (20.10 exports a whole image to disk
/// before the first byte of `docker save`).
const LONG: Duration = Duration::from_secs(24 * 3600);
/// The lowest API version dlgrab is tested with.
const MIN_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// [`DockerDriver`] over the Docker Engine API, with bollard.
///
/// Cheap to clone: clones share one HTTP client.
#[derive(Clone)]
pub struct BollardDriver {
    inner: Arc<Inner>,
    /// The platform image calls select (see
    /// [`BollardDriver::selecting_platform`]).
    platform: Option<Arc<Platform>>,
}

struct Inner {
    transport: Transport,
    version: ClientVersion,
    /// Bollard with the short timeout.
    api: bollard::Docker,
    /// Bollard with the long timeout.
    long: bollard::Docker,
    store: OnceCell<ImageStore>,
    /// `/version` as read when connecting (see [`ServerApi::version`]).
    server_version: Option<wire::Version>,
}

impl std::fmt::Debug for BollardDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BollardDriver")
            .field("host", &self.inner.transport.host)
            .field("api_version", &self.api_version())
            .finish_non_exhaustive()
    }
}

impl BollardDriver {
    /// Connects to the daemon the Docker CLI would use with no options
    /// (`DOCKER_HOST`, `DOCKER_CONTEXT`, the current context, else
    /// `unix:///var/run/docker.sock`; see [`DaemonSelection`]) and
    /// negotiates the API version.
    pub async fn connect() -> Result<Self, DriverError> {
        Self::connect_to(&DaemonSelection::default().resolve()?).await
    }

    /// Connects to the daemon at `host` (`unix:///path`, `tcp://host:port`,
    /// `http://host:port`), without TLS, and negotiates the API version.
    pub async fn connect_with(host: &str) -> Result<Self, DriverError> {
        Self::connect_to(&DaemonEndpoint::plain(host)).await
    }

    /// Connects to `daemon` (TLS when it has TLS material and a `tcp://`
    /// host) and negotiates the API version: the daemon's (from `/version`,
    /// else `/_ping`) when it is below bollard's, never below the daemon's
    /// minimum.
    pub async fn connect_to(daemon: &DaemonEndpoint) -> Result<Self, DriverError> {
        let host = daemon.host.as_str();
        let transport = Transport::new(daemon)?;
        let server = negotiate(&transport).await?;
        let version = choose_version(&server, *bollard::API_DEFAULT_VERSION);
        if version < MIN_API {
            warn!(
                api_version = %version_string(&version),
                "the daemon's API is older than 1.41, which dlgrab is not tested with"
            );
        }
        debug!(host, context = %daemon.context, tls = daemon.tls.is_some(), api_version = %version_string(&version), "connected to the docker daemon");
        let api = transport.bollard(SHORT, &version)?;
        let long = transport.bollard(LONG, &version)?;
        Ok(BollardDriver {
            inner: Arc::new(Inner {
                transport,
                version,
                api,
                long,
                store: OnceCell::new(),
                server_version: server.version,
            }),
            platform: None,
        })
    }

    /// The same daemon, with image calls about `platform` (`docker
    /// --platform`): inspect, history, save and push of a multi-platform
    /// image on the containerd store then concern that platform's image,
    /// where the daemon can select one (inspect from API 1.49, history and
    /// save from 1.48, push from 1.46). An image that is not of that
    /// platform is [`DriverError::NoSuchPlatform`], naming the platforms
    /// it has.
    pub fn selecting_platform(&self, platform: Platform) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            platform: Some(Arc::new(platform)),
        }
    }

    /// Whether the negotiated API version is at least 1.`minor`.
    fn api_at_least(&self, minor: usize) -> bool {
        let v = &self.inner.version;
        v.major_version > 1 || (v.major_version == 1 && v.minor_version >= minor)
    }

    /// `platform=<JSON>` for a call that takes it from API 1.`minor`.
    fn platform_query(&self, minor: usize) -> Option<String> {
        let platform = self.platform.as_deref()?;
        self.api_at_least(minor)
            .then(|| format!("platform={}", encode(&platform.to_api_json())))
    }

    /// The platforms `reference` has here, for an error: on the containerd
    /// store from API 1.48 its index's image manifests (those whose content
    /// is not local marked so), else the one it is shown as.
    async fn platforms_of(&self, reference: &str) -> Result<Vec<String>, DriverError> {
        let mut path = format!("/images/{}/json", encode(reference));
        if self.api_at_least(48) {
            path.push_str("?manifests=1");
        }
        let inspect: wire::Inspect = self
            .get_json("inspecting an image", &path, Some(reference))
            .await?;
        let mut present: Vec<String> = inspect
            .manifests
            .iter()
            .filter(|m| m.kind == "image")
            .filter_map(|m| {
                let platform = m.descriptor.as_ref()?.platform.as_ref()?;
                Some(if m.available {
                    platform.to_string()
                } else {
                    format!("{platform} (content not here)")
                })
            })
            .collect();
        if present.is_empty() {
            present.push(
                Platform::new(
                    &inspect.os,
                    &inspect.architecture,
                    inspect.variant.as_deref(),
                )
                .to_string(),
            );
        }
        Ok(present)
    }

    /// [`DriverError::NoSuchPlatform`] for `reference`, or
    /// [`DriverError::NoSuchImage`] when it is not here at all.
    async fn no_such_platform(&self, reference: &str, wanted: &Platform) -> DriverError {
        match self.platforms_of(reference).await {
            Ok(present) => DriverError::NoSuchPlatform {
                reference: reference.to_owned(),
                wanted: wanted.to_string(),
                present,
            },
            Err(e) => e,
        }
    }

    /// The daemon's address as given.
    pub fn host(&self) -> &str {
        &self.inner.transport.host
    }

    /// The API version requests use, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        version_string(&self.inner.version)
    }

    fn api_err(
        &self,
        operation: &'static str,
        reference: Option<&str>,
        error: bollard::errors::Error,
    ) -> DriverError {
        map_bollard(operation, &self.inner.transport.host, reference, error)
    }

    fn uri(&self, path_and_query: &str) -> String {
        self.inner
            .transport
            .uri(Some(&self.inner.version), path_and_query)
    }

    async fn store(&self) -> Result<ImageStore, DriverError> {
        self.inner
            .store
            .get_or_try_init(|| async { Ok(self.info().await?.image_store) })
            .await
            .cloned()
    }

    /// `GET` of `path_and_query` at the negotiated version, read into one
    /// of [`wire`]'s structs (only the fields used, absent ones default).
    /// A 404 is [`DriverError::NoSuchImage`] when the call is about an
    /// image (`reference`).
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        path_and_query: &str,
        reference: Option<&str>,
    ) -> Result<T, DriverError> {
        let uri = self.uri(path_and_query);
        let (status, _, body) = self.inner.transport.get(operation, &uri, SHORT).await?;
        match (status.as_u16(), reference) {
            (200, _) => serde_json::from_slice(&body).map_err(|e| DriverError::Protocol {
                operation,
                source: Box::new(e),
            }),
            (404, Some(reference)) => Err(DriverError::NoSuchImage {
                reference: reference.to_owned(),
            }),
            (status, _) => Err(DriverError::Api {
                operation,
                status,
                message: transport::error_message(&body),
            }),
        }
    }

    /// `GET /images/json` with `options`, in this crate's types.
    async fn images(&self, options: ListImagesOptions) -> Result<Vec<ImageSummary>, DriverError> {
        let images = self
            .inner
            .api
            .list_images(Some(options))
            .await
            .map_err(|e| self.api_err("listing images", None, e))?;
        Ok(images
            .into_iter()
            .map(|i| ImageSummary {
                id: i.id,
                parent_id: Some(i.parent_id).filter(|p| !p.is_empty()),
                repo_tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                repo_digests: i
                    .repo_digests
                    .into_iter()
                    .filter(|d| d != "<none>@<none>")
                    .collect(),
            })
            .collect())
    }

    /// `GET /images/{reference}/json`, read without bollard (whose model
    /// has no `Parent`).
    /// With a platform selected, an image of another platform is
    /// [`DriverError::NoSuchPlatform`], whether the daemon selected (a 404)
    /// or could not (an older API: the platform it shows the image as).
    ///
    /// The `Id` a platform's inspect gives is that platform's manifest
    /// digest, which names no image; the image's own ID (its index's
    /// digest) is kept, as every later call names the image by it.
    async fn inspect_raw(&self, reference: &str) -> Result<wire::Inspect, DriverError> {
        let plain = format!("/images/{}/json", encode(reference));
        let selecting = self.platform_query(49);
        let path = match &selecting {
            Some(query) => format!("{plain}?{query}"),
            None => plain.clone(),
        };
        let found = self
            .get_json::<wire::Inspect>("inspecting an image", &path, Some(reference))
            .await;
        let Some(wanted) = self.platform.as_deref() else {
            return found;
        };
        match found {
            Ok(mut inspect)
                if wanted.matches(
                    &inspect.os,
                    &inspect.architecture,
                    inspect.variant.as_deref(),
                ) =>
            {
                if selecting.is_some() {
                    let image: wire::Inspect = self
                        .get_json("inspecting an image", &plain, Some(reference))
                        .await?;
                    inspect.id = image.id;
                }
                Ok(inspect)
            }
            Ok(_) | Err(DriverError::NoSuchImage { .. }) => {
                Err(self.no_such_platform(reference, wanted).await)
            }
            Err(e) => Err(e),
        }
    }

    /// The details of an inspected image, with its history mapped.
    async fn details(&self, inspect: wire::Inspect) -> Result<ImageDetails, DriverError> {
        let mut path = format!("/images/{}/history", encode(&inspect.id));
        if let Some(query) = self.platform_query(48) {
            path = format!("{path}?{query}");
        }
        let rows: Vec<ApiRow> = self
            .get_json::<Vec<wire::HistoryItem>>(
                "reading an image's history",
                &path,
                Some(&inspect.id),
            )
            .await?
            .into_iter()
            .map(|r| ApiRow {
                id: r.id,
                created: r.created,
                created_by: r.created_by,
                size: r.size,
                comment: r.comment,
            })
            .collect();
        let diff_ids = inspect.diff_ids();
        let history = match history::map_rows(&rows, diff_ids.len(), None) {
            Some(history) => history,
            None => {
                debug!(image = %inspect.id, "history rows ambiguous; reading the image config");
                let config = self.image_config(&inspect.id).await?;
                let flags = history::config_empty_flags(&config.bytes);
                history::map_rows(&rows, diff_ids.len(), flags.as_deref()).unwrap_or_else(|| {
                    warn!(image = %inspect.id, "history rows do not match the image's layers");
                    history::unmapped(&rows)
                })
            }
        };
        Ok(ImageDetails {
            parent: inspect.parent(),
            id: inspect.id,
            repo_tags: inspect.repo_tags,
            repo_digests: inspect.repo_digests,
            created: inspect.created,
            os: inspect.os,
            architecture: inspect.architecture,
            variant: inspect.variant.filter(|v| !v.is_empty()),
            diff_ids,
            history,
        })
    }

    /// `GET /images/get` of `references` with `platform` (a query
    /// parameter bollard's save does not take), streamed.
    fn save_for_platform(
        &self,
        references: &[String],
        platform: &str,
    ) -> BoxStream<Result<Bytes, DriverError>> {
        let operation = "saving images";
        let names: Vec<String> = references
            .iter()
            .map(|r| format!("names={}", encode(r)))
            .collect();
        let uri = self.uri(&format!("/images/get?{}&{platform}", names.join("&")));
        let transport = self.inner.transport.clone();
        let host = transport.host.clone();
        let subject = references.join(", ");
        let start = async move {
            let response = transport.send(operation, Method::GET, &uri, &[]).await?;
            let status = response.status();
            if status.is_success() {
                let host = host.clone();
                return Ok(http_body_util::BodyDataStream::new(response.into_body())
                    .map_err(move |e| transport::classify(operation, &host, Box::new(e))));
            }
            let message = error_message(response).await;
            Err(if status == http::StatusCode::NOT_FOUND {
                DriverError::NoSuchImage { reference: subject }
            } else {
                DriverError::Api {
                    operation,
                    status: status.as_u16(),
                    message,
                }
            })
        };
        Box::pin(
            stream::once(start)
                .map(|started| match started {
                    Ok(data) => data.boxed(),
                    Err(e) => stream::iter([Err(e)]).boxed(),
                })
                .flatten(),
        )
    }

    /// The image holding `diff_id` that [`reference::choose_for_diff_id`]
    /// prefers, and the layer's index in it.
    async fn find_diff_id(&self, diff_id: &str) -> Result<(wire::Inspect, usize), DriverError> {
        let mut images = Vec::new();
        for summary in self.list_images().await? {
            match self.inspect_raw(&summary.id).await {
                Ok(inspect) => images.push(inspect),
                // Removed meanwhile, or not of the platform selected.
                Err(DriverError::NoSuchImage { .. } | DriverError::NoSuchPlatform { .. }) => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let layers: Vec<Vec<String>> = images.iter().map(|i| i.diff_ids()).collect();
        let chosen = reference::choose_for_diff_id(
            images
                .iter()
                .zip(&layers)
                .map(|(i, l)| (i.id.as_str(), !i.repo_tags.is_empty(), &l[..])),
            diff_id,
        )
        .map(|(id, index)| (id.to_owned(), index));
        let (id, index) = chosen.ok_or_else(|| DriverError::NoSuchImage {
            reference: diff_id.to_owned(),
        })?;
        let inspect = images
            .into_iter()
            .find(|i| i.id == id)
            .expect("the chosen image is among the images");
        Ok((inspect, index))
    }
}

#[async_trait]
impl DockerDriver for BollardDriver {
    async fn info(&self) -> Result<DaemonInfo, DriverError> {
        // Asked together: each is a round trip, and `/info` takes tens of
        // milliseconds on some daemons.
        // Read without bollard's models: only the fields used, so a field
        // a daemon leaves out (or one bollard's model would require) cannot
        // fail the call.
        let (version, info) = match &self.inner.server_version {
            Some(version) => (
                version.clone(),
                self.get_json::<wire::Info>("reading the daemon's info", "/info", None)
                    .await?,
            ),
            None => {
                let (version, info) = tokio::join!(
                    self.get_json::<wire::Version>(
                        "reading the daemon's version",
                        "/version",
                        None
                    ),
                    self.get_json::<wire::Info>("reading the daemon's info", "/info", None),
                );
                (version?, info?)
            }
        };
        let podman = version.components.iter().any(|c| c.name == "Podman Engine");
        let image_store = if info.containerd_store() {
            ImageStore::Containerd
        } else {
            ImageStore::Classic {
                driver: info.driver,
            }
        };
        Ok(DaemonInfo {
            server_version: version.version,
            api_version: version.api_version,
            image_store,
            os: version.os,
            arch: version.arch,
            root_dir: Some(info.docker_root_dir)
                .filter(|d| !d.is_empty())
                .map(std::path::PathBuf::from),
            elsewhere: (!DaemonEndpoint::plain(&self.inner.transport.host).is_local())
                .then(|| self.inner.transport.host.clone()),
            podman,
        })
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails, DriverError> {
        let inspect = self.inspect_raw(reference).await?;
        self.details(inspect).await
    }

    async fn image_diff_ids(&self, reference: &str) -> Result<(String, Vec<String>), DriverError> {
        let inspect = self.inspect_raw(reference).await?;
        let diff_ids = inspect.diff_ids();
        Ok((inspect.id, diff_ids))
    }

    async fn image_config(&self, reference: &str) -> Result<ImageConfig, DriverError> {
        let inspect = self.inspect_raw(reference).await?;
        let id = inspect.id.clone();
        let save = self
            .export_images(std::slice::from_ref(&id))
            .map_err(std::io::Error::other);
        let reader = SyncIoBridge::new(StreamReader::new(save));
        let image = id.clone();
        // An index (containerd store) leads to the manifest of the platform
        // the daemon shows the image as.
        let (os, arch) = (inspect.os, inspect.architecture);
        let found = tokio::task::spawn_blocking(move || {
            config::find_config(reader, &image, Some((&os, &arch)))
        })
        .await
        .map_err(|e| DriverError::Protocol {
            operation: "reading the saved image",
            source: Box::new(e),
        })??;
        if found.digest != id && matches!(self.store().await?, ImageStore::Classic { .. }) {
            return Err(DriverError::ConfigMismatch {
                image: id.clone(),
                expected: id,
                actual: found.digest,
            });
        }
        Ok(ImageConfig {
            bytes: found.config,
            index: found.index,
        })
    }

    async fn resolve(
        &self,
        what: &str,
        selector: LayerSelector,
    ) -> Result<ResolvedLayer, DriverError> {
        let (inspect, requested_id, diff_index) = match reference::classify(what) {
            Typed::FullDigest(digest) => match self.inspect_raw(&digest).await {
                Ok(inspect) => {
                    let id = inspect.id.clone();
                    (inspect, Some(id), None)
                }
                Err(DriverError::NoSuchImage { .. }) => {
                    let (inspect, index) = self.find_diff_id(&digest).await?;
                    (inspect, None, Some(index))
                }
                Err(e) => return Err(e),
            },
            Typed::HexPrefix(prefix) => {
                let matches: BTreeSet<String> = self
                    .list_images()
                    .await?
                    .into_iter()
                    .map(|i| i.id)
                    .filter(|id| {
                        id.strip_prefix("sha256:")
                            .unwrap_or(id)
                            .starts_with(&prefix)
                    })
                    .collect();
                match matches.len() {
                    // Not an ID: maybe a name made of hex digits.
                    0 => (self.inspect_raw(what).await?, None, None),
                    1 => {
                        let id = matches.into_iter().next().expect("one match");
                        (self.inspect_raw(&id).await?, Some(id), None)
                    }
                    _ => {
                        return Err(DriverError::AmbiguousId {
                            prefix: what.to_owned(),
                            candidates: matches.into_iter().collect(),
                        });
                    }
                }
            }
            Typed::Name => (self.inspect_raw(what).await?, None, None),
        };
        let image = self.details(inspect).await?;
        let layer_index = match (diff_index, &selector) {
            (Some(index), LayerSelector::Top) => index,
            _ => reference::select_layer(what, &image, &selector)?,
        };
        Ok(ResolvedLayer {
            image,
            layer_index,
            requested_id,
        })
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, DriverError> {
        self.images(ListImagesOptions {
            all: true,
            ..Default::default()
        })
        .await
    }

    async fn list_images_named(&self, pattern: &str) -> Result<Vec<ImageSummary>, DriverError> {
        let filters = HashMap::from([("reference".to_owned(), vec![pattern.to_owned()])]);
        self.images(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        })
        .await
    }

    async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), DriverError> {
        let options = TagImageOptions {
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
        };
        self.inner
            .api
            .tag_image(image, Some(options))
            .await
            .map_err(|e| self.api_err("tagging an image", Some(image), e))
    }

    async fn untag(&self, reference: &str) -> Result<(), DriverError> {
        let image = self.inspect_raw(reference).await?;
        let tag = reference::with_default_tag(reference);
        // Podman lists a short name fully qualified, as its compat API's
        // builds and tags name it (`docker.io/library/x:1`) or as its own
        // do (`localhost/x:1`).
        let Some(tag) = tag_spellings(&tag)
            .into_iter()
            .find(|t| image.repo_tags.contains(t))
        else {
            return Err(DriverError::NotATag {
                reference: reference.to_owned(),
            });
        };
        let store = self.store().await?;
        let has_children = match store {
            ImageStore::Classic { .. } => self
                .list_images()
                .await?
                .iter()
                .any(|i| i.parent_id.as_deref() == Some(image.id.as_str())),
            ImageStore::Containerd => false,
        };
        if !reference::untag_keeps_image(
            &store,
            &image.repo_tags,
            &image.repo_digests,
            &tag,
            has_children,
        ) {
            return Err(DriverError::UntagWouldDelete {
                reference: reference.to_owned(),
            });
        }
        let options = RemoveImageOptions {
            force: false,
            noprune: true,
            ..Default::default()
        };
        let items = self
            .inner
            .api
            .remove_image(&tag, Some(options), None)
            .await
            .map_err(|e| self.api_err("untagging an image", Some(reference), e))?;
        let deleted: Vec<String> = items.into_iter().filter_map(|i| i.deleted).collect();
        if !deleted.is_empty() {
            warn!(
                reference,
                ?deleted,
                "the daemon deleted images while untagging"
            );
            return Err(DriverError::ImageDeleted {
                reference: reference.to_owned(),
                deleted,
            });
        }
        debug!(reference, image = %image.id, "untagged");
        Ok(())
    }

    fn push(
        &self,
        repo: &str,
        tag: &str,
        credentials: Option<RegistryCredentials>,
    ) -> BoxStream<Result<PushEvent, DriverError>> {
        let operation = "pushing an image";
        let reference = format!("{repo}:{tag}");
        // Podman's compat API verifies TLS for every registry unless told
        // (it does not count loopback as insecure, unlike dockerd);
        // dockerd ignores the parameter.
        let tls = if loopback_registry(repo) {
            "&tlsVerify=false"
        } else {
            ""
        };
        let platform = self
            .platform_query(46)
            .map(|q| format!("&{q}"))
            .unwrap_or_default();
        let uri = self.uri(&format!(
            "/images/{}/push?tag={}{tls}{platform}",
            encode(repo),
            encode(tag)
        ));
        let transport = self.inner.transport.clone();
        let host = transport.host.clone();
        let start = {
            let reference = reference.clone();
            async move {
                // `e30=` is base64 of `{}`: daemons before 28.3.3 need the
                // header even without credentials.
                let auth = credentials.map_or_else(|| "e30=".to_owned(), |c| c.header_value());
                let headers = [
                    ("X-Registry-Auth", auth.as_str()),
                    ("Content-Type", "application/json"),
                ];
                let response = transport
                    .send(operation, Method::POST, &uri, &headers)
                    .await?;
                let status = response.status();
                if status.is_success() {
                    return Ok(lines(operation, host, response.into_body()));
                }
                let message = error_message(response).await;
                Err(if status == http::StatusCode::NOT_FOUND {
                    DriverError::NoSuchImage { reference }
                } else {
                    DriverError::PushRefused { reference, message }
                })
            }
        };
        let events = stream::once(start)
            .map(|started| match started {
                Ok(lines) => lines.boxed(),
                Err(e) => stream::iter([Err(e)]).boxed(),
            })
            .flatten()
            .filter_map(move |line| {
                let event = match line {
                    Err(e) => Some(Err(e)),
                    Ok(line) if line.trim().is_empty() => None,
                    Ok(line) => match serde_json::from_str::<wire::ProgressMessage>(line.trim()) {
                        Ok(message) => message.into_push_event(&reference),
                        Err(e) => Some(Err(DriverError::Protocol {
                            operation,
                            source: Box::new(e),
                        })),
                    },
                };
                futures::future::ready(event)
            });
        Box::pin(until_first_error(events))
    }

    fn export_images(&self, references: &[String]) -> BoxStream<Result<Bytes, DriverError>> {
        let host = self.inner.transport.host.clone();
        let subject = references.join(", ");
        if let Some(platform) = self.platform_query(48) {
            return self.save_for_platform(references, &platform);
        }
        let names: Vec<&str> = references.iter().map(String::as_str).collect();
        let save = self.inner.long.export_images(&names);
        Box::pin(save.map_err(move |e| map_bollard("saving images", &host, Some(&subject), e)))
    }

    async fn load(&self, archive: BoxStream<Bytes>) -> Result<Vec<String>, DriverError> {
        let options = ImportImageOptions {
            quiet: false,
            ..Default::default()
        };
        let mut progress =
            self.inner
                .long
                .import_image_stream(options, archive.map(Ok::<_, Infallible>), None);
        let mut loaded = Vec::new();
        while let Some(item) = progress.next().await {
            let item = item.map_err(|e| match e {
                bollard::errors::Error::DockerStreamError { error } => {
                    DriverError::LoadFailed { message: error }
                }
                bollard::errors::Error::DockerResponseServerError { message, .. } => {
                    DriverError::LoadFailed { message }
                }
                e => self.api_err("loading images", None, e),
            })?;
            if let Some(line) = item.stream {
                let line = line.trim();
                if line.starts_with("Loaded image") {
                    loaded.push(line.to_owned());
                }
            }
        }
        Ok(loaded)
    }

    async fn build(
        &self,
        context_tar: Bytes,
        options: BuildOptions,
    ) -> Result<String, DriverError> {
        if !options.classic_builder {
            // BuildKit over the Engine API needs a gRPC session.
            debug!("building with the classic builder: BuildKit is not available through the API");
        }
        let labels: HashMap<String, String> = options.labels.iter().cloned().collect();
        let query = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(options.tag.clone()),
            rm: true,
            forcerm: true,
            labels: (!labels.is_empty()).then_some(labels),
            version: BuilderVersion::BuilderV1,
            ..Default::default()
        };
        let mut progress =
            self.inner
                .long
                .build_image(query, None, Some(bollard::body_full(context_tar)));
        let mut id = None;
        while let Some(item) = progress.next().await {
            let item = item.map_err(|e| match e {
                bollard::errors::Error::DockerStreamError { error } => DriverError::BuildFailed {
                    tag: options.tag.clone(),
                    message: error,
                },
                e => self.api_err("building an image", None, e),
            })?;
            if let Some(message) = item.error_detail.and_then(|d| d.message) {
                return Err(DriverError::BuildFailed {
                    tag: options.tag.clone(),
                    message,
                });
            }
            if let Some(aux_id) = item.aux.and_then(|a| a.id) {
                id = Some(aux_id);
            }
        }
        match id {
            Some(id) => Ok(id),
            None => Ok(self.inspect_raw(&options.tag).await?.id),
        }
    }

    async fn remove_image(&self, reference: &str) -> Result<(), DriverError> {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        self.inner
            .api
            .remove_image(reference, Some(options), None)
            .await
            .map_err(|e| self.api_err("removing an image", Some(reference), e))?;
        Ok(())
    }

    async fn create_reader(&self, spec: &ReaderContainer) -> Result<String, DriverError> {
        use bollard::models::{
            ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountType,
        };
        let mounts = spec
            .binds
            .iter()
            .map(|(source, target)| Mount {
                target: Some(target.clone()),
                source: Some(source.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                bind_options: Some(MountBindOptions {
                    // Only the folder itself: not the mounts below it
                    // (other containers' root filesystems).
                    non_recursive: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            // Never run: any command will do, and an image may have none.
            cmd: Some(vec!["/dlgrab-never-started".to_owned()]),
            entrypoint: Some(Vec::new()),
            network_disabled: Some(true),
            labels: Some(spec.labels.iter().cloned().collect()),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                network_mode: Some("none".to_owned()),
                readonly_rootfs: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .inner
            .api
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.api_err("creating a container", None, e))?;
        debug!(id = %created.id, name = %spec.name, "created a reader container");
        Ok(created.id)
    }

    fn archive(&self, container: &str, path: &str) -> BoxStream<Result<Bytes, DriverError>> {
        let host = self.inner.transport.host.clone();
        let options = DownloadFromContainerOptions {
            path: path.to_owned(),
        };
        let subject = format!("{container}:{path}");
        let stream = self
            .inner
            .long
            .download_from_container(container, Some(options));
        Box::pin(
            stream.map_err(move |e| {
                map_bollard("reading a container's files", &host, Some(&subject), e)
            }),
        )
    }

    async fn remove_container(&self, id: &str) -> Result<(), DriverError> {
        let options = RemoveContainerOptions {
            v: true,
            force: true,
            link: false,
        };
        match self.inner.api.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.api_err("removing a container", None, e)),
        }
    }

    async fn list_containers(&self, key: &str) -> Result<Vec<ContainerSummary>, DriverError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![key.to_owned()])])),
            ..Default::default()
        };
        let listed = self
            .inner
            .api
            .list_containers(Some(options))
            .await
            .map_err(|e| self.api_err("listing containers", None, e))?;
        Ok(listed
            .into_iter()
            .filter_map(|c| {
                let labels: std::collections::BTreeMap<_, _> =
                    c.labels.unwrap_or_default().into_iter().collect();
                // A daemon may filter loosely: keep only what carries the key.
                labels.contains_key(key).then(|| ContainerSummary {
                    id: c.id.unwrap_or_default(),
                    names: c
                        .names
                        .unwrap_or_default()
                        .into_iter()
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .collect(),
                    labels,
                })
            })
            .collect())
    }
}

/// The API versions a daemon speaks: its newest and, when it says, its oldest.
#[derive(Debug, Clone)]
struct ServerApi {
    newest: ClientVersion,
    /// `MinAPIVersion` of `/version` (Docker 29.0-29.2 refuse anything below 1.44).
    oldest: Option<ClientVersion>,
    /// What `/version` answered, when it did: kept for
    /// [`DockerDriver::info`], so that it is asked once (Podman 4.3 takes
    /// 0.1-0.3 s to answer it).
    version: Option<wire::Version>,
}

/// The version requests use: the daemon's newest or ours, whichever is
/// lower, yet never below the oldest the daemon accepts (a daemon refuses
/// requests pinned below its minimum, whatever bollard was built with).
fn choose_version(server: &ServerApi, ours: ClientVersion) -> ClientVersion {
    let version = if server.newest < ours {
        server.newest
    } else {
        ours
    };
    match server.oldest {
        Some(oldest) if version < oldest => oldest,
        _ => version,
    }
}

/// The daemon's API versions: `ApiVersion` and `MinAPIVersion` of an
/// unversioned `/version`, else the `API-Version` header of `/_ping`.
async fn negotiate(transport: &Transport) -> Result<ServerApi, DriverError> {
    let operation = "negotiating the API version";
    let (status, _, body) = transport
        .get(operation, &transport.uri(None, "/version"), SHORT)
        .await?;
    let from_version = status
        .is_success()
        .then(|| serde_json::from_slice::<wire::Version>(&body).ok())
        .flatten()
        .and_then(|v| {
            Some(ServerApi {
                newest: parse_version(&v.api_version)?,
                oldest: parse_version(&v.min_api_version),
                version: Some(v),
            })
        });
    if let Some(server) = from_version {
        return Ok(server);
    }
    let (ping_status, headers, ping_body) = transport
        .get(operation, &transport.uri(None, "/_ping"), SHORT)
        .await?;
    let newest = headers
        .get("api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_version);
    match newest {
        Some(newest) => Ok(ServerApi {
            newest,
            oldest: None,
            version: None,
        }),
        None if !status.is_success() => Err(DriverError::Api {
            operation,
            status: status.as_u16(),
            message: transport::error_message(&body),
        }),
        None => Err(DriverError::Protocol {
            operation,
            source: format!(
                "no API version in /version nor in /_ping ({ping_status}: {})",
                transport::error_message(&ping_body)
            )
            .into(),
        }),
    }
}

/// The ways a daemon may list the tag `tag`: as given, then, for a name
/// without a registry, as Podman lists it (`docker.io/library/x:1` or
/// `docker.io/a/x:1` after its compat API, `localhost/a/x:1` after its own).
fn tag_spellings(tag: &str) -> Vec<String> {
    let mut spellings = vec![tag.to_owned()];
    let first = tag.split('/').next().unwrap_or(tag);
    let has_registry =
        tag.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        if tag.contains('/') {
            spellings.push(format!("docker.io/{tag}"));
        } else {
            spellings.push(format!("docker.io/library/{tag}"));
        }
        spellings.push(format!("localhost/{tag}"));
    }
    spellings
}

/// Whether `repo` names a registry on this machine's loopback
/// (`127.0.0.1:PORT/…`, `localhost:PORT/…`, `[::1]:PORT/…`).
fn loopback_registry(repo: &str) -> bool {
    let Some((host, _)) = repo.split_once('/') else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name == "localhost"
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.trim().split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

fn version_string(v: &ClientVersion) -> String {
    format!("{}.{}", v.major_version, v.minor_version)
}

/// Maps a bollard error; `reference` is the image a 404 is about.
fn map_bollard(
    operation: &'static str,
    host: &str,
    reference: Option<&str>,
    error: bollard::errors::Error,
) -> DriverError {
    use bollard::errors::Error as E;
    match error {
        E::DockerResponseServerError {
            status_code: 404,
            message,
        } => match reference {
            Some(reference) => DriverError::NoSuchImage {
                reference: reference.to_owned(),
            },
            None => DriverError::Api {
                operation,
                status: 404,
                message,
            },
        },
        E::DockerResponseServerError {
            status_code,
            message,
        } => DriverError::Api {
            operation,
            status: status_code,
            message,
        },
        E::RequestTimeoutError => DriverError::Timeout { operation },
        e @ (E::JsonDataError { .. } | E::JsonSerdeError { .. } | E::APIVersionParseError {}) => {
            DriverError::Protocol {
                operation,
                source: Box::new(e),
            }
        }
        e => transport::classify(operation, host, Box::new(e)),
    }
}

/// Percent-encodes what is not allowed as is in a reference or tag.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The daemon's message in a failed response's body.
async fn error_message(response: http::Response<hyper::body::Incoming>) -> String {
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    transport::error_message(&body)
}

/// The lines of a response body.
fn lines(
    operation: &'static str,
    host: String,
    body: hyper::body::Incoming,
) -> impl Stream<Item = Result<String, DriverError>> + Send + 'static {
    let data = http_body_util::BodyDataStream::new(body).map_err(std::io::Error::other);
    FramedRead::new(
        StreamReader::new(data),
        LinesCodec::new_with_max_length(1 << 20),
    )
    .map_err(move |e| transport::classify(operation, &host, Box::new(e)))
}

/// The items of `items` up to and including the first error; nothing is
/// polled after it, and the inner stream is dropped then.
fn until_first_error<T: Send + 'static>(
    items: impl Stream<Item = Result<T, DriverError>> + Send + 'static,
) -> impl Stream<Item = Result<T, DriverError>> + Send + 'static {
    stream::unfold(Some(Box::pin(items)), |items| async move {
        let mut items = items?;
        let item = items.next().await?;
        let rest = if item.is_ok() { Some(items) } else { None };
        Some((item, rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = parse_version("1.41").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(parse_version("x").is_none());
        assert_eq!(encode("127.0.0.1:5000/x y"), "127.0.0.1:5000/x%20y");
    }

    #[test]
    fn tag_spellings_of_short_names() {
        assert_eq!(
            tag_spellings("a/x:1"),
            ["a/x:1", "docker.io/a/x:1", "localhost/a/x:1"]
        );
        assert_eq!(
            tag_spellings("x:1"),
            ["x:1", "docker.io/library/x:1", "localhost/x:1"]
        );
        assert_eq!(tag_spellings("127.0.0.1:5000/x:1"), ["127.0.0.1:5000/x:1"]);
        assert_eq!(tag_spellings("localhost/x:1"), ["localhost/x:1"]);
    }

    #[test]
    fn loopback_registries() {
        assert!(loopback_registry("127.0.0.1:5000/dlgrab-x"));
        assert!(loopback_registry("localhost:5000/a/b"));
        assert!(loopback_registry("[::1]:5000/x"));
        assert!(loopback_registry("127.0.0.2/x"));
        assert!(!loopback_registry("registry.example:5000/x"));
        assert!(!loopback_registry("10.0.0.1:5000/x"));
        assert!(!loopback_registry("dlgrab-x"));
    }

    #[track_caller]
    fn check_version(newest: &str, oldest: Option<&str>, ours: &str, expected: &str) {
        let v = |t: &str| parse_version(t).unwrap();
        let server = ServerApi {
            newest: v(newest),
            oldest: oldest.map(v),
            version: None,
        };
        assert_eq!(version_string(&choose_version(&server, v(ours))), expected);
    }

    #[test]
    fn chooses_an_api_version_the_daemon_accepts() {
        // 20.10 and Podman 4.3: their newest, below ours.
        check_version("1.41", Some("1.12"), "1.53", "1.41");
        check_version("1.41", None, "1.53", "1.41");
        // 28.5: ours would be higher, so theirs.
        check_version("1.51", Some("1.24"), "1.53", "1.51");
        // 29.0: newer than ours, minimum 1.44: ours.
        check_version("1.52", Some("1.44"), "1.49", "1.49");
        // A daemon whose minimum is above ours: never pin below it.
        check_version("1.60", Some("1.55"), "1.53", "1.55");
    }

    #[tokio::test]
    async fn stops_at_first_error() {
        let items = stream::iter([
            Ok(1),
            Err(DriverError::NoSuchImage {
                reference: "x".into(),
            }),
            Ok(2),
        ]);
        let got: Vec<_> = until_first_error(items).collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[1].is_err());
    }
}
