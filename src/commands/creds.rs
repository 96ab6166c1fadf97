//! `psi creds store NAME [--register]`: seal stdin with systemd-creds. Without `--register`
//! the mapping goes to `state_dir/NAME`; with it, the mapping is registered as Podman secret
//! NAME (`podman secret create --driver shell NAME -`, or the Podman API where there is no
//! podman command), so Podman's store call (through `psi serve`) files it under Podman's ID
//! and no copy is left under the name.

use crate::cli::{CredsCommand, CredsStoreArgs};
use crate::config::{Settings, WithKey};
use crate::error::{Error, Result};
use crate::provider::creds::{self, SystemdCreds};
use crate::secret::SecretId;

pub async fn run(settings: &Settings, command: CredsCommand) -> Result<()> {
    match command {
        CredsCommand::Store(args) => store(settings, &args).await,
    }
}

async fn store(settings: &Settings, args: &CredsStoreArgs) -> Result<()> {
    let name = SecretId::parse(&args.name).map_err(|e| Error::Usage(format!("NAME: {e}")))?;
    let config = settings.providers.systemd_creds.as_ref().ok_or_else(|| Error::Config {
        path: settings.config_path.clone(),
        message: "providers: systemd-creds is not configured; add 'systemd-creds: {}' under providers".into(),
    })?;
    let with_key = match &args.with_key {
        Some(text) => WithKey::parse(text).map_err(|e| Error::Usage(format!("--with-key: {e}")))?,
        None => config.with_key,
    };
    let provider = SystemdCreds::new("systemd-creds".into(), with_key, config.tpm2_pcrs.clone());
    let value = super::stdin_value("creds")?;
    let mapping = provider
        .seal(&name, &value)
        .await
        .map_err(|e| e.context(format!("seal {name}")))?;
    super::keep_sealed(
        settings,
        &name,
        &mapping.to_bytes(),
        creds::NAME,
        args.register,
    )
    .await
}
