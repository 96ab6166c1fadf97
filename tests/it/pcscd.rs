//! `psi nitrokeyhsm setup-pcscd`: the pcscd sidecar's Containerfile and quadlets.
//!
//! - golden files of every rendered file (`tests/it/golden/pcscd/`), and the repository's
//!   `Containerfile.pcscd` kept equal to the rendered one (`UPDATE_GOLDEN=1` rewrites both);
//! - the quadlets through Podman 5's own `quadlet -dryrun` (the trixie chroot's binary runs
//!   on the host), in system and user mode;
//! - the command end to end with the host's Podman 4.3.1: a real `podman build` on a local
//!   Debian bookworm base (`support::bookworm`), in a per-test overlay store; the image's pcscd
//!   serving a client container through the shared volume, also after a SIGKILL; a second
//!   run that changes nothing; build failures.
//!
//! systemd is not PID 1 on these machines, so `systemctl` is a stand-in that records its
//! arguments: what is asserted is whether, and how often, psi asks for a daemon-reload.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use psi::config::Scope;
use psi::unitgen::pcscd::{self, Pcscd};

use crate::support::podman::{base_conf, image_tar};
use crate::support::{assert_golden, bookworm, podman5, require, require_all, Sandbox};

const BASE: &str = "localhost/psi-test-bookworm";
const VOLUME: &str = "psi-test-pcscd";

/// (case, scope, pcscd_volume)
const CASES: &[(&str, Scope, &str)] = &[
    ("system", Scope::System, "pcscd-socket"),
    ("user", Scope::User, "pcscd-socket"),
    ("custom-volume", Scope::System, "hsm-pcscd"),
];

#[test]
fn pcscd_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden/pcscd");
    assert_golden(&dir.join("Containerfile"), &pcscd::containerfile());
    for (case, scope, volume) in CASES {
        let spec = Pcscd {
            volume,
            scope: *scope,
        };
        assert_golden(
            &dir.join(case).join(spec.volume_file()),
            &pcscd::volume_unit(&spec),
        );
        assert_golden(
            &dir.join(case).join(pcscd::CONTAINER_FILE),
            &pcscd::container_unit(&spec),
        );
    }
}

/// The top-level `Containerfile.pcscd` is what `setup-pcscd` writes (it renders the
/// Containerfile from no settings at all, so "default settings" means any).
#[test]
fn repository_containerfile_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile.pcscd");
    assert_golden(&path, &pcscd::containerfile());
}

/// Podman 5's quadlet generator accepts both units and wires the volume and the device
/// into the services it generates.
#[test]
fn quadlet_accepts_the_pcscd_units() {
    let Some(root) = podman5::chroot() else {
        return;
    };
    let quadlet = root.join("usr/libexec/podman/quadlet");
    for (case, scope, volume) in CASES {
        let units = tempfile::tempdir().unwrap();
        let spec = Pcscd {
            volume,
            scope: *scope,
        };
        std::fs::write(
            units.path().join(spec.volume_file()),
            pcscd::volume_unit(&spec),
        )
        .unwrap();
        std::fs::write(
            units.path().join(pcscd::CONTAINER_FILE),
            pcscd::container_unit(&spec),
        )
        .unwrap();
        let mut cmd = Command::new(&quadlet);
        cmd.args(["-dryrun", "-no-kmsg-log"])
            .env("QUADLET_UNIT_DIRS", units.path());
        if *scope == Scope::User {
            cmd.arg("-user");
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{case}: {stderr}\n{stdout}");
        // Anything but its "Loading source unit file" lines is a complaint.
        for line in stderr.lines() {
            assert!(line.contains("Loading source unit file"), "{case}: {line}");
        }
        let target = match scope {
            Scope::System => "multi-user.target",
            Scope::User => "default.target",
        };
        let service = section(&stdout, "pcscd.service");
        let volume_service = section(&stdout, &format!("{volume}-volume.service"));
        for line in [
            format!("Requires={volume}-volume.service"),
            format!("After={volume}-volume.service"),
            "Before=psi-secrets.service".to_owned(),
            "Restart=on-failure".to_owned(),
            format!("WantedBy={target}"),
        ] {
            assert!(
                service.lines().any(|l| l == line),
                "{case}: no {line}:\n{service}"
            );
        }
        let exec = service
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap_or_else(|| panic!("{case}: no ExecStart:\n{service}"));
        assert!(exec.contains(" --name pcscd "), "{case}: {exec}");
        assert!(exec.contains(" --device /dev/bus/usb "), "{case}: {exec}");
        assert!(
            exec.ends_with(&format!(
                " -v {volume}:/run/pcscd:rw localhost/pcscd:latest"
            )),
            "{case}: {exec}"
        );
        for line in [
            format!("ExecStart=/usr/bin/podman volume create --ignore {volume}"),
            format!("WantedBy={target}"),
        ] {
            assert!(
                volume_service.lines().any(|l| l == line),
                "{case}: no {line}:\n{volume_service}"
            );
        }
    }
}

/// One generated unit of quadlet's `-dryrun` output (`---NAME---` starts each).
fn section<'a>(output: &'a str, name: &str) -> &'a str {
    let marker = format!("---{name}---\n");
    let start = output
        .find(&marker)
        .unwrap_or_else(|| panic!("quadlet generated no {name}:\n{output}"))
        + marker.len();
    let rest = &output[start..];
    &rest[..rest.find("\n---").unwrap_or(rest.len())]
}

