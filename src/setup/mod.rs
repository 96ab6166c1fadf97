//! `psi setup` and `psi check`: discover -> plan -> apply (DESIGN.md section 2).
//!
//! - **discover** asks each workload's provider for its sources (one listing per distinct
//!   source per run, shared between workloads) and builds the [`Desired`] state;
//! - **plan** ([`plan`]) diffs it against Podman's secrets, their mapping files and the
//!   drop-ins on disk: pure data;
//! - **apply** carries the plan out through the libpod API and atomic writes, then reloads
//!   systemd once if a drop-in changed.
//!
//! Workloads are independent: one that fails is reported and the others still run; its
//! Podman secrets and drop-in are left as they were.

mod cached;
pub mod desired;
pub mod plan;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::config::{Settings, WorkloadConfig};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::podman::Podman;
use crate::provider::infisical::{self, Infisical};
use crate::provider::Registry;
use crate::secret::SecretId;
use crate::secret::SecretValue;
use crate::state::StateDir;
use crate::unitgen::dropin::{self, DropIn};
use crate::unitgen::units;

use desired::{Desired, Found, Missing};
use plan::{Action, Existing, WorkloadPlan};
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
                list(settings.workloads.keys())
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

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Why one workload could not be discovered.
#[derive(Debug)]
pub enum DiscoverError {
    /// A source could not be listed.
    Source {
        source: usize,
        location: String,
        error: Error,
    },
    /// Keys named in `env`/`files` that the sources do not have.
    Missing(Vec<Missing>),
    /// The workload's provider has nothing to discover (its secrets are registered one by
    /// one, as with the original's nitrokeyhsm workloads): not a failure.
    Skipped(String),
    /// Discovery cannot run at all.
    Unsupported(String),
}

impl std::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoverError::Source {
                source,
                location,
                error,
            } => write!(f, "secrets[{source}] ({location}): {error}"),
            DiscoverError::Missing(missing) => {
                let keys: Vec<String> = missing
                    .iter()
                    .map(|m| format!("{} (secrets[{}], {})", m.key, m.source, m.location))
                    .collect();
                write!(f, "not found in Infisical: {}", keys.join(", "))
            }
            DiscoverError::Skipped(message) | DiscoverError::Unsupported(message) => {
                f.write_str(message)
            }
        }
    }
}

/// Lists sources once per run, however many workloads read them.
struct Discoverer<'a> {
    infisical: Option<&'a Infisical>,
    listings: HashMap<(String, String, bool, bool), Vec<Found>>,
    /// Every listed value by its mapping's bytes: what setup writes into the cache, so the
    /// cache costs no extra API call.
    values: HashMap<Vec<u8>, SecretValue>,
}

