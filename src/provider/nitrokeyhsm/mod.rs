//! The Nitrokey HSM provider (any PKCS#11 token with an RSA key pair): values are sealed in
//! software with the token's public key into the hybrid envelope ([`crate::crypto::envelope`])
//! and opened by unwrapping the AES key on the token with the private key.
//!
//! Mapping: `{"provider": "nitrokeyhsm", "blob": B}`, `B` the standard base64 of the envelope,
//! as the original wrote it. The secret's name is not part of the envelope (original format).
//!
//! The token is used only on the PKCS#11 thread (`thread.rs`, with the session operations in
//! `session.rs`); this module is the async face:
//! lookup, seal, and what the `psi nitrokeyhsm` commands need (PIN source, token status,
//! public key and its cache file).
//!
//! The public key cache (`public_key_cache`, else `state_dir/nitrokeyhsm-pubkey.der`, DER
//! SubjectPublicKeyInfo, 0644) is read when it exists, so sealing never needs the token or
//! the PIN; the original wrote the default path but never read it.

mod session;
mod thread;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

pub use thread::{KeyInfo, TokenOptions, TokenStatus};

use crate::config::{process_env, resolve_credential, CredentialSource, NitrokeyConfig};
use crate::crypto::envelope::{self, Envelope};
use crate::crypto::oaep::{OaepHash, PublicKey};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::secret::{Mapping, SecretId, SecretString, SecretValue};

pub const NAME: &str = "nitrokeyhsm";

/// Mode of the public key cache: it is public.
const PUBLIC_KEY_MODE: u32 = 0o644;

/// How the token unwraps the AES key in the current session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `CKM_RSA_PKCS_OAEP` on the token.
    Oaep,
    /// `CKM_RSA_X_509` on the token, OAEP decoding by OpenSSL in software (tokens that reject
    /// the OAEP-SHA256 parameters, such as SoftHSM 2.6.1).
    RawWithSoftwareUnpadding,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Oaep => "oaep",
            Mechanism::RawWithSoftwareUnpadding => "raw-rsa+software-oaep",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Mechanism::Oaep => 1,
            Mechanism::RawWithSoftwareUnpadding => 2,
        }
    }

    fn from_u8(value: u8) -> Option<Mechanism> {
        match value {
            1 => Some(Mechanism::Oaep),
            2 => Some(Mechanism::RawWithSoftwareUnpadding),
            _ => None,
        }
    }
}

/// The PIN and where it came from.
#[derive(Debug, Clone)]
pub struct PinInfo {
    pub pin: SecretString,
    pub source: CredentialSource,
}

impl PinInfo {
    /// The source as the original printed it (`PIN source: ...`).
    pub fn source_description(&self) -> String {
        match self.source {
            CredentialSource::CredentialsDirectory => format!(
                "systemd credential ({})",
                Path::new(&process_env("CREDENTIALS_DIRECTORY").unwrap_or_default())
                    .join(PIN_CREDENTIAL)
                    .display()
            ),
            CredentialSource::ConfigFile => "config file".into(),
            CredentialSource::Environment => format!("{PIN_ENV} env var"),
        }
    }
}

const PIN_CREDENTIAL: &str = "hsm-pin";
const PIN_ENV: &str = "PSI_NITROKEYHSM_PIN";

/// Resolves the PIN: `$CREDENTIALS_DIRECTORY/hsm-pin` > config `pin` > `PSI_NITROKEYHSM_PIN`.
fn resolve_pin(config_pin: Option<&SecretString>) -> Result<PinInfo> {
    match resolve_credential(&process_env, PIN_CREDENTIAL, config_pin, PIN_ENV) {
        Ok(Some((pin, source))) => Ok(PinInfo { pin, source }),
        Ok(None) => Err(failed(format!(
            "No HSM PIN found. Provide it via one of:\n  1. systemd \
             LoadCredentialEncrypted={PIN_CREDENTIAL} (sets $CREDENTIALS_DIRECTORY)\n  2. 'pin' \
             field in providers.nitrokeyhsm config\n  3. {PIN_ENV} environment variable"
        ))),
        Err(message) => Err(failed(message)),
    }
}

pub struct NitrokeyHsm {
    token: thread::Token,
    public_key_cache: PathBuf,
    public_key: tokio::sync::OnceCell<PublicKey>,
    pin: Arc<dyn Fn() -> Result<PinInfo> + Send + Sync>,
}

impl NitrokeyHsm {
    /// The provider for `providers.nitrokeyhsm`. Nothing touches the token yet.
    pub fn from_config(config: &NitrokeyConfig, state_dir: &Path) -> Result<NitrokeyHsm> {
        let key_id = config.key_id.bytes().to_vec();
        let config_pin = config.pin.clone();
        let options = TokenOptions {
            module: config.pkcs11_module.clone(),
            slot_index: config.slot as usize,
            token_label: config.token_label.clone(),
            token_serial: config.token_serial.clone(),
            key_id,
            key_label: config.key_label.clone(),
            pin: Arc::new(move || resolve_pin(config_pin.as_ref())),
            oaep_hash: OaepHash::Sha256,
        };
        let cache = config
            .public_key_cache
            .clone()
            .unwrap_or_else(|| default_public_key_cache(state_dir));
        NitrokeyHsm::new(options, cache)
    }

