//! The appliance's systemd units (`psi systemd install`, and `psi butane` which embeds the
//! same files): a spec of plain data built once from the settings, then pure renderers.
//!
//! | file | target | when |
//! |---|---|---|
//! | `psi-secrets.service` / `.container` | unit dir / quadlet dir | always |
//! | `psi-infisical-setup.service` / `.container` | unit dir / quadlet dir | infisical configured |
//! | `psi-infisical-refresh.service` + `.timer` | unit dir | and the cache is enabled with a backend |
//! | `psi-tls-renew.service` / `.container` + `.timer` | unit dir (timer always) | `providers.infisical.tls.certificates` non-empty |
//!
//! Setup units exist for providers that *discover* secrets. Only Infisical does: a
//! systemd-creds or Nitrokey value is sealed and registered once (`creds store --register`,
//! `nitrokeyhsm store --register`), so a boot-time `psi setup --provider nitrokeyhsm` would
//! have nothing to do. The original generated a setup unit for every provider key; those
//! units ran an empty setup, so psi does not generate them.
//!
//! Fixes over the original (reference 12.6): TLS renewal runs `psi infisical tls renew`; the
//! user scope gets `systemctl --user`, `default.target`, `%t` and the user's own paths and no
//! `network-online.target` (a user manager has none); the Nitrokey provider, not only the HSM
//! cache backend, gets the pcscd volume (the configured `pcscd_volume`), the ordering on
//! `pcscd.service` and the `hsm-pin` credential; the socket token can come from the
//! `psi-socket-token` credential; the serve unit is `Type=notify` (psi sends `READY=1`).
//!
//! Credentials are `LoadCredentialEncrypted=` on the host's service; in a container the
//! service's credentials directory (`%d`) is mounted at `/run/credentials` and
//! `CREDENTIALS_DIRECTORY` points there. `hsm-pin` and `psi-socket-token` name no file:
//! systemd looks them up in `/etc/credstore.encrypted/` (system) or
//! `~/.config/credstore.encrypted/` (user; user units need systemd 256's `systemd-creds --user`).

mod container;
mod native;

use std::path::{Path, PathBuf};

use crate::config::{CacheBackend, CredentialSource, Scope, Settings};
use crate::error::{Error, Result};

/// How psi runs on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// The psi binary, as plain systemd services.
    Native,
    /// psi's image, as quadlet `.container` units.
    Container,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Container => "container",
        }
    }
}

/// Where a generated file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The quadlet directory (`systemd_dir`): `.container` files.
    Quadlet,
    /// The scope's unit directory: native services and every timer (quadlet reads no timers).
    Unit,
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub target: Target,
    pub name: String,
    pub text: String,
}

/// A directory or socket as the host names it and as psi inside its container sees it.
/// Inside, psi runs as root, so it resolves the *system* scope's defaults; a path the config
/// file sets explicitly is read from that file inside too, so it is mounted at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub host: String,
    pub inside: String,
}

impl Place {
    fn new(host: impl Into<String>, explicit: bool, system_default: &str) -> Place {
        let host = host.into();
        let inside = if explicit {
            host.clone()
        } else {
            system_default.to_owned()
        };
        Place { host, inside }
    }

    fn same(path: &Path) -> Place {
        let text = path.display().to_string();
        Place {
            host: text.clone(),
            inside: text,
        }
    }
}

/// The encrypted cache, when it is enabled with a backend (else there is nothing to unseal
/// and nothing to refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub backend: CacheBackend,
    /// The systemd-creds sealed key (`tpm`): `LoadCredentialEncrypted=psi-cache-key:<this>`.
    pub key_path: PathBuf,
    /// `cache.refresh_interval` and `cache.refresh_randomized_delay`, checked durations in a
    /// form systemd also reads (`30s`, `5m`, `1h`, `1d`, plain seconds).
    pub refresh_interval: String,
    pub refresh_delay: String,
}

