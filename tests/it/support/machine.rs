//! A real systemd machine for psi's boot tests: Debian trixie (systemd 257, Podman 5.4.2)
//! booted with the host's `systemd-nspawn`, as TESTING.md ("A real systemd host") describes.
//! The test hosts have no systemd as PID 1 and cgroups v1 hybrid; a machine booted this way
//! still has all the appliance relies on: systemd as PID 1 on cgroup v2, a first boot that
//! runs presets, journald, quadlet and Podman 5 with crun.
//!
//! **The root file system** is built once per host and cached ([`built_once`], about 1.5 min):
//! `debootstrap --variant=minbase trixie` plus [`PACKAGES`], plus what booting it on these
//! hosts needs ([`finish_rootfs`]). The cache is found by the name [`ROOTFS`] alone: change
//! the name when the packages or the finishing change.
//!
//! **A [`Machine`]** is a fresh copy of that tree (`cp -a --reflink=auto`) under
//! `CARGO_TARGET_TMPDIR/machines/NAME`, so tests never share state. Before booting, a test
//! lays files into [`Machine::root`], applies Ignition configs ([`Machine::apply_ignition`])
//! and loads images ([`Machine::load_image`]). [`Machine::boot`] starts `systemd-nspawn
//! --boot` and returns once systemd says the boot is over. Commands run inside by entering
//! PID 1's namespaces ([`Machine::exec`] and friends). The machine's network is a namespace
//! of its own (`ip netns`, only a loopback) that lasts from [`Machine::new`] to the drop,
//! across reboots; [`Machine::netns`] lets the test serve things there (the fake Infisical:
//! `FakeInfisical::start_in_netns`). Dropping a machine powers it off and removes its
//! cgroups, its network namespace (`/run/netns/NAME`, the only mount in the host's
//! namespace) and its directory.
//!
//! **One machine at a time per host**: [`Machine::new`] takes an exclusive lock that the
//! machine holds until it is dropped (2 cores boot one machine comfortably, not several).
//! Whatever machine directory or cgroup exists when the lock is taken was therefore left by
//! a test process that died, and `new` removes it.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::debian::{apt_install, built_once};
use super::podman5::PATH;
use super::{require_all, run_with_stdin};

/// The cached root file system's name under `CARGO_TARGET_TMPDIR`.
pub const ROOTFS: &str = "trixie-systemd-curl";

/// Installed without recommends on top of debootstrap's minbase: systemd as init, dbus for
/// systemctl's and logind's bus, Podman 5 with crun, netavark and aardvark-dns (quadlet's
/// networks), catatonit (`--init`), busybox-static (a base image without a registry, and
/// `wget` for HTTP from inside), CA certificates, `ip`.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "podman",
    "crun",
    "conmon",
    "netavark",
    "aardvark-dns",
    "catatonit",
    "busybox-static",
    "ca-certificates",
    "iproute2",
    // Fedora CoreOS has curl, and container mode's psi.conf runs it for Podman's driver.
    "curl",
];

/// Debian's Ignition (2.14), which applies a config to a directory (TESTING.md).
pub const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";

/// Podman settings for the limits of these hosts, not psi's business: the machine's cgroup2
/// tree has no pids controller, so a container pids limit cannot be set, and the host caps
/// open files at 20000 while the machine has no CAP_SYS_RESOURCE to go above that.
const HOST_LIMITS_CONF: &str = "\
# Limits of the test host (tests/it/support/machine.rs), not of the appliance:
# no pids controller in this machine's cgroup tree, open files capped at 20000.
[containers]
pids_limit = 0
default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]
";

/// From starting nspawn to `is-system-running` answering running or degraded. A boot takes
/// about a second here; the bound is for a loaded CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// From `systemctl poweroff` to nspawn's exit (about 2 s here).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the few things that announce nothing are looked at (PID 1 appearing, systemd
/// starting to listen).
const POLL: Duration = Duration::from_millis(20);
/// Where [`Machine::load_image`] shows the archive to the machine's Podman.
const IMAGE_IN_MACHINE: &str = "/run/psi-test-image.tar";

/// The cached root file system, built on first use; `None` (skip) when a tool is missing
/// outside CI.
fn rootfs() -> Option<&'static Path> {
    if !require_all(&[
        "systemd-nspawn",
        "debootstrap",
        "nsenter",
        "unshare",
        "cp",
        "ip",
    ]) {
        return None;
    }
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    Some(ROOT.get_or_init(|| built_once(ROOTFS, "trixie", finish_rootfs).join("root")))
}

