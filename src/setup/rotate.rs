//! Rotation, the pure part: which workloads a run changed and what becomes of the running
//! ones. A workload changed when a value it uses differs from the previous cache's
//! ([`Compared`]), when one of its Podman secrets was created, replaced or removed, or when
//! its drop-in was written. Env and file secrets are read at container start, so only a
//! restart hands a running container the new values; `on_change` says whether psi does it.
//! `apply` carries the restarts out; the report shows [`Rotation`].

use serde::Serialize;

use super::cached::Compared;
use super::desired::Desired;
use super::plan::{Action, WorkloadPlan};

/// What a run changed in one workload, and what became of its running unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    #[serde(flatten)]
    pub changed: Changed,
    pub restart: Restart,
}

/// What a run changed in one workload (secrets by name, never a value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// Its Podman secrets whose value or secret changed.
    pub changed_secrets: Vec<String>,
    /// Those of them whose value changed upstream (the Podman secret stayed).
    pub changed_values: Vec<String>,
    pub dropin_changed: bool,
}

/// What became of a changed workload's unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Restart {
    /// systemd took the restart job. It runs once setup's own unit is done: the drop-in
    /// orders the workload after it, so waiting for the job from inside setup's unit would
    /// wait forever.
    #[serde(rename = "restart-queued")]
    Queued,
    /// `on_change: none`: it keeps the values it started with until it restarts.
    NotRestarted,
    /// Its unit was not active: it gets the new values when it starts.
    NotRunning,
    Failed {
        error: String,
    },
}

impl Restart {
    pub fn human(&self) -> String {
        match self {
            Restart::Queued => "restart queued".into(),
            Restart::NotRestarted => "not restarted (on_change: none)".into(),
            Restart::NotRunning => "not running".into(),
            Restart::Failed { error } => format!("restart failed: {error}"),
        }
    }
}

/// What the run changed in an applied workload, names sorted: the secrets whose value
/// differs from the previous cache's, those whose Podman secret was created, replaced or
/// removed, and the drop-in. `None` when nothing changed.
pub fn changed(desired: &Desired, plan: &WorkloadPlan, compared: &Compared) -> Option<Changed> {
    let podman: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| a.changes_podman())
        .map(Action::name)
        .collect();
    let changed_values: Vec<String> = match compared {
        Compared::Values(values) => desired
            .secrets
            .iter()
            .filter(|(name, mapping)| values.contains(*mapping) && !podman.contains(&name.as_str()))
            .map(|(name, _)| name.clone())
            .collect(),
        Compared::Unknown(_) => Vec::new(),
    };
    let mut changed_secrets: Vec<String> = podman.iter().map(|n| (*n).to_owned()).collect();
    changed_secrets.extend(changed_values.iter().cloned());
    changed_secrets.sort();
    let changed = Changed {
        changed_secrets,
        changed_values,
        dropin_changed: plan.dropin.is_some(),
    };
    (changed.dropin_changed || !changed.changed_secrets.is_empty()).then_some(changed)
}

/// The systemd unit (or, for a template workload `name@`, the pattern of its instances)
/// that runs workload `name`: quadlet's `NAME.container` becomes `NAME.service`.
pub fn unit(workload: &str) -> String {
    if workload.ends_with('@') {
        format!("{workload}*.service")
    } else {
        format!("{workload}.service")
    }
}

/// Whether systemd's `ActiveState` values (one per unit the pattern matched) say something
/// runs: `try-restart` does nothing, successfully, when nothing does.
pub fn running<'a>(states: impl IntoIterator<Item = &'a str>) -> bool {
    states
        .into_iter()
        .any(|s| matches!(s, "active" | "activating" | "reloading"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn desired() -> Desired {
        Desired {
            secrets: [("w--A", "a"), ("w--B", "b"), ("w--C", "c")]
                .iter()
                .map(|(n, m)| ((*n).to_owned(), m.as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        }
    }

    fn keep_all() -> WorkloadPlan {
        WorkloadPlan {
            actions: ["w--A", "w--B", "w--C"]
                .iter()
                .map(|n| Action::Keep {
                    name: (*n).into(),
                    id: "1".into(),
                })
                .collect(),
            dropin: None,
        }
    }

    #[test]
    fn unchanged_values_secrets_and_dropin_change_nothing() {
        let none = Compared::Values(BTreeSet::new());
        assert_eq!(changed(&desired(), &keep_all(), &none), None);
        let unknown = Compared::Unknown("no cache");
        assert_eq!(changed(&desired(), &keep_all(), &unknown), None);
    }

    #[test]
    fn changed_values_and_podman_changes_name_their_secrets() {
        let values = Compared::Values(BTreeSet::from([b"b".to_vec()]));
        assert_eq!(
            changed(&desired(), &keep_all(), &values),
            Some(Changed {
                changed_secrets: vec!["w--B".into()],
                changed_values: vec!["w--B".into()],
                dropin_changed: false
            })
        );
        let mut plan = keep_all();
        plan.actions[2] = Action::Replace {
            name: "w--C".into(),
            id: "3".into(),
            reason: super::super::plan::Reason::MappingChanged,
        };
        plan.actions.push(Action::Remove {
            name: "w--OLD".into(),
            id: "4".into(),
        });
        plan.actions.push(Action::Drift {
            name: "w--KEPT".into(),
            id: "5".into(),
        });
        plan.dropin = Some("text".into());
        // A secret re-created in Podman whose value changed too is named once.
        let values = Compared::Values(BTreeSet::from([b"b".to_vec(), b"c".to_vec()]));
        assert_eq!(
            changed(&desired(), &plan, &values),
            Some(Changed {
                changed_secrets: vec!["w--B".into(), "w--C".into(), "w--OLD".into()],
                changed_values: vec!["w--B".into()],
                dropin_changed: true
            })
        );
        // Only the drop-in changed: still a change, with no secret named.
        let mut plan = keep_all();
        plan.dropin = Some("text".into());
        assert_eq!(
            changed(&desired(), &plan, &Compared::Unknown("x")),
            Some(Changed {
                dropin_changed: true,
                ..Changed::default()
            })
        );
    }

    #[test]
    fn units_and_running_states() {
        assert_eq!(unit("web"), "web.service");
        assert_eq!(unit("worker@"), "worker@*.service");
        assert!(running(["inactive", "active"]));
        assert!(!running(["inactive", "failed"]));
        assert!(!running([]));
    }

    #[test]
    fn restart_outcomes_read_as_the_report_says() {
        assert_eq!(
            Restart::NotRestarted.human(),
            "not restarted (on_change: none)"
        );
        assert_eq!(
            Restart::Failed { error: "x".into() }.human(),
            "restart failed: x"
        );
        let json = serde_json::to_string(&Restart::NotRunning).unwrap();
        assert_eq!(json, r#"{"outcome":"not-running"}"#);
        let json = serde_json::to_string(&Restart::Queued).unwrap();
        assert_eq!(json, r#"{"outcome":"restart-queued"}"#);
    }
}
