//! `psi setup` and `psi check`: discover -> plan -> apply (DESIGN.md section 2).
//!
//! - **discover** ([`discover`]) asks each workload's provider for its sources (one listing
//!   per distinct source per run, shared between workloads) and builds the [`Desired`] state;
//! - **plan** reads Podman's secrets, their mapping files and the drop-ins on disk, and
//!   diffs them per workload ([`plan::plan`]) into the whole run's [`SetupPlan`]: pure data;
//! - **apply** (`apply.rs`) carries the plan out through the libpod API and atomic writes,
//!   rebuilds the cache, then reloads systemd once if a drop-in changed;
//! - **report** ([`SetupReport::of`]) tells what the plan would do (`--dry-run`) or what
//!   apply did, as text or `--json`.
//!
//! Workloads are independent: one that fails is reported and the others still run; its
//! Podman secrets and drop-in are left as they were.

mod apply;
mod cached;
pub mod desired;
pub mod discover;
pub mod plan;
pub mod record;
mod report;
mod rotate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{Settings, WorkloadConfig};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::podman::Podman;
use crate::provider::Registry;
use crate::secret::SecretId;
use crate::state::StateDir;
use crate::unitgen::driver_conf::DriverOpts;
use crate::unitgen::dropin::{self, DropIn};
use crate::unitgen::units;

use desired::Desired;
pub use discover::DiscoverError;
use discover::Discoverer;
pub use plan::SetupPlan;
use plan::{Existing, Step, WorkloadStep};
pub use report::{CheckReport, Classification, SetupReport, WorkloadReport};

/// What `psi setup` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only workloads of this provider.
    pub provider: Option<String>,
    pub dry_run: bool,
    pub prune: bool,
    /// Re-create secrets whose driver commands are psi's in the other client's form, so
    /// that every secret carries the configured client's commands.
    pub fix_opts: bool,
}

/// The workloads selected for this run, in config order.
fn selected<'a>(
    settings: &'a Settings,
    provider: Option<&str>,
    names: &[String],
) -> Result<Vec<(&'a str, &'a WorkloadConfig)>> {
    for name in names {
        if !settings.workloads.contains_key(name) {
            return Err(Error::Usage(format!(
                "no workload '{name}' in {} (configured: {})",
                settings.config_path.display(),
                crate::error::list_or_none(settings.workloads.keys())
            )));
        }
    }
    Ok(settings
        .workloads
        .iter()
        .filter(|(name, _)| names.is_empty() || names.contains(name))
        .filter(|(_, w)| provider.is_none_or(|p| w.provider == p))
        .map(|(name, w)| (name.as_str(), w))
        .collect())
}

/// The configured providers (nothing connects until used): discovery asks them, and the
/// HSM keys the cache when configured so.
fn registry(settings: &Settings) -> Result<Registry> {
    Registry::from_config(&settings.providers, &settings.state_dir)
}

/// `psi check`: resolve every source and key of the named workloads (all when empty),
/// changing nothing.
pub async fn check(settings: &Settings, names: &[String]) -> Result<CheckReport> {
    let workloads = selected(settings, None, names)?;
    let registry = registry(settings)?;
    let mut discoverer = Discoverer::new(&registry);
    let mut report = CheckReport::default();
    for (name, config) in workloads {
        let outcome = discoverer.workload(name, config).await;
        report.add(name, outcome);
    }
    Ok(report)
}

/// The configuration of workload `name`; a usage error names the configured ones.
pub fn workload_config<'a>(settings: &'a Settings, name: &str) -> Result<&'a WorkloadConfig> {
    let workloads = selected(settings, None, &[name.to_owned()])?;
    Ok(workloads[0].1)
}

