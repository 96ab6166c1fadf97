//! What `psi setup` and `psi check` tell the user: serializable reports (`--json`) with a
//! plain-text rendering for terminals. The text goes to stdout; logs stay on stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::apply::Applied;
use super::desired::{Collision, Desired};
use super::plan::{self, Action, Existing, SetupPlan, Step, WorkloadPlan};
use super::rotate::{Restart, Rotation};
use super::DiscoverError;
use crate::unitgen::dropin;

#[derive(Debug, Serialize)]
pub struct SetupReport {
    pub dry_run: bool,
    pub workloads: Vec<WorkloadReport>,
    /// Every shell-driver secret in Podman as the run found it, before any change,
    /// classified as the original's dry run did.
    pub classification: Option<Classification>,
    /// The same once the run is over (for a dry run: what it would leave); `None` when
    /// Podman could not be listed again.
    pub after: Option<Classification>,
    /// What the run changed (for a dry run: would change), over all workloads.
    pub changes: Changes,
    /// Whether systemd was reloaded (drop-ins changed).
    pub reloaded: bool,
    /// The encrypted cache, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheReport>,
    /// Why this run could not tell whether values changed upstream, when a workload with
    /// `on_change: restart` needed to know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values_not_compared: Option<String>,
    /// How psi serve came to use the new cache before workloads were restarted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve_cache: Option<String>,
}

/// Podman secrets and drop-ins a run changed, by kind.
#[derive(Debug, Default, Serialize)]
pub struct Changes {
    pub created: usize,
    pub replaced: usize,
    pub removed: usize,
    pub dropins_written: usize,
}

impl Changes {
    fn human(&self) -> String {
        if self.created + self.replaced + self.removed + self.dropins_written == 0 {
            return "nothing".into();
        }
        format!(
            "{} created, {} replaced, {} removed, {} drop-in(s) written",
            self.created, self.replaced, self.removed, self.dropins_written
        )
    }
}

