//! The schema of `config.yaml`: the original's keys plus psi's additions, as serde structs.
//! Every struct denies unknown keys; typed values (durations, modes, PCR lists, hooks) are
//! parsed while deserialising (`values`). The top-level [`ConfigFile`] and the blocks that
//! [`Settings`](super::Settings) resolves stay inside `config/`; the blocks it hands on as
//! they are (providers, workloads, driver) are public.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{
    duration, optional_duration, ApiUrl, FileMode, Hook, KeyId, PcrList, TimerSpan,
};
use crate::secret::SecretString;

/// The whole file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    /// Accepted for compatibility and ignored: the scope always follows the UID.
    #[serde(rename = "scope")]
    _scope: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub systemd_dir: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub socket_token: Option<SecretString>,
    /// New: the socket `psi serve` listens on and the driver commands `psi install` writes
    /// connect to.
    pub socket_path: Option<PathBuf>,
    /// New: the Podman API socket `psi setup` talks to [default: `CONTAINER_HOST`, else
    /// /run/podman/podman.sock, or $XDG_RUNTIME_DIR/podman/podman.sock for users].
    pub podman_socket: Option<PathBuf>,
    /// Absent means "the embedded default": systemd-creds alone.
    pub providers: Option<ProvidersConfig>,
    #[serde(default)]
    pub workloads: BTreeMap<String, WorkloadConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    /// New: what `POST /store` does with a body that is not a mapping.
    #[serde(default)]
    pub store: StoreConfig,
    /// New: the program Podman's driver commands run, for `psi install` and `psi setup`.
    #[serde(default)]
    pub driver: DriverConfig,
}

/// `providers:`; a block that is present but empty (`systemd-creds:`) enables the provider
/// with its defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    #[serde(default, deserialize_with = "present_block")]
    pub infisical: Option<InfisicalConfig>,
    #[serde(default, deserialize_with = "present_block")]
    pub nitrokeyhsm: Option<NitrokeyConfig>,
    #[serde(default, rename = "systemd-creds", deserialize_with = "present_block")]
    pub systemd_creds: Option<CredsConfig>,
}

impl ProvidersConfig {
    /// Names of the configured providers, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.infisical.is_some() {
            names.push("infisical");
        }
        if self.nitrokeyhsm.is_some() {
            names.push("nitrokeyhsm");
        }
        if self.systemd_creds.is_some() {
            names.push("systemd-creds");
        }
        names
    }
}

fn present_block<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

/// `providers.systemd-creds` (new).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredsConfig {
    #[serde(default)]
    pub with_key: WithKey,
    pub tpm2_pcrs: Option<PcrList>,
}

/// systemd-creds `--with-key=`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum WithKey {
    /// TPM2 when the host has one, else the host key.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "host")]
    Host,
    #[serde(rename = "tpm2")]
    Tpm2,
    #[serde(rename = "host+tpm2")]
    HostTpm2,
}

impl WithKey {
    pub fn as_str(self) -> &'static str {
        match self {
            WithKey::Auto => "auto",
            WithKey::Host => "host",
            WithKey::Tpm2 => "tpm2",
            WithKey::HostTpm2 => "host+tpm2",
        }
    }

    /// A String error: the `--with-key` flag prefixes it into an `Error::Usage`.
    pub fn parse(text: &str) -> Result<WithKey, String> {
        match text {
            "auto" => Ok(WithKey::Auto),
            "host" => Ok(WithKey::Host),
            "tpm2" => Ok(WithKey::Tpm2),
            "host+tpm2" => Ok(WithKey::HostTpm2),
            other => Err(format!(
                "unknown key type '{other}'; use auto, host, tpm2 or host+tpm2"
            )),
        }
    }
}

/// `providers.infisical` (the original's schema plus `timeout` and `retries`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfisicalConfig {
    #[serde(default)]
    pub api_url: ApiUrl,
    pub auth: Option<AuthConfig>,
    #[serde(default = "yes")]
    pub verify_ssl: bool,
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub token: TokenConfig,
    #[serde(default)]
    pub projects: BTreeMap<String, ProjectConfig>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// New: per-request timeout, e.g. `10s`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// New: retries of transient failures.
    pub retries: Option<u32>,
}

