//! The command tree (clap derive). Parsing only: no I/O, no defaults that need the system.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{DriverClient, FileMode};
use crate::import::plan::Conflict;
use crate::unitgen::units::Mode;

#[derive(Debug, Parser)]
#[command(
    name = "psi",
    version,
    about = "Podman Secret Infrastructure: secrets for Podman containers, resolved at start, never on disk"
)]
pub struct Cli {
    /// Configuration file [default: /etc/psi/config.yaml, or ~/.config/psi/config.yaml for users]
    #[arg(
        short = 'c',
        long,
        env = "PSI_CONFIG",
        global = true,
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    /// The psi serve socket [default: /run/psi/psi.sock, or $XDG_RUNTIME_DIR/psi/psi.sock]
    #[arg(long, env = "PSI_SOCKET", global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace
    #[arg(
        long,
        env = "PSI_LOG_LEVEL",
        global = true,
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: String,

    /// Log JSON lines (the default when stderr is not a terminal)
    #[arg(long, env = "PSI_LOG_JSON", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve lookups for Podman's shell secret driver on a Unix socket
    Serve,
    /// Write containers.conf.d/psi.conf, which points Podman's shell driver at psi serve
    Install(InstallArgs),
    /// The driver commands psi.conf runs: store|lookup|delete|list --socket PATH [--token-file PATH]
    Client(ClientArgs),
    /// One-shot shell-driver commands (SECRET_ID from the environment)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Values sealed with systemd-creds (TPM2 or host key)
    #[command(subcommand)]
    Creds(CredsCommand),
    /// Discover secrets, register them with Podman and write the quadlet drop-ins
    Setup(SetupArgs),
    /// Resolve every configured source and key without changing anything
    Check(CheckArgs),
    /// The Nitrokey HSM provider: token checks, public key, store, pcscd sidecar
    #[command(subcommand)]
    Nitrokeyhsm(NitrokeyhsmCommand),
    /// The encrypted secret cache (cache.enc): provision, inspect, drop entries
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print a Butane config (or Ignition JSON) that provisions psi on Fedora CoreOS
    Butane(ButaneArgs),
    /// Exit 0 when psi serve answers GET /healthz with 200 (the socket: --socket, PSI_SOCKET, config)
    Healthcheck(HealthcheckArgs),
    /// Whether this host is healthy: serve, cache, last setup, timers, certificates,
    /// psi.conf; exit 1 with the reasons when something needs attention
    Status(StatusArgs),
    /// The appliance's systemd units and quadlets
    #[command(subcommand)]
    Systemd(SystemdCommand),
    /// Infisical tools: logins, a folder as env, one secret to a file, imports, TLS certificates
    #[command(subcommand)]
    Infisical(InfisicalCommand),
    /// Run a command with secrets in its environment (nothing written to disk)
    Run(RunArgs),
    /// Print the shell completion script for bash, zsh or fish
    ///
    /// bash: psi completions bash > /etc/bash_completion.d/psi;
    /// zsh: psi completions zsh > /usr/local/share/zsh/site-functions/_psi;
    /// fish: psi completions fish > /etc/fish/completions/psi.fish
    Completions(CompletionsArgs),
    /// Print psi's man page, or write one page per command with --dir
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell)
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write psi.1, psi-setup.1, ... (one per command, mode 0644) into DIR instead
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Also require GET /healthz/cache to answer 200 (the cache is disabled or loaded; sends
    /// the socket token when one is configured)
    #[arg(long)]
    pub cache: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// The psi.conf to check [default: the scope's containers.conf.d/psi.conf, where psi
    /// install writes it]
    #[arg(long, value_name = "PATH")]
    pub driver_conf: Option<PathBuf>,
}

/// `psi systemd ...`.
#[derive(Debug, Subcommand)]
pub enum SystemdCommand {
    /// Write psi-secrets, the setup units, refresh and TLS timers (only files that changed)
    Install(SystemdInstallArgs),
}

#[derive(Debug, Args)]
pub struct SystemdInstallArgs {
    /// native (this psi binary) or container (quadlets running --image)
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Mode,
    /// psi's image (container mode)
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Then start the services and enable the timers (native: enable --now everything)
    #[arg(long, conflicts_with_all = ["output_dir", "dry_run"])]
    pub enable: bool,
    /// Write under DIR/quadlets and DIR/units instead of the scope's directories
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Print the files; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// psi serve loads the socket token from the encrypted credential psi-socket-token
    #[arg(long)]
    pub socket_token_credential: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Provision the cache key (tpm) or the HSM-sealed cache (hsm) and an empty cache
    Init(CacheInitArgs),
    /// Show the cache file's path, backend, size, header; --verify decrypts it
    Status(CacheStatusArgs),
    /// Re-run setup to repopulate the cache from the providers
    Refresh,
    /// Drop the entries of Podman secrets (by name or ID) or mapping files
    Invalidate(CacheInvalidateArgs),
    /// Drop entries that no mapping in the state directory has any more
    Prune,
}

