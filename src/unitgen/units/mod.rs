//! The appliance's systemd units (`psi systemd install`, and `psi butane` which embeds the
//! same files): a spec of plain data built once from the settings, then pure renderers.
//!
//! | file | target | when |
//! |---|---|---|
//! | `psi-secrets.service` / `.container` | unit dir / quadlet dir | always |
//! | `psi-infisical-setup.service` / `.container` | unit dir / quadlet dir | infisical configured |
//! | `psi-infisical-refresh.service` + `.timer` | unit dir | and the cache is enabled with a backend |
//! | `psi-tls-renew.service` / `.container` + `.timer` | unit dir (timer always) | `providers.infisical.tls.certificates` non-empty |
//! | `psi-cache-key.service` / `.container` | unit dir / quadlet dir | the cache is enabled with the `tpm` backend |
//! | `psi.conf` | tmpfiles.d (system) / user-tmpfiles.d (user) | always |
//!
//! A fresh host needs nothing by hand. The tmpfiles.d file creates every host directory a
//! unit mounts or writes (the state directory, a configured socket's directory, the TLS
//! output directories) before any unit starts; `psi systemd install` also applies it at
//! once. Units that mount systemd-creds' host key run `systemd-creds setup` first (it
//! creates the key only when it is missing). A TPM-backed cache provisions its own key at
//! first boot (`psi-cache-key`, skipped once the key exists), and psi unseals that key
//! itself with systemd-creds instead of through `LoadCredentialEncrypted=`: systemd fails a
//! unit whose credential file is missing (status 243/CREDENTIALS), while psi serves live
//! lookups and reports the cache "unavailable".
//!
//! Ordering: setup requires the Podman API socket (`podman.socket`) and runs before the
//! configured workloads, so on first boot, before any drop-in exists, a workload waits for
//! the setup that writes its drop-in; the drop-in then orders it after psi-secrets and setup
//! at every later boot (`dropin`).
//!
//! The host's systemd from a container: setup (daemon-reload after new drop-ins) and TLS
//! renewal (hooks such as `systemctl reload nginx.service`) get the host's D-Bus system bus
//! (the user's session bus for user scope, mounted at the system path where psi inside
//! looks) and `/run/systemd/system`, whose presence is how systemctl knows it talks to a
//! running systemd. `systemctl` in psi's image then asks the host's manager over the bus,
//! with no privilege beyond the root the container already runs as. Not systemd's private
//! socket: systemctl checks its peer's credentials there, and from another PID namespace
//! the kernel reports no PID ("Failed to connect to bus: No data available").
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
    /// The scope's tmpfiles.d directory.
    Tmpfiles,
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub target: Target,
    pub name: String,
    pub text: String,
    /// A plain unit with an `[Install]` section, enabled with `systemctl enable` (natively
    /// the services, in both modes the timers). Quadlet units are enabled by their own
    /// `[Install]` section when the generator runs.
    pub enable: bool,
}

/// The lookup service's unit, in both modes (quadlet names the service after the file).
pub const SERVE_UNIT: &str = "psi-secrets.service";

/// The unit that provisions the TPM-backed cache key at first boot.
pub const CACHE_KEY_UNIT: &str = "psi-cache-key.service";

/// The Podman API socket's unit (system and user manager alike).
pub const PODMAN_SOCKET_UNIT: &str = "podman.socket";

/// The setup unit of a provider that discovers secrets.
pub fn setup_unit(provider: &str) -> String {
    format!("psi-{provider}-setup.service")
}

