//! Setup's apply step: carries a [`SetupPlan`] out. Per workload, Podman first, then the
//! drop-in; then the state after the run, the cache and one systemd reload; then, for the
//! workloads whose secrets changed and that say `on_change: restart`, psi serve is made to
//! use the new cache and their units are restarted. What it did is data ([`Applied`]) for
//! the report.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use super::cached::Compared;
use super::desired::Desired;
use super::plan::{Action, SetupPlan, Step, WorkloadPlan};
use super::report::{CacheReport, Classification};
use super::rotate::{self, Changed, Restart, Rotation};
use crate::config::{OnChange, Settings};
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
    /// One per step of the plan, in its order: what the run changed in an applied workload
    /// and what became of its unit; `None` where nothing changed.
    pub rotations: Vec<Option<Rotation>>,
    /// Why values could not be compared with the previous cache, when a workload with
    /// `on_change: restart` needed that.
    pub values_not_compared: Option<&'static str>,
    /// How psi serve came to use the new cache before the restarts, when there were any.
    pub serve_cache: Option<String>,
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
    let (cache, compared) = super::cached::write(settings, registry, values, &fresh, &keep).await;
    let mut reloaded = false;
    if reload {
        match crate::systemd::daemon_reload(settings.scope).await {
            Ok(()) => reloaded = true,
            Err(err) => {
                tracing::warn!(error = %err, "drop-ins changed, but systemd could not be reloaded; run 'systemctl daemon-reload' before starting the containers")
            }
        }
    }
    let cache_written = cache.as_ref().map(|c| c.error.is_none());
    let rotated = rotate_changed(settings, plan, &outcomes, &compared, cache_written).await;
    Applied {
        outcomes,
        after,
        reloaded,
        cache,
        rotations: rotated.rotations,
        values_not_compared: rotated.values_not_compared,
        serve_cache: rotated.serve_cache,
    }
}

/// What [`rotate_changed`] found and did.
struct Rotated {
    rotations: Vec<Option<Rotation>>,
    values_not_compared: Option<&'static str>,
    serve_cache: Option<String>,
}

/// For each applied workload this run changed: with `on_change: restart`, once psi serve
/// uses the new cache, restarts its unit; else notes that it was left running. After the
/// cache is written and systemd reloaded, so a restarted container gets the new secrets
/// and drop-in. `cache_written`: `None` without a cache, else whether it was written.
async fn rotate_changed(
    settings: &Settings,
    plan: &SetupPlan,
    outcomes: &[Option<std::result::Result<(), (usize, Error)>>],
    compared: &Compared,
    cache_written: Option<bool>,
) -> Rotated {
    let restarts_wanted = |w: &str| {
        settings
            .workloads
            .get(w)
            .is_some_and(|c| c.on_change == OnChange::Restart)
    };
    // Said when it matters: a workload to restart keeps secrets whose values may have
    // changed unseen (on a first run every secret is created, which is seen).
    let keeps_secrets = |w: &super::plan::WorkloadStep| {
        restarts_wanted(&w.name)
            && matches!(&w.step, Step::Planned { plan, .. }
                if plan.actions.iter().any(|a| matches!(a, Action::Keep { .. })))
    };
    let values_not_compared = match *compared {
        Compared::Unknown(why) if plan.workloads.iter().any(keeps_secrets) => Some(why),
        _ => None,
    };
    // What changed per applied workload.
    let changed: Vec<Option<Changed>> = plan
        .workloads
        .iter()
        .zip(outcomes)
        .map(|(w, outcome)| match (&w.step, outcome) {
            (Step::Planned { desired, plan, .. }, Some(Ok(()))) => {
                rotate::changed(desired, plan, compared)
            }
            _ => None,
        })
        .collect();
    let mut serve_cache = None;
    let mut serve_stale = None;
    if plan
        .workloads
        .iter()
        .zip(&changed)
        .any(|(w, c)| c.is_some() && restarts_wanted(&w.name))
    {
        let (note, stale) = serve_uses_new_cache(settings, cache_written).await;
        serve_cache = Some(note);
        serve_stale = stale;
    }
    let mut rotations = Vec::with_capacity(changed.len());
    for (w, change) in plan.workloads.iter().zip(changed) {
        let Some(changed) = change else {
            rotations.push(None);
            continue;
        };
        let restart = if !restarts_wanted(&w.name) {
            Restart::NotRestarted
        } else if let Some(why) = &serve_stale {
            Restart::Failed { error: why.clone() }
        } else {
            restart(settings, &w.name).await
        };
        tracing::info!(event = "setup.rotate", workload = w.name, secrets = ?changed.changed_secrets, dropin_changed = changed.dropin_changed, outcome = %restart.human(), "secrets changed");
        rotations.push(Some(Rotation { changed, restart }));
    }
    Rotated {
        rotations,
        values_not_compared,
        serve_cache,
    }
}

