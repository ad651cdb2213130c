//! An embeddable, streaming [OCI Distribution Spec v1.1] registry (the
//! registry side).
//!
//! `shim-registry` serves blobs, uploads, manifests, tags and referrers from a
//! pluggable [`storage::Storage`] (in memory by default, or [`storage::FsStorage`]
//! on disk). Blob data is streamed: request bodies are hashed and written as
//! they arrive, and blob reads are streamed back from storage, so a blob is
//! never held whole in memory (except by [`storage::MemoryStorage`], whose job
//! that is).
//!
//! One listening port speaks both plain HTTP/1.1 and HTTPS (a self-signed
//! certificate made at start-up by default): the first byte of each connection
//! decides. Clients that try HTTPS first and clients that only speak HTTP are
//! both served.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shim_registry::{ChannelSink, Registry, TlsConfig};
//! use std::sync::Arc;
//!
//! let (sink, _events) = ChannelSink::new();
//! let registry = Registry::builder()
//!     .event_sink(Arc::new(sink))
//!     .tls(TlsConfig::Disabled)
//!     .build()?;
//! let handle = registry.spawn("127.0.0.1:0".parse()?).await?;
//! assert!(handle.url().starts_with("http://127.0.0.1:"));
//! // ... point a client at handle.url() ...
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # The API
//!
//! - **Starting**: [`Registry::builder`] configures a [`Registry`]
//!   ([`RegistryBuilder`]; building fails only with a [`BuildError`]), which
//!   is then served on a listener the caller bound ([`Registry::serve`]),
//!   spawned on a background task ([`Registry::spawn`], a
//!   [`RegistryHandle`] with the bound address and a graceful shutdown), or
//!   mounted into another server as a hyper service ([`Registry::service`],
//!   a [`RegistryService`] answering with [`ResponseBody`]).
//! - **Content**: [`storage`] (the streaming [`storage::Storage`] trait and
//!   its memory and filesystem backends) and [`seed`] (an OCI image layout
//!   or a `docker save` archive imported into any storage, and a repository
//!   exported as an OCI layout).
//! - **Seams**: a [`PresencePolicy`] answers "is this blob present?" for blob
//!   `HEAD`, `GET` and cross-repository mounts ([`Presence`]); an
//!   [`EventSink`] is told about uploads, committed blobs, answered `HEAD`s
//!   and manifest pushes ([`RegistryEvent`]; [`ChannelSink`] turns them into
//!   a stream).
//! - **Test fixtures**: [`auth`] (none, Basic, or Bearer tokens from a
//!   built-in token endpoint), [`fault`] (errors, delays and cut bodies on
//!   purpose), [`TlsConfig`], a manifest size limit and an upload budget.
//! - **[Push control](push_control)**, apart from the rest: holding uploads
//!   past a size, pacing blob `HEAD`s, refusing manifests. Made for one
//!   embedder that has a container engine push into the registry only to
//!   read some of its layers; off by default.
//!
//! [`oci_spec`] is re-exported: its [`Digest`](oci_spec::image::Digest) and
//! manifest types appear in this API.
//!
//! # Features
//!
//! - `cli` (off by default): the `shim-registry` program (`serve`,
//!   `export`), with clap and a tracing subscriber
//!   (`cargo install shim-registry --features cli`). The library needs
//!   neither.
//!
//! The crate knows nothing about Docker or image layers; it only implements
//! the distribution protocol, and it never prints: it emits [`tracing`]
//! events.
//!
//! [OCI Distribution Spec v1.1]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md
//! [`tracing`]: https://docs.rs/tracing
#![warn(missing_docs)]

/// The README's examples, compiled (and run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod auth;
mod budget;
mod events;
pub mod fault;
mod policy;
pub mod push_control;
pub mod seed;
mod server;
mod state;
pub mod storage;
mod tls;
mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use oci_spec;

pub use events::{ChannelSink, EventSink, RegistryEvent};
pub use policy::{Presence, PresencePolicy};
#[doc(no_inline)]
pub use push_control::{HeadPace, UploadHold};
pub use server::{RegistryHandle, ServeError};
pub use tls::TlsConfig;
pub use wire::{RegistryService, ResponseBody};

use budget::UploadBudget;
use state::Shared;
use storage::{MemoryStorage, Storage};

/// The largest manifest body accepted by default (the spec asks registries
/// to accept at least 4 MiB).
const DEFAULT_MAX_MANIFEST: usize = 32 << 20;

/// How long an upload session may sit idle before it is discarded.
const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(10 * 60);

