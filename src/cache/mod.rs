//! The secret cache: values held in memory by `psi serve`, persisted encrypted in one file
//! (`cache.enc`) that `psi setup` writes, so lookups survive a provider outage.
//!
//! - [`Entries`]: the in-memory map. Keys are HMAC-SHA256 digests of the mapping's canonical
//!   JSON under a random per-cache key (the original's scheme: the same mapping on two hosts
//!   gives unrelated keys, and the file reveals no coordinates).
//! - [`Backend`]: what protects the file: a 32-byte AES key sealed by systemd-creds (TPM2 or
//!   host key), delivered as `$CREDENTIALS_DIRECTORY/psi-cache-key` or unsealed by psi
//!   from the key file (`<config_dir>/cache.key`); or the Nitrokey HSM's
//!   RSA key through the provider's own PKCS#11 thread.
//! - [`load`], [`save`], [`inspect`]: the file. [`format`](mod@format) is the pure byte format.
//!
//! psi writes the file as version 2 (header authenticated as AES-GCM associated data) and
//! reads the original's version 1.

pub mod format;
pub mod live;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::config::{process_env, CacheBackend, EnvLookup, Settings};
use crate::crypto::aead::KEY_LEN;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::provider::nitrokeyhsm::NitrokeyHsm;
use crate::provider::Registry;
use crate::secret::{Mapping, SecretValue};
use format::{Header, Payload, HEADER_LEN};

/// HMAC-SHA256 of a mapping's canonical JSON: the key of one cache entry.
pub type Digest = [u8; 32];

/// The credential name of the TPM backend's key (`LoadCredentialEncrypted=psi-cache-key:...`).
pub const KEY_CREDENTIAL: &str = "psi-cache-key";

/// The cache's entries and the HMAC key their digests are made with.
pub struct Entries {
    hmac_key: Zeroizing<[u8; KEY_LEN]>,
    /// `hmac_key`'s schedule, made once: every lookup digests a mapping.
    mac: crate::crypto::HmacSha256,
    map: HashMap<Digest, SecretValue>,
}

impl Entries {
    /// No entries, and a fresh random HMAC key.
    pub fn empty() -> Entries {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        // Only fails when the OS has no entropy source, which nothing in psi survives.
        openssl::rand::rand_bytes(key.as_mut()).expect("randomness for the cache HMAC key");
        Entries::with_key(key)
    }

    fn with_key(hmac_key: Zeroizing<[u8; KEY_LEN]>) -> Entries {
        Entries::with_map(hmac_key, HashMap::new())
    }

    fn with_map(hmac_key: Zeroizing<[u8; KEY_LEN]>, map: HashMap<Digest, SecretValue>) -> Entries {
        Entries {
            mac: crate::crypto::HmacSha256::new(hmac_key.as_ref()),
            hmac_key,
            map,
        }
    }

    /// The entry key of `mapping`: HMAC-SHA256 over its canonical JSON (every field).
    pub fn digest(&self, mapping: &Mapping) -> Digest {
        self.mac.mac(mapping.canonical().as_bytes())
    }

    pub fn get(&self, digest: &Digest) -> Option<&SecretValue> {
        self.map.get(digest)
    }

    pub fn insert(&mut self, digest: Digest, value: SecretValue) {
        self.map.insert(digest, value);
    }

    /// Removes the entry; returns whether there was one.
    pub fn remove(&mut self, digest: &Digest) -> bool {
        self.map.remove(digest).is_some()
    }

    /// Keeps only the entries whose digest `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Digest) -> bool) {
        self.map.retain(|digest, _| keep(digest));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// No entries, the same HMAC key: for rebuilding the entry set while digests stay valid.
    pub fn with_same_key(&self) -> Entries {
        Entries::with_key(self.hmac_key.clone())
    }
}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entries(<{} entries, key redacted>)", self.map.len())
    }
}