/// Everything the cached tree gets after debootstrap.
fn finish_rootfs(root: &Path, build: &Path) {
    apt_install(root, PACKAGES, &build.join("apt.log"));
    let conf_d = root.join("etc/containers/containers.conf.d");
    fs::create_dir_all(&conf_d).unwrap();
    fs::write(conf_d.join("50-test-host-limits.conf"), HOST_LIMITS_CONF).unwrap();
    // Debian's presets enable systemd-networkd-wait-online at first boot, and it waits for a
    // network that a --private-network machine never gets: masked, so boots finish.
    std::os::unix::fs::symlink(
        "/dev/null",
        root.join("etc/systemd/system/systemd-networkd-wait-online.service"),
    )
    .unwrap();
    // dbus's postinst wrote a machine ID here, and systemd takes it when /etc/machine-id is
    // uninitialized ("Initializing machine ID from D-Bus machine ID"): every machine would
    // get the same ID. Without it, each machine makes its own at first boot (dbus's tmpfiles
    // entry then links this path to /etc/machine-id).
    let _ = fs::remove_file(root.join("var/lib/dbus/machine-id"));
}

/// The cgroup2 hierarchy: `/sys/fs/cgroup/unified` on a hybrid host like these, or
/// `/sys/fs/cgroup` on a host with cgroup v2 only. `None` (skip; a failure under CI) when
/// there is neither.
fn cgroup2_root() -> Option<PathBuf> {
    let found = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("booting a machine needs a cgroup2 hierarchy (TESTING.md)");
        }
        eprintln!("SKIP: no cgroup2 hierarchy mounted");
    }
    found
}

/// One booted (or bootable) test machine; see the module documentation.
pub struct Machine {
    name: String,
    /// `CARGO_TARGET_TMPDIR/machines/NAME`: the root, the console log, Ignition's files.
    dir: PathBuf,
    root: PathBuf,
    /// The cgroup nspawn runs in (created here; nspawn makes `payload` and `supervisor`
    /// below it), under a parent cgroup shared by all test machines.
    cgroup: PathBuf,
    cgroup2: PathBuf,
    console: PathBuf,
    nspawn: Option<Child>,
    leader: Option<Leader>,
    /// Keeps other machines (of this and other test processes) from running meanwhile.
    _lock: Flock<File>,
}

/// The running machine's PID 1 as the host sees it, and its `init.scope` cgroup.
struct Leader {
    pid: u32,
    init_scope: PathBuf,
}

impl Machine {
    /// A fresh, never booted copy of the cached root file system, named after `name` (a few
    /// letters, digits or dashes) plus this process's PID and a counter. Waits while another
    /// machine exists on this host. `None` (skip) when a tool is missing outside CI.
    pub fn new(name: &str) -> Option<Machine> {
        let cache = rootfs()?;
        let cgroup2 = cgroup2_root()?;
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let machines = base.join("machines");
        let cgroups = cgroup2.join("psi-test-machines");
        fs::create_dir_all(&machines).unwrap();
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join("machines.lock"))
            .unwrap();
        let lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap_or_else(|e| panic!("flock machines.lock: {e}"));
        reap_leftovers(&machines, &cgroups);

        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "psi-{name}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        // nspawn's --machine= is a host name.
        assert!(
            name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "machine name {name:?}: letters, digits and dashes only, 64 at most"
        );
        let dir = machines.join(&name);
        fs::create_dir(&dir).unwrap();
        let root = dir.join("root");
        let started = Instant::now();
        let out = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(cache)
            .arg(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cp -a {} {}: {}",
            cache.display(),
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // A machine that never booted, explicitly: systemd finds no machine ID, makes a fresh
        // one and treats the boot as the first (presets run, which is how the units Ignition
        // enables get enabled), then commits the ID, so a reboot is not a first boot again.
        fs::write(root.join("etc/machine-id"), "uninitialized\n").unwrap();
        let cgroup = cgroups.join(&name);
        fs::create_dir_all(&cgroup).unwrap_or_else(|e| panic!("{}: {e}", cgroup.display()));
        // The machine's network: a namespace of its own that outlives its boots, so a test
        // serves in it (the fake Infisical) before the first boot, when the appliance's
        // units first reach for it, and through every reboot. Only a loopback.
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        eprintln!("{name}: root copied in {:?}", started.elapsed());
        Some(Machine {
            console: dir.join("console.log"),
            name,
            dir,
            root,
            cgroup,
            cgroup2,
            nspawn: None,
            leader: None,
            _lock: lock,
        })
    }

