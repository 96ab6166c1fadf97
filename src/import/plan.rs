//! The decisions of `psi infisical import` (pure): one value per key from what the sources
//! gave ([`agree`]), then each key's fate from what the target folder holds ([`plan`],
//! given the folder as [`Upstream`]: its secrets with stored values, and the folders missing
//! on the way to it): `created`, `updated`, `unchanged` (the folder holds this value
//! already: nothing is sent), `skipped`, `conflict`, or `failed` (a key whose sources
//! disagree, or that could not be read). Only missing folders are created, and only when a
//! key is written. The report comes from the plan, so a dry run reports exactly what a real
//! run would do.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Found, Unreadable};
use crate::provider::infisical::writes::Upstream;

/// What to do with a key that already holds another value in the target folder
/// (`--conflict`; its clap values are in [`crate::cli`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    /// Write nothing when any key holds another value in Infisical.
    Fail,
    /// Leave keys that hold other values as they are.
    Skip,
    /// Update keys that hold other values.
    Overwrite,
}

/// What happened (or, in a dry run, would happen) to a key or a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New in the folder (a folder: did not exist).
    Created,
    /// The folder held another value (`--conflict overwrite`).
    Updated,
    /// The folder already holds this value: nothing is sent.
    Unchanged,
    /// Not written: `--conflict skip`, or other keys conflict under `--conflict fail`.
    Skipped,
    /// The folder holds another value and `--conflict` is `fail`.
    Conflict,
    /// Not readable, the sources disagree, or the write failed.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Serialize)]
