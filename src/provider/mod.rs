//! Providers resolve a mapping to a value, seal values (where they can) and discover what a
//! source holds (where they can: Infisical lists folders). `Provider` is an enum, not a trait
//! object: the set is closed, a `match` is exhaustive when one is added (one module plus one
//! arm), and async methods need no boxing.

pub mod creds;
pub mod infisical;
pub mod nitrokeyhsm;

use std::path::Path;
use std::sync::Arc;

use crate::config::{ProvidersConfig, SealWith, SecretSource};
use crate::error::{Error, Result};
use crate::secret::{Mapping, SecretId, SecretValue};

/// Where discovery looks: one source of a workload (`secrets[i]`), or `psi run --project`'s
/// folder.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub project: &'a str,
    pub path: &'a str,
    pub recursive: bool,
    pub include_imports: bool,
}

impl<'a> From<&'a SecretSource> for Source<'a> {
    fn from(source: &'a SecretSource) -> Source<'a> {
        Source {
            project: &source.project,
            path: &source.path,
            recursive: source.recursive,
            include_imports: source.include_imports,
        }
    }
}

/// One key a provider found in a source: the mapping that resolves it, and its value now
/// (the listing carries it, so setup fills the cache and `psi run` starts a command without
/// one more call per key).
pub struct Discovered {
    pub key: String,
    /// The folder a lookup asks (own secrets: their folder; imports: the importing folder).
    pub path: String,
    pub mapping: Mapping,
    pub value: SecretValue,
}

pub enum Provider {
    SystemdCreds(creds::SystemdCreds),
    Infisical(infisical::Infisical),
    /// Shared: the secret cache's HSM backend uses the same instance, so there is one
    /// PKCS#11 thread and one copy of the module per process.
    NitrokeyHsm(Arc<nitrokeyhsm::NitrokeyHsm>),
}

impl Provider {
    /// The name used in mappings and configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::SystemdCreds(_) => creds::NAME,
            Provider::Infisical(_) => infisical::NAME,
            Provider::NitrokeyHsm(_) => nitrokeyhsm::NAME,
        }
    }

    /// Resolves `mapping` to its value.
    pub async fn lookup(&self, mapping: &Mapping) -> Result<SecretValue> {
        match self {
            Provider::SystemdCreds(p) => p.lookup(mapping).await,
            Provider::Infisical(p) => p.lookup(mapping).await,
            Provider::NitrokeyHsm(p) => p.lookup(mapping).await,
        }
    }

    /// Whether [`Provider::discover`] applies: the other providers' secrets are registered
    /// one by one (`psi creds store NAME --register`), so setup has nothing to list for them.
    pub fn discovers(&self) -> bool {
        matches!(self, Provider::Infisical(_))
    }

    /// Every key `source` holds, with its mapping and value.
    pub async fn discover(&self, source: &Source<'_>) -> Result<Vec<Discovered>> {
        match self {
            Provider::Infisical(p) => {
                let listed = p
                    .list(
                        source.project,
                        source.path,
                        source.recursive,
                        source.include_imports,
                    )
                    .await?;
                Ok(listed
                    .into_iter()
                    .map(|l| Discovered {
                        mapping: infisical::mapping(source.project, &l.path, &l.key),
                        key: l.key,
                        path: l.path,
                        value: l.value,
                    })
                    .collect())
            }
            Provider::SystemdCreds(_) | Provider::NitrokeyHsm(_) => Err(Error::Provider {
                provider: self.name(),
                detail: "it has nothing to discover; its secrets are registered one by one".into(),
            }),
        }
    }

    /// Seals `value` under `name`, returning the mapping that resolves back to it.
    pub async fn seal(&self, name: &SecretId, value: &[u8]) -> Result<Mapping> {
        match self {
            Provider::SystemdCreds(p) => p.seal(name, value).await,
            Provider::NitrokeyHsm(p) => p.seal(name, value).await,
            // Sealing would mean writing the value into Infisical; psi only reads from it.
            Provider::Infisical(_) => Err(Error::Provider {
                provider: infisical::NAME,
                detail: "infisical cannot seal values; use systemd-creds or nitrokeyhsm for store.seal_with".into(),
            }),
        }
    }
}

/// The providers `psi serve` runs, by name.
pub struct Registry {
    providers: Vec<Provider>,
}

impl Registry {
    pub fn new(providers: Vec<Provider>) -> Registry {
        Registry { providers }
    }

    /// Builds the configured providers; `state_dir` holds their caches (Infisical tokens,
    /// the Nitrokey public key). No provider contacts its service here: the Nitrokey token
    /// is opened on first use, so a missing token never delays start-up.
    pub fn from_config(config: &ProvidersConfig, state_dir: &Path) -> Result<Registry> {
        let mut providers = Vec::new();
        if let Some(hsm) = &config.nitrokeyhsm {
            providers.push(Provider::NitrokeyHsm(Arc::new(
                nitrokeyhsm::NitrokeyHsm::from_config(hsm, state_dir)?,
            )));
        }
        if let Some(infisical) = &config.infisical {
            providers.push(Provider::Infisical(infisical::Infisical::new(
                infisical, state_dir,
            )?));
        }
        if let Some(creds) = &config.systemd_creds {
            providers.push(Provider::SystemdCreds(creds::SystemdCreds::from_config(
                creds,
            )));
        }
        Ok(Registry::new(providers))
    }

    /// The Nitrokey HSM provider, when configured (the cache's HSM backend shares it).
    pub fn nitrokeyhsm(&self) -> Option<Arc<nitrokeyhsm::NitrokeyHsm>> {
        self.providers.iter().find_map(|p| match p {
            Provider::NitrokeyHsm(hsm) => Some(hsm.clone()),
            _ => None,
        })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.providers.iter().map(Provider::name).collect()
    }

    /// The provider called `name`; an error names the ones that are configured.
    pub fn get(&self, name: &str) -> Result<&Provider> {
        self.providers
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::UnknownProvider {
                name: name.to_owned(),
                configured: crate::error::list_or_none(self.names()),
            })
    }

    /// The provider that seals raw values for `with`.
    pub fn sealer(&self, with: SealWith) -> Result<&Provider> {
        self.get(with.as_str())
    }
}
