//! `psi infisical tls issue|renew|status`: TLS certificates from Infisical PKI.
//!
//! - `issue`: every configured certificate, issued anew (cert-manager profile, or the 2024
//!   CA route when `ca_id` is set); outputs and the state file written atomically.
//! - `renew` (the daily timer): certificates whose `notAfter`, read from the certificate
//!   file (not the configured ttl), is within `renew_before` are renewed (cert-manager renew
//!   route, or a new issue on the 2024 server); a missing or unreadable certificate is issued.
//! - `status`: valid / needs renewal / expired / not issued, from the certificate file.
//!
//! Hooks run after a certificate was written: each one split like a shell word list (no shell
//! runs it), with a timeout, its output logged, under psi's policy for helpers
//! ([`crate::process`]: without psi's secrets, credentials directory or AWS keys). Every
//! certificate is processed; any failure (issuing, writing, a hook) makes the command fail at
//! the end.
//!
//! Files: key always 0600; cert, chain, fullchain (the certificate, then the chain) and CA
//! `output.mode` (default 0640); each PEM file ends with one newline. State:
//! `state_dir/tls/<name>.json` (the original's fields; `expires_at` is the certificate's
//! notAfter). Progress goes to stderr; only `status` writes to stdout. Private keys are never
//! logged.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{CertConfig, Hook, Settings};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::provider::infisical::{Infisical, IssueRequest, Issued};

/// How long a hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_TIMER: &str = "psi-tls-renew.timer";

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Issue every configured certificate anew
    Issue,
    /// Renew the certificates whose notAfter is within renew_before (the daily timer)
    Renew,
    /// Show each certificate's state: valid, needs renewal, expired, not issued
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (the default when stdout is not a terminal)
    #[arg(long)]
    pub json: bool,
    /// The renewal timer to report on (terminal output only)
    #[arg(long, value_name = "NAME", default_value = DEFAULT_TIMER)]
    pub timer: String,
}

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

pub async fn run(settings: &Settings, command: TlsCommand) -> Result<()> {
    let config = settings
        .providers
        .infisical
        .as_ref()
        .filter(|c| !c.tls.certificates.is_empty())
        .ok_or_else(|| Error::Failed("No TLS configuration found in config.".into()))?;
    let certs: Vec<(&String, &CertConfig)> = config.tls.certificates.iter().collect();
    match command {
        TlsCommand::Status(args) => status(settings, &certs, &args),
        TlsCommand::Issue | TlsCommand::Renew => {
            let client = Infisical::new(config, &settings.state_dir)?;
            let renew = matches!(command, TlsCommand::Renew);
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
            if failures.is_empty() {
                match (renew, changed) {
                    (true, 0) => eprintln!("No renewals needed."),
                    (true, n) => eprintln!("{n} certificate(s) renewed."),
                    (false, _) => eprintln!("All certificates issued."),
                }
                Ok(())
            } else {
                Err(Error::Failed(format!(
                    "{} certificate(s) failed: {}",
                    failures.len(),
                    failures.join("; ")
                )))
            }
        }
    }
}

fn state_path(settings: &Settings, name: &str) -> PathBuf {
    settings
        .state_dir
        .join(crate::state::TLS_DIR)
        .join(format!("{name}.json"))
}

/// The saved state; unparseable state counts as absent.
pub fn load_state(settings: &Settings, name: &str) -> Option<CertState> {
    let bytes =
        crate::fsutil::read_capped(&state_path(settings, name), crate::fsutil::CONFIG).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// notBefore and notAfter (seconds since the epoch) and serial of a PEM certificate file.
pub fn read_cert(path: &Path) -> std::result::Result<CertInfo, String> {
    let pem = crate::fsutil::read_capped(path, crate::fsutil::PEM)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let x509 = X509::from_pem(&pem)
        .map_err(|err| format!("{} is not a PEM certificate: {err}", path.display()))?;
    let serial = x509
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_lowercase()))
        .map_err(|err| format!("{}: bad serial: {err}", path.display()))?;
    Ok(CertInfo {
        not_before: epoch_of(x509.not_before())?,
        not_after: epoch_of(x509.not_after())?,
        serial,
    })
}

pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
    pub serial: String,
}

