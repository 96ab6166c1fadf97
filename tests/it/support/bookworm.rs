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

use super::debian::built_once;
use super::podman5::run_logged;
use super::require_all;

/// The root file system tarball, built on first use. `None` (skip) when a tool is missing
/// outside CI.
pub fn base_tar() -> Option<&'static Path> {
    if !require_all(&["debootstrap", "tar"]) {
        return None;
    }
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    Some(TAR.get_or_init(build_or_reuse))
}

fn build_or_reuse() -> PathBuf {
    let done = built_once("bookworm", "bookworm", |root, build| {
        run_logged(
            Command::new("tar")
                .arg("-C")
                .arg(root)
                .arg("-cf")
                .arg(build.join("rootfs.tar"))
                .arg("."),
            &build.join("tar.log"),
        );
        std::fs::remove_dir_all(root).unwrap();
    });
    done.join("rootfs.tar")
}