impl Default for InfisicalConfig {
    fn default() -> Self {
        InfisicalConfig {
            api_url: ApiUrl::default(),
            auth: None,
            verify_ssl: true,
            ca_cert: None,
            token: TokenConfig::default(),
            projects: BTreeMap::new(),
            tls: TlsConfig::default(),
            timeout: None,
            retries: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub method: AuthMethod,
    pub identity_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    /// New, aws-iam only: the STS region to sign for (else `AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, then the EC2 instance identity document).
    pub region: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    UniversalAuth,
    AwsIam,
    Gcp,
    Azure,
}

impl AuthMethod {
    /// The configuration spelling, also part of the token cache file name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::UniversalAuth => "universal-auth",
            AuthMethod::AwsIam => "aws-iam",
            AuthMethod::Gcp => "gcp",
            AuthMethod::Azure => "azure",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Cap, in seconds, on how long a cached access token is used.
    #[serde(default = "default_token_ttl")]
    pub ttl: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            ttl: default_token_ttl(),
        }
    }
}

fn default_token_ttl() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub id: String,
    #[serde(default = "default_environment")]
    pub environment: String,
    pub auth: Option<AuthConfig>,
}

fn default_environment() -> String {
    "prod".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub certificates: BTreeMap<String, CertConfig>,
    /// New: the renewal timer's `RandomizedDelaySec=` (at most a day, its interval), named
    /// like `cache.refresh_randomized_delay`.
    #[serde(default = "default_renew_delay")]
    pub renew_randomized_delay: TimerSpan,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            certificates: BTreeMap::new(),
            renew_randomized_delay: default_renew_delay(),
        }
    }
}

/// What the renewal timer had fixed before the key existed.
fn default_renew_delay() -> TimerSpan {
    TimerSpan("1h".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    pub project: String,
    /// The certificate profile to issue from (current Infisical); empty when `ca_id` is used.
    #[serde(default)]
    pub profile_id: String,
    pub common_name: String,
    #[serde(default)]
    pub alt_names: Vec<AltName>,
    #[serde(default = "default_cert_ttl")]
    pub ttl: String,
    pub key_algorithm: Option<String>,
    pub output: CertOutput,
    #[serde(default = "default_renew_before", deserialize_with = "duration")]
    pub renew_before: Duration,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// New: the CA to issue from, for Infisical versions without certificate profiles.
    pub ca_id: Option<String>,
    /// New: how long each hook may run [default: 60s].
    #[serde(default, deserialize_with = "optional_duration")]
    pub hook_timeout: Option<Duration>,
}

fn default_cert_ttl() -> String {
    "90d".into()
}

fn default_renew_before() -> Duration {
    Duration::from_secs(30 * 86_400)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AltName {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// Where a certificate's PEM files go. The key is written 0600, the others with `mode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertOutput {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub chain: PathBuf,
    /// New: the certificate followed by the chain, the one file most servers take.
    pub fullchain: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    #[serde(default = "default_cert_mode")]
    pub mode: FileMode,
}

impl CertOutput {
    /// Every configured output file, with its key under `output`.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        let mut files = vec![
            ("cert", self.cert.as_path()),
            ("key", self.key.as_path()),
            ("chain", self.chain.as_path()),
        ];
        files.extend(self.fullchain.as_deref().map(|p| ("fullchain", p)));
        files.extend(self.ca.as_deref().map(|p| ("ca", p)));
        files
    }
}

fn default_cert_mode() -> FileMode {
    FileMode(0o640)
}

/// `providers.nitrokeyhsm` (the original's schema plus `token_label`, `token_serial`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NitrokeyConfig {
    #[serde(default = "default_pkcs11_module")]
    pub pkcs11_module: PathBuf,
    #[serde(default)]
    pub slot: u32,
    #[serde(default = "default_key_label")]
    pub key_label: String,
    #[serde(default)]
    pub key_id: KeyId,
    pub pin: Option<SecretString>,
    pub public_key_cache: Option<PathBuf>,
    #[serde(default = "default_pcscd_volume")]
    pub pcscd_volume: String,
    pub token_label: Option<String>,
    pub token_serial: Option<String>,
}

impl Default for NitrokeyConfig {
    fn default() -> Self {
        NitrokeyConfig {
            pkcs11_module: default_pkcs11_module(),
            slot: 0,
            key_label: default_key_label(),
            key_id: KeyId::default(),
            pin: None,
            public_key_cache: None,
            pcscd_volume: default_pcscd_volume(),
            token_label: None,
            token_serial: None,
        }
    }
}

fn default_pkcs11_module() -> PathBuf {
    "/usr/lib64/pkcs11/opensc-pkcs11.so".into()
}

fn default_key_label() -> String {
    "podman-secrets".into()
}

