//! `psi run`: resolve secrets (a workload's, or a project folder's) through the
//! [`Resolver`] (or, for a workload, through a running `psi serve`, as its container gets
//! them) and `exec` a command with them added to its environment. psi is replaced by the command, so signals reach it and
//! its exit status is the caller's; nothing is written to disk, and values appear in neither
//! argv nor logs (only in the new process's environment).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

use crate::cli::RunArgs;
use crate::config::Settings;
use crate::error::{Error, Result, ResultExt};
use crate::provider::{infisical, Source};
use crate::resolver::{Resolver, WorkloadSecrets};
use crate::secret::SecretValue;
use crate::unitgen::dropin;

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
            if !crate::shell::is_var_name(var) {
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
/// serve answering, no drop-in, no Podman API): then the provider is asked directly.
async fn via_serve(settings: &Settings, workload: &str) -> Option<Result<WorkloadSecrets>> {
    crate::client::healthcheck(&settings.socket_path, false, None).ok()?;
    let path = crate::setup::dropin_path(settings, workload);
    let text = crate::fsutil::read_capped_text(&path, crate::fsutil::CONFIG).ok()?;
    let podman = crate::podman::Podman::new(crate::podman::configured_socket(settings).ok()?);
    let ids: BTreeMap<String, String> = podman
        .list_secrets()
        .await
        .ok()?
        .into_iter()
        .map(|s| (s.name, s.id))
        .collect();
    let token = settings.socket_token.as_ref().map(|(t, _)| t.expose());
    Some(WorkloadSecrets::from_lines(
        workload,
        &dropin::read(&text),
        |name| {
            let id = ids.get(name).ok_or_else(|| {
                Error::Refused(format!(
                    "the drop-in of {workload} names the Podman secret {name}, which Podman does not have; run psi setup"
                ))
            })?;
            crate::client::lookup(&settings.socket_path, token, id).context(name)
        },
    ))
}

/// The keys of an Infisical folder (`--project ALIAS --path /p`), each as the variable of its
/// own name when that is a valid one (the others are only selectable with `--env`).
async fn folder(
    settings: &Settings,
    project: &str,
    path: &str,
    warn: bool,
) -> Result<WorkloadSecrets> {
    let config = settings
        .providers
        .infisical
        .as_ref()
        .ok_or_else(|| Error::Usage("providers.infisical is not configured".into()))?;
    super::infisical::check_project(config, project)?;
    let source = Source {
        project,
        path,
        recursive: false,
        include_imports: true,
    };
    let listed = Resolver::from_settings(settings)?
        .discover(infisical::NAME, &source)
        .await?;
    let mut secrets = WorkloadSecrets {
        values: BTreeMap::new(),
        env: Vec::new(),
    };
    for found in listed {
        if crate::shell::is_var_name(&found.key) {
            secrets.env.push((found.key.clone(), found.key.clone()));
        } else if warn {
            eprintln!(
                "warning: skipping '{}': not a valid environment variable name (select it with --env VAR={})",
                found.key, found.key
            );
        }
        secrets.values.insert(found.key, found.value);
    }
    Ok(secrets)
}

/// Resolves what `psi run` adds to the environment (async: it asks serve or the provider).
pub async fn resolve(settings: &Settings, args: &RunArgs) -> Result<Env> {
    let wanted = selections(&args.env)?;
    let WorkloadSecrets {
        values,
        env: default_env,
    } = match (&args.workload, &args.project) {
        (Some(workload), _) => match via_serve(settings, workload).await {
            Some(found) => found?,
            None => {
                let config = crate::setup::workload_config(settings, workload)?;
                Resolver::from_settings(settings)?
                    .workload(workload, config)
                    .await?
            }
        },
        (None, Some(project)) => folder(settings, project, &args.path, wanted.is_empty()).await?,
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
            return Err(Error::Refused(format!(
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
            .ok_or_else(|| Error::Refused(format!("no secret named {key}")))?;
        if value.expose().contains(&0) {
            return Err(Error::Refused(format!(
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
    Error::Io {
        context: format!("cannot run {}", program.to_string_lossy()),
        source: err,
    }
}
