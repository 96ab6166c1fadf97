//! A real Podman 5 (Debian trixie's podman) for tests, since the host's Podman is 4.3.1.
//!
//! **The chroot** is built once per machine and reused: `debootstrap --variant=minbase trixie`
//! plus `apt-get install podman runc conmon curl ...` (about 40 s), into
//! `$CARGO_TARGET_TMPDIR/podman5.build`, then renamed to `$CARGO_TARGET_TMPDIR/podman5`, so a
//! half-built chroot is never used: the rename is atomic and `podman5/` exists only when
//! complete. An exclusive `flock` on `podman5.lock` serialises test processes that find it
//! missing; whoever holds the lock may delete a leftover `podman5.build` (it belongs to a run
//! that died). The build's own mounts (proc, dev) live in a private mount namespace.
//! `PSI_TEST_DEBIAN_MIRROR` replaces `http://deb.debian.org/debian`.
//!
//! **Per test** a [`Podman5Env`] has a sandbox directory (see [`Sandbox`]) holding psi's
//! config, `psi serve`'s socket, containers.conf (runc, cgroupfs, the ulimits from
//! TESTING.md, psi's driver commands from `psi install --stdout`), vfs storage and the
//! Podman 5 API socket. `podman system service` runs in the chroot inside a private mount
//! namespace (`unshare --mount --propagation private`), where a small script mounts what
//! Podman needs and binds the sandbox at its own path inside the chroot. Every path is thus
//! the same on both sides: `psi setup` on the host uses the API socket, and the shell
//! driver's curl in the chroot reaches the host's `psi serve` socket. Nothing is mounted in
//! the host's namespace, so when the service and its children exit the mounts vanish with
//! the namespace; no unmount is needed and none can be left behind.
//!
//! The podman CLI (`podman run --secret`, `podman secret ls`) joins that same namespace with
//! `nsenter --mount` and chroots the same way, so it shares the service's /run (runc's state)
//! and storage.

use super::debian::{apt_install, built_once};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::notify::NotifySocket;
use super::{require, require_all, Sandbox, ServeProcess};

/// The busybox image every Podman 5 test imports.
pub const IMAGE: &str = "localhost/psi-test-bb";

/// Packages installed into the chroot. Without recommends: Podman 5 itself needs only
/// conmon, an OCI runtime and netavark (a dependency); containers run with `--network none`.
const PACKAGES: &[&str] = &[
    "podman",
    "runc",
    "conmon",
    "curl",
    "ca-certificates",
    "busybox-static",
];

/// The environment inside the chroot: a clean one, so the host's PATH (cargo, rustup) does
/// not leak into Podman or the shell driver commands it runs.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Mounts what Podman needs inside the chroot, then execs `chroot ROOT CMD...`. Runs in a
/// fresh private mount namespace, so every mount disappears with its last process.
/// Arguments: ROOT SANDBOX CMD...
const ENTER_SCRIPT: &str = r#"set -eu
root=$1 sandbox=$2
shift 2
# runc pivot_roots into each container; pivot_root fails when the caller's root is not a
# mount point, which a plain chroot directory is not. Binding the chroot onto itself makes it one.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
# /sys brings the cgroup hierarchies along (cgroupfs manager); /dev brings pts and shm.
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
# Podman keeps its container locks in the shared memory segment /dev/shm/libpod_lock, and a
# fresh Podman (new tmp_dir) frees every lock in it: a private /dev/shm keeps each test's
# Podman 5 apart from the host's Podman 4 and from other tests.
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
# A private /run (runc keeps container state in /run/runc) and /tmp, so tests never share them
# and nothing is written into the cached chroot.
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
# The sandbox at the same absolute path inside. Usually under /tmp, so the directory is made in
# the tmpfs above; otherwise an empty directory stays in the chroot, which is harmless.
mkdir -p "$root$sandbox"
mount --bind "$sandbox" "$root$sandbox"
exec chroot "$root" "$@"
"#;

/// The trixie root file system with Podman 5, built on first use (see the module doc).
/// `None` (skip) when a tool is missing outside CI.
pub fn chroot() -> Option<&'static Path> {
    if !require_all(&[
        "debootstrap",
        "unshare",
        "nsenter",
        "chroot",
        "mount",
        "tar",
    ]) {
        return None;
    }
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    Some(ROOT.get_or_init(build_or_reuse))
}

fn build_or_reuse() -> PathBuf {
    built_once("podman5", "trixie", |root, build| {
        apt_install(root, PACKAGES, &build.join("apt.log"));
        image_tar(root, build);
    })
    .join("root")
}

