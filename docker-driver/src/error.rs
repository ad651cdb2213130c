//! [`DriverError`], and [`DataRootError`] for what is read from a data
//! root without a daemon.

/// A boxed error cause.
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The daemon addresses this crate dials, as the messages list them.
const HOSTS_ACCEPTED: &str = "unix://, tcp://, http:// or ssh://[user@]host[:port]";

/// How the layers of an image with `count` layers are numbered.
fn layers_numbered(count: usize) -> String {
    match count {
        0 => "it has no layers".to_owned(),
        1 => "its one layer is numbered 0".to_owned(),
        n => format!("its {n} layers are numbered 0 (the base) to {}", n - 1),
    }
}

/// What went wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// `DOCKER_HOST` (or the host given) is not a `unix://`, `tcp://`,
    /// `http://` or `ssh://` address.
    #[error("unsupported docker host {host:?}: expected {HOSTS_ACCEPTED}")]
    InvalidHost {
        /// The host as given.
        host: String,
    },
    /// Both a context and a host were given (`--context` with `--host`).
    #[error("conflicting options: a docker context and a docker host cannot both be given")]
    ConflictingDaemonOptions,
    /// The Docker CLI's `config.json` cannot be read.
    #[error("cannot read the docker cli config {}", file.display())]
    DockerConfig {
        /// The file.
        file: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Source,
    },
    /// The context store has no such context.
    #[error("docker context {context:?} not found: {} does not exist", file.display())]
    ContextNotFound {
        /// The context's name.
        context: String,
        /// Its `meta.json`, which is missing.
        file: std::path::PathBuf,
    },
    /// A context's `meta.json` cannot be read.
    #[error("cannot read docker context {context:?} from {}", file.display())]
    ContextUnreadable {
        /// The context's name.
        context: String,
        /// Its `meta.json`.
        file: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Source,
    },
    /// A context names no docker host, or one dlgrab cannot reach.
    #[error(
        "docker context {context:?} ({}) has docker host {host:?}: expected {HOSTS_ACCEPTED}",
        file.display()
    )]
    ContextHost {
        /// The context's name.
        context: String,
        /// Its `meta.json`.
        file: std::path::PathBuf,
        /// The host it names (empty when none).
        host: String,
    },
    /// The TLS material of a context (or of `DOCKER_CERT_PATH`) is unusable.
    #[error("cannot use the tls material of docker context {context:?}: {}", file.display())]
    TlsMaterial {
        /// The context's name (`default` for `DOCKER_CERT_PATH`).
        context: String,
        /// The file (or folder) at fault.
        file: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Source,
    },
    /// Nothing answers at the daemon's address.
    #[error("cannot connect to the docker daemon at {host}")]
    Unreachable {
        /// The daemon's address.
        host: String,
        /// The cause.
        #[source]
        source: Source,
    },
    /// A port of an `ssh://` host could not be forwarded to this machine.
    #[error("cannot forward a port of {host} to this machine: {detail}")]
    Tunnel {
        /// The `ssh://` host.
        host: String,
        /// What ssh said.
        detail: String,
    },
    /// The daemon's socket is not accessible to this user.
    #[error("permission denied connecting to the docker daemon at {host}")]
    PermissionDenied {
        /// The daemon's address.
        host: String,
        /// The cause.
        #[source]
        source: Source,
    },
    /// The daemon has no such image.
    #[error("no such image: {reference}")]
    NoSuchImage {
        /// What was looked up.
        reference: String,
    },
    /// The image is here, but not for the platform asked for.
    #[error("{reference} has no {wanted} image here (it has {})", present.join(", "))]
    NoSuchPlatform {
        /// What was looked up.
        reference: String,
        /// The platform asked for, e.g. `linux/arm64`.
        wanted: String,
        /// The platforms it has, e.g. `linux/amd64`, `linux/arm64/v8
        /// (content not here)`.
        present: Vec<String>,
    },
    /// A short image ID matches several images.
    #[error("image id prefix {prefix} is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousId {
        /// The prefix as given.
        prefix: String,
        /// The full IDs it matches.
        candidates: Vec<String>,
    },
    /// The image has no layer at the index asked for.
    #[error("{reference} has no layer {index}: {}", layers_numbered(*count))]
    NoLayerAtIndex {
        /// The image or layer as the caller named it.
        reference: String,
        /// The index asked for (0 = base).
        index: usize,
        /// How many layers the image has.
        count: usize,
    },
    /// The image has no such layer.
    #[error("image {image} has no layer {layer}")]
    NoSuchLayer {
        /// The image ID.
        image: String,
        /// The layer asked for (`top`, `index 3`, or a diff ID).
        layer: String,
    },
    /// The daemon refused the push, or reported an error while pushing.
    #[error("pushing {reference} failed: {message}")]
    PushRefused {
        /// `repo:tag`.
        reference: String,
        /// The daemon's message.
        message: String,
    },
    /// The reference is not a tag of any image (untag takes tags only).
    #[error("{reference} is not an image tag")]
    NotATag {
        /// The reference as given.
        reference: String,
    },
    /// Removing the tag would delete the image; nothing was removed.
    #[error("untagging {reference} would delete its image, so it was left in place")]
    UntagWouldDelete {
        /// The tag.
        reference: String,
    },
    /// The daemon deleted images while it was asked only to untag.
    #[error("the daemon deleted {} while untagging {reference}", deleted.join(", "))]
    ImageDeleted {
        /// The tag.
        reference: String,
        /// The IDs the daemon reported as deleted.
        deleted: Vec<String>,
    },
    /// The daemon reported an error while loading an archive.
    #[error("loading images failed: {message}")]
    LoadFailed {
        /// The daemon's message.
        message: String,
    },
    /// The daemon reported an error while building.
    #[error("building {tag} failed: {message}")]
    BuildFailed {
        /// The tag asked for.
        tag: String,
        /// The daemon's message.
        message: String,
    },
    /// The `docker save` stream did not contain the image config.
    #[error("the saved archive of {image} has no image config")]
    ConfigNotFound {
        /// The image ID.
        image: String,
    },
    /// The image is an index with no image manifest for the platform.
    #[error("cannot pick the image manifest of {image}")]
    NoPlatformManifest {
        /// The image ID.
        image: String,
        /// Which platforms it has.
        #[source]
        source: crate::manifest::IndexChoiceError,
    },
    /// The config read does not hash to the digest it was stored under.
    #[error("the image config of {image} hashes to {actual}, not {expected}")]
    ConfigMismatch {
        /// The image ID.
        image: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// A Docker data root's files could not be read as Docker keeps them
    /// ([`DataRootDriver`](crate::DataRootDriver) answering a driver call).
    #[error(transparent)]
    DataRoot(#[from] DataRootError),
    /// The operation needs a running daemon, and there is only a data root.
    #[error("{operation} needs a running docker daemon; a data root alone cannot do it")]
    NoDaemon {
        /// What was asked.
        operation: &'static str,
    },
    /// The request timed out.
    #[error("{operation} timed out")]
    Timeout {
        /// What was being done.
        operation: &'static str,
    },
    /// The daemon answered with an error status.
    #[error("{operation}: the daemon answered {status}: {message}")]
    Api {
        /// What was being done.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The connection failed in the middle of a request.
    #[error(
        "{operation}: the connection to the docker daemon broke (did the daemon stop or restart?)"
    )]
    Transport {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Source,
    },
    /// The daemon's answer could not be understood.
    #[error("{operation}: unexpected answer from the daemon")]
    Protocol {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Source,
    },
    /// The daemon sent nothing for longer than the caller allows (a push or
    /// save stream that hangs).
    #[error(
        "{operation}: the docker daemon sent nothing for {seconds} s (a hung daemon or push; --timeout sets the limit)"
    )]
    Stalled {
        /// What was being done.
        operation: &'static str,
        /// The limit, in seconds.
        seconds: u64,
    },
}

