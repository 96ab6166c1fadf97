//! Setup's part of the encrypted cache: after the workloads are applied, `cache.enc` is
//! rebuilt from this run's listings. Entries of secrets no longer configured are pruned; a
//! failed workload keeps its previous entries, so an outage of its source never empties
//! the cache its containers start from. The setup lock is held, so runs never interleave.
//!
//! The previous file is also how a run tells which values changed upstream: both files are
//! keyed with the same HMAC key, so this run's value of a mapping is compared with the one
//! the previous file holds under the same digest, in memory. Nothing about a value (no
//! hash, no copy) is written anywhere but into the encrypted cache itself.

use std::collections::{BTreeSet, HashMap};

use super::report::CacheReport;
use crate::cache::{self, Backend, Entries};
use crate::config::Settings;
use crate::provider::Registry;
use crate::secret::{Mapping, SecretValue};

/// Whether this run's values differ from those the previous cache held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// The mappings (of this run's fresh ones) whose value differs from the previous
    /// cache's; a mapping the previous cache did not hold is not among them (its Podman
    /// secret is new, which the plan shows).
    Values(BTreeSet<Vec<u8>>),
    /// Values could not be compared, and why.
    Unknown(&'static str),
}

/// Writes the cache when one is configured; `None` when it is not. Never fails the run:
/// without a cache, containers still start from the live providers. Also says which of the
/// `fresh` mappings changed value since the previous cache.
pub(super) async fn write(
    settings: &Settings,
    registry: &Registry,
    values: &HashMap<Vec<u8>, SecretValue>,
    fresh: &[Vec<u8>],
    keep: &[Vec<u8>],
) -> (Option<CacheReport>, Compared) {
    let path = settings.cache.path.clone();
    let mut report = CacheReport {
        path: path.display().to_string(),
        entries: None,
        previous: None,
        kept: 0,
        error: None,
    };
    let backend: Backend = match Backend::from_settings(settings, registry) {
        Ok(Some(backend)) => backend,
        Ok(None) => return (None, Compared::Unknown(NO_CACHE)),
        Err(err) => {
            tracing::warn!(event = "cache.save", outcome = "error", error = %err, "the cache backend is unavailable; the cache is not updated and container starts use the live providers");
            report.error = Some(err.to_string());
            return (Some(report), Compared::Unknown(UNREADABLE));
        }
    };
    let previous = match cache::load(&path, &backend).await {
        Ok(loaded) => loaded.map(|l| l.entries),
        Err(err) => {
            tracing::warn!(event = "cache.load", outcome = "error", path = %path.display(), error = %err, "the cache is unreadable; writing a new one");
            None
        }
    };
    report.previous = previous.as_ref().map(Entries::len);
    let compared = match &previous {
        Some(previous) => Compared::Values(changed(previous, values, fresh)),
        None => Compared::Unknown(NO_PREVIOUS),
    };
    let mut next = previous
        .as_ref()
        .map(Entries::with_same_key)
        .unwrap_or_else(Entries::empty);
    for bytes in fresh {
        if let (Ok(mapping), Some(value)) = (Mapping::parse(bytes), values.get(bytes)) {
            let digest = next.digest(&mapping);
            next.insert(digest, value.clone());
        }
    }
    if let Some(previous) = &previous {
        // Same HMAC key in both, so a digest means the same mapping in either.
        for bytes in keep {
            let Ok(mapping) = Mapping::parse(bytes) else {
                continue;
            };
            let digest = previous.digest(&mapping);
            if let Some(value) = previous.get(&digest) {
                if next.get(&digest).is_none() {
                    next.insert(digest, value.clone());
                    report.kept += 1;
                }
            }
        }
    }
    match cache::save(&path, &backend, &next).await {
        Ok(()) => {
            tracing::info!(event = "cache.save", outcome = "success", path = %path.display(), entries = next.len(), kept = report.kept, "secret cache written");
            report.entries = Some(next.len());
        }
        Err(err) => {
            tracing::warn!(event = "cache.save", outcome = "error", path = %path.display(), error = %err, "the cache could not be written");
            report.error = Some(err.to_string());
        }
    }
    (Some(report), compared)
}

const NO_CACHE: &str = "no cache is configured, so psi cannot tell whether a value changed upstream; only changes to Podman secrets and drop-ins are seen";
const UNREADABLE: &str = "the cache could not be read, so psi cannot tell whether a value changed upstream in this run; only changes to Podman secrets and drop-ins are seen";
const NO_PREVIOUS: &str = "there was no previous cache to compare values with in this run; only changes to Podman secrets and drop-ins are seen";

/// The `fresh` mappings whose value in `values` differs from the one `previous` holds for
/// the same mapping. Pure: the comparison happens in memory.
fn changed(
    previous: &Entries,
    values: &HashMap<Vec<u8>, SecretValue>,
    fresh: &[Vec<u8>],
) -> BTreeSet<Vec<u8>> {
    fresh
        .iter()
        .filter(|bytes| {
            let (Ok(mapping), Some(value)) = (Mapping::parse(bytes), values.get(*bytes)) else {
                return false;
            };
            previous
                .get(&previous.digest(&mapping))
                .is_some_and(|before| before.expose() != value.expose())
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(key: &str) -> Vec<u8> {
        crate::provider::infisical::mapping("web", "/app", key).to_bytes()
    }

    fn value(text: &str) -> SecretValue {
        SecretValue::from(zeroize::Zeroizing::new(text.as_bytes().to_vec()))
    }

    #[test]
    fn only_values_the_previous_cache_held_otherwise_changed() {
        let mut previous = Entries::empty();
        for (key, text) in [("SAME", "a"), ("ROTATED", "old")] {
            let digest = previous.digest(&Mapping::parse(&mapping(key)).unwrap());
            previous.insert(digest, value(text));
        }
        let values: HashMap<Vec<u8>, SecretValue> = [
            (mapping("SAME"), value("a")),
            (mapping("ROTATED"), value("new")),
            (mapping("NEW"), value("x")),
        ]
        .into_iter()
        .collect();
        let fresh: Vec<Vec<u8>> = values.keys().cloned().collect();
        let got = changed(&previous, &values, &fresh);
        assert_eq!(got, BTreeSet::from([mapping("ROTATED")]));
    }
}