    /// The machine's name (its host name and nspawn's `--machine=`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The machine's root directory on the host: write units, configs and binaries there
    /// before booting.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The machine's directory on the host (root, console log), removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup the machine runs in, removed on drop.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Applies an Ignition config (JSON, spec 3.3.0 or older) to the root with Debian's
    /// Ignition, stages `fetch-offline` and `files`: files, directories, links, users and
    /// units land in the tree, and units marked `enabled` go into a preset file that the
    /// first boot applies. Panics with Ignition's log when it fails. Before booting only.
    pub fn apply_ignition(&self, config: &str) {
        assert!(self.nspawn.is_none(), "apply_ignition before boot");
        assert!(
            Path::new(IGNITION).exists(),
            "{IGNITION} is missing (Debian package ignition; tests check support::require)"
        );
        let work = self.dir.join("ignition");
        // A fresh cache and state per config, or a second config would not be read.
        if work.exists() {
            fs::remove_dir_all(&work).unwrap();
        }
        fs::create_dir_all(work.join("bin")).unwrap();
        fs::write(work.join("config.ign"), config).unwrap();
        // Ignition relabels what it wrote for SELinux after the files stage: it reads the
        // sysroot's policy type from /etc/selinux/config and runs setfiles, which Debian does
        // not have. A disabled config and a setfiles that does nothing (first on PATH for
        // Ignition only) let it finish; the config goes away again if it was made here.
        let setfiles = work.join("bin/setfiles");
        fs::write(&setfiles, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&setfiles, fs::Permissions::from_mode(0o755)).unwrap();
        let selinux = self.root.join("etc/selinux/config");
        let made_selinux = !selinux.exists();
        if made_selinux {
            fs::create_dir_all(selinux.parent().unwrap()).unwrap();
            fs::write(&selinux, "SELINUX=disabled\nSELINUXTYPE=targeted\n").unwrap();
        }
        for stage in ["fetch-offline", "files"] {
            let out = Command::new(IGNITION)
                .arg(format!("-root={}", self.root.display()))
                .arg("-platform=file")
                .arg(format!("-stage={stage}"))
                // Everything Ignition keeps between stages stays in the machine's directory,
                // not in the host's /run.
                .arg(format!(
                    "-config-cache={}",
                    work.join("cache.json").display()
                ))
                .arg(format!("-state-file={}", work.join("state").display()))
                .arg(format!("-neednet={}", work.join("neednet").display()))
                .arg("-log-to-stdout")
                .env_clear()
                .env("PATH", format!("{}:{PATH}", work.join("bin").display()))
                .env("IGNITION_CONFIG_FILE", work.join("config.ign"))
                .current_dir(&work)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ignition -stage={stage} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if made_selinux {
            fs::remove_file(&selinux).unwrap();
            let _ = fs::remove_dir(selinux.parent().unwrap());
        }
    }

    /// Loads an image archive (`podman save`, OCI or docker format) into the machine's own
    /// storage (/var/lib/containers/storage) with the machine's Podman 5, so quadlets and
    /// `podman run` find it without a registry. Runs the machine's `podman load` under
    /// `systemd-nspawn` without booting it. Before booting only.
    pub fn load_image(&self, archive: &Path) {
        assert!(self.nspawn.is_none(), "load_image before boot");
        let archive = fs::canonicalize(archive)
            .unwrap_or_else(|e| panic!("image archive {}: {e}", archive.display()));
        // --bind-ro= separates source and target with ':'.
        assert!(
            !archive.to_string_lossy().contains(':'),
            "{}: no ':' in the path, please",
            archive.display()
        );
        let bind = format!("--bind-ro={}:{IMAGE_IN_MACHINE}", archive.display());
        let out = self
            .nspawn(&[
                "--quiet",
                "--pipe",
                &bind,
                "--",
                "podman",
                "load",
                "--input",
                IMAGE_IN_MACHINE,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let cleared = self.clear_cgroup();
        assert!(
            out.status.success(),
            "podman load {} in {}: {}\n{}{}",
            archive.display(),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cleared.unwrap();
    }

    /// `systemd-nspawn` on this machine's root with what every run here needs, launched
    /// from the machine's own cgroup; `extra` goes after the common options.
    fn nspawn(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        // With --keep-unit nspawn runs the machine in the cgroup it was started from (there
        // is no systemd on the host to make one): the launching shell moves itself into the
        // machine's own cgroup, then becomes nspawn.
        cmd.args([
            "-c",
            r#"echo $$ > "$1/cgroup.procs" && shift && exec systemd-nspawn "$@""#,
            "sh",
        ])
        .arg(&self.cgroup)
        .arg(format!("--directory={}", self.root.display()))
        .arg(format!("--machine={}", self.name))
        .args([
            // No systemd-machined on the host to register with.
            "--register=no",
            "--keep-unit",
            // Only a loopback: nothing reaches the host's network, and tests serve what the
            // machine needs there (see `netns`).
            &format!("--network-namespace-path={}", self.netns().display()),
            // Unlike --private-network, a namespace path does not keep CAP_NET_ADMIN in the
            // machine's bounding set. Without it crun cannot bring up the loopback of a
            // container's own network namespace when systemd starts it ("crun:
            // ioctl(SIOCSIFFLAGS): Operation not permitted": every quadlet fails), while
            // commands entered with nsenter, which keep the host's capabilities, still can.
            "--capability=CAP_NET_ADMIN",
            // Without these nspawn's seccomp filter blocks crun's session keyring and its
            // device eBPF program.
            "--system-call-filter=@keyring",
            "--system-call-filter=bpf",
        ])
        .args(extra)
        .env_clear()
        .env("PATH", PATH)
        // The host has hybrid cgroups, and systemd 257 refuses to boot on v1.
        .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
        // crun writes /proc/sys/net/ipv4/ping_group_range for every container.
        .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1")
        .current_dir("/");
        cmd
    }

    /// Boots the machine and returns once systemd reports the boot over (`systemctl
    /// is-system-running --wait` says running, or degraded: then the failed units are
    /// printed and the test decides). Panics with the console log's tail when PID 1 does not
    /// come up, nspawn exits, or the boot does not end within two minutes.
    pub fn boot(&mut self) {
        assert!(self.nspawn.is_none(), "{} is already running", self.name);
        let started = Instant::now();
        // What the previous nspawn (a boot or load_image) made below the machine's cgroup.
        self.clear_cgroup().unwrap();
        let mut console = File::options()
            .create(true)
            .append(true)
            .open(&self.console)
            .unwrap();
        writeln!(console, "==== psi test: boot ====").unwrap();
        // read-only: the console's output is copied to the log as it comes. TESTING.md's
        // passive leaves it in the pseudo TTY until nspawn exits, so a log read while the
        // machine runs would miss it.
        let mut cmd = self.nspawn(&["--boot", "--console=read-only"]);
        cmd.stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console);
        // Should the test process die without dropping the machine (a CI timeout kills it),
        // nspawn gets SIGTERM, which powers the machine off cleanly, rather than running on
        // with nobody to stop it. The signal comes when the thread that spawned nspawn ends,
        // which is the test's own thread, after the machine is dropped.
        #[allow(unsafe_code)]
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.nspawn = Some(cmd.spawn().expect("start systemd-nspawn"));
        self.wait_until_booted(started + BOOT_TIMEOUT);
        eprintln!("{}: booted in {:?}", self.name, started.elapsed());
    }

    fn wait_until_booted(&mut self, deadline: Instant) {
        // PID 1 appears within a second and announces nothing: looked for until it runs
        // systemd in its init.scope.
        let leader = loop {
            if let Some(leader) = self.find_leader() {
                break leader;
            }
            self.assert_nspawn_running("starting");
            if Instant::now() > deadline {
                self.fail("PID 1 did not start systemd in time");
            }
            std::thread::sleep(POLL);
        };
        self.leader = Some(leader);
        // `is-system-running --wait` blocks until the boot is over, but only once systemd
        // listens on its private socket; before that it cannot connect and returns at once.
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            let out = self.exec(&[
                "timeout",
                &left.max(1).to_string(),
                "systemctl",
                "is-system-running",
                "--wait",
            ]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            match state.as_str() {
                "running" => return,
                "degraded" => {
                    eprintln!(
                        "{}: booted degraded; failed units: {:?}",
                        self.name,
                        self.failed_units()
                    );
                    return;
                }
                "" if stderr.contains("Failed to connect") && Instant::now() < deadline => {
                    self.assert_nspawn_running("booting");
                    std::thread::sleep(POLL);
                }
                _ => self.fail(&format!(
                    "the boot did not finish: is-system-running said {state:?} ({}) {stderr}",
                    out.status
                )),
            }
        }
    }

    /// The machine's PID 1 once it runs systemd in its init.scope: nspawn's child whose PID
    /// in its own namespace is 1 (the launching `sh` execs nspawn, so nspawn's PID is the
    /// child's we spawned).
    fn find_leader(&self) -> Option<Leader> {
        let nspawn = self.nspawn.as_ref()?.id().to_string();
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_owned())
            };
            if field("PPid:").as_deref() != Some(nspawn.as_str())
                || field("NSpid:").and_then(|v| v.rsplit('\t').next().map(str::to_owned))
                    != Some("1".to_owned())
            {
                continue;
            }
            // Until it execs systemd, PID 1 is still nspawn's code setting things up.
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            if exe.file_name() != Some(OsStr::new("systemd")) {
                return None;
            }
            let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
            if !path.ends_with("/init.scope") {
                return None;
            }
            return Some(Leader {
                pid,
                init_scope: self.cgroup2.join(path.trim_start_matches('/')),
            });
        }
        None
    }

