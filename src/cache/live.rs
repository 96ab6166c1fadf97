//! The cache as `psi serve` holds it: an immutable snapshot of `cache.enc` behind an atomic
//! pointer, so a cache hit takes no lock and allocates only the answer; the values of misses
//! that a provider resolved, kept in memory beside it; and a watcher that notices when
//! `psi setup` writes a new file and loads it off the request path, keeping the old
//! snapshot when the new one does not decrypt. Setup can also have it loaded at once
//! ([`LiveCache::reload_now`]) before it restarts a workload.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use super::{load, Backend, Digest, Entries};
use crate::secret::{Mapping, SecretValue};

/// What the snapshot holds, and where it came from.
pub struct Snapshot {
    entries: Entries,
    /// The on-disk format version (1 = the original's, 2 = authenticated header).
    version: Option<u8>,
    /// False only for the placeholder before the first successful load.
    loaded: bool,
    /// Which snapshot this is, counting from 0 in this process: a [`CacheKey`] is valid only
    /// under the snapshot (and HMAC key) it was made with.
    generation: u64,
}

/// Where a mapping's value is in the cache: its digest under one snapshot's HMAC key. The
/// resolver keeps it per mapping file, so a lookup of an unchanged file neither parses nor
/// digests the mapping again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey {
    generation: u64,
    digest: Digest,
}

/// What `/healthz/cache` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// A snapshot is in use (possibly empty: no file yet). False when the key or the file
    /// could not be used since start: every lookup goes to the providers.
    pub loaded: bool,
    pub entries: usize,
    /// The format version of the file in use.
    pub version: Option<u8>,
    /// Why the last load failed (the snapshot in use, if any, is an older one).
    pub error: Option<String>,
}

pub struct LiveCache {
    path: PathBuf,
    backend: Backend,
    snapshot: ArcSwap<Snapshot>,
    /// Values resolved by providers on a miss, under the snapshot's HMAC key (cleared when a
    /// new snapshot, with a new key, comes in). Only misses take this lock.
    fills: Mutex<HashMap<Digest, SecretValue>>,
    /// Why the last load failed, while it keeps failing.
    failure: Mutex<Option<String>>,
    /// The generation of the latest snapshot.
    generations: AtomicU64,
    /// One load at a time: a load that read the file before setup replaced it must not
    /// install its older snapshot after a load that read the new file.
    loading: tokio::sync::Mutex<()>,
    /// The file's modification time and size at the last load, so the watcher does not load
    /// again what [`LiveCache::reload_now`] just loaded.
    last_tried: Mutex<Option<(SystemTime, u64)>>,
}

impl LiveCache {
    /// Starts the cache: a task loads the file (a missing file is an empty cache), then
    /// looks at its modification time and size every `watch` (`cache.watch_interval`) and
    /// loads it again when they change. The receiver fires after that first load, so
    /// `psi serve` can wait for it a little before taking requests without ever blocking on
    /// a slow token. A failed load is reported and leaves lookups to the providers.
    pub fn start(
        path: PathBuf,
        backend: Backend,
        watch: Duration,
    ) -> (Arc<LiveCache>, oneshot::Receiver<()>) {
        let cache = Arc::new(LiveCache {
            path,
            backend,
            snapshot: ArcSwap::from_pointee(Snapshot {
                entries: Entries::empty(),
                version: None,
                loaded: false,
                generation: 0,
            }),
            fills: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            generations: AtomicU64::new(0),
            loading: tokio::sync::Mutex::new(()),
            last_tried: Mutex::new(None),
        });
        let (loaded, first_load) = oneshot::channel();
        let task = Arc::clone(&cache);
        tokio::spawn(async move {
            task.reload().await;
            let _ = loaded.send(());
            loop {
                tokio::time::sleep(watch).await;
                let now = stamp(&task.path);
                // A file that failed stays failed until it changes again: no retry loop.
                if now.is_some() && now != *lock(&task.last_tried) {
                    task.reload().await;
                }
            }
        });
        (cache, first_load)
    }