/// An OCI registry ready to be served.
///
/// Cheap to clone: clones share storage, policy and event sink.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tls", &self.tls.is_some())
            .field("upload_expiry", &self.shared.upload_expiry)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Starts configuring a registry (in-memory storage, every blob answered
    /// from storage, no events, self-signed TLS beside plain HTTP).
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// The registry as a hyper service, for mounting into another server.
    ///
    /// The service expects paths starting with `/v2/`.
    pub fn service(&self) -> RegistryService {
        RegistryService::new(self.shared.clone())
    }

    /// Serves connections accepted from `listener` until `shutdown` resolves,
    /// then stops accepting and lets requests in flight finish (for a bounded
    /// time).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        server::serve(self, listener, shutdown).await
    }

    /// Binds `addr` and serves on a background task.
    ///
    /// Dropping the returned handle also stops the server (without waiting);
    /// [`RegistryHandle::shutdown`] stops it gracefully.
    pub async fn spawn(self, addr: std::net::SocketAddr) -> Result<RegistryHandle, ServeError> {
        server::spawn(self, addr).await
    }
}

/// Configures a [`Registry`].
#[must_use]
pub struct RegistryBuilder {
    storage: Option<Arc<dyn Storage>>,
    presence: Option<Arc<dyn PresencePolicy>>,
    events: Option<Arc<dyn EventSink>>,
    tls: TlsConfig,
    upload_expiry: Duration,
    auth: auth::Auth,
    faults: Option<fault::Faults>,
    max_manifest: usize,
    upload_budget: Option<u64>,
    upload_hold: Option<UploadHold>,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        Self {
            storage: None,
            presence: None,
            events: None,
            tls: TlsConfig::SelfSigned,
            upload_expiry: DEFAULT_UPLOAD_EXPIRY,
            auth: auth::Auth::none(),
            faults: None,
            max_manifest: DEFAULT_MAX_MANIFEST,
            upload_budget: None,
            upload_hold: None,
        }
    }
}

impl std::fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("tls", &self.tls)
            .field("upload_expiry", &self.upload_expiry)
            .field("auth", &self.auth)
            .field("faults", &self.faults)
            .field("max_manifest", &self.max_manifest)
            .field("upload_budget", &self.upload_budget)
            .field("upload_hold", &self.upload_hold)
            .finish_non_exhaustive()
    }
}

impl RegistryBuilder {
    /// Who may do what (default: [`auth::Auth::none`], everyone everything).
    pub fn auth(mut self, auth: auth::Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Faults to inject (default: none); see [`fault`].
    pub fn faults(mut self, faults: fault::Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The largest manifest body accepted, in bytes (default 32 MiB); a
    /// larger one is answered `413` with `SIZE_INVALID`.
    pub fn max_manifest_size(mut self, bytes: usize) -> Self {
        self.max_manifest = bytes;
        self
    }

    /// The most blob bytes the registry takes in over its life, over all
    /// uploads (failed and cancelled ones count too); past it, uploads are
    /// answered `413` with `SIZE_INVALID` (default: no bound).
    pub fn upload_budget(mut self, bytes: u64) -> Self {
        self.upload_budget = Some(bytes);
        self
    }

    /// Where blobs, uploads and manifests live (default: [`MemoryStorage`]).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Who decides whether a blob is present (default: [`Presence::Stored`]
    /// for every blob).
    pub fn presence(mut self, presence: Arc<dyn PresencePolicy>) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Who is told about what happens (default: nobody).
    pub fn event_sink(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// Whether and how TLS is spoken beside plain HTTP on the same port
    /// (default: [`TlsConfig::SelfSigned`]).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// How long an upload session may stay idle before it is discarded with
    /// its data (default: 10 minutes).
    pub fn upload_expiry(mut self, idle: Duration) -> Self {
        self.upload_expiry = idle;
        self
    }

    /// Builds the registry; makes the self-signed certificate if asked to.
    pub fn build(self) -> Result<Registry, BuildError> {
        let tls = tls::server_config(&self.tls)?;
        let shared = Shared {
            storage: self
                .storage
                .unwrap_or_else(|| Arc::new(MemoryStorage::new())),
            presence: self
                .presence
                .unwrap_or_else(|| Arc::new(policy::StoredPolicy)),
            events: self.events.unwrap_or_else(|| Arc::new(events::NoEvents)),
            upload_expiry: self.upload_expiry,
            auth: auth::Authorizer::new(self.auth),
            faults: self.faults.map(fault::FaultState::new),
            max_manifest: self.max_manifest,
            upload_budget: self.upload_budget.map(|b| Arc::new(UploadBudget::new(b))),
            upload_hold: self.upload_hold,
            shutdowns: tokio::sync::watch::Sender::new(0),
        };
        Ok(Registry {
            shared: Arc::new(shared),
            tls,
        })
    }
}

/// [Push control](push_control): made for steering a client's push, not
/// needed to serve one.
impl RegistryBuilder {
    /// Holds upload sessions past the hold's size (default: none); see
    /// [`UploadHold`].
    pub fn upload_hold(mut self, hold: UploadHold) -> Self {
        self.upload_hold = Some(hold);
        self
    }
}

/// Why a [`Registry`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate")]
    SelfSignedCertificate {
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The provided certificate chain is not PEM or holds no certificate.
    #[error("cannot read the provided certificate chain")]
    CertificateChain {
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The provided private key is not a PEM private key.
    #[error("cannot read the provided private key")]
    PrivateKey {
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// rustls refused the certificate and key.
    #[error("cannot configure tls with the certificate and key")]
    TlsSetup {
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
