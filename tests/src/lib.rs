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
//! - [`random_bytes`] / [`RandomReader`]: seeded incompressible content.
//! - [`unique_name`]: repository names unique per test run.
//! - [`Daemon::dlgrab`] / [`dlgrab_bin`]: the `dlgrab` binary against the daemon.
//! - [`Sshd`] and [`TlsProxy`]: a daemon reached over ssh, or over TCP with
//!   TLS and a client certificate, as the Docker CLI reaches one.
//!
//! Helpers whose name does not start with `try_` panic with a readable
//! message on failure, as test helpers do.

#![warn(missing_docs)]

mod cleanup;
mod daemon;
mod dlgrab;
mod error;
mod image;
mod names;
mod private;
mod process;
mod random;
mod sshd;
mod tar;
mod tls_proxy;

pub use daemon::{Daemon, Engine, Store, daemon_or_skip, default_host};
pub use dlgrab::{dlgrab_bin, succeeded};
pub use error::Error;
pub use image::{BuiltImage, HistoryRow, ImageBuilder, busybox_path};
pub use names::unique_name;
pub use private::{PrivateDaemon, Tmpfs};
pub use random::{RandomReader, random_bytes};
pub use sshd::{SSH_HOST, Sshd};
pub use tar::tar_paths;
pub use tls_proxy::{Fault, TlsProxy};

/// Environment variable naming the daemon under test (`a`, `b`, `c`).
pub const ENV_DAEMON_NAME: &str = "DLGRAB_TEST_DAEMON";
/// Environment variable that turns a skip into a failure when set to `1`.
pub const ENV_REQUIRE_DAEMON: &str = "DLGRAB_REQUIRE_DAEMON";
