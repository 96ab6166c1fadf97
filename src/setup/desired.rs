//! What a workload should look like, from its config and what the provider listed: the
//! Podman secrets it needs (`{workload}--{KEY}` and their mappings) and the `Secret=` lines of
//! its drop-in. Pure: listings in, data out, so `psi setup`, `--dry-run` and `psi check` share
//! one definition of "what this config asks for".

use std::collections::BTreeMap;

use crate::config::{FileSecret, SecretKind, SecretSource, WorkloadConfig};
use crate::unitgen::dropin::{Delivery, SecretLine};

/// One key as a provider listed it for a source: where a lookup finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: String,
    /// The folder a lookup asks (own secrets: their folder; imports: the importing folder).
    pub path: String,
    /// The mapping that resolves it (the body Podman hands psi's store).
    pub mapping: Vec<u8>,
}

/// The state a workload should have in Podman and in its drop-in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Podman secret name -> mapping bytes (the body Podman hands psi's store).
    pub secrets: BTreeMap<String, Vec<u8>>,
    pub lines: Vec<SecretLine>,
    /// Two sources (or two folders of a recursive source) that yield the same key; the later
    /// one wins, as in the original, but the user is told.
    pub collisions: Vec<Collision>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Collision {
    pub key: String,
    pub kept: String,
    pub dropped: String,
}

/// A key the config names (in `env` or `files`) that the source does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub source: usize,
    pub key: String,
    /// Where it was looked for: `project:path`.
    pub location: String,
}

/// The Podman secret name for `key` of `workload`.
pub fn secret_name(workload: &str, key: &str) -> String {
    format!("{workload}--{key}")
}

