//! Container mode: psi's image as quadlet `.container` units in the quadlet directory.
//!
//! Every host path is mounted where psi, running as root in its container, looks for it:
//! the system scope's defaults, or the same path when the config file names it (see
//! [`super::Place`]). So a user's rootless appliance mounts `~/.config/psi` at `/etc/psi`,
//! `~/.local/share/psi` at `/var/lib/psi`, `%t/psi` at `/run/psi` and
//! `%t/podman/podman.sock` at `/run/podman/podman.sock`, and psi inside never mixes the two
//! scopes (the original's bug 6).
//!
//! Readiness: `Notify=true` hands the service's notify socket to psi, which sends
//! `READY=1` once its socket is bound: setup units ordered after `psi-secrets.service` start
//! as soon as lookups work. `Notify=healthy` would wait for the first health check (up to
//! `HealthInterval`, and Podman 5 only) for the same knowledge. The health check then only
//! watches a running server: `psi healthcheck` (no curl in the image) asks `/healthz`, and
//! `HealthOnFailure=kill` turns a wedged server into a restart (`Restart=on-failure`). It
//! does not add `--cache`: an unusable cache degrades lookups to the providers, and killing
//! the server over it would turn that into an outage.

use super::fragments::{
    cache_key_head, credential_lines, host_key_lines, install_lines, serve_head, setup_head,
    tls_renew_head, Role, SERVE_LIMIT_NOFILE,
};
use super::{ApplianceSpec, GeneratedFile, Place, Services, Target};

/// Where the service's credentials directory (`%d`) appears in the container.
const CREDENTIALS_INSIDE: &str = "/run/credentials";

/// This mode's renderers of psi's own services.
pub(super) const SERVICES: Services = Services {
    serve,
    setup,
    tls_renew,
    cache_key,
};

fn volume(place: &Place, options: &str) -> String {
    format!("Volume={}:{}{options}", place.host, place.inside)
}

/// The directory holding a socket, mounted rather than the socket itself: a bind-mounted
/// socket file keeps the old inode when its service re-creates it (a restarted
/// `podman.socket`), and the container would talk to a dead socket until it restarts.
fn socket_dir(place: &Place) -> Place {
    let parent = |p: &str| {
        std::path::Path::new(p)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "/".into())
    };
    Place {
        host: parent(&place.host),
        inside: parent(&place.inside),
    }
}

/// The host's systemd as `systemctl` in the container reaches it (module doc of `units`).
fn systemd_lines(spec: &ApplianceSpec) -> [String; 2] {
    [
        volume(&spec.dbus_socket, ""),
        "Volume=/run/systemd/system:/run/systemd/system:ro".into(),
    ]
}

/// `[Container]` lines every psi container has: name, image, command, host network (the
/// providers are remote services and the socket is a bind mount anyway), the config and
/// state directories; then what `role` needs; then the shared extras (CA, pcscd,
/// credentials) and their environment.
fn container_lines(spec: &ApplianceSpec, name: &str, exec: &str, role: Role) -> Vec<String> {
    let mut lines = vec![
        format!("ContainerName={name}"),
        format!("Image={}", spec.image.as_deref().unwrap_or_default()),
        format!("Exec={exec}"),
        "Network=host".into(),
        // An unconfined container domain: psi reads the Podman socket, the D-Bus socket and
        // the host directories it writes to without relabelling them.
        "SecurityLabelType=container_runtime_t".into(),
    ];
    if matches!(role, Role::Serve) {
        lines.extend([
            "Notify=true".to_owned(),
            "HealthCmd=psi healthcheck".into(),
            "HealthInterval=30s".into(),
            "HealthRetries=10".into(),
            "HealthStartPeriod=60s".into(),
            "HealthTimeout=5s".into(),
            "HealthOnFailure=kill".into(),
        ]);
    }
    // The cache key provisioning writes the sealed key next to the config.
    let config_options = if matches!(role, Role::CacheKey) {
        ""
    } else {
        ":ro"
    };
    lines.push(volume(&spec.config_dir, config_options));
    lines.push(volume(&spec.state_dir, ":Z"));
    if spec.uses_host_key() && !matches!(role, Role::TlsRenew) {
        // systemd-creds in the container seals and unseals with the host's key and TPM: the
        // host key is bound to the machine ID, so both come from the host (read-only, not
        // relabelled: the host's own systemd keeps using them). A host without a TPM simply
        // has no device to add.
        lines.extend([
            "Volume=/etc/machine-id:/etc/machine-id:ro".to_owned(),
            "Volume=/var/lib/systemd/credential.secret:/var/lib/systemd/credential.secret:ro"
                .into(),
            "AddDevice=-/dev/tpmrm0".into(),
        ]);
    }
    // Podman's API socket directory (not relabelled: Podman's own socket stays its own).
    let podman = volume(&socket_dir(&spec.podman_socket), "");
    match role {
        Role::Serve => lines.extend([volume(&spec.runtime_dir, ":Z"), podman]),
        Role::Setup => {
            lines.extend([volume(&spec.systemd_dir, ":Z"), podman]);
            lines.extend(systemd_lines(spec));
        }
        // The certificate directories are shared with the services using them: mounted
        // without relabelling, which would take them from those services. Hooks reach the
        // host's systemd.
        Role::TlsRenew => {
            lines.extend(
                spec.tls_dirs
                    .iter()
                    .map(|(dir, _)| volume(&Place::same(dir), "")),
            );
            lines.extend(systemd_lines(spec));
        }
        Role::CacheKey => {}
    }
    let mut env = Vec::new();
    if let Some(ca) = &spec.ca_cert {
        lines.push(volume(&Place::same(ca), ":ro"));
        env.push(format!("SSL_CERT_FILE={}", ca.display()));
    }
    if let Some(pcscd) = spec
        .hsm_volume()
        .filter(|_| matches!(role, Role::Serve | Role::Setup))
    {
        lines.push(format!("Volume={pcscd}:/run/pcscd:rw"));
    }
    if !credential_lines(spec, role).is_empty() {
        lines.push(format!("Volume=%d:{CREDENTIALS_INSIDE}:ro"));
        env.push(format!("CREDENTIALS_DIRECTORY={CREDENTIALS_INSIDE}"));
    }
    if let Some(config) = &spec.config_env {
        env.push(format!("PSI_CONFIG={config}"));
    }
    if let Some(socket) = &spec.socket_env {
        env.push(format!("PSI_SOCKET={socket}"));
    }
    lines.extend(env.into_iter().map(|e| format!("Environment={e}")));
    lines
}

