//! The driver's own data types.

/// Which image store the daemon uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageStore {
    /// The classic store: a graph driver (`overlay2`, `vfs`, …) with image
    /// configs by image ID and intermediate images along `Parent` chains.
    Classic {
        /// The graph driver's name, e.g. `overlay2`.
        driver: String,
    },
    /// The containerd image store (`io.containerd.snapshotter.v1`): image
    /// IDs are manifest or index digests, and blobs are kept compressed.
    Containerd,
}

/// What the daemon says about itself.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// The engine version, e.g. `20.10.24+dfsg1`.
    pub server_version: String,
    /// The highest API version the daemon speaks, e.g. `1.41`.
    pub api_version: String,
    /// The image store in use.
    pub image_store: ImageStore,
    /// The daemon's OS as Go names it, e.g. `linux`.
    pub os: String,
    /// The daemon's architecture as Go names it, e.g. `amd64`.
    pub arch: String,
    /// The daemon's data root (`DockerRootDir`, e.g. `/var/lib/docker`),
    /// as a path on the daemon's machine, when it reports one.
    pub root_dir: Option<std::path::PathBuf>,
    /// The daemon's address when it runs on another machine (`ssh://…`,
    /// another host's `tcp://…`): it cannot reach a registry on this
    /// machine's loopback, and `root_dir` is not a path here. `None` for a
    /// daemon on this machine (a unix socket, TCP to a loopback address).
    pub elsewhere: Option<String>,
    /// True for Podman's Docker-compatible API (its version names a
    /// `Podman Engine` component), which pushes as containers/image does:
    /// it asks about every layer and reports none as "Layer already
    /// exists".
    pub podman: bool,
}

/// One row of an image's history, oldest first.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// `sha256:…` when the daemon has an image for this row (the classic
    /// builder's intermediate images, and the image itself on the top row);
    /// `None` where `docker history` shows `<missing>`.
    pub id: Option<String>,
    /// When the instruction ran, in seconds since the epoch, if known.
    pub created: Option<i64>,
    /// The instruction, e.g. `/bin/sh -c #(nop)  CMD ["sh"]`.
    pub created_by: String,
    /// The size of the row's layer as the daemon reports it (0 for rows
    /// without a layer).
    pub size: i64,
    /// The comment stored with the row.
    pub comment: String,
    /// True when the row did not add a layer (`ENV`, `LABEL`, …).
    pub empty_layer: bool,
    /// For rows with a layer: the index of that layer in
    /// [`ImageDetails::diff_ids`].
    pub layer_index: Option<usize>,
}

/// An image as the daemon describes it.
#[derive(Debug, Clone)]
pub struct ImageDetails {
    /// The image ID, `sha256:…`.
    pub id: String,
    /// Tags, e.g. `busybox:latest` (never `<none>:<none>`).
    pub repo_tags: Vec<String>,
    /// Digest references, e.g. `busybox@sha256:…`.
    pub repo_digests: Vec<String>,
    /// The parent image ID on classic stores (images built with the classic
    /// builder), if any.
    pub parent: Option<String>,
    /// The creation time as the daemon prints it (RFC 3339).
    pub created: Option<String>,
    /// The image's OS, e.g. `linux`.
    pub os: String,
    /// The image's architecture, e.g. `amd64`.
    pub architecture: String,
    /// The architecture's variant, e.g. `v8`, when the image names one.
    pub variant: Option<String>,
    /// The layers' diff IDs (`sha256:…` of the uncompressed tars), base first.
    pub diff_ids: Vec<String>,
    /// The history, oldest first, each row mapped to its layer.
    pub history: Vec<HistoryRow>,
}

/// An image config as the daemon stores it, read out of a `docker save`
/// stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The config's exact bytes.
    pub bytes: Vec<u8>,
    /// The image index the image ID names, when it is one (the containerd
    /// store: BuildKit's attestations, multi-platform images), exactly as
    /// stored.
    pub index: Option<Vec<u8>>,
}