fn default_pcscd_volume() -> String {
    "pcscd-socket".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    #[serde(default = "default_workload_provider")]
    pub provider: String,
    /// Accepted for compatibility; unused, as in the original.
    pub unit: Option<String>,
    #[serde(default)]
    pub secrets: Vec<SecretSource>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// New: what `psi setup` does when the workload's secrets changed in a run.
    #[serde(default)]
    pub on_change: OnChange,
}

/// `on_change:`, what `psi setup` does with a running workload whose secrets it changed.
/// Its env and file secrets are read at container start, so only a restart hands it the
/// new values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// `systemctl try-restart` its unit (a unit that is not running stays stopped).
    Restart,
    /// Leave it running; the report says its secrets changed. The default, as `podman
    /// auto-update` is opt-in: restarting a production service is the operator's decision,
    /// and users of the original get no restarts they did not ask for.
    #[default]
    None,
}

impl OnChange {
    /// The configuration spelling, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            OnChange::Restart => "restart",
            OnChange::None => "none",
        }
    }
}

fn default_workload_provider() -> String {
    "infisical".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    pub project: String,
    #[serde(default = "default_source_path")]
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    /// New: merge the folder's Infisical secret imports (the original dropped them).
    #[serde(default = "yes")]
    pub include_imports: bool,
    /// New: `{VAR: KEY}`; only these keys become environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// New: `{KEY: {target, mode, uid, gid}}`; these keys become files in the container.
    #[serde(default)]
    pub files: BTreeMap<String, FileSecret>,
    /// New: `env` (default) or `mount`: every key of the source becomes a file.
    #[serde(rename = "type")]
    pub kind: Option<SecretKind>,
    pub target: Option<String>,
    pub mode: Option<FileMode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl SecretSource {
    /// Whether the source names its keys (`env` or `files`) instead of taking all of them.
    pub fn selects_keys(&self) -> bool {
        !self.env.is_empty() || !self.files.is_empty()
    }
}

/// How one key is mounted as a file (`Secret=NAME,type=mount,target=...`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSecret {
    /// Path in the container; relative paths are under /run/secrets [default: the key].
    pub target: Option<String>,
    /// Octal file mode, e.g. `0400`.
    pub mode: Option<FileMode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

fn default_source_path() -> String {
    "/".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretKind {
    Env,
    Mount,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CacheConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub backend: Option<CacheBackend>,
    pub path: Option<PathBuf>,
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: TimerSpan,
    #[serde(default = "default_refresh_delay")]
    pub refresh_randomized_delay: TimerSpan,
    /// New: how often `psi serve` looks at `cache.enc` for a new version that setup wrote.
    #[serde(default = "default_watch_interval", deserialize_with = "duration")]
    pub watch_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            backend: None,
            path: None,
            refresh_interval: default_refresh_interval(),
            refresh_randomized_delay: default_refresh_delay(),
            watch_interval: default_watch_interval(),
        }
    }
}

/// A `stat` every two seconds costs nothing, and setup runs hourly.
fn default_watch_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_refresh_interval() -> TimerSpan {
    TimerSpan("1h".into())
}

fn default_refresh_delay() -> TimerSpan {
    TimerSpan("5m".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    Tpm,
    Hsm,
}

/// `driver:`: which client the shell driver's commands run. One setting for `psi install`
/// (psi.conf) and `psi setup` (the options of the secrets it creates), so a setup inside a
/// container creates secrets with the client the host's psi.conf uses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverConfig {
    pub client: Option<DriverClient>,
    /// The psi binary the host's Podman runs for the psi client (default: this psi's own
    /// path, which inside a container means nothing to the host).
    pub psi_path: Option<PathBuf>,
}

/// The program Podman's driver commands run to reach psi serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverClient {
    /// `psi client ...` by the absolute path of the psi binary
    Psi,
    /// curl, as the original psi's psi.conf
    Curl,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreConfig {
    pub raw_values: Option<RawValues>,
    pub seal_with: Option<SealWith>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawValues {
    Seal,
    Reject,
}

/// Providers that can seal a value psi was handed, producing a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SealWith {
    #[serde(rename = "systemd-creds")]
    SystemdCreds,
    #[serde(rename = "nitrokeyhsm")]
    NitrokeyHsm,
}

impl SealWith {
    pub fn as_str(self) -> &'static str {
        match self {
            SealWith::SystemdCreds => "systemd-creds",
            SealWith::NitrokeyHsm => "nitrokeyhsm",
        }
    }
}