impl<'a> Discoverer<'a> {
    fn new(infisical: Option<&'a Infisical>) -> Discoverer<'a> {
        Discoverer {
            infisical,
            listings: HashMap::new(),
            values: HashMap::new(),
        }
    }

    async fn workload(
        &mut self,
        name: &str,
        config: &WorkloadConfig,
    ) -> std::result::Result<Desired, DiscoverError> {
        if config.provider != infisical::NAME {
            return Err(DiscoverError::Skipped(format!(
                "provider '{}' has nothing to discover; its secrets are created with 'psi {} store NAME --register'",
                config.provider,
                match config.provider.as_str() {
                    "systemd-creds" => "creds",
                    other => other,
                }
            )));
        }
        let client = self.infisical.ok_or_else(|| {
            DiscoverError::Unsupported("providers.infisical is not configured".into())
        })?;
        let mut listings = Vec::with_capacity(config.secrets.len());
        for (index, source) in config.secrets.iter().enumerate() {
            let key = (
                source.project.clone(),
                source.path.clone(),
                source.recursive,
                source.include_imports,
            );
            if !self.listings.contains_key(&key) {
                tracing::info!(workload = name, project = %source.project, path = %source.path, recursive = source.recursive, "listing");
                let listed = client
                    .list(
                        &source.project,
                        &source.path,
                        source.recursive,
                        source.include_imports,
                    )
                    .await
                    .map_err(|error| DiscoverError::Source {
                        source: index,
                        location: format!("{}:{}", source.project, source.path),
                        error,
                    })?;
                let mut found = Vec::with_capacity(listed.len());
                for l in listed {
                    let mapping = infisical::mapping(&source.project, &l.path, &l.key);
                    self.values.insert(mapping.to_bytes(), l.value);
                    found.push(Found {
                        key: l.key,
                        path: l.path,
                    });
                }
                self.listings.insert(key.clone(), found);
            }
            listings.push(self.listings[&key].clone());
        }
        desired::desired(name, config, &listings).map_err(DiscoverError::Missing)
    }
}

/// The configured providers (nothing connects until used): Infisical for discovery, and
/// the HSM when it keys the cache.
fn registry(settings: &Settings) -> Result<Registry> {
    Registry::from_config(&settings.providers, &settings.state_dir)
}

/// `psi check`: resolve every source and key of the named workloads (all when empty),
/// changing nothing.
pub async fn check(settings: &Settings, names: &[String]) -> Result<CheckReport> {
    let workloads = selected(settings, None, names)?;
    let registry = registry(settings)?;
    let mut discoverer = Discoverer::new(registry.infisical());
    let mut report = CheckReport::default();
    for (name, config) in workloads {
        let outcome = discoverer.workload(name, config).await;
        report.add(name, outcome);
    }
    Ok(report)
}

/// The secrets of workload `name` as `psi run` uses them: every key its sources yield, by
/// key, and the environment variables setup would deliver (`VAR -> KEY`). Resolved through
/// the same discovery as `psi check`, so both agree on what the config asks for.
pub async fn workload_values(
    settings: &Settings,
    name: &str,
) -> Result<(BTreeMap<String, SecretValue>, Vec<(String, String)>)> {
    let workloads = selected(settings, None, &[name.to_owned()])?;
    let registry = registry(settings)?;
    let mut discoverer = Discoverer::new(registry.infisical());
    let (name, config) = workloads[0];
    let desired = discoverer
        .workload(name, config)
        .await
        .map_err(|why| Error::Failed(format!("workload {name}: {why}")))?;
    let prefix = desired::secret_name(name, "");
    let mut values = BTreeMap::new();
    for (secret, mapping) in &desired.secrets {
        let key = secret.strip_prefix(&prefix).unwrap_or(secret);
        if let Some(value) = discoverer.values.remove(mapping) {
            values.insert(key.to_owned(), value);
        }
    }
    let env = desired
        .lines
        .iter()
        .filter_map(|line| match &line.delivery {
            dropin::Delivery::Env { var } => Some((
                var.clone(),
                line.name
                    .strip_prefix(&prefix)
                    .unwrap_or(&line.name)
                    .to_owned(),
            )),
            dropin::Delivery::Mount { .. } => None,
        })
        .collect();
    Ok((values, env))
}

/// `psi setup`.
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
    let current_opts = driver.opts(options.fix_opts);

    // One setup at a time (a timer and an operator may start one together): two runs would
    // both create the same secret names. Held until this function returns.
    let _lock = if options.dry_run {
        None
    } else {
        Some(state.lock_setup().await?)
    };
    // Podman first: without it there is nothing to apply, so fail before asking Infisical.
    let shell = shell_secrets(&podman, &state).await?;
    let mut discoverer = Discoverer::new(registry.infisical());
    let mut discovered = Vec::new();
    for (name, config) in &workloads {
        tracing::info!(workload = name, "discovering");
        discovered.push((*name, *config, discoverer.workload(name, config).await));
    }

