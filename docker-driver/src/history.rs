//! Matching history rows to layers.
//!
//! The Engine API's history (`GET /images/{name}/history`) is newest first
//! and, unlike the image config's history, has no `empty_layer` flag. The
//! k-th row with a layer (oldest first) is `RootFS.Layers[k]`. Which rows
//! have a layer is decided from the rows' sizes and instructions when that
//! is unambiguous; otherwise the caller reads the flags from the config.

use crate::model::HistoryRow;

/// A history row as the API gives it.
#[derive(Debug, Clone)]
pub(crate) struct ApiRow {
    pub(crate) id: String,
    pub(crate) created: i64,
    pub(crate) created_by: String,
    pub(crate) size: i64,
    pub(crate) comment: String,
}

/// A row's image ID as `sha256:<hex>`: Docker gives it so, Podman as bare
/// hex; `<missing>` (a row with no image of its own) gives none.
fn row_image_id(id: &str) -> Option<String> {
    if id.starts_with("sha256:") {
        return Some(id.to_owned());
    }
    let is_hex = id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (id.len() == 64 && is_hex).then(|| format!("sha256:{id}"))
}

/// Instructions that never add a layer.
const METADATA_INSTRUCTIONS: &[&str] = &[
    "ENV",
    "LABEL",
    "CMD",
    "ENTRYPOINT",
    "EXPOSE",
    "VOLUME",
    "USER",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
];

/// Whether a row has a layer, as far as the API row tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Yes,
    No,
    Unknown,
}

fn guess(row: &ApiRow) -> Layer {
    if row.size > 0 {
        return Layer::Yes;
    }
    // Classic builder: `/bin/sh -c #(nop)  ENV K=V`; BuildKit: `ENV K=V`.
    let text = row.created_by.trim_start();
    let text = text.strip_prefix("/bin/sh -c").unwrap_or(text).trim_start();
    let text = text.strip_prefix("#(nop)").unwrap_or(text).trim_start();
    let word = text.split_whitespace().next().unwrap_or("");
    if METADATA_INSTRUCTIONS
        .iter()
        .any(|m| word.eq_ignore_ascii_case(m))
    {
        Layer::No
    } else {
        Layer::Unknown
    }
}

/// Maps API rows (newest first) onto `layers` diff IDs. `empty_flags` are
/// the config's `empty_layer` flags, oldest first, when known. `None` when
/// the rows cannot be matched without them.
pub(crate) fn map_rows(
    rows_newest_first: &[ApiRow],
    layers: usize,
    empty_flags: Option<&[bool]>,
) -> Option<Vec<HistoryRow>> {
    let rows: Vec<&ApiRow> = rows_newest_first.iter().rev().collect();
    let has_layer: Vec<bool> = match empty_flags {
        Some(flags) if flags.len() == rows.len() => flags.iter().map(|e| !e).collect(),
        _ => {
            let guesses: Vec<Layer> = rows.iter().map(|r| guess(r)).collect();
            let yes = guesses.iter().filter(|g| **g == Layer::Yes).count();
            let unknown = guesses.iter().filter(|g| **g == Layer::Unknown).count();
            let unknown_has_layer = if yes == layers {
                false
            } else if yes + unknown == layers {
                true
            } else {
                return None;
            };
            guesses
                .iter()
                .map(|g| match g {
                    Layer::Yes => true,
                    Layer::No => false,
                    Layer::Unknown => unknown_has_layer,
                })
                .collect()
        }
    };
    if has_layer.iter().filter(|h| **h).count() != layers {
        return None;
    }
    let mut next = 0;
    Some(
        rows.iter()
            .zip(has_layer)
            .map(|(row, has_layer)| {
                let layer_index = has_layer.then(|| {
                    next += 1;
                    next - 1
                });
                HistoryRow {
                    id: row_image_id(&row.id),
                    created: Some(row.created).filter(|c| *c > 0),
                    created_by: row.created_by.clone(),
                    size: row.size,
                    comment: row.comment.clone(),
                    empty_layer: !has_layer,
                    layer_index,
                }
            })
            .collect(),
    )
}

/// The rows, oldest first, without layer indexes: for histories that do
/// not match the image's layers.
pub(crate) fn unmapped(rows_newest_first: &[ApiRow]) -> Vec<HistoryRow> {
    rows_newest_first
        .iter()
        .rev()
        .map(|row| HistoryRow {
            id: row_image_id(&row.id),
            created: Some(row.created).filter(|c| *c > 0),
            created_by: row.created_by.clone(),
            size: row.size,
            comment: row.comment.clone(),
            empty_layer: guess(row) == Layer::No,
            layer_index: None,
        })
        .collect()
}

