//! `psi infisical ...`: operator tools over the Infisical client.
//!
//! - `login [--cached]`: authenticates every configured auth and says which work (a fresh
//!   login each, unless `--cached` accepts a usable cached token);
//! - `env --project P`: one folder's secrets as `export` lines, `KEY=value` lines or JSON;
//! - `write-file NAME OUTPUT --project P`: one secret into a file, atomically, its mode set
//!   at creation.
//!
//! Fixes of the original's versions: `login` really contacts Infisical, `env` quotes every
//! byte correctly for the shell (and refuses what `KEY=value` cannot carry), and
//! `write-file` never leaves a world-readable or half-written file.

use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

use crate::cli::{
    EnvFormat, InfisicalCommand, InfisicalEnvArgs, InfisicalLoginArgs, InfisicalWriteFileArgs,
};
use crate::config::{InfisicalConfig, Settings};
use crate::error::{Error, Result, ResultExt};
use crate::fsutil;
use crate::provider::infisical::{self, Infisical};

pub async fn run(mut settings: Settings, command: InfisicalCommand) -> Result<()> {
    match command {
        InfisicalCommand::Login(args) => login(&settings, &args).await,
        InfisicalCommand::Env(args) => {
            if let Some(environment) = &args.environment {
                let config = config_mut(&mut settings)?;
                check_project(config, &args.project)?;
                if let Some(project) = config.projects.get_mut(&args.project) {
                    project.environment = environment.clone();
                }
            }
            env(&settings, &args).await
        }
        InfisicalCommand::WriteFile(args) => write_file(&settings, &args).await,
        InfisicalCommand::Import(command) => super::infisical_import::run(&settings, command).await,
        InfisicalCommand::Tls(command) => super::infisical_tls::run(&settings, command).await,
    }
}

fn config(settings: &Settings) -> Result<&InfisicalConfig> {
    settings
        .providers
        .infisical
        .as_ref()
        .ok_or_else(|| Error::Usage("providers.infisical is not configured".into()))
}

fn config_mut(settings: &mut Settings) -> Result<&mut InfisicalConfig> {
    settings
        .providers
        .infisical
        .as_mut()
        .ok_or_else(|| Error::Usage("providers.infisical is not configured".into()))
}

/// A usage error (exit 2) for a project alias that is not configured, listing those that are.
pub(crate) fn check_project(config: &InfisicalConfig, alias: &str) -> Result<()> {
    if config.projects.contains_key(alias) {
        return Ok(());
    }
    Err(Error::Usage(crate::provider::infisical::unknown_project(
        alias,
        config.projects.keys(),
    )))
}

/// The client for the configured Infisical.
pub(crate) fn client(settings: &Settings) -> Result<Infisical> {
    Infisical::new(config(settings)?, &settings.state_dir)
}

async fn login(settings: &Settings, args: &InfisicalLoginArgs) -> Result<()> {
    let client = client(settings)?;
    let results = client.login_all(!args.cached).await;
    if results.is_empty() {
        return Err(Error::Usage(
            "providers.infisical has no auth configured (global or per project)".into(),
        ));
    }
    let mut text = String::new();
    let mut failures = 0;
    for (label, result) in &results {
        match result {
            Ok(()) => text.push_str(&format!("  OK {label}\n")),
            Err(err) => {
                failures += 1;
                text.push_str(&format!("  FAIL {label}: {err}\n"));
            }
        }
    }
    if failures == 0 {
        // The original's closing line, kept for scripts that look for it.
        text.push_str("All auth methods verified.\n");
    }
    super::write_stdout(text.as_bytes())?;
    match failures {
        0 => Ok(()),
        n => Err(Error::Incomplete(format!(
            "{n} of {} auth(s) failed to log in",
            results.len()
        ))),
    }
}

