//! `psi infisical import env-file|podman-secret|quadlet`: copy secrets into an Infisical folder.
//!
//! Readers (pure, unit-tested here): env files (comments, `export `, single quotes verbatim,
//! double quotes with `\n \t \r \\ \" \$` escapes and values spanning lines, inline comments
//! after a quoted value or after whitespace in an unquoted one); quadlet files (`Environment=`
//! assignments, quoted and with line continuations, and with `--resolve-secrets` the values of
//! `Secret=` references); Podman secrets (`showsecret=true` on Podman 5; on Podman 4, which
//! reveals no values, psi shell-driver secrets through psi's mapping and its providers).
//!
//! Then a pure planner ([`plan`]) decides each key's fate from what the target folder holds
//! ([`Upstream`]: its secrets with stored values, and the folders missing on the way to it):
//! `created`, `updated`, `unchanged` (the folder holds this value already: nothing is sent),
//! `skipped`, `conflict`, or `failed` (a key whose sources disagree, or that could not be
//! read). `--conflict fail` is all-or-nothing: when any key holds another value, nothing is
//! written; `skip` leaves such keys alone; `overwrite` updates them. Only missing folders are
//! created. The report comes from the plan, so a dry run reports exactly what a real run
//! would do; the real run then writes (`execute`): newest servers get
//! `PATCH /api/v4/secrets/batch` (`mode: "upsert"`) in chunks of 100, 2024 servers one create
//! or update per key, and a write that fails is named (what, key, folder). Exit status 1 on
//! any conflict or failure, also in a dry run. Values never appear in output, logs or errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::provider::infisical::writes::{self, Entry, Target, Upstream, CHUNK};
use crate::provider::infisical::Infisical;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// KEY=VALUE lines from FILE (stdin when omitted)
    EnvFile {
        /// The env file [default: stdin]
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        options: ImportOptions,
    },
    /// Podman secrets, each imported under its name
    PodmanSecret {
        /// A secret to import (repeatable)
        #[arg(long = "name", value_name = "NAME", required_unless_present = "all")]
        names: Vec<String>,
        /// Every Podman secret
        #[arg(long, conflicts_with = "names")]
        all: bool,
        #[command(flatten)]
        options: ImportOptions,
    },
    /// Environment= assignments (and with --resolve-secrets, Secret= values) of quadlet files
    Quadlet {
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Also import the values of Secret= references, read from Podman
        #[arg(long)]
        resolve_secrets: bool,
        #[command(flatten)]
        options: ImportOptions,
    },
}

/// What to do with a key that already exists in the target folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    /// Write nothing when any key holds another value in Infisical
    Fail,
    /// Leave keys that hold other values as they are
    Skip,
    /// Update keys that hold other values
    Overwrite,
}

#[derive(Debug, Args)]
pub struct ImportOptions {
    /// Project alias from the configuration
    #[arg(long, value_name = "ALIAS")]
    pub project: String,
    /// Target folder
    #[arg(long, default_value = "/", value_name = "PATH")]
    pub path: String,
    /// Environment slug [default: the project's]
    #[arg(long, value_name = "SLUG")]
    pub environment: Option<String>,
    /// What to do with keys that already exist
    #[arg(long, value_enum, default_value = "fail")]
    pub conflict: Conflict,
    /// Show what would happen; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// One key read from a source. The value zeroizes on drop.
pub struct Found {
    pub key: String,
    pub value: Zeroizing<String>,
    pub source: String,
}

/// A key read that could not be given a value (an unreadable Podman secret).
pub struct Unreadable {
    pub key: String,
    pub source: String,
    pub why: String,
}

// ---------------------------------------------------------------------------------------
// Readers

/// Parses an env file. Returns the assignments and warnings (line numbers, never values).
pub fn parse_env(text: &str, source: &str) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            warnings.push(format!("{source}:{number}: skipped: no '='"));
            continue;
        };
        let key = key.trim();
        if !valid_key(key) {
            warnings.push(format!("{source}:{number}: skipped: invalid key"));
            continue;
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                // A quoted value may continue on the following lines. The search for the
                // closing quote resumes where it stopped, so an unclosed quote costs one pass
                // over the rest of the file rather than one per line.
                let mut text = rest[1..].to_owned();
                let mut closing = Closing::new(quote);
                let mut scanned = 0;
                loop {
                    match closing.find(&text[scanned..]).map(|at| scanned + at) {
                        Some(end) => {
                            let after = text[end + 1..].trim_start();
                            if !(after.is_empty() || after.starts_with('#')) {
                                warnings.push(format!(
                                    "{source}:{number}: skipped: text after the closing quote"
                                ));
                                break None;
                            }
                            let inner = &text[..end];
                            break Some(if quote == '"' {
                                unescape(inner)
                            } else {
                                inner.to_owned()
                            });
                        }
                        None if i < lines.len() => {
                            scanned = text.len();
                            text.push('\n');
                            text.push_str(lines[i]);
                            i += 1;
                        }
                        None => {
                            warnings.push(format!("{source}:{number}: skipped: unclosed quote"));
                            break None;
                        }
                    }
                }
            }
            _ => {
                // Unquoted: an inline comment starts at whitespace followed by '#'.
                let mut end = rest.len();
                let bytes = rest.as_bytes();
                for (at, b) in bytes.iter().enumerate() {
                    if *b == b'#' && at > 0 && bytes[at - 1].is_ascii_whitespace() {
                        end = at;
                        break;
                    }
                }
                Some(rest[..end].trim_end().to_owned())
            }
        };
        if let Some(value) = value {
            found.push(Found {
                key: key.to_owned(),
                value: Zeroizing::new(value),
                source: source.to_owned(),
            });
        }
    }
    (found, warnings)
}

