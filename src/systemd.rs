//! Talking to systemd: `daemon-reload` after psi changed unit files or drop-ins, enabling or
//! starting the appliance's units, reading a unit's properties (the TLS renewal timer's in
//! `psi infisical tls status`), and applying its tmpfiles.d file. Through `systemctl` and
//! `systemd-tmpfiles`, so it works the same natively and in a container that reaches the
//! host's manager (`unitgen::units`), and psi needs no D-Bus library.

use std::ffi::OsStr;
use std::path::Path;

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
    run(scope, "systemctl", args.iter().map(OsStr::new))
        .await
        .map(drop)
}

/// `systemctl [--user] show --property=P,... -- UNIT`: the properties as systemd reports
/// them, `(name, value)` in its order (a unit systemd does not know has empty values).
pub async fn show(scope: Scope, unit: &str, properties: &[&str]) -> Result<Vec<(String, String)>> {
    let property = format!("--property={}", properties.join(","));
    let args = ["show", property.as_str(), "--", unit];
    let output = run(scope, "systemctl", args.map(OsStr::new)).await?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// `systemd-tmpfiles [--user] --create FILE`: the directories it lists, now.
pub async fn tmpfiles_create(scope: Scope, file: &Path) -> Result<()> {
    run(
        scope,
        "systemd-tmpfiles",
        [OsStr::new("--create"), file.as_os_str()],
    )
    .await
    .map(drop)
}

/// `PROGRAM [--user] ARGS...`: its output, or an error with its stderr unless it succeeds.
async fn run<'a>(
    scope: Scope,
    program: &str,
    args: impl IntoIterator<Item = &'a OsStr>,
) -> Result<process::Output> {
    let mut all: Vec<&OsStr> = Vec::new();
    if scope == Scope::User {
        all.push(OsStr::new("--user"));
    }
    all.extend(args);
    let line = std::iter::once(OsStr::new(program))
        .chain(all.iter().copied())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let output = process::run(OsStr::new(program), all.iter().copied(), b"")
        .await
        .map_err(|err| err.context(line.clone()))?;
    if output.success {
        Ok(output)
    } else {
        Err(Error::Subprocess(format!(
            "{line} failed: {}",
            output.stderr.trim()
        )))
    }
}
