//! `psi install`: writes `containers.conf.d/psi.conf` so Podman's shell driver calls psi.

use std::path::PathBuf;

use crate::cli::InstallArgs;
use crate::config::Settings;
use crate::driver::Driver;
use crate::error::Result;
use crate::fsutil;
use crate::unitgen::driver_conf::{self, Client};

pub fn run(settings: &Settings, args: &InstallArgs) -> Result<()> {
    let driver = Driver::resolve(settings, args.client.map(Into::into))?;
    let spec = driver.conf();
    let text = driver_conf::render(&spec);
    // Also with --stdout: the printed commands name the token file, so it must exist.
    driver.write_token_file()?;
    if args.stdout {
        return super::write_stdout(text.as_bytes());
    }
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| settings.paths.containers_conf_d.join("psi.conf"));
    let dir = path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        fsutil::ensure_dir(&dir, 0o755)?;
        tracing::info!(dir = %dir.display(), "created directory");
    }
    fsutil::write_atomic(&path, text.as_bytes(), spec.mode())?;
    fsutil::ensure_dir(&settings.state_dir, 0o700)?;
    tracing::info!(path = %path.display(), socket = %settings.socket_path.display(), auth = settings.socket_token.is_some(), client = match spec.client { Client::Lean { .. } | Client::Psi { .. } => "psi", Client::Curl { .. } => "curl" }, "wrote Podman driver configuration");
    Ok(())
}