/// Keys as Infisical and shells accept them: letters, digits, `_`, `-`, `.`; not empty.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The search for the closing quote of a quoted env value, fed the value one piece at a
/// time. A double quote may be escaped with `\`; an escape at the end of one piece applies to
/// the first character of the next.
struct Closing {
    quote: char,
    escaped: bool,
}

impl Closing {
    fn new(quote: char) -> Closing {
        Closing {
            quote,
            escaped: false,
        }
    }

    /// The byte index in `piece` of the closing quote, if `piece` holds it.
    fn find(&mut self, piece: &str) -> Option<usize> {
        for (at, c) in piece.char_indices() {
            if self.quote == '"' && self.escaped {
                self.escaped = false;
            } else if self.quote == '"' && c == '\\' {
                self.escaped = true;
            } else if c == self.quote {
                return Some(at);
            }
        }
        None
    }
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other @ ('\\' | '"' | '$' | '`')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A `Secret=` reference of a quadlet: the Podman secret and the key to import it as.
#[derive(Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// Parses a quadlet file: `Environment=` assignments and `Secret=` references, from any
/// section (systemd's line continuations joined). Warnings name lines, never values.
pub fn parse_quadlet(text: &str, source: &str) -> (Vec<Found>, Vec<SecretRef>, Vec<String>) {
    let mut found = Vec::new();
    let mut refs = Vec::new();
    let mut warnings = Vec::new();
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let (number, mut line) = match pending.take() {
            Some((n, mut acc)) => {
                acc.push(' ');
                acc.push_str(raw.trim());
                (n, acc)
            }
            None => (index + 1, raw.trim().to_owned()),
        };
        if line.ends_with('\\') && !line.starts_with('#') && !line.starts_with(';') {
            // Trimmed in place: copying the joined line at every continuation would make a
            // long run of continuations quadratic.
            line.pop();
            line.truncate(line.trim_end().len());
            pending = Some((number, line));
            continue;
        }
        logical.push((number, line));
    }
    if let Some(last) = pending {
        logical.push(last);
    }
    for (number, line) in logical {
        if let Some(rest) = line.strip_prefix("Environment=") {
            match split_words(rest) {
                Some(words) => {
                    for word in words {
                        match word.split_once('=') {
                            Some((key, value)) if valid_key(key) => found.push(Found {
                                key: key.to_owned(),
                                value: Zeroizing::new(value.to_owned()),
                                source: source.to_owned(),
                            }),
                            _ => warnings.push(format!(
                                "{source}:{number}: skipped an Environment= word that is not KEY=VALUE"
                            )),
                        }
                    }
                }
                None => warnings.push(format!("{source}:{number}: skipped: unclosed quote")),
            }
        } else if let Some(rest) = line.strip_prefix("Secret=") {
            let mut fields = rest.trim().split(',');
            let name = fields.next().unwrap_or_default().trim().to_owned();
            if name.is_empty() {
                continue;
            }
            let key = fields
                .find_map(|f| f.trim().strip_prefix("target="))
                .map(str::to_owned)
                .unwrap_or_else(|| name.clone());
            refs.push(SecretRef { name, key });
        }
    }
    (found, refs, warnings)
}

