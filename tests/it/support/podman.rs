//! Real Podman, per test: its own storage (and so its own secrets database), a
//! containers.conf with psi's driver configuration from `psi install`, a tiny busybox image
//! imported without a registry, and a `psi serve` on the sandbox socket.
//!
//! The storage is chosen through `CONTAINERS_STORAGE_CONF` rather than flags because
//! `psi creds store --register` runs plain `podman secret create` itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::notify::NotifySocket;

use super::{require_all, run_with_stdin, Sandbox, ServeProcess};

pub const IMAGE: &str = "localhost/psi-test-bb";

/// Settings that let Podman 4.3 start containers on these machines (crun and cgroups v1
/// hybrid do not mix; see TESTING.md), with Podman's temp dir (events log, locks) inside
/// the sandbox instead of the host's /run/libpod.
pub fn base_conf(dir: &Path) -> String {
    format!(
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\ntmp_dir = \"{}/tmp\"\n",
        dir.display()
    )
}

pub struct PodmanEnv {
    /// First, so it stops before the sandbox it lives in is removed.
    api: Option<ApiService>,
    pub sandbox: Sandbox,
    pub config: PathBuf,
    pub serve: ServeProcess,
    /// Set on every psi and podman child (and on `psi serve`), e.g. `SOFTHSM2_CONF`.
    extra_env: Vec<(String, std::ffi::OsString)>,
}

impl PodmanEnv {
    /// Sets everything up, or returns `None` (skip) when a tool is missing outside CI.
    /// The driver commands are curl's, whatever `psi install` would pick on this host.
    pub fn new(config_extra: &str) -> Option<PodmanEnv> {
        PodmanEnv::with_env(config_extra, &[])
    }

    /// As [`PodmanEnv::new`], with `env` set on every child, `psi serve` included.
    pub fn with_env(config_extra: &str, env: &[(&str, &std::ffi::OsStr)]) -> Option<PodmanEnv> {
        PodmanEnv::with_client(config_extra, env, "curl")
    }

    /// As [`PodmanEnv::with_env`], with psi.conf from `psi install --client CLIENT`.
    pub fn with_client(
        config_extra: &str,
        env: &[(&str, &std::ffi::OsStr)],
        client: &str,
    ) -> Option<PodmanEnv> {
        let extra_env: Vec<(String, std::ffi::OsString)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if !require_all(&["podman", "runc", "curl", "systemd-creds", "busybox"]) {
            return None;
        }
        let sandbox = Sandbox::new();
        let config = sandbox.config(config_extra);
        let driver = sandbox
            .psi()
            .envs(env.iter().copied())
            .args(["-c", config.to_str().unwrap(), "install", "--stdout"])
            .args(["--client", client])
            .output()
            .unwrap();
        assert!(
            driver.status.success(),
            "psi install --stdout: {}",
            String::from_utf8_lossy(&driver.stderr)
        );
        let mut conf = base_conf(sandbox.path()).into_bytes();
        conf.extend_from_slice(&driver.stdout);
        std::fs::write(sandbox.path().join("containers.conf"), conf).unwrap();
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
            sandbox.path().display()
        );
        std::fs::write(sandbox.path().join("storage.conf"), storage).unwrap();