/// The `empty_layer` flags of an image config's history, oldest first.
pub(crate) fn config_empty_flags(config: &[u8]) -> Option<Vec<bool>> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        history: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        empty_layer: bool,
    }
    let config: Config = serde_json::from_slice(config).ok()?;
    Some(config.history.iter().map(|e| e.empty_layer).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, size: i64, created_by: &str) -> ApiRow {
        ApiRow {
            id: id.into(),
            created: 1_700_000_000,
            created_by: created_by.into(),
            size,
            comment: String::new(),
        }
    }

    /// `rows` newest first as (id, size, created_by); `expected` oldest
    /// first as (id, layer_index).
    #[track_caller]
    fn check(
        rows: &[(&str, i64, &str)],
        layers: usize,
        flags: Option<&[bool]>,
        expected: Option<&[(Option<&str>, Option<usize>)]>,
    ) {
        let rows: Vec<ApiRow> = rows.iter().map(|(i, s, c)| row(i, *s, c)).collect();
        let got = map_rows(&rows, layers, flags).map(|rows| {
            rows.into_iter()
                .map(|r| (r.id, r.layer_index))
                .collect::<Vec<_>>()
        });
        let expected = expected.map(|e| {
            e.iter()
                .map(|(i, l)| (i.map(str::to_owned), *l))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn sizes_decide() {
        check(
            &[
                ("sha256:c", 0, "/bin/sh -c #(nop)  CMD [\"sh\"]"),
                ("sha256:b", 5, "/bin/sh -c echo hi > /x"),
                ("<missing>", 10, "/bin/sh -c #(nop) ADD file:abc in / "),
            ],
            2,
            None,
            Some(&[
                (None, Some(0)),
                (Some("sha256:b"), Some(1)),
                (Some("sha256:c"), None),
            ]),
        );
    }

    #[test]
    fn zero_sized_layers_by_count() {
        // `RUN true` adds an empty layer: size 0 but a layer.
        check(
            &[
                ("sha256:c", 0, "/bin/sh -c #(nop)  ENV K=V"),
                ("sha256:b", 0, "/bin/sh -c true"),
                ("sha256:a", 10, "/bin/sh -c #(nop) COPY file:abc in / "),
            ],
            2,
            None,
            Some(&[
                (Some("sha256:a"), Some(0)),
                (Some("sha256:b"), Some(1)),
                (Some("sha256:c"), None),
            ]),
        );
        check(
            &[
                ("sha256:b", 0, "RUN /bin/sh -c true # buildkit"),
                ("sha256:a", 3, "COPY x / # buildkit"),
            ],
            1,
            None,
            Some(&[(Some("sha256:a"), Some(0)), (Some("sha256:b"), None)]),
        );
    }

    #[test]
    fn ambiguous_needs_config() {
        let rows = [
            ("sha256:c", 0, "/bin/sh -c true"),
            ("sha256:b", 0, "/bin/sh -c true"),
            ("sha256:a", 10, "/bin/sh -c #(nop) COPY file:abc in / "),
        ];
        check(&rows, 2, None, None);
        check(
            &rows,
            2,
            Some(&[false, true, false]),
            Some(&[
                (Some("sha256:a"), Some(0)),
                (Some("sha256:b"), None),
                (Some("sha256:c"), Some(1)),
            ]),
        );
        // Flags that disagree with the layer count are not trusted.
        check(&rows, 2, Some(&[false, false, false]), None);
    }

    #[test]
    fn flags_from_config() {
        let config = br#"{"history":[{"created_by":"a"},{"empty_layer":true},{}]}"#;
        assert_eq!(config_empty_flags(config), Some(vec![false, true, false]));
        assert_eq!(config_empty_flags(b"{}"), Some(vec![]));
        assert_eq!(config_empty_flags(b"nope"), None);
    }

    #[test]
    fn row_ids_from_docker_and_podman() {
        let hex = "ab".repeat(32);
        assert_eq!(
            row_image_id(&format!("sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(row_image_id(&hex), Some(format!("sha256:{hex}")));
        assert_eq!(row_image_id("<missing>"), None);
        assert_eq!(row_image_id(&hex[..12]), None);
        assert_eq!(row_image_id(""), None);
    }
}