/// Everything the renderers read: plain data, no settings, no environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceSpec {
    pub mode: Mode,
    pub scope: Scope,
    /// The image of container mode (required there).
    pub image: Option<String>,
    /// The psi binary natively (absolute).
    pub psi_bin: PathBuf,
    /// Native: a config file other than the scope's default, passed as `-c`.
    pub config_arg: Option<PathBuf>,
    /// The directory holding the config file; inside always `/etc/psi`.
    pub config_dir: Place,
    /// Container: `PSI_CONFIG` when the config file is not called `config.yaml`.
    pub config_env: Option<String>,
    pub state_dir: Place,
    /// Natively `StateDirectory=psi`: only for the system scope's default `/var/lib/psi`
    /// (a user's `StateDirectory=` is `~/.local/state`, not psi's `~/.local/share/psi`).
    pub state_dir_managed: bool,
    /// The directory of the serve socket.
    pub runtime_dir: Place,
    /// `RuntimeDirectory=psi` when the socket is the scope's default (`/run/psi`,
    /// `$XDG_RUNTIME_DIR/psi`); a configured socket's directory is the user's business.
    pub runtime_dir_managed: bool,
    /// `PSI_SOCKET` for psi in its container when the socket is not the default.
    pub socket_env: Option<String>,
    pub systemd_dir: Place,
    pub unit_dir: PathBuf,
    /// The Podman API socket (container setup talks to it).
    pub podman_socket: Place,
    /// The bus psi's `systemctl daemon-reload` uses from inside its setup container.
    pub dbus_socket: Place,
    pub infisical: bool,
    /// `providers.nitrokeyhsm.pcscd_volume` when the provider is configured.
    pub nitrokeyhsm_volume: Option<String>,
    pub systemd_creds: bool,
    pub cache: Option<CacheSpec>,
    /// The pcscd volume the HSM cache backend uses when the provider block is absent.
    pub cache_hsm_volume: String,
    /// `providers.infisical.ca_cert` (else the top-level `ca_cert`): mounted read-only at the
    /// same path and named by `SSL_CERT_FILE`.
    pub ca_cert: Option<PathBuf>,
    /// Serve loads `LoadCredentialEncrypted=psi-socket-token`.
    pub socket_token_credential: bool,
    /// The directories TLS renewal writes to (sorted, unique); empty: no TLS units.
    pub tls_dirs: Vec<PathBuf>,
}

