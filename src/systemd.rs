//! Talking to systemd: `daemon-reload` after psi changed unit files or drop-ins, and
//! enabling or starting the appliance's units. Through `systemctl`, so it works the same
//! natively and in a container with the host's systemd bus mounted, and psi needs no D-Bus
//! library.

use std::ffi::OsStr;

use crate::config::Scope;
use crate::error::{Error, Result};
use crate::process;

/// `systemctl [--user] daemon-reload`. A host without systemd (a build container, a test
/// sandbox) is an error here; callers that can live without the reload log it as a warning.
pub async fn daemon_reload(scope: Scope) -> Result<()> {
    systemctl(scope, &["daemon-reload"]).await
}

/// `systemctl [--user] ARGS...`; a failure carries systemctl's stderr.
pub async fn systemctl(scope: Scope, args: &[&str]) -> Result<()> {
    let mut all: Vec<&str> = Vec::with_capacity(args.len() + 1);
    if scope == Scope::User {
        all.push("--user");
    }
    all.extend_from_slice(args);
    let output = process::run(OsStr::new("systemctl"), all.iter().copied(), b"")
        .await
        .map_err(|err| err.context(format!("systemctl {}", all.join(" "))))?;
    if output.success {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "systemctl {} failed: {}",
            all.join(" "),
            output.stderr.trim()
        )))
    }
}