/// Makes the running psi serve use the cache this run wrote before a workload restarts: its
/// watcher would notice the file only within `cache.watch_interval`, and a container that
/// starts before then gets the old values from the old snapshot. Asks serve to load it now
/// (`POST /cache/reload` on its socket); where serve cannot be asked (not running, or its
/// socket is not reachable from here, as from setup's container), waits for the watcher.
/// Returns what happened, and why restarting would be wrong when serve kept an old cache.
async fn serve_uses_new_cache(
    settings: &Settings,
    cache_written: Option<bool>,
) -> (String, Option<String>) {
    match cache_written {
        None => {
            let note = "no cache is configured; psi serve asks the providers";
            return (note.into(), None);
        }
        Some(false) => {
            let why = "the cache could not be written (see above); not restarted, since psi serve would hand the old values from it";
            return (why.into(), Some(why.into()));
        }
        Some(true) => {}
    }
    let socket = settings.socket_path.clone();
    let token = crate::driver::socket_token(settings);
    let asked = tokio::task::spawn_blocking(move || {
        let token = token.as_deref().map(String::as_str);
        crate::client::request(&socket, "POST", "/cache/reload", token).map(|response| {
            let detail = crate::client::lean::error_detail(&response.body);
            (response.status, detail)
        })
    })
    .await;
    match asked {
        Ok(Ok((200, _))) => {
            tracing::info!(
                event = "cache.reload",
                outcome = "success",
                "psi serve loaded the new cache"
            );
            ("psi serve loaded the new cache".into(), None)
        }
        Ok(Ok((503, detail))) => {
            let why = format!("psi serve could not load the new cache ({detail}); not restarted, since it would start with the old values: fix the cache, then restart it");
            tracing::warn!(event = "cache.reload", outcome = "error", error = %detail, "psi serve could not load the new cache; not restarting workloads");
            (why.clone(), Some(why))
        }
        other => {
            let why = match other {
                Ok(Ok((status, detail))) => format!("HTTP {status}: {detail}"),
                Ok(Err(err)) => err.to_string(),
                Err(err) => err.to_string(),
            };
            // Twice the watcher's interval, within reason: a setup run does not wait hours.
            let wait = (settings.cache.watch_interval * 2 + Duration::from_secs(1))
                .min(Duration::from_secs(30));
            tracing::info!(event = "cache.reload", outcome = "unreachable", error = %why, wait_ms = wait.as_millis() as u64, "psi serve cannot be asked to load the new cache; waiting for its watcher");
            tokio::time::sleep(wait).await;
            (
                format!(
                    "psi serve could not be asked to load the new cache ({why}); waited {} ms for it to notice the file",
                    wait.as_millis()
                ),
                None,
            )
        }
    }
}

/// `systemctl try-restart --no-block` of workload `name`'s unit, once it is known to run
/// (try-restart succeeds, doing nothing, on a unit that does not). Through the same host
/// path as the daemon-reload, so it works natively and from setup's container. Without
/// waiting for the job: the drop-in orders the workload after setup's unit, whose start job
/// lasts as long as this run, so a restart job waits for this run to end.
async fn restart(settings: &Settings, name: &str) -> Restart {
    let unit = rotate::unit(name);
    // Where systemd cannot be asked, try-restart says why.
    if let Ok(properties) = crate::systemd::show(settings.scope, &unit, &["ActiveState"]).await {
        if !rotate::running(properties.iter().map(|(_, state)| state.as_str())) {
            return Restart::NotRunning;
        }
    }
    let args = ["try-restart", "--no-block", "--", &unit];
    match crate::systemd::systemctl(settings.scope, &args).await {
        Ok(()) => Restart::Queued,
        Err(err) => {
            tracing::error!(event = "setup.restart", workload = name, unit, error = %err, "restart failed");
            Restart::Failed {
                error: err.to_string(),
            }
        }
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
