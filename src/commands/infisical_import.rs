//! `psi infisical import env-file|podman-secret|quadlet`: copy secrets into an Infisical folder.
//!
//! The thin command around [`crate::import`]: it reads the sources (files, stdin, Podman),
//! hands the text to the pure readers, lists the target folder, plans, writes the plan and
//! prints the report.
//!
//! Podman secrets: `showsecret=true` reveals values on Podman 5; on Podman 4, which reveals
//! none, psi shell-driver secrets resolve through psi's mapping and its providers.
//!
//! `--conflict fail` is all-or-nothing: when any key holds another value, nothing is
//! written; `skip` leaves such keys alone; `overwrite` updates them. A real run writes the
//! plan ([`execute`]): newest servers get `PATCH /api/v4/secrets/batch` (`mode: "upsert"`)
//! in chunks of 100, 2024 servers one create or update per key, and a write that fails is
//! named (what, key, folder). Exit status 1 on any conflict or failure, also in a dry run.
//! Values never appear in output, logs or errors.

use std::collections::BTreeMap;
use std::path::Path;

use zeroize::Zeroizing;

use crate::cli::{ImportCommand, ImportOptions};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::import::plan::{agree, plan, FolderRow, Outcome, Plan};
use crate::import::report::{human, Report, Summary};
use crate::import::{parse_env, parse_quadlet, Found, Unreadable};
use crate::provider::infisical::writes::{self, Entry, Target, Upstream, CHUNK};
use crate::provider::infisical::Infisical;

/// Runs `psi infisical import ...`.
pub async fn run(settings: &Settings, command: ImportCommand) -> Result<()> {
    let (options, sources) = read_sources(settings, command).await?;
    for warning in &sources.warnings {
        eprintln!("psi: {warning}");
    }
    let config = settings.providers.infisical.as_ref().ok_or_else(|| {
        Error::Usage("no Infisical provider configured (providers.infisical)".into())
    })?;
    let client = Infisical::new(config, &settings.state_dir)?;
    if sources.found.is_empty() && sources.unreadable.is_empty() {
        eprintln!("psi: no secrets found to import");
    }
    let report = import(&client, &options, sources.found, sources.unreadable).await?;
    let s = &report.summary;
    tracing::info!(
        event = "infisical.import",
        project = %report.project,
        path = %report.path,
        dry_run = report.dry_run,
        total = s.total,
        created = s.created,
        updated = s.updated,
        unchanged = s.unchanged,
        skipped = s.skipped,
        conflicts = s.conflicts,
        failed = s.failed,
        "import finished"
    );
    super::print_report(&report, options.json, human)?;
    match s.problems() {
        Some(problems) => Err(Error::Incomplete(problems)),
        None => Ok(()),
    }
}

/// What the sources gave: keys with values, keys that could not be read, and warnings
/// (they name lines and secrets, never values).
#[derive(Default)]
struct Sources {
    found: Vec<Found>,
    unreadable: Vec<Unreadable>,
    warnings: Vec<String>,
}

/// Reads the command's sources: files and stdin through the pure readers, Podman secrets
/// through [`read_podman`].
async fn read_sources(
    settings: &Settings,
    command: ImportCommand,
) -> Result<(ImportOptions, Sources)> {
    let mut sources = Sources::default();
    let options = match command {
        ImportCommand::EnvFile { file, options } => {
            let (text, source) = match &file {
                Some(path) => (read_text(path)?, path.display().to_string()),
                None => {
                    let bytes = super::read_stdin(16 << 20)?;
                    let text = String::from_utf8(bytes.to_vec())
                        .map_err(|_| Error::Usage("stdin is not UTF-8 text".into()))?;
                    (Zeroizing::new(text), "stdin".to_owned())
                }
            };
            (sources.found, sources.warnings) = parse_env(&text, &source);
            options
        }
        ImportCommand::PodmanSecret {
            names,
            all,
            options,
        } => {
            let names = if all {
                all_podman_names(settings).await?
            } else {
                names
            };
            let pairs: Vec<(String, String)> = names.into_iter().map(|n| (n.clone(), n)).collect();
            (sources.found, sources.unreadable) =
                read_podman(settings, &pairs, "podman secret").await?;
            options
        }
        ImportCommand::Quadlet {
            files,
            resolve_secrets,
            options,
        } => {
            for file in &files {
                let text = read_text(file)?;
                let source = file.display().to_string();
                let (env, refs, warnings) = parse_quadlet(&text, &source);
                sources.found.extend(env);
                sources.warnings.extend(warnings);
                if refs.is_empty() {
                    continue;
                }
                if !resolve_secrets {
                    for r in &refs {
                        sources.warnings.push(format!(
                            "{source}: skipped Secret={} (use --resolve-secrets to import its value)",
                            r.name
                        ));
                    }
                    continue;
                }
                let pairs: Vec<(String, String)> =
                    refs.into_iter().map(|r| (r.name, r.key)).collect();
                let (found, unreadable) =
                    read_podman(settings, &pairs, &format!("{source}: podman secret")).await?;
                sources.found.extend(found);
                sources.unreadable.extend(unreadable);
            }
            options
        }
    };
    Ok((options, sources))
}

