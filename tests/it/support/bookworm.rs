//! A Debian bookworm base image for `podman build` tests: no registry is reachable, so the
//! Containerfiles' `BASE_IMAGE` must name a local image (TESTING.md, "Container images").
//!
//! `debootstrap --variant=minbase bookworm` (about 30 s) packed as a tarball for
//! `podman import`, built once per machine and reused, like the Podman 5 chroot
//! (`podman5.rs`): built in `$CARGO_TARGET_TMPDIR/bookworm.build`, renamed to
//! `$CARGO_TARGET_TMPDIR/bookworm` when complete, serialised by a `flock` on
//! `bookworm.lock`. Only the tarball is kept. Its apt sources name the mirror it came from,
//! `PSI_TEST_DEBIAN_MIRROR` or `http://deb.debian.org/debian`, which `RUN apt-get` in a
//! build then uses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use super::podman5::run_logged;
use super::require;

/// The root file system tarball, built on first use. `None` (skip) when a tool is missing
/// outside CI.
pub fn base_tar() -> Option<&'static Path> {
    for tool in ["debootstrap", "tar"] {
        if !require(tool) {
            return None;
        }
    }
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    Some(TAR.get_or_init(build_or_reuse))
}

fn build_or_reuse() -> PathBuf {
    use nix::fcntl::{Flock, FlockArg};

    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    let done = base.join("bookworm");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(base.join("bookworm.lock"))
        .unwrap();
    // Held until this function returns: a second test process waits for the first's result.
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock bookworm.lock");
    let tar = done.join("rootfs.tar");
    if tar.exists() {
        return tar;
    }
    let started = Instant::now();
    let build = base.join("bookworm.build");
    if build.exists() {
        // Left by a run that died while holding the lock.
        std::fs::remove_dir_all(&build).expect("remove a stale bookworm.build");
    }
    std::fs::create_dir_all(&build).unwrap();
    let root = build.join("root");
    let mirror = std::env::var("PSI_TEST_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    eprintln!(
        "building the Debian bookworm base image (once per machine) in {}",
        done.display()
    );
    run_logged(
        Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&root)
            .arg(&mirror),
        &build.join("debootstrap.log"),
    );
    run_logged(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(build.join("rootfs.tar"))
            .arg("."),
        &build.join("tar.log"),
    );
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::rename(&build, &done).unwrap();
    eprintln!("bookworm base built in {:?}", started.elapsed());
    tar
}
