//! The one document `--json` prints on stdout, whatever the mode, also when
//! the run fails: `{"schema": 1, "mode", "ok", "error", "seconds",
//! "items": […]}` and the mode's totals, as `docs/result.schema.json`
//! describes it. Each item is one reference as typed (a layer exported, an
//! image copied, a layer listed) or one leftover swept; a failed one
//! carries an `error` with a [`Kind`] from a small stable set, read off the
//! typed errors of the run ([`Kind::of`]).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::copy::Copied;
use crate::export::Exported;
use crate::list::LayerRow;
use crate::sweep::{Kept, Swept};

/// The version of the document's shape: raised when a field changes
/// meaning or goes away (fields may be added within a version).
pub(crate) const SCHEMA: u32 = 1;

/// What the run did, as the command line asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Layers into a folder (`dlgrab IMAGE… -o DIR`).
    Export,
    /// One archive of IMAGE's layers beyond BASE (`--since`).
    Since,
    /// Images to another daemon (`--to`).
    Copy,
    /// An image's layers (`--list`).
    List,
    /// Leftovers of dead runs swept (`--clean` with no IMAGE).
    Clean,
}

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
            message: format!("{error:#}"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// What was done with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// A layer written into the output folder.
    Exported,
    /// A layer written into the `--since` archive.
    Archived,
    /// An image copied to DEST (`how` says how).
    Copied,
    /// A layer of the `--list`ed image.
    Listed,
    /// A leftover of a dead run removed.
    Removed,
    /// A leftover of a dead run left on purpose (`reason` says why).
    Kept,
    /// Nothing: the item's `error` says why.
    Failed,
}

/// One reference as typed (or one leftover, for `clean`): what was done,
/// by which route and why, bytes, seconds, or the error.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Item {
    /// As typed on the command line; `null` for a leftover swept.
    pub(crate) reference: Option<String>,
    pub(crate) action: Action,
    pub(crate) error: Option<Failure>,
    /// The route the layers left the daemon by (`store`, `archive`,
    /// `push`, `save`); for a copy, `routes` lists them.
    pub(crate) route: Option<&'static str>,
    /// Why that route was taken.
    pub(crate) route_reason: Option<String>,
    /// The layer tar's size; for a copy the bytes sent; for a listed layer
    /// its size as the daemon's history gives it.
    pub(crate) bytes: Option<u64>,
    /// How long the item took (the layers of one image go together: their
    /// image's time).
    pub(crate) seconds: Option<f64>,
    #[serde(flatten)]
    pub(crate) detail: Detail,
}

/// The fields of an item that depend on the mode.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum Detail {
    /// A failed item: nothing more is known.
    None,
    Layer(Exported),
    Copied(Copied),
    Row(LayerRow),
    Leftover(Leftover),
}

/// A leftover of a dead run, found by the sweep.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Leftover {
    /// `tag`, `container` or `file`.
    pub(crate) what: &'static str,
    /// The tag, container name or path.
    pub(crate) name: String,
    /// Why it was kept, or could not be removed.
    pub(crate) reason: Option<String>,
}

impl Item {
    /// A reference that failed.
    pub(crate) fn failed(reference: &str, failure: Failure, seconds: Option<f64>) -> Self {
        Self {
            reference: Some(reference.to_owned()),
            action: Action::Failed,
            error: Some(failure),
            route: None,
            route_reason: None,
            bytes: None,
            seconds,
            detail: Detail::None,
        }
    }

    /// A layer written by an export (`action` [`Action::Exported`]) or
    /// into a `--since` archive ([`Action::Archived`]).
    pub(crate) fn layer(reference: &str, action: Action, layer: Exported, seconds: f64) -> Self {
        Self {
            reference: Some(reference.to_owned()),
            action,
            error: None,
            route: Some(layer.route),
            route_reason: Some(layer.route_reason.clone()),
            bytes: Some(layer.tar_size),
            seconds: Some(seconds),
            detail: Detail::Layer(layer),
        }
    }

    /// An image copied to DEST.
    pub(crate) fn copied(copied: Copied) -> Self {
        Self {
            reference: Some(copied.image.clone()),
            action: Action::Copied,
            error: None,
            route: None,
            route_reason: None,
            bytes: Some(copied.bytes_sent),
            seconds: Some(copied.seconds),
            detail: Detail::Copied(copied),
        }
    }