impl ApplianceSpec {
    /// The spec for `settings`. `psi_bin` is the absolute psi path natively (ignored in
    /// container mode, where the image's `psi` is the entry point). The socket token is
    /// loaded from a credential when psi itself got it from one; `psi systemd install
    /// --socket-token-credential` sets [`ApplianceSpec::socket_token_credential`] as well.
    pub fn from_settings(
        settings: &Settings,
        mode: Mode,
        image: Option<&str>,
        psi_bin: &Path,
    ) -> Result<ApplianceSpec> {
        if mode == Mode::Container && image.is_none() {
            return Err(Error::Usage("container mode requires --image IMAGE".into()));
        }
        if mode == Mode::Native && !psi_bin.is_absolute() {
            return Err(Error::Usage(format!(
                "the psi binary must be an absolute path, not {}",
                psi_bin.display()
            )));
        }
        let file = &settings.file;
        let paths = &settings.paths;
        let user = settings.scope == Scope::User;
        // Units run elsewhere than this shell: a relative `-c` becomes absolute here.
        let config_path = std::path::absolute(&settings.config_path).map_err(|err| Error::Io {
            context: format!("cannot resolve {}", settings.config_path.display()),
            source: err,
        })?;
        let config_dir = config_path
            .parent()
            .unwrap_or(&paths.config_dir)
            .display()
            .to_string();
        let config_name = config_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config.yaml".into());
        let default_socket = settings.socket_path == paths.socket;
        let runtime_host = if default_socket {
            // `%t` is /run for the system manager and $XDG_RUNTIME_DIR for a user's.
            if user {
                "%t/psi".to_owned()
            } else {
                "/run/psi".to_owned()
            }
        } else {
            parent(&settings.socket_path)
        };
        let podman_host = match &file.podman_socket {
            Some(path) => path.display().to_string(),
            None if user => "%t/podman/podman.sock".into(),
            None => "/run/podman/podman.sock".into(),
        };
        let dbus_host = if user {
            "%t/bus"
        } else {
            "/run/dbus/system_bus_socket"
        };
        let infisical = settings.providers.infisical.as_ref();
        let cache = match (file.cache.enabled, file.cache.backend) {
            (true, Some(backend)) => {
                for (key, value) in [
                    ("cache.refresh_interval", &file.cache.refresh_interval),
                    (
                        "cache.refresh_randomized_delay",
                        &file.cache.refresh_randomized_delay,
                    ),
                ] {
                    crate::duration::parse(value).map_err(|why| Error::Config {
                        path: settings.config_path.clone(),
                        message: format!("{key}: {why}"),
                    })?;
                }
                Some(CacheSpec {
                    backend,
                    key_path: crate::cache::default_key_path(settings),
                    refresh_interval: file.cache.refresh_interval.trim().to_owned(),
                    refresh_delay: file.cache.refresh_randomized_delay.trim().to_owned(),
                })
            }
            _ => None,
        };
        let mut tls_dirs: Vec<PathBuf> = infisical
            .map(|i| &i.tls.certificates)
            .into_iter()
            .flatten()
            .flat_map(|(_, cert)| {
                let out = &cert.output;
                [
                    Some(&out.cert),
                    Some(&out.key),
                    Some(&out.chain),
                    out.ca.as_ref(),
                ]
            })
            .flatten()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        tls_dirs.sort();
        tls_dirs.dedup();
        let nitrokey = settings.providers.nitrokeyhsm.as_ref();
        Ok(ApplianceSpec {
            mode,
            scope: settings.scope,
            image: image.map(str::to_owned),
            psi_bin: psi_bin.to_path_buf(),
            config_arg: (config_path != paths.config).then(|| config_path.clone()),
            config_dir: Place::new(config_dir, false, "/etc/psi"),
            config_env: (config_name != "config.yaml").then(|| format!("/etc/psi/{config_name}")),
            state_dir: Place::new(
                settings.state_dir.display().to_string(),
                file.state_dir.is_some(),
                "/var/lib/psi",
            ),
            state_dir_managed: !user && settings.state_dir == paths.state_dir,
            runtime_dir: Place::new(runtime_host, !default_socket, "/run/psi"),
            runtime_dir_managed: default_socket,
            socket_env: (!default_socket).then(|| settings.socket_path.display().to_string()),
            systemd_dir: Place::new(
                settings.systemd_dir.display().to_string(),
                file.systemd_dir.is_some(),
                "/etc/containers/systemd",
            ),
            unit_dir: paths.unit_dir.clone(),
            podman_socket: Place::new(
                podman_host,
                file.podman_socket.is_some(),
                "/run/podman/podman.sock",
            ),
            dbus_socket: Place::new(dbus_host, false, "/run/dbus/system_bus_socket"),
            infisical: infisical.is_some(),
            nitrokeyhsm_volume: nitrokey.map(|n| n.pcscd_volume.clone()),
            systemd_creds: settings.providers.systemd_creds.is_some(),
            cache,
            cache_hsm_volume: nitrokey
                .map(|n| n.pcscd_volume.clone())
                .unwrap_or_else(|| crate::config::NitrokeyConfig::default().pcscd_volume),
            ca_cert: infisical
                .and_then(|i| i.ca_cert.clone())
                .or_else(|| file.ca_cert.clone()),
            socket_token_credential: matches!(
                settings.socket_token,
                Some((_, CredentialSource::CredentialsDirectory))
            ),
            tls_dirs,
        })
    }

    /// The same appliance with its configuration at the scope's default path, for a host
    /// provisioned elsewhere (`psi butane` places the file there), whatever file this run read.
    pub fn with_default_config(mut self) -> ApplianceSpec {
        self.config_arg = None;
        self.config_env = None;
        let dir = match self.scope {
            Scope::System => "/etc/psi",
            Scope::User => "%h/.config/psi",
        };
        self.config_dir = Place::new(dir, false, "/etc/psi");
        self
    }