/// Builds the desired state of `workload` from one listing per source (same order as
/// `config.secrets`). Keys named in `env`/`files` but not listed are returned as missing.
pub fn desired(
    workload: &str,
    config: &WorkloadConfig,
    listings: &[Vec<Found>],
) -> Result<Desired, Vec<Missing>> {
    let mut out = Desired::default();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let mut missing = Vec::new();
    for (index, (source, listing)) in config.secrets.iter().zip(listings).enumerate() {
        let by_key: BTreeMap<&str, &Found> = listing.iter().map(|f| (f.key.as_str(), f)).collect();
        let location = |found: &Found| format!("{}:{}", source.project, found.path);

        // Within a recursive listing two folders may hold the same key: report those too.
        let mut seen: BTreeMap<&str, &Found> = BTreeMap::new();
        for found in listing {
            if let Some(earlier) = seen.insert(&found.key, found) {
                if earlier.path != found.path {
                    out.collisions.push(Collision {
                        key: found.key.clone(),
                        kept: location(found),
                        dropped: location(earlier),
                    });
                }
            }
        }

        let keys: Vec<&str> = if source.selects_keys() {
            let wanted: Vec<&str> = source
                .env
                .values()
                .map(String::as_str)
                .chain(source.files.keys().map(String::as_str))
                .collect();
            for key in &wanted {
                if !by_key.contains_key(key) {
                    missing.push(Missing {
                        source: index,
                        key: (*key).to_owned(),
                        location: format!("{}:{}", source.project, source.path),
                    });
                }
            }
            wanted
                .into_iter()
                .filter(|k| by_key.contains_key(k))
                .collect()
        } else {
            by_key.keys().copied().collect()
        };

        for key in keys {
            let found = seen[key];
            let name = secret_name(workload, key);
            let mapping = found.mapping.clone();
            let here = location(found);
            if let Some(before) = origin.insert(key.to_owned(), here.clone()) {
                if before != here {
                    out.collisions.push(Collision {
                        key: key.to_owned(),
                        kept: here,
                        dropped: before,
                    });
                }
                // The later source's delivery replaces the earlier one's.
                out.lines.retain(|line| line.name != name);
            }
            out.secrets.insert(name.clone(), mapping);
            out.lines
                .extend(deliveries(source, key).map(|delivery| SecretLine {
                    name: name.clone(),
                    delivery,
                }));
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// How `key` of `source` reaches the container: an env var per `env` entry naming it, a file
/// per `files` entry, every key as a file for `type: mount`, else one env var named after it.
fn deliveries<'a>(source: &'a SecretSource, key: &'a str) -> impl Iterator<Item = Delivery> + 'a {
    let all: Vec<Delivery> = if source.selects_keys() {
        source
            .env
            .iter()
            .filter(|(_, k)| k.as_str() == key)
            .map(|(var, _)| Delivery::Env { var: var.clone() })
            .chain(source.files.get(key).map(|file| mount(file, key)))
            .collect()
    } else if source.kind == Some(SecretKind::Mount) {
        // The source's `target` is a directory: one file per key inside it.
        let file = FileSecret {
            target: source
                .target
                .as_ref()
                .map(|dir| format!("{}/{key}", dir.trim_end_matches('/'))),
            mode: source.mode,
            uid: source.uid,
            gid: source.gid,
        };
        vec![mount(&file, key)]
    } else {
        vec![Delivery::Env {
            var: key.to_owned(),
        }]
    };
    all.into_iter()
}

fn mount(file: &FileSecret, key: &str) -> Delivery {
    Delivery::Mount {
        target: file.target.clone().unwrap_or_else(|| key.to_owned()),
        mode: file.mode.map(|mode| mode.to_string()),
        uid: file.uid,
        gid: file.gid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::infisical;

    fn workload(yaml: &str) -> WorkloadConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn found(project: &str, key: &str, path: &str) -> Found {
        Found {
            key: key.into(),
            path: path.into(),
            mapping: infisical::mapping(project, path, key).to_bytes(),
        }
    }

    #[test]
    fn later_sources_win_and_collisions_are_reported() {
        let w = workload("secrets:\n  - {project: a, path: /one, recursive: true}\n  - {project: b, path: /two}\n");
        let listings = [
            vec![
                found("a", "X", "/one"),
                found("a", "X", "/one/sub"),
                found("a", "Y", "/one"),
            ],
            vec![found("b", "Y", "/two")],
        ];
        let d = desired("app", &w, &listings).unwrap();
        assert_eq!(
            d.secrets["app--Y"],
            br#"{"provider": "infisical", "project": "b", "path": "/two", "key": "Y"}"#
        );
        assert_eq!(
            d.secrets["app--X"],
            br#"{"provider": "infisical", "project": "a", "path": "/one/sub", "key": "X"}"#
        );
        let described: Vec<String> = d
            .collisions
            .iter()
            .map(|c| format!("{} {} > {}", c.key, c.kept, c.dropped))
            .collect();
        assert_eq!(described, ["X a:/one/sub > a:/one", "Y b:/two > a:/one"]);
        // One line per secret: the later source's delivery replaced the earlier one.
        assert_eq!(d.lines.iter().filter(|l| l.name == "app--Y").count(), 1);
    }

    #[test]
    fn named_keys_must_exist() {
        let w = workload("secrets:\n  - {project: a, path: /p, env: {V: GONE, W: HERE}, files: {ALSO_GONE: {}}}\n");
        let missing = desired("app", &w, &[vec![found("a", "HERE", "/p")]]).unwrap_err();
        let keys: Vec<&str> = missing.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["GONE", "ALSO_GONE"]);
        assert_eq!(missing[0].location, "a:/p");
    }

    #[test]
    fn mount_sources_put_each_key_in_the_target_directory() {
        let w = workload("secrets:\n  - {project: a, path: /tls, type: mount, target: /etc/tls/, mode: '0400'}\n");
        let d = desired("app", &w, &[vec![found("a", "CERT", "/tls")]]).unwrap();
        assert_eq!(
            d.lines,
            [SecretLine {
                name: "app--CERT".into(),
                delivery: Delivery::Mount {
                    target: "/etc/tls/CERT".into(),
                    mode: Some("0400".into()),
                    uid: None,
                    gid: None
                }
            }]
        );
    }
}
