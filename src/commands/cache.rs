//! `psi cache init|status|refresh|invalidate|prune`: the encrypted secret cache from the
//! operator's side. Reports go to stdout (`status --json` alone for machines), diagnostics
//! to stderr. `invalidate` and `prune` hold the setup lock (and `refresh` through
//! `psi setup`), so they never race a `psi setup` that is writing `cache.enc`; `init`
//! writes a new cache without it, refusing to replace one unless `--force`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::{self, Backend, BackendKind, Entries, KEY_CREDENTIAL};
use crate::cli::{CacheCommand, CacheInitArgs, CacheInvalidateArgs, CacheStatusArgs, SetupArgs};
use crate::config::{PcrList, Settings, WithKey};
use crate::crypto::aead;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::podman::{Podman, SecretInfo};
use crate::provider::creds::SystemdCreds;
use crate::provider::nitrokeyhsm::NitrokeyHsm;
use crate::provider::Registry;
use crate::secret::{Mapping, SecretId};
use crate::state::StateDir;
use crate::timefmt::Utc;

pub async fn run(settings: &Settings, command: CacheCommand) -> Result<()> {
    match command {
        CacheCommand::Init(args) => init(settings, &args).await,
        CacheCommand::Status(args) => status(settings, &args).await,
        CacheCommand::Refresh => {
            let args = SetupArgs {
                provider: None,
                dry_run: false,
                json: false,
                prune: false,
                fix_opts: false,
                metrics_textfile: None,
            };
            super::setup::setup(settings, &args).await
        }
        CacheCommand::Invalidate(args) => invalidate(settings, &args).await,
        CacheCommand::Prune => prune(settings).await,
    }
}

