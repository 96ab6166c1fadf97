//! Capped reads: a file, stdin or a socket read whole without blocking on a FIFO, running
//! forever or allocating what a file claims, into buffers that zeroize on drop (see
//! [`super`] for why every read is capped).
//!
//! Self-contained (std, libc and zeroize): the `psi-client` binary compiles this file as its
//! own `fsutil` module, beside the client (`src/client/lean.rs`), so the client reads its token
//! file, stdin and psi serve's answer exactly as `psi client` does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroizing;
/// The most bytes psi reads from one kind of file, and the name errors give the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub bytes: usize,
    pub what: &'static str,
}

pub(crate) const KIB: usize = 1024;
pub(crate) const MIB: usize = 1024 * KIB;

/// A token, key or credential file (socket token, `$CREDENTIALS_DIRECTORY/*`, the TPM cache
/// key, the cached Infisical token): tens to a few thousand bytes.
pub const TOKEN: Limit = Limit {
    bytes: 64 * KIB,
    what: "token and credential files",
};

/// Reads the regular file at `path`, at most `limit.bytes` bytes, into a buffer that
/// zeroizes on drop (many of these files hold credentials or secret values).
///
/// Opened with `O_NONBLOCK` so a FIFO or a device cannot block the open, then checked with
/// `fstat` on the open descriptor (no race with a rename) to be a regular file. The size is
/// checked against the limit before anything is allocated, and the read stops one byte past
/// it, so a file that grows meanwhile is refused too. Errors are `io::Error`s (NotFound
/// stays NotFound) for the caller to wrap with the path and what it was reading.
pub fn read_capped(path: &Path, limit: Limit) -> io::Result<Zeroizing<Vec<u8>>> {
    read_capped_meta(path, limit).map(|(bytes, _)| bytes)
}

/// [`read_capped`], with the metadata of the open file the bytes came from.
pub fn read_capped_meta(
    path: &Path,
    limit: Limit,
) -> io::Result<(Zeroizing<Vec<u8>>, fs::Metadata)> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > limit.bytes as u64 {
        return Err(over(limit));
    }
    let bytes = read_bounded(file, meta.len() as usize, limit.bytes).map_err(|err| match err {
        Bounded::Over => over(limit),
        Bounded::Io(err) => err,
    })?;
    Ok((bytes, meta))
}

/// The error for a file over `limit`.
pub fn over(limit: Limit) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "is larger than {}, the limit for {}",
            human(limit.bytes),
            limit.what
        ),
    )
}

/// Opens `path` for reading without blocking and makes sure it is a regular file; for
/// readers that look at the start of a file before deciding to read the rest (the cache).
pub fn open_regular(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {what}, not a regular file"),
        ));
    }
    Ok((file, meta))
}

/// Why [`read_bounded`] stopped.
#[derive(Debug)]
pub enum Bounded {
    /// There were more than `cap` bytes.
    Over,
    Io(io::Error),
}

/// All of `reader`, refused past `cap` bytes, in a zeroizing buffer. `hint` is the expected
/// size: the buffer starts there, and whenever it must grow the old one is zeroized (a plain
/// `read_to_end` would leave copies of the bytes in freed memory).
pub fn read_bounded(
    mut reader: impl Read,
    hint: usize,
    cap: usize,
) -> Result<Zeroizing<Vec<u8>>, Bounded> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(hint.min(cap).saturating_add(1)));
    let mut chunk = Zeroizing::new([0u8; 8 * KIB]);
    loop {
        let n = match reader.read(chunk.as_mut()) {
            Ok(0) => return Ok(buffer),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(Bounded::Io(err)),
        };
        extend_bounded(&mut buffer, &chunk[..n], cap)?;
    }
}

/// Appends `bytes` to `buffer` unless that would exceed `cap`; grows by moving into a new
/// zeroizing buffer so no copy of the old contents stays behind in freed memory.
pub fn extend_bounded(
    buffer: &mut Zeroizing<Vec<u8>>,
    bytes: &[u8],
    cap: usize,
) -> std::result::Result<(), Bounded> {
    let needed = buffer.len() + bytes.len();
    if needed > cap {
        return Err(Bounded::Over);
    }
    if needed > buffer.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(
            needed.max(buffer.capacity() * 2).min(cap),
        ));
        bigger.extend_from_slice(buffer);
        *buffer = bigger;
    }
    buffer.extend_from_slice(bytes);
    Ok(())
}

/// `4 MiB`, `64 KiB`: limits as people write them.
pub fn human(bytes: usize) -> String {
    match bytes {
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_read_stops_past_the_cap_of_an_endless_reader() {
        let err = read_bounded(io::repeat(1), 0, 100_000).unwrap_err();
        assert!(matches!(err, Bounded::Over));
        let got = read_bounded(&[1u8; 100_000][..], 0, 100_000).unwrap();
        assert_eq!(got.len(), 100_000);
        assert_eq!(human(16 * MIB), "16 MiB");
        assert_eq!(human(64 * KIB), "64 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}
