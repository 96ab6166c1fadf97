//! The state directory: the one place that knows its layout. Mapping files are
//! `state_dir/<SECRET_ID>` (0600), exactly as the original wrote them, so a state directory
//! moves between the two implementations unchanged.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, ResultExt};
use crate::fsutil::{self, FileStamp};
use crate::secret::{Mapping, SecretId};

/// Mode of the state directory when psi creates it.
const DIR_MODE: u32 = 0o700;

// psi's own entries in the state directory, beside the mapping files. Each must be listed in
// [`OWN_NAMES`]: a secret ID naming one would let a store or delete overwrite or remove it.

/// The encrypted secret cache (unless `cache.path` puts it elsewhere).
const CACHE_FILE: &str = "cache.enc";
/// The Nitrokey HSM public key cache (unless `public_key_cache` puts it elsewhere).
const HSM_PUBLIC_KEY_FILE: &str = "nitrokeyhsm-pubkey.der";
/// `psi infisical tls` state: `tls/<name>.json`.
const TLS_DIR: &str = "tls";
/// The pcscd sidecar's build directory for users.
const PCSCD_DIR: &str = "pcscd";
/// The socket token for `psi client`.
const SOCKET_TOKEN_FILE: &str = ".socket-token";
/// The setup lock ([`StateDir::lock_setup`]).
const SETUP_LOCK_FILE: &str = ".setup.lock";
/// The last setup run's record for monitoring ([`crate::setup::record`]).
const SETUP_STATUS_FILE: &str = ".setup-status.json";