    /// The provider with explicit options (tests pass another OAEP hash).
    pub fn new(options: TokenOptions, public_key_cache: PathBuf) -> Result<NitrokeyHsm> {
        let pin = options.pin.clone();
        Ok(NitrokeyHsm {
            token: thread::Token::start(options)?,
            public_key_cache,
            public_key: tokio::sync::OnceCell::new(),
            pin,
        })
    }

    /// Resolves a nitrokeyhsm mapping: unwrap the AES key on the token, decrypt in software.
    pub async fn lookup(&self, mapping: &Mapping) -> Result<SecretValue> {
        let blob = mapping
            .str_field("blob")
            .map_err(|reason| failed(format!("invalid mapping: {reason}")))?;
        let bytes = B64
            .decode(blob.trim())
            .map_err(|_| failed("invalid mapping: 'blob' is not standard base64".into()))?;
        self.open_envelope(b"", &bytes).await.map(SecretValue::from)
    }

    /// Seals `value` with the public key; `_name` is not bound into the envelope (the
    /// original format has no associated data).
    pub async fn seal(&self, _name: &SecretId, value: &[u8]) -> Result<Mapping> {
        let bytes = self.seal_envelope(b"", value).await?;
        Ok(Mapping::new(NAME, &[("blob", &B64.encode(bytes))]))
    }

    /// Seals `plaintext` into a hybrid envelope for the token's key, with `aad` bound into
    /// its AES-GCM part (`b""`: the original format). Software only, with the public key.
    pub async fn seal_envelope(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let key = self.public_key().await?;
        envelope::seal_with_aad(key, aad, plaintext)
            .map_err(|e| failed(format!("HSM encryption failed: {e}")))
    }

    /// Opens a hybrid envelope sealed with `aad`: the AES key is unwrapped on the token (on
    /// the PKCS#11 thread), the rest is decrypted in software.
    pub async fn open_envelope(&self, aad: &[u8], bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let envelope = Envelope::parse(bytes).map_err(decryption)?;
        let wrapped = envelope.wrapped_key().to_vec();
        let key = self
            .token
            .call(move |worker| worker.unwrap_key(&wrapped))
            .await?;
        tracing::debug!(
            provider = NAME,
            mechanism = self.mechanism().map(Mechanism::as_str),
            "AES key unwrapped"
        );
        envelope.open_with_aad(&key, aad).map_err(decryption)
    }

    /// The sealing key: the cache file when it exists, else the token's (then cached).
    async fn public_key(&self) -> Result<&PublicKey> {
        self.public_key
            .get_or_try_init(|| async {
                if let Some(der) = self.read_public_key_cache()? {
                    return PublicKey::from_der(&der).map_err(|e| {
                        failed(format!(
                            "public key cache {}: {e}; delete it or run 'psi nitrokeyhsm init'",
                            self.public_key_cache.display()
                        ))
                    });
                }
                let der = self.public_key_from_token().await?;
                if let Err(err) = self.write_public_key_cache(&der) {
                    tracing::warn!(provider = NAME, error = %err, "cannot write the public key cache");
                }
                PublicKey::from_der(&der).map_err(|e| failed(format!("token public key: {e}")))
            })
            .await
    }

    /// The PIN and its source; an error when none is configured.
    pub fn pin_info(&self) -> Result<PinInfo> {
        (self.pin)()
    }

    /// Opens the token and logs in (or reuses the session), and looks up the key.
    pub async fn status(&self) -> Result<TokenStatus> {
        self.token.call(|worker| worker.status()).await
    }

    /// The public key from the token, as DER SubjectPublicKeyInfo.
    pub async fn public_key_from_token(&self) -> Result<Vec<u8>> {
        self.token.call(|worker| worker.public_key()).await
    }

    /// Where the public key cache lives.
    pub fn public_key_cache(&self) -> &Path {
        &self.public_key_cache
    }

    /// The cache file's bytes, `None` when it does not exist.
    pub fn read_public_key_cache(&self) -> Result<Option<Vec<u8>>> {
        match crate::fsutil::read_capped(&self.public_key_cache, crate::fsutil::PEM) {
            Ok(der) => Ok(Some(der.to_vec())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::io(
                "cannot read the public key cache",
                &self.public_key_cache,
                err,
            )),
        }
    }

    /// Writes `der` (checked to be an RSA public key) to the cache, atomically, 0644.
    pub fn write_public_key_cache(&self, der: &[u8]) -> Result<()> {
        PublicKey::from_der(der).map_err(|e| failed(format!("not caching the public key: {e}")))?;
        if let Some(dir) = self.public_key_cache.parent() {
            if !dir.as_os_str().is_empty() {
                fsutil::ensure_dir(dir, 0o700)?;
            }
        }
        fsutil::write_atomic(&self.public_key_cache, der, PUBLIC_KEY_MODE)
    }

    /// How the current session unwraps keys (`None` before the first unwrap).
    pub fn mechanism(&self) -> Option<Mechanism> {
        self.token.mechanism()
    }
}

/// `state_dir/nitrokeyhsm-pubkey.der`.
pub fn default_public_key_cache(state_dir: &Path) -> PathBuf {
    crate::state::StateDir::new(state_dir).hsm_public_key_path()
}

fn decryption(err: crate::crypto::CryptoError) -> Error {
    failed(format!("HSM decryption failed: {err}"))
}

fn failed(detail: String) -> Error {
    Error::Provider {
        provider: NAME,
        detail,
    }
}

fn unavailable(detail: String) -> Error {
    Error::ProviderUnavailable {
        provider: NAME,
        detail,
    }
}
