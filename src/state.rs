//! The state directory: the one place that knows its layout. Mapping files are
//! `state_dir/<SECRET_ID>` (0600), exactly as the original wrote them, so a state directory
//! moves between the two implementations unchanged.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::secret::{Mapping, SecretId};

/// Mode of the state directory when psi creates it.
const DIR_MODE: u32 = 0o700;

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
        self.root.join(".socket-token")
    }

    pub fn mapping_path(&self, id: &SecretId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Reads and parses the mapping for `id`. This is on the lookup hot path: one read, no
    /// writes.
    pub fn read_mapping(&self, id: &SecretId) -> Result<Mapping> {
        let path = self.mapping_path(id);
        let bytes = match fsutil::read_capped(&path, fsutil::MAPPING) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => {
                return Err(Error::NoMapping(id.to_string()))
            }
            Err(err) => return Err(Error::io("cannot read mapping", &path, err)),
        };
        Mapping::parse(&bytes).map_err(|reason| Error::CorruptMapping {
            id: id.to_string(),
            reason,
        })
    }

    /// Writes the mapping bytes for `id` atomically, 0600, creating the directory (0700).
    pub fn write_mapping(&self, id: &SecretId, bytes: &[u8]) -> Result<()> {
        fsutil::ensure_dir(&self.root, DIR_MODE)?;
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
        let path = self.root.join(".setup.lock");
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
            .map_err(|err| Error::Failed(format!("setup lock: {err}")))?
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
