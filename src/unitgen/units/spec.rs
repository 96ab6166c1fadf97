//! The appliance spec: plain data built once from the settings and the command's flags
//! (mode, image, psi binary), and the questions the renderers ask of it. Everything that
//! reads [`Settings`] is here; the renderers beside it read only the spec.

use std::path::{Path, PathBuf};

use super::PODMAN_SOCKET_UNIT;
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

    pub(super) fn same(path: &Path) -> Place {
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
    /// The systemd-creds sealed key (`tpm`): provisioned by `psi-cache-key` in system scope,
    /// loaded with `LoadCredentialEncrypted=psi-cache-key:<this>` in user scope.
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
    /// psi's state directory (mappings, cache): setup and serve write it.
    pub state_dir: Place,
    /// Natively `StateDirectory=psi`: only for the system scope's default `/var/lib/psi`
    /// (a user's `StateDirectory=` is `~/.local/state`, not psi's `~/.local/share/psi`).
    pub state_dir_managed: bool,
    /// The directory of the serve socket.
    pub runtime_dir: Place,
    /// `RuntimeDirectory=psi` when the socket is the scope's default (`/run/psi`,
    /// `$XDG_RUNTIME_DIR/psi`); a configured socket's directory is made by the tmpfiles.d
    /// file instead.
    pub runtime_dir_managed: bool,
    /// `PSI_SOCKET` for psi in its container when the socket is not the default.
    pub socket_env: Option<String>,
    /// The quadlet directory: container mode's units, and the workloads' drop-ins setup writes.
    pub systemd_dir: Place,
    /// The scope's directory for plain units ([`Target::Unit`](super::Target::Unit)).
    pub unit_dir: PathBuf,
    /// The Podman API socket (setup talks to it; so does `--register` in psi-secrets).
    pub podman_socket: Place,
    /// The D-Bus socket through which `systemctl` in psi's containers reaches the host's
    /// manager (the user's own for user scope).
    pub dbus_socket: Place,
    /// Workloads of discovering providers as (provider, service): setup runs before them.
    /// Template workloads (`name@`) are left out: only their instances are units.
    pub workloads: Vec<(String, String)>,
    /// Infisical is configured: the one provider that discovers secrets, so it gets setup units.
    pub infisical: bool,
    /// `providers.nitrokeyhsm.pcscd_volume` when the provider is configured.
    pub nitrokeyhsm_volume: Option<String>,
    /// The systemd-creds provider is configured (system scope: its containers unseal with
    /// the host's key).
    pub systemd_creds: bool,
    /// `None` when the cache is off or has no backend.
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
    /// `providers.infisical.tls.renew_randomized_delay`: the renewal timer's spread.
    pub tls_renew_delay: String,
    /// The scope's tmpfiles.d directory ([`Target::Tmpfiles`](super::Target::Tmpfiles)).
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
            tls_renew_delay: infisical
                .map_or("1h", |i| i.tls.renew_randomized_delay.as_str())
                .to_owned(),
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

/// The search permission a directory needs for the files in it to be read with `mode`:
/// execute wherever read is granted, and the owner (root, who writes them) always.
fn dir_mode(file_mode: u32) -> u32 {
    0o700 | file_mode & 0o777 | (file_mode & 0o444) >> 2
}
