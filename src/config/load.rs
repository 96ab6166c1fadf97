//! Loading: reading the file, parsing it with precise messages, and resolving every setting
//! by the precedence written down in the module doc of `config`. Credentials come from
//! here too ([`resolve_credential`]).

use std::path::{Path, PathBuf};

use super::schema::{ConfigFile, CredsConfig, ProvidersConfig, RawValues, StoreConfig};
use super::scope::{Scope, ScopePaths};
use super::validate::validate;
use super::validate_socket_token;
use super::yaml_error::describe_yaml_error;
use super::{
    process_env, CacheSettings, CredentialSource, EnvLookup, ExplicitPaths, Overrides,
    PodmanSocket, RawPolicy, SealWith, Settings,
};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::secret::SecretString;

impl Settings {
    /// Loads settings for the current process.
    pub fn load_for_process(overrides: &Overrides) -> Result<Settings> {
        let uid = nix::unistd::getuid().as_raw();
        Settings::load(overrides, &process_env, uid)
    }

    /// Loads and validates settings. A config file named explicitly must exist; the default
    /// one may be missing, and then built-in defaults apply (`config_found` says which).
    pub fn load(overrides: &Overrides, env: EnvLookup<'_>, uid: u32) -> Result<Settings> {
        let scope = if uid == 0 { Scope::System } else { Scope::User };
        let home = env("HOME").map(PathBuf::from);
        let runtime = env("XDG_RUNTIME_DIR").map(PathBuf::from);
        let paths = ScopePaths::new(scope, uid, home.as_deref(), runtime.as_deref())?;

        let (config_path, text) = match &overrides.config {
            Some(path) => {
                let text = fsutil::read_capped_text(path, fsutil::CONFIG).map_err(|err| {
                    Error::Config {
                        path: path.clone(),
                        message: format!("cannot read the config file: {err}"),
                    }
                })?;
                (path.clone(), Some(text))
            }
            None => match fsutil::read_capped_text(&paths.config, fsutil::CONFIG) {
                Ok(text) => (paths.config.clone(), Some(text)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    (paths.config.clone(), None)
                }
                Err(err) => {
                    return Err(Error::Config {
                        path: paths.config.clone(),
                        message: format!("cannot read the config file: {err}"),
                    })
                }
            },
        };
        let config_found = text.is_some();
        let mut file = match &text {
            Some(text) => parse_file(text).map_err(|message| Error::Config {
                path: config_path.clone(),
                message,
            })?,
            None => ConfigFile::default(),
        };
        let invalid = |message: String| Error::Config {
            path: config_path.clone(),
            message,
        };

        // Moved out of `file` so there is one copy; absent means the embedded default.
        let providers = file.providers.take().unwrap_or_else(|| ProvidersConfig {
            systemd_creds: Some(CredsConfig::default()),
            ..Default::default()
        });
        validate(&file, &providers).map_err(invalid)?;
        let raw_values = raw_policy(&file.store, &providers).map_err(invalid)?;

        let socket_token = resolve_credential(
            env,
            "psi-socket-token",
            file.socket_token.as_ref(),
            "PSI_SOCKET_TOKEN",
        )
        .map_err(invalid)?;
        if let Some((token, source)) = &socket_token {
            validate_socket_token(token.expose()).map_err(|message| match source {
                CredentialSource::ConfigFile => invalid(format!("socket_token: {message}")),
                CredentialSource::CredentialsDirectory => Error::Usage(format!(
                    "$CREDENTIALS_DIRECTORY/psi-socket-token: {message}"
                )),
                CredentialSource::Environment => {
                    Error::Usage(format!("PSI_SOCKET_TOKEN: {message}"))
                }
            })?;
        }

        // The original moved state and systemd dirs to the user defaults only when they were
        // left at the system defaults; an explicit value always wins here.
        let state_dir = file
            .state_dir
            .clone()
            .unwrap_or_else(|| paths.state_dir.clone());
        let systemd_dir = file
            .systemd_dir
            .clone()
            .unwrap_or_else(|| paths.systemd_dir.clone());
        let socket_path = overrides
            .socket
            .clone()
            .or_else(|| file.socket_path.clone())
            .unwrap_or_else(|| paths.socket.clone());
        let podman_socket = PodmanSocket(match &file.podman_socket {
            Some(path) => Ok(path.clone()),
            None => crate::podman::default_socket(scope, env).map_err(|err| err.to_string()),
        });
        let cache = CacheSettings {
            enabled: file.cache.enabled,
            backend: file.cache.backend,
            path: file
                .cache
                .path
                .clone()
                .unwrap_or_else(|| crate::state::StateDir::new(&state_dir).cache_path()),
            key_path: config_path
                .parent()
                .unwrap_or(&paths.config_dir)
                .join("cache.key"),
            refresh_interval: file.cache.refresh_interval,
            refresh_randomized_delay: file.cache.refresh_randomized_delay,
            watch_interval: file.cache.watch_interval,
        };
        let explicit = ExplicitPaths {
            state_dir: file.state_dir,
            systemd_dir: file.systemd_dir,
            socket_path: file.socket_path,
            podman_socket: file.podman_socket,
        };

        Ok(Settings {
            scope,
            paths,
            config_path,
            config_found,
            state_dir,
            systemd_dir,
            socket_path,
            socket_token,
            podman_socket,
            providers,
            workloads: file.workloads,
            cache,
            raw_values,
            driver: file.driver,
            ca_cert: file.ca_cert,
            explicit,
        })
    }
}

