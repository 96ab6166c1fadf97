//! Talking to systemd: `daemon-reload` after psi changed unit files or drop-ins. Through
//! `systemctl`, so it works the same natively and in a container with the host's systemd
//! bus mounted, and psi needs no D-Bus library.

use std::ffi::OsStr;

use crate::config::Scope;
use crate::error::{Error, Result};
use crate::process;

/// `systemctl [--user] daemon-reload`. A host without systemd (a build container, a test
/// sandbox) is an error here; callers that can live without the reload log it as a warning.
pub async fn daemon_reload(scope: Scope) -> Result<()> {
    let args: &[&str] = match scope {
        Scope::System => &["daemon-reload"],
        Scope::User => &["--user", "daemon-reload"],
    };
    let output = process::run(OsStr::new("systemctl"), args.iter().copied(), b"")
        .await
        .map_err(|err| err.context("systemctl daemon-reload"))?;
    if output.success {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "systemctl {} failed: {}",
            args.join(" "),
            output.stderr.trim()
        )))
    }
}
