//! `psi secret store|lookup|delete|list`: the shell driver as one process per call, with
//! `SECRET_ID` from the environment. Same resolver and audit events as `psi serve`.

use crate::cli::SecretCommand;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::resolver::Resolver;
use crate::secret::{secret_id_from_env, SecretId};
use crate::server::routes::MAX_BODY;

pub async fn run(settings: &Settings, command: SecretCommand) -> Result<()> {
    let resolver = Resolver::from_settings(settings)?;
    match command {
        SecretCommand::Store => {
            let id = secret_id()?;
            let body = super::read_stdin(MAX_BODY)?;
            resolver.store(&id, &body).await
        }
        SecretCommand::Lookup => {
            let id = secret_id()?;
            let value = resolver.lookup(&id).await?;
            super::write_stdout(value.expose())
        }
        SecretCommand::Delete => resolver.delete(&secret_id()?).await,
        SecretCommand::List => {
            let mut text = String::new();
            for id in resolver.list().await? {
                text.push_str(&id);
                text.push('\n');
            }
            super::write_stdout(text.as_bytes())
        }
    }
}

fn secret_id() -> Result<SecretId> {
    let raw = secret_id_from_env().map_err(Error::Usage)?.ok_or_else(|| {
        Error::Usage(
            "SECRET_ID environment variable not set (Podman sets it for driver commands)".into(),
        )
    })?;
    SecretId::parse(&raw).map_err(Error::InvalidId)
}