/// Which backend protects a cache file (the `cache.backend` setting).
pub type BackendKind = CacheBackend;

impl CacheBackend {
    /// The header's backend tag.
    pub fn tag(self) -> u8 {
        match self {
            CacheBackend::Tpm => format::TAG_TPM,
            CacheBackend::Hsm => format::TAG_HSM,
        }
    }

    pub fn from_tag(tag: u8) -> Option<CacheBackend> {
        match tag {
            format::TAG_TPM => Some(CacheBackend::Tpm),
            format::TAG_HSM => Some(CacheBackend::Hsm),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheBackend::Tpm => "tpm",
            CacheBackend::Hsm => "hsm",
        }
    }
}

/// An opened backend: the key material, or the token that holds it.
pub enum Backend {
    /// The AES-256 key, from `$CREDENTIALS_DIRECTORY/psi-cache-key` or unsealed by psi from
    /// the key file ([`read_tpm_key`]).
    Tpm(Zeroizing<[u8; KEY_LEN]>),
    /// The Nitrokey HSM provider's instance (its PKCS#11 thread unwraps the AES key).
    Hsm(Arc<NitrokeyHsm>),
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Tpm(_) => "Backend::Tpm(<key redacted>)",
            Backend::Hsm(_) => "Backend::Hsm",
        })
    }
}

impl Backend {
    /// The configured backend: `Ok(None)` when `cache.enabled` is false or `cache.backend`
    /// is unset. TPM reads the key as [`read_tpm_key`] says; HSM shares
    /// the registry's Nitrokey provider (one PKCS#11 thread per process).
    pub fn from_settings(settings: &Settings, registry: &Registry) -> Result<Option<Backend>> {
        let cache = &settings.cache;
        let Some(kind) = cache.backend.filter(|_| cache.enabled) else {
            return Ok(None);
        };
        match kind {
            CacheBackend::Tpm => {
                read_tpm_key(&process_env, &settings.cache.key_path).map(Backend::Tpm)
            }
            CacheBackend::Hsm => registry
                .nitrokeyhsm()
                .map(Backend::Hsm)
                .ok_or_else(hsm_not_configured),
        }
        .map(Some)
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Tpm(_) => CacheBackend::Tpm,
            Backend::Hsm(_) => CacheBackend::Hsm,
        }
    }

    async fn seal(&self, header: Header, plaintext: &[u8]) -> Result<Vec<u8>> {
        let aad = header.aad();
        match self {
            Backend::Tpm(key) => format::seal_tpm(key, &aad, plaintext).map_err(Error::Cache),
            Backend::Hsm(hsm) => hsm.seal_envelope(&aad, plaintext).await,
        }
    }

    async fn open(&self, header: Header, payload: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let aad = header.aad();
        match self {
            Backend::Tpm(key) => format::open_tpm(key, &aad, payload).map_err(Error::Cache),
            Backend::Hsm(hsm) => hsm.open_envelope(&aad, payload).await,
        }
    }
}

/// The message when the HSM backend is chosen without the provider (the original's).
pub fn hsm_not_configured() -> Error {
    Error::Cache(
        "HSM cache backend requires providers.nitrokeyhsm to be configured. Add a nitrokeyhsm \
         provider block to your config and run 'psi nitrokeyhsm init' first."
            .into(),
    )
}

