//! `psi infisical tls issue|renew|status`: TLS certificates from Infisical PKI.
//!
//! - `issue`: every configured certificate, issued anew (cert-manager profile, or the 2024
//!   CA route when `ca_id` is set); outputs and the state file written atomically.
//! - `renew` (the daily timer): certificates whose `notAfter`, read from the certificate
//!   file (not the configured ttl), is within `renew_before` are renewed (cert-manager renew
//!   route, or a new issue on the 2024 server); a missing or unreadable certificate is issued.
//! - `status`: valid / needs renewal / expired / not issued, from the certificate file
//!   (`status.rs`).
//!
//! The certificate inspection is [`crate::provider::infisical::cert`]'s. Hooks ([`hooks`])
//! run after a certificate was written. Every certificate is processed; any failure
//! (issuing, writing, a hook) makes the command fail at the end.
//!
//! Files: key always 0600; cert, chain, fullchain (the certificate, then the chain) and CA
//! `output.mode` (default 0640); each PEM file ends with one newline. State:
//! `state_dir/tls/<name>.json` (the original's fields; `expires_at` is the certificate's
//! notAfter; `/metrics` and `renew --metrics-textfile` report it). Progress goes to stderr; only `status` writes to stdout. Private keys are never
//! logged.

mod hooks;
mod status;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use self::hooks::{run_hooks, HOOK_TIMEOUT};
pub use self::status::StatusRow;
use self::status::TIMER_PROPERTIES;
use crate::cli::{TlsCommand, TlsStatusArgs};
use crate::config::{CertConfig, Settings};
use crate::error::{Error, Result, ResultExt};
use crate::fsutil;
use crate::metrics;
use crate::provider::infisical::cert::{check_key_match, pem_file, read_cert, Standing};
use crate::provider::infisical::{Infisical, IssueRequest, Issued};

/// `state_dir/tls/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertState {
    pub certificate_id: String,
    pub serial_number: String,
    pub common_name: String,
    pub issued_at: f64,
    pub expires_at: f64,
    pub profile_id: String,
}

/// Runs `psi infisical tls ...`.
pub async fn run(settings: &Settings, command: TlsCommand) -> Result<()> {
    let config = settings
        .providers
        .infisical
        .as_ref()
        .filter(|c| !c.tls.certificates.is_empty())
        .ok_or_else(|| Error::Refused("No TLS configuration found in config.".into()))?;
    let certs: Vec<(&String, &CertConfig)> = config.tls.certificates.iter().collect();
    match command {
        TlsCommand::Status(args) => status(settings, &certs, &args).await,
        TlsCommand::Issue | TlsCommand::Renew(_) => {
            let client = Infisical::new(config, &settings.state_dir)?;
            let renew = matches!(command, TlsCommand::Renew(_));
            let mut failures = Vec::new();
            let mut changed = 0;
            for (name, cert) in &certs {
                match process(settings, &client, name, cert, renew).await {
                    Ok(wrote) => changed += usize::from(wrote),
                    Err(why) => {
                        eprintln!("  {name}: FAILED: {why}");
                        failures.push(format!("{name}: {why}"));
                    }
                }
            }
            let textfile = match &command {
                TlsCommand::Renew(args) => args.metrics_textfile.as_deref(),
                _ => None,
            };
            let written = textfile.map_or(Ok(()), |path| write_metrics(settings, path));
            if failures.is_empty() {
                written?;
                match (renew, changed) {
                    (true, 0) => eprintln!("No renewals needed."),
                    (true, n) => eprintln!("{n} certificate(s) renewed."),
                    (false, _) => eprintln!("All certificates issued."),
                }
                Ok(())
            } else {
                Err(Error::Incomplete(format!(
                    "{} certificate(s) failed: {}",
                    failures.len(),
                    failures.join("; ")
                )))
            }
        }
    }
}

/// The certificate family (each certificate's notAfter, from its state file) and the
/// Infisical provider's counters, as a node_exporter textfile at `path`.
fn write_metrics(settings: &Settings, path: &Path) -> Result<()> {
    let scrape = metrics::Scrape::from_settings(settings);
    let mut out = metrics::Text::new();
    metrics::write_certificates(&mut out, &scrape.not_after());
    metrics::METRICS.write_providers(&mut out, &[crate::provider::infisical::NAME]);
    metrics::write_textfile(path, &out.into_string())
}

fn state_path(settings: &Settings, name: &str) -> PathBuf {
    crate::state::StateDir::new(&settings.state_dir).tls_state_path(name)
}

