//! The `systemd-creds` provider: values sealed with the TPM2 and/or the host key by
//! `systemd-creds encrypt`, kept as ciphertext in the mapping itself. No external service,
//! which makes it the embedded default.
//!
//! Mapping: `{"provider": "systemd-creds", "name": N, "blob": B}` where `B` is the credential
//! text systemd-creds printed (base64) and `N` the name sealed into it (decrypt checks it).
//!
//! systemd-creds 252 refuses credentials above about 880 KB of plaintext, so values above
//! [`DIRECT_LIMIT`] are sealed as an envelope: a random AES-256 key is the credential, and the
//! value is AES-256-GCM ciphertext in `"payload"` (nonce || ciphertext || tag, base64), with
//! the name as associated data so a payload cannot be moved to another name.
//!
//! The value reaches systemd-creds on stdin and comes back on stdout: never argv or env.

use std::ffi::OsString;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

use crate::config::{CredsConfig, PcrList, WithKey};
use crate::crypto::{aead, CryptoError};
use crate::error::{Error, Result};
use crate::process;
use crate::secret::{Mapping, SecretId, SecretValue};

pub const NAME: &str = "systemd-creds";

/// Largest value sealed directly as a credential; larger ones use the envelope.
pub const DIRECT_LIMIT: usize = 512 * 1024;

pub struct SystemdCreds {
    program: OsString,
    with_key: WithKey,
    pcrs: Option<PcrList>,
}

impl SystemdCreds {
    pub fn from_config(config: &CredsConfig) -> SystemdCreds {
        SystemdCreds::new(
            "systemd-creds".into(),
            config.with_key,
            config.tpm2_pcrs.clone(),
        )
    }

    /// `program` is the systemd-creds binary (a path, or a name looked up in `PATH`).
    pub fn new(program: OsString, with_key: WithKey, pcrs: Option<PcrList>) -> SystemdCreds {
        SystemdCreds {
            program,
            with_key,
            pcrs,
        }
    }

    /// Seals `value` under `name` and returns its mapping.
    pub async fn seal(&self, name: &SecretId, value: &[u8]) -> Result<Mapping> {
        if value.len() <= DIRECT_LIMIT {
            let blob = self.encrypt(name, value).await?;
            return Ok(Mapping::new(
                NAME,
                &[("name", name.as_str()), ("blob", &blob)],
            ));
        }
        let key = aead::random_key().map_err(|e| failed(e.to_string()))?;
        let payload =
            aead::seal(&key, name.as_str().as_bytes(), value).map_err(|e| failed(e.to_string()))?;
        let blob = self.encrypt(name, key.as_ref()).await?;
        let payload = B64.encode(payload);
        Ok(Mapping::new(
            NAME,
            &[
                ("name", name.as_str()),
                ("blob", &blob),
                ("payload", &payload),
            ],
        ))
    }

    /// Resolves a systemd-creds mapping.
    pub async fn lookup(&self, mapping: &Mapping) -> Result<SecretValue> {
        let invalid = |reason: String| failed(format!("invalid mapping: {reason}"));
        let name = mapping.str_field("name").map_err(invalid)?;
        let blob = mapping.str_field("blob").map_err(invalid)?;
        let payload = mapping.opt_str_field("payload").map_err(invalid)?;
        let plain = self.decrypt(name, blob).await?;
        let Some(payload) = payload else {
            return Ok(SecretValue::new(plain.to_vec()));
        };
        let payload = B64
            .decode(payload)
            .map_err(|_| invalid("'payload' is not base64".into()))?;
        let value = aead::open(&plain, name.as_bytes(), &payload).map_err(|err| match err {
            CryptoError::Authentication => failed(
                "envelope payload does not authenticate (tampered, or sealed under another name)"
                    .into(),
            ),
            other => invalid(format!("envelope: {other}")),
        })?;
        Ok(SecretValue::from(value))
    }

    async fn encrypt(&self, name: &SecretId, value: &[u8]) -> Result<String> {
        let output = self.encrypt_credential(name.as_str(), value).await?;
        let text = std::str::from_utf8(&output)
            .map_err(|_| failed("encrypt printed non-text output".into()))?;
        // The credential is base64 text; drop line breaks so it fits one JSON string.
        Ok(text.split_whitespace().collect())
    }

    /// `systemd-creds encrypt --name=NAME` of `value` (on stdin): the credential exactly as
    /// systemd-creds prints it, ready for a file that `LoadCredentialEncrypted=` reads.
    pub async fn encrypt_credential(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut args = vec![
            "encrypt".to_owned(),
            format!("--name={name}"),
            format!("--with-key={}", self.with_key.as_str()),
        ];
        if let Some(pcrs) = &self.pcrs {
            args.push(format!("--tpm2-pcrs={}", pcrs.to_arg()));
        }
        args.extend(["-".to_owned(), "-".to_owned()]);
        // The output is ciphertext: no need to keep it zeroizing.
        Ok(self.run(&args, value).await?.to_vec())
    }

    async fn decrypt(&self, name: &str, blob: &str) -> Result<Zeroizing<Vec<u8>>> {
        let args = [
            "decrypt".to_owned(),
            format!("--name={name}"),
            "-".to_owned(),
            "-".to_owned(),
        ];
        self.run(&args, blob.as_bytes()).await
    }

    async fn run(&self, args: &[String], stdin: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let verb = &args[0];
        let output = process::run(&self.program, args, stdin)
            .await
            .map_err(|err| match err {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    Error::ProviderUnavailable {
                        provider: NAME,
                        detail: format!(
                    "{} not found; install systemd 250 or newer (Debian/Fedora package 'systemd')",
                    self.program.to_string_lossy()
                ),
                    }
                }
                other => other,
            })?;
        if !output.success {
            let code = output
                .code
                .map_or("a signal".to_owned(), |c| format!("status {c}"));
            return Err(failed(format!(
                "{verb} failed ({code}): {}",
                last_line(&output.stderr)
            )));
        }
        Ok(output.stdout)
    }
}

fn failed(detail: String) -> Error {
    Error::Provider {
        provider: NAME,
        detail,
    }
}

/// systemd-creds prints warnings first ("not located on encrypted media") and the reason last.
fn last_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
}
