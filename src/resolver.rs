//! The one resolver: what psi does with a secret ID (lookup, store, delete, list), with the
//! cache in front and the provider behind. Shared by the HTTP server and the one-shot
//! `psi secret ...` driver commands, so both behave the same, log the same audit events and
//! never write plaintext. It also gives `psi run` a workload's secrets
//! ([`WorkloadSecrets`]): from the drop-in through serve, or straight from the provider;
//! and `psi infisical import podman-secret` the values of psi's shell-driver secrets.
//!
//! The state directory is read and written on tokio's blocking pool: a file that blocks
//! (a FIFO, a hung network mount) then holds one pool thread and its own request, never
//! the async workers that answer everyone else. The one exception is the hot path,
//! [`Resolver::lookup_cached`]: for a mapping file it has read before, it asks only `stat`
//! whether the file is still the same (which never opens the file, so no FIFO or device can
//! block it) and answers from the cache with the digest it kept, on the caller's thread.
//!
//! Every lookup is counted for `/metrics` ([`crate::metrics`]) by provider, outcome and
//! source, with its latency: into series made before the first request, so the hot path
//! adds a clock read and three atomic additions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::cache::live::{CacheKey, LiveCache};
use crate::config::{RawPolicy, Settings, WorkloadConfig};
use crate::error::{Error, Result, ResultExt};
use crate::fsutil::FileStamp;
use crate::metrics::{Outcome, ProviderMetrics, Source as Origin, METRICS, NO_PROVIDER};
use crate::provider::{Discovered, Registry, Source};
use crate::secret::{Mapping, SecretId, SecretValue};
use crate::setup::desired::secret_name;
use crate::setup::discover::{DiscoverError, Discoverer};
use crate::state::StateDir;
use crate::unitgen::dropin::{Delivery, SecretLine};

/// How long one lookup (reading its mapping, then the provider) may take before the caller
/// gets an error. Podman waits for the driver at container start; an answer beats a hang.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(30);

/// How long ago a mapping file must have changed before its stamp is trusted to tell a later
/// change. The file systems a state directory lives on (ext4, XFS, btrfs, tmpfs) keep
/// nanoseconds but take them from a clock that advances once per kernel tick (at most 10 ms),
/// so a file changed twice within one tick can look unchanged; five ticks is a safe margin.
const SETTLED: Duration = Duration::from_millis(50);

/// Turns secret IDs into values (and stores, deletes, lists their mappings): the state dir
/// says which provider, the cache answers first, the provider on a miss.
pub struct Resolver {
    /// Shared with the blocking-pool tasks that touch it.
    state: Arc<StateDir>,
    registry: Registry,
    raw_values: RawPolicy,
    deadline: Duration,
    cache: CacheState,
    /// Per secret ID, the mapping file last read and where its value is in the cache, for
    /// [`Resolver::lookup_cached`]. An entry holds no value and no mapping, so it costs
    /// little memory per ID, and it is only ever used after `stat` says the file is the
    /// one it was made from.
    known: RwLock<HashMap<SecretId, Known>>,
}

/// What a lookup learned about one mapping file: enough to answer the next lookup of the
/// same unchanged file from the cache without reading, parsing or digesting it again.
#[derive(Clone, Copy)]
struct Known {
    stamp: FileStamp,
    key: CacheKey,
    /// The provider's series, which also name it.
    provider: &'static ProviderMetrics,
}

/// A lookup [`Resolver::lookup_cached`] answered; [`CacheHit::count`] it once the value is
/// answered with (the fast path may hand a large value to the long way, which counts it).
#[must_use = "a cache hit is counted by the caller that answers with its value"]
pub struct CacheHit {
    provider: &'static ProviderMetrics,
    started: std::time::Instant,
}

impl CacheHit {
    pub fn count(self) {
        let CacheHit { provider, started } = self;
        provider.lookup(Origin::Cache, Outcome::Success, started);
    }
}