    /// The providers that get a `psi-<p>-setup` unit: those that discover secrets.
    pub fn setup_providers(&self) -> Vec<&'static str> {
        if self.infisical {
            vec!["infisical"]
        } else {
            Vec::new()
        }
    }

    /// The pcscd volume when anything psi runs talks to the Nitrokey: the provider, or the
    /// HSM cache backend.
    pub fn hsm_volume(&self) -> Option<&str> {
        match (&self.nitrokeyhsm_volume, &self.cache) {
            (Some(volume), _) => Some(volume),
            (None, Some(cache)) if cache.backend == CacheBackend::Hsm => {
                Some(&self.cache_hsm_volume)
            }
            _ => None,
        }
    }

    /// `systemctl` or `systemctl --user`, as the scope's manager is reached.
    pub fn systemctl(&self) -> &'static str {
        match self.scope {
            Scope::System => "systemctl",
            Scope::User => "systemctl --user",
        }
    }
}

fn parent(path: &Path) -> String {
    path.parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string()
}

/// Every file of the appliance, sorted by (target, name).
pub fn appliance(spec: &ApplianceSpec) -> Vec<GeneratedFile> {
    let mut files = match spec.mode {
        Mode::Native => native::files(spec),
        Mode::Container => container::files(spec),
    };
    if let Some(cache) = &spec.cache {
        for provider in spec.setup_providers() {
            files.push(refresh_service(spec, provider));
            files.push(refresh_timer(spec, cache, provider));
        }
    }
    if !spec.tls_dirs.is_empty() {
        files.push(tls_timer(spec));
    }
    files.sort_by(|a, b| (a.target, &a.name).cmp(&(b.target, &b.name)));
    files
}

// ---------------------------------------------------------------------------------------------
// Fragments both modes share

/// A unit file being assembled: sections in order, each a list of `Key=value` lines.
pub(crate) struct UnitText {
    text: String,
}

impl UnitText {
    /// Starts with the comment saying who wrote the file and how to get it again.
    fn new(spec: &ApplianceSpec, what: &str) -> UnitText {
        let sudo = match spec.scope {
            Scope::System => "sudo ",
            Scope::User => "",
        };
        let image = match spec.mode {
            Mode::Native => String::new(),
            Mode::Container => " --image IMAGE".into(),
        };
        UnitText {
            text: format!(
                "# {what}.\n# Generated by psi; do not edit. Regenerate with: {sudo}psi systemd install --mode {}{image}\n",
                spec.mode.as_str()
            ),
        }
    }

    /// Appends `[name]` and its lines; a section without lines is left out.
    fn section(mut self, name: &str, lines: Vec<String>) -> UnitText {
        if !lines.is_empty() {
            self.text.push_str(&format!("\n[{name}]\n"));
            for line in lines {
                self.text.push_str(&line);
                self.text.push('\n');
            }
        }
        self
    }

    fn file(self, target: Target, name: String) -> GeneratedFile {
        GeneratedFile {
            target,
            name,
            text: self.text,
        }
    }
}

/// What a psi process of the appliance needs from its `[Unit]` section.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    Serve,
    Setup,
    TlsRenew,
}

/// `[Unit]` lines of a psi process: network (system scope only: a user manager has no
/// `network-online.target`), the lookup service for setup (Podman's secret store calls it),
/// and pcscd for anything that opens the Nitrokey. Natively pcscd is the host's
/// (socket-activated), so only the order is kept; in container mode `pcscd.service` is the
/// sidecar quadlet, which must be started.
fn unit_lines(spec: &ApplianceSpec, description: String, role: Role) -> Vec<String> {
    let mut after = Vec::new();
    let mut wants = Vec::new();
    if spec.scope == Scope::System {
        after.push("network-online.target");
        wants.push("network-online.target");
    }
    if matches!(role, Role::Setup) {
        after.push("psi-secrets.service");
    }
    if spec.hsm_volume().is_some() && !matches!(role, Role::TlsRenew) {
        after.push("pcscd.service");
        if spec.mode == Mode::Container {
            wants.push("pcscd.service");
        }
    }
    let mut lines = vec![format!("Description={description}")];
    if !after.is_empty() {
        lines.push(format!("After={}", after.join(" ")));
    }
    if !wants.is_empty() {
        lines.push(format!("Wants={}", wants.join(" ")));
    }
    if matches!(role, Role::Setup) {
        lines.push("Requires=psi-secrets.service".into());
    }
    lines
}

