//! `psi setup` and `psi check`: thin wrappers that print the report and turn failures into
//! the exit code (the report itself says which workload failed and why). A real setup run
//! also leaves its record for monitoring ([`setup::record`]), and with `--metrics-textfile`
//! writes its metrics for node_exporter.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cli::{CheckArgs, SetupArgs};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::metrics::{self, Text};
use crate::setup::record::{self, SetupRecord};
use crate::setup::{self, Options};
use crate::state::StateDir;

pub async fn setup(settings: &Settings, args: &SetupArgs) -> Result<()> {
    let options = Options {
        provider: args.provider.clone(),
        dry_run: args.dry_run,
        prune: args.prune,
        fix_opts: args.fix_opts,
    };
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let clock = Instant::now();
    let result = setup::setup(settings, &options).await;
    let recorded = match args.dry_run {
        true => Ok(()),
        false => record_run(
            settings,
            args,
            result.as_ref().ok(),
            started_at,
            clock.elapsed(),
        ),
    };
    let report = result?;
    super::print_report(&report, args.json, setup::SetupReport::human)?;
    // A workload whose restart failed runs with the old values: the run did not finish its
    // job, as for a failed workload, though its secrets are updated.
    match (report.failures(), report.restart_failures()) {
        (0, 0) => recorded,
        (0, n) => Err(Error::Incomplete(format!(
            "{n} workload(s) could not be restarted after their secrets changed; they run with the old values until they restart"
        ))),
        (n, restarts) => Err(Error::Incomplete(format!(
            "{n} of {} workload(s) failed; the others were set up{}",
            report.workloads.len(),
            match restarts {
                0 => String::new(),
                r => format!(", and {r} could not be restarted after their secrets changed"),
            }
        ))),
    }
}

/// Keeps the record of a real run in the state directory, for serve's `/metrics` (a
/// failure to is a warning: monitoring does not fail a setup), and writes the setup
/// families to `--metrics-textfile` (a failure to is the command's error, since it was
/// asked for).
fn record_run(
    settings: &Settings,
    args: &SetupArgs,
    report: Option<&setup::SetupReport>,
    started_at: f64,
    took: Duration,
) -> Result<()> {
    let path = StateDir::new(&settings.state_dir).setup_status_path();
    let previous = SetupRecord::load(&path);
    let record = SetupRecord::of(report, started_at, took, previous.as_ref());
    if let Err(err) = record.save(&path) {
        tracing::warn!(error = %err, "cannot keep the setup record for monitoring");
    }
    let Some(textfile) = &args.metrics_textfile else {
        return Ok(());
    };
    let mut out = Text::new();
    record::write_families(&mut out, Some(&record));
    metrics::write_textfile(textfile, &out.into_string())
}

pub async fn check(settings: &Settings, args: &CheckArgs) -> Result<()> {
    let report = setup::check(settings, &args.workloads).await?;
    super::print_report(&report, args.json, setup::CheckReport::human)?;
    match report.failures() {
        0 => Ok(()),
        n => Err(Error::Incomplete(format!(
            "{n} of {} workload(s) have missing or unreachable secrets",
            report.workloads.len()
        ))),
    }
}