#[derive(Debug, Args)]
pub struct CacheInitArgs {
    /// tpm (a key sealed with systemd-creds) or hsm (the Nitrokey HSM's key)
    #[arg(long, value_name = "BACKEND", value_parser = ["tpm", "hsm"])]
    pub backend: Option<String>,
    /// Where the sealed key goes (tpm) [default: cache.key beside the config file]
    #[arg(long, value_name = "PATH")]
    pub key_path: Option<PathBuf>,
    /// systemd-creds key (tpm): auto, host, tpm2 or host+tpm2 [default: auto]
    #[arg(long, value_name = "KEY")]
    pub with_key: Option<String>,
    /// TPM2 PCRs to bind the key to (tpm), e.g. 7 or 7+11 [default: 7, unless --with-key host]
    #[arg(long, value_name = "LIST")]
    pub tpm2_pcrs: Option<String>,
    /// Replace an existing key and cache file
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CacheStatusArgs {
    /// Decrypt the cache with the configured backend and count its entries
    #[arg(long)]
    pub verify: bool,
    /// Print the status as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CacheInvalidateArgs {
    /// Podman secret names or IDs, or mapping files
    #[arg(value_name = "NAME|ID|MAPPING_FILE", required = true)]
    pub secrets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Only workloads of this provider
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
    /// Print the plan and the state of Podman's secrets; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Remove Podman secrets of a workload that its sources no longer have
    #[arg(long)]
    pub prune: bool,
    /// Re-create secrets whose driver commands use the other client (curl or psi client)
    /// for the same socket and token, moving them to the configured one
    #[arg(long)]
    pub fix_opts: bool,
    /// Also write the psi_setup_* metrics to this node_exporter textfile (atomically, 0644)
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Workloads to check [default: all]
    #[arg(value_name = "WORKLOAD")]
    pub workloads: Vec<String>,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Print the file instead of writing it
    #[arg(long)]
    pub stdout: bool,
    /// Write to this path instead of the scope's containers.conf.d/psi.conf
    #[arg(long, value_name = "PATH", conflicts_with = "stdout")]
    pub output: Option<PathBuf>,
    /// What the driver commands run [default: the config's driver.client, else psi, unless inside a container or psi cannot find its own path]
    #[arg(long, value_enum, value_name = "CLIENT")]
    pub client: Option<ClientArg>,
}

/// `psi install --client`: what the driver commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientArg {
    /// `psi client ...` by the absolute path of the psi binary
    Psi,
    /// curl, as the original psi's psi.conf
    Curl,
}

impl From<ClientArg> for DriverClient {
    fn from(client: ClientArg) -> DriverClient {
        match client {
            ClientArg::Psi => DriverClient::Psi,
            ClientArg::Curl => DriverClient::Curl,
        }
    }
}

/// `psi client`'s words, parsed by [`crate::client`] itself: `main.rs` runs it before clap
/// (it is on every container start's path), and this entry only serves `psi --help` and
/// invocations with global options first.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct ClientArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store stdin for SECRET_ID (a mapping, or a raw value to seal)
    Store,
    /// Print the value of SECRET_ID
    Lookup,
    /// Remove the mapping of SECRET_ID
    Delete,
    /// List the IDs that have mappings
    List,
}

#[derive(Debug, Subcommand)]
pub enum CredsCommand {
    /// Seal the value on stdin with systemd-creds and keep its mapping
    Store(CredsStoreArgs),
}