/// The saved state; unparseable state counts as absent.
pub fn load_state(settings: &Settings, name: &str) -> Option<CertState> {
    read_state(&state_path(settings, name))
}

/// The state file at `path` (serve reads each certificate's notAfter from it for
/// `/metrics`); unparseable state counts as absent.
pub fn read_state(path: &Path) -> Option<CertState> {
    let bytes = crate::fsutil::read_capped(path, crate::fsutil::CONFIG).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Issues or renews one certificate, writes it, runs its hooks. `Ok(false)`: not due.
async fn process(
    settings: &Settings,
    client: &Infisical,
    name: &str,
    cert: &CertConfig,
    renew: bool,
) -> Result<bool> {
    let state = load_state(settings, name);
    let Some(issued) = obtain(client, name, cert, state.as_ref(), renew).await? else {
        return Ok(false);
    };
    write_outputs(cert, &issued)?;
    save_state(settings, name, cert, &issued, state)?;
    eprintln!("  {}: {name}", if renew { "Renewed" } else { "Issued" });
    let failed = run_hooks(&cert.hooks, cert.hook_timeout.unwrap_or(HOOK_TIMEOUT)).await;
    if failed > 0 {
        return Err(Error::Incomplete(format!("{failed} hook(s) failed")));
    }
    Ok(true)
}

/// A new certificate from Infisical, or with `renew` a renewal when the one on disk is due
/// (`None` when it is not). A renewal goes by the certificate ID of `state` on the
/// cert-manager API; without one, or on the 2024 server (`ca_id`), it is a new issue.
async fn obtain(
    client: &Infisical,
    name: &str,
    cert: &CertConfig,
    state: Option<&CertState>,
    renew: bool,
) -> Result<Option<Issued>> {
    if !renew {
        eprintln!("Certificate: {name}");
        return issue(client, cert).await.map(Some);
    }
    let info = match read_cert(&cert.output.cert) {
        Ok(info) => info,
        Err(why) => {
            eprintln!("Issuing: {name} (no usable certificate: {why})");
            return issue(client, cert).await.map(Some);
        }
    };
    let now = now_secs();
    if info.standing(now, cert.renew_before) == Standing::Valid {
        eprintln!("  {name}: valid, {} days remaining", info.days_left(now));
        return Ok(None);
    }
    eprintln!("Renewing: {name}");
    let issued = match (&cert.ca_id, state.map(|s| s.certificate_id.as_str())) {
        (None, Some(id)) if !id.is_empty() => {
            let short: String = id.chars().take(12).collect();
            eprintln!("  Renewing certificate ID {short}...");
            client.renew_certificate(&cert.project, id).await?
        }
        _ => issue(client, cert).await?,
    };
    Ok(Some(issued))
}

/// Writes `state_dir/tls/<name>.json` for the certificate just written; what Infisical did
/// not send (a certificate ID, a serial) comes from `previous` or the certificate file.
fn save_state(
    settings: &Settings,
    name: &str,
    cert: &CertConfig,
    issued: &Issued,
    previous: Option<CertState>,
) -> Result<()> {
    let info = read_cert(&cert.output.cert)?;
    let new_state = CertState {
        certificate_id: issued
            .certificate_id
            .clone()
            .or_else(|| previous.map(|s| s.certificate_id))
            .unwrap_or_default(),
        serial_number: issued
            .serial_number
            .clone()
            .unwrap_or_else(|| info.serial.clone()),
        common_name: cert.common_name.clone(),
        issued_at: now_secs(),
        expires_at: info.not_after as f64,
        profile_id: cert.profile_id.clone(),
    };
    let path = state_path(settings, name);
    if let Some(dir) = path.parent() {
        fsutil::ensure_dir(dir, 0o700)?;
    }
    let json = serde_json::to_vec_pretty(&new_state)
        .with_context(|| format!("cannot encode the TLS state of {name}"))?;
    fsutil::write_atomic(&path, &json, fsutil::PRIVATE)
}

/// Asks Infisical for a new certificate as configured (profile, or CA on the 2024 server).
async fn issue(client: &Infisical, cert: &CertConfig) -> Result<Issued> {
    eprintln!("  Issuing CN={} TTL={}", cert.common_name, cert.ttl);
    let request = IssueRequest {
        project: &cert.project,
        profile_id: &cert.profile_id,
        ca_id: cert.ca_id.as_deref(),
        common_name: &cert.common_name,
        alt_names: cert
            .alt_names
            .iter()
            .map(|a| (a.kind.as_str(), a.value.as_str()))
            .collect(),
        ttl: &cert.ttl,
        key_algorithm: cert.key_algorithm.as_deref(),
    };
    client.issue_certificate(&request).await
}

/// Checks that the issued certificate belongs to the key that will sit next to it: the new
/// key, or, when Infisical sent none (a renewal may not), the key already on disk.
fn check_key(cert: &CertConfig, issued: &Issued) -> Result<()> {
    let existing;
    let key_pem: &[u8] = match &issued.private_key {
        Some(key) => key.expose().as_bytes(),
        None => {
            existing = fsutil::read_capped(&cert.output.key, fsutil::PEM).with_context(|| {
                format!(
                    "Infisical sent no private key and {} cannot be read",
                    cert.output.key.display()
                )
            })?;
            &existing
        }
    };
    check_key_match(&issued.certificate, key_pem)
}

/// Writes the key (0600), then the certificate, chain, fullchain and CA (`output.mode`),
/// each atomically, once the certificate matches its key.
fn write_outputs(cert: &CertConfig, issued: &Issued) -> Result<()> {
    check_key(cert, issued)?;
    let out = &cert.output;
    let mode = out.mode.bits();
    let write = |path: &Path, text: &str, mode: u32| -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::ensure_dir(dir, 0o755)?;
        }
        fsutil::write_atomic(path, text.as_bytes(), mode)?;
        eprintln!("  Wrote {}", path.display());
        Ok(())
    };
    // The key first: a certificate never lands next to a key it does not match for long.
    if let Some(key) = &issued.private_key {
        write(&out.key, &pem_file(key.expose()), fsutil::PRIVATE)?;
    }
    let certificate = pem_file(&issued.certificate);
    write(&out.cert, &certificate, mode)?;
    let chain = issued.certificate_chain.as_deref().map(pem_file);
    if let Some(chain) = &chain {
        write(&out.chain, chain, mode)?;
    }
    if let Some(path) = &out.fullchain {
        // A renewal answer without a chain leaves the chain file as it was, and fullchain
        // goes on with that chain.
        let chain = match chain {
            Some(chain) => chain,
            None => pem_file(&read_if_present(&out.chain)?),
        };
        write(path, &format!("{}{}", *certificate, *chain), mode)?;
    }
    if let (Some(path), Some(ca)) = (&out.ca, &issued.issuing_ca_certificate) {
        write(path, &pem_file(ca), mode)?;
    }
    Ok(())
}