fn epoch_of(time: &Asn1TimeRef) -> std::result::Result<i64, String> {
    let zero = Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let diff = zero.diff(time).map_err(|e| e.to_string())?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
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
    let issued = if renew {
        match read_cert(&cert.output.cert) {
            Ok(info) => {
                let left = info.not_after as f64 - now_secs();
                if left > cert.renew_before.as_secs_f64() {
                    eprintln!(
                        "  {name}: valid, {} days remaining",
                        (left / 86_400.0).floor() as i64
                    );
                    return Ok(false);
                }
                eprintln!("Renewing: {name}");
                match (
                    &cert.ca_id,
                    state.as_ref().map(|s| s.certificate_id.as_str()),
                ) {
                    (None, Some(id)) if !id.is_empty() => {
                        let short: String = id.chars().take(12).collect();
                        eprintln!("  Renewing certificate ID {short}...");
                        client.renew_certificate(&cert.project, id).await?
                    }
                    _ => issue(client, cert).await?,
                }
            }
            Err(why) => {
                eprintln!("Issuing: {name} (no usable certificate: {why})");
                issue(client, cert).await?
            }
        }
    } else {
        eprintln!("Certificate: {name}");
        issue(client, cert).await?
    };
    write_outputs(cert, &issued)?;
    let info = read_cert(&cert.output.cert).map_err(Error::Failed)?;
    let new_state = CertState {
        certificate_id: issued
            .certificate_id
            .clone()
            .or_else(|| state.as_ref().map(|s| s.certificate_id.clone()))
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
        .map_err(|err| Error::Failed(format!("cannot encode the TLS state of {name}: {err}")))?;
    fsutil::write_atomic(&path, &json, fsutil::PRIVATE)?;
    eprintln!("  {}: {name}", if renew { "Renewed" } else { "Issued" });
    let failed = run_hooks(&cert.hooks, cert.hook_timeout.unwrap_or(HOOK_TIMEOUT)).await;
    if failed > 0 {
        return Err(Error::Failed(format!("{failed} hook(s) failed")));
    }
    Ok(true)
}

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
fn check_key_match(cert: &CertConfig, issued: &Issued) -> Result<()> {
    let x509 = X509::from_pem(issued.certificate.as_bytes()).map_err(|err| {
        Error::Failed(format!("Infisical sent an unparseable certificate: {err}"))
    })?;
    let existing;
    let key_pem: &[u8] = match &issued.private_key {
        Some(key) => key.expose().as_bytes(),
        None => {
            existing = crate::fsutil::read_capped(&cert.output.key, crate::fsutil::PEM).map_err(
                |err| {
                    Error::Failed(format!(
                        "Infisical sent no private key and {} cannot be read: {err}",
                        cert.output.key.display()
                    ))
                },
            )?;
            &existing
        }
    };
    let key = openssl::pkey::PKey::private_key_from_pem(key_pem)
        .map_err(|_| Error::Failed("the private key is not a PEM private key".into()))?;
    let public = x509
        .public_key()
        .map_err(|err| Error::Failed(format!("certificate public key: {err}")))?;
    if !public.public_eq(&key) {
        return Err(Error::Failed(
            "the issued certificate does not match the private key; nothing written".into(),
        ));
    }
    Ok(())
}

fn write_outputs(cert: &CertConfig, issued: &Issued) -> Result<()> {
    check_key_match(cert, issued)?;
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

/// PEM text as written to a file: with exactly one final newline, which Infisical leaves
/// out (`cat cert.pem chain.pem` would then run two certificates together, and OpenSSL reads
/// none). Empty text, a root CA's empty chain, stays empty. Zeroized: it may be the key.
fn pem_file(text: &str) -> Zeroizing<String> {
    let text = text.trim_end();
    let mut pem = Zeroizing::new(String::with_capacity(text.len() + 1));
    if !text.is_empty() {
        pem.push_str(text);
        pem.push('\n');
    }
    pem
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

/// Runs `hooks` in order; returns how many failed (missing program, non-zero exit,
/// timeout). Their command lines were split when the config was loaded.
pub async fn run_hooks(hooks: &[Hook], timeout: Duration) -> usize {
    let mut failed = 0;
    for hook in hooks {
        match run_hook(hook, timeout).await {
            Ok(()) => eprintln!("  Hook OK: {}", hook.line()),
            Err(why) => {
                eprintln!("  Hook FAILED: {}\n    {why}", hook.line());
                failed += 1;
            }
        }
    }
    failed
}

/// A hook's command: no shell, no stdin, output captured, killed when it times out, and
/// under psi's policy for helpers ([`crate::process`]: without psi's secrets).
fn hook_command(program: &str, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::from(crate::process::command(program, args));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run_hook(hook: &Hook, timeout: Duration) -> std::result::Result<(), String> {
    let program = hook.program();
    let child = hook_command(program, hook.args())
        .spawn()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("timed out after {} s", timeout.as_secs()))?
        .map_err(|err| format!("waiting for {program}: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    tracing::info!(hook = hook.line(), status = %output.status, stdout = %stdout.trim_end(), stderr = %stderr.trim_end(), "TLS hook finished");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{}; stderr: {}", output.status, stderr.trim_end()))
    }
}

/// One row of `status`.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub common_name: String,
    pub serial_number: Option<String>,
    pub issued: Option<String>,
    pub expires: Option<String>,
    pub days_left: Option<i64>,
    /// `valid`, `needs_renewal`, `expired` or `not_issued`.
    pub status: &'static str,
}

fn date(secs: i64) -> String {
    let utc = crate::timefmt::Utc::of(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64));
    format!("{:04}-{:02}-{:02}", utc.year, utc.month, utc.day)
}