/// The encrypted cache as the resolver sees it.
pub enum CacheState {
    /// `cache.enabled` is false or no backend is configured.
    Disabled,
    /// Configured, but its backend could not be opened (the key is missing or sealed to
    /// another TPM state): every lookup goes to the providers.
    Unavailable(String),
    Live(Arc<LiveCache>),
}

impl Resolver {
    pub fn new(state: StateDir, registry: Registry, raw_values: RawPolicy) -> Resolver {
        Resolver {
            state: Arc::new(state),
            registry,
            raw_values,
            deadline: LOOKUP_DEADLINE,
            cache: CacheState::Disabled,
            known: RwLock::new(HashMap::new()),
        }
    }

    pub fn set_cache(&mut self, cache: CacheState) {
        self.cache = cache;
    }

    pub fn cache(&self) -> &CacheState {
        &self.cache
    }

    pub fn from_settings(settings: &Settings) -> Result<Resolver> {
        let state = StateDir::new(&settings.state_dir);
        state.warn_if_shared();
        Ok(Resolver::new(
            state,
            Registry::from_config(&settings.providers, &settings.state_dir)?,
            settings.raw_values,
        ))
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolves `id`: the mapping from the state dir, then the cache, then its provider.
    /// The hot path: no disk writes, at most one file read (none for a mapping file read
    /// before and unchanged: [`Resolver::lookup_cached`]); a cache hit takes no lock and
    /// logs at DEBUG; a provider call is bounded by the deadline and its value kept in
    /// memory.
    pub async fn lookup(&self, id: &SecretId) -> Result<SecretValue> {
        if let Some((value, hit)) = self.lookup_cached(id) {
            hit.count();
            return Ok(value);
        }
        let started = std::time::Instant::now();
        let mut provider = NO_PROVIDER;
        let result = self.resolve(id, &mut provider).await;
        let counted = METRICS.provider(provider);
        match &result {
            Ok((_, Origin::Cache)) => {
                audit_cache_hit(id, provider);
                counted.lookup(Origin::Cache, Outcome::Success, started);
            }
            Ok((_, Origin::Provider)) => {
                tracing::info!(event = "secret.lookup", secret_id = %id, provider, outcome = "success", source = "provider");
                counted.lookup(Origin::Provider, Outcome::Success, started);
            }
            Err(err) => {
                tracing::warn!(event = "secret.lookup", secret_id = %id, outcome = "error", error = %err);
                counted.lookup(Origin::Provider, Outcome::Error, started);
            }
        }
        result.map(|(value, _)| value)
    }

    /// The value of `id` from the cache, without waiting, when an earlier lookup read its
    /// mapping file and the file is unchanged (one `stat`); `None` sends the caller to
    /// [`Resolver::lookup`]. The same answer and audit event as `lookup` gives a cache hit;
    /// the caller counts it ([`CacheHit::count`]) when it answers with the value.
    pub fn lookup_cached(&self, id: &SecretId) -> Option<(SecretValue, CacheHit)> {
        let CacheState::Live(cache) = &self.cache else {
            return None;
        };
        let started = std::time::Instant::now();
        let known = *read(&self.known).get(id)?;
        if FileStamp::stat(&self.state.mapping_path(id)).ok()? != known.stamp {
            return None;
        }
        let value = cache.get(&known.key)?;
        audit_cache_hit(id, known.provider.name());
        let hit = CacheHit {
            provider: known.provider,
            started,
        };
        Some((value, hit))
    }

    /// The value of `id` and where it came from; `provider_name` is set to the mapping's
    /// provider once it is known (for the metrics of a lookup that fails).
    async fn resolve(
        &self,
        id: &SecretId,
        provider_name: &mut &'static str,
    ) -> Result<(SecretValue, Origin)> {
        let deadline = Instant::now() + self.deadline;
        let read = self.on_state(id, |state, id| state.read_mapping_stamped(id));
        let (mapping, stamp) = tokio::time::timeout_at(deadline, read)
            .await
            .map_err(|_| Error::Io {
                context: format!("the mapping for {id} could not be read"),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {}s", self.deadline.as_secs()),
                ),
            })??;
        let provider = self.registry.get(mapping.provider())?;
        *provider_name = provider.name();
        let CacheState::Live(cache) = &self.cache else {
            let value = self.ask(provider, &mapping, deadline).await?;
            return Ok((value, Origin::Provider));
        };
        let known = Known {
            stamp,
            key: cache.key(&mapping),
            provider: METRICS.provider(provider.name()),
        };
        if let Some(value) = cache.get(&known.key) {
            self.remember(id, known);
            return Ok((value, Origin::Cache));
        }
        let value = self.ask(provider, &mapping, deadline).await?;
        cache.fill(&known.key, &value);
        self.remember(id, known);
        Ok((value, Origin::Provider))
    }