/// The text of `path`, or nothing when it does not exist.
fn read_if_present(path: &Path) -> Result<String> {
    match crate::fsutil::read_capped_text(path, crate::fsutil::PEM) {
        Ok(text) => Ok(text.to_string()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(Error::Io {
            context: format!("cannot read {}", path.display()),
            source: err,
        }),
    }
}

/// The row of each of `certs` at `now` (seconds since the epoch), from its certificate file
/// and state file: `tls status` and `psi status` read certificates this one way.
pub fn certificate_rows(
    settings: &Settings,
    certs: &[(&String, &CertConfig)],
    now: f64,
) -> Vec<StatusRow> {
    certs
        .iter()
        .map(|(name, cert)| {
            let info = read_cert(&cert.output.cert)
                .inspect_err(|why| tracing::debug!(name = %name, %why, "no usable certificate"))
                .ok();
            // The saved serial is only worth reading for a certificate that is there.
            let saved = info
                .as_ref()
                .and_then(|_| load_state(settings, name))
                .map(|s| s.serial_number);
            StatusRow::new(name, cert, info, saved, now)
        })
        .collect()
}

/// Prints each certificate's row: JSON when asked or when stdout is not a terminal, else a
/// table under the state of the renewal timer.
async fn status(
    settings: &Settings,
    certs: &[(&String, &CertConfig)],
    args: &TlsStatusArgs,
) -> Result<()> {
    let rows = certificate_rows(settings, certs, now_secs());
    if args.json || !std::io::stdout().is_terminal() {
        let text = serde_json::to_string_pretty(&rows).context("cannot encode the status")?;
        return super::write_stdout(format!("{text}\n").as_bytes());
    }
    let names = TIMER_PROPERTIES.map(|(name, _)| name);
    // Without systemctl (a container, a build host) the table still prints.
    let properties = crate::systemd::show(settings.scope, &args.timer, &names)
        .await
        .ok();
    // One write: `println!` would panic when the reader of stdout has gone away.
    let text = status::human(&args.timer, properties.as_deref(), &rows);
    super::write_stdout(text.as_bytes())
}