#[derive(Debug, Args)]
pub struct CredsStoreArgs {
    /// Secret name (also sealed into the credential)
    pub name: String,
    /// Create the Podman secret NAME through the shell driver instead of writing state_dir/NAME
    #[arg(long)]
    pub register: bool,
    /// Sealing key: auto (TPM2 if present, else host), host, tpm2 or host+tpm2
    #[arg(long, value_name = "KEY")]
    pub with_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum NitrokeyhsmCommand {
    /// Check module, pcscd socket, PIN, login, key, public key cache and state dir
    Preflight,
    /// Read the public key from the token and cache it for encryption
    Init,
    /// Check that the PIN logs in
    TestPin,
    /// Show the configuration and whether the token answers
    Status,
    /// Encrypt stdin to the HSM's public key and keep its mapping
    Store(NitrokeyStoreArgs),
    /// Build the pcscd sidecar image (localhost/pcscd:latest) and install its quadlets
    SetupPcscd(SetupPcscdArgs),
}

#[derive(Debug, Args)]
pub struct NitrokeyStoreArgs {
    /// Secret name
    pub name: String,
    /// Create the Podman secret NAME through the shell driver instead of writing state_dir/NAME
    #[arg(long)]
    pub register: bool,
}

#[derive(Debug, Args)]
pub struct ButaneArgs {
    /// How psi runs on the machine: as a container (quadlets) or as a native binary
    #[arg(long, value_enum, default_value = "container", value_name = "MODE")]
    pub mode: Mode,
    /// psi's image in container mode
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "ghcr.io/quickvm/psi:latest"
    )]
    pub image: String,
    /// Butane variant
    #[arg(long, value_name = "VARIANT", default_value = "fcos", value_parser = ["fcos"])]
    pub variant: String,
    /// Butane spec version (fcos 1.4.0 becomes Ignition 3.3.0, 1.5.0 becomes 3.4.0)
    #[arg(long = "version", value_name = "VERSION", default_value = "1.5.0", value_parser = ["1.4.0", "1.5.0", "1.6.0"])]
    pub butane_version: String,
    /// Print Ignition JSON instead of Butane YAML
    #[arg(long)]
    pub ignition: bool,
    /// Ignition spec version of --ignition (ignition-validate 2.14 checks up to 3.3.0)
    #[arg(long, value_name = "VERSION", default_value = "3.4.0", value_parser = ["3.3.0", "3.4.0"], requires = "ignition")]
    pub spec: String,
    /// Embed the config file (it holds credentials) or leave it to be placed on the machine
    #[arg(long, value_enum, default_value = "embed", value_name = "HOW")]
    pub config_file: ConfigFileMode,
}

/// Whether `psi butane` embeds the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFileMode {
    /// Written to /etc/psi/config.yaml (mode 0600) at first boot
    Embed,
    /// Not included: a comment says where to place it
    Reference,
}

#[derive(Debug, Args)]
pub struct SetupPcscdArgs {
    /// Build context for the image [default: /opt/psi/pcscd, or ~/.local/share/psi/pcscd for users]
    #[arg(long, value_name = "DIR")]
    pub build_dir: Option<PathBuf>,
    /// Where the quadlets go [default: the configured systemd_dir]
    #[arg(long, value_name = "DIR", conflicts_with = "build_only")]
    pub systemd_dir: Option<PathBuf>,
    /// Build the image only; install no quadlets
    #[arg(long)]
    pub build_only: bool,
    /// The image to build on (the Containerfile's BASE_IMAGE) [default: docker.io/library/debian:bookworm-slim]
    #[arg(long, value_name = "IMAGE")]
    pub base_image: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum InfisicalCommand {
    /// Authenticate every configured auth (global, then each project with its own)
    Login(InfisicalLoginArgs),
    /// Print a folder's secrets as shell exports, KEY=value lines or JSON
    Env(InfisicalEnvArgs),
    /// Write one secret to a file (atomically, with its mode set at creation)
    WriteFile(InfisicalWriteFileArgs),
    /// Copy secrets from env files, Podman secrets or quadlet files into an Infisical folder
    #[command(subcommand)]
    Import(ImportCommand),
    /// TLS certificates issued by Infisical PKI: issue, renew (the daily timer), status
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Debug, Args)]
pub struct InfisicalLoginArgs {
    /// Accept a cached token that is still usable instead of logging in afresh
    #[arg(long)]
    pub cached: bool,
}

/// How `psi infisical env` prints secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    /// `export KEY='value'` lines for `eval` in a POSIX shell
    Export,
    /// `KEY=value` lines (values with newlines are refused)
    Env,
    /// One JSON object
    Json,
}

#[derive(Debug, Args)]
pub struct InfisicalEnvArgs {
    /// Project alias (providers.infisical.projects)
    #[arg(long, value_name = "ALIAS")]
    pub project: String,
    /// Folder
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub path: String,
    /// Environment slug instead of the project's configured one
    #[arg(long, value_name = "SLUG")]
    pub environment: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "export", value_name = "FORMAT")]
    pub format: EnvFormat,
}