/// The units a workload's secrets come from, which its drop-in orders it after: the lookup
/// service and the setup unit that registers them.
pub fn secret_units(provider: &str) -> Vec<String> {
    vec![SERVE_UNIT.to_owned(), setup_unit(provider)]
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
    /// The Podman API socket (setup talks to it; so does `--register` in psi-secrets).
    pub podman_socket: Place,
    /// The D-Bus socket through which `systemctl` in psi's containers reaches the host's
    /// manager (the user's own for user scope).
    pub dbus_socket: Place,
    /// Workloads of discovering providers as (provider, service): setup runs before them.
    /// Template workloads (`name@`) are left out: only their instances are units.
    pub workloads: Vec<(String, String)>,
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
    /// The directories TLS renewal writes to (sorted, unique) and their modes: the files'
    /// mode with search permission wherever it grants read; empty: no TLS units.
    pub tls_dirs: Vec<(PathBuf, u32)>,
    pub tmpfiles_dir: PathBuf,
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
        let podman_host = match &settings.explicit.podman_socket {
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
        let cache = match (settings.cache.enabled, settings.cache.backend) {
            (true, Some(backend)) => Some(CacheSpec {
                backend,
                key_path: settings.cache.key_path.clone(),
                refresh_interval: settings.cache.refresh_interval.as_str().to_owned(),
                refresh_delay: settings.cache.refresh_randomized_delay.as_str().to_owned(),
            }),
            _ => None,
        };
        let mut tls_dirs: std::collections::BTreeMap<PathBuf, u32> = Default::default();
        for cert in infisical.iter().flat_map(|i| i.tls.certificates.values()) {
            let out = &cert.output;
            for dir in out.files().into_iter().filter_map(|(_, p)| p.parent()) {
                *tls_dirs.entry(dir.to_path_buf()).or_insert(0o700) |= dir_mode(out.mode.bits());
            }
        }
        let workloads = settings
            .workloads
            .iter()
            .filter(|(name, w)| w.provider == "infisical" && !name.ends_with('@'))
            .map(|(name, w)| (w.provider.clone(), format!("{name}.service")))
            .collect();
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
                settings.explicit.state_dir.is_some(),
                "/var/lib/psi",
            ),
            state_dir_managed: !user && settings.state_dir == paths.state_dir,
            runtime_dir: Place::new(runtime_host, !default_socket, "/run/psi"),
            runtime_dir_managed: default_socket,
            socket_env: (!default_socket).then(|| settings.socket_path.display().to_string()),
            systemd_dir: Place::new(
                settings.systemd_dir.display().to_string(),
                settings.explicit.systemd_dir.is_some(),
                "/etc/containers/systemd",
            ),
            unit_dir: paths.unit_dir.clone(),
            podman_socket: Place::new(
                podman_host,
                settings.explicit.podman_socket.is_some(),
                "/run/podman/podman.sock",
            ),
            dbus_socket: Place::new(dbus_host, false, "/run/dbus/system_bus_socket"),
            workloads,
            infisical: infisical.is_some(),
            nitrokeyhsm_volume: nitrokey.map(|n| n.pcscd_volume.clone()),
            systemd_creds: settings.providers.systemd_creds.is_some(),
            cache,
            cache_hsm_volume: nitrokey
                .map(|n| n.pcscd_volume.clone())
                .unwrap_or_else(|| crate::config::NitrokeyConfig::default().pcscd_volume),
            ca_cert: infisical
                .and_then(|i| i.ca_cert.clone())
                .or_else(|| settings.ca_cert.clone()),
            socket_token_credential: matches!(
                settings.socket_token,
                Some((_, CredentialSource::CredentialsDirectory))
            ),
            tls_dirs: tls_dirs.into_iter().collect(),
            tmpfiles_dir: paths.tmpfiles_dir.clone(),
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
        // The key lives beside the config file (`config::CacheSettings::key_path`).
        if let Some(cache) = &mut self.cache {
            cache.key_path = Path::new(dir).join("cache.key");
        }
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

    /// The TPM backend's sealed key, when psi provisions it at first boot (`psi-cache-key`)
    /// and unseals it itself: system scope. A user's psi cannot read the host key, so the
    /// user scope keeps `LoadCredentialEncrypted=` (the user manager unseals it) and the key
    /// is made by hand with `psi cache init --backend tpm`.
    pub fn tpm_cache_key(&self) -> Option<&Path> {
        self.cache
            .as_ref()
            .filter(|c| c.backend == CacheBackend::Tpm && self.scope == Scope::System)
            .map(|c| c.key_path.as_path())
    }

    /// Whether psi's containers unseal with the host's systemd-creds key: the systemd-creds
    /// provider or the TPM cache key (system scope; a user's credentials are not sealed with
    /// the host key).
    pub fn uses_host_key(&self) -> bool {
        self.scope == Scope::System && (self.systemd_creds || self.tpm_cache_key().is_some())
    }

    /// Host units the appliance needs enabled beside its own: the Podman API socket, which
    /// setup and container-mode `--register` talk to.
    pub fn host_units(&self) -> Vec<&'static str> {
        if self.mode == Mode::Container || !self.setup_providers().is_empty() {
            vec![PODMAN_SOCKET_UNIT]
        } else {
            Vec::new()
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
    files.push(tmpfiles(spec));
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
        let enable = target == Target::Unit && self.text.contains("\n[Install]\n");
        GeneratedFile {
            target,
            name,
            text: self.text,
            enable,
        }
    }
}

