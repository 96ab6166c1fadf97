//! Setup's apply step: carries a [`SetupPlan`] out. Per workload, Podman first, then the
//! drop-in; then the state after the run, the cache and one systemd reload. What it did is
//! data ([`Applied`]) for the report.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::desired::Desired;
use super::plan::{Action, SetupPlan, Step, WorkloadPlan};
use super::report::{CacheReport, Classification};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::podman::{Podman, Replaced};
use crate::provider::Registry;
use crate::secret::SecretValue;
use crate::state::StateDir;

/// What a real run did.
pub struct Applied {
    /// One per step of the plan, in its order: `None` for a step with nothing to apply
    /// (skipped, or failed in discovery); else whether it worked, or how many actions were
    /// done before the error.
    pub outcomes: Vec<Option<std::result::Result<(), (usize, Error)>>>,
    /// Podman's secrets and the drop-ins once the run is over; `None` when Podman could not
    /// be listed again.
    pub after: Option<Classification>,
    pub reloaded: bool,
    pub cache: Option<CacheReport>,
}

/// Applies `plan`. `values` are the run's listed values by mapping, for the cache.
pub(super) async fn apply(
    settings: &Settings,
    plan: &SetupPlan,
    podman: &Podman,
    state: &StateDir,
    registry: &Registry,
    values: &HashMap<Vec<u8>, SecretValue>,
) -> Applied {
    let mut reload = false;
    // For the cache: the mappings whose fresh values go in, and those of failed workloads,
    // whose previous entries stay.
    let mut fresh: Vec<Vec<u8>> = Vec::new();
    let mut keep: Vec<Vec<u8>> = Vec::new();
    let mut outcomes = Vec::with_capacity(plan.workloads.len());
    for w in &plan.workloads {
        let kept = || plan.owned(&w.name).filter_map(|e| e.mapping.clone());
        let outcome = match &w.step {
            Step::Skipped(_) => None,
            Step::Failed(_) => {
                keep.extend(kept());
                None
            }
            Step::Planned {
                desired,
                plan: workload,
                dropin_path,
            } => {
                fresh.extend(desired.secrets.values().cloned());
                let result =
                    apply_workload(podman, desired, workload, &plan.opts.commands, dropin_path)
                        .await;
                match &result {
                    Ok(()) => reload |= workload.dropin.is_some(),
                    Err((_, err)) => {
                        tracing::error!(workload = w.name, error = %err, "workload failed");
                        keep.extend(kept());
                    }
                }
                Some(result)
            }
        };
        outcomes.push(outcome);
    }
    // The report says what Podman holds now, not what the run meant to do. A run that
    // changed nothing leaves what it found: no need to list Podman's secrets and read every
    // mapping file again to say so (most of an unchanged re-run's time).
    let changed = plan.workloads.iter().any(|w| {
        matches!(&w.step, Step::Planned { plan, .. }
            if plan.dropin.is_some() || plan.actions.iter().any(Action::changes_podman))
    });
    let after = if !changed {
        Some(Classification::of(
            &plan.shell,
            &plan.opts,
            &plan.names(),
            |w| plan.dropins.get(w).cloned(),
        ))
    } else {
        match super::shell_secrets(podman, state).await {
            Ok(secrets) => Some(Classification::of(
                &secrets,
                &plan.opts,
                &plan.names(),
                |w| super::read_dropin(settings, w),
            )),
            Err(err) => {
                tracing::warn!(error = %err, "cannot list Podman's secrets after the run; the report leaves out the state after it");
                None
            }
        }
    };
    let cache = super::cached::write(settings, registry, values, &fresh, &keep).await;
    let mut reloaded = false;
    if reload {
        match crate::systemd::daemon_reload(settings.scope).await {
            Ok(()) => reloaded = true,
            Err(err) => {
                tracing::warn!(error = %err, "drop-ins changed, but systemd could not be reloaded; run 'systemctl daemon-reload' before starting the containers")
            }
        }
    }
    Applied {
        outcomes,
        after,
        reloaded,
        cache,
    }
}

/// Carries out one workload's plan. Podman first, then the drop-in, and the drop-in only when
/// every Podman change worked, so a container is never pointed at a secret that is not
/// there. On failure, returns how many actions were done.
async fn apply_workload(
    podman: &Podman,
    desired: &Desired,
    plan: &WorkloadPlan,
    opts: &BTreeMap<String, String>,
    dropin_path: &Path,
) -> std::result::Result<(), (usize, Error)> {
    for (done, action) in plan.actions.iter().enumerate() {
        let result = match action {
            Action::Create { name } => register(podman, name, None, desired, opts).await,
            Action::Replace { name, id, .. } => {
                register(podman, name, Some(id), desired, opts).await
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

/// Registers secret `name` with its desired mapping: creates it, or, given the Podman ID of
/// the secret it replaces, replaces it: in place on Podman 5, so its name resolves
/// throughout; on Podman 4 by removing and creating it again, so for that moment a container
/// starting with it fails.
async fn register(
    podman: &Podman,
    name: &str,
    replaces: Option<&str>,
    desired: &Desired,
    opts: &BTreeMap<String, String>,
) -> Result<()> {
    let mapping = &desired.secrets[name];
    let Some(id) = replaces else {
        return podman
            .create_secret(name, "shell", opts, mapping)
            .await
            .map(drop);
    };
    let (_, how) = podman
        .replace_secret(name, id, "shell", opts, mapping)
        .await?;
    if how == Replaced::Recreated {
        tracing::info!(event = "setup.replace", secret = name, "this Podman cannot replace a secret in place: it was removed and created again, and did not exist in between");
    }
    Ok(())
}