/// systemd's word splitting for `Environment=`: whitespace outside quotes separates words,
/// quotes are removed, `\` escapes the next character. `None` for an unclosed quote.
fn split_words(text: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some(other) => word.push(other),
                    None => {}
                }
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(word);
    }
    Some(words)
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
    let mut registry: Option<crate::provider::Registry> = None;
    let state = crate::state::StateDir::new(settings.state_dir.clone());
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
                let mapping = match state.read_mapping(&id) {
                    Ok(mapping) => mapping,
                    Err(_) => {
                        unreadable.push(fail(
                            "this Podman does not reveal secret values and psi has no mapping for this shell-driver secret".into(),
                        ));
                        continue;
                    }
                };
                if registry.is_none() {
                    registry = Some(crate::provider::Registry::from_config(
                        &settings.providers,
                        &settings.state_dir,
                    )?);
                }
                let registry = registry.as_ref().expect("set above");
                let looked = match registry.get(mapping.provider()) {
                    Ok(provider) => provider.lookup(&mapping).await,
                    Err(err) => Err(err),
                };
                match looked {
                    Ok(value) => value,
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

// ---------------------------------------------------------------------------------------
// Plan, write, report

/// What happened (or, in a dry run, would happen) to a key or a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New in the folder (a folder: did not exist).
    Created,
    /// The folder held another value (`--conflict overwrite`).
    Updated,
    /// The folder already holds this value: nothing is sent.
    Unchanged,
    /// Not written: `--conflict skip`, or other keys conflict under `--conflict fail`.
    Skipped,
    /// The folder holds another value and `--conflict` is `fail`.
    Conflict,
    /// Not readable, the sources disagree, or the write failed.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Serialize)]
pub struct Row {
    pub key: String,
    pub source: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// A folder on the way to the target that does not exist.
#[derive(Serialize)]
pub struct FolderRow {
    pub path: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Serialize, Default)]
pub struct Summary {
    pub total: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub conflicts: usize,
    pub failed: usize,
}

#[derive(Serialize)]
pub struct Report {
    pub project: String,
    pub environment: String,
    pub path: String,
    pub conflict: Conflict,
    pub dry_run: bool,
    pub folders: Vec<FolderRow>,
    pub results: Vec<Row>,
    pub summary: Summary,
}

/// Runs `psi infisical import ...`.
pub async fn run(settings: &Settings, command: ImportCommand) -> Result<()> {
    let (options, found, unreadable, warnings) = match command {
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
            let (found, warnings) = parse_env(&text, &source);
            (options, found, Vec::new(), warnings)
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
            let (found, unreadable) = read_podman(settings, &pairs, "podman secret").await?;
            (options, found, unreadable, Vec::new())
        }
        ImportCommand::Quadlet {
            files,
            resolve_secrets,
            options,
        } => {
            let mut found = Vec::new();
            let mut unreadable = Vec::new();
            let mut warnings = Vec::new();
            for file in &files {
                let text = read_text(file)?;
                let source = file.display().to_string();
                let (env, refs, warn) = parse_quadlet(&text, &source);
                found.extend(env);
                warnings.extend(warn);
                if refs.is_empty() {
                    continue;
                }
                if !resolve_secrets {
                    for r in &refs {
                        warnings.push(format!(
                            "{source}: skipped Secret={} (use --resolve-secrets to import its value)",
                            r.name
                        ));
                    }
                    continue;
                }
                let pairs: Vec<(String, String)> =
                    refs.into_iter().map(|r| (r.name, r.key)).collect();
                let (f, u) =
                    read_podman(settings, &pairs, &format!("{source}: podman secret")).await?;
                found.extend(f);
                unreadable.extend(u);
            }
            (options, found, unreadable, warnings)
        }
    };
    for warning in &warnings {
        eprintln!("psi: {warning}");
    }
    let config = settings.providers.infisical.as_ref().ok_or_else(|| {
        Error::Usage("no Infisical provider configured (providers.infisical)".into())
    })?;
    let client = Infisical::new(config, &settings.state_dir)?;
    if found.is_empty() && unreadable.is_empty() {
        eprintln!("psi: no secrets found to import");
    }
    let report = import(&client, &options, found, unreadable).await?;
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
    let mut problems = Vec::new();
    if s.conflicts > 0 {
        problems.push(format!(
            "{} of {} keys hold other values in Infisical, so nothing was written (--conflict fail)",
            s.conflicts, s.total
        ));
    }
    if s.failed > 0 {
        problems.push(format!("{} of {} keys failed to import", s.failed, s.total));
    }
    if !problems.is_empty() {
        return Err(Error::Failed(problems.join("; ")));
    }
    Ok(())
}

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
    let mut summary = Summary {
        total: results.len(),
        ..Summary::default()
    };
    for row in &results {
        *match row.outcome {
            Outcome::Created => &mut summary.created,
            Outcome::Updated => &mut summary.updated,
            Outcome::Unchanged => &mut summary.unchanged,
            Outcome::Skipped => &mut summary.skipped,
            Outcome::Conflict => &mut summary.conflicts,
            Outcome::Failed => &mut summary.failed,
        } += 1;
    }
    Ok(Report {
        project: options.project.clone(),
        environment,
        path: writes::normalize(&options.path),
        conflict: options.conflict,
        dry_run: options.dry_run,
        folders: plan.folders,
        results,
        summary,
    })
}