/// What a psi process of the appliance needs from its `[Unit]` section.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    Serve,
    Setup,
    TlsRenew,
    CacheKey,
}

/// `[Unit]` lines of a psi process: network (system scope only: a user manager has no
/// `network-online.target`), the lookup service for setup (Podman's secret store calls it),
/// and pcscd for anything that opens the Nitrokey. Natively pcscd is the host's
/// (socket-activated), so only the order is kept; in container mode `pcscd.service` is the
/// sidecar quadlet, which must be started.
///
/// Serve and setup wait for the cache key's first-boot provisioning (`Wants=`: without a key
/// they still run, with the cache unavailable). Setup requires the Podman API socket and
/// the lookup service, and runs before the workloads whose secrets it registers; container
/// serve wants the API socket too (its directory is mounted, for `--register`).
fn unit_lines(spec: &ApplianceSpec, description: String, role: Role) -> Vec<String> {
    let mut after = Vec::new();
    let mut wants = Vec::new();
    let mut requires = Vec::new();
    let mut before = Vec::new();
    if spec.scope == Scope::System && !matches!(role, Role::CacheKey) {
        after.push("network-online.target".to_owned());
        wants.push("network-online.target".to_owned());
    }
    if matches!(role, Role::Serve | Role::Setup) && spec.tpm_cache_key().is_some() {
        after.push(CACHE_KEY_UNIT.to_owned());
        wants.push(CACHE_KEY_UNIT.to_owned());
    }
    match role {
        Role::Serve if spec.mode == Mode::Container => {
            after.push(PODMAN_SOCKET_UNIT.to_owned());
            wants.push(PODMAN_SOCKET_UNIT.to_owned());
        }
        Role::Setup => {
            after.extend([PODMAN_SOCKET_UNIT.to_owned(), SERVE_UNIT.to_owned()]);
            requires.extend([PODMAN_SOCKET_UNIT.to_owned(), SERVE_UNIT.to_owned()]);
        }
        Role::CacheKey => {
            before.push(SERVE_UNIT.to_owned());
            before.extend(spec.setup_providers().into_iter().map(setup_unit));
        }
        _ => {}
    }
    if spec.hsm_volume().is_some() && matches!(role, Role::Serve | Role::Setup) {
        after.push("pcscd.service".to_owned());
        if spec.mode == Mode::Container {
            wants.push("pcscd.service".to_owned());
        }
    }
    let mut lines = vec![format!("Description={description}")];
    for (key, units) in [
        ("After", after),
        ("Wants", wants),
        ("Requires", requires),
        ("Before", before),
    ] {
        if !units.is_empty() {
            lines.push(format!("{key}={}", units.join(" ")));
        }
    }
    lines
}

/// `[Unit]` lines of a provider's setup unit: [`unit_lines`], then `Before=` the workloads
/// whose secrets it registers, so on first boot (no drop-in yet) they wait for it.
fn setup_unit_lines(spec: &ApplianceSpec, provider: &str) -> Vec<String> {
    let mut lines = unit_lines(spec, setup_description(provider), Role::Setup);
    let before: Vec<&str> = spec
        .workloads
        .iter()
        .filter(|(p, _)| p == provider)
        .map(|(_, unit)| unit.as_str())
        .collect();
    if !before.is_empty() {
        lines.push(format!("Before={}", before.join(" ")));
    }
    lines
}

