//! `config.yaml`: the schema (the original's keys plus psi's additions), its validation, the
//! scope path table, and credential resolution.
//!
//! Precedence, stated once and applied here only:
//! command-line flag > `$CREDENTIALS_DIRECTORY/<name>` > config file > environment variable >
//! built-in default. (Flags reach this module already parsed; clap folds `PSI_CONFIG` and
//! `PSI_SOCKET` into their flags, which is why those two environment variables win over the
//! file: they name *where*, not *what*.)
//!
//! Unknown keys are errors at every level, with the file, the key path and, for a near miss,
//! a suggestion. YAML stays confined to this file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::secret::SecretString;

// ---------------------------------------------------------------------------------------------
// Schema

/// The whole file. Every struct denies unknown fields; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Accepted for compatibility and ignored: the scope always follows the UID.
    pub scope: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub systemd_dir: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub socket_token: Option<SecretString>,
    /// New: the socket `psi serve` listens on and `psi install` points curl at.
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

/// TPM2 PCR indexes, written `7`, `"7+11"`, `"7,11"` or `[7, 11]`; never empty, because
/// systemd-creds 252 cannot decrypt what it sealed with an empty `--tpm2-pcrs=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrList(Vec<u8>);

impl PcrList {
    pub fn parse(text: &str) -> Result<PcrList, String> {
        let mut pcrs = Vec::new();
        for part in text.split(['+', ',']).map(str::trim) {
            let pcr: u8 = part
                .parse()
                .map_err(|_| format!("'{part}' is not a PCR number"))?;
            pcrs.push(pcr);
        }
        PcrList::new(pcrs)
    }

    fn new(pcrs: Vec<u8>) -> Result<PcrList, String> {
        if pcrs.is_empty() {
            return Err("the PCR list is empty; leave tpm2_pcrs out instead".into());
        }
        if let Some(bad) = pcrs.iter().find(|p| **p > 23) {
            return Err(format!("PCR {bad} is out of range (0-23)"));
        }
        Ok(PcrList(pcrs))
    }

    /// The `--tpm2-pcrs=` argument form, `7+11`.
    pub fn to_arg(&self) -> String {
        self.0
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join("+")
    }
}

impl<'de> Deserialize<'de> for PcrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u8),
            Text(String),
            List(Vec<u8>),
        }
        let list = match Raw::deserialize(d)? {
            Raw::One(pcr) => PcrList::new(vec![pcr]),
            Raw::Text(text) => PcrList::parse(&text),
            Raw::List(pcrs) => PcrList::new(pcrs),
        };
        list.map_err(serde::de::Error::custom)
    }
}

/// `providers.infisical` (the original's schema plus `timeout` and `retries`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfisicalConfig {
    #[serde(default = "default_api_url")]
    pub api_url: String,
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
    pub timeout: Option<String>,
    /// New: retries of transient failures.
    pub retries: Option<u32>,
}

impl Default for InfisicalConfig {
    fn default() -> Self {
        InfisicalConfig {
            api_url: default_api_url(),
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

impl InfisicalConfig {
    /// Checks what serde cannot: each auth block has what its method needs, every project is
    /// covered by its own or the global auth, `timeout` parses, and every TLS output path is
    /// absolute and written by one key only. Messages name the key path.
    pub fn validate(&self) -> Result<(), String> {
        const AT: &str = "providers.infisical";
        if let Some(auth) = &self.auth {
            auth.validate(&format!("{AT}.auth"))?;
        }
        let mut uncovered = Vec::new();
        for (alias, project) in &self.projects {
            match &project.auth {
                Some(auth) => auth.validate(&format!("{AT}.projects.{alias}.auth"))?,
                None if self.auth.is_none() => uncovered.push(alias.as_str()),
                None => {}
            }
        }
        if !uncovered.is_empty() {
            return Err(format!(
                "no global auth and no per-project auth for projects: {}; set {AT}.auth or add auth to each project",
                uncovered.join(", ")
            ));
        }
        if let Some(timeout) = &self.timeout {
            crate::duration::parse(timeout).map_err(|err| format!("{AT}.timeout: {err}"))?;
        }
        // Which key writes each output file, so two never write the same one.
        let mut written: BTreeMap<&Path, String> = BTreeMap::new();
        for (name, cert) in &self.tls.certificates {
            let at = format!("{AT}.tls.certificates.{name}");
            if cert.profile_id.is_empty() && cert.ca_id.is_none() {
                return Err(format!(
                    "{at}: set profile_id (a certificate profile) or ca_id (a CA, for Infisical without certificate profiles)"
                ));
            }
            if !self.projects.contains_key(&cert.project) {
                return Err(format!(
                    "{at}.project: '{}' is not a project under {AT}.projects",
                    cert.project
                ));
            }
            // `ttl` is Infisical's to judge (it takes forms psi never reads); modes, hooks and
            // durations were checked while parsing.
            for (key, path) in cert.output.files() {
                let key = format!("{at}.output.{key}");
                check_output_path(path).map_err(|err| format!("{key}: {err}"))?;
                if let Some(other) = written.get(path) {
                    return Err(format!("{key}: '{}' is also {other}", path.display()));
                }
                written.insert(path, key);
            }
        }
        Ok(())
    }
}

/// An output path: absolute, because the renewal timer does not run where `psi` was typed
/// and the generated units mount and create its directory; and a file, not a directory.
fn check_output_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("'{}' is not an absolute path", path.display()));
    }
    if path.as_os_str().as_bytes().ends_with(b"/") || path.file_name().is_none() {
        return Err(format!(
            "'{}' names a directory, not a file",
            path.display()
        ));
    }
    Ok(())
}