    let names: Vec<&str> = settings.workloads.keys().map(String::as_str).collect();
    let mut report = SetupReport::new(options.dry_run);
    report.classification = Some(Classification::of(&shell, &current_opts, &names, |w| {
        read_dropin(settings, w)
    }));
    let mut reload = false;
    // For a dry run's projection of the state after it: the shell secrets and drop-ins as
    // each workload's plan would leave them.
    let mut projected = shell.clone();
    let mut planned_dropins: HashMap<&str, String> = HashMap::new();
    // For the cache: the mappings whose fresh values go in, and those of failed workloads,
    // whose previous entries stay.
    let mut fresh: Vec<Vec<u8>> = Vec::new();
    let mut keep: Vec<Vec<u8>> = Vec::new();
    for (name, config, outcome) in discovered {
        let owned: Vec<Existing> = shell
            .iter()
            .filter(|e| plan::owner(&e.name, names.iter().copied()) == Some(name))
            .cloned()
            .collect();
        let desired = match outcome {
            Ok(desired) => desired,
            Err(DiscoverError::Skipped(why)) => {
                tracing::info!(workload = name, "{why}");
                report.skipped(name, why);
                continue;
            }
            Err(err) => {
                tracing::error!(workload = name, error = %err, "workload failed");
                report.failed(name, err.to_string());
                keep.extend(owned.into_iter().filter_map(|e| e.mapping));
                continue;
            }
        };
        fresh.extend(desired.secrets.values().cloned());
        let rendered = dropin::render(&DropIn {
            psi_units: &units::secret_units(&config.provider),
            depends_on: &config.depends_on,
            secrets: &desired.lines,
        });
        let current = read_dropin(settings, name);
        let plan = plan::plan(
            &desired,
            &owned,
            &current_opts,
            &config.provider,
            &rendered,
            current.as_deref(),
            options.prune,
        );
        let path = dropin_path(settings, name);
        if options.dry_run {
            report.planned(name, &desired, &plan, &path);
            plan.project(&mut projected, &desired, &current_opts.commands);
            if let Some(text) = plan.dropin {
                planned_dropins.insert(name, text);
            }
            continue;
        }
        match apply(&podman, &desired, &plan, &current_opts.commands, &path).await {
            Ok(()) => {
                reload |= plan.dropin.is_some();
                report.applied(name, &desired, &plan, &path);
            }
            Err((done, err)) => {
                tracing::error!(workload = name, error = %err, "workload failed");
                report.partly_applied(name, &desired, &plan, done, err.to_string());
                keep.extend(owned.into_iter().filter_map(|e| e.mapping));
            }
        }
    }
    // A real run reports what Podman holds now, not what it meant to do.
    let after = if options.dry_run {
        Ok(projected)
    } else {
        shell_secrets(&podman, &state).await
    };
    report.after = match after {
        Ok(secrets) => Some(Classification::of(&secrets, &current_opts, &names, |w| {
            planned_dropins
                .get(w)
                .cloned()
                .or_else(|| read_dropin(settings, w))
        })),
        Err(err) => {
            tracing::warn!(error = %err, "cannot list Podman's secrets after the run; the report leaves out the state after it");
            None
        }
    };
    if !options.dry_run {
        report.cache = cached::write(settings, &registry, &discoverer.values, &fresh, &keep).await;
    }
    if reload {
        match crate::systemd::daemon_reload(settings.scope).await {
            Ok(()) => report.reloaded = true,
            Err(err) => {
                tracing::warn!(error = %err, "drop-ins changed, but systemd could not be reloaded; run 'systemctl daemon-reload' before starting the containers")
            }
        }
    }
    Ok(report)
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

fn dropin_path(settings: &Settings, workload: &str) -> PathBuf {
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

/// Carries out one workload's plan. Podman first, then the drop-in, and the drop-in only when
/// every Podman change worked, so a container is never pointed at a secret that is not
/// there. On failure, returns how many actions were done.
async fn apply(
    podman: &Podman,
    desired: &Desired,
    plan: &WorkloadPlan,
    opts: &BTreeMap<String, String>,
    dropin_path: &std::path::Path,
) -> std::result::Result<(), (usize, Error)> {
    for (done, action) in plan.actions.iter().enumerate() {
        let result = match action {
            Action::Create { name } => create(podman, name, desired, opts).await,
            Action::Replace { name, id, .. } => {
                // Podman 4 has no replace: remove, then create under the same name.
                match podman.remove_secret(id).await {
                    Ok(_) => create(podman, name, desired, opts).await,
                    Err(err) => Err(err),
                }
            }
            Action::Remove { id, .. } => podman.remove_secret(id).await.map(drop),
            Action::Keep { .. } | Action::Drift { .. } => Ok(()),
        };
        if let Err(err) = result {
            return Err((
                done,
                err.context(format!("podman secret {}", action.name())),
            ));
        }
        if action.changes_podman() {
            tracing::info!(event = "setup.apply", secret = action.name(), action = ?action, outcome = "success");
        }
    }
    if let Some(text) = &plan.dropin {
        let write = || -> Result<()> {
            if let Some(dir) = dropin_path.parent() {
                fsutil::ensure_dir(dir, 0o755)?;
            }
            fsutil::write_atomic(dropin_path, text.as_bytes(), 0o644)
        };
        write().map_err(|err| (plan.actions.len(), err))?;
        tracing::info!(event = "setup.apply", path = %dropin_path.display(), outcome = "success", "drop-in written");
    }
    Ok(())
}

async fn create(
    podman: &Podman,
    name: &str,
    desired: &Desired,
    opts: &BTreeMap<String, String>,
) -> Result<()> {
    let mapping = &desired.secrets[name];
    podman
        .create_secret(name, "shell", opts, mapping)
        .await
        .map(drop)
}
