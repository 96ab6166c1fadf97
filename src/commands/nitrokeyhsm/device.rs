//! The commands that talk to the token: `preflight`, `init`, `test-pin`, `status` and
//! `store`. They run the provider's own code (the PKCS#11 thread, the PIN order, the public
//! key cache), so what they report is what `psi serve` will meet.

use std::path::{Path, PathBuf};

use super::{say, Check, Status};
use crate::cli::NitrokeyStoreArgs;
use crate::config::{process_env, NitrokeyConfig, Settings};
use crate::error::{Error, Result};
use crate::provider::nitrokeyhsm::{NitrokeyHsm, NAME};
use crate::secret::SecretId;

/// Where pcsc-lite's clients look for pcscd (`PCSCLITE_CSOCK_NAME` moves it, as in
/// pcsc-lite itself).
fn pcscd_socket() -> PathBuf {
    process_env("PCSCLITE_CSOCK_NAME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/pcscd/pcscd.comm"))
}

fn config(settings: &Settings) -> Result<&NitrokeyConfig> {
    settings
        .providers
        .nitrokeyhsm
        .as_ref()
        .ok_or_else(|| Error::Config {
            path: settings.config_path.clone(),
            message: "providers: nitrokeyhsm is not configured; add a 'nitrokeyhsm:' block under providers (pkcs11_module, key_label or key_id, pin)".into(),
        })
}

fn provider(settings: &Settings) -> Result<(&NitrokeyConfig, NitrokeyHsm)> {
    let config = config(settings)?;
    Ok((
        config,
        NitrokeyHsm::from_config(config, &settings.state_dir)?,
    ))
}

fn print(checks: &[Check]) -> Result<()> {
    say(&checks.iter().map(Check::render).collect::<String>())
}

/// `preflight`: every precondition of a working lookup, each PASS, WARN, FAIL or SKIP.
pub(super) async fn preflight(settings: &Settings) -> Result<()> {
    let (config, hsm) = provider(settings)?;
    say("Nitrokey HSM preflight\n")?;
    let mut checks = Vec::new();
    let module = &config.pkcs11_module;
    checks.push(if module.is_file() {
        Check::new(
            Status::Pass,
            format!("PKCS#11 module: {}", module.display()),
        )
    } else {
        Check::new(
            Status::Fail,
            format!("PKCS#11 module not found: {}", module.display()),
        )
        .hint("install opensc-pkcs11 (OpenSC) or set providers.nitrokeyhsm.pkcs11_module")
    });
    let socket = pcscd_socket();
    checks.push(if is_socket(&socket) {
        Check::new(Status::Pass, format!("pcscd socket: {}", socket.display()))
    } else {
        Check::new(Status::Fail, format!("pcscd socket not found: {}", socket.display())).hint(
            format!(
                "start the sidecar ('psi nitrokeyhsm setup-pcscd', then 'systemctl start pcscd.service'); a psi container needs the {} volume at /run/pcscd",
                config.pcscd_volume
            ),
        )
    });
    checks.push(match hsm.pin_info() {
        Ok(pin) => Check::new(
            Status::Pass,
            format!("PIN source: {}", pin.source_description()),
        ),
        Err(err) => Check::new(Status::Fail, "No HSM PIN source configured")
            .hint(err.to_string().replace('\n', "\n       ")),
    });
    if checks.iter().any(|c| c.status == Status::Fail) {
        checks.push(Check::new(
            Status::Skip,
            "HSM login and key (fix the failures above first)",
        ));
    } else {
        checks.extend(token_checks(&hsm, config).await);
    }
    checks.push(match hsm.read_public_key_cache() {
        Ok(Some(der)) => Check::new(
            Status::Pass,
            format!(
                "Public key cache: {} ({} bytes)",
                hsm.public_key_cache().display(),
                der.len()
            ),
        ),
        Ok(None) => Check::new(
            Status::Warn,
            format!(
                "Public key cache not found: {}",
                hsm.public_key_cache().display()
            ),
        )
        .hint("run 'psi nitrokeyhsm init' to extract and cache it"),
        Err(err) => Check::new(Status::Fail, format!("Public key cache: {err}"))
            .hint("run 'psi nitrokeyhsm init' to write it again"),
    });
    checks.push(if settings.state_dir.is_dir() {
        Check::new(
            Status::Pass,
            format!("State directory: {}", settings.state_dir.display()),
        )
    } else {
        Check::new(
            Status::Warn,
            format!(
                "State directory does not exist: {} (created on first store)",
                settings.state_dir.display()
            ),
        )
    });
    print(&checks)?;
    if checks.iter().any(|c| c.status == Status::Fail) {
        return Err(Error::Incomplete(
            "preflight failed; fix the failures above".into(),
        ));
    }
    say("All checks passed.\n")
}

