//! File writes that never leave a half-written or briefly world-readable file: a temp file in
//! the target's directory, created with its final mode at open, written, fsynced and renamed
//! over the target; then the directory is fsynced so the rename survives a crash.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mode of files holding secret material or coordinates.
pub const PRIVATE: u32 = 0o600;

/// The longest file name Linux file systems accept, in bytes (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Random bytes in a temporary file's name, written as two hex digits each.
const SUFFIX_BYTES: usize = 6;

/// How much longer [`write_atomic`]'s temporary name (`.<name>.<suffix>`) is than the
/// target's name: a name longer than `NAME_MAX` minus this cannot be written atomically.
pub const TEMP_NAME_OVERHEAD: usize = 2 + 2 * SUFFIX_BYTES;

/// Atomically replaces `path` with `bytes`, mode `mode` exactly (umask does not apply).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| Error::Failed(format!("{} is not a file path", path.display())))?;
    let temp = dir.join(format!(".{}.{}", name.to_string_lossy(), random_suffix()?));
    let result = write_temp(&temp, bytes, mode).and_then(|()| {
        fs::rename(&temp, path).map_err(|err| Error::io("cannot rename into place", path, err))
    });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    // Durability of the rename itself; failure here cannot undo anything, so it is an error
    // only if the directory cannot be opened at all.
    if let Ok(dir) = File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// [`write_atomic`] unless `path` already holds exactly `bytes` with mode `mode`; returns
/// whether it wrote. Generated files go through this so an unchanged file keeps its mtime and
/// nothing downstream (daemon-reload, an image rebuild) is triggered for nothing.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    let current = fs::read(path).ok().zip(fs::metadata(path).ok());
    if let Some((current, meta)) = current {
        if current == bytes && meta.permissions().mode() & 0o7777 == mode {
            return Ok(false);
        }
    }
    write_atomic(path, bytes, mode)?;
    Ok(true)
}

/// Creates `path` and missing parents; directories this call creates get `mode`.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|err| Error::io("cannot create directory", path, err))
}

fn write_temp(temp: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    // Created owner-only; widened (never narrowed) to `mode` before any byte is written.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE)
        .open(temp)
        .map_err(|err| Error::io("cannot create", temp, err))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|err| Error::io("cannot set the mode of", temp, err))?;
    file.write_all(bytes)
        .map_err(|err| Error::io("cannot write", temp, err))?;
    file.sync_all()
        .map_err(|err| Error::io("cannot sync", temp, err))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn random_suffix() -> Result<String> {
    let mut bytes = [0u8; SUFFIX_BYTES];
    openssl::rand::rand_bytes(&mut bytes)
        .map_err(|err| Error::Failed(format!("no randomness: {err}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_if_changed_skips_same_bytes_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(write_if_changed(&path, b"one", 0o644).unwrap());
        assert!(!write_if_changed(&path, b"one", 0o644).unwrap());
        // A different mode alone is a change.
        assert!(write_if_changed(&path, b"one", 0o600).unwrap());
        assert!(write_if_changed(&path, b"two", 0o600).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"two");
    }

    #[test]
    fn failed_write_leaves_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("f");
        assert!(write_atomic(&path, b"x", 0o600).is_err());
        assert!(!path.exists());
    }
}
