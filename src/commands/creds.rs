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
use crate::server::routes::MAX_BODY;
use crate::state::StateDir;

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
    let value = super::read_stdin(MAX_BODY)?;
    if value.is_empty() {
        return Err(Error::Usage("no value on stdin: pipe the secret in, e.g. printf %s \"$VALUE\" | psi creds store NAME".into()));
    }
    let mapping = provider
        .seal(&name, &value)
        .await
        .map_err(|e| e.context(format!("seal {name}")))?;
    let bytes = mapping.to_bytes();
    if args.register {
        return super::register(settings, &name, &bytes, creds::NAME).await;
    }
    let state = StateDir::new(&settings.state_dir);
    state.write_mapping(&name, &bytes)?;
    let path = state.mapping_path(&name);
    tracing::info!(event = "secret.store", secret_id = %name, provider = creds::NAME, outcome = "success", path = %path.display(), "sealed");
    eprintln!(
        "Sealed {name} into {}.\nRegister it with Podman: podman secret create --driver shell {name} {}\n(or next time use --register, which leaves no copy under the name)",
        path.display(),
        path.display()
    );
    Ok(())
}