fn say(text: &str) -> Result<()> {
    super::write_stdout(text.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// init

async fn init(settings: &Settings, args: &CacheInitArgs) -> Result<()> {
    let kind = match args.backend.as_deref() {
        Some("tpm") => BackendKind::Tpm,
        Some("hsm") => BackendKind::Hsm,
        _ => {
            return Err(Error::Usage(
                "--backend is missing. Available backends: tpm, hsm. Re-run with --backend tpm or --backend hsm.".into(),
            ))
        }
    };
    if kind == BackendKind::Hsm
        && (args.key_path.is_some() || args.with_key.is_some() || args.tpm2_pcrs.is_some())
    {
        return Err(Error::Usage(
            "--key-path, --with-key and --tpm2-pcrs apply to --backend tpm only".into(),
        ));
    }
    let path = settings.cache.path.clone();
    refuse_to_replace(
        &path,
        args.force,
        "its entries are lost; 'psi cache refresh' fills it again",
    )?;
    match kind {
        BackendKind::Tpm => init_tpm(settings, args, &path).await?,
        BackendKind::Hsm => init_hsm(settings, &path).await?,
    }
    let config = &settings.cache;
    if config.backend != Some(kind) || !config.enabled {
        say(&format!(
            "Set 'cache: {{enabled: true, backend: {}}}' in {} so psi serve and psi setup use it.\n",
            kind.as_str(),
            settings.config_path.display()
        ))?;
    }
    Ok(())
}

/// Refuses to overwrite `path` unless `--force`; `loss` says what replacing it costs.
fn refuse_to_replace(path: &Path, force: bool, loss: &str) -> Result<()> {
    if !force && path.exists() {
        return Err(Error::Usage(format!(
            "{} already exists; pass --force to replace it ({loss})",
            path.display()
        )));
    }
    Ok(())
}

async fn init_tpm(settings: &Settings, args: &CacheInitArgs, path: &Path) -> Result<()> {
    let key_path = args
        .key_path
        .clone()
        .unwrap_or_else(|| settings.cache.key_path.clone());
    refuse_to_replace(
        &key_path,
        args.force,
        "a cache sealed with the current key can no longer be read",
    )?;
    let with_key = match &args.with_key {
        Some(text) => WithKey::parse(text).map_err(|e| Error::Usage(format!("--with-key: {e}")))?,
        None => WithKey::Auto,
    };
    let pcrs = match (&args.tpm2_pcrs, with_key) {
        (Some(_), WithKey::Host) => {
            return Err(Error::Usage(
                "--tpm2-pcrs needs a TPM2 key: use --with-key tpm2, host+tpm2 or auto".into(),
            ))
        }
        (Some(text), _) => {
            Some(PcrList::parse(text).map_err(|e| Error::Usage(format!("--tpm2-pcrs: {e}")))?)
        }
        (None, WithKey::Host) => None,
        // The original bound the key to PCR 7 (the Secure Boot state).
        (None, _) => Some(PcrList::parse("7").expect("a valid PCR list")),
    };

    let key = aead::random_key()?;
    let sealer = SystemdCreds::new("systemd-creds".into(), with_key, pcrs);
    let credential = sealer
        .encrypt_credential(KEY_CREDENTIAL, key.as_ref())
        .await
        .map_err(|err| match err.root() {
            Error::ProviderUnavailable { .. } => Error::Subprocess(
                "systemd-creds not found. TPM backend requires systemd >= 250 with TPM2 support. Install systemd-container or choose a different backend.".into(),
            ),
            _ => Error::Subprocess(format!(
                "{err}. Check that this host has a TPM2 and the current user has access."
            )),
        })?;
    ensure_parent(&key_path)?;
    fsutil::write_atomic(&key_path, &credential, fsutil::PRIVATE)?;
    // The key is at hand: write the empty cache with it, no $CREDENTIALS_DIRECTORY needed.
    cache::save(path, &Backend::Tpm(key), &Entries::empty()).await?;
    say(&format!(
        "Sealed TPM key → {key}\nEmpty cache    → {cache}\npsi unseals the key itself with systemd-creds; a unit of your own may instead pass\n  LoadCredentialEncrypted={KEY_CREDENTIAL}:{key}\n",
        key = key_path.display(),
        cache = path.display()
    ))
}

async fn init_hsm(settings: &Settings, path: &Path) -> Result<()> {
    let config = settings
        .providers
        .nitrokeyhsm
        .as_ref()
        .ok_or_else(cache::hsm_not_configured)?;
    let backend = Backend::Hsm(NitrokeyHsm::from_config(config, &settings.state_dir)?.into());
    cache::save(path, &backend, &Entries::empty()).await?;
    // Read it back: proves the PIN, the login and the private key, as psi serve will need.
    cache::load(path, &backend)
        .await
        .map_err(|e| e.context(format!("wrote {}, but cannot read it back", path.display())))?;
    say(&format!(
        "Empty cache → {}\nCache will be unsealed via PKCS#11 at 'psi serve' startup.\n",
        path.display()
    ))
}

fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fsutil::ensure_dir(dir, 0o700),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// status

#[derive(Debug, Serialize)]
struct Status {
    path: PathBuf,
    enabled: bool,
    /// The configured backend.
    backend: Option<&'static str>,
    present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// The file's modification time, ISO-8601 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_written: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header_error: Option<String>,
    /// The backend tag in the file's header.
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<u8>,
    /// 1: the original's format; 2: psi's, with an authenticated header.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u8>,
    /// Whether the file was decrypted (`--verify`) and what came of it.
    verify: Verify,
}

#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Verify {
    NotRequested,
    NoBackend,
    Ok { entries: usize },
    Unreadable { error: String },
}

async fn status(settings: &Settings, args: &CacheStatusArgs) -> Result<()> {
    let config = &settings.cache;
    let path = settings.cache.path.clone();
    let info = cache::inspect(&path)?;
    let header = info.as_ref().and_then(|i| i.header.as_ref().ok().copied());
    // A file without a readable header (bad magic, 0 to 5 bytes) cannot be decrypted
    // either: --verify fails on it as on any other unreadable file.
    let verify = match info.as_ref().map(|i| &i.header) {
        Some(Ok(_)) if args.verify => verify(settings).await,
        Some(Err(error)) if args.verify => Verify::Unreadable {
            error: error.clone(),
        },
        _ => Verify::NotRequested,
    };
    let report = Status {
        path: path.clone(),
        enabled: config.enabled,
        backend: config.backend.map(BackendKind::as_str),
        present: info.is_some(),
        size: info.as_ref().map(|i| i.size),
        last_written: info.as_ref().map(|i| Utc::of(i.mtime).isoformat()),
        header_error: info.as_ref().and_then(|i| i.header.clone().err()),
        tag: header.map(|h| h.tag),
        version: header.map(|h| h.version),
        verify,
    };
    super::print_report(&report, args.json, render_status)?;
    match &report.verify {
        Verify::Unreadable { error } => Err(Error::Cache(format!(
            "cannot decrypt {}: {error}",
            path.display()
        ))),
        _ => Ok(()),
    }
}

async fn verify(settings: &Settings) -> Verify {
    let registry = match Registry::from_config(&settings.providers, &settings.state_dir) {
        Ok(registry) => registry,
        Err(err) => {
            return Verify::Unreadable {
                error: err.to_string(),
            }
        }
    };
    let backend = match Backend::from_settings(settings, &registry) {
        Ok(Some(backend)) => backend,
        Ok(None) => return Verify::NoBackend,
        Err(err) => {
            return Verify::Unreadable {
                error: err.to_string(),
            }
        }
    };
    match cache::load(&settings.cache.path, &backend).await {
        Ok(Some(loaded)) => Verify::Ok {
            entries: loaded.entries.len(),
        },
        Ok(None) => Verify::Unreadable {
            error: "the file disappeared".into(),
        },
        Err(err) => Verify::Unreadable {
            error: err.to_string(),
        },
    }
}

/// The original's layout (labels padded to column 15), plus the format version.
fn render_status(status: &Status) -> String {
    let mut out = format!(
        "Cache path:    {}\nEnabled:       {}\nBackend:       {}\n",
        status.path.display(),
        if status.enabled { "True" } else { "False" },
        status.backend.unwrap_or("(none)")
    );
    let (Some(size), Some(written)) = (status.size, &status.last_written) else {
        out.push_str("File:          not provisioned\n");
        return out;
    };
    out.push_str(&format!(
        "File size:     {size} bytes\nLast written:  {written}\n"
    ));
    if let Some(error) = &status.header_error {
        out.push_str(&format!("Header:        {error}\n"));
        return out;
    }
    if let (Some(tag), Some(version)) = (status.tag, status.version) {
        let backend = match BackendKind::from_tag(tag) {
            Some(kind) => kind.as_str().to_owned(),
            None => format!("unknown ({tag:#04x})"),
        };
        let format = match version {
            cache::format::VERSION_ORIGINAL => "original format, header not authenticated",
            cache::format::VERSION_AUTHENTICATED => "header authenticated",
            _ => "unsupported",
        };
        out.push_str(&format!(
            "On-disk tag:   {backend} (version {version}: {format})\n"
        ));
    }
    out.push_str(&match &status.verify {
        Verify::NotRequested => "Entries:       not counted (pass --verify to decrypt)\n".into(),
        Verify::NoBackend => "Entries:       cannot verify — no backend configured\n".into(),
        Verify::Ok { entries } => format!("Entries:       {entries}\n"),
        Verify::Unreadable { error } => format!("Entries:       unreadable — {error}\n"),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// invalidate and prune

/// The configured backend, which these commands need to rewrite the file.
fn open_backend(settings: &Settings) -> Result<(Backend, Registry)> {
    let registry = Registry::from_config(&settings.providers, &settings.state_dir)?;
    let backend = Backend::from_settings(settings, &registry)?
        .ok_or_else(|| Error::Cache("Cache is not enabled or has no backend configured.".into()))?;
    Ok((backend, registry))
}

/// Loads the cache for a change; an error when there is no file.
async fn load_for_change(path: &Path, backend: &Backend) -> Result<Entries> {
    match cache::load(path, backend).await? {
        Some(loaded) => Ok(loaded.entries),
        None => Err(Error::Cache(format!(
            "No cache file at {}; run 'psi cache init' first.",
            path.display()
        ))),
    }
}

async fn invalidate(settings: &Settings, args: &CacheInvalidateArgs) -> Result<()> {
    let (backend, _registry) = open_backend(settings)?;
    let state = StateDir::new(&settings.state_dir);
    let _lock = state.lock_setup().await?;
    let path = settings.cache.path.clone();
    let mut entries = load_for_change(&path, &backend).await?;
    let mut podman = PodmanNames::new(settings);
    let (mut dropped, mut unresolved) = (0, 0);
    for arg in &args.secrets {
        match resolve(arg, &state, &mut podman).await {
            Ok(mapping) => {
                if entries.remove(&entries.digest(&mapping)) {
                    dropped += 1;
                    say(&format!("Dropped {arg} from cache.\n"))?;
                } else {
                    say(&format!("No cache entry for {arg}.\n"))?;
                }
            }
            Err(err) => {
                unresolved += 1;
                eprintln!("psi: {arg}: {err}");
            }
        }
    }
    if dropped > 0 {
        cache::save(&path, &backend, &entries).await?;
    }
    match unresolved {
        0 => Ok(()),
        n => Err(Error::Incomplete(format!(
            "{n} of {} argument(s) did not name a mapping file, a secret ID with a mapping, or a Podman secret",
            args.secrets.len()
        ))),
    }
}

/// Podman's secrets, listed once and only when an argument needs them.
struct PodmanNames<'a> {
    settings: &'a Settings,
    secrets: Option<Vec<SecretInfo>>,
}

impl<'a> PodmanNames<'a> {
    fn new(settings: &'a Settings) -> PodmanNames<'a> {
        PodmanNames {
            settings,
            secrets: None,
        }
    }

    /// The ID of the Podman secret called `name`.
    async fn id_of(&mut self, name: &str) -> Result<Option<String>> {
        if self.secrets.is_none() {
            let podman = Podman::new(crate::podman::configured_socket(self.settings)?);
            self.secrets = Some(podman.list_secrets().await?);
        }
        Ok(self
            .secrets
            .iter()
            .flatten()
            .find(|s| s.name == name)
            .map(|s| s.id.clone()))
    }
}

/// An argument to its mapping: a mapping file; else a secret ID with a mapping in the state
/// directory; else a Podman secret name, through its ID.
async fn resolve(arg: &str, state: &StateDir, podman: &mut PodmanNames<'_>) -> Result<Mapping> {
    let file = Path::new(arg);
    if file.is_file() {
        let bytes = crate::fsutil::read_capped(file, crate::fsutil::MAPPING)
            .map_err(|e| Error::io("cannot read", file, e))?;
        return Mapping::parse(&bytes).map_err(|reason| {
            Error::Refused(format!(
                "{} is not a mapping file: {reason}",
                file.display()
            ))
        });
    }
    let Ok(id) = SecretId::parse(arg) else {
        return Err(Error::Refused(
            "no such file, and not a secret name or ID".into(),
        ));
    };
    match state.read_mapping(&id) {
        Err(Error::NoMapping(_)) => {}
        other => return other,
    }
    let podman_id = podman.id_of(arg).await.map_err(|e| {
        e.context(format!(
            "no mapping {} and Podman could not be asked for a secret of that name",
            state.mapping_path(&id).display()
        ))
    })?;
    let Some(podman_id) = podman_id else {
        return Err(Error::Refused(format!(
            "not a mapping file, nor a secret ID with a mapping in {}, nor a Podman secret name",
            state.root().display()
        )));
    };
    let podman_id = SecretId::parse(&podman_id).map_err(Error::Refused)?;
    state.read_mapping(&podman_id).map_err(|e| match e {
        Error::NoMapping(_) => Error::Refused(format!(
            "Podman secret {arg} (ID {podman_id}) has no mapping in {}; it is not a psi secret",
            state.root().display()
        )),
        other => other,
    })
}

async fn prune(settings: &Settings) -> Result<()> {
    let (backend, _registry) = open_backend(settings)?;
    let state = StateDir::new(&settings.state_dir);
    let _lock = state.lock_setup().await?;
    let path = settings.cache.path.clone();
    let mut entries = load_for_change(&path, &backend).await?;
    let mut live = HashSet::new();
    for id in state.list_mappings()? {
        let id = SecretId::parse(&id).map_err(Error::Refused)?;
        live.insert(entries.digest(&state.read_mapping(&id)?));
    }
    let before = entries.len();
    entries.retain(|digest| live.contains(digest));
    let removed = before - entries.len();
    if removed > 0 {
        cache::save(&path, &backend, &entries).await?;
    }
    say(&format!(
        "Pruned {removed} of {before} cache entries; {} kept.\n",
        entries.len()
    ))
}
