//! psi's settings: `config.yaml` read once, validated completely, and resolved with the
//! command line, the environment and the scope into one [`Settings`] value. No module outside
//! `config/` sees the file's raw keys; each gets typed values (durations, file modes, PCR
//! lists, paths with their defaults filled in).
//!
//! # Precedence
//!
//! Stated here once; [`load`] applies it and nothing else decides it.
//!
//! | Setting | Resolved from, first wins |
//! |---|---|
//! | config file | `-c/--config` or `PSI_CONFIG` > scope default |
//! | psi's socket | `--socket` or `PSI_SOCKET` > `socket_path` > scope default |
//! | socket token | `$CREDENTIALS_DIRECTORY/psi-socket-token` > `socket_token` > `PSI_SOCKET_TOKEN` |
//! | Nitrokey PIN | `$CREDENTIALS_DIRECTORY/hsm-pin` > `providers.nitrokeyhsm.pin` > `PSI_NITROKEYHSM_PIN` |
//! | Podman socket | `podman_socket` > `CONTAINER_HOST` (`unix://` only) > scope default |
//! | everything else | config file > built-in default |
//!
//! So, in general: command-line flag > `$CREDENTIALS_DIRECTORY/<name>` > config file >
//! environment variable > scope or built-in default. Two exceptions: clap folds `PSI_CONFIG`
//! and `PSI_SOCKET` into their flags, which is why those environment variables win over the
//! file (they name *where*, not *what*); and `CONTAINER_HOST` only fills in for a missing
//! `podman_socket`. Credentials ([`resolve_credential`]) are resolved at load for the socket
//! token and when the Nitrokey provider opens for its PIN.
//!
//! # Layout
//!
//! `schema` (serde structs of the file), `values` (typed scalars parsed inside serde),
//! `duration` (the one parser of duration text), `scope` (the system/user path table), `load`
//! (reading the file, the precedence above, credentials), `validate` (checks across keys),
//! `yaml_error` (messages for people).
//! Unknown keys are errors at every level, with the file, the key path and, for a near miss,
//! a suggestion. YAML stays confined to this module.

mod duration;
mod load;
mod schema;
mod scope;
mod validate;
mod values;
mod yaml_error;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::client::validate_socket_token;
pub use load::resolve_credential;
pub use schema::{
    AltName, AuthConfig, AuthMethod, CacheBackend, CertConfig, CertOutput, CredsConfig,
    DriverClient, DriverConfig, FileSecret, InfisicalConfig, NitrokeyConfig, OnChange,
    ProjectConfig, ProvidersConfig, SealWith, SecretKind, SecretSource, TlsConfig, TokenConfig,
    WithKey, WorkloadConfig,
};
pub use scope::{Scope, ScopePaths};
pub use values::{ApiUrl, FileMode, Hook, KeyId, PcrList, TimerSpan};

use crate::error::{Error, Result};
use crate::secret::SecretString;

/// What the environment looks like to settings loading and credential lookup: a function,
/// so tests pass a map.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Inputs to [`Settings::load`] that come from the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `-c/--config` (or `PSI_CONFIG`).
    pub config: Option<PathBuf>,
    /// `--socket` (or `PSI_SOCKET`).
    pub socket: Option<PathBuf>,
}

/// What a store (`POST /store/{id}`, `psi secret store`) does with a body that is not a
/// mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawPolicy {
    Seal(SealWith),
    Reject,
}

/// Where a credential came from, for the one log line that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    CredentialsDirectory,
    ConfigFile,
    Environment,
}

/// The configuration after defaults, scope and validation: what commands use.
#[derive(Debug)]
pub struct Settings {
    pub scope: Scope,
    pub paths: ScopePaths,
    /// The config file path that was used (or would have been).
    pub config_path: PathBuf,
    /// False when the default config file does not exist and built-in defaults apply.
    pub config_found: bool,
    pub state_dir: PathBuf,
    pub systemd_dir: PathBuf,
    pub socket_path: PathBuf,
    pub socket_token: Option<(SecretString, CredentialSource)>,
    pub podman_socket: PodmanSocket,
    /// Absent from the file means the embedded default: systemd-creds alone.
    pub providers: ProvidersConfig,
    pub workloads: BTreeMap<String, WorkloadConfig>,
    pub cache: CacheSettings,
    pub raw_values: RawPolicy,
    /// `driver:`, with `psi_path` checked to be absolute.
    pub driver: DriverConfig,
    /// The top-level `ca_cert` (the original's key), which the generated units mount when
    /// `providers.infisical.ca_cert` is unset.
    pub ca_cert: Option<PathBuf>,
    /// The paths as the file sets them, before scope defaults.
    pub explicit: ExplicitPaths,
}

/// Paths exactly as the config file sets them (`None`: left to the default). For generators
/// that write for another host or scope, whose defaults are not this process's, and that
/// mount only what the operator chose.
#[derive(Debug, Clone, Default)]
pub struct ExplicitPaths {
    pub state_dir: Option<PathBuf>,
    pub systemd_dir: Option<PathBuf>,
    pub socket_path: Option<PathBuf>,
    pub podman_socket: Option<PathBuf>,
}

/// `cache:` resolved: the file and key paths with their defaults, the durations parsed.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    pub backend: Option<CacheBackend>,
    /// `cache.path`, else `state_dir/cache.enc`.
    pub path: PathBuf,
    /// Where `psi cache init --backend tpm` puts the sealed key, and where psi looks for it:
    /// `cache.key` beside the config file (`/etc/psi/cache.key` by default). Beside the file
    /// rather than in the scope's directory, so a config given with `-c` keeps its key with
    /// it, and psi in its container (config directory mounted at `/etc/psi`) finds the same
    /// file.
    pub key_path: PathBuf,
    /// The refresh timer's `OnBootSec=`/`OnUnitActiveSec=`.
    pub refresh_interval: TimerSpan,
    /// The refresh timer's `RandomizedDelaySec=`.
    pub refresh_randomized_delay: TimerSpan,
    /// How often `psi serve` looks at `cache.enc` for a new version that setup wrote.
    pub watch_interval: Duration,
}

/// The Podman API socket psi talks to, resolved at load. Without `podman_socket` the default
/// depends on the environment, and when that cannot give one the error waits until a command
/// needs Podman: most commands never do.
/// The error is a String because it is cloned with the settings until a command needs it.
#[derive(Debug, Clone)]
pub struct PodmanSocket(std::result::Result<PathBuf, String>);

impl PodmanSocket {
    /// The socket, or what to set to name one.
    pub fn path(&self) -> Result<PathBuf> {
        self.0.clone().map_err(Error::Usage)
    }
}