#[derive(Debug, Args)]
pub struct InfisicalWriteFileArgs {
    /// The secret's name (key) in Infisical
    pub secret_name: String,
    /// The file to write (its directory is created if missing)
    pub output: PathBuf,
    /// Project alias (providers.infisical.projects)
    #[arg(long, value_name = "ALIAS")]
    pub project: String,
    /// The folder holding the secret
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub secret_path: String,
    /// The value is base64: write the decoded bytes
    #[arg(long)]
    pub base64: bool,
    /// The file's mode, octal
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = FileMode::parse)]
    pub mode: FileMode,
}

/// `psi infisical import ...`: where the secrets come from.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// KEY=VALUE lines from FILE (stdin when omitted)
    EnvFile {
        /// The env file [default: stdin]
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        options: ImportOptions,
    },
    /// Podman secrets, each imported under its name
    PodmanSecret {
        /// A secret to import (repeatable)
        #[arg(long = "name", value_name = "NAME", required_unless_present = "all")]
        names: Vec<String>,
        /// Every Podman secret
        #[arg(long, conflicts_with = "names")]
        all: bool,
        #[command(flatten)]
        options: ImportOptions,
    },
    /// Environment= assignments (and with --resolve-secrets, Secret= values) of quadlet files
    Quadlet {
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Also import the values of Secret= references, read from Podman
        #[arg(long)]
        resolve_secrets: bool,
        #[command(flatten)]
        options: ImportOptions,
    },
}

/// The options every `psi infisical import` source shares.
#[derive(Debug, Args)]
pub struct ImportOptions {
    /// Project alias from the configuration
    #[arg(long, value_name = "ALIAS")]
    pub project: String,
    /// Target folder
    #[arg(long, default_value = "/", value_name = "PATH")]
    pub path: String,
    /// Environment slug [default: the project's]
    #[arg(long, value_name = "SLUG")]
    pub environment: Option<String>,
    /// What to do with keys that already exist
    #[arg(long, value_enum, default_value = "fail")]
    pub conflict: Conflict,
    /// Show what would happen; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// `--mode` of `psi systemd install` and `psi butane`: the renderers' own type, so no second
/// enum mirrors it.
impl ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Mode::Native, Mode::Container]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Mode::Native => PossibleValue::new("native").help("The psi binary under systemd units"),
            Mode::Container => PossibleValue::new("container")
                .help("psi's image under quadlets; the host's Podman reaches it with curl"),
        })
    }
}

/// `--conflict`'s values. The policy itself ([`Conflict`]) is the import planner's; its
/// values and their help are spelled out here so that the planner knows no clap.
impl ValueEnum for Conflict {
    fn value_variants<'a>() -> &'a [Self] {
        &[Conflict::Fail, Conflict::Skip, Conflict::Overwrite]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Conflict::Fail => PossibleValue::new("fail")
                .help("Write nothing when any key holds another value in Infisical"),
            Conflict::Skip => {
                PossibleValue::new("skip").help("Leave keys that hold other values as they are")
            }
            Conflict::Overwrite => {
                PossibleValue::new("overwrite").help("Update keys that hold other values")
            }
        })
    }
}

/// `psi infisical tls ...`.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Issue every configured certificate anew
    Issue,
    /// Renew the certificates whose notAfter is within renew_before (the daily timer)
    Renew(TlsRenewArgs),
    /// Show each certificate's state: valid, needs renewal, expired, not issued
    Status(TlsStatusArgs),
}

#[derive(Debug, Args)]
pub struct TlsRenewArgs {
    /// Also write the certificate and provider metrics to this node_exporter textfile
    /// (atomically, 0644)
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TlsStatusArgs {
    /// Print JSON (the default when stdout is not a terminal)
    #[arg(long)]
    pub json: bool,
    /// The renewal timer to report on (terminal output only)
    #[arg(long, value_name = "NAME", default_value = "psi-tls-renew.timer")]
    pub timer: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Take the secrets of this workload: the env vars psi setup would deliver (file
    /// secrets only when named with --env)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["project", "path"], required_unless_present = "project")]
    pub workload: Option<String>,
    /// Take every secret of a folder of this project alias
    #[arg(long, value_name = "ALIAS")]
    pub project: Option<String>,
    /// The folder (with --project)
    #[arg(long, value_name = "PATH", default_value = "/", requires = "project")]
    pub path: String,
    /// Only these: environment variable VAR gets secret KEY (repeatable)
    #[arg(long = "env", value_name = "VAR=KEY")]
    pub env: Vec<String>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}
