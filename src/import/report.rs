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

    /// Why the import fails (exit status 1, also in a dry run): keys that conflict under
    /// `--conflict fail`, keys that failed. `None` when neither happened.
    pub fn problems(&self) -> Option<String> {
        let mut problems = Vec::new();
        if self.conflicts > 0 {
            problems.push(format!(
                "{} of {} keys hold other values in Infisical, so nothing was written (--conflict fail)",
                self.conflicts, self.total
            ));
        }
        if self.failed > 0 {
            problems.push(format!(
                "{} of {} keys failed to import",
                self.failed, self.total
            ));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_and_failures_are_problems() {
        assert_eq!(Summary::default().problems(), None);
        let summary = Summary {
            total: 5,
            conflicts: 1,
            failed: 2,
            ..Summary::default()
        };
        assert_eq!(
            summary.problems().unwrap(),
            "1 of 5 keys hold other values in Infisical, so nothing was written (--conflict fail); 2 of 5 keys failed to import"
        );
    }
}
