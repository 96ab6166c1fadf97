//! `psi butane`: prints a Butane config (or, with `--ignition`, the Ignition JSON Butane would
//! make of it) that provisions psi on a Fedora CoreOS machine at first boot.
//!
//! The provisioned machine is always system scope, whoever runs this command: Ignition writes
//! `/etc` as root. So target paths come from the system scope table and the config file's own
//! keys (`state_dir`, `systemd_dir`, `socket_path`), never from this host's user defaults or
//! `--socket`, which describe where psi runs here, not there.
//!
//! The output goes to stdout only; warnings (credentials in the output, a missing config file)
//! go to stderr through the log.

use std::path::{Path, PathBuf};

use crate::cli::{ButaneArgs, ConfigFileMode};
use crate::config::{Scope, ScopePaths, Settings};
use crate::error::{Error, Result};
use crate::state::StateDir;
use crate::unitgen::butane::{self, IgnitionSpec, Provision, ProvisionFile, ProvisionUnit};
use crate::unitgen::driver_conf::{self, Client, DriverConf};
use crate::unitgen::pcscd::{self, Pcscd};
use crate::unitgen::units::{appliance, ApplianceSpec, Mode, Target};

/// Where native mode expects the psi binary: FCOS's `/usr` is read-only, `/usr/local` is not.
pub const NATIVE_BINARY: &str = "/usr/local/bin/psi";

const CONFIG_WARNING: &str = "\
CREDENTIALS: psi's config.yaml, embedded as given. It may hold the Infisical client secret,
the Nitrokey HSM PIN and the socket token in plain text, and anyone who can read this
config (user data of a cloud instance, a provisioning server) can read them. Prefer to keep
them out of it: seal each on the machine with systemd-creds encrypt and pass it with
LoadCredentialEncrypted= (psi reads $CREDENTIALS_DIRECTORY/<name> before the config file).";

pub fn run(settings: &Settings, args: &ButaneArgs) -> Result<()> {
    let config_text = match args.config_file {
        ConfigFileMode::Embed if settings.config_found => Some(
            crate::fsutil::read_capped_text(&settings.config_path, crate::fsutil::CONFIG)
                .map_err(|err| Error::Io {
                    context: format!("cannot read {}", settings.config_path.display()),
                    source: err,
                })?
                .to_string(),
        ),
        ConfigFileMode::Embed => {
            tracing::warn!(path = %settings.config_path.display(), "no config file: none embedded; psi starts with built-in defaults");
            None
        }
        ConfigFileMode::Reference => None,
    };
    let mut provision = provision(
        settings,
        args.mode,
        args.config_file,
        config_text.as_deref(),
    )?;
    let (files, units) = appliance_files(settings, args.mode, &args.image)?;
    provision.files.extend(files);
    provision.units.extend(units);

    let text = if args.ignition {
        // JSON has no comments: what the Butane file says above an entry goes to stderr.
        for file in &provision.files {
            if let Some(comment) = &file.comment {
                tracing::warn!(path = %file.path.display(), "{}", comment.replace('\n', " "));
            }
        }
        for comment in &provision.comments {
            tracing::warn!("{}", comment.replace('\n', " "));
        }
        let spec = match args.spec.as_str() {
            "3.3.0" => IgnitionSpec::V3_3_0,
            _ => IgnitionSpec::V3_4_0,
        };
        butane::ignition(&provision, spec)
    } else {
        butane::butane(&provision, &args.variant, &args.butane_version)
    };
    super::write_stdout(text.as_bytes())
}

