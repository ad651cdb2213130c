//! `dlgrab --list IMAGE`: the layers of an image, one row each.

use std::io::Write;

use docker_driver::ImageDetails;
use serde::Serialize;

/// One layer of an image as `--list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct LayerRow {
    pub(crate) index: usize,
    pub(crate) diff_id: String,
    pub(crate) history_id: Option<String>,
    pub(crate) size: i64,
    pub(crate) created_by: String,
}

/// The rows of `image`, base first: one per layer, from the history rows
/// that made a layer.
pub(crate) fn rows(image: &ImageDetails) -> Vec<LayerRow> {
    image
        .diff_ids
        .iter()
        .enumerate()
        .map(|(index, diff_id)| {
            let row = image.history.iter().find(|r| r.layer_index == Some(index));
            LayerRow {
                index,
                diff_id: diff_id.clone(),
                history_id: row.and_then(|r| r.id.clone()),
                size: row.map_or(0, |r| r.size),
                created_by: row.map(|r| r.created_by.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Prints `rows` as a table (`--json` makes them items of its document).
pub(crate) fn print(rows: &[LayerRow], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<5} {:<19} {:<19} {:>10}  CREATED BY",
        "INDEX", "DIFF ID", "HISTORY ID", "SIZE"
    )?;
    for row in rows {
        let short = |id: &str| {
            crate::plan::strip_algorithm(id)
                .chars()
                .take(12)
                .collect::<String>()
        };
        let created_by: String = row
            .created_by
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let created_by: String = created_by.chars().take(60).collect();
        writeln!(
            out,
            "{:<5} sha256:{:<12} {:<19} {:>10}  {}",
            row.index,
            short(&row.diff_id),
            row.history_id.as_deref().map_or_else(
                || "<missing>".to_owned(),
                |id| format!("sha256:{}", short(id))
            ),
            row.size,
            created_by
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use docker_driver::HistoryRow;

    #[test]
    fn rows_follow_history_rows_that_made_layers() {
        let image = ImageDetails {
            id: "sha256:top".into(),
            repo_tags: vec![],
            repo_digests: vec![],
            parent: None,
            created: None,
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            diff_ids: vec!["sha256:d0".into(), "sha256:d1".into()],
            history: vec![
                HistoryRow {
                    id: None,
                    created: None,
                    created_by: "ADD a /".into(),
                    size: 5,
                    comment: String::new(),
                    empty_layer: false,
                    layer_index: Some(0),
                },
                HistoryRow {
                    id: Some("sha256:mid".into()),
                    created: None,
                    created_by: "ENV A=1".into(),
                    size: 0,
                    comment: String::new(),
                    empty_layer: true,
                    layer_index: None,
                },
                HistoryRow {
                    id: Some("sha256:top".into()),
                    created: None,
                    created_by: "RUN x".into(),
                    size: 7,
                    comment: String::new(),
                    empty_layer: false,
                    layer_index: Some(1),
                },
            ],
        };
        let rows = rows(&image);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].history_id, None);
        assert_eq!(rows[0].size, 5);
        assert_eq!(rows[1].history_id.as_deref(), Some("sha256:top"));
        assert_eq!(rows[1].created_by, "RUN x");
        let mut out = Vec::new();
        print(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("<missing>"), "{text}");
        assert!(
            text.lines().nth(2).unwrap().starts_with("1     sha256:d1"),
            "{text}"
        );
    }
}