/// `[Unit]` lines of the first-boot key provisioning: only while the key is missing.
fn cache_key_unit_lines(spec: &ApplianceSpec, key: &Path) -> Vec<String> {
    let mut lines = unit_lines(spec, CACHE_KEY_DESCRIPTION.into(), Role::CacheKey);
    lines.push(format!("ConditionPathExists=!{}", key.display()));
    lines
}

/// The search permission a directory needs for the files in it to be read with `mode`:
/// execute wherever read is granted, and the owner (root, who writes them) always.
fn dir_mode(file_mode: u32) -> u32 {
    0o700 | file_mode & 0o777 | (file_mode & 0o444) >> 2
}

/// `ExecStartPre=` creating systemd-creds' host key when a container mounts it: the bind
/// mount fails on a host where nothing has created the key yet. `systemd-creds setup` leaves
/// an existing key alone.
fn host_key_lines(spec: &ApplianceSpec) -> Vec<String> {
    if spec.mode == Mode::Container && spec.uses_host_key() {
        vec!["ExecStartPre=systemd-creds setup".into()]
    } else {
        Vec::new()
    }
}

/// `psi.conf` for systemd-tmpfiles: every host directory the units mount or write, created
/// at boot before any unit starts (and by `psi systemd install` at once).
fn tmpfiles(spec: &ApplianceSpec) -> GeneratedFile {
    let mut dirs: Vec<(String, u32)> = vec![(spec.state_dir.host.clone(), 0o700)];
    if !spec.runtime_dir_managed {
        dirs.push((spec.runtime_dir.host.clone(), 0o755));
    }
    dirs.extend(
        spec.tls_dirs
            .iter()
            .map(|(dir, mode)| (dir.display().to_string(), *mode)),
    );
    let mut text = format!(
        "# Directories psi's units use.\n# Generated by psi; do not edit. Regenerate with: {}psi systemd install --mode {}{}\n",
        match spec.scope {
            Scope::System => "sudo ",
            Scope::User => "",
        },
        spec.mode.as_str(),
        match spec.mode {
            Mode::Native => "",
            Mode::Container => " --image IMAGE",
        }
    );
    for (dir, mode) in dirs {
        text.push_str(&format!("d {} {mode:04o} - - -\n", tmpfiles_path(&dir)));
    }
    GeneratedFile {
        target: Target::Tmpfiles,
        name: "psi.conf".into(),
        text,
        enable: false,
    }
}

/// A path as tmpfiles.d reads it: `%` is a specifier there, and whitespace separates fields.
fn tmpfiles_path(path: &str) -> String {
    let escaped = path.replace('%', "%%");
    if escaped.contains(char::is_whitespace) || escaped.contains('"') {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

/// `LoadCredentialEncrypted=` lines: the cache key (tpm backend) and the HSM PIN for serve
/// and setup (setup writes the cache; both may open the token), the socket token for serve.
///
/// In system scope the TPM cache key is not among them: psi unseals it itself (see the
/// module doc and [`ApplianceSpec::tpm_cache_key`]).
fn credential_lines(spec: &ApplianceSpec, role: Role) -> Vec<String> {
    let mut lines = Vec::new();
    if matches!(role, Role::TlsRenew | Role::CacheKey) {
        return lines;
    }
    if let Some(cache) = spec
        .cache
        .as_ref()
        .filter(|c| c.backend == CacheBackend::Tpm && spec.scope == Scope::User)
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
/// `psi serve`'s open-file limit: every connection is a descriptor, and systemd's default
/// soft limit (1,024) is too close to serve's 512 connections plus what providers open.
/// serve raises its soft limit to the hard one at start, wherever it runs (in a container,
/// to the limits Podman gives it, derived from its own).
const SERVE_LIMIT_NOFILE: &str = "LimitNOFILE=65536";
const TLS_DESCRIPTION: &str = "PSI TLS certificate renewal";
const CACHE_KEY_DESCRIPTION: &str = "PSI cache key provisioning";

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