pub struct Row {
    pub key: String,
    pub source: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// A folder on the way to the target that does not exist.
#[derive(Serialize)]
pub struct FolderRow {
    pub path: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// One value per key: identical values from several sources are one key; keys whose
/// sources disagree, or that a source could not read, are failed rows and not written.
pub fn agree(found: Vec<Found>, unreadable: Vec<Unreadable>) -> (Vec<Found>, Vec<Row>) {
    let mut rows = Vec::new();
    let mut by_key: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    for f in found {
        by_key.entry(f.key.clone()).or_default().push(f);
    }
    let mut unreadable_keys = BTreeSet::new();
    for u in unreadable {
        unreadable_keys.insert(u.key.clone());
        rows.push(Row {
            key: u.key,
            source: u.source,
            outcome: Outcome::Failed,
            detail: u.why,
        });
    }
    let mut keys = Vec::new();
    for (key, mut list) in by_key {
        let sources = list
            .iter()
            .map(|f| f.source.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ");
        let why = if list.iter().any(|f| f.value != list[0].value) {
            "the sources give different values; not written"
        } else if unreadable_keys.contains(&key) {
            "another source of this key could not be read; not written"
        } else {
            let mut first = list.swap_remove(0);
            first.source = sources;
            keys.push(first);
            continue;
        };
        rows.push(Row {
            key,
            source: sources,
            outcome: Outcome::Failed,
            detail: why.into(),
        });
    }
    (keys, rows)
}

/// What an import does, decided before anything is written.
pub struct Plan {
    /// The folders to create, shallowest first (none when nothing is written).
    pub folders: Vec<FolderRow>,
    /// The keys to send, with whether each updates an existing one.
    pub writes: Vec<(Found, bool)>,
    /// One row per key, in the order of `keys`.
    pub rows: Vec<Row>,
}

/// Decides each key's fate from the folder's state (pure). A key whose stored value equals
/// the imported one is `unchanged` under every policy: there is nothing to overwrite, so it
/// is no conflict either. `--conflict fail` is all-or-nothing: when any key holds another
/// value, nothing is written at all.
pub fn plan(conflict: Conflict, keys: Vec<Found>, upstream: &Upstream) -> Plan {
    let stored = |f: &Found| upstream.secrets.get(&f.key).map(|v| v.expose() == *f.value);
    let abort = conflict == Conflict::Fail && keys.iter().any(|f| stored(f) == Some(false));
    let mut writes = Vec::new();
    let mut rows = Vec::new();
    for f in keys {
        let (outcome, detail) = match (stored(&f), conflict) {
            (Some(true), _) => (Outcome::Unchanged, "Infisical holds this value"),
            (Some(false), Conflict::Fail) => (
                Outcome::Conflict,
                "Infisical holds another value (use --conflict skip or overwrite)",
            ),
            (Some(false), Conflict::Skip) => (
                Outcome::Skipped,
                "Infisical holds another value (--conflict skip)",
            ),
            _ if abort => (
                Outcome::Skipped,
                "not written: other keys conflict and --conflict is fail",
            ),
            (Some(false), Conflict::Overwrite) => {
                (Outcome::Updated, "Infisical held another value")
            }
            (None, _) => (Outcome::Created, "new key"),
        };
        rows.push(Row {
            key: f.key.clone(),
            source: f.source.clone(),
            outcome,
            detail: detail.into(),
        });
        if matches!(outcome, Outcome::Created | Outcome::Updated) {
            writes.push((f, outcome == Outcome::Updated));
        }
    }
    let folders = if writes.is_empty() {
        Vec::new()
    } else {
        upstream
            .missing
            .iter()
            .map(|path| FolderRow {
                path: path.clone(),
                outcome: Outcome::Created,
                detail: "missing".into(),
            })
            .collect()
    };
    Plan {
        folders,
        writes,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use zeroize::Zeroizing;

    fn found(key: &str, value: &str) -> Found {
        Found {
            key: key.into(),
            value: Zeroizing::new(value.into()),
            source: "f.env".into(),
        }
    }

    /// The folder holds SAME=same and DIFF=old; the import brings SAME, DIFF=new and NEW.
    fn planned(conflict: Conflict, missing: &[&str]) -> Plan {
        let upstream = Upstream {
            secrets: [("SAME", "same"), ("DIFF", "old")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), SecretString::new(v.to_owned())))
                .collect(),
            missing: missing.iter().map(|p| (*p).to_owned()).collect(),
        };
        let keys = vec![
            found("DIFF", "new"),
            found("NEW", "n"),
            found("SAME", "same"),
        ];
        plan(conflict, keys, &upstream)
    }

    fn decided(plan: &Plan) -> Vec<(&str, Outcome)> {
        plan.rows
            .iter()
            .map(|r| (r.key.as_str(), r.outcome))
            .collect()
    }

    fn sent(plan: &Plan) -> Vec<(&str, bool)> {
        plan.writes
            .iter()
            .map(|(f, update)| (f.key.as_str(), *update))
            .collect()
    }

    #[test]
    fn equal_values_are_unchanged_under_every_policy() {
        use Outcome::{Created, Skipped, Unchanged, Updated};
        let plan = planned(Conflict::Overwrite, &[]);
        assert_eq!(
            decided(&plan),
            [("DIFF", Updated), ("NEW", Created), ("SAME", Unchanged)]
        );
        assert_eq!(sent(&plan), [("DIFF", true), ("NEW", false)]);
        let plan = planned(Conflict::Skip, &[]);
        assert_eq!(
            decided(&plan),
            [("DIFF", Skipped), ("NEW", Created), ("SAME", Unchanged)]
        );
        assert_eq!(sent(&plan), [("NEW", false)]);
    }

    #[test]
    fn conflict_fail_writes_nothing_when_any_key_holds_another_value() {
        use Outcome::{Skipped, Unchanged};
        let plan = planned(Conflict::Fail, &["/never"]);
        assert_eq!(
            decided(&plan),
            [
                ("DIFF", Outcome::Conflict),
                ("NEW", Skipped),
                ("SAME", Unchanged)
            ]
        );
        assert!(plan.writes.is_empty());
        // Nothing written, so no folder created either.
        assert!(plan.folders.is_empty());
    }

    #[test]
    fn missing_folders_are_planned_only_with_writes() {
        let writing = planned(Conflict::Overwrite, &["/a", "/a/b"]);
        let folders: Vec<&str> = writing.folders.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(folders, ["/a", "/a/b"]);
        let nothing = plan(
            Conflict::Overwrite,
            Vec::new(),
            &Upstream {
                missing: vec!["/a".into()],
                ..Upstream::default()
            },
        );
        assert!(nothing.folders.is_empty());
    }
}