/// One value per key: identical values from several sources are one key; keys whose
/// sources disagree, or that a source could not read, are failed rows and not written.
fn agree(found: Vec<Found>, unreadable: Vec<Unreadable>) -> (Vec<Found>, Vec<Row>) {
    let mut rows = Vec::new();
    let mut by_key: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    for f in found {
        by_key.entry(f.key.clone()).or_default().push(f);
    }
    let mut unreadable_keys = BTreeSet::new();
    for u in unreadable {
        unreadable_keys.insert(u.key.clone());
        rows.push(Row {
            key: u.key,
            source: u.source,
            outcome: Outcome::Failed,
            detail: u.why,
        });
    }
    let mut keys = Vec::new();
    for (key, mut list) in by_key {
        let sources = list
            .iter()
            .map(|f| f.source.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ");
        let why = if list.iter().any(|f| f.value != list[0].value) {
            "the sources give different values; not written"
        } else if unreadable_keys.contains(&key) {
            "another source of this key could not be read; not written"
        } else {
            let mut first = list.swap_remove(0);
            first.source = sources;
            keys.push(first);
            continue;
        };
        rows.push(Row {
            key,
            source: sources,
            outcome: Outcome::Failed,
            detail: why.into(),
        });
    }
    (keys, rows)
}

/// What an import does, decided before anything is written.
pub struct Plan {
    /// The folders to create, shallowest first (none when nothing is written).
    pub folders: Vec<FolderRow>,
    /// The keys to send, with whether each updates an existing one.
    pub writes: Vec<(Found, bool)>,
    /// One row per key, in the order of `keys`.
    pub rows: Vec<Row>,
}

/// Decides each key's fate from the folder's state (pure). A key whose stored value equals
/// the imported one is `unchanged` under every policy: there is nothing to overwrite, so it
/// is no conflict either. `--conflict fail` is all-or-nothing: when any key holds another
/// value, nothing is written at all.
pub fn plan(conflict: Conflict, keys: Vec<Found>, upstream: &Upstream) -> Plan {
    let stored = |f: &Found| upstream.secrets.get(&f.key).map(|v| v.expose() == *f.value);
    let abort = conflict == Conflict::Fail && keys.iter().any(|f| stored(f) == Some(false));
    let mut writes = Vec::new();
    let mut rows = Vec::new();
    for f in keys {
        let (outcome, detail) = match (stored(&f), conflict) {
            (Some(true), _) => (Outcome::Unchanged, "Infisical holds this value"),
            (Some(false), Conflict::Fail) => (
                Outcome::Conflict,
                "Infisical holds another value (use --conflict skip or overwrite)",
            ),
            (Some(false), Conflict::Skip) => (
                Outcome::Skipped,
                "Infisical holds another value (--conflict skip)",
            ),
            _ if abort => (
                Outcome::Skipped,
                "not written: other keys conflict and --conflict is fail",
            ),
            (Some(false), Conflict::Overwrite) => {
                (Outcome::Updated, "Infisical held another value")
            }
            (None, _) => (Outcome::Created, "new key"),
        };
        rows.push(Row {
            key: f.key.clone(),
            source: f.source.clone(),
            outcome,
            detail: detail.into(),
        });
        if matches!(outcome, Outcome::Created | Outcome::Updated) {
            writes.push((f, outcome == Outcome::Updated));
        }
    }
    let folders = if writes.is_empty() {
        Vec::new()
    } else {
        upstream
            .missing
            .iter()
            .map(|path| FolderRow {
                path: path.clone(),
                outcome: Outcome::Created,
                detail: "missing".into(),
            })
            .collect()
    };
    Plan {
        folders,
        writes,
        rows,
    }
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

fn human(report: &Report) -> String {
    let mut out = String::new();
    for folder in &report.folders {
        out.push_str(&format!(
            "Folder {}: {} ({})\n",
            folder.path,
            folder.outcome.as_str(),
            folder.detail
        ));
    }
    let width = report
        .results
        .iter()
        .map(|r| r.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    out.push_str(&format!("{:<width$}  {:<9}  DETAIL\n", "KEY", "OUTCOME"));
    for row in &report.results {
        out.push_str(&format!(
            "{:<width$}  {:<9}  {} ({})\n",
            row.key,
            row.outcome.as_str(),
            row.detail,
            row.source
        ));
    }
    let s = &report.summary;
    out.push_str(&format!(
        "{}Total: {} Created: {} Updated: {} Unchanged: {} Skipped: {} Conflicts: {} Failed: {}\n",
        if report.dry_run {
            "Dry run (nothing written). "
        } else {
            ""
        },
        s.total,
        s.created,
        s.updated,
        s.unchanged,
        s.skipped,
        s.conflicts,
        s.failed
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;

    fn pairs(found: &[Found]) -> Vec<(String, String)> {
        found
            .iter()
            .map(|f| (f.key.clone(), f.value.as_str().to_owned()))
            .collect()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    fn found(key: &str, value: &str) -> Found {
        Found {
            key: key.into(),
            value: Zeroizing::new(value.into()),
            source: "f.env".into(),
        }
    }

    /// The folder holds SAME=same and DIFF=old; the import brings SAME, DIFF=new and NEW.
    fn planned(conflict: Conflict, missing: &[&str]) -> Plan {
        let upstream = Upstream {
            secrets: [("SAME", "same"), ("DIFF", "old")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), SecretString::new(v.to_owned())))
                .collect(),
            missing: missing.iter().map(|p| (*p).to_owned()).collect(),
        };
        let keys = vec![
            found("DIFF", "new"),
            found("NEW", "n"),
            found("SAME", "same"),
        ];
        plan(conflict, keys, &upstream)
    }

    fn decided(plan: &Plan) -> Vec<(&str, Outcome)> {
        plan.rows
            .iter()
            .map(|r| (r.key.as_str(), r.outcome))
            .collect()
    }

    fn sent(plan: &Plan) -> Vec<(&str, bool)> {
        plan.writes
            .iter()
            .map(|(f, update)| (f.key.as_str(), *update))
            .collect()
    }

    #[test]
    fn equal_values_are_unchanged_under_every_policy() {
        use Outcome::{Created, Skipped, Unchanged, Updated};
        let plan = planned(Conflict::Overwrite, &[]);
        assert_eq!(
            decided(&plan),
            [("DIFF", Updated), ("NEW", Created), ("SAME", Unchanged)]
        );
        assert_eq!(sent(&plan), [("DIFF", true), ("NEW", false)]);
        let plan = planned(Conflict::Skip, &[]);
        assert_eq!(
            decided(&plan),
            [("DIFF", Skipped), ("NEW", Created), ("SAME", Unchanged)]
        );
        assert_eq!(sent(&plan), [("NEW", false)]);
    }

    #[test]
    fn conflict_fail_writes_nothing_when_any_key_holds_another_value() {
        use Outcome::{Skipped, Unchanged};
        let plan = planned(Conflict::Fail, &["/never"]);
        assert_eq!(
            decided(&plan),
            [
                ("DIFF", Outcome::Conflict),
                ("NEW", Skipped),
                ("SAME", Unchanged)
            ]
        );
        assert!(plan.writes.is_empty());
        // Nothing written, so no folder created either.
        assert!(plan.folders.is_empty());
    }

    #[test]
    fn missing_folders_are_planned_only_with_writes() {
        let writing = planned(Conflict::Overwrite, &["/a", "/a/b"]);
        let folders: Vec<&str> = writing.folders.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(folders, ["/a", "/a/b"]);
        let nothing = plan(
            Conflict::Overwrite,
            Vec::new(),
            &Upstream {
                missing: vec!["/a".into()],
                ..Upstream::default()
            },
        );
        assert!(nothing.folders.is_empty());
    }

    #[test]
    fn env_files() {
        let text = "# comment\n\n  export A=1\nB = spaced value  # inline\nC=\"x\\ty\\\"z\\\\\" # after\nD='raw \\n $x' # c\nE=a#b\nF=\"two\nlines\"\nG=\nH=\"\"\nno equals\n1BAD!=x\nI='unterminated\n";
        let (found, warnings) = parse_env(text, "f.env");
        assert_eq!(
            pairs(&found),
            [
                p("A", "1"),
                p("B", "spaced value"),
                p("C", "x\ty\"z\\"),
                p("D", "raw \\n $x"),
                p("E", "a#b"),
                p("F", "two\nlines"),
                p("G", ""),
                p("H", ""),
            ]
        );
        assert_eq!(
            warnings,
            [
                "f.env:12: skipped: no '='",
                "f.env:13: skipped: invalid key",
                "f.env:14: skipped: unclosed quote",
            ]
        );
    }

    #[test]
    fn text_after_a_closing_quote_is_refused_without_quoting_it() {
        let (found, warnings) = parse_env("A=\"x\"trailing-secret\n", "s");
        assert!(found.is_empty());
        assert_eq!(warnings, ["s:1: skipped: text after the closing quote"]);
    }

    #[test]
    fn quadlets() {
        let text = "[Unit]\nDescription=x\n[Container]\nEnvironment=A=1 \"B=two words\" C='x y' D=a\\ b\nEnvironment=E=1 \\\n  F=2\nEnvironment=noequals\nSecret=db,type=env,target=DB_PASS\nSecret=plain\n# Environment=Z=1\n";
        let (found, refs, warnings) = parse_quadlet(text, "q");
        assert_eq!(
            pairs(&found),
            [
                p("A", "1"),
                p("B", "two words"),
                p("C", "x y"),
                p("D", "a b"),
                p("E", "1"),
                p("F", "2"),
            ]
        );
        assert_eq!(
            refs,
            [
                SecretRef {
                    name: "db".into(),
                    key: "DB_PASS".into()
                },
                SecretRef {
                    name: "plain".into(),
                    key: "plain".into()
                }
            ]
        );
        assert_eq!(warnings.len(), 1);
    }

    /// Runs `parse` on another thread and fails unless it returns within `limit`. The inputs
    /// below took the quadratic readers 45 seconds or more even in a release build; the linear
    /// ones read them in well under a second in a debug build, so the bound is far from both.
    fn finishes_within(limit: std::time::Duration, parse: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            parse();
            let _ = done.send(());
        });
        match finished.recv_timeout(limit) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the reader took longer than {limit:?}: not linear in its input")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the reader panicked"),
        }
    }

    #[test]
    fn an_unclosed_quote_is_read_in_linear_time() {
        let text = format!("A=\"{}", "some value text\n".repeat(200_000));
        finishes_within(std::time::Duration::from_secs(10), move || {
            let (found, warnings) = parse_env(&text, "f.env");
            assert!(found.is_empty());
            assert_eq!(warnings, ["f.env:1: skipped: unclosed quote"]);
        });
    }

    #[test]
    fn continuations_are_joined_in_linear_time() {
        let text = format!(
            "[Container]\nEnvironment=A=1 \\\n{}  C=3\n",
            "  B=2 \\\n".repeat(500_000)
        );
        finishes_within(std::time::Duration::from_secs(20), move || {
            let (found, _, warnings) = parse_quadlet(&text, "q");
            assert_eq!(found.len(), 500_002);
            assert!(warnings.is_empty());
        });
    }
}
