//! The diff between what a workload should have ([`Desired`]) and what Podman and the
//! systemd dir hold now: which secrets to create, keep, replace or remove, and whether the
//! drop-in changes; and [`SetupPlan`], the whole run's plan (every workload's step, with the
//! state it was planned against). Pure data in, pure data out; `apply` carries it out and
//! `--dry-run` prints it.
//!
//! A secret is kept (same Podman ID) when its mapping file holds exactly the desired mapping
//! and its driver options are the current psi.conf commands. Secrets of the workload that
//! are no longer desired are drift: reported, and removed only with `--prune`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::desired::Desired;
use crate::unitgen::driver_conf::DriverOpts;

/// A Podman shell-driver secret as setup sees it. Its `Debug` names the driver options
/// without their values: curl's commands carry the socket token inline.
#[derive(Clone)]
pub struct Existing {
    pub id: String,
    pub name: String,
    pub options: BTreeMap<String, String>,
    /// `state_dir/<id>`, if there is one.
    pub mapping: Option<Vec<u8>>,
}

impl std::fmt::Debug for Existing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Existing")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("mapping", &self.mapping.as_ref().map(Vec::len))
            .finish()
    }
}

impl Existing {
    /// The provider its mapping names, if the mapping file exists and parses.
    fn provider(&self) -> Option<String> {
        let bytes = self.mapping.as_deref()?;
        crate::secret::Mapping::parse(bytes)
            .ok()
            .map(|m| m.provider().to_owned())
    }
}

/// Why a secret is re-created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Its mapping points somewhere else now (another folder or project).
    MappingChanged,
    /// Its driver options are not the current psi.conf commands (socket or token changed).
    StaleOpts,
    /// psi has no mapping for its ID; lookups would fail.
    Orphaned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Create {
        name: String,
    },
    Keep {
        name: String,
        id: String,
    },
    Replace {
        name: String,
        id: String,
        reason: Reason,
    },
    /// Drift removed with `--prune`.
    Remove {
        name: String,
        id: String,
    },
    /// Drift left in place (no `--prune`).
    Drift {
        name: String,
        id: String,
    },
}

impl Action {
    pub fn name(&self) -> &str {
        match self {
            Action::Create { name }
            | Action::Keep { name, .. }
            | Action::Replace { name, .. }
            | Action::Remove { name, .. }
            | Action::Drift { name, .. } => name,
        }
    }

    /// Whether carrying it out calls Podman.
    pub fn changes_podman(&self) -> bool {
        matches!(
            self,
            Action::Create { .. } | Action::Replace { .. } | Action::Remove { .. }
        )
    }
}

/// The plan for one workload.
#[derive(Debug, Clone)]
pub struct WorkloadPlan {
    pub actions: Vec<Action>,
    /// The drop-in text to write, `None` when the file already says exactly this.
    pub dropin: Option<String>,
}

impl WorkloadPlan {
    /// What Podman's shell secrets (`secrets`, all of them) would be once this plan is carried
    /// out: for `--dry-run`'s projection of the state after the run. Created and re-created
    /// secrets get the desired mapping and the current driver options, as `apply` gives
    /// them, and no ID yet (Podman assigns one).
    pub fn project(
        &self,
        secrets: &mut Vec<Existing>,
        desired: &Desired,
        opts: &BTreeMap<String, String>,
    ) {
        let created = |name: &str| Existing {
            id: String::new(),
            name: name.to_owned(),
            options: opts.clone(),
            mapping: desired.secrets.get(name).cloned(),
        };
        for action in &self.actions {
            match action {
                Action::Create { name } => secrets.push(created(name)),
                Action::Replace { name, id, .. } => {
                    if let Some(secret) = secrets.iter_mut().find(|s| s.id == *id) {
                        *secret = created(name);
                    }
                }
                Action::Remove { id, .. } => secrets.retain(|s| s.id != *id),
                Action::Keep { .. } | Action::Drift { .. } => {}
            }
        }
    }
}

/// The whole run, planned: what `psi setup --dry-run` reports (as text or `--json`) and a real
/// run applies. No `Debug`: the driver options hold the socket token (theirs redacts it).
pub struct SetupPlan {
    pub dry_run: bool,
    /// Every configured workload, selected or not: they own secret names and are classified.
    pub names: Vec<String>,
    /// Podman's shell-driver secrets with their mapping files, as the run found them.
    pub shell: Vec<Existing>,
    /// The drop-ins on disk as the run found them, by workload (those that have one).
    pub dropins: BTreeMap<String, String>,
    /// The driver options setup gives the secrets it creates, and accepts on those it keeps.
    pub opts: DriverOpts,
    /// One step per selected workload, in config order.
    pub workloads: Vec<WorkloadStep>,
}

