//! The one error type of the test kit.

use std::io;

/// What went wrong while talking to a daemon or building an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `docker` CLI could not be started.
    #[error("cannot run the docker CLI (is docker installed?)")]
    Spawn(#[source] io::Error),
    /// A `docker` command did not finish in time.
    #[error("`docker {args}` did not finish within {secs} s")]
    Timeout {
        /// The command's arguments, joined.
        args: String,
        /// The limit.
        secs: u64,
    },
    /// A `docker` command exited non-zero.
    #[error("`docker {args}` failed ({status}): {output}")]
    DockerFailed {
        /// The command's arguments, joined.
        args: String,
        /// Its exit status.
        status: String,
        /// The end of its combined output.
        output: String,
    },
    /// A `docker` command printed something the kit cannot read.
    #[error("unexpected output from `docker {args}`: {detail}")]
    BadOutput {
        /// The command's arguments, joined.
        args: String,
        /// What was wrong.
        detail: String,
    },
    /// No statically linked busybox to put into images.
    #[error(
        "no static busybox at {path}: install busybox-static (apt-get install -y busybox-static)"
    )]
    BusyboxMissing {
        /// Where it was looked for.
        path: String,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// The busybox found is dynamically linked, so it cannot run in a `FROM scratch` image.
    #[error(
        "{path} is dynamically linked: install busybox-static (apt-get install -y busybox-static)"
    )]
    BusyboxNotStatic {
        /// The file.
        path: String,
    },
    /// A BuildKit build on a dockerd was not given the docker-buildx plugin.
    #[error("daemon {daemon}: a BuildKit build needs the docker-buildx plugin")]
    NoBuildx {
        /// The daemon's name.
        daemon: String,
    },
    /// The registry the test serves an image from failed.
    #[error("test registry: {detail}")]
    Registry {
        /// What failed.
        detail: String,
    },
    /// Writing the build context to `docker build` failed.
    #[error("cannot write the build context")]
    Context(#[source] io::Error),
    /// The built image does not have the layers or history rows its steps imply.
    #[error("image {tag}: {detail}")]
    Mismatch {
        /// The image.
        tag: String,
        /// What did not match.
        detail: String,
    },
}