/// The TPM backend's key: `$CREDENTIALS_DIRECTORY/psi-cache-key` when systemd unsealed it
/// for the unit (`LoadCredentialEncrypted=`, the original's units), else the sealed file
/// `key_path` unsealed here with `systemd-creds decrypt`. psi's generated system units take
/// the second way: systemd fails a unit whose credential file is missing, and a host whose
/// key is not provisioned yet must still serve (live, with the cache unavailable). User
/// units pass the key with `LoadCredentialEncrypted=`.
pub fn read_tpm_key(env: EnvLookup<'_>, key_path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let delivered = env("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(|dir| Path::new(&dir).join(KEY_CREDENTIAL))
        .filter(|path| path.exists());
    let bytes = match delivered {
        Some(path) => fsutil::read_capped(&path, fsutil::TOKEN)
            .map_err(|err| Error::io("cannot read the TPM cache key", &path, err))?,
        None if key_path.exists() => unseal_key(key_path)?,
        None => {
            return Err(Error::Cache(format!(
                "no TPM cache key: {} does not exist and systemd passed no {KEY_CREDENTIAL} \
                 credential. Run 'psi cache init --backend tpm' to provision it (the \
                 generated psi-cache-key.service does so at boot).",
                key_path.display()
            )))
        }
    };
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        Error::Cache(format!(
            "TPM cache key has wrong size: expected {KEY_LEN} bytes, got {}. Re-run 'psi cache init --backend tpm'.",
            bytes.len()
        ))
    })?;
    Ok(Zeroizing::new(key))
}

/// `systemd-creds decrypt --name=psi-cache-key KEY_PATH -`: the key comes back on a pipe and
/// is never written anywhere.
fn unseal_key(key_path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let name = format!("--name={KEY_CREDENTIAL}");
    let args = [
        OsStr::new("decrypt"),
        OsStr::new(&name),
        key_path.as_os_str(),
        OsStr::new("-"),
    ];
    let output = crate::process::run_blocking(OsStr::new("systemd-creds"), args)
        .map_err(|err| Error::Cache(format!("cannot unseal the TPM cache key: {err}")))?;
    if !output.success {
        return Err(Error::Cache(format!(
            "cannot unseal the TPM cache key {}: {}. If it was sealed on another host or \
             before a TPM change, replace it with 'psi cache init --backend tpm --force'.",
            key_path.display(),
            output.stderr
        )));
    }
    Ok(output.stdout)
}

/// A cache file read and decrypted.
#[derive(Debug)]
pub struct Loaded {
    pub entries: Entries,
    /// The file's format version (1: the original's, 2: authenticated header).
    pub version: u8,
    pub mtime: SystemTime,
}

/// Reads and decrypts the cache file; `Ok(None)` when there is none. A version 1 payload
/// (the original's ID-keyed cache) loads as no entries under a new HMAC key.
pub async fn load(path: &Path, backend: &Backend) -> Result<Option<Loaded>> {
    let Some(Sealed {
        header,
        body,
        mtime,
    }) = read_file(path, backend.kind().tag())?
    else {
        return Ok(None);
    };
    let plaintext = backend.open(header, &body).await?;
    let entries = match format::decode_payload(&plaintext).map_err(Error::Cache)? {
        Payload::Legacy => {
            tracing::info!(path = %path.display(), "the cache holds a version 1 payload (keyed by Podman secret IDs); discarding its entries and starting with a new HMAC key");
            Entries::empty()
        }
        Payload::Current {
            hmac_key,
            entries,
            foreign_keys,
        } => {
            if foreign_keys > 0 {
                tracing::info!(path = %path.display(), ignored = foreign_keys, "cache entries whose key is not an HMAC digest were ignored");
            }
            Entries::with_map(hmac_key, entries)
        }
    };
    Ok(Some(Loaded {
        entries,
        version: header.version,
        mtime,
    }))
}