/// A per-test Podman store (containers.conf as TESTING.md says, vfs storage) and a psi
/// config whose `systemd_dir` is in the sandbox, with `systemctl` recording its calls.
struct Env {
    sandbox: Sandbox,
    config: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        if !require_all(&["podman", "runc"]) {
            return None;
        }
        let sandbox = Sandbox::new();
        let dir = sandbox.path();
        std::fs::write(dir.join("containers.conf"), base_conf(dir)).unwrap();
        // overlay, not the vfs of the other Podman tests: vfs copies the whole base file
        // system for every build container, so even a fully cached `podman build` cost 15 s
        // here; with overlay it takes 0.1 s. Nothing stays mounted once the containers are
        // gone, which Drop makes sure of.
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let config = sandbox.config(&format!(
            "systemd_dir: {}\nproviders:\n  nitrokeyhsm:\n    pcscd_volume: {VOLUME}\n",
            dir.join("config-systemd").display()
        ));
        let stub = dir.join("bin");
        std::fs::create_dir_all(&stub).unwrap();
        std::fs::write(
            stub.join("systemctl"),
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n",
                dir.join("systemctl.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(stub.join("systemctl"), PermissionsExt::from_mode(0o755)).unwrap();
        Some(Env { sandbox, config })
    }

    fn dir(&self) -> &Path {
        self.sandbox.path()
    }

    fn apply_env(&self, cmd: &mut Command) {
        cmd.env("CONTAINERS_CONF", self.dir().join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir().join("storage.conf"));
    }

    fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("podman");
        self.apply_env(&mut cmd);
        cmd.args(args).output().unwrap()
    }

    fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn import(&self, tar: &Path, name: &str) {
        let started = Instant::now();
        self.podman_ok(&["import", tar.to_str().unwrap(), name]);
        eprintln!("imported {name} in {:?}", started.elapsed());
    }