/// An import source file as text (capped, so a huge file or a FIFO cannot hang psi).
fn read_text(path: &Path) -> Result<Zeroizing<String>> {
    crate::fsutil::read_capped_text(path, crate::fsutil::IMPORT)
        .map_err(|err| Error::Usage(format!("cannot read {}: {err}", path.display())))
}

/// Plans the import against the folder's current state and, unless a dry run, performs
/// it. The report comes from the plan, so a dry run reports what a real run would do; a
/// real run only adds the writes that failed.
pub async fn import(
    client: &Infisical,
    options: &ImportOptions,
    found: Vec<Found>,
    unreadable: Vec<Unreadable>,
) -> Result<Report> {
    let target = Target {
        project: &options.project,
        environment: options.environment.as_deref(),
        path: &options.path,
    };
    let environment = client.environment(&target)?;
    let (keys, unusable) = agree(found, unreadable);
    // Nothing to write: no need to ask Infisical anything.
    let upstream = if keys.is_empty() {
        Upstream::default()
    } else {
        client.upstream(&target).await?
    };
    let mut plan = plan(options.conflict, keys, &upstream);
    if !options.dry_run {
        execute(client, &target, &environment, &mut plan).await;
    }
    let mut results = plan.rows;
    results.extend(unusable);
    results.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Report {
        project: options.project.clone(),
        environment,
        path: writes::normalize(&options.path),
        conflict: options.conflict,
        dry_run: options.dry_run,
        folders: plan.folders,
        summary: Summary::of(&results),
        results,
    })
}

// ---------------------------------------------------------------------------------------
// Podman

/// Reads Podman secrets by name: Podman 5 reveals values itself; otherwise a psi
/// shell-driver secret resolves through its mapping and psi's providers. Others are
/// reported unreadable.
async fn read_podman(
    settings: &Settings,
    names: &[(String, String)],
    source: &str,
) -> Result<(Vec<Found>, Vec<Unreadable>)> {
    let podman = crate::podman::Podman::new(crate::podman::configured_socket(settings)?);
    let listed = podman.list_secrets().await?;
    // Built on first need: most imports read Podman secrets that reveal their values.
    let mut resolver: Option<crate::resolver::Resolver> = None;
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for (name, key) in names {
        let fail = |why: String| Unreadable {
            key: key.clone(),
            source: format!("{source} {name}"),
            why,
        };
        let Some(info) = listed.iter().find(|s| &s.name == name) else {
            unreadable.push(fail("no such Podman secret".into()));
            continue;
        };
        let value = match podman.secret_data(name).await {
            Ok(Some(value)) => Some(value),
            Ok(None) => None,
            Err(err) => {
                unreadable.push(fail(err.to_string()));
                continue;
            }
        };
        let value = match value {
            Some(value) => value,
            None if info.driver == "shell" => {
                let id = match crate::secret::SecretId::parse(&info.id) {
                    Ok(id) => id,
                    Err(why) => {
                        unreadable.push(fail(why));
                        continue;
                    }
                };
                let resolver = match &mut resolver {
                    Some(resolver) => resolver,
                    None => resolver.insert(crate::resolver::Resolver::from_settings(settings)?),
                };
                match resolver.lookup(&id).await {
                    Ok(value) => value,
                    Err(Error::NoMapping(_)) => {
                        unreadable.push(fail(
                            "this Podman does not reveal secret values and psi has no mapping for this shell-driver secret".into(),
                        ));
                        continue;
                    }
                    Err(err) => {
                        unreadable.push(fail(format!("psi lookup failed: {err}")));
                        continue;
                    }
                }
            }
            None => {
                unreadable.push(fail(format!(
                    "this Podman does not reveal secret values (Podman 5 does) and driver '{}' is not psi's",
                    info.driver
                )));
                continue;
            }
        };
        match String::from_utf8(value.expose().to_vec()) {
            Ok(text) => found.push(Found {
                key: key.clone(),
                value: Zeroizing::new(text),
                source: format!("{source} {name}"),
            }),
            Err(err) => {
                let mut bytes = err.into_bytes();
                zeroize::Zeroize::zeroize(&mut bytes);
                unreadable.push(fail("the value is not UTF-8 text".into()));
            }
        }
    }
    Ok((found, unreadable))
}

