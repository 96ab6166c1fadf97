//! The record a real `psi setup` run leaves in the state directory
//! (`state_dir/.setup-status.json`, 0600) for monitoring: when it ran, how long it took,
//! whether it succeeded, when a run last succeeded, and per workload its outcome and change
//! counts. `psi serve` reads it at scrape time (setup is a separate one-shot) and setup
//! itself writes the same families to a textfile. Names and counts only, never a value.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plan::Action;
use super::report::SetupReport;
use crate::error::Result;
use crate::fsutil;
use crate::metrics::{Kind, Text, Value};

/// One run of `psi setup` (not a dry run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupRecord {
    /// When the run started, in seconds since the epoch.
    pub started_at: f64,
    pub duration_seconds: f64,
    /// Every workload was set up (none failed) and the run itself did not fail.
    pub success: bool,
    /// When the last successful run (this one or an earlier one) ended; `None`: never.
    pub last_success_at: Option<f64>,
    /// Empty when the run failed before it reached the workloads.
    pub workloads: Vec<WorkloadRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    pub workload: String,
    /// The report's status: `ok`, `failed` or `skipped`.
    pub status: String,
    pub created: usize,
    pub replaced: usize,
    pub removed: usize,
    pub kept: usize,
}

impl SetupRecord {
    /// The record of a run that started at `started_at` (seconds since the epoch) and took
    /// `took`; `report` is `None` when the run failed as a whole. `previous` carries the
    /// last success forward when this run failed.
    pub fn of(
        report: Option<&SetupReport>,
        started_at: f64,
        took: Duration,
        previous: Option<&SetupRecord>,
    ) -> SetupRecord {
        let success = report.is_some_and(|r| r.failures() == 0);
        let ended_at = started_at + took.as_secs_f64();
        let workloads = report.map_or_else(Vec::new, |r| {
            r.workloads
                .iter()
                .map(|w| {
                    let count = |wanted: fn(&Action) -> bool| {
                        w.actions
                            .iter()
                            .filter(|a| wanted(&a.action) && (a.done || !a.action.changes_podman()))
                            .count()
                    };
                    WorkloadRecord {
                        workload: w.workload.clone(),
                        status: w.status.to_owned(),
                        created: count(|a| matches!(a, Action::Create { .. })),
                        replaced: count(|a| matches!(a, Action::Replace { .. })),
                        removed: count(|a| matches!(a, Action::Remove { .. })),
                        kept: count(|a| matches!(a, Action::Keep { .. })),
                    }
                })
                .collect()
        });
        SetupRecord {
            started_at,
            duration_seconds: took.as_secs_f64(),
            success,
            last_success_at: if success {
                Some(ended_at)
            } else {
                previous.and_then(|p| p.last_success_at)
            },
            workloads,
        }
    }

    /// The record at `path`; `None` when there is none or it cannot be read (a monitor
    /// then shows no setup figures rather than failing the scrape).
    pub fn load(path: &Path) -> Option<SetupRecord> {
        let bytes = fsutil::read_capped(path, fsutil::CONFIG).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the record to `path` atomically, 0600 like everything in the state directory.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("a record always serializes");
        json.push(b'\n');
        fsutil::write_atomic(path, &json, fsutil::PRIVATE)
    }
}

/// The setup families from `record` (HELP and TYPE alone when setup never ran).
pub fn write_families(out: &mut Text, record: Option<&SetupRecord>) {
    type Gauge = fn(&SetupRecord) -> Option<f64>;
    let gauges: [(&str, &str, Gauge); 3] = [
        (
            "psi_setup_last_success_timestamp_seconds",
            "When the last successful psi setup run ended, in seconds since the epoch.",
            |r| r.last_success_at,
        ),
        (
            "psi_setup_last_run_timestamp_seconds",
            "When the last psi setup run ended, in seconds since the epoch.",
            |r| Some(r.started_at + r.duration_seconds),
        ),
        (
            "psi_setup_duration_seconds",
            "How long the last psi setup run took.",
            |r| Some(r.duration_seconds),
        ),
    ];
    for (name, help, value) in gauges {
        out.family(name, Kind::Gauge, help);
        if let Some(value) = record.and_then(value) {
            out.sample(name, &[], Value::Float(value));
        }
    }
    let workloads = record.map_or(&[][..], |r| &r.workloads[..]);
    out.family(
        "psi_setup_changes",
        Kind::Gauge,
        "Podman secrets the last psi setup run created, replaced, removed or kept, per workload.",
    );
    for w in workloads {
        for (action, n) in [
            ("created", w.created),
            ("replaced", w.replaced),
            ("removed", w.removed),
            ("kept", w.kept),
        ] {
            let labels = [("workload", w.workload.as_str()), ("action", action)];
            out.sample("psi_setup_changes", &labels, Value::Count(n as u64));
        }
    }
    out.family(
        "psi_setup_workload_failed",
        Kind::Gauge,
        "1 when the workload failed in the last psi setup run, else 0.",
    );
    for w in workloads {
        let failed = u64::from(w.status == "failed");
        let labels = [("workload", w.workload.as_str())];
        out.sample("psi_setup_workload_failed", &labels, Value::Count(failed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(success: bool) -> SetupRecord {
        SetupRecord {
            started_at: 1_700_000_000.0,
            duration_seconds: 1.5,
            success,
            last_success_at: success.then_some(1_700_000_001.5),
            workloads: vec![WorkloadRecord {
                workload: "web".into(),
                status: if success { "ok" } else { "failed" }.into(),
                created: 2,
                replaced: 0,
                removed: 0,
                kept: 3,
            }],
        }
    }

    #[test]
    fn a_failed_run_keeps_the_last_success() {
        let previous = record(true);
        let failed = SetupRecord::of(
            None,
            1_700_000_100.0,
            Duration::from_secs(2),
            Some(&previous),
        );
        assert!(!failed.success);
        assert!(failed.workloads.is_empty());
        assert_eq!(failed.last_success_at, Some(1_700_000_001.5));
        assert_eq!(
            SetupRecord::of(None, 1.0, Duration::ZERO, None).last_success_at,
            None
        );
    }

    #[test]
    fn families_of_a_record() {
        let mut out = Text::new();
        write_families(&mut out, Some(&record(false)));
        let text = out.into_string();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "psi_setup_last_run_timestamp_seconds 1700000001.5",
                "psi_setup_duration_seconds 1.5",
                "psi_setup_changes{workload=\"web\",action=\"created\"} 2",
                "psi_setup_changes{workload=\"web\",action=\"replaced\"} 0",
                "psi_setup_changes{workload=\"web\",action=\"removed\"} 0",
                "psi_setup_changes{workload=\"web\",action=\"kept\"} 3",
                "psi_setup_workload_failed{workload=\"web\"} 1",
            ]
        );
        let mut empty = Text::new();
        write_families(&mut empty, None);
        let empty = empty.into_string();
        assert_eq!(empty.lines().filter(|l| l.starts_with("# TYPE")).count(), 5);
        assert!(empty.lines().all(|l| l.starts_with('#')));
    }
}
