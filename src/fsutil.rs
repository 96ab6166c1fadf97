//! The file system, both ways.
//!
//! Writes never leave a half-written or briefly world-readable file: a temp file in the
//! target's directory, created with its final mode at open, written, fsynced and renamed
//! over the target; then the directory is fsynced so the rename survives a crash.
//!
//! Reads go through [`read_capped`]: every path psi reads can be pointed elsewhere by
//! whoever controls the config, the state directory or the command line, so a read must
//! neither block (a FIFO, a terminal), nor run forever (`/dev/zero`), nor allocate what the
//! file claims (a sparse 64 GB file). Each kind of file has a [`Limit`] that is generous
//! for what psi writes or expects there.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, Result, ResultExt};

mod read;
use read::MIB;
pub use read::{
    extend_bounded, human, open_regular, over, read_bounded, read_capped, Bounded, Limit, TOKEN,
};

/// A mapping file. psi writes at most a sealed store body (1 MiB before sealing and base64).
pub const MAPPING: Limit = Limit {
    bytes: 4 * MIB,
    what: "mapping files",
};
/// psi's config, the AWS credentials file, files psi generates (drop-ins, units) and its
/// small state files.
pub const CONFIG: Limit = Limit {
    bytes: 4 * MIB,
    what: "configuration files",
};
/// PEM and DER files: CA bundles (a whole system bundle is ~250 KiB), certificates, keys.
pub const PEM: Limit = Limit {
    bytes: 4 * MIB,
    what: "PEM files",
};
/// `cache.enc`. Its format has no entry count to derive a bound from; 64 MiB is over a
/// hundred times what a thousand typical secrets take, and what `psi serve` can afford to
/// hold twice (ciphertext and plaintext) while loading.
pub const CACHE: Limit = Limit {
    bytes: 64 * MIB,
    what: "cache files",
};
/// An env file or quadlet `psi infisical import` reads.
pub const IMPORT: Limit = Limit {
    bytes: 16 * MIB,
    what: "import input files",
};

/// [`read_capped`], with the stamp of the file the bytes came from (taken from the open
/// descriptor, so it is that file's even if the path is replaced meanwhile).
pub fn read_capped_stamped(
    path: &Path,
    limit: Limit,
) -> io::Result<(Zeroizing<Vec<u8>>, FileStamp)> {
    read::read_capped_meta(path, limit).map(|(bytes, meta)| (bytes, FileStamp::of(&meta)))
}

/// A file's identity and version as `stat` reports them: device, inode and change time (to
/// the nanosecond). Two equal stamps mean the same file, unchanged: psi replaces files by
/// rename (a new inode), and every change to a file's content or metadata sets its change
/// time to the current time, which no program can set back (unlike the modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file last changed at least `margin` before `now`. A file changed within
    /// the timestamp granularity of its file system (a clock tick, or a second on some) can
    /// change again with the same times and size, so only a settled file's stamp proves it
    /// unchanged later (git's "racily clean" files have the same problem).
    pub fn settled(&self, now: std::time::SystemTime, margin: std::time::Duration) -> bool {
        let (secs, nanos) = self.ctime;
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
        now.duration_since(changed).is_ok_and(|age| age >= margin)
    }

    /// The stamp of what `path` names now (following symlinks, as opening it would). One
    /// `statx`: it never opens the file, so a FIFO or a device cannot block it.
    pub fn stat(path: &Path) -> io::Result<FileStamp> {
        fs::metadata(path).map(|meta| FileStamp::of(&meta))
    }
}

/// [`read_capped`] for text: the bytes must be UTF-8.
pub fn read_capped_text(path: &Path, limit: Limit) -> io::Result<Zeroizing<String>> {
    let mut bytes = read_capped(path, limit)?;
    // Moves the buffer into the String without a copy; on failure it comes back to be zeroized.
    String::from_utf8(std::mem::take(&mut *bytes))
        .map(Zeroizing::new)
        .map_err(|err| {
            drop(Zeroizing::new(err.into_bytes()));
            io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text")
        })
}

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
        .ok_or_else(|| Error::Refused(format!("{} is not a file path", path.display())))?;
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
    let current = read_capped(path, CONFIG).ok().zip(fs::metadata(path).ok());
    if let Some((current, meta)) = current {
        if current.as_slice() == bytes && meta.permissions().mode() & 0o7777 == mode {
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
    openssl::rand::rand_bytes(&mut bytes).context("no randomness")?;
    Ok(crate::encoding::hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limit = Limit {
        bytes: 16,
        what: "test files",
    };

    #[test]
    fn capped_read_takes_a_file_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, [7u8; 16]).unwrap();
        assert_eq!(read_capped(&path, SMALL).unwrap().as_slice(), &[7u8; 16]);
        fs::write(&path, "text").unwrap();
        assert_eq!(read_capped_text(&path, SMALL).unwrap().as_str(), "text");
        fs::write(&path, b"\xff").unwrap();
        let err = read_capped_text(&path, SMALL).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        let missing = dir.path().join("missing");
        assert_eq!(
            read_capped(&missing, SMALL).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn capped_read_refuses_a_file_over_the_limit_without_allocating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, [7u8; 17]).unwrap();
        let err = read_capped(&path, SMALL).unwrap_err();
        assert_eq!(
            err.to_string(),
            "is larger than 16 bytes, the limit for test files"
        );
        // Sparse: claims 64 GiB, costs nothing on disk; must not be allocated.
        File::create(&path).unwrap().set_len(64 << 30).unwrap();
        let err = read_capped(&path, MAPPING).unwrap_err();
        assert_eq!(
            err.to_string(),
            "is larger than 4 MiB, the limit for mapping files"
        );
    }

    #[test]
    fn capped_read_refuses_special_files_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // No writer: a blocking open would never return.
        let err = read_capped(&fifo, SMALL).unwrap_err();
        assert_eq!(err.to_string(), "is a FIFO, not a regular file");
        let err = read_capped(Path::new("/dev/zero"), SMALL).unwrap_err();
        assert_eq!(err.to_string(), "is a character device, not a regular file");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_capped(&link, SMALL).is_err());
        let err = read_capped(dir.path(), SMALL).unwrap_err();
        assert_eq!(err.to_string(), "is a directory, not a regular file");
    }

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