fn default_api_url() -> String {
    "https://app.infisical.com".into()
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

impl AuthConfig {
    /// What the method needs; `at` is the key path for the message.
    fn validate(&self, at: &str) -> Result<(), String> {
        let method = self.method.as_str();
        match self.method {
            AuthMethod::UniversalAuth => {
                if self.client_id.is_none() || self.client_secret.is_none() {
                    return Err(format!(
                        "{at}: {method} requires client_id and client_secret"
                    ));
                }
            }
            AuthMethod::AwsIam | AuthMethod::Gcp | AuthMethod::Azure => {
                if self.identity_id.is_none() {
                    return Err(format!("{at}: {method} requires identity_id"));
                }
            }
        }
        if self.region.is_some() && self.method != AuthMethod::AwsIam {
            return Err(format!(
                "{at}.region: applies to aws-iam only, not {method}"
            ));
        }
        Ok(())
    }
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub certificates: BTreeMap<String, CertConfig>,
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

/// A duration key (`30s`, `90d`), parsed when the file is loaded.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    parse_scalar(d, crate::duration::parse)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    struct Value(Duration);
    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            duration(d).map(Value)
        }
    }
    Ok(Option::<Value>::deserialize(d)?.map(|Value(duration)| duration))
}

/// Reads a scalar with psi's own `parse`, inside serde's visitor: serde_yaml gives an error
/// raised there the value's line and column (raised afterwards, it gets the enclosing
/// block's).
fn parse_scalar<'de, D, T>(
    d: D,
    parse: fn(&str) -> Result<T, String>,
) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Scalar<T>(fn(&str) -> Result<T, String>);
    impl<T> serde::de::Visitor<'_> for Scalar<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<T, E> {
            (self.0)(text).map_err(E::custom)
        }
    }
    d.deserialize_str(Scalar(parse))
}

/// A TLS hook: a command line, split into words like a shell would split it when the file
/// is loaded (so a hook that cannot run is a config error, not a failed renewal). No shell
/// ever runs it; the first word is the program, found on `PATH` unless it is a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    line: String,
    /// Never empty.
    argv: Vec<String>,
}

impl Hook {
    /// The command line as written, for the log.
    pub fn line(&self) -> &str {
        &self.line
    }

    pub fn program(&self) -> &str {
        &self.argv[0]
    }

    pub fn args(&self) -> &[String] {
        &self.argv[1..]
    }

    pub fn parse(line: &str) -> Result<Hook, String> {
        let argv = shlex::split(line).ok_or_else(|| {
            "the hook is not a command line: unbalanced quotes or a trailing backslash".to_owned()
        })?;
        if argv.is_empty() {
            return Err("the hook is empty; write a command line".into());
        }
        Ok(Hook {
            line: line.to_owned(),
            argv,
        })
    }
}

impl<'de> Deserialize<'de> for Hook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_scalar(d, Hook::parse)
    }
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

/// An output file's mode: octal digits (`"0640"`, `0640`, `"640"`), `0o` allowed as in the
/// original, at most 0777. Parsed when the file is loaded, so a bad mode fails before a
/// certificate is issued instead of after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(u32);