fn status(settings: &Settings, certs: &[(&String, &CertConfig)], args: &StatusArgs) -> Result<()> {
    let now = now_secs();
    let mut rows = Vec::new();
    for (name, cert) in certs {
        let row = match read_cert(&cert.output.cert) {
            Ok(info) => {
                let left = info.not_after as f64 - now;
                let status = if left <= 0.0 {
                    "expired"
                } else if left <= cert.renew_before.as_secs_f64() {
                    "needs_renewal"
                } else {
                    "valid"
                };
                let serial = load_state(settings, name)
                    .map(|s| s.serial_number)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(info.serial);
                StatusRow {
                    name: (*name).clone(),
                    common_name: cert.common_name.clone(),
                    serial_number: Some(serial),
                    issued: Some(date(info.not_before)),
                    expires: Some(date(info.not_after)),
                    days_left: Some((left / 86_400.0).floor() as i64),
                    status,
                }
            }
            Err(why) => {
                tracing::debug!(name = %name, %why, "no usable certificate");
                StatusRow {
                    name: (*name).clone(),
                    common_name: cert.common_name.clone(),
                    serial_number: None,
                    issued: None,
                    expires: None,
                    days_left: None,
                    status: "not_issued",
                }
            }
        };
        rows.push(row);
    }
    if args.json || !std::io::stdout().is_terminal() {
        let text = serde_json::to_string_pretty(&rows)
            .map_err(|err| Error::Failed(format!("cannot encode the status: {err}")))?;
        return super::write_stdout(format!("{text}\n").as_bytes());
    }
    // One write: `println!` would panic when the reader of stdout has gone away.
    let mut out = String::new();
    print_timer(&mut out, settings, &args.timer);
    print_table(&mut out, &rows);
    super::write_stdout(out.as_bytes())
}

fn print_timer(out_text: &mut String, settings: &Settings, timer: &str) {
    use std::fmt::Write as _;
    let user = (settings.scope == crate::config::Scope::User).then_some("--user");
    let out = crate::process::command("systemctl", user)
        .args([
            "show",
            "--property=ActiveState,LastTriggerUSec,NextElapseUSecRealtime",
            "--",
            timer,
        ])
        .stderr(Stdio::null())
        .output();
    let _ = writeln!(out_text, "Timer: {timer}");
    match out {
        Ok(out) if out.status.success() => {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let label = match key {
                    "ActiveState" => "State",
                    "LastTriggerUSec" => "Last check",
                    "NextElapseUSecRealtime" => "Next check",
                    _ => continue,
                };
                if !value.is_empty() && value != "n/a" {
                    let _ = writeln!(out_text, "  {label}: {value}");
                }
            }
        }
        _ => {
            let _ = writeln!(out_text, "  State: unknown (systemctl unavailable)");
        }
    }
    out_text.push('\n');
}

fn print_table(out_text: &mut String, rows: &[StatusRow]) {
    use std::fmt::Write as _;
    let header = [
        "Name",
        "Common Name",
        "Serial",
        "Issued",
        "Expires",
        "Days Left",
        "Status",
    ];
    let dash = "—".to_owned();
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let serial = r.serial_number.as_ref().map_or(dash.clone(), |s| {
                if s.chars().count() > 16 {
                    format!("{}...", s.chars().take(16).collect::<String>())
                } else {
                    s.clone()
                }
            });
            [
                r.name.clone(),
                r.common_name.clone(),
                serial,
                r.issued.clone().unwrap_or_else(|| dash.clone()),
                r.expires.clone().unwrap_or_else(|| dash.clone()),
                r.days_left.map_or(dash.clone(), |d| d.to_string()),
                r.status.replace('_', " "),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    out_text.push_str("TLS Certificates\n");
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        let _ = writeln!(out_text, "{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in table {
        line(row.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn hooks_are_argv_not_shell() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a b");
        let hook = Hook::parse(&format!("touch '{}'", file.display())).unwrap();
        assert_eq!(block(run_hooks(&[hook], HOOK_TIMEOUT)), 0);
        assert!(file.exists(), "quoted argument kept whole");
        // No shell: `;` and `>` are plain arguments to echo.
        let redirect = dir.path().join("redirected");
        let hook = Hook::parse(&format!("echo hi > {}", redirect.display())).unwrap();
        assert_eq!(block(run_hooks(&[hook], HOOK_TIMEOUT)), 0);
        assert!(!redirect.exists());
    }

    #[test]
    fn hook_failures_are_counted() {
        let hooks = ["false", "/nonexistent/hook", "true"].map(|h| Hook::parse(h).unwrap());
        assert_eq!(block(run_hooks(&hooks, HOOK_TIMEOUT)), 2);
    }

    #[test]
    fn hook_timeout() {
        let start = std::time::Instant::now();
        let failed = block(run_hooks(
            &[Hook::parse("sleep 30").unwrap()],
            Duration::from_millis(200),
        ));
        assert_eq!(failed, 1);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn pem_files_end_with_one_newline() {
        let end = "-----END CERTIFICATE-----";
        for sent in [end.to_owned(), format!("{end}\n"), format!("{end}\r\n\n")] {
            assert_eq!(*pem_file(&sent), format!("{end}\n"), "{sent:?}");
        }
        assert_eq!(*pem_file(""), "");
        assert_eq!(*pem_file("\n"), "");
    }
}