/// `LoadCredentialEncrypted=` lines: the cache key (tpm backend) and the HSM PIN for serve
/// and setup (setup writes the cache; both may open the token), the socket token for serve.
fn credential_lines(spec: &ApplianceSpec, role: Role) -> Vec<String> {
    let mut lines = Vec::new();
    if matches!(role, Role::TlsRenew) {
        return lines;
    }
    if let Some(cache) = spec
        .cache
        .as_ref()
        .filter(|c| c.backend == CacheBackend::Tpm)
    {
        lines.push(format!(
            "LoadCredentialEncrypted={}:{}",
            crate::cache::KEY_CREDENTIAL,
            cache.key_path.display()
        ));
    }
    if spec.hsm_volume().is_some() {
        lines.push("LoadCredentialEncrypted=hsm-pin".into());
    }
    if matches!(role, Role::Serve) && spec.socket_token_credential {
        lines.push("LoadCredentialEncrypted=psi-socket-token".into());
    }
    lines
}

fn install_lines(spec: &ApplianceSpec) -> Vec<String> {
    vec![format!("WantedBy={}", super::install_target(spec.scope))]
}

fn setup_description(provider: &str) -> String {
    format!("PSI {provider} secrets setup")
}

const SERVE_DESCRIPTION: &str = "PSI secret lookup service";
const TLS_DESCRIPTION: &str = "PSI TLS certificate renewal";

/// `psi-<p>-refresh.service`: restarts the setup unit. A timer cannot target the setup unit
/// itself: `RemainAfterExit=yes` keeps it active, so `OnUnitActiveSec=` would fire once.
fn refresh_service(spec: &ApplianceSpec, provider: &str) -> GeneratedFile {
    UnitText::new(
        spec,
        &format!("Periodic refresh of psi's {provider} secret cache"),
    )
    .section(
        "Unit",
        vec![
            format!("Description=PSI {provider} secret cache refresh"),
            format!("After=psi-{provider}-setup.service"),
        ],
    )
    .section(
        "Service",
        vec![
            "Type=oneshot".into(),
            format!(
                "ExecStart={} restart psi-{provider}-setup.service",
                spec.systemctl()
            ),
        ],
    )
    .file(Target::Unit, format!("psi-{provider}-refresh.service"))
}

fn refresh_timer(spec: &ApplianceSpec, cache: &CacheSpec, provider: &str) -> GeneratedFile {
    UnitText::new(
        spec,
        &format!("Timer of psi's {provider} secret cache refresh"),
    )
    .section(
        "Unit",
        vec![format!(
            "Description=Periodic PSI {provider} secret cache refresh"
        )],
    )
    .section(
        "Timer",
        vec![
            format!("Unit=psi-{provider}-refresh.service"),
            format!("OnBootSec={}", cache.refresh_interval),
            format!("OnUnitActiveSec={}", cache.refresh_interval),
            format!("RandomizedDelaySec={}", cache.refresh_delay),
        ],
    )
    .section("Install", vec!["WantedBy=timers.target".into()])
    .file(Target::Unit, format!("psi-{provider}-refresh.timer"))
}

fn tls_timer(spec: &ApplianceSpec) -> GeneratedFile {
    UnitText::new(spec, "Timer of psi's TLS certificate renewal")
        .section(
            "Unit",
            vec!["Description=Daily PSI TLS certificate renewal".into()],
        )
        .section(
            "Timer",
            vec![
                "OnCalendar=daily".into(),
                "RandomizedDelaySec=1h".into(),
                "Persistent=true".into(),
            ],
        )
        .section("Install", vec!["WantedBy=timers.target".into()])
        .file(Target::Unit, "psi-tls-renew.timer".into())
}