/// The file's header, the sealed body after it, and the modification time (of the same open
/// file); `None` when missing. The header is read and checked against the backend's `tag`
/// first, and the body only when the file is within [`fsutil::CACHE`]: a stray or hostile
/// file costs six bytes.
fn read_file(path: &Path, tag: u8) -> Result<Option<Sealed>> {
    let Some(Opened {
        mut file,
        meta,
        header,
    }) = open_file(path)?
    else {
        return Ok(None);
    };
    let header = header.map_err(Error::Cache)?;
    header.check(path, tag).map_err(Error::Cache)?;
    let too_big = || {
        Error::Cache(format!(
            "{} {}; remove it ('psi setup' writes a new one)",
            path.display(),
            fsutil::over(fsutil::CACHE)
        ))
    };
    if meta.len() > fsutil::CACHE.bytes as u64 {
        return Err(too_big());
    }
    let hint = (meta.len() as usize).saturating_sub(HEADER_LEN);
    let body =
        fsutil::read_bounded(&mut file, hint, fsutil::CACHE.bytes - HEADER_LEN).map_err(|err| {
            match err {
                fsutil::Bounded::Over => too_big(),
                fsutil::Bounded::Io(err) => Error::io("cannot read the cache file", path, err),
            }
        })?;
    Ok(Some(Sealed {
        header,
        body,
        mtime: meta.modified().unwrap_or(UNIX_EPOCH),
    }))
}

/// A cache file as read from disk, not yet decrypted.
struct Sealed {
    header: Header,
    body: Zeroizing<Vec<u8>>,
    mtime: SystemTime,
}

/// A cache file opened, with its header (or why it is unreadable) read.
struct Opened {
    file: std::fs::File,
    meta: std::fs::Metadata,
    /// The header, or why it is unreadable: kept as text for [`FileInfo`] to show.
    header: std::result::Result<Header, String>,
}

/// Opens the cache file without blocking (a regular file only) and reads its header;
/// `None` when missing.
fn open_file(path: &Path) -> Result<Option<Opened>> {
    let (file, meta) = match fsutil::open_regular(path) {
        Ok(opened) => opened,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io("cannot open the cache file", path, err)),
    };
    let mut start = Vec::with_capacity(HEADER_LEN);
    (&file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut start)
        .map_err(|err| Error::io("cannot read the cache file", path, err))?;
    let header = Header::parse(path, &start);
    Ok(Some(Opened { file, meta, header }))
}

/// Encrypts `entries` and atomically replaces the file (version 2, mode 0600), creating
/// its directory (0700) when missing.
pub async fn save(path: &Path, backend: &Backend, entries: &Entries) -> Result<()> {
    let header = Header {
        version: format::VERSION_AUTHENTICATED,
        tag: backend.kind().tag(),
    };
    let keyed: Vec<(String, &[u8])> = entries
        .map
        .iter()
        .map(|(digest, value)| (format::digest_hex(digest), value.expose()))
        .collect();
    let written_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let plaintext = format::encode_payload(entries.hmac_key.as_ref(), &keyed, written_at);
    let sealed = backend.seal(header, &plaintext).await?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + sealed.len());
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(&sealed);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::ensure_dir(dir, 0o700)?;
    }
    fsutil::write_atomic(path, &bytes, fsutil::PRIVATE)
}

/// What `psi cache status` shows without decrypting.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub size: u64,
    pub mtime: SystemTime,
    /// The header, or why it is unreadable (too short, bad magic); text, as the struct is
    /// cloned and `Error` is not.
    pub header: std::result::Result<Header, String>,
}