fn serve(spec: &ApplianceSpec) -> GeneratedFile {
    let mut service = host_key_lines(spec);
    service.extend(["Restart=on-failure".to_owned(), SERVE_LIMIT_NOFILE.into()]);
    // The host side of the socket directory, for the default socket (`/run/psi`, `%t/psi`).
    if spec.runtime_dir_managed {
        service.push("RuntimeDirectory=psi".into());
    }
    service.extend(credential_lines(spec, Role::Serve));
    serve_head(spec)
        .section(
            "Container",
            container_lines(spec, "psi-secrets", "serve", Role::Serve),
        )
        .section("Service", service)
        .section("Install", install_lines(spec))
        .file(Target::Quadlet, "psi-secrets.container".into())
}

fn setup(spec: &ApplianceSpec, provider: &str) -> GeneratedFile {
    let name = format!("psi-{provider}-setup");
    let mut service = vec!["Type=oneshot".to_owned(), "RemainAfterExit=yes".into()];
    service.extend(host_key_lines(spec));
    service.extend(credential_lines(spec, Role::Setup));
    setup_head(spec, provider)
        .section(
            "Container",
            container_lines(
                spec,
                &name,
                &format!("setup --provider {provider}"),
                Role::Setup,
            ),
        )
        .section("Service", service)
        .section("Install", install_lines(spec))
        .file(Target::Quadlet, format!("{name}.container"))
}

fn tls_renew(spec: &ApplianceSpec) -> GeneratedFile {
    tls_renew_head(spec)
        .section(
            "Container",
            container_lines(spec, "psi-tls-renew", "infisical tls renew", Role::TlsRenew),
        )
        .section("Service", vec!["Type=oneshot".into()])
        // Also at every boot: the timer's first daily run can be a day away (and `Persistent=`
        // catches up only runs it missed), so a fresh host would wait that long for its
        // certificates.
        .section("Install", install_lines(spec))
        .file(Target::Quadlet, "psi-tls-renew.container".into())
}

/// `psi-cache-key.container`: `psi cache init --backend tpm` at first boot, sealing a new key
/// with the host's systemd-creds (TPM2 where present, else the host key).
fn cache_key(spec: &ApplianceSpec, key: &std::path::Path) -> GeneratedFile {
    let mut service = vec!["Type=oneshot".to_owned(), "RemainAfterExit=yes".into()];
    service.extend(host_key_lines(spec));
    cache_key_head(spec, key)
        .section(
            "Container",
            container_lines(
                spec,
                "psi-cache-key",
                "cache init --backend tpm",
                Role::CacheKey,
            ),
        )
        .section("Service", service)
        .section("Install", install_lines(spec))
        .file(Target::Quadlet, "psi-cache-key.container".into())
}