/// `psi setup`: plan the whole run, apply it unless this is a dry run, report.
pub async fn setup(settings: &Settings, options: &Options) -> Result<SetupReport> {
    let workloads = selected(settings, options.provider.as_deref(), &[])?;
    let registry = registry(settings)?;
    let podman = Podman::new(crate::podman::configured_socket(settings)?);
    let state = StateDir::new(&settings.state_dir);
    // The same commands `psi install` writes by default, so setup's secrets match psi.conf.
    let driver = Driver::resolve(settings, None)?;
    if !options.dry_run {
        driver.write_token_file()?;
    }
    // One setup at a time (a timer and an operator may start one together): two runs would
    // both create the same secret names. Held until this function returns.
    let _lock = if options.dry_run {
        None
    } else {
        Some(state.lock_setup().await?)
    };
    let mut discoverer = Discoverer::new(&registry);
    let plan = plan_run(
        settings,
        options,
        &workloads,
        driver.opts(options.fix_opts),
        &podman,
        &state,
        &mut discoverer,
    )
    .await?;
    if options.dry_run {
        return Ok(SetupReport::of(&plan, None));
    }
    let applied = apply::apply(
        settings,
        &plan,
        &podman,
        &state,
        &registry,
        discoverer.values(),
    )
    .await;
    Ok(SetupReport::of(&plan, Some(applied)))
}

/// The plan step: reads what is (Podman's secrets and their mappings, the drop-ins),
/// discovers what should be, and diffs the two per workload.
async fn plan_run(
    settings: &Settings,
    options: &Options,
    workloads: &[(&str, &WorkloadConfig)],
    opts: DriverOpts,
    podman: &Podman,
    state: &StateDir,
    discoverer: &mut Discoverer<'_>,
) -> Result<SetupPlan> {
    // Podman first: without it there is nothing to apply, so fail before asking a provider.
    let shell = shell_secrets(podman, state).await?;
    let names: Vec<String> = settings.workloads.keys().cloned().collect();
    let dropins: BTreeMap<String, String> = names
        .iter()
        .filter_map(|name| Some((name.clone(), read_dropin(settings, name)?)))
        .collect();
    let mut plan = SetupPlan {
        dry_run: options.dry_run,
        names,
        shell,
        dropins,
        opts,
        workloads: Vec::with_capacity(workloads.len()),
    };
    for (name, config) in workloads {
        tracing::info!(workload = name, "discovering");
        let step = match discoverer.workload(name, config).await {
            Ok(desired) => plan_workload(settings, options, &plan, name, config, desired),
            Err(DiscoverError::Skipped(why)) => {
                tracing::info!(workload = name, "{why}");
                Step::Skipped(why)
            }
            Err(err) => {
                tracing::error!(workload = name, error = %err, "workload failed");
                Step::Failed(err.to_string())
            }
        };
        plan.workloads.push(WorkloadStep {
            name: (*name).to_owned(),
            step,
        });
    }
    Ok(plan)
}

/// One workload's step, from what it should have and what the run found.
fn plan_workload(
    settings: &Settings,
    options: &Options,
    run: &SetupPlan,
    name: &str,
    config: &WorkloadConfig,
    desired: Desired,
) -> Step {
    let owned: Vec<Existing> = run.owned(name).cloned().collect();
    let rendered = dropin::render(&DropIn {
        psi_units: &units::secret_units(&config.provider),
        depends_on: &config.depends_on,
        secrets: &desired.lines,
    });
    let plan = plan::plan(
        &desired,
        &owned,
        &run.opts,
        &config.provider,
        &rendered,
        run.dropins.get(name).map(String::as_str),
        options.prune,
    );
    Step::Planned {
        desired,
        plan,
        dropin_path: dropin_path(settings, name),
    }
}

/// Podman's shell-driver secrets with their mapping files.
async fn shell_secrets(podman: &Podman, state: &StateDir) -> Result<Vec<Existing>> {
    let secrets = podman.list_secrets().await?;
    Ok(secrets
        .into_iter()
        .filter(|s| s.driver == "shell" && !s.name.is_empty())
        .map(|s| {
            let mapping = SecretId::parse(&s.id)
                .ok()
                .and_then(|id| {
                    crate::fsutil::read_capped(&state.mapping_path(&id), crate::fsutil::MAPPING)
                        .ok()
                })
                .map(|bytes| bytes.to_vec());
            Existing {
                id: s.id,
                name: s.name,
                options: s.driver_options,
                mapping,
            }
        })
        .collect())
}

/// Where workload `workload`'s drop-in is.
pub fn dropin_path(settings: &Settings, workload: &str) -> PathBuf {
    settings
        .systemd_dir
        .join(dropin::dir_name(workload))
        .join(dropin::FILE_NAME)
}

fn read_dropin(settings: &Settings, workload: &str) -> Option<String> {
    crate::fsutil::read_capped_text(&dropin_path(settings, workload), crate::fsutil::CONFIG)
        .ok()
        .map(|text| text.to_string())
}