/// What happened to the cache, for the setup report.
#[derive(Debug, Serialize)]
pub struct CacheReport {
    pub path: String,
    /// Entries written (absent when the cache could not be written).
    pub entries: Option<usize>,
    /// Entries the file held before.
    pub previous: Option<usize>,
    /// Previous entries kept for failed workloads.
    pub kept: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct WorkloadReport {
    pub workload: String,
    /// `ok`, `failed`, `skipped` (nothing to discover) or, in a dry run, `planned`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub actions: Vec<ActionReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropin: Option<DropinReport>,
    pub collisions: Vec<Collision>,
    /// What the run changed in it (secrets by name, drop-in) and what became of its unit;
    /// absent when nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

#[derive(Debug, Serialize)]
pub struct ActionReport {
    #[serde(flatten)]
    pub action: Action,
    /// False for actions not carried out (dry run, or after a failure).
    pub done: bool,
}

#[derive(Debug, Serialize)]
pub struct DropinReport {
    pub path: String,
    pub changed: bool,
}

impl SetupReport {
    /// The report of a run. For a dry run (`applied` is `None`) the plan itself, with the
    /// state it would leave; for a real run what apply did and the state it left.
    pub fn of(plan: &SetupPlan, applied: Option<Applied>) -> SetupReport {
        let mut report = SetupReport::new(plan.dry_run);
        let names = plan.names();
        report.classification = Some(Classification::of(&plan.shell, &plan.opts, &names, |w| {
            plan.dropins.get(w).cloned()
        }));
        let mut outcomes = applied.as_ref().map(|a| a.outcomes.iter());
        let mut rotations = applied.as_ref().map(|a| a.rotations.iter());
        for w in &plan.workloads {
            let outcome = outcomes
                .as_mut()
                .and_then(|o| o.next())
                .and_then(Option::as_ref);
            let name = w.name.as_str();
            match (&w.step, outcome) {
                (Step::Skipped(why), _) => report.skipped(name, why.clone()),
                (Step::Failed(error), _) => report.failed(name, error.clone()),
                (
                    Step::Planned {
                        desired,
                        plan,
                        dropin_path,
                    },
                    outcome,
                ) => match outcome {
                    None => report.planned(name, desired, plan, dropin_path),
                    Some(Ok(())) => report.applied(name, desired, plan, dropin_path),
                    Some(Err((done, error))) => {
                        report.partly_applied(name, desired, plan, *done, error.to_string())
                    }
                },
            }
            let rotation = rotations.as_mut().and_then(|r| r.next()).cloned().flatten();
            if let (Some(rotation), Some(last)) = (rotation, report.workloads.last_mut()) {
                last.rotation = Some(rotation);
            }
        }
        match applied {
            None => {
                let (secrets, dropins) = plan.projection();
                report.after = Some(Classification::of(&secrets, &plan.opts, &names, |w| {
                    dropins.get(w).cloned()
                }));
            }
            Some(applied) => {
                report.after = applied.after;
                report.reloaded = applied.reloaded;
                report.cache = applied.cache;
                report.values_not_compared = applied.values_not_compared.map(str::to_owned);
                report.serve_cache = applied.serve_cache;
            }
        }
        report
    }

    fn new(dry_run: bool) -> SetupReport {
        SetupReport {
            dry_run,
            workloads: Vec::new(),
            classification: None,
            after: None,
            changes: Changes::default(),
            reloaded: false,
            cache: None,
            values_not_compared: None,
            serve_cache: None,
        }
    }

    pub fn failures(&self) -> usize {
        self.workloads
            .iter()
            .filter(|w| w.status == "failed")
            .count()
    }

    /// Workloads whose secrets were updated but whose restart failed: they run with the
    /// old values.
    pub fn restart_failures(&self) -> usize {
        self.workloads
            .iter()
            .filter(|w| {
                w.rotation
                    .as_ref()
                    .is_some_and(|r| matches!(r.restart, Restart::Failed { .. }))
            })
            .count()
    }

    fn failed(&mut self, workload: &str, error: String) {
        self.workloads.push(WorkloadReport {
            workload: workload.to_owned(),
            status: "failed",
            error: Some(error),
            actions: Vec::new(),
            dropin: None,
            collisions: Vec::new(),
            rotation: None,
        });
    }

    fn skipped(&mut self, workload: &str, why: String) {
        self.workloads.push(WorkloadReport {
            workload: workload.to_owned(),
            status: "skipped",
            error: Some(why),
            actions: Vec::new(),
            dropin: None,
            collisions: Vec::new(),
            rotation: None,
        });
    }

    fn planned(&mut self, workload: &str, desired: &Desired, plan: &WorkloadPlan, path: &Path) {
        self.push(workload, "planned", None, desired, plan, 0, path, false);
    }

    fn applied(&mut self, workload: &str, desired: &Desired, plan: &WorkloadPlan, path: &Path) {
        let all = plan.actions.len();
        self.push(
            workload,
            "ok",
            None,
            desired,
            plan,
            all,
            path,
            plan.dropin.is_some(),
        );
    }

    fn partly_applied(
        &mut self,
        workload: &str,
        desired: &Desired,
        plan: &WorkloadPlan,
        done: usize,
        error: String,
    ) {
        self.push(
            workload,
            "failed",
            Some(error),
            desired,
            plan,
            done,
            Path::new(""),
            false,
        );
        if let Some(report) = self.workloads.last_mut() {
            report.dropin = None;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        workload: &str,
        status: &'static str,
        error: Option<String>,
        desired: &Desired,
        plan: &WorkloadPlan,
        done: usize,
        path: &Path,
        written: bool,
    ) {
        let planned = status == "planned";
        let actions: Vec<ActionReport> = plan
            .actions
            .iter()
            .enumerate()
            .map(|(i, action)| ActionReport {
                action: action.clone(),
                done: i < done && action.changes_podman(),
            })
            .collect();
        // A dry run counts what it would do; a real run what it did.
        for a in actions.iter().filter(|a| a.done || planned) {
            match a.action {
                Action::Create { .. } => self.changes.created += 1,
                Action::Replace { .. } => self.changes.replaced += 1,
                Action::Remove { .. } => self.changes.removed += 1,
                Action::Keep { .. } | Action::Drift { .. } => {}
            }
        }
        let changed = if planned {
            plan.dropin.is_some()
        } else {
            written
        };
        self.changes.dropins_written += usize::from(changed);
        self.workloads.push(WorkloadReport {
            workload: workload.to_owned(),
            status,
            error,
            actions,
            dropin: Some(DropinReport {
                path: path.display().to_string(),
                changed,
            }),
            collisions: desired.collisions.clone(),
            rotation: None,
        });
    }

    /// The report as text for a terminal.
    pub fn human(&self) -> String {
        let mut out = String::new();
        if self.dry_run {
            out.push_str("psi setup --dry-run: nothing was changed\n");
        }
        for w in &self.workloads {
            let _ = writeln!(out, "{}: {}", w.workload, summary(w, self.dry_run));
            if let Some(error) = &w.error {
                let label = if w.status == "skipped" {
                    "note"
                } else {
                    "error"
                };
                let _ = writeln!(out, "  {label}: {error}");
            }
            for a in &w.actions {
                let line = match &a.action {
                    Action::Keep { .. } => continue,
                    Action::Create { name } => format!("create   {name}"),
                    Action::Replace { name, reason, .. } => {
                        format!("replace  {name} ({})", reason_text(*reason))
                    }
                    Action::Remove { name, .. } => format!("remove   {name} (drift, --prune)"),
                    Action::Drift { name, .. } => format!(
                        "drift    {name}: no longer in the workload's sources; 'psi setup --prune' removes it"
                    ),
                };
                let _ = writeln!(out, "  {line}");
            }
            for c in &w.collisions {
                let _ = writeln!(
                    out,
                    "  collision {}: {} wins over {}",
                    c.key, c.kept, c.dropped
                );
            }
            if let Some(line) = w.rotation.as_ref().and_then(rotation_line) {
                let _ = writeln!(out, "  {line}");
            }
        }
        // A dry run shows Podman as it is, with the details (the original's dry run), then
        // the projection; a real run what changed and the state it left, with the details
        // of what is still wrong.
        if self.dry_run {
            if let Some(before) = &self.classification {
                before.counts(&mut out, "now");
                before.details(&mut out);
            }
            let _ = writeln!(out, "Would be changed: {}", self.changes.human());
            if let Some(after) = &self.after {
                after.counts(&mut out, "after the run would be");
            }
        } else {
            let _ = writeln!(out, "Changed: {}", self.changes.human());
            if let Some(after) = &self.after {
                after.counts(&mut out, "after the run");
                after.details(&mut out);
            }
        }
        if self.reloaded {
            out.push_str("systemd reloaded\n");
        }
        if let Some(why) = &self.values_not_compared {
            let _ = writeln!(out, "note: {why}");
        }
        if let Some(serve) = &self.serve_cache {
            let _ = writeln!(out, "{serve}");
        }
        if let Some(cache) = &self.cache {
            match (&cache.entries, &cache.error) {
                (Some(n), _) => {
                    let _ = writeln!(out, "cache {}: {n} entries", cache.path);
                }
                (None, Some(error)) => {
                    let _ = writeln!(out, "cache {}: not written: {error}", cache.path);
                }
                (None, None) => {}
            }
        }
        out
    }
}

fn summary(w: &WorkloadReport, dry_run: bool) -> String {
    match w.status {
        "failed" if w.actions.is_empty() => return "FAILED".into(),
        "skipped" => return "skipped".into(),
        _ => {}
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &w.actions {
        let kind = match a.action {
            Action::Create { .. } => "created",
            Action::Keep { .. } => "kept",
            Action::Replace { .. } => "replaced",
            Action::Remove { .. } => "removed",
            Action::Drift { .. } => "drift",
        };
        *counts.entry(kind).or_default() += 1;
    }
    let mut parts: Vec<String> = ["created", "replaced", "removed", "kept", "drift"]
        .iter()
        .filter_map(|k| counts.get(k).map(|n| format!("{n} {k}")))
        .collect();
    if parts.is_empty() {
        parts.push("no secrets".into());
    }
    if let Some(d) = &w.dropin {
        parts.push(match (d.changed, dry_run) {
            (true, true) => format!("drop-in {} would change", d.path),
            (true, false) => format!("drop-in {} written", d.path),
            (false, _) => "drop-in unchanged".into(),
        });
    }
    let text = parts.join(", ");
    match (w.status, dry_run) {
        ("failed", _) => format!("FAILED after changes ({text})"),
        (_, true) => format!("would be: {text}"),
        _ => text,
    }
}

/// The line a workload's rotation adds to the text report. For a workload left running
/// (`on_change: none`) only when a value changed upstream: created, replaced and removed
/// secrets and a written drop-in have lines of their own already.
fn rotation_line(r: &Rotation) -> Option<String> {
    let changed = &r.changed;
    let what = if r.restart == Restart::NotRestarted {
        if changed.changed_values.is_empty() {
            return None;
        }
        format!(
            "values changed upstream: {}",
            changed.changed_values.join(", ")
        )
    } else if changed.changed_secrets.is_empty() {
        "drop-in changed".to_owned()
    } else {
        format!("secrets changed: {}", changed.changed_secrets.join(", "))
    };
    Some(format!("{what}; {}", r.restart.human()))
}

fn reason_text(reason: plan::Reason) -> &'static str {
    match reason {
        plan::Reason::MappingChanged => "mapping changed",
        plan::Reason::StaleOpts => "driver options differ from the current psi.conf",
        plan::Reason::Orphaned => "no mapping in the state dir",
    }
}

/// The original dry run's view of Podman: every shell-driver secret is managed, stale-opts
/// (driver options differ from the current psi.conf) or orphaned (no mapping file), plus,
/// per workload, secrets in Podman and in the drop-in that do not match.
#[derive(Debug, Default, Serialize)]
pub struct Classification {
    pub total: usize,
    pub managed: Vec<String>,
    pub stale_opts: Vec<String>,
    pub orphaned: Vec<String>,
    pub workload_drift: BTreeMap<String, WorkloadDrift>,
}

#[derive(Debug, Default, Serialize)]
pub struct WorkloadDrift {
    pub in_podman_not_in_dropin: Vec<String>,
    pub in_dropin_not_in_podman: Vec<String>,
}

impl Classification {
    pub fn of(
        shell: &[Existing],
        current_opts: &crate::unitgen::driver_conf::DriverOpts,
        workloads: &[&str],
        read_dropin: impl Fn(&str) -> Option<String>,
    ) -> Classification {
        let mut c = Classification {
            total: shell.len(),
            ..Default::default()
        };
        for secret in shell {
            let list = if secret.mapping.is_none() {
                &mut c.orphaned
            } else if !current_opts.accepts(&secret.options) {
                &mut c.stale_opts
            } else {
                &mut c.managed
            };
            list.push(secret.name.clone());
        }
        for list in [&mut c.managed, &mut c.stale_opts, &mut c.orphaned] {
            list.sort();
        }
        for workload in workloads {
            let in_podman: std::collections::BTreeSet<String> = shell
                .iter()
                .filter(|s| plan::owner(&s.name, workloads.iter().copied()) == Some(*workload))
                .map(|s| s.name.clone())
                .collect();
            let in_dropin = read_dropin(workload)
                .map(|text| dropin::referenced_secrets(&text))
                .unwrap_or_default();
            let drift = WorkloadDrift {
                in_podman_not_in_dropin: in_podman.difference(&in_dropin).cloned().collect(),
                in_dropin_not_in_podman: in_dropin.difference(&in_podman).cloned().collect(),
            };
            if !drift.in_podman_not_in_dropin.is_empty()
                || !drift.in_dropin_not_in_podman.is_empty()
            {
                c.workload_drift.insert((*workload).to_owned(), drift);
            }
        }
        c
    }

    /// One line of counts; `when` says which state ("now", "after the run").
    fn counts(&self, out: &mut String, when: &str) {
        let _ = writeln!(
            out,
            "Podman shell-driver secrets {when}: {} ({} managed, {} stale-opts, {} orphaned; {} workload(s) with drift)",
            self.total,
            self.managed.len(),
            self.stale_opts.len(),
            self.orphaned.len(),
            self.workload_drift.len()
        );
    }

    /// The stale-opts and orphaned secrets and the workloads with drift, by name.
    fn details(&self, out: &mut String) {
        if !self.stale_opts.is_empty() {
            out.push_str("Stale-opts: driver options differ from the current psi.conf; 'psi setup' re-creates the ones it manages:\n");
            for name in &self.stale_opts {
                let _ = writeln!(out, "  {name}");
            }
        }
        if !self.orphaned.is_empty() {
            out.push_str("Orphaned: no mapping in the state dir; lookups would fail:\n");
            for name in &self.orphaned {
                let _ = writeln!(out, "  {name}");
            }
        }
        for (workload, drift) in &self.workload_drift {
            let _ = writeln!(
                out,
                "Workload drift in {workload}: drop-in and Podman differ"
            );
            for name in &drift.in_podman_not_in_dropin {
                let _ = writeln!(out, "  in Podman, not in the drop-in: {name}");
            }
            for name in &drift.in_dropin_not_in_podman {
                let _ = writeln!(out, "  in the drop-in, not in Podman: {name}");
            }
        }
    }
}

/// `psi check`: per workload, whether every source and key resolved.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub workloads: Vec<CheckWorkload>,
}

#[derive(Debug, Serialize)]
pub struct CheckWorkload {
    pub workload: String,
    pub ok: bool,
    /// Podman secrets the workload resolves to.
    pub secrets: usize,
    pub problems: Vec<String>,
    pub collisions: Vec<Collision>,
}

impl CheckReport {
    pub(super) fn add(&mut self, workload: &str, outcome: Result<Desired, DiscoverError>) {
        let (ok, secrets, problems, collisions) = match outcome {
            Ok(desired) => (true, desired.secrets.len(), Vec::new(), desired.collisions),
            Err(DiscoverError::Skipped(_)) => return,
            Err(DiscoverError::Missing(missing)) => (
                false,
                0,
                missing
                    .iter()
                    .map(|m| format!("missing: {} (secrets[{}], {})", m.key, m.source, m.location))
                    .collect(),
                Vec::new(),
            ),
            Err(err) => (false, 0, vec![err.to_string()], Vec::new()),
        };
        self.workloads.push(CheckWorkload {
            workload: workload.to_owned(),
            ok,
            secrets,
            problems,
            collisions,
        });
    }

    pub fn failures(&self) -> usize {
        self.workloads.iter().filter(|w| !w.ok).count()
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        for w in &self.workloads {
            if w.ok {
                let _ = writeln!(out, "OK    {}: {} secret(s)", w.workload, w.secrets);
            } else {
                let _ = writeln!(out, "FAIL  {}", w.workload);
                for p in &w.problems {
                    let _ = writeln!(out, "      {p}");
                }
            }
            for c in &w.collisions {
                let _ = writeln!(
                    out,
                    "      collision {}: {} wins over {}",
                    c.key, c.kept, c.dropped
                );
            }
        }
        out
    }
}
