//! `testkit`: helpers for dlgrab's integration tests against real Docker daemons.
//!
//! - [`daemon_or_skip`] finds the daemon under test (`DOCKER_HOST`, or the
//!   default socket) and tells its store and version; without one it prints
//!   `SKIP <test>: <reason>` and returns `None`, or panics when
//!   `DLGRAB_REQUIRE_DAEMON=1` (as `cargo xtask test` sets).
//! - [`ImageBuilder`] builds small deterministic images with the classic
//!   builder (`DOCKER_BUILDKIT=0`, a generated context tar piped to
//!   `docker build -`), one layer per step, and reports their image ID, diff
//!   IDs and history rows ([`BuiltImage`]).
//! - [`ImageBuilder::build_with_buildkit`] builds the same images with
//!   BuildKit (`docker buildx build --builder default`, the docker-buildx
//!   plugin from [`buildx_or_skip`] in a temporary `DOCKER_CONFIG`):
//!   attestations, `COPY --link`, zstd layers ([`BuildKitOptions`]); Podman
//!   falls back to the classic builder.
//! - [`PulledIndex`] serves a multi-platform image index (OCI, or a Docker
//!   manifest list) from an in-process `shim-registry` whose other
//!   platform's blobs are missing, and has the daemon pull it.
//! - [`random_bytes`] / [`RandomReader`]: seeded incompressible content.
//! - [`unique_name`]: repository names unique per test run.
//! - [`Daemon::dlgrab`] / [`dlgrab_bin`]: the `dlgrab` binary against the daemon;
//!   [`result`] and [`items`] read its `--json` document, checked against
//!   `docs/result.schema.json`.
//! - [`DockerMember`]: a non-root member of the `docker` group to run
//!   dlgrab as ([`DockerMember::dlgrab_command`]), writing into a
//!   [`MemberDir`] it owns.
//! - [`Daemon::tcp_host`] / [`Daemon::over_tcp`] and [`Daemon::own_netns`]:
//!   the daemon under test over plain TCP, and whether its loopback is
//!   ours (`cargo xtask test` sets both for daemon `n`, in a network
//!   namespace of its own).
//! - [`Sshd`] and [`TlsProxy`]: a daemon reached over ssh, or over TCP with
//!   TLS and a client certificate, as the Docker CLI reaches one.
//!
//! Helpers whose name does not start with `try_` panic with a readable
//! message on failure, as test helpers do.

#![warn(missing_docs)]

mod authz_plugin;
mod authz_proxy;
mod background;
mod buildkit;
mod buildx;
mod cleanup;
mod daemon;
mod dlgrab;
mod error;
mod image;
mod member;
mod names;
mod private;
mod process;
mod pulled;
mod random;
mod sshd;
mod tar;
mod tls_proxy;

pub use authz_plugin::AuthzPlugin;
pub use authz_proxy::{AUTHZ_MESSAGE, AUTHZ_PLUGIN, AuthzProxy};
pub use buildkit::{BuildKitImage, BuildKitOptions, BuildKitOutput, BuiltBy};
pub use buildx::{Buildx, buildx_or_skip};
pub use daemon::{Daemon, Engine, Store, daemon_or_skip, default_host};
pub use dlgrab::{dlgrab_bin, exported_file, items, result, succeeded};
pub use error::Error;
pub use image::{BuiltImage, HistoryRow, ImageBuilder, busybox_path};
pub use member::{DockerMember, MEMBER, MemberDir, is_root};
pub use names::unique_name;
pub(crate) use names::unique_scratch_name;
pub use private::{PrivateDaemon, Tmpfs};
pub use pulled::{IndexFlavour, PulledIndex};
pub use random::{RandomReader, random_bytes};
pub use sshd::{SSH_HOST, Sshd};
pub use tar::tar_paths;
pub use tls_proxy::{Fault, TlsProxy};

/// Environment variable naming the daemon under test (`a`, `b`, `c`).
pub const ENV_DAEMON_NAME: &str = "DLGRAB_TEST_DAEMON";
/// Environment variable naming a plain `tcp://` host the daemon under
/// test also listens on ([`Daemon::tcp_host`]; `cargo xtask test` sets it
/// for daemon `n`: `tcp://10.203.0.2:2375`).
pub const ENV_TCP_HOST: &str = "DLGRAB_TEST_TCP_HOST";
/// Environment variable set to `1` when the daemon under test runs in a
/// network namespace of its own, its 127.0.0.1 not ours
/// ([`Daemon::own_netns`]; `cargo xtask test` sets it for daemon `n`).
pub const ENV_NETNS: &str = "DLGRAB_TEST_NETNS";
/// Environment variable that turns a skip into a failure when set to `1`.
pub const ENV_REQUIRE_DAEMON: &str = "DLGRAB_REQUIRE_DAEMON";
/// Environment variable naming a Docker CLI config folder whose
/// `cli-plugins/docker-buildx` the BuildKit builds use (`cargo xtask test`
/// sets it to the plugin it fetched).
pub const ENV_BUILDX_CONFIG: &str = "DLGRAB_BUILDX_CONFIG";
/// Environment variable that turns "no docker-buildx" into a failure when
/// set to `1` (as `cargo xtask test` sets), instead of a skip.
pub const ENV_REQUIRE_BUILDX: &str = "DLGRAB_REQUIRE_BUILDX";