/// Every name psi keeps in the state directory. [`SecretId::parse`] refuses all of them, so
/// adding an entry above and here reserves its name. (Dot files are refused anyway; they are
/// listed so the list stays the whole layout. Infisical tokens are `.token.<hash>.json` and
/// temporary files `.<name>.<random>`, covered by the dot rule.)
pub const OWN_NAMES: &[&str] = &[
    CACHE_FILE,
    HSM_PUBLIC_KEY_FILE,
    TLS_DIR,
    PCSCD_DIR,
    SOCKET_TOKEN_FILE,
    SETUP_LOCK_FILE,
    SETUP_STATUS_FILE,
];

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The socket token for `psi client` (`--token-file`). A dot file: no secret ID can
    /// name it, and listings skip it.
    pub fn socket_token_path(&self) -> PathBuf {
        self.root.join(SOCKET_TOKEN_FILE)
    }

    /// The encrypted cache's default place.
    pub fn cache_path(&self) -> PathBuf {
        self.root.join(CACHE_FILE)
    }

    /// The Nitrokey HSM public key cache's default place.
    pub fn hsm_public_key_path(&self) -> PathBuf {
        self.root.join(HSM_PUBLIC_KEY_FILE)
    }

    /// What `psi infisical tls` remembers of certificate `name`.
    pub fn tls_state_path(&self, name: &str) -> PathBuf {
        self.root.join(TLS_DIR).join(format!("{name}.json"))
    }

    /// The last setup run's record, which serve reads for `/metrics`. A dot file.
    pub fn setup_status_path(&self) -> PathBuf {
        self.root.join(SETUP_STATUS_FILE)
    }

    /// The pcscd sidecar's build directory, for users (root builds under /opt).
    pub fn pcscd_dir(&self) -> PathBuf {
        self.root.join(PCSCD_DIR)
    }

    /// The cached Infisical access token of auth configuration `key` (`.token.<key>.json`,
    /// the original's name, so both read the same file).
    pub fn access_token_path(&self, key: &str) -> PathBuf {
        self.root.join(format!(".token.{key}.json"))
    }

    pub fn mapping_path(&self, id: &SecretId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Reads and parses the mapping for `id`. This is on the lookup hot path: one read, no
    /// writes.
    pub fn read_mapping(&self, id: &SecretId) -> Result<Mapping> {
        self.read_mapping_stamped(id).map(|(mapping, _)| mapping)
    }

    /// [`StateDir::read_mapping`], with the stamp of the file it read: the resolver keeps
    /// it to tell, with one `stat`, that a later lookup would read the same mapping.
    pub fn read_mapping_stamped(&self, id: &SecretId) -> Result<(Mapping, FileStamp)> {
        let path = self.mapping_path(id);
        let (bytes, stamp) = match fsutil::read_capped_stamped(&path, fsutil::MAPPING) {
            Ok(read) => read,
            Err(err) if err.kind() == ErrorKind::NotFound => {
                return Err(Error::NoMapping(id.to_string()))
            }
            Err(err) => return Err(Error::io("cannot read mapping", &path, err)),
        };
        let mapping = Mapping::parse(&bytes).map_err(|reason| Error::CorruptMapping {
            id: id.to_string(),
            reason,
        })?;
        Ok((mapping, stamp))
    }

    /// Warns when the directory is writable by its group or by others: whoever can write
    /// there can replace a mapping and so choose what a container receives, or remove one.
    /// A warning rather than a refusal, so a directory an older setup left loose keeps
    /// working while the log says how to fix it. Checked when `psi serve` or a one-shot
    /// command starts and before each mapping is written.
    pub fn warn_if_shared(&self) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = fs::metadata(&self.root) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            tracing::warn!(
                state_dir = %self.root.display(),
                mode = %format!("{mode:04o}"),
                "the state directory is writable by group or others, who can replace or remove mappings; run chmod 0700 on it"
            );
        }
    }

    /// Writes the mapping bytes for `id` atomically, 0600, creating the directory (0700).
    pub fn write_mapping(&self, id: &SecretId, bytes: &[u8]) -> Result<()> {
        fsutil::ensure_dir(&self.root, DIR_MODE)?;
        self.warn_if_shared();
        fsutil::write_atomic(&self.mapping_path(id), bytes, fsutil::PRIVATE)
    }

    /// Removes the mapping for `id`; returns whether there was one.
    pub fn delete_mapping(&self, id: &SecretId) -> Result<bool> {
        let path = self.mapping_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(Error::io("cannot remove mapping", &path, err)),
        }
    }

    /// Takes `state_dir/.setup.lock` (flock, exclusive), waiting for whoever holds it: one
    /// writer of Podman secrets, mappings and the cache at a time (`psi setup` from a timer,
    /// an operator's `psi cache invalidate`). Held until the returned guard drops.
    pub async fn lock_setup(&self) -> Result<nix::fcntl::Flock<fs::File>> {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::OpenOptionsExt;
        fsutil::ensure_dir(&self.root, DIR_MODE)?;
        let path = self.root.join(SETUP_LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(fsutil::PRIVATE)
            .open(&path)
            .map_err(|err| Error::io("cannot open the setup lock", &path, err))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
            Err((_, errno)) => {
                return Err(Error::io(
                    "cannot lock",
                    &path,
                    std::io::Error::from_raw_os_error(errno as i32),
                ))
            }
        };
        tracing::info!(lock = %path.display(), "another psi setup or cache command is running; waiting for it");
        tokio::task::spawn_blocking(move || Flock::lock(file, FlockArg::LockExclusive))
            .await
            .context("setup lock")?
            .map_err(|(_, errno)| {
                Error::io(
                    "cannot lock",
                    &path,
                    std::io::Error::from_raw_os_error(errno as i32),
                )
            })
    }

    /// The IDs that have a mapping, sorted. Only files that are mappings count: not the
    /// cache, public keys, temp or dot files, nor anything that does not parse as a mapping
    /// (the original listed `cache.enc` and key files as secrets).
    pub fn list_mappings(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Error::io("cannot list", &self.root, err)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| Error::io("cannot list", &self.root, err))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(id) = SecretId::parse(&name) else {
                continue;
            };
            let path = self.mapping_path(&id);
            if fsutil::read_capped(&path, fsutil::MAPPING)
                .ok()
                .is_some_and(|bytes| Mapping::parse(&bytes).is_ok())
            {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }
}