/// Which layer of an image is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelector {
    /// The image's last (top) layer.
    Top,
    /// The layer at this index in the diff IDs, base first (0 = base).
    Index(usize),
    /// The layer with this diff ID (`sha256:…`, or the bare hex).
    DiffId(String),
}

/// An image and one of its layers.
#[derive(Debug, Clone)]
pub struct ResolvedLayer {
    /// The image holding the layer.
    pub image: ImageDetails,
    /// The index of the layer in `image.diff_ids`.
    pub layer_index: usize,
    /// The full image ID, when what the user typed was an image ID (full,
    /// short, or an intermediate image's); `None` for names and diff IDs.
    pub requested_id: Option<String>,
}

impl ResolvedLayer {
    /// The diff ID of the resolved layer.
    pub fn diff_id(&self) -> &str {
        &self.image.diff_ids[self.layer_index]
    }
}

/// One entry of the image list (`GET /images/json?all=true`).
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The image ID, `sha256:…`.
    pub id: String,
    /// The parent image ID (classic store, locally built images), if any.
    pub parent_id: Option<String>,
    /// Tags (never `<none>:<none>`).
    pub repo_tags: Vec<String>,
    /// Digest references (never `<none>@<none>`).
    pub repo_digests: Vec<String>,
}

/// Credentials the daemon presents to the registry it pushes to: sent in
/// the `X-Registry-Auth` header of the push request, as `docker push` does
/// after `docker login`.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
    /// The registry, as the image reference names it (e.g. `127.0.0.1:5000`).
    pub server_address: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("server_address", &self.server_address)
            .finish()
    }
}

impl RegistryCredentials {
    /// The `X-Registry-Auth` value: padded URL-safe base64 of
    /// `{"username","password","serveraddress"}` (what the daemons and
    /// Podman's compat API decode).
    pub fn header_value(&self) -> String {
        use base64::Engine;
        let json = serde_json::json!({
            "username": self.username,
            "password": self.password,
            "serveraddress": self.server_address,
        });
        base64::engine::general_purpose::URL_SAFE.encode(json.to_string())
    }
}

/// One item of a push's progress.
#[derive(Debug, Clone, PartialEq)]
pub enum PushEvent {
    /// Progress of one layer (or the config), e.g. `Preparing`, `Pushing`,
    /// `Pushed`, `Layer already exists`. `id` is the daemon's short ID.
    Layer {
        /// The short ID the daemon shows for the layer.
        id: String,
        /// The status text.
        status: String,
        /// Bytes done, while pushing.
        current: Option<u64>,
        /// Bytes in all, while pushing.
        total: Option<u64>,
    },
    /// A status line without a layer, e.g. `The push refers to repository […]`.
    Status(String),
    /// The push is complete: the manifest was put under `tag`.
    Pushed {
        /// The tag pushed.
        tag: String,
        /// The manifest digest, `sha256:…`.
        digest: String,
        /// The manifest size in bytes, if reported.
        size: Option<u64>,
    },
}

/// Options for [`crate::DockerDriver::build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The tag to give the built image (`name:tag`).
    pub tag: String,
    /// Use the classic builder (`version=1`): one intermediate image per
    /// instruction, visible in `docker history`.
    pub classic_builder: bool,
    /// Labels to set on the image.
    pub labels: Vec<(String, String)>,
}

/// A container made only to read files of the daemon's machine through the
/// archive API (`GET /containers/{id}/archive`): created from an image the
/// daemon already has, never started, with no network, its `binds` mounted
/// read-only and not recursively. The daemon mounts a stopped container's
/// volumes for the archive API, so an API client reads what the daemon can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderContainer {
    /// The container's name.
    pub name: String,
    /// The image it is created from (an ID or a name the daemon has).
    pub image: String,
    /// Labels to set on it, e.g. the run that made it.
    pub labels: Vec<(String, String)>,
    /// Paths of the daemon's machine and where they appear in the
    /// container, each mounted read-only.
    pub binds: Vec<(std::path::PathBuf, String)>,
}

/// A container as listed by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    /// The container ID.
    pub id: String,
    /// Its names, without the leading `/`.
    pub names: Vec<String>,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
}