    /// The key of `mapping` under the snapshot in use.
    pub fn key(&self, mapping: &Mapping) -> CacheKey {
        let snapshot = self.snapshot.load();
        CacheKey {
            generation: snapshot.generation,
            digest: snapshot.entries.digest(mapping),
        }
    }

    /// The cached value under `key`, if any: the snapshot first (no lock), then the values
    /// filled on earlier misses. `None` too when `key` was made under an older snapshot.
    pub fn get(&self, key: &CacheKey) -> Option<SecretValue> {
        let snapshot = self.snapshot.load();
        if snapshot.generation != key.generation {
            return None;
        }
        if let Some(value) = snapshot.entries.get(&key.digest) {
            return Some(value.clone());
        }
        lock(&self.fills).get(&key.digest).cloned()
    }

    /// Keeps a value a provider resolved, for the next lookup of the same mapping; not when
    /// a new snapshot (another HMAC key, perhaps a newer value) came in since `key` was made.
    pub fn fill(&self, key: &CacheKey, value: &SecretValue) {
        let mut fills = lock(&self.fills);
        if self.snapshot.load().generation == key.generation {
            fills.insert(key.digest, value.clone());
        }
    }

    pub fn health(&self) -> Health {
        let snapshot = self.snapshot.load();
        Health {
            loaded: snapshot.loaded,
            entries: snapshot.entries.len(),
            version: snapshot.version,
            error: lock(&self.failure).clone(),
        }
    }

    /// Puts a loaded snapshot in use, under a new generation.
    fn install(&self, entries: Entries, version: Option<u8>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.snapshot.store(Arc::new(Snapshot {
            entries,
            version,
            loaded: true,
            generation,
        }));
    }

    /// Loads the file now, after any load in progress, and says how that went: `psi setup`
    /// asks for this (`POST /cache/reload`) before it restarts a workload whose secrets
    /// changed, so the restarted container gets the values setup just wrote rather than
    /// the previous snapshot's (the watcher could take up to `cache.watch_interval`).
    pub async fn reload_now(&self) -> Health {
        self.reload().await;
        self.health()
    }

    /// Loads the file and swaps it in; on failure keeps the current snapshot.
    async fn reload(&self) {
        let _one_at_a_time = self.loading.lock().await;
        *lock(&self.last_tried) = stamp(&self.path);
        match load(&self.path, &self.backend).await {
            Ok(Some(loaded)) => {
                let entries = loaded.entries.len();
                self.install(loaded.entries, Some(loaded.version));
                // The fills were digested under the old key and may be stale values.
                lock(&self.fills).clear();
                release_freed_memory();
                *lock(&self.failure) = None;
                crate::metrics::METRICS.cache_loaded(SystemTime::now());
                tracing::info!(event = "cache.load", outcome = "success", entries, path = %self.path.display(), version = loaded.version, "secret cache loaded");
            }
            Ok(None) => {
                if !self.snapshot.load().loaded {
                    self.install(Entries::empty(), None);
                }
                *lock(&self.failure) = None;
                tracing::info!(event = "cache.load", outcome = "success", entries = 0, path = %self.path.display(), "no cache file yet; starting empty");
            }
            Err(err) => {
                let keeping = self.snapshot.load().entries.len();
                tracing::warn!(event = "cache.load", outcome = "error", path = %self.path.display(), error = %err, keeping, "secret cache could not be loaded; keeping the current one and falling back to live provider lookups for the rest");
                *lock(&self.failure) = Some(err.to_string());
                crate::metrics::METRICS.cache_load_failed();
            }
        }
    }
}

/// Gives the heap memory a load freed (the decrypted file, the decoding's scratch, the
/// previous snapshot) back to the system: without it RSS stays at the load's peak.
#[allow(unsafe_code)]
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A poisoned lock only means another lookup panicked mid-insert; the map is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