/// Size, modification time and header of the cache file (reads 6 bytes); `Ok(None)` when
/// there is no file.
pub fn inspect(path: &Path) -> Result<Option<FileInfo>> {
    Ok(
        open_file(path)?.map(|Opened { meta, header, .. }| FileInfo {
            size: meta.len(),
            mtime: meta.modified().unwrap_or(UNIX_EPOCH),
            header,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries_with_test_key() -> Entries {
        Entries::with_key(Zeroizing::new(std::array::from_fn(|i| i as u8)))
    }

    fn digest_of(entries: &Entries, mapping_json: &str) -> String {
        let mapping = Mapping::parse(mapping_json.as_bytes()).unwrap();
        format::digest_hex(&entries.digest(&mapping))
    }

    #[test]
    fn digests_match_the_original() {
        let entries = entries_with_test_key();
        // Appendix A: the mapping as the original wrote it, key 00..1f.
        assert_eq!(
            digest_of(
                &entries,
                r#"{"provider": "infisical", "project": "myproject", "path": "/app", "key": "DB_HOST"}"#
            ),
            "8391ce5d8c32d7eef4a4191614765ec4e301bae6042e6dad1c05fcf62ab22ba4"
        );
        // Computed with Python's hmac and json.dumps(sort_keys=True, separators=(",", ":")).
        assert_eq!(
            digest_of(&entries, r#"{"provider":"infisical","key":"é/ü\n"}"#),
            "a5795fde0af6fe69f561a8f86a85710d1c9e521aecdedf144dd826d4cf99797b"
        );
        let tricky =
            r#"{"provider":"systemd-creds","name":"q\"b\\s\/\u2028😀\u0001\u007f","blob":"x"}"#;
        let mapping = Mapping::parse(tricky.as_bytes()).unwrap();
        assert_eq!(
            mapping.canonical(),
            r#"{"blob":"x","name":"q\"b\\s/\u2028\ud83d\ude00\u0001\u007f","provider":"systemd-creds"}"#
        );
        assert_eq!(
            format::digest_hex(&entries.digest(&mapping)),
            "e57c43240fbe037621d4047bf80f91cc8a219a4e31f3f54e34bc8a842fc6f6f8"
        );
        // Key order in the file does not matter; another HMAC key gives another digest.
        let reordered = r#"{"key": "DB_HOST", "path": "/app", "provider": "infisical", "project": "myproject"}"#;
        assert_eq!(
            digest_of(&entries, reordered),
            "8391ce5d8c32d7eef4a4191614765ec4e301bae6042e6dad1c05fcf62ab22ba4"
        );
        assert_ne!(
            digest_of(&Entries::empty(), reordered),
            digest_of(&entries, reordered)
        );
    }

    #[test]
    fn entry_operations() {
        let mut entries = Entries::empty();
        let a = entries.digest(&Mapping::new("infisical", &[("key", "A")]));
        let b = entries.digest(&Mapping::new("infisical", &[("key", "B")]));
        entries.insert(a, SecretValue::new(b"1".to_vec()));
        entries.insert(b, SecretValue::new(b"2".to_vec()));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries.get(&a).unwrap().expose(), b"1");
        entries.retain(|d| *d == a);
        assert!(entries.get(&b).is_none());
        assert!(entries.remove(&a));
        assert!(!entries.remove(&a));
        assert!(entries.is_empty());
        let rebuilt = entries.with_same_key();
        assert_eq!(
            rebuilt.digest(&Mapping::new("infisical", &[("key", "A")])),
            a
        );
        assert_eq!(format!("{rebuilt:?}"), "Entries(<0 entries, key redacted>)");
    }

    #[test]
    fn tpm_key_from_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = dir.path().join("cache.key");
        let sealed = sealed.as_path();
        let missing = format!(
            "no TPM cache key: {} does not exist and systemd passed no psi-cache-key credential. Run 'psi cache init --backend tpm' to provision it (the generated psi-cache-key.service does so at boot).",
            sealed.display()
        );
        let no_env = |_: &str| None;
        assert_eq!(
            read_tpm_key(&no_env, sealed).unwrap_err().to_string(),
            missing
        );
        let creds = dir.path().to_path_buf();
        let env = move |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| creds.clone().into());
        assert_eq!(read_tpm_key(&env, sealed).unwrap_err().to_string(), missing);
        std::fs::write(dir.path().join(KEY_CREDENTIAL), [1u8; 31]).unwrap();
        assert_eq!(
            read_tpm_key(&env, sealed).unwrap_err().to_string(),
            "TPM cache key has wrong size: expected 32 bytes, got 31. Re-run 'psi cache init --backend tpm'."
        );
        std::fs::write(dir.path().join(KEY_CREDENTIAL), [7u8; 32]).unwrap();
        assert_eq!(*read_tpm_key(&env, sealed).unwrap(), [7u8; 32]);
    }
}
