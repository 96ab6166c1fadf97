//! Native mode: the psi binary as plain services in the scope's unit directory.

use super::fragments::{
    cache_key_unit_lines, credential_lines, install_lines, setup_unit_lines, unit_lines, Role,
    UnitText, SERVE_DESCRIPTION, SERVE_LIMIT_NOFILE, TLS_DESCRIPTION,
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
    UnitText::new(spec, "psi's secret lookup service")
        .section(
            "Unit",
            unit_lines(spec, SERVE_DESCRIPTION.into(), Role::Serve),
        )
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
    UnitText::new(spec, &format!("psi's {provider} secrets setup"))
        .section("Unit", setup_unit_lines(spec, provider))
        .section("Service", service)
        .section("Install", install_lines(spec))
        .file(Target::Unit, format!("psi-{provider}-setup.service"))
}

fn tls_renew(spec: &ApplianceSpec) -> GeneratedFile {
    UnitText::new(
        spec,
        "psi's TLS certificate renewal (run by psi-tls-renew.timer)",
    )
    .section(
        "Unit",
        unit_lines(spec, TLS_DESCRIPTION.into(), Role::TlsRenew),
    )
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
    UnitText::new(spec, "psi's cache key, provisioned at first boot")
        .section("Unit", cache_key_unit_lines(spec, key))
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
