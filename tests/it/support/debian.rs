//! Debian root file systems built once per machine with debootstrap, for the tests that need
//! a second distribution (Podman 5 from trixie) or a local base image (bookworm).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::podman5::run_logged;

/// `CARGO_TARGET_TMPDIR/<name>`, built on first use: debootstrap `suite` into
/// `<name>.build/root`, then `finish(root, build_dir)`, then a rename into place, so a
/// half-built tree is never used. A lock makes a second test process wait for the first's
/// result instead of building its own, and a build left by a run that died is thrown away.
/// `PSI_TEST_DEBIAN_MIRROR` replaces deb.debian.org.
pub fn built_once(name: &str, suite: &str, finish: impl FnOnce(&Path, &Path)) -> PathBuf {
    use nix::fcntl::{Flock, FlockArg};

    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    let done = base.join(name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(base.join(format!("{name}.lock")))
        .unwrap();
    // Held until this function returns.
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap_or_else(|e| panic!("flock {name}.lock: {e}"));
    if done.exists() {
        return done;
    }
    let started = Instant::now();
    let build = base.join(format!("{name}.build"));
    if build.exists() {
        std::fs::remove_dir_all(&build).expect("remove a stale build directory");
    }
    std::fs::create_dir_all(&build).unwrap();
    let root = build.join("root");
    let mirror = std::env::var("PSI_TEST_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    eprintln!(
        "building {name} (Debian {suite}, once per machine) in {}",
        done.display()
    );
    run_logged(
        Command::new("debootstrap")
            .args(["--variant=minbase", suite])
            .arg(&root)
            .arg(&mirror),
        &build.join("debootstrap.log"),
    );
    finish(&root, &build);
    std::fs::rename(&build, &done).unwrap();
    eprintln!("{name} built in {:?}", started.elapsed());
    done
}

/// Installs `packages` (without recommends) into the debootstrapped `root` with the root's
/// own apt, then empties apt's package cache; output goes to `log`. apt needs /proc and
/// /dev: they are mounted in a private mount namespace, so nothing outlives the step.
pub fn apt_install(root: &Path, packages: &[&str], log: &Path) {
    run_logged(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-euc"])
            .arg(
                "mount -t proc proc \"$1/proc\"; mount --rbind /dev \"$1/dev\"; r=$1; shift; \
                 chroot \"$r\" apt-get install -y -q --no-install-recommends \"$@\"; \
                 chroot \"$r\" apt-get clean",
            )
            .arg("sh")
            .arg(root)
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        log,
    );
}
