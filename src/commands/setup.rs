//! `psi setup` and `psi check`: thin wrappers that print the report and turn failures into
//! the exit code (the report itself says which workload failed and why).

use crate::cli::{CheckArgs, SetupArgs};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::setup::{self, Options};

pub async fn setup(settings: &Settings, args: &SetupArgs) -> Result<()> {
    let options = Options {
        provider: args.provider.clone(),
        dry_run: args.dry_run,
        prune: args.prune,
        fix_opts: args.fix_opts,
    };
    let report = setup::setup(settings, &options).await?;
    super::print_report(&report, args.json, setup::SetupReport::human)?;
    // A workload whose restart failed runs with the old values: the run did not finish its
    // job, as for a failed workload, though its secrets are updated.
    match (report.failures(), report.restart_failures()) {
        (0, 0) => Ok(()),
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
