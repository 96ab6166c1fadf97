//! The appliance's systemd units (`psi systemd install`, and `psi butane` which embeds the
//! same files): a spec of plain data built once from the settings, then pure renderers.
//!
//! | file | target | when |
//! |---|---|---|
//! | `psi-secrets.service` / `.container` | unit dir / quadlet dir | always |
//! | `psi-infisical-setup.service` / `.container` | unit dir / quadlet dir | infisical configured |
//! | `psi-infisical-refresh.service` + `.timer` | unit dir | and the cache is enabled with a backend |
//! | `psi-tls-renew.service` / `.container` + `.timer` | unit dir (timer always) | `providers.infisical.tls.certificates` non-empty |
//! | `psi-cache-key.service` / `.container` | unit dir / quadlet dir | system scope, the cache is enabled with the `tpm` backend |
//! | `psi.conf` | tmpfiles.d (system) / user-tmpfiles.d (user) | always |
//!
//! A fresh host needs nothing by hand. The tmpfiles.d file creates every host directory a
//! unit mounts or writes that nothing else creates (the state directory, a configured
//! socket's directory, the TLS output directories) before any unit starts; `psi systemd
//! install` also applies it at once. Units that mount systemd-creds' host key run
//! `systemd-creds setup` first (it creates the key only when it is missing). In system
//! scope a TPM-backed cache provisions its own key at first boot (`psi-cache-key`, skipped
//! once the key exists), and psi unseals that key itself with systemd-creds instead of
//! through `LoadCredentialEncrypted=`: systemd fails a unit whose credential file is missing
//! (status 243/CREDENTIALS), while psi serves live lookups and reports the cache
//! "unavailable". A user's psi cannot read the host key: there the key is made by hand
//! (`psi cache init --backend tpm`) and the user manager unseals it.
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
//!
//! Files: `spec` builds the [`ApplianceSpec`] from the settings (the only part that reads
//! them); `native` and `container` render each mode's services from the shared
//! `fragments`; `timers` and `tmpfiles` render what both modes have alike; [`appliance`]
//! here puts them together.

mod container;
mod fragments;
mod native;
mod spec;
mod timers;
mod tmpfiles;

use std::path::Path;

pub use spec::{ApplianceSpec, CacheSpec, Mode, Place};

/// Where a generated file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The quadlet directory (`systemd_dir`): `.container` files.
    Quadlet,
    /// The scope's unit directory: plain services (natively all of them, in container mode
    /// the refresh services) and every timer (quadlet reads no timers).
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
    /// the services but the refresh service, which its timer starts; in both modes the
    /// timers). Quadlet units are enabled by their own
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

/// The refresh timer of a provider that discovers secrets, when the cache is on
/// (`timers::refresh_timer`).
pub fn refresh_timer_unit(provider: &str) -> String {
    format!("psi-{provider}-refresh.timer")
}

/// The daily TLS renewal timer (`timers::tls_timer`).
pub const TLS_RENEW_TIMER: &str = "psi-tls-renew.timer";

/// The units a workload's secrets come from, which its drop-in orders it after: the lookup
/// service and the setup unit that registers them.
pub fn secret_units(provider: &str) -> Vec<String> {
    vec![SERVE_UNIT.to_owned(), setup_unit(provider)]
}

/// The renderers of psi's own services, one set a mode (`native`, `container`): which of
/// them the appliance has does not depend on the mode, only how each is written.
struct Services {
    serve: fn(&ApplianceSpec) -> GeneratedFile,
    setup: fn(&ApplianceSpec, &str) -> GeneratedFile,
    tls_renew: fn(&ApplianceSpec) -> GeneratedFile,
    cache_key: fn(&ApplianceSpec, &Path) -> GeneratedFile,
}

/// Every file of the appliance, sorted by (target, name).
pub fn appliance(spec: &ApplianceSpec) -> Vec<GeneratedFile> {
    let services = match spec.mode {
        Mode::Native => &native::SERVICES,
        Mode::Container => &container::SERVICES,
    };
    let mut files = vec![(services.serve)(spec), tmpfiles::tmpfiles(spec)];
    for provider in spec.setup_providers() {
        files.push((services.setup)(spec, provider));
        if let Some(cache) = &spec.cache {
            files.push(timers::refresh_service(spec, provider));
            files.push(timers::refresh_timer(spec, cache, provider));
        }
    }
    if !spec.tls_dirs.is_empty() {
        files.push((services.tls_renew)(spec));
        files.push(timers::tls_timer(spec));
    }
    if let Some(key) = spec.tpm_cache_key() {
        files.push((services.cache_key)(spec, key));
    }
    files.sort_by(|a, b| (a.target, &a.name).cmp(&(b.target, &b.name)));
    files
}