    /// `psi -c CONFIG nitrokeyhsm setup-pcscd ARGS...` with the store and the systemctl stub.
    fn setup_pcscd(&self, args: &[&str]) -> Output {
        let mut cmd = self.sandbox.psi();
        self.apply_env(&mut cmd);
        let path = format!(
            "{}:{}",
            self.dir().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .args(["-c", self.config.to_str().unwrap()])
            .args(["nitrokeyhsm", "setup-pcscd"])
            .args(args);
        let started = Instant::now();
        let out = cmd.output().unwrap();
        eprintln!("setup-pcscd {args:?} took {:?}", started.elapsed());
        out
    }

    fn systemctl_calls(&self) -> String {
        std::fs::read_to_string(self.dir().join("systemctl.log")).unwrap_or_default()
    }

    /// Whether a client container on the volume reaches a pcscd. libpcsclite's answer tells
    /// "no pcscd on the socket" (SCardEstablishContext fails) from "pcscd answered, no reader
    /// attached" (SCardListReaders fails with SCARD_E_NO_READERS_AVAILABLE).
    fn client_reaches_pcscd(&self) -> Result<(), String> {
        let out = self.podman(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{VOLUME}:/run/pcscd"),
            "-e",
            "OPENSC_DEBUG=3",
            pcscd::IMAGE,
            "opensc-tool",
            "--list-readers",
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("SCardListReaders failed: 0x8010002e") {
            Ok(())
        } else {
            Err(text)
        }
    }

    fn wait_for_pcscd(&self, container: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.client_reaches_pcscd() {
                Ok(()) => return,
                Err(text) if Instant::now() > deadline => {
                    // pcscd --foreground logs to stdout.
                    let logs = self.podman(&["logs", container]);
                    panic!(
                        "no pcscd on the volume: {text}\npcscd logs: {}{}",
                        String::from_utf8_lossy(&logs.stdout),
                        String::from_utf8_lossy(&logs.stderr)
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }
}

impl Drop for Env {
    /// Removes this store's containers (a test that failed midway may leave the sidecar
    /// running), so no overlay mount keeps the sandbox from being deleted.
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
    }
}

/// Modification time and inode: an atomic rewrite changes both.
fn stamp(path: &Path) -> (i64, i64, u64) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mtime(), meta.mtime_nsec(), meta.ino())
}

#[test]
fn setup_pcscd_builds_the_image_and_installs_the_quadlets() {
    let Some(env) = Env::new() else {
        return;
    };
    let Some(base) = bookworm::base_tar() else {
        return;
    };
    env.import(base, BASE);
    let build = env.dir().join("build");
    let systemd = env.dir().join("systemd");
    let args = [
        "--build-dir",
        build.to_str().unwrap(),
        "--systemd-dir",
        systemd.to_str().unwrap(),
        "--base-image",
        BASE,
    ];
    let out = env.setup_pcscd(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    // Whatever this machine's SELinux says (here: no getsebool, SKIP), the check comes first.
    assert!(
        ["  PASS SELinux", "  WARN SELinux", "  SKIP SELinux check"]
            .iter()
            .any(|p| stdout.starts_with(p)),
        "{stdout}\n{stderr}"
    );
    let containerfile = build.join("Containerfile");
    let volume_unit = systemd.join(format!("{VOLUME}.volume"));
    let container_unit = systemd.join("pcscd.container");
    for line in [
        format!("Wrote {}", containerfile.display()),
        "Built localhost/pcscd:latest".to_owned(),
        format!("Wrote {}", volume_unit.display()),
        format!("Wrote {}", container_unit.display()),
        "pcscd sidecar ready.".to_owned(),
        "  Start with: systemctl start pcscd.service".to_owned(),
        format!("  Socket volume: {VOLUME}"),
    ] {
        assert!(stdout.lines().any(|l| l == line), "no {line:?}:\n{stdout}");
    }
    assert_eq!(
        std::fs::read_to_string(&containerfile).unwrap(),
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile.pcscd"))
            .unwrap()
    );
    let spec = Pcscd {
        volume: VOLUME,
        scope: Scope::System,
    };
    assert_eq!(
        std::fs::read_to_string(&volume_unit).unwrap(),
        pcscd::volume_unit(&spec)
    );
    assert_eq!(
        std::fs::read_to_string(&container_unit).unwrap(),
        pcscd::container_unit(&spec)
    );
    assert_eq!(env.systemctl_calls(), "daemon-reload\n");

    // The image runs pcscd.
    let version = env.podman_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        pcscd::IMAGE,
        "/usr/sbin/pcscd",
        "--version",
    ]);
    assert!(version.contains("pcsc-lite version"), "{version}");

    // The sidecar as the quadlet runs it (without a USB bus to add here): a client container
    // on the same volume reaches it; after a SIGKILL, which leaves pcscd.pid behind in the
    // volume, a new pcscd starts again instead of taking the stale PID 1 for itself.
    let sidecar = [
        "run",
        "-d",
        "--name",
        "pcscd",
        "--network",
        "none",
        "-v",
        &format!("{VOLUME}:/run/pcscd:rw"),
        pcscd::IMAGE,
    ];
    env.podman_ok(&sidecar);
    env.wait_for_pcscd("pcscd");
    env.podman_ok(&["kill", "pcscd"]);
    env.podman_ok(&["rm", "pcscd"]);
    assert!(
        env.client_reaches_pcscd().is_err(),
        "pcscd answered after it was killed"
    );
    env.podman_ok(&sidecar);
    env.wait_for_pcscd("pcscd");
    env.podman_ok(&["rm", "-f", "pcscd"]);

    // A second run rebuilds from cache and writes nothing: same mtimes and inodes, no reload.
    let files = [&containerfile, &volume_unit, &container_unit];
    let before: Vec<_> = files.iter().map(|p| stamp(p)).collect();
    let out = env.setup_pcscd(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in files {
        let line = format!("Unchanged {}", file.display());
        assert!(stdout.lines().any(|l| l == line), "no {line:?}:\n{stdout}");
    }
    let after: Vec<_> = files.iter().map(|p| stamp(p)).collect();
    assert_eq!(before, after);
    assert_eq!(env.systemctl_calls(), "daemon-reload\n");

    // --build-only leaves the quadlets alone, including the config's systemd_dir.
    let out = env.setup_pcscd(&[
        "--build-dir",
        build.to_str().unwrap(),
        "--base-image",
        BASE,
        "--build-only",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Built localhost/pcscd:latest"), "{stdout}");
    assert!(stdout.contains("--build-only"), "{stdout}");
    assert!(!env.dir().join("config-systemd").exists());
    assert_eq!(env.systemctl_calls(), "daemon-reload\n");
}

/// A build that fails exits 1 with Podman's own words, and installs no quadlets.
#[test]
fn setup_pcscd_reports_podman_build_failures() {
    let Some(env) = Env::new() else {
        return;
    };
    if !require("busybox") {
        return;
    }
    // SELinux with the boolean off, as getsebool reports it (SELinux cannot be enabled here).
    std::fs::write(
        env.dir().join("bin/getsebool"),
        "#!/bin/sh\n[ \"$*\" = container_use_devices ] && echo 'container_use_devices --> off'\n",
    )
    .unwrap();
    std::fs::set_permissions(
        env.dir().join("bin/getsebool"),
        PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // A base without apt-get: the RUN step's failure, printed on Podman's stdout.
    env.import(image_tar(), "localhost/psi-test-bb");
    // A base that exists nowhere: Podman tries to pull it from the unreachable registry.
    for (base, expected) in [
        ("localhost/psi-test-bb", "apt-get: not found"),
        (
            "localhost/psi-test-no-such-base",
            "localhost/psi-test-no-such-base",
        ),
    ] {
        let build = env.dir().join("build");
        let systemd = env.dir().join("systemd");
        let out = env.setup_pcscd(&[
            "--build-dir",
            build.to_str().unwrap(),
            "--systemd-dir",
            systemd.to_str().unwrap(),
            "--base-image",
            base,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{base}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(
                "  WARN SELinux container_use_devices is off\n       Run: sudo setsebool -P container_use_devices=true\n"
            ),
            "{base}: {out:?}"
        );
        assert!(
            stderr.contains("psi: error: podman build of localhost/pcscd:latest failed (exit "),
            "{base}: {stderr}"
        );
        assert!(stderr.contains(expected), "{base}: {stderr}");
        assert!(stderr.contains("Error: "), "{base}: {stderr}");
        assert!(!systemd.exists(), "{base}: quadlets were installed");
        assert_eq!(env.systemctl_calls(), "");
    }
}

/// `pcscd_volume` becomes a file name and a Podman volume name: anything else is a
/// configuration error (exit 2) before anything is built or written.
#[test]
fn setup_pcscd_rejects_a_bad_volume_name() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("providers:\n  nitrokeyhsm:\n    pcscd_volume: ../escape\n");
    let build = sandbox.path().join("build");
    let out = sandbox
        .psi()
        .args(["-c", config.to_str().unwrap(), "nitrokeyhsm", "setup-pcscd"])
        .args(["--build-dir", build.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "providers.nitrokeyhsm.pcscd_volume: '../escape' is not a Podman volume name"
        ),
        "{stderr}"
    );
    assert!(!build.exists());
}
