//! Native mode: the psi binary as plain services in the scope's unit directory.

use super::fragments::{
    cache_key_head, credential_lines, install_lines, serve_head, setup_head, tls_renew_head, Role,
    SERVE_LIMIT_NOFILE,
};
use super::{ApplianceSpec, GeneratedFile, Services, Target};
use crate::unitgen::shell_word;

/// This mode's renderers of psi's own services.
pub(super) const SERVICES: Services = Services {
    serve,
    setup,
    tls_renew,
    cache_key,
};

/// `ExecStart=` of psi with `words`, naming a non-default config file.
fn exec(spec: &ApplianceSpec, words: &str) -> String {
    let mut line = format!(
        "ExecStart={}",
        shell_word(&spec.psi_bin.display().to_string())
    );
    if let Some(config) = &spec.config_arg {
        line.push_str(&format!(
            " -c {}",
            shell_word(&config.display().to_string())
        ));
    }
    line.push(' ');
    line.push_str(words);
    line
}

/// `psi serve`, `Type=notify`: psi sends `READY=1` once its socket is bound, so units
/// ordered after it start when lookups work, not merely when the process exists.
fn serve(spec: &ApplianceSpec) -> GeneratedFile {
    let mut service = vec![
        "Type=notify".to_owned(),
        exec(spec, "serve"),
        "Restart=on-failure".into(),
        SERVE_LIMIT_NOFILE.into(),
    ];
    if spec.runtime_dir_managed {
        service.push("RuntimeDirectory=psi".into());
    }
    if spec.state_dir_managed {
        // The mode as psi creates it (systemd's default would be 0755).
        service.extend([
            "StateDirectory=psi".into(),
            "StateDirectoryMode=0700".into(),
        ]);
    }
    service.extend(credential_lines(spec, Role::Serve));
    serve_head(spec)
        .section("Service", service)
        .section("Install", install_lines(spec))
        .file(Target::Unit, "psi-secrets.service".into())
}

fn setup(spec: &ApplianceSpec, provider: &str) -> GeneratedFile {
    let mut service = vec![
        "Type=oneshot".to_owned(),
        "RemainAfterExit=yes".into(),
        exec(spec, &format!("setup --provider {provider}")),
    ];
    service.extend(credential_lines(spec, Role::Setup));
    setup_head(spec, provider)
        .section("Service", service)
        .section("Install", install_lines(spec))
        .file(Target::Unit, format!("psi-{provider}-setup.service"))
}

fn tls_renew(spec: &ApplianceSpec) -> GeneratedFile {
    tls_renew_head(spec)
        .section(
            "Service",
            vec!["Type=oneshot".into(), exec(spec, "infisical tls renew")],
        )
        // Also at every boot (see the container renderer).
        .section("Install", install_lines(spec))
        .file(Target::Unit, "psi-tls-renew.service".into())
}

/// `psi-cache-key.service`: `psi cache init --backend tpm` at first boot.
fn cache_key(spec: &ApplianceSpec, key: &std::path::Path) -> GeneratedFile {
    cache_key_head(spec, key)
        .section(
            "Service",
            vec![
                "Type=oneshot".into(),
                "RemainAfterExit=yes".into(),
                exec(spec, "cache init --backend tpm"),
            ],
        )
        .section("Install", install_lines(spec))
        .file(Target::Unit, "psi-cache-key.service".into())
}