async fn all_podman_names(settings: &Settings) -> Result<Vec<String>> {
    let podman = crate::podman::Podman::new(crate::podman::configured_socket(settings)?);
    Ok(podman
        .list_secrets()
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect())
}

/// Performs the plan's writes. A write that fails is named on stderr (what, which key,
/// which folder, the server's answer) and marks its keys' rows failed; the other writes
/// go ahead. Without its folder, no key is written.
async fn execute(client: &Infisical, target: &Target<'_>, env: &str, plan: &mut Plan) {
    // Writes are named like `create DB_PASS in prod:/app`.
    let place = format!("{env}:{}", writes::normalize(target.path));
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let all: Vec<&Found> = plan.writes.iter().map(|(f, _)| f).collect();
    if let Err((what, err)) = create_folders(client, target, env, &mut plan.folders).await {
        fail(&mut failures, &all, &what, &err);
    } else if client.supports_v4() {
        for chunk in all.chunks(CHUNK) {
            let entries: Vec<Entry<'_>> = chunk
                .iter()
                .map(|f| Entry {
                    key: &f.key,
                    value: &f.value,
                })
                .collect();
            if let Err(err) = client.upsert(target, &entries).await {
                let keys = match chunk {
                    [first, .., last] => {
                        format!("{} keys {}..{}", chunk.len(), first.key, last.key)
                    }
                    _ => chunk[0].key.clone(),
                };
                let what = format!("upsert {keys} in {place}");
                fail(&mut failures, chunk, &what, &err);
            }
        }
    } else {
        for (f, update) in &plan.writes {
            let entry = Entry {
                key: &f.key,
                value: &f.value,
            };
            if let Err(err) = client.write_one(target, &entry, *update).await {
                let verb = if *update { "update" } else { "create" };
                let what = format!("{verb} {} in {place}", f.key);
                fail(&mut failures, &[f], &what, &err);
            }
        }
    }
    for row in &mut plan.rows {
        if let Some(why) = failures.remove(&row.key) {
            row.outcome = Outcome::Failed;
            row.detail = why;
        }
    }
}

/// Creates the planned folders in order; at the first failure the ones below it are not
/// attempted, and the failed write is returned with its name.
async fn create_folders(
    client: &Infisical,
    target: &Target<'_>,
    env: &str,
    folders: &mut [FolderRow],
) -> std::result::Result<(), (String, Error)> {
    let mut rows = folders.iter_mut();
    while let Some(folder) = rows.next() {
        let what = format!("create folder {env}:{}", folder.path);
        if let Err(err) = client.create_folder(target, &folder.path).await {
            folder.outcome = Outcome::Failed;
            folder.detail = format!("{what}: {err}");
            for below in rows {
                below.outcome = Outcome::Skipped;
                below.detail = format!("not created: {what} failed");
            }
            return Err((what, err));
        }
    }
    Ok(())
}

/// Reports the failed write `what` once on stderr and in the rows of `keys`.
fn fail(failures: &mut BTreeMap<String, String>, keys: &[&Found], what: &str, err: &Error) {
    eprintln!("psi: import failed at {what}: {err}");
    for f in keys {
        failures.insert(f.key.clone(), format!("{what}: {err}"));
    }
}