async fn env(settings: &Settings, args: &InfisicalEnvArgs) -> Result<()> {
    check_project(config(settings)?, &args.project)?;
    let client = client(settings)?;
    let listed = client.list(&args.project, &args.path, false, true).await?;
    let pairs: Vec<(&str, &[u8])> = listed
        .iter()
        .map(|l| (l.key.as_str(), l.value.expose()))
        .collect();
    let out = match args.format {
        EnvFormat::Export => export_lines(&pairs, &mut |warning| eprintln!("warning: {warning}")),
        EnvFormat::Env => env_lines(&pairs)?,
        EnvFormat::Json => json_object(&pairs)?,
    };
    super::write_stdout(&out)
}

/// `export KEY='value'` lines; keys that are not shell names, and values holding NUL (no
/// shell variable can), are skipped with a warning that names the key only.
pub fn export_lines(pairs: &[(&str, &[u8])], warn: &mut dyn FnMut(String)) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for (key, value) in pairs {
        if !crate::shell::is_var_name(key) {
            warn(format!("skipping '{key}': not a valid shell variable name"));
            continue;
        }
        if value.contains(&0) {
            warn(format!(
                "skipping '{key}': its value holds a NUL byte, which no shell variable can"
            ));
            continue;
        }
        out.extend_from_slice(b"export ");
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        crate::shell::quote(value, &mut out);
        out.push(b'\n');
    }
    out
}

/// `KEY=value` lines; a value with a newline (or NUL) cannot be one line, so it is refused.
pub fn env_lines(pairs: &[(&str, &[u8])]) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    for (key, value) in pairs {
        if key.contains(['=', '\n', '\r', '\0']) || key.is_empty() {
            return Err(Error::Refused(format!(
                "secret key '{}' cannot be written as KEY=value; use --format json",
                key.escape_debug()
            )));
        }
        if value.iter().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
            return Err(Error::Refused(format!(
                "the value of '{key}' contains a newline, which --format env cannot represent; use --format export or json"
            )));
        }
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    Ok(out)
}

/// One JSON object, key -> value (values must be UTF-8, as Infisical's are).
pub fn json_object(pairs: &[(&str, &[u8])]) -> Result<Zeroizing<Vec<u8>>> {
    let mut map = serde_json::Map::new();
    for (key, value) in pairs {
        let text = std::str::from_utf8(value).map_err(|_| {
            Error::Refused(format!(
                "the value of '{key}' is not UTF-8, which JSON cannot carry; use --format export"
            ))
        })?;
        map.insert(
            (*key).to_owned(),
            serde_json::Value::String(text.to_owned()),
        );
    }
    let mut out = Zeroizing::new(serde_json::to_vec_pretty(&map).context("cannot encode JSON")?);
    out.push(b'\n');
    // The map's strings are dropped without zeroizing; this is a best effort.
    Ok(out)
}

async fn write_file(settings: &Settings, args: &InfisicalWriteFileArgs) -> Result<()> {
    check_project(config(settings)?, &args.project)?;
    let client = client(settings)?;
    let path = infisical::normalize_path(&args.secret_path);
    let mapping = infisical::mapping(&args.project, &path, &args.secret_name);
    let value = client.lookup(&mapping).await?;
    let bytes = if args.base64 {
        let text: Vec<u8> = value
            .expose()
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let text = Zeroizing::new(text);
        Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&*text)
                .map_err(|err| {
                    Error::Refused(format!(
                        "the value of '{}' is not base64 ({err}); drop --base64 to write it as is",
                        args.secret_name
                    ))
                })?,
        )
    } else {
        Zeroizing::new(value.expose().to_vec())
    };
    let output = &args.output;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            fsutil::ensure_dir(parent, 0o700)?;
        }
    }
    fsutil::write_atomic(output, &bytes, args.mode.bits())?;
    eprintln!("Wrote {}", display(output));
    Ok(())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_refuses_newlines() {
        assert!(env_lines(&[("A", b"x\ny")]).is_err());
        assert_eq!(&*env_lines(&[("A", b"x y")]).unwrap(), b"A=x y\n");
    }
}