/// Runs `cmd` (stdin closed, output to `log`) and panics with the log's tail on failure.
pub fn run_logged(cmd: &mut Command, log: &Path) {
    let file = std::fs::File::create(log).unwrap();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{cmd:?} failed with {status} (log: {}):\n{}",
            log.display(),
            tail.join("\n")
        );
    }
}

/// `bb.tar` next to the chroot: a root file system of the chroot's busybox-static, for
/// `podman import` (no registry is reachable).
fn image_tar(root: &Path, build: &Path) {
    let image = build.join("image");
    std::fs::create_dir_all(image.join("bin")).unwrap();
    std::fs::copy(root.join("usr/bin/busybox"), image.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "printf", "ls", "stat"] {
        std::os::unix::fs::symlink("busybox", image.join("bin").join(applet)).unwrap();
    }
    let status = Command::new("tar")
        .arg("-C")
        .arg(&image)
        .arg("-cf")
        .arg(build.join("bb.tar"))
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of the busybox image");
}

/// One test's Podman 5: its API service in the chroot, psi serve on the host, shared paths.
pub struct Podman5Env {
    /// First, so the service stops before the sandbox it lives in is removed.
    service: Service,
    pub sandbox: Sandbox,
    pub config: PathBuf,
    pub serve: ServeProcess,
    root: &'static Path,
}

impl Podman5Env {
    /// Sets everything up: psi's config is `config_extra` plus `systemd_dir` and
    /// `podman_socket` in the sandbox. `None` (skip) when a tool is missing outside CI.
    pub fn new(config_extra: &str) -> Option<Podman5Env> {
        if !require("curl") {
            return None;
        }
        let root = chroot()?;
        let sandbox = Sandbox::new();
        let dir = sandbox.path().to_owned();
        let config = sandbox.config(&format!(
            "{config_extra}systemd_dir: {}\npodman_socket: {}\n",
            dir.join("systemd").display(),
            dir.join("podman5.sock").display()
        ));
        let driver = sandbox
            .psi()
            .args(["-c", config.to_str().unwrap(), "install", "--stdout"])
            .output()
            .unwrap();
        assert!(
            driver.status.success(),
            "psi install --stdout: {}",
            String::from_utf8_lossy(&driver.stderr)
        );
        // As for Podman 4 (TESTING.md): crun cannot start containers here, cgroups are v1
        // hybrid. tmp_dir keeps Podman's events log and locks in the sandbox.
        let mut conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\ntmp_dir = \"{}/tmp\"\n",
            dir.display()
        )
        .into_bytes();
        conf.extend_from_slice(&driver.stdout);
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .unwrap();