/// What the run does with one workload.
#[derive(Debug)]
pub struct WorkloadStep {
    pub name: String,
    pub step: Step,
}

#[derive(Debug)]
pub enum Step {
    /// Its provider has nothing to discover; the note says how its secrets are made.
    Skipped(String),
    /// Discovery failed: its secrets and drop-in stay as they are.
    Failed(String),
    Planned {
        desired: Desired,
        plan: WorkloadPlan,
        /// Where its drop-in is.
        dropin_path: PathBuf,
    },
}

impl SetupPlan {
    /// The names as `&str`, for the classification.
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The shell secrets that workload `name` owns (see [`owner`]).
    pub fn owned<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Existing> + 'a {
        self.shell
            .iter()
            .filter(move |e| owner(&e.name, self.names.iter().map(String::as_str)) == Some(name))
    }

    /// Podman's shell secrets and the drop-ins as they would be once every planned workload
    /// is carried out: a dry run's projection of the state after it.
    pub fn projection(&self) -> (Vec<Existing>, BTreeMap<String, String>) {
        let mut secrets = self.shell.clone();
        let mut dropins = self.dropins.clone();
        for w in &self.workloads {
            if let Step::Planned { desired, plan, .. } = &w.step {
                plan.project(&mut secrets, desired, &self.opts.commands);
                if let Some(text) = &plan.dropin {
                    dropins.insert(w.name.clone(), text.clone());
                }
            }
        }
        (secrets, dropins)
    }
}

/// The workload that owns Podman secret `name`: the longest configured workload `w` with
/// `name` starting `w--`, so workload `a` never claims `a--b--KEY` of workload `a--b`.
pub fn owner<'a>(name: &str, workloads: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    workloads
        .into_iter()
        .filter(|w| {
            name.strip_prefix(*w)
                .is_some_and(|rest| rest.starts_with("--") && rest.len() > 2)
        })
        .max_by_key(|w| w.len())
}

