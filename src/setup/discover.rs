//! Discovery: what each workload's sources hold, asked of the workload's provider through
//! [`Provider::discover`](crate::provider::Provider::discover). One listing per distinct
//! source per run, shared between workloads; every listed value is kept by its mapping, so
//! setup fills the cache and `psi run` starts a command without one more call per key.

use std::collections::HashMap;

use super::desired::{self, Desired, Found, Missing};
use crate::config::WorkloadConfig;
use crate::error::Error;
use crate::provider::{Registry, Source};
use crate::secret::SecretValue;

/// Why one workload could not be discovered.
#[derive(Debug)]
pub enum DiscoverError {
    /// A source could not be listed.
    Source {
        source: usize,
        location: String,
        error: Error,
    },
    /// Keys named in `env`/`files` that the sources do not have.
    Missing(Vec<Missing>),
    /// The workload's provider has nothing to discover (its secrets are registered one by
    /// one, as with the original's nitrokeyhsm workloads): not a failure.
    Skipped(String),
    /// Discovery cannot run at all.
    Unsupported(String),
}

impl std::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoverError::Source {
                source,
                location,
                error,
            } => write!(f, "secrets[{source}] ({location}): {error}"),
            DiscoverError::Missing(missing) => {
                let keys: Vec<String> = missing
                    .iter()
                    .map(|m| format!("{} (secrets[{}], {})", m.key, m.source, m.location))
                    .collect();
                write!(f, "not found in Infisical: {}", keys.join(", "))
            }
            DiscoverError::Skipped(message) | DiscoverError::Unsupported(message) => {
                f.write_str(message)
            }
        }
    }
}

/// Lists sources once per run, however many workloads read them.
pub struct Discoverer<'a> {
    registry: &'a Registry,
    listings: HashMap<(String, String, bool, bool), Vec<Found>>,
    /// Every listed value by its mapping's bytes.
    values: HashMap<Vec<u8>, SecretValue>,
}

impl<'a> Discoverer<'a> {
    pub fn new(registry: &'a Registry) -> Discoverer<'a> {
        Discoverer {
            registry,
            listings: HashMap::new(),
            values: HashMap::new(),
        }
    }

    /// The values listed so far, by mapping bytes.
    pub fn values(&self) -> &HashMap<Vec<u8>, SecretValue> {
        &self.values
    }

    /// Takes the value listed for `mapping` out of the run's listings.
    pub fn take_value(&mut self, mapping: &[u8]) -> Option<SecretValue> {
        self.values.remove(mapping)
    }

    /// What workload `name` should have, from one listing per source.
    pub async fn workload(
        &mut self,
        name: &str,
        config: &WorkloadConfig,
    ) -> Result<Desired, DiscoverError> {
        let provider = self
            .registry
            .get(&config.provider)
            .map_err(|err| DiscoverError::Unsupported(err.to_string()))?;
        if !provider.discovers() {
            return Err(DiscoverError::Skipped(format!(
                "provider '{}' has nothing to discover; its secrets are created with 'psi {} store NAME --register'",
                config.provider,
                match config.provider.as_str() {
                    "systemd-creds" => "creds",
                    other => other,
                }
            )));
        }
        let mut listings = Vec::with_capacity(config.secrets.len());
        for (index, source) in config.secrets.iter().enumerate() {
            let key = (
                source.project.clone(),
                source.path.clone(),
                source.recursive,
                source.include_imports,
            );
            if !self.listings.contains_key(&key) {
                tracing::info!(workload = name, project = %source.project, path = %source.path, recursive = source.recursive, "listing");
                let listed = provider
                    .discover(&Source::from(source))
                    .await
                    .map_err(|error| DiscoverError::Source {
                        source: index,
                        location: format!("{}:{}", source.project, source.path),
                        error,
                    })?;
                let mut found = Vec::with_capacity(listed.len());
                for d in listed {
                    let mapping = d.mapping.to_bytes();
                    self.values.insert(mapping.clone(), d.value);
                    found.push(Found {
                        key: d.key,
                        path: d.path,
                        mapping,
                    });
                }
                self.listings.insert(key.clone(), found);
            }
            listings.push(self.listings[&key].clone());
        }
        desired::desired(name, config, &listings).map_err(DiscoverError::Missing)
    }
}
