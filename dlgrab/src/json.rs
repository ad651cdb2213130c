//! The one document `--json` prints on stdout, whatever the mode, also when
//! the run fails: `{"schema": 1, "mode", "ok", "error", "seconds",
//! "items": […]}` and the mode's totals, as `docs/result.schema.json`
//! describes it. Each item is one reference as typed (a layer exported, an
//! image copied, a layer listed) or one leftover swept; a failed one
//! carries an `error`, a [`Failure`] of a [`Kind`]. Only `main` reads this
//! module; the flows below it speak [`crate::failure`].

use std::path::PathBuf;

use serde::Serialize;

use crate::copy::Copied;
pub(crate) use crate::copy::CopyTotals;
use crate::export::Exported;
pub(crate) use crate::failure::{Failure, Kind};
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