        let mut serve_cmd = sandbox.psi();
        serve_cmd.envs(extra_env.iter().map(|(k, v)| (k, v))).args([
            "-c",
            config.to_str().unwrap(),
            "serve",
        ]);
        let serve = ServeProcess::start(
            serve_cmd,
            &sandbox.socket(),
            sandbox.path().join("serve.log"),
        );
        let env = PodmanEnv {
            api: None,
            sandbox,
            config,
            serve,
            extra_env,
        };
        let imported = env
            .podman()
            .args(["import", image_tar().to_str().unwrap(), IMAGE])
            .output()
            .unwrap();
        assert!(
            imported.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&imported.stderr)
        );
        Some(env)
    }

    /// Environment shared by podman and psi children: this test's conf, storage, host key.
    fn apply_env(&self, cmd: &mut Command) {
        cmd.env(
            "CONTAINERS_CONF",
            self.sandbox.path().join("containers.conf"),
        )
        .env(
            "CONTAINERS_STORAGE_CONF",
            self.sandbox.path().join("storage.conf"),
        )
        .env(
            "SYSTEMD_CREDENTIAL_SECRET",
            self.sandbox.credential_secret(),
        )
        .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
    }

    pub fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        self.apply_env(&mut cmd);
        cmd
    }

    /// `psi -c <config> ARGS...` with this test's environment.
    pub fn psi(&self, args: &[&str]) -> Command {
        let mut cmd = self.sandbox.psi();
        self.apply_env(&mut cmd);
        cmd.args(["-c", self.config.to_str().unwrap()]).args(args);
        cmd
    }

    /// `printf value | podman secret create [extra...] NAME -`.
    pub fn secret_create(&self, name: &str, value: &[u8], extra: &[&str]) -> Output {
        let mut cmd = self.podman();
        cmd.args(["secret", "create"]).args(extra).args([name, "-"]);
        run_with_stdin(&mut cmd, value)
    }

    /// Runs `sh -c script` in the test image with `--secret` options.
    pub fn run(&self, secrets: &[&str], script: &str) -> Output {
        let mut cmd = self.podman();
        cmd.args(["run", "--rm", "--network", "none"]);
        for secret in secrets {
            cmd.args(["--secret", secret]);
        }
        cmd.args([IMAGE, "sh", "-c", script]);
        cmd.output().unwrap()
    }

    /// Podman's ID for secret `name`.
    pub fn secret_id(&self, name: &str) -> String {
        let out = self
            .podman()
            .args(["secret", "inspect", "--format", "{{.ID}}", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "secret inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.sandbox.state_dir()
    }

    /// Readies this environment for `psi setup`: starts the libpod API service and points
    /// the config's `podman_socket` at it and its `systemd_dir` into the sandbox (serve does
    /// not read either, so it keeps running). Returns the systemd dir.
    pub fn for_setup(&mut self) -> PathBuf {
        let socket = self.api_socket();
        let systemd = self.sandbox.path().join("systemd");
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(&format!(
            "systemd_dir: {}\npodman_socket: {}\n",
            systemd.display(),
            socket.display()
        ));
        std::fs::write(&self.config, text).unwrap();
        systemd
    }

    /// The socket of this test's libpod API service (`podman system service`, with the same
    /// containers.conf and storage as the CLI), started on first use and stopped on drop.
    pub fn api_socket(&mut self) -> PathBuf {
        if let Some(api) = &self.api {
            return api.socket.clone();
        }
        let socket = self.sandbox.path().join("podman.sock");
        let log = self.sandbox.path().join("podman-service.log");
        // Shell driver commands run inside the service and write here.
        let log_file = std::fs::File::create(&log).unwrap();
        // Podman sends READY=1 once its socket answers, as it does to systemd.
        let notify = NotifySocket::bind(self.sandbox.path().join("podman-service.notify"));
        let child = self
            .podman()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env("NOTIFY_SOCKET", notify.path())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut api = ApiService {
            child,
            socket: socket.clone(),
        };
        notify.wait_ready(
            &mut api.child,
            "podman system service",
            Duration::from_secs(30),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        self.api = Some(api);
        socket
    }

    /// What the libpod API service printed, the shell driver commands' output included.
    pub fn api_log(&self) -> String {
        std::fs::read_to_string(self.sandbox.path().join("podman-service.log")).unwrap_or_default()
    }
}

/// A running `podman system service`, stopped (SIGTERM, then SIGKILL) on drop.
struct ApiService {
    child: Child,
    socket: PathBuf,
}

impl Drop for ApiService {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A busybox-static root file system as a tarball, built once per test run.
pub fn image_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("psi-test-image");
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let busybox = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v busybox"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::fs::copy(busybox.trim(), root.join("bin/busybox")).unwrap();
        for applet in ["sh", "cat", "printf", "od", "ls", "wc", "stat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = dir.join("bb.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        tar
    })
}
