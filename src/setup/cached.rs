//! Setup's part of the encrypted cache: after the workloads are applied, `cache.enc` is
//! rebuilt from this run's listings. Entries of secrets no longer configured are pruned; a
//! failed workload keeps its previous entries, so an outage of its source never empties
//! the cache its containers start from. The setup lock is held, so runs never interleave.

use std::collections::HashMap;

use super::report::CacheReport;
use crate::cache::{self, Backend, Entries};
use crate::config::Settings;
use crate::provider::Registry;
use crate::secret::{Mapping, SecretValue};

/// Writes the cache when one is configured; `None` when it is not. Never fails the run:
/// without a cache, containers still start from the live providers.
pub(super) async fn write(
    settings: &Settings,
    registry: &Registry,
    values: &HashMap<Vec<u8>, SecretValue>,
    fresh: &[Vec<u8>],
    keep: &[Vec<u8>],
) -> Option<CacheReport> {
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
        Ok(None) => return None,
        Err(err) => {
            tracing::warn!(event = "cache.save", outcome = "error", error = %err, "the cache backend is unavailable; the cache is not updated and container starts use the live providers");
            report.error = Some(err.to_string());
            return Some(report);
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
    Some(report)
}