/// What went wrong reading a Docker data root's files without a daemon: a
/// classic store's image and layer databases
/// ([`LayerStore`](crate::LayerStore)) or containerd's content store
/// ([`ContentStore`](crate::ContentStore)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataRootError {
    /// A file or folder of the data root could not be read.
    #[error("cannot read {} in the docker data root", path.display())]
    Read {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of the data root is not what Docker writes there.
    #[error("unexpected content in {}", path.display())]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: Source,
    },
    /// A blob of a containerd content store is not what its name says.
    #[error("unexpected content in {}: {detail}", path.display())]
    Content {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An image ID or blob digest is not `sha256:` and 64 hex digits, so
    /// no file of the store can be named after it.
    #[error("not a sha256 digest: {digest:?}")]
    NotADigest {
        /// The ID or digest as given.
        digest: String,
    },
    /// The image config stored under an image ID does not hash to it.
    #[error("the image config of {image} hashes to {actual}, not {expected}")]
    ConfigMismatch {
        /// The image ID.
        image: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// The data root holds no classic image store (`image/<driver>/layerdb`).
    #[error("{} holds no classic image store (no image/<driver>/layerdb)", root.display())]
    NoClassicStore {
        /// The data root.
        root: std::path::PathBuf,
    },
    /// The classic store's graph driver keeps layers in a way not read here.
    #[error(
        "layers of the {driver} graph driver cannot be read from the data root (overlay2, fuse-overlayfs and vfs can)"
    )]
    UnsupportedGraphDriver {
        /// The graph driver.
        driver: String,
    },
    /// The layer store has no layer with this chain ID and diff ID.
    #[error("layer {diff_id} is not in the layer store (chain id {chain_id})")]
    LayerNotInStore {
        /// The layer's diff ID.
        diff_id: String,
        /// The chain ID it was looked up by.
        chain_id: String,
    },
}