        let mut serve_cmd = sandbox.psi();
        serve_cmd.args(["-c", config.to_str().unwrap(), "serve"]);
        let serve = ServeProcess::start(serve_cmd, &sandbox.socket(), dir.join("serve.log"));
        let service = Service::start(root, &dir);
        let env = Podman5Env {
            service,
            sandbox,
            config,
            serve,
            root,
        };
        let tar = root.parent().unwrap().join("bb.tar");
        let mut import = env.podman();
        import
            .args(["import", "-", IMAGE])
            .stdin(std::fs::File::open(tar).unwrap());
        let out = import.output().unwrap();
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(env)
    }

    /// The Podman 5 API socket (the `podman_socket` of psi's config).
    pub fn api_socket(&self) -> PathBuf {
        self.sandbox.path().join("podman5.sock")
    }

    /// Where `psi setup` writes drop-ins (`systemd_dir`).
    pub fn systemd_dir(&self) -> PathBuf {
        self.sandbox.path().join("systemd")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.sandbox.state_dir()
    }

    /// `podman ARGS...` in the chroot, in the service's mount namespace, with the same
    /// containers.conf and storage as the service.
    pub fn podman(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.service.child.id()))
            .arg("--mount")
            .arg("chroot")
            .arg(self.root)
            .arg("podman")
            // Otherwise the chroot's podman starts in the host's cwd, which may not exist there.
            .current_dir("/");
        chroot_env(&mut cmd, self.sandbox.path());
        cmd
    }

    /// `psi -c <config> ARGS...` on the host.
    pub fn psi(&self, args: &[&str]) -> Command {
        let mut cmd = self.sandbox.psi();
        cmd.args(["-c", self.config.to_str().unwrap()]).args(args);
        cmd
    }

    /// Runs `sh -c script` in the test image with `--secret` options.
    pub fn run(&self, secrets: &[&str], script: &str) -> Output {
        use std::os::unix::process::ExitStatusExt;
        // Detached, then `wait` and `logs`: attaching makes Podman 5 connect to conmon's
        // attach socket, which under load is sometimes not there yet ("failed to connect to
        // container's attach socket"), a race of the attach path that has nothing to do
        // with secrets.
        let mut cmd = self.podman();
        cmd.args(["run", "-d", "--network", "none"]);
        for secret in secrets {
            cmd.args(["--secret", secret]);
        }
        cmd.args([IMAGE, "sh", "-c", script]);
        let started = cmd.output().unwrap();
        if !started.status.success() {
            return started;
        }
        let id = String::from_utf8(started.stdout).unwrap().trim().to_owned();
        let waited = self.podman().args(["wait", &id]).output().unwrap();
        let code: i32 = String::from_utf8_lossy(&waited.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("podman wait {id}: {waited:?}"));
        let logs = self.podman().args(["logs", &id]).output().unwrap();
        let removed = self.podman().args(["rm", "-f", &id]).output().unwrap();
        assert!(removed.status.success(), "podman rm {id}: {removed:?}");
        Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: logs.stdout,
            stderr: logs.stderr,
        }
    }

    /// The version the API service reports (`GET /libpod/version`, through the host's curl):
    /// what `psi setup` really talks to.
    pub fn server_version(&self) -> String {
        let out = Command::new("curl")
            .args(["-sf", "--unix-socket"])
            .arg(self.api_socket())
            .arg("http://podman/v5.0.0/libpod/version")
            .output()
            .unwrap();
        assert!(out.status.success(), "GET /libpod/version: {out:?}");
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        reply["Version"].as_str().unwrap().to_owned()
    }

    /// What `psi serve` logged (the driver's store/lookup requests).
    pub fn serve_log(&self) -> String {
        self.serve.log()
    }

    /// What the API service printed, the shell driver commands' output included.
    pub fn service_log(&self) -> String {
        std::fs::read_to_string(self.sandbox.path().join("podman5-service.log")).unwrap_or_default()
    }
}

/// The environment of everything run in the chroot (see [`PATH`]).
fn chroot_env(cmd: &mut Command, sandbox: &Path) {
    cmd.env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("CONTAINERS_CONF", sandbox.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", sandbox.join("storage.conf"))
        // Podman 5 warns on every command that cgroups v1 is deprecated; these machines have
        // v1 hybrid and the warning would only bury real errors in the logs.
        .env("PODMAN_IGNORE_CGROUPSV1_WARNING", "1");
}

/// `podman system service` in the chroot, in its own mount namespace. On drop: SIGTERM, then
/// SIGKILL, then SIGKILL for anything else still in that namespace (a conmon, say), so the
/// namespace and its mounts go away.
struct Service {
    child: Child,
    /// The namespace's identity (device, inode of /proc/PID/ns/mnt), read once the service
    /// answers, when the process is certainly in it.
    namespace: (u64, u64),
}

impl Service {
    fn start(root: &Path, sandbox: &Path) -> Service {
        let socket = sandbox.join("podman5.sock");
        let log = sandbox.join("podman5-service.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("unshare");
        // Without --fork, unshare execs sh in place, which execs chroot, which execs podman:
        // one PID throughout, so the child's PID is the service's (and nsenter's target).
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            ENTER_SCRIPT,
            "sh",
        ])
        .arg(root)
        .arg(sandbox)
        .args(["podman", "system", "service", "--time=0"])
        .arg(format!("unix://{}", socket.display()))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
        chroot_env(&mut cmd, sandbox);
        // The sandbox is at the same path inside the chroot, so Podman's READY=1 reaches us.
        let notify = NotifySocket::bind(sandbox.join("podman5-service.notify"));
        cmd.env("NOTIFY_SOCKET", notify.path());
        let child = cmd.spawn().unwrap();
        let mut service = Service {
            child,
            namespace: (0, 0),
        };
        notify.wait_ready(
            &mut service.child,
            "Podman 5 service",
            Duration::from_secs(30),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        service.namespace = mount_namespace(service.child.id()).expect("the service's mount ns");
        service
    }
}

fn mount_namespace(pid: u32) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok()?;
    Some((meta.dev(), meta.ino()))
}

impl Drop for Service {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;

        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only processes in this test's own namespace: they were all started by this test.
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if self.namespace != (0, 0) && mount_namespace(pid) == Some(self.namespace) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}