    /// `provider`'s value for `mapping`, by `deadline`.
    async fn ask(
        &self,
        provider: &crate::provider::Provider,
        mapping: &Mapping,
        deadline: Instant,
    ) -> Result<SecretValue> {
        tokio::time::timeout_at(deadline, provider.lookup(mapping))
            .await
            .map_err(|_| Error::ProviderUnavailable {
                provider: provider.name(),
                detail: format!("no answer within {}s", self.deadline.as_secs()),
            })
            .and_then(|answer| answer)
            .inspect_err(|_| METRICS.provider(provider.name()).error())
    }

    /// Keeps what a lookup learned about `id`'s mapping file for [`Resolver::lookup_cached`],
    /// once the file has settled ([`FileStamp::settled`]): until then every lookup reads it.
    fn remember(&self, id: &SecretId, known: Known) {
        if known.stamp.settled(std::time::SystemTime::now(), SETTLED) {
            write(&self.known).insert(id.clone(), known);
        }
    }

    /// The secrets of workload `name` straight from its provider, by the same discovery as
    /// `psi check` and `psi setup` (so all three agree on what the config asks for), with
    /// the environment variables setup's drop-in would deliver.
    pub async fn workload(&self, name: &str, config: &WorkloadConfig) -> Result<WorkloadSecrets> {
        let mut discoverer = Discoverer::new(&self.registry);
        let desired = discoverer
            .workload(name, config)
            .await
            .map_err(|why| match why {
                // A listing failed: its error keeps its kind under the workload and source.
                DiscoverError::Source {
                    source,
                    location,
                    error,
                } => error.context(format!("workload {name}: secrets[{source}] ({location})")),
                other => Error::Refused(format!("workload {name}: {other}")),
            })?;
        WorkloadSecrets::from_lines(name, &desired.lines, |secret| {
            desired
                .secrets
                .get(secret)
                .and_then(|mapping| discoverer.take_value(mapping))
                .ok_or_else(|| {
                    Error::Refused(format!("workload {name}: {secret} was not in the listing"))
                })
        })
    }

    /// Every key of `source`, asked of `provider` (`psi run --project`).
    pub async fn discover(&self, provider: &str, source: &Source<'_>) -> Result<Vec<Discovered>> {
        self.registry.get(provider)?.discover(source).await
    }

    /// Stores what Podman handed the driver for `id`. A mapping of a known shape is kept byte
    /// for byte (as the original did); anything else is a raw value, sealed by the configured
    /// provider or refused, never written as plaintext.
    pub async fn store(&self, id: &SecretId, body: &[u8]) -> Result<()> {
        let result = self.store_inner(id, body).await;
        match &result {
            Ok(kind) => {
                tracing::info!(event = "secret.store", secret_id = %id, outcome = "success", stored = kind)
            }
            Err(err) => {
                tracing::warn!(event = "secret.store", secret_id = %id, outcome = "error", error = %err)
            }
        }
        result.map(|_| ())
    }