/// `store.raw_values` defaults to sealing when a sealing provider is configured (the first of
/// systemd-creds, nitrokeyhsm), and to rejecting otherwise; plaintext is never an option.
/// A String error: the caller makes it an `Error::Config` naming the file.
fn raw_policy(store: &StoreConfig, providers: &ProvidersConfig) -> Result<RawPolicy, String> {
    let available = |with: SealWith| match with {
        SealWith::SystemdCreds => providers.systemd_creds.is_some(),
        SealWith::NitrokeyHsm => providers.nitrokeyhsm.is_some(),
    };
    let sealer = match store.seal_with {
        Some(with) if !available(with) => {
            return Err(format!(
                "store.seal_with: provider '{}' is not configured under providers",
                with.as_str()
            ))
        }
        Some(with) => Some(with),
        None => [SealWith::SystemdCreds, SealWith::NitrokeyHsm]
            .into_iter()
            .find(|w| available(*w)),
    };
    match (store.raw_values, sealer) {
        (Some(RawValues::Reject), _) | (None, None) => Ok(RawPolicy::Reject),
        (_, Some(with)) => Ok(RawPolicy::Seal(with)),
        (Some(RawValues::Seal), None) => Err(
            "store.raw_values: 'seal' needs a sealing provider (systemd-creds or nitrokeyhsm) under providers".into(),
        ),
    }
}

/// Resolves a credential: `$CREDENTIALS_DIRECTORY/<file_name>` (systemd `LoadCredential*=`)
/// first, then the config file's value, then the environment variable. Surrounding
/// whitespace (a trailing newline in a credential file) is removed; empty values count as
/// absent.
pub fn resolve_credential(
    env: EnvLookup<'_>,
    file_name: &str,
    from_config: Option<&SecretString>,
    env_var: &str,
) -> Result<Option<(SecretString, CredentialSource)>, String> {
    if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(file_name);
        match fsutil::read_capped(&path, fsutil::TOKEN) {
            Ok(bytes) => {
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| format!("credential {} is not UTF-8", path.display()))?;
                if !text.trim().is_empty() {
                    let value = SecretString::new(text.trim().to_owned());
                    return Ok(Some((value, CredentialSource::CredentialsDirectory)));
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(format!("cannot read credential {}: {err}", path.display())),
        }
    }
    if let Some(value) = from_config.filter(|v| !v.expose().trim().is_empty()) {
        return Ok(Some((
            SecretString::new(value.expose().trim().to_owned()),
            CredentialSource::ConfigFile,
        )));
    }
    if let Some(value) = env(env_var) {
        let value = value
            .into_string()
            .map_err(|_| format!("{env_var} is not valid UTF-8"))?;
        let value = zeroize::Zeroizing::new(value);
        if !value.trim().is_empty() {
            return Ok(Some((
                SecretString::new(value.trim().to_owned()),
                CredentialSource::Environment,
            )));
        }
    }
    Ok(None)
}

/// Parses the YAML text. The message names the key path, says what is wrong, suggests the
/// nearest known key for a typo, and ends with the position when the parser knows it.
/// It never quotes a value (the file holds tokens and client secrets), except where psi's
/// own parser of a key that holds no secret (a file mode, a duration) quotes what it read.
/// A String error: the caller makes it an `Error::Config` naming the file.
fn parse_file(text: &str) -> Result<ConfigFile, String> {
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        describe_yaml_error(&path, &err.inner().to_string())
    })
}
