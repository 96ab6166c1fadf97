//! Fixtures shared by the test modules.

pub mod bookworm;
pub mod child_env;
pub mod debian;
pub mod http;
pub mod infisical;
pub mod machine;
pub mod podman;
pub mod podman5;
pub mod softhsm;
pub mod swtpm;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use psi::config::WithKey;
use psi::provider::creds::SystemdCreds;
use tempfile::TempDir;

/// The psi binary cargo built for these tests.
pub fn psi_bin() -> &'static str {
    env!("CARGO_BIN_EXE_psi")
}

/// Whether `tool` is on PATH. Under `CI=true` a missing tool fails the test; elsewhere the
/// test is skipped with a message (returns false).
pub fn require(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required under CI=true (scripts/test installs it)");
        }
        eprintln!("SKIP: {tool} not installed (scripts/test installs it)");
    }
    found
}

/// Whether every one of `tools` is on PATH, as [`require`] says it (stops at the first
/// missing one).
pub fn require_all(tools: &[&str]) -> bool {
    tools.iter().all(|tool| require(tool))
}

/// A per-test directory with a systemd-creds host key of its own, so tests never touch
/// /var/lib/systemd/credential.secret and never share a key.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("psi-test.")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("psi.sock")
    }

    pub fn credential_secret(&self) -> PathBuf {
        self.path().join("credential.secret")
    }

    /// Writes `config.yaml` with this sandbox's state dir and socket, plus `extra` YAML.
    pub fn config(&self, extra: &str) -> PathBuf {
        let path = self.path().join("config.yaml");
        let text = format!(
            "state_dir: {}\nsocket_path: {}\n{extra}",
            self.state_dir().display(),
            self.socket().display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A wrapper around the real systemd-creds that uses this sandbox's host key and, for
    /// credentials named `slow`, first sleeps `slow_secs` (a deliberately slow provider).
    pub fn creds_wrapper(&self, slow_secs: u32) -> PathBuf {
        // Its own directory, named `systemd-creds`, so it can also go first on a PATH.
        let dir = self.path().join(format!("creds-slow-{slow_secs}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("systemd-creds");
        let script = format!(
            "#!/bin/sh\ncase \"$*\" in *--name=slow*) sleep {slow_secs} ;; esac\nSYSTEMD_CREDENTIAL_SECRET={} exec {} \"$@\"\n",
            self.credential_secret().display(),
            real_systemd_creds()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The systemd-creds provider on this sandbox's host key.
    pub fn creds_provider(&self, slow_secs: u32) -> SystemdCreds {
        SystemdCreds::new(
            OsString::from(self.creds_wrapper(slow_secs)),
            WithKey::Host,
            None,
        )
    }

    /// A `psi` command with this sandbox's environment (host key, no inherited psi vars).
    pub fn psi(&self) -> Command {
        let mut cmd = Command::new(psi_bin());
        cmd.env("SYSTEMD_CREDENTIAL_SECRET", self.credential_secret());
        for var in [
            "PSI_CONFIG",
            "PSI_SOCKET",
            "PSI_SOCKET_TOKEN",
            "PSI_LOG_LEVEL",
            "PSI_LOG_JSON",
            "CREDENTIALS_DIRECTORY",
            "SECRET_ID",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

/// The real systemd-creds binary (wrappers exec it by absolute path, never via PATH).
fn real_systemd_creds() -> String {
    let out = Command::new("sh")
        .args(["-c", "command -v systemd-creds"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `cmd` with `stdin` and returns its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// Every file under `dir`, recursively, with its bytes.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

/// Asserts that no file under `dir` contains `needle`.
pub fn assert_not_on_disk(dir: &Path, needle: &[u8]) {
    for (path, bytes) in files_under(dir) {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "plaintext found in {}",
            path.display()
        );
    }
}

/// A running `psi serve` child, stopped (SIGTERM) on drop.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub stderr_path: PathBuf,
}

impl ServeProcess {
    /// Starts `psi -c <config> serve` from `sandbox`'s command with extra env, waiting for
    /// `socket` to appear.
    pub fn start(mut cmd: Command, socket: &Path, log: PathBuf) -> ServeProcess {
        let stderr = std::fs::File::create(&log).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
        let mut serve = ServeProcess {
            child,
            stderr_path: log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!("psi serve exited with {status}: {}", serve.log());
            }
            assert!(
                Instant::now() < deadline,
                "psi serve did not bind: {}",
                serve.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Whether golden files are being refreshed (`UPDATE_GOLDEN=1`).
pub fn update_golden() -> bool {
    std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1")
}

/// Compares `text` with the golden file at `path`, rewriting it first under
/// `UPDATE_GOLDEN=1`.
pub fn assert_golden(path: &Path, text: &str) {
    if update_golden() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(text, expected, "drifted from {}", path.display());
}

/// Podman's secrets by name -> ID: `podman secret ls` through `podman` (any Podman harness's
/// command, with its environment).
pub fn secret_ids(mut podman: Command) -> std::collections::BTreeMap<String, String> {
    let out = podman
        .args(["secret", "ls", "--format", "{{.Name}} {{.ID}}"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman secret ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_owned(), i.to_owned()))
        .collect()
}

/// The actions of one workload in a `psi setup --json` report, as "action name" strings.
pub fn setup_actions(report: &serde_json::Value, workload: &str) -> Vec<String> {
    report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == workload)
        .unwrap_or_else(|| panic!("no workload {workload} in {report}"))["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().unwrap(),
                a["name"].as_str().unwrap()
            )
        })
        .collect()
}