    async fn store_inner(&self, id: &SecretId, body: &[u8]) -> Result<&'static str> {
        if body.is_empty() {
            return Err(Error::InvalidBody(
                "empty body: there is no mapping or value to store".into(),
            ));
        }
        if Mapping::parse(body).is_ok_and(|m| m.has_known_shape()) {
            let body = body.to_vec();
            self.on_state(id, move |state, id| state.write_mapping(id, &body))
                .await?;
            return Ok("mapping");
        }
        match self.raw_values {
            RawPolicy::Reject => Err(Error::InvalidBody(
                "the data is not a psi mapping and store.raw_values is 'reject': psi does not keep raw values; \
                 store a mapping, or configure a sealing provider"
                    .into(),
            )),
            RawPolicy::Seal(with) => {
                let provider = self.registry.sealer(with)?;
                let bytes = provider.seal(id, body).await?.to_bytes();
                self.on_state(id, move |state, id| state.write_mapping(id, &bytes))
                    .await?;
                Ok(provider.name())
            }
        }
    }

    /// Removes the mapping for `id`; a missing one is not an error (Podman retries deletes).
    pub async fn delete(&self, id: &SecretId) -> Result<()> {
        let result = self
            .on_state(id, |state, id| state.delete_mapping(id))
            .await;
        write(&self.known).remove(id);
        match &result {
            Ok(existed) => {
                tracing::info!(event = "secret.delete", secret_id = %id, outcome = "success", existed)
            }
            Err(err) => {
                tracing::warn!(event = "secret.delete", secret_id = %id, outcome = "error", error = %err)
            }
        }
        result.map(|_| ())
    }

    /// The IDs that have mappings, sorted.
    pub async fn list(&self) -> Result<Vec<String>> {
        let state = Arc::clone(&self.state);
        blocking(move || state.list_mappings()).await
    }

    /// Runs `op` on the state directory for `id` on the blocking pool.
    async fn on_state<T: Send + 'static>(
        &self,
        id: &SecretId,
        op: impl FnOnce(&StateDir, &SecretId) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let state = Arc::clone(&self.state);
        let id = id.clone();
        blocking(move || op(&state, &id)).await
    }
}

/// A workload's secrets as `psi run` hands them to a command: every value by key (the
/// Podman secret's name without the `{workload}--` prefix), and the environment variables
/// its drop-in delivers (`VAR -> KEY`; files are not delivered to a process).
pub struct WorkloadSecrets {
    pub values: BTreeMap<String, SecretValue>,
    pub env: Vec<(String, String)>,
}

impl WorkloadSecrets {
    /// Reads `lines` (a drop-in's, or those setup would write), asking `value` once for each
    /// Podman secret they name. Pure apart from what `value` does; its first error ends it.
    pub fn from_lines(
        workload: &str,
        lines: &[SecretLine],
        mut value: impl FnMut(&str) -> Result<SecretValue>,
    ) -> Result<WorkloadSecrets> {
        let prefix = secret_name(workload, "");
        let mut out = WorkloadSecrets {
            values: BTreeMap::new(),
            env: Vec::new(),
        };
        for line in lines {
            let key = line.name.strip_prefix(&prefix).unwrap_or(&line.name);
            if !out.values.contains_key(key) {
                out.values.insert(key.to_owned(), value(&line.name)?);
            }
            if let Delivery::Env { var } = &line.delivery {
                out.env.push((var.clone(), key.to_owned()));
            }
        }
        Ok(out)
    }
}

/// Runs `op` on tokio's blocking pool. If the caller gives up (a deadline), the thread runs
/// on until the call returns; `psi serve` does not wait for such threads when it exits.
async fn blocking<T: Send + 'static>(op: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(op)
        .await
        .context("state directory task failed")?
}

/// The audit event of a lookup the cache answered (DEBUG: the hot path logs nothing by
/// default), the same whichever way it went.
fn audit_cache_hit(id: &SecretId, provider: &str) {
    tracing::debug!(event = "secret.lookup", secret_id = %id, provider, outcome = "success", source = "cache");
}

/// A poisoned lock only means another lookup panicked mid-insert; the map is still usable.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
