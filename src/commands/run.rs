//! `psi run`: resolve secrets (a workload's, or a project folder's) and `exec` a command with
//! them added to its environment. psi is replaced by the command, so signals reach it and
//! its exit status is the caller's; nothing is written to disk, and values appear in neither
//! argv nor logs (only in the new process's environment).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

use crate::cli::RunArgs;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::secret::SecretValue;

/// The environment to add: variable name -> value.
type Env = Vec<(String, SecretValue)>;

/// Parses `--env VAR=KEY` selections.
fn selections(args: &[String]) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|text| {
            let (var, key) = text
                .split_once('=')
                .filter(|(var, key)| !var.is_empty() && !key.is_empty())
                .ok_or_else(|| Error::Usage(format!("--env '{text}' is not VAR=KEY")))?;
            if !super::infisical::is_shell_name(var) {
                return Err(Error::Usage(format!(
                    "--env '{text}': '{var}' is not a valid environment variable name"
                )));
            }
            Ok((var.to_owned(), key.to_owned()))
        })
        .collect()
}

/// A workload's secrets through a running `psi serve`, as its container would get them: the
/// drop-in names the Podman secrets and their variables, Podman gives their IDs, serve the
/// values (from its cache when the provider is down). `None` when that path is not there (no
/// serve answering, no drop-in, no Podman API): then the providers are asked directly.
async fn via_serve(
    settings: &Settings,
    workload: &str,
) -> Option<Result<(BTreeMap<String, SecretValue>, Vec<(String, String)>)>> {
    use crate::unitgen::dropin;
    crate::client::healthcheck(&settings.socket_path, false, None).ok()?;
    let path = settings
        .systemd_dir
        .join(dropin::dir_name(workload))
        .join(dropin::FILE_NAME);
    let text = crate::fsutil::read_capped_text(&path, crate::fsutil::CONFIG).ok()?;
    let podman = crate::podman::Podman::new(crate::podman::configured_socket(settings).ok()?);
    let ids: BTreeMap<String, String> = podman
        .list_secrets()
        .await
        .ok()?
        .into_iter()
        .map(|s| (s.name, s.id))
        .collect();
    let prefix = crate::setup::desired::secret_name(workload, "");
    let token = settings.socket_token.as_ref().map(|(t, _)| t.expose());
    let mut values = BTreeMap::new();
    let mut env = Vec::new();
    for line in text.lines() {
        let Some(fields) = line.trim().strip_prefix("Secret=") else {
            continue;
        };
        let mut parts = fields.split(',');
        let name = parts.next().unwrap_or_default().trim();
        let key = name.strip_prefix(&prefix).unwrap_or(name).to_owned();
        let options: Vec<&str> = parts.collect();
        let var = options
            .iter()
            .find_map(|o| o.strip_prefix("target="))
            .filter(|_| options.contains(&"type=env"));
        if !values.contains_key(&key) {
            let Some(id) = ids.get(name) else {
                return Some(Err(Error::Failed(format!(
                    "the drop-in of {workload} names the Podman secret {name}, which Podman does not have; run psi setup"
                ))));
            };
            match crate::client::lookup(&settings.socket_path, token, id) {
                Ok(value) => {
                    values.insert(key.clone(), value);
                }
                Err(why) => return Some(Err(Error::Failed(format!("{name}: {why}")))),
            }
        }
        if let Some(var) = var {
            env.push((var.to_owned(), key));
        }
    }
    Some(Ok((values, env)))
}

/// Resolves what `psi run` adds to the environment (async: it asks Infisical).
pub async fn resolve(settings: &Settings, args: &RunArgs) -> Result<Env> {
    let wanted = selections(&args.env)?;
    let (values, default_env): (BTreeMap<String, SecretValue>, Vec<(String, String)>) = match (
        &args.workload,
        &args.project,
    ) {
        (Some(workload), _) => match via_serve(settings, workload).await {
            Some(found) => found?,
            None => crate::setup::workload_values(settings, workload).await?,
        },
        (None, Some(project)) => {
            let config = settings
                .providers
                .infisical
                .as_ref()
                .ok_or_else(|| Error::Usage("providers.infisical is not configured".into()))?;
            super::infisical::check_project(config, project)?;
            let client = super::infisical::client(settings)?;
            let listed = client.list(project, &args.path, false, true).await?;
            let mut values = BTreeMap::new();
            let mut env = Vec::new();
            for l in listed {
                if super::infisical::is_shell_name(&l.key) {
                    env.push((l.key.clone(), l.key.clone()));
                } else if wanted.is_empty() {
                    eprintln!(
                            "warning: skipping '{}': not a valid environment variable name (select it with --env VAR={})",
                            l.key, l.key
                        );
                }
                values.insert(l.key, l.value);
            }
            (values, env)
        }
        (None, None) => {
            return Err(Error::Usage(
                "psi run needs --workload NAME or --project ALIAS".into(),
            ))
        }
    };
    let chosen = if wanted.is_empty() {
        default_env
    } else {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|(_, key)| !values.contains_key(key))
            .map(|(_, key)| key.as_str())
            .collect();
        if !missing.is_empty() {
            let mut known: Vec<&str> = values.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(Error::Failed(format!(
                "no secret named {} here; found: {}",
                missing.join(", "),
                known.join(", ")
            )));
        }
        wanted
    };
    let mut env = Vec::with_capacity(chosen.len());
    for (var, key) in chosen {
        // A key may feed several variables, so each gets its own copy.
        let value = values
            .get(&key)
            .map(|v| SecretValue::new(v.expose().to_vec()))
            .ok_or_else(|| Error::Failed(format!("no secret named {key}")))?;
        if value.expose().contains(&0) {
            return Err(Error::Failed(format!(
                "the value of '{key}' holds a NUL byte, which an environment variable cannot"
            )));
        }
        env.push((var, value));
    }
    // The rest (keys not chosen) are dropped, and zeroized, here.
    drop(values);
    Ok(env)
}

/// Replaces this process with `command`, `env` added to the inherited environment minus
/// psi's own secrets ([`crate::process::replacement`]). Returns only if the exec failed.
pub fn exec(command: &[OsString], env: Env) -> Error {
    let Some((program, rest)) = command.split_first() else {
        return Error::Usage("psi run needs a command after --".into());
    };
    let mut cmd = crate::process::replacement(program);
    cmd.args(rest);
    for (var, value) in &env {
        cmd.env(var, OsStr::from_bytes(value.expose()));
    }
    let err = cmd.exec();
    Error::Failed(format!("cannot run {}: {err}", program.to_string_lossy()))
}
