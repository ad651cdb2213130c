//! What a reference or a run failed on, for `--json`: a [`Kind`] from a
//! small stable set, read off the typed errors of the run ([`Kind::of`])
//! or put by dlgrab on its own refusals ([`Kind::tag`], [`Kind::error`]),
//! and the whole message ([`Failure`]). Below the flows (`export`,
//! `delta`, `copy`) that use it; `json` writes it out.

use std::fmt;

use serde::Serialize;

/// What the run failed on, in words a program can match: a small set that
/// only grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A combination of flags dlgrab refuses (clap's usage errors print no
    /// document).
    BadArguments,
    /// The reference typed is not one (`Bad:Ref`, `<missing>`).
    BadReference,
    /// Which daemon to use cannot be told: a bad `DOCKER_HOST`, context,
    /// CLI config or TLS material.
    DaemonConfig,
    /// The daemon (or `--to`'s DEST) cannot be reached.
    DaemonUnreachable,
    /// The daemon's socket refuses this user.
    PermissionDenied,
    /// No image by that name or ID.
    NoSuchImage,
    /// A short ID matching several images.
    AmbiguousId,
    /// The image has no such layer (`--index`, `--diff-id`).
    NoSuchLayer,
    /// The image is not of `--platform`'s platform.
    NoSuchPlatform,
    /// `--since`: BASE shares no layer with IMAGE.
    NotABase,
    /// `--since`: IMAGE has no layer BASE lacks.
    NothingNew,
    /// Writing the output failed or was refused (already there, disk
    /// full, a closed pipe).
    Output,
    /// Data hashed to another digest or diff ID than the daemon reported.
    VerificationFailed,
    /// No route could get the layers out of the daemon.
    RouteFailed,
    /// The daemon stopped answering (`--timeout`, a stalled stream).
    Timeout,
    /// The daemon, or a data root, failed or answered unexpectedly.
    DaemonError,
    /// Ctrl-C or SIGTERM stopped the run.
    Interrupted,
    /// Anything else: a bug to report.
    Internal,
}

impl Kind {
    /// The kind of `error`: the first cause in its chain, from the
    /// outermost, that says what failed (a [`Tagged`] error, a reference,
    /// driver or writer error, a closed pipe); [`Kind::Internal`] when none
    /// does.
    pub(crate) fn of(error: &anyhow::Error) -> Kind {
        error
            .chain()
            .find_map(Kind::of_cause)
            .unwrap_or(Kind::Internal)
    }

    fn of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<Kind> {
        use docker_driver::DriverError as D;
        use layer_writer::WriteError as W;
        if let Some(tagged) = cause.downcast_ref::<Tagged>() {
            return Some(tagged.kind);
        }
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return Some(failure.kind);
        }
        if cause
            .downcast_ref::<docker_driver::reference::ReferenceError>()
            .is_some()
        {
            return Some(Kind::BadReference);
        }
        if let Some(e) = cause.downcast_ref::<D>() {
            return Some(match e {
                D::InvalidHost { .. }
                | D::ConflictingDaemonOptions
                | D::DockerConfig { .. }
                | D::ContextNotFound { .. }
                | D::ContextUnreadable { .. }
                | D::ContextHost { .. }
                | D::TlsMaterial { .. } => Kind::DaemonConfig,
                D::Unreachable { .. } | D::Tunnel { .. } | D::Transport { .. } => {
                    Kind::DaemonUnreachable
                }
                D::PermissionDenied { .. } => Kind::PermissionDenied,
                D::NoSuchImage { .. } => Kind::NoSuchImage,
                D::AmbiguousId { .. } => Kind::AmbiguousId,
                D::NoLayerAtIndex { .. } | D::NoSuchLayer { .. } => Kind::NoSuchLayer,
                D::NoSuchPlatform { .. } | D::NoPlatformManifest { .. } => Kind::NoSuchPlatform,
                D::ConfigMismatch { .. } => Kind::VerificationFailed,
                D::Timeout { .. } | D::Stalled { .. } => Kind::Timeout,
                _ => Kind::DaemonError,
            });
        }
        if let Some(e) = cause.downcast_ref::<W>() {
            return match e {
                W::DiffIdMismatch { .. }
                | W::BlobDigestMismatch { .. }
                | W::ConfigMismatch { .. } => Some(Kind::VerificationFailed),
                W::TargetExists { .. } | W::Io { .. } => Some(Kind::Output),
                W::Cancelled => Some(Kind::Interrupted),
                _ => None,
            };
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>()
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            return Some(Kind::Output);
        }
        None
    }

    /// `error` marked as of this kind, its message and causes unchanged.
    pub(crate) fn tag(self, error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Tagged { kind: self, error })
    }

    /// A new error of this kind saying `message`.
    pub(crate) fn error(self, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Failure {
            kind: self,
            message: message.into(),
        })
    }
}

/// An error marked with the [`Kind`] it is of, shown as the error itself.
#[derive(Debug)]
struct Tagged {
    kind: Kind,
    error: anyhow::Error,
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Tagged {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// What failed, as an item or the document reports it: the kind and the
/// whole message (every cause, as stderr shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Failure {
    pub(crate) kind: Kind,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn of(error: &anyhow::Error) -> Self {
        Self {
            kind: Kind::of(error),
            message: user_message(error),
        }
    }
}

/// `error` with every cause, as a user reads it: a scratch path of the run
/// (gone by the time the message is read) names the folder it was in, and
/// the OS's `(os error N)` suffixes are left out (the words before say it).
pub(crate) fn user_message(error: &anyhow::Error) -> String {
    scrub(&format!("{error:#}"))
}

/// Why a connection to a daemon failed, in plain words: the first I/O
/// error among the causes (`no such socket`, `connection refused`, …),
/// else the error's own words.
pub(crate) fn connection_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::NotFound => "no such socket".to_owned(),
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => strip_os_errors(&io.to_string()),
            };
        }
        cause = e.source();
    }
    error.to_string()
}

/// The prefix of every scratch entry a run makes (`temp_names`).
const SCRATCH: &str = "/.dlgrab-";

fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(SCRATCH) {
        out.push_str(&rest[..at]);
        // The scratch entry and whatever path goes on below it.
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | ')' | '"' | '\''))
            .unwrap_or(tail.len());
        out.push_str(" (a temporary file of the run)");
        rest = &tail[end..];
    }
    out.push_str(rest);
    strip_os_errors(&out)
}

/// `No space left on device (os error 28)` → `No space left on device`.
fn strip_os_errors(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" (os error ") {
        let tail = &rest[at + " (os error ".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && tail[digits..].starts_with(')') {
            out.push_str(&rest[..at]);
            rest = &tail[digits + 1..];
        } else {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod scrub_tests {
    use super::scrub;

    #[test]
    fn scratch_paths_name_their_folder_and_os_error_numbers_go() {
        assert_eq!(
            scrub(
                "cannot write layer 1: i/o error on /out/.dlgrab-tmp-run-1-2-3/blobs/sha256/ab: \
                 No space left on device (os error 28)"
            ),
            "cannot write layer 1: i/o error on /out (a temporary file of the run): No space \
             left on device"
        );
        assert_eq!(
            scrub("cannot read /tmp/.dlgrab-delta-run-9/layers/x (gone), nor .dlgrab-lock"),
            "cannot read /tmp (a temporary file of the run) (gone), nor .dlgrab-lock"
        );
        // Nothing else is touched.
        let plain = "no such image: busybox (os error in the name) (os error x)";
        assert_eq!(scrub(plain), plain);
    }
}