/// Plans one workload. `existing` holds the shell secrets this workload owns (see [`owner`]);
/// `provider` is the workload's provider, so a secret of another provider that happens to
/// carry the workload's prefix (say, made by `psi creds store --register`) is never drift.
pub fn plan(
    desired: &Desired,
    existing: &[Existing],
    current_opts: &DriverOpts,
    provider: &str,
    rendered_dropin: &str,
    current_dropin: Option<&str>,
    prune: bool,
) -> WorkloadPlan {
    let by_name: BTreeMap<&str, &Existing> =
        existing.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut actions = Vec::new();
    for (name, mapping) in &desired.secrets {
        let action = match by_name.get(name.as_str()) {
            None => Action::Create { name: name.clone() },
            Some(found) => {
                let reason = match &found.mapping {
                    None => Some(Reason::Orphaned),
                    Some(bytes) if bytes.trim_ascii() != mapping.as_slice() => {
                        Some(Reason::MappingChanged)
                    }
                    Some(_) if !current_opts.accepts(&found.options) => Some(Reason::StaleOpts),
                    Some(_) => None,
                };
                match reason {
                    None => Action::Keep {
                        name: name.clone(),
                        id: found.id.clone(),
                    },
                    Some(reason) => Action::Replace {
                        name: name.clone(),
                        id: found.id.clone(),
                        reason,
                    },
                }
            }
        };
        actions.push(action);
    }
    for found in existing {
        if desired.secrets.contains_key(&found.name) {
            continue;
        }
        let ours = match found.provider() {
            Some(p) => p == provider,
            None => found.mapping.is_none(),
        };
        if !ours {
            continue;
        }
        let (name, id) = (found.name.clone(), found.id.clone());
        actions.push(if prune {
            Action::Remove { name, id }
        } else {
            Action::Drift { name, id }
        });
    }
    actions.sort_by(|a, b| a.name().cmp(b.name()));
    WorkloadPlan {
        actions,
        dropin: (current_dropin != Some(rendered_dropin)).then(|| rendered_dropin.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unitgen::driver_conf::{commands, Client, DriverConf};

    fn opts() -> BTreeMap<String, String> {
        current().commands
    }

    fn current() -> DriverOpts {
        let conf = DriverConf {
            socket: std::path::Path::new("/run/psi/psi.sock"),
            client: Client::Curl { token: None },
        };
        DriverOpts::new(commands(&conf), None, None, false)
    }

    fn desired(names: &[(&str, &str)]) -> Desired {
        Desired {
            secrets: names
                .iter()
                .map(|(n, m)| ((*n).to_owned(), m.as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        }
    }

    fn existing(
        name: &str,
        id: &str,
        mapping: Option<&str>,
        opts: BTreeMap<String, String>,
    ) -> Existing {
        Existing {
            id: id.into(),
            name: name.into(),
            options: opts,
            mapping: mapping.map(|m| m.as_bytes().to_vec()),
        }
    }

    const A: &str = r#"{"provider": "infisical", "project": "p", "path": "/", "key": "A"}"#;
    const B: &str = r#"{"provider": "infisical", "project": "p", "path": "/x", "key": "B"}"#;

    #[test]
    fn classifies_every_case() {
        let want = desired(&[
            ("w--A", A),
            ("w--B", B),
            ("w--C", A),
            ("w--D", A),
            ("w--E", A),
        ]);
        let have = [
            existing("w--A", "1", Some(A), opts()),
            existing("w--B", "2", Some(A), opts()),
            existing("w--C", "3", None, opts()),
            existing("w--D", "4", Some(A), BTreeMap::new()),
            existing("w--OLD", "5", Some(B), opts()),
            existing(
                "w--CREDS",
                "6",
                Some(r#"{"provider": "systemd-creds", "name": "x", "blob": "y"}"#),
                opts(),
            ),
            existing("w--GONE", "7", None, opts()),
        ];
        let plan = plan(&want, &have, &current(), "infisical", "x", Some("x"), false);
        assert_eq!(plan.dropin, None);
        let got: Vec<String> = plan.actions.iter().map(|a| format!("{a:?}")).collect();
        assert_eq!(
            got,
            [
                r#"Keep { name: "w--A", id: "1" }"#,
                r#"Replace { name: "w--B", id: "2", reason: MappingChanged }"#,
                r#"Replace { name: "w--C", id: "3", reason: Orphaned }"#,
                r#"Replace { name: "w--D", id: "4", reason: StaleOpts }"#,
                r#"Create { name: "w--E" }"#,
                r#"Drift { name: "w--GONE", id: "7" }"#,
                r#"Drift { name: "w--OLD", id: "5" }"#,
            ]
        );
        let pruned = super::plan(&want, &have, &current(), "infisical", "y", Some("x"), true);
        assert_eq!(pruned.dropin.as_deref(), Some("y"));
        assert!(pruned.actions.contains(&Action::Remove {
            name: "w--OLD".into(),
            id: "5".into()
        }));
    }

    #[test]
    fn projects_the_secrets_after_the_plan() {
        let want = desired(&[("w--A", A), ("w--B", B), ("w--C", A)]);
        let have = vec![
            existing("w--A", "1", Some(A), opts()),
            existing("w--B", "2", None, opts()),
            existing("w--OLD", "3", Some(B), opts()),
            existing("v--X", "4", Some(B), BTreeMap::new()),
        ];
        let plan = plan(&want, &have[..3], &current(), "infisical", "x", None, true);
        let mut after = have.clone();
        plan.project(&mut after, &want, &opts());
        let got: Vec<(&str, &str, Option<&[u8]>, bool)> = after
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.id.as_str(),
                    e.mapping.as_deref(),
                    e.options == opts(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("w--A", "1", Some(A.as_bytes()), true),
                ("w--B", "", Some(B.as_bytes()), true),
                ("v--X", "4", Some(B.as_bytes()), false),
                ("w--C", "", Some(A.as_bytes()), true),
            ]
        );
    }

    #[test]
    fn longest_workload_owns_a_name() {
        let workloads = ["a", "a--b", "web@"];
        assert_eq!(owner("a--KEY", workloads), Some("a"));
        assert_eq!(owner("a--b--KEY", workloads), Some("a--b"));
        assert_eq!(owner("web@--KEY", workloads), Some("web@"));
        assert_eq!(owner("a--", workloads), None);
        assert_eq!(owner("ab--KEY", workloads), None);
    }
}