    /// A layer of the image `--list` named.
    pub(crate) fn listed(reference: &str, row: LayerRow) -> Self {
        Self {
            reference: Some(reference.to_owned()),
            action: Action::Listed,
            error: None,
            route: None,
            route_reason: None,
            bytes: Some(u64::try_from(row.size).unwrap_or(0)),
            seconds: None,
            detail: Detail::Row(row),
        }
    }

    /// A leftover the sweep removed, kept (`reason`), or failed to remove
    /// (`failed`, with the kind of what failed).
    pub(crate) fn leftover(
        what: &'static str,
        name: String,
        reason: Option<String>,
        failed: Option<Kind>,
    ) -> Self {
        let (action, error) = match (&reason, failed) {
            (Some(reason), Some(kind)) => (
                Action::Failed,
                Some(Failure {
                    kind,
                    message: format!("cannot remove {name}: {reason}"),
                }),
            ),
            (Some(_), None) => (Action::Kept, None),
            (None, _) => (Action::Removed, None),
        };
        Self {
            reference: None,
            action,
            error,
            route: None,
            route_reason: None,
            bytes: None,
            seconds: None,
            detail: Detail::Leftover(Leftover { what, name, reason }),
        }
    }
}

/// The leftovers a sweep removed, kept, or failed to remove: an item
/// each.
pub(crate) fn swept_items(swept: &Swept) -> Vec<Item> {
    let removed = |what, names: &[String]| {
        names
            .iter()
            .map(move |n| Item::leftover(what, n.clone(), None, None))
            .collect::<Vec<_>>()
    };
    let kept = |what, kept: &[Kept], kind| {
        kept.iter()
            .map(move |k| {
                let failed = k.failed.then_some(kind);
                Item::leftover(what, k.name.clone(), Some(k.reason.clone()), failed)
            })
            .collect::<Vec<_>>()
    };
    let files: Vec<String> = swept
        .files_removed
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    [
        removed("tag", &swept.tags_removed),
        removed("container", &swept.containers_removed),
        kept("tag", &swept.tags_kept, Kind::DaemonError),
        removed("file", &files),
        kept("file", &swept.files_kept, Kind::Output),
    ]
    .concat()
}

/// The totals of a `--since` run that wrote its archive.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SinceTotals {
    pub(crate) base: String,
    pub(crate) image: String,
    pub(crate) image_id: String,
    /// How many of IMAGE's layers (from the base) BASE already has.
    pub(crate) shared_layers: usize,
    /// The archive's path, or `-` for stdout.
    pub(crate) archive: PathBuf,
    /// The archive's size in bytes.
    pub(crate) size: u64,
}

/// The totals of a `--to` run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CopyTotals {
    pub(crate) destination: String,
    pub(crate) layers_skipped: usize,
    pub(crate) layers_sent: usize,
    pub(crate) bytes_sent: u64,
    /// Bytes per second over the whole run.
    pub(crate) rate: f64,
}

/// The fields of the document that depend on the mode.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum Totals {
    None,
    Since(SinceTotals),
    Copy(CopyTotals),
}

/// The document.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Document {
    pub(crate) schema: u32,
    pub(crate) mode: Mode,
    /// Whether everything asked was done: no `error`, no failed item.
    pub(crate) ok: bool,
    /// What stopped the run; else the first failed item's error; `null`
    /// when everything was done.
    pub(crate) error: Option<Failure>,
    /// The whole run's time.
    pub(crate) seconds: f64,
    pub(crate) items: Vec<Item>,
    #[serde(flatten)]
    pub(crate) totals: Totals,
}

impl Document {
    /// The document of a run that went to its end: failed only where an
    /// item did.
    pub(crate) fn finished(mode: Mode, items: Vec<Item>, totals: Totals, seconds: f64) -> Self {
        let error = items.iter().find_map(|i| i.error.clone());
        Self {
            schema: SCHEMA,
            mode,
            ok: error.is_none(),
            error,
            seconds,
            items,
            totals,
        }
    }

    /// The document of a run stopped by `failure`.
    pub(crate) fn stopped(
        mode: Mode,
        failure: Failure,
        items: Vec<Item>,
        totals: Totals,
        seconds: f64,
    ) -> Self {
        Self {
            schema: SCHEMA,
            mode,
            ok: false,
            error: Some(failure),
            seconds,
            items,
            totals,
        }
    }

    /// Writes the document, pretty, and a newline.
    pub(crate) fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }
}

#[cfg(test)]
mod tests;
