//! The report of `psi infisical import` (pure): the rows of the plan, counted, as JSON
//! (`--json`) or as a table.

use serde::Serialize;

use super::plan::{Conflict, FolderRow, Outcome, Row};

#[derive(Serialize, Default)]
pub struct Summary {
    pub total: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub conflicts: usize,
    pub failed: usize,
}

#[derive(Serialize)]
pub struct Report {
    pub project: String,
    pub environment: String,
    pub path: String,
    pub conflict: Conflict,
    pub dry_run: bool,
    pub folders: Vec<FolderRow>,
    pub results: Vec<Row>,
    pub summary: Summary,
}

impl Summary {
    /// Counts the rows by outcome.
    pub fn of(rows: &[Row]) -> Summary {
        let mut summary = Summary {
            total: rows.len(),
            ..Summary::default()
        };
        for row in rows {
            *match row.outcome {
                Outcome::Created => &mut summary.created,
                Outcome::Updated => &mut summary.updated,
                Outcome::Unchanged => &mut summary.unchanged,
                Outcome::Skipped => &mut summary.skipped,
                Outcome::Conflict => &mut summary.conflicts,
                Outcome::Failed => &mut summary.failed,
            } += 1;
        }
        summary
    }
}

/// The report as a table: the folders, one line per key, and the totals.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    for folder in &report.folders {
        out.push_str(&format!(
            "Folder {}: {} ({})\n",
            folder.path,
            folder.outcome.as_str(),
            folder.detail
        ));
    }
    let width = report
        .results
        .iter()
        .map(|r| r.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    out.push_str(&format!("{:<width$}  {:<9}  DETAIL\n", "KEY", "OUTCOME"));
    for row in &report.results {
        out.push_str(&format!(
            "{:<width$}  {:<9}  {} ({})\n",
            row.key,
            row.outcome.as_str(),
            row.detail,
            row.source
        ));
    }
    let s = &report.summary;
    out.push_str(&format!(
        "{}Total: {} Created: {} Updated: {} Unchanged: {} Skipped: {} Conflicts: {} Failed: {}\n",
        if report.dry_run {
            "Dry run (nothing written). "
        } else {
            ""
        },
        s.total,
        s.created,
        s.updated,
        s.unchanged,
        s.skipped,
        s.conflicts,
        s.failed
    ));
    out
}