    fn assert_nspawn_running(&mut self, doing: &str) {
        if let Some(child) = self.nspawn.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.nspawn = None;
                self.leader = None;
                self.fail(&format!(
                    "systemd-nspawn exited with {status} while {doing}"
                ));
            }
        }
    }

    /// Panics with `what`, the failed units (when systemd answers) and the console's tail.
    fn fail(&self, what: &str) -> ! {
        let failed = match self.leader {
            Some(_) => format!("{}\n", self.failed_report()),
            None => String::new(),
        };
        panic!(
            "{}: {what}\n{failed}console ({}), last lines:\n{}",
            self.name,
            self.console.display(),
            self.console_tail(40)
        );
    }

    /// A command run inside the running machine: `args` in all of PID 1's namespaces (mount,
    /// UTS, IPC, network, PID, cgroup, root and working directory) and in its init.scope
    /// cgroup, with a clean environment (PATH, HOME=/root, LANG), not the test's.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let leader = self
            .leader
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let mut cmd = Command::new("sh");
        // Into the machine's cgroup tree first, like anything systemd starts there: entering
        // its cgroup namespace (-C) from outside the tree would leave the command's cgroup
        // outside the namespace root, which confuses systemd and Podman inside.
        cmd.args([
            "-c",
            r#"echo $$ > "$1/cgroup.procs" || exit 125; pid=$2; shift 2; exec nsenter -t "$pid" -m -u -i -n -p -C -r -w "$@""#,
            "sh",
        ])
        .arg(&leader.init_scope)
        .arg(leader.pid.to_string())
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .current_dir("/");
        cmd
    }

    /// Runs `args` inside (see [`Machine::command`]) with stdin closed.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `args` inside with `stdin` piped in (e.g. `podman exec -i`, `podman secret
    /// create NAME -`).
    pub fn exec_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_stdin(&mut self.command(args), stdin)
    }

    /// Runs `sh -c script` inside.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// Runs `args` inside, asserts success and returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{}: {args:?} failed with {}: {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `sh -c script` inside, asserts success and returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        self.exec_ok(&["sh", "-c", script])
    }

    /// `systemctl is-system-running`: running, degraded, starting...
    pub fn state(&self) -> String {
        let out = self.exec(&["systemctl", "is-system-running"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The units systemd lists as failed.
    pub fn failed_units(&self) -> Vec<String> {
        let out = self.exec(&[
            "systemctl",
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    /// `journalctl -u UNIT --no-pager -o cat` (and whatever it printed on stderr), for
    /// failure messages.
    pub fn journal(&self, unit: &str) -> String {
        let out = self.exec(&["journalctl", "-u", unit, "--no-pager", "-o", "cat"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits up to `timeout` for a line of `unit`'s journal in this boot, old or new, that
    /// contains every one of `needles`; returns the line. Follows the journal (`journalctl
    /// --follow`) instead of asking again and again, so it returns as soon as the line is
    /// written. `None` when no such line came in time.
    pub fn wait_for_log(&self, unit: &str, needles: &[&str], timeout: Duration) -> Option<String> {
        let secs = timeout.as_secs().max(1).to_string();
        let mut child = self
            .command(&[
                "timeout",
                &secs,
                "journalctl",
                "-b",
                "-u",
                unit,
                "--follow",
                "--lines=all",
                "--no-pager",
                "-o",
                "cat",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let needles: Vec<String> = needles.iter().map(|n| (*n).to_owned()).collect();
        // journalctl ends by itself at `timeout` (or on SIGPIPE once this end is gone), so
        // the reader thread always finishes; the channel gives the wait its deadline.
        let (found, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if needles.iter().all(|n| line.contains(n.as_str())) {
                    let _ = found.send(line);
                    return;
                }
            }
        });
        let line = wait.recv_timeout(timeout).ok();
        let _ = child.kill();
        let _ = child.wait();
        line
    }

    /// The failed units with their journals, for failure messages.
    pub fn failed_report(&self) -> String {
        self.failed_units()
            .iter()
            .map(|unit| format!("== {unit} failed:\n{}", self.journal(unit)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Everything the machine's console printed, all boots.
    pub fn console_log(&self) -> String {
        fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn console_tail(&self, lines: usize) -> String {
        let text = strip_ansi(&self.console_log());
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The machine's network namespace (`ip netns`, `/run/netns/NAME`), where a test can
    /// bind servers on the machine's 127.0.0.1: the same before the first boot and across
    /// reboots.
    pub fn netns(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Powers the machine off cleanly and waits for nspawn; panics (after killing it) when
    /// that takes more than a minute or nspawn reports a failure.
    pub fn poweroff(&mut self) {
        let started = Instant::now();
        if let Err(e) = self.stop() {
            panic!("{}: {e}\n{}", self.name, self.console_tail(40));
        }
        eprintln!("{}: powered off in {:?}", self.name, started.elapsed());
    }

    /// Powers off and boots again on the same root, as a real reboot: what the machine wrote
    /// to disk stays, /run and /tmp start empty.
    pub fn reboot(&mut self) {
        self.poweroff();
        self.boot();
    }

    /// `systemctl poweroff` and a bounded wait for nspawn; kills the machine's processes when
    /// it does not stop in time or never got as far as systemd. Never panics (Drop uses it).
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.nspawn.take() else {
            return Ok(());
        };
        let mut problems = Vec::new();
        if self.leader.is_some() {
            // --no-block: systemctl returns once the job is queued. Without it, it waits for
            // a reply the shutdown may cut off ("Call to PowerOff failed: Connection reset
            // by peer").
            match self
                .command(&["systemctl", "poweroff", "--no-block"])
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) if out.status.success() => {}
                Ok(out) => problems.push(format!(
                    "systemctl poweroff: {} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )),
                Err(e) => problems.push(format!("systemctl poweroff: {e}")),
            }
        }
        self.leader = None;
        let waited = if problems.is_empty() {
            wait_timeout(&mut child, STOP_TIMEOUT)
        } else {
            None
        };
        match waited {
            Some(status) if status.success() => {}
            Some(status) => problems.push(format!("systemd-nspawn exited with {status}")),
            None => {
                // Everything in the machine's cgroup (nspawn included) is this machine's.
                let _ = fs::write(self.cgroup.join("cgroup.kill"), "1");
                let _ = child.kill();
                let _ = child.wait();
                problems.push("the machine did not power off; killed".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Removes the cgroups nspawn and the machine's systemd made below the machine's own,
    /// once their processes are gone.
    fn clear_cgroup(&self) -> Result<(), String> {
        if !wait_empty(&self.cgroup, STOP_TIMEOUT) {
            return Err(format!("{}: processes left", self.cgroup.display()));
        }
        for entry in fs::read_dir(&self.cgroup)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup(&entry.path())?;
            }
        }
        Ok(())
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let started = Instant::now();
        let mut problems = Vec::new();
        if let Err(e) = self.stop() {
            problems.push(e);
        }
        if let Err(e) = self
            .clear_cgroup()
            .and_then(|()| remove_cgroup(&self.cgroup))
        {
            problems.push(e);
        }
        if let Err(e) = try_ip(&["netns", "delete", &self.name]) {
            problems.push(e);
        }
        // The parent of all machines' cgroups; this machine holds the lock, so it is the
        // only one, and the parent is empty now.
        let _ = fs::remove_dir(self.cgroup.parent().unwrap());
        if let Err(e) = remove_tree(&self.dir) {
            problems.push(e);
        }
        if problems.is_empty() {
            eprintln!("{}: removed in {:?}", self.name, started.elapsed());
        } else if std::thread::panicking() {
            eprintln!("{}: left behind: {}", self.name, problems.join("; "));
        } else {
            panic!(
                "{}: left behind: {}\n{}",
                self.name,
                problems.join("; "),
                self.console_tail(40)
            );
        }
    }
}

/// Removes machine directories and cgroups of test processes that died without dropping
/// their machines. Called with the lock held, so no other machine is running. A cgroup that
/// still has processes (a machine still shutting down) is left alone, with its directory.
fn reap_leftovers(machines: &Path, cgroups: &Path) {
    let Ok(entries) = fs::read_dir(machines) else {
        return;
    };
    for entry in entries.flatten() {
        let cgroup = cgroups.join(entry.file_name());
        if cgroup.exists() {
            if let Err(e) = remove_cgroup(&cgroup) {
                eprintln!("a dead test's machine is still there: {e}");
                continue;
            }
        }
        match remove_tree(&entry.path()) {
            Ok(()) => eprintln!("removed a dead test's machine {}", entry.path().display()),
            Err(e) => eprintln!("a dead test's machine is still there: {e}"),
        }
    }
    if let Ok(entries) = fs::read_dir(cgroups) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let _ = remove_cgroup(&entry.path());
            }
        }
    }
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("psi-") {
            let _ = try_ip(&["netns", "delete", &name]);
        }
    }
}

/// `ip ARGS...` (iproute2), panicking with its stderr.
fn ip(args: &[&str]) {
    try_ip(args).unwrap_or_else(|e| panic!("{e}"));
}

fn try_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes cgroup `cg` and the cgroups below it (deepest first; a cgroup directory holds
/// only the kernel's files, which rmdir takes along).
fn remove_cgroup(cg: &Path) -> Result<(), String> {
    if !cg.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(cg)
        .map_err(|e| format!("{}: {e}", cg.display()))?
        .flatten()
    {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup(&entry.path())?;
        }
    }
    fs::remove_dir(cg).map_err(|e| format!("rmdir {}: {e}", cg.display()))
}

/// Removes `dir` unless something is mounted at or below it (then the tree is not only
/// ours to delete).
fn remove_tree(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    let prefix = dir.to_string_lossy();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    if let Some(mount) = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
    {
        return Err(format!("{mount} is still mounted; not removing {prefix}"));
    }
    fs::remove_dir_all(dir).map_err(|e| format!("rm -r {prefix}: {e}"))
}

/// Waits up to `timeout` for `child` to exit and reaps it; `None` when it is still running.
/// A pidfd becomes readable when the process exits, so this blocks instead of polling; the
/// child is not reaped before that, so its PID cannot have been reused.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    #[allow(unsafe_code)]
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        panic!("pidfd_open: {}", std::io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if poll_until(fd.as_raw_fd(), libc::POLLIN, deadline) {
        Some(child.wait().unwrap())
    } else {
        None
    }
}

/// Waits up to `timeout` until no process is left in cgroup `cg` or below: its
/// `cgroup.events` says `populated 0`, and the kernel flags every change of that file with
/// POLLPRI.
fn wait_empty(cg: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let Ok(mut file) = File::open(cg.join("cgroup.events")) else {
        return true;
    };
    loop {
        // Read through the descriptor that is polled: poll reports changes since its last
        // read, so a change between this check and the poll is not missed.
        let mut text = String::new();
        if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
            return true;
        }
        if text.lines().any(|l| l == "populated 0") {
            return true;
        }
        if !poll_until(file.as_raw_fd(), libc::POLLPRI, deadline) {
            return false;
        }
    }
}

/// poll(2) on one descriptor until `events` or `deadline`; true when the events came.
fn poll_until(fd: i32, events: libc::c_short, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        #[allow(unsafe_code)]
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        match rc {
            0 => return false,
            n if n > 0 => return true,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => panic!("poll: {}", std::io::Error::last_os_error()),
        }
    }
}

/// The text without terminal escape sequences (systemd colours its console output).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}