/// Login, then the key: what the token itself says.
async fn token_checks(hsm: &NitrokeyHsm, config: &NitrokeyConfig) -> Vec<Check> {
    match hsm.status().await {
        Err(err) => vec![Check::new(Status::Fail, format!("HSM login: {err}"))],
        Ok(status) => {
            let login = Check::new(
                Status::Pass,
                format!(
                    "HSM login: slot {} ({}), token '{}' serial {}",
                    status.slot_index,
                    status.slot_description,
                    status.token_label,
                    status.token_serial
                ),
            );
            let key = match &status.key {
                Some(key) => Check::new(
                    Status::Pass,
                    format!(
                        "Key found: label={}, id={} (by {})",
                        key.label, key.id_hex, key.found_by
                    ),
                ),
                None => Check::new(
                    Status::Fail,
                    format!(
                        "Key not found: label='{}', id='{}'",
                        config.key_label, config.key_id
                    ),
                )
                .hint(
                    "generate or import the RSA key pair on the token, or fix key_id / key_label",
                ),
            };
            vec![login, key]
        }
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// `init`: the public key from the token into the cache, for encryption without the token.
pub(super) async fn init(settings: &Settings) -> Result<()> {
    let (_, hsm) = provider(settings)?;
    let der = hsm.public_key_from_token().await?;
    hsm.write_public_key_cache(&der)?;
    say(&format!(
        "Public key cached: {} ({} bytes)\n",
        hsm.public_key_cache().display(),
        der.len()
    ))
}

/// `test-pin`: where the PIN comes from, and whether the token accepts it.
pub(super) async fn test_pin(settings: &Settings) -> Result<()> {
    let (_, hsm) = provider(settings)?;
    let pin = hsm.pin_info()?;
    say(&format!(
        "  PIN source: {}\n  PIN length: {} characters\n",
        pin.source_description(),
        pin.pin.expose().chars().count()
    ))?;
    match hsm.status().await {
        Ok(_) => say("  HSM login: OK\n"),
        Err(err) => {
            say(&format!("  HSM login failed: {err}\n"))?;
            Err(Error::Incomplete("the HSM did not accept the login".into()))
        }
    }
}

/// `status`: the configuration psi uses and whether the token answers (exit 1 if not).
pub(super) async fn status(settings: &Settings) -> Result<()> {
    let (config, hsm) = provider(settings)?;
    let mut out = String::from("Nitrokey HSM provider status\n");
    out.push_str(&format!(
        "  PKCS#11 module: {}\n",
        config.pkcs11_module.display()
    ));
    let slot = match (&config.token_label, &config.token_serial) {
        (Some(label), _) => format!("token label '{label}'"),
        (None, Some(serial)) => format!("token serial {serial}"),
        (None, None) => format!("{} (index among slots with a token)", config.slot),
    };
    out.push_str(&format!("  Slot: {slot}\n"));
    out.push_str(&format!(
        "  Key label: {}\n  Key ID: {}\n",
        config.key_label, config.key_id
    ));
    out.push_str(&format!("  pcscd volume: {}\n", config.pcscd_volume));
    out.push_str(&match hsm.pin_info() {
        Ok(pin) => format!("  PIN source: {}\n", pin.source_description()),
        Err(_) => "  PIN source: none (see 'psi nitrokeyhsm preflight')\n".into(),
    });
    out.push_str(&match hsm.read_public_key_cache() {
        Ok(Some(der)) => format!(
            "  Public key cache: {} ({} bytes)\n",
            hsm.public_key_cache().display(),
            der.len()
        ),
        Ok(None) => "  Public key cache: not found (run 'psi nitrokeyhsm init')\n".into(),
        Err(err) => format!("  Public key cache: unreadable ({err})\n"),
    });
    let connection = hsm.status().await;
    out.push_str(&match &connection {
        Ok(s) => format!(
            "  HSM connection: OK (token '{}', key {})\n",
            s.token_label,
            if s.key.is_some() {
                "found"
            } else {
                "NOT found"
            }
        ),
        Err(err) => format!("  HSM connection: FAILED ({err})\n"),
    });
    say(&out)?;
    match connection {
        Ok(s) if s.key.is_some() => Ok(()),
        Ok(_) => Err(Error::Incomplete("the key is not on the token".into())),
        Err(_) => Err(Error::Incomplete("the HSM is not reachable".into())),
    }
}

/// `store NAME [--register]`: stdin encrypted to the HSM's public key (no token needed once
/// the key is cached).
pub(super) async fn store(settings: &Settings, args: &NitrokeyStoreArgs) -> Result<()> {
    let name = SecretId::parse(&args.name).map_err(|e| Error::Usage(format!("NAME: {e}")))?;
    let (_, hsm) = provider(settings)?;
    let value = super::super::stdin_value("nitrokeyhsm")?;
    let mapping = hsm
        .seal(&name, &value)
        .await
        .map_err(|e| e.context(format!("encrypt {name}")))?;
    super::super::keep_sealed(settings, &name, &mapping.to_bytes(), NAME, args.register).await
}