/// The files psi's own configuration implies: psi.conf (and the token file of native mode's
/// psi client), the config file (or a note to place it), the pcscd quadlets with the Nitrokey
/// HSM. `config_text` is the file to embed.
pub fn provision(
    settings: &Settings,
    mode: Mode,
    config_file: ConfigFileMode,
    config_text: Option<&str>,
) -> Result<Provision> {
    let system = ScopePaths::new(Scope::System, 0, None, None)?;
    let explicit = &settings.explicit;
    let state_dir = explicit
        .state_dir
        .clone()
        .unwrap_or(system.state_dir.clone());
    let systemd_dir = explicit
        .systemd_dir
        .clone()
        .unwrap_or(system.systemd_dir.clone());
    let socket = explicit
        .socket_path
        .clone()
        .unwrap_or(system.socket.clone());
    let token = settings.socket_token.as_ref().map(|(t, _)| t.expose());

    let mut p = Provision {
        directories: vec![
            (system.config_dir.clone(), 0o700),
            (state_dir.clone(), 0o700),
        ],
        ..Provision::default()
    };

    // The host's Podman runs the driver commands. In container mode the host has no psi
    // binary, so curl (as the original), and a token, if any, sits in psi.conf itself. In
    // native mode `psi client` keeps it in a 0600 file in the state directory instead.
    let token_file = StateDir::new(&state_dir).socket_token_path();
    let client = match mode {
        Mode::Container => Client::Curl { token },
        Mode::Native => Client::Psi {
            binary: Path::new(NATIVE_BINARY),
            token_file: token.map(|_| token_file.as_path()),
        },
    };
    let conf = DriverConf {
        socket: &socket,
        client,
    };
    let curl_token = matches!(client, Client::Curl { token: Some(_) });
    p.files.push(ProvisionFile {
        path: system.containers_conf_d.join("psi.conf"),
        mode: conf.mode(),
        contents: driver_conf::render(&conf),
        comment: curl_token
            .then(|| "CREDENTIALS: holds the socket token (curl sends it to psi serve).".into()),
    });
    if let (Mode::Native, Some(token)) = (mode, token) {
        p.files.push(ProvisionFile {
            path: token_file.clone(),
            mode: 0o600,
            contents: token.to_owned(),
            comment: Some("CREDENTIALS: the socket token psi client sends to psi serve.".into()),
        });
    }
    if mode == Mode::Native {
        p.comments.push(format!(
            "Native mode: the psi binary must be at {NATIVE_BINARY} on the machine\n\
             (this config does not carry it)."
        ));
    }

    match (config_file, config_text) {
        (ConfigFileMode::Embed, Some(text)) => p.files.push(ProvisionFile {
            path: system.config.clone(),
            mode: 0o600,
            contents: text.to_owned(),
            comment: Some(CONFIG_WARNING.to_owned()),
        }),
        (ConfigFileMode::Reference, _) => p.comments.push(format!(
            "{} is not embedded (--config-file reference): place it on the machine,\n\
             owned by root with mode 0600, before psi's units start.",
            system.config.display()
        )),
        (ConfigFileMode::Embed, None) => {}
    }

    if let Some(nitrokey) = &settings.providers.nitrokeyhsm {
        p.files
            .extend(pcscd_files(&nitrokey.pcscd_volume, &systemd_dir));
    }
    Ok(p)
}

/// The pcscd sidecar's quadlets, in system scope.
fn pcscd_files(volume: &str, systemd_dir: &Path) -> [ProvisionFile; 2] {
    let spec = Pcscd {
        volume,
        scope: Scope::System,
    };
    [
        ProvisionFile {
            path: systemd_dir.join(spec.volume_file()),
            mode: 0o644,
            contents: pcscd::volume_unit(&spec),
            comment: None,
        },
        ProvisionFile {
            path: systemd_dir.join(pcscd::CONTAINER_FILE),
            mode: 0o644,
            contents: pcscd::container_unit(&spec),
            comment: Some(format!(
                "{} is never pulled: build it on the machine with\n\
                 `sudo psi nitrokeyhsm setup-pcscd --build-only` before pcscd.service starts.",
                pcscd::IMAGE
            )),
        },
    ]
}

/// psi's own units in `mode` (quadlets running `image`, or native units running
/// [`NATIVE_BINARY`]) and its tmpfiles.d file: the files `psi systemd install` writes, byte
/// for byte, and the units to enable. Quadlet units are enabled by their own `[Install]`
/// section when the quadlet generator runs at boot, so only native services, the timers and
/// the host units the appliance needs (the Podman API socket) are listed.
fn appliance_files(
    settings: &Settings,
    mode: Mode,
    image: &str,
) -> Result<(Vec<ProvisionFile>, Vec<ProvisionUnit>)> {
    let spec = ApplianceSpec::from_settings(settings, mode, Some(image), Path::new(NATIVE_BINARY))?
        .with_default_config();
    let mut files = Vec::new();
    let mut units: Vec<ProvisionUnit> = spec
        .host_units()
        .into_iter()
        .map(|name| ProvisionUnit {
            name: name.into(),
            enabled: true,
        })
        .collect();
    for file in appliance(&spec) {
        let dir = match file.target {
            Target::Quadlet => PathBuf::from(&spec.systemd_dir.host),
            Target::Unit => spec.unit_dir.clone(),
            Target::Tmpfiles => spec.tmpfiles_dir.clone(),
        };
        if file.enable {
            units.push(ProvisionUnit {
                name: file.name.clone(),
                enabled: true,
            });
        }
        files.push(ProvisionFile {
            path: dir.join(&file.name),
            mode: 0o644,
            contents: file.text,
            comment: None,
        });
    }
    Ok((files, units))
}