impl FileMode {
    pub fn parse(text: &str) -> Result<FileMode, String> {
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix("0o").unwrap_or(trimmed);
        let octal = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if octal && bits <= 0o777 => Ok(FileMode(bits)),
            _ => Err(format!(
                "'{text}' is not a file mode; use octal digits, e.g. 0640"
            )),
        }
    }

    pub fn bits(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_scalar(d, FileMode::parse)
    }
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
    #[serde(default = "default_key_id")]
    pub key_id: String,
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
            key_id: default_key_id(),
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

fn default_key_id() -> String {
    "02".into()
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
    pub mode: Option<String>,
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
    pub mode: Option<String>,
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
pub struct CacheConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub backend: Option<CacheBackend>,
    pub path: Option<PathBuf>,
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: String,
    #[serde(default = "default_refresh_delay")]
    pub refresh_randomized_delay: String,
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

fn default_refresh_interval() -> String {
    "1h".into()
}

fn default_refresh_delay() -> String {
    "5m".into()
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DriverClient {
    /// `psi client ...` by the absolute path of the psi binary
    Psi,
    /// curl, as the original psi's psi.conf
    Curl,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub raw_values: Option<RawValues>,
    pub seal_with: Option<SealWith>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawValues {
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

// ---------------------------------------------------------------------------------------------
// Scope

/// System scope when running as root, user scope otherwise (as the original).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

/// The scope path table: where each file lives by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePaths {
    pub config: PathBuf,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub systemd_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub containers_conf_d: PathBuf,
    /// Where `psi systemd install` puts its tmpfiles.d file (the user manager reads
    /// `~/.config/user-tmpfiles.d`).
    pub tmpfiles_dir: PathBuf,
}

impl ScopePaths {
    /// `home` and `runtime_dir` matter only for the user scope; `runtime_dir` falls back to
    /// `/run/user/<uid>` as the original does.
    pub fn new(
        scope: Scope,
        uid: u32,
        home: Option<&Path>,
        runtime_dir: Option<&Path>,
    ) -> Result<ScopePaths> {
        match scope {
            Scope::System => Ok(ScopePaths {
                config: "/etc/psi/config.yaml".into(),
                config_dir: "/etc/psi".into(),
                state_dir: "/var/lib/psi".into(),
                socket: "/run/psi/psi.sock".into(),
                systemd_dir: "/etc/containers/systemd".into(),
                unit_dir: "/etc/systemd/system".into(),
                containers_conf_d: "/etc/containers/containers.conf.d".into(),
                tmpfiles_dir: "/etc/tmpfiles.d".into(),
            }),
            Scope::User => {
                let home = home.ok_or_else(|| {
                    Error::Usage("HOME is not set; the user scope keeps its files under it".into())
                })?;
                let runtime = runtime_dir
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
                Ok(ScopePaths {
                    config: home.join(".config/psi/config.yaml"),
                    config_dir: home.join(".config/psi"),
                    state_dir: home.join(".local/share/psi"),
                    socket: runtime.join("psi/psi.sock"),
                    systemd_dir: home.join(".config/containers/systemd"),
                    unit_dir: home.join(".config/systemd/user"),
                    containers_conf_d: home.join(".config/containers/containers.conf.d"),
                    tmpfiles_dir: home.join(".config/user-tmpfiles.d"),
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resolved settings

/// What the environment looks like to the resolver: a function, so tests pass a map.
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

/// What `psi store` does with a body that is not a mapping.
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
    pub providers: ProvidersConfig,
    pub raw_values: RawPolicy,
    pub file: ConfigFile,
}

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

        Ok(Settings {
            scope,
            paths,
            config_path,
            config_found,
            state_dir,
            systemd_dir,
            socket_path,
            socket_token,
            providers,
            raw_values,
            file,
        })
    }
}

/// Checks that need more than one key: references between blocks.
fn validate(file: &ConfigFile, providers: &ProvidersConfig) -> Result<(), String> {
    if file.cache.watch_interval.is_zero() {
        return Err("cache.watch_interval: must be more than 0 (default: 2s)".into());
    }
    if let Some(infisical) = &providers.infisical {
        infisical.validate()?;
    }
    if let Some(nitrokey) = &providers.nitrokeyhsm {
        validate_volume_name(&nitrokey.pcscd_volume)?;
    }
    let configured = providers.names();
    for (name, workload) in &file.workloads {
        if !configured.contains(&workload.provider.as_str()) {
            return Err(format!(
                "workloads.{name}.provider: workload '{name}' uses provider '{}', but it is not configured (configured: {})",
                workload.provider,
                list_or_none(&configured)
            ));
        }
        validate_workload(name, workload)?;
        if let (Some(infisical), "infisical") = (&providers.infisical, workload.provider.as_str()) {
            for (index, source) in workload.secrets.iter().enumerate() {
                if !infisical.projects.contains_key(&source.project) {
                    let known: Vec<&str> = infisical.projects.keys().map(String::as_str).collect();
                    return Err(format!(
                        "workloads.{name}.secrets[{index}].project: '{}' is not a project under providers.infisical.projects (configured: {})",
                        source.project,
                        list_or_none(&known)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `pcscd_volume` names a Podman volume and the quadlet file `<name>.volume`: Podman's own
/// rule for volume names, which also keeps it a plain file name.
fn validate_volume_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(format!(
            "providers.nitrokeyhsm.pcscd_volume: '{name}' is not a Podman volume name; start with a letter or digit, then use letters, digits, '_', '.' and '-'"
        ))
    }
}

/// A workload name becomes part of Podman secret names (`{workload}--{KEY}`) and of a unit
/// name; a source must ask for one coherent thing. Checked at load so `psi setup` never
/// starts on a config it would half apply.
fn validate_workload(name: &str, workload: &WorkloadConfig) -> Result<(), String> {
    let stem = name.strip_suffix('@').unwrap_or(name);
    if stem.is_empty()
        || !stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        || stem.starts_with(['.', '-'])
    {
        return Err(format!(
            "workloads.{name}: '{name}' is not a usable workload name; use letters, digits, '_', '.' and '-' (and a final '@' for a template unit)"
        ));
    }
    for (index, unit) in workload.depends_on.iter().enumerate() {
        if unit.is_empty() || unit.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "workloads.{name}.depends_on[{index}]: '{unit}' is not a unit name"
            ));
        }
    }
    for (index, source) in workload.secrets.iter().enumerate() {
        let at = format!("workloads.{name}.secrets[{index}]");
        if !source.path.starts_with('/') {
            return Err(format!("{at}.path: '{}' must start with '/'", source.path));
        }
        for (var, key) in &source.env {
            if !is_env_name(var) {
                return Err(format!(
                    "{at}.env.{var}: '{var}' is not a valid environment variable name (letters, digits and '_', not starting with a digit)"
                ));
            }
            if key.is_empty() {
                return Err(format!("{at}.env.{var}: the key is empty"));
            }
        }
        let mount = source.kind == Some(SecretKind::Mount);
        if mount && !source.env.is_empty() {
            return Err(format!(
                "{at}: 'type: mount' mounts every key of the source as a file, so it cannot have an 'env' map; use 'files' for the keys to mount and 'env' for the variables"
            ));
        }
        if !mount {
            for (field, set) in [
                ("target", source.target.is_some()),
                ("mode", source.mode.is_some()),
                ("uid", source.uid.is_some()),
                ("gid", source.gid.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "{at}.{field}: only applies to file secrets; add 'type: mount' to the source, or use 'files'"
                    ));
                }
            }
        }
        if let Some(mode) = &source.mode {
            check_mode(mode).map_err(|e| format!("{at}.mode: {e}"))?;
        }
        if let Some(target) = &source.target {
            check_target(target).map_err(|e| format!("{at}.target: {e}"))?;
        }
        for (key, file) in &source.files {
            if let Some(mode) = &file.mode {
                check_mode(mode).map_err(|e| format!("{at}.files.{key}.mode: {e}"))?;
            }
            if let Some(target) = &file.target {
                check_target(target).map_err(|e| format!("{at}.files.{key}.target: {e}"))?;
            }
        }
    }
    Ok(())
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A file target goes into a `Secret=` line as one comma-separated field.
fn check_target(target: &str) -> Result<(), String> {
    if target.is_empty()
        || target
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
    {
        Err(format!(
            "'{target}' cannot be a secret file path (empty, or a comma, space or control character)"
        ))
    } else {
        Ok(())
    }
}

fn check_mode(mode: &str) -> Result<(), String> {
    match u32::from_str_radix(mode, 8) {
        Ok(bits) if bits <= 0o777 && !mode.is_empty() => Ok(()),
        _ => Err(format!(
            "'{mode}' is not a file mode; use octal digits, e.g. 0400"
        )),
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

/// `store.raw_values` defaults to sealing when a sealing provider is configured (the first of
/// systemd-creds, nitrokeyhsm), and to rejecting otherwise; plaintext is never an option.
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

/// The socket token must be at least 8 characters of `[A-Za-z0-9._~+/=-]`, the whole string:
/// that alphabet is what makes embedding it in single quotes in `psi.conf` safe.
pub fn validate_socket_token(token: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b);
    if token.len() >= 8 && token.bytes().all(allowed) {
        Ok(())
    } else {
        Err("invalid socket token: it must be at least 8 characters from [A-Za-z0-9._~+/=-]".into())
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

// ---------------------------------------------------------------------------------------------
// Parsing with precise messages

/// Parses the YAML text. The message names the key path, says what is wrong, suggests the
/// nearest known key for a typo, and ends with the position when the parser knows it.
/// It never quotes a value (the file holds tokens and client secrets), except where psi's
/// own parser of a key that holds no secret (a file mode, a duration) quotes what it read.
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

/// Rewrites a serde/serde_yaml message into psi's form. serde formats these messages itself
/// (`unknown field `x`, expected one of `a`, `b``), so their shape is stable.
fn describe_yaml_error(path: &str, raw: &str) -> String {
    // serde_yaml prefixes nested errors with its own path ("a.b: ..."); drop it, ours is as
    // precise (for an unknown key it names the key, serde_yaml's stops at the parent).
    let mut message = raw;
    if let Some((prefix, rest)) = message.split_once(": ") {
        if path.starts_with(prefix) {
            message = rest;
        }
    }
    let (message, position) = match message.rfind(" at line ") {
        Some(i) => (
            &message[..i],
            Some(message[i + 4..].replace(" column", ", column")),
        ),
        None => (message, None),
    };
    let text = if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        let (key, known) = names
            .split_first()
            .map(|(k, rest)| (*k, rest.to_vec()))
            .unwrap_or(("", Vec::new()));
        match suggest(key, &known) {
            Some(near) => format!("unknown key, did you mean '{near}'?"),
            None if known.is_empty() => "unknown key".to_owned(),
            None => format!("unknown key (known keys: {})", known.join(", ")),
        }
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        let names = backticked(rest);
        let known = names.get(1..).unwrap_or_default().join(", ");
        format!("unknown value; expected one of: {known}")
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        // "string \"secret\", expected u32": keep the kind, drop the quoted value.
        let kind = rest.split([' ', ',']).next().unwrap_or("value");
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or("another type");
        format!("wrong type: found a {kind}, expected {expected}")
    } else if message.starts_with("invalid value: ") {
        let expected = message
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or("another value");
        format!("invalid value, expected {expected}")
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        format!(
            "missing required key '{}'",
            backticked(rest).first().copied().unwrap_or("?")
        )
    } else {
        message.to_owned()
    };
    let path = if path == "." {
        String::new()
    } else {
        format!("{path}: ")
    };
    match position {
        Some(position) => format!("{path}{text} ({position})"),
        None => format!("{path}{text}"),
    }
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The known key closest to `key`, if it is a plausible typo.
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("recursve", &["project", "path", "recursive"]),
            Some("recursive")
        );
        assert_eq!(suggest("zzz", &["project", "path"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn file_modes() {
        for (text, bits) in [
            ("0640", 0o640),
            ("644", 0o644),
            ("0o600", 0o600),
            (" 0400 ", 0o400),
        ] {
            assert_eq!(FileMode::parse(text), Ok(FileMode(bits)), "{text}");
        }
        for bad in ["", "0o", "rw-r--r--", "0800", "+640", "01777", "-0"] {
            let err = FileMode::parse(bad).unwrap_err();
            assert!(err.contains("is not a file mode"), "{bad}: {err}");
        }
    }

    #[test]
    fn hooks_are_split_at_load() {
        let hook = Hook::parse("touch '/tmp/a b' c").unwrap();
        assert_eq!(hook.program(), "touch");
        assert_eq!(hook.args(), ["/tmp/a b", "c"]);
        assert_eq!(hook.line(), "touch '/tmp/a b' c");
        for bad in ["", "   ", "touch 'unbalanced", "touch a\\"] {
            assert!(Hook::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pcr_lists() {
        assert_eq!(PcrList::parse("7+11").unwrap().to_arg(), "7+11");
        assert_eq!(PcrList::parse("7, 11").unwrap().to_arg(), "7+11");
        assert!(PcrList::parse("").is_err());
        assert!(PcrList::parse("24").is_err());
    }
}
