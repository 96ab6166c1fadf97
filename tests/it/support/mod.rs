//! Fixtures shared by the test modules.

pub mod bookworm;
pub mod child_env;
pub mod debian;
pub mod fleet;
pub mod http;
pub mod infisical;
pub mod lookups;
pub mod machine;
pub mod notify;
pub mod podman;
pub mod podman5;
pub mod softhsm;
pub mod swtpm;
pub mod virtual_clock;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use psi::config::WithKey;
use psi::provider::creds::SystemdCreds;
use tempfile::TempDir;

use notify::NotifySocket;

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

    /// A wrapper around the real systemd-creds that uses this sandbox's host key. Decrypting
    /// the credential named `slow` first waits at this sandbox's [`SlowGate`]: a provider
    /// exactly as slow as the test needs, with no timing in it.
    pub fn creds_wrapper(&self) -> PathBuf {
        // Its own directory, named `systemd-creds`, so it can also go first on a PATH.
        let dir = self.path().join("creds-wrapper");
        std::fs::create_dir_all(&dir).unwrap();
        let gate = self.slow_gate();
        let path = dir.join("systemd-creds");
        let script = format!(
            "#!/bin/sh\ncase \"$*\" in decrypt*--name=slow*) echo > '{}'; read _ < '{}' ;; esac\nSYSTEMD_CREDENTIAL_SECRET={} exec {} \"$@\"\n",
            gate.started.display(),
            gate.release.display(),
            self.credential_secret().display(),
            real_systemd_creds()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Where a `slow` credential's call waits (see [`Sandbox::creds_wrapper`]).
    pub fn slow_gate(&self) -> SlowGate {
        let gate = SlowGate {
            started: self.path().join("slow-started"),
            release: self.path().join("slow-release"),
        };
        for fifo in [&gate.started, &gate.release] {
            if !fifo.exists() {
                nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            }
        }
        gate
    }

    /// The systemd-creds provider on this sandbox's host key.
    pub fn creds_provider(&self) -> SystemdCreds {
        SystemdCreds::new(OsString::from(self.creds_wrapper()), WithKey::Host, None)
    }

    /// A `psi` command with this sandbox's environment (host key, no inherited psi vars).
    pub fn psi(&self) -> Command {
        self.command(psi_bin())
    }

    /// `program` (psi, or another of its binaries) with this sandbox's environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
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

/// Every regular file under `dir`, recursively, with its bytes (sockets and FIFOs hold
/// nothing on disk, and reading a FIFO would block).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            out.extend(files_under(&path));
        } else if kind.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
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

/// Two FIFOs in a sandbox: a call for the `slow` credential writes a line to `started`, then
/// waits for a line on `release`. Opening a FIFO blocks until the other side opens it, so
/// each step waits for the other, with nothing timed.
pub struct SlowGate {
    started: PathBuf,
    release: PathBuf,
}

impl SlowGate {
    /// Blocks until a `slow` call has reached the provider and is waiting.
    pub fn started(&self) {
        std::fs::read(&self.started).unwrap();
    }

    /// Lets the waiting `slow` call go on.
    pub fn release(&self) {
        std::fs::write(&self.release, b"\n").unwrap();
    }
}

/// A running `psi serve` child, stopped (SIGTERM) on drop. It is started the way systemd
/// starts it: with a `NOTIFY_SOCKET` of ours, so "ready" is its `READY=1` rather than a
/// guess, and its stderr is read line by line as it comes, so a test can wait for an event
/// in the log.
pub struct ServeProcess {
    pub child: std::process::Child,
    notify: NotifySocket,
    log: Arc<Log>,
}

/// Serve's stderr so far, and whether it has ended.
#[derive(Default)]
struct Log {
    text: Mutex<(String, bool)>,
    grew: Condvar,
}

impl ServeProcess {
    /// Starts `psi -c <config> serve` from `sandbox`'s command with extra env and waits for
    /// its `READY=1` (sent once `socket` is bound). Its stderr is also copied to `log`, for
    /// a look after a failure.
    pub fn start(mut cmd: Command, socket: &Path, log: PathBuf) -> ServeProcess {
        let notify = NotifySocket::bind(log.with_extension("notify"));
        let mut child = cmd
            .env("NOTIFY_SOCKET", notify.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let shared = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let (reader_log, file) = (Arc::clone(&shared), std::fs::File::create(&log).unwrap());
        std::thread::spawn(move || follow_stderr(stderr, file, &reader_log));
        let mut serve = ServeProcess {
            child,
            notify,
            log: shared,
        };
        let log = Arc::clone(&serve.log);
        serve.notify.wait_ready(
            &mut serve.child,
            "psi serve",
            Duration::from_secs(30),
            || lock(&log.text).0.clone(),
        );
        assert!(
            socket.exists(),
            "READY=1 before {} existed",
            socket.display()
        );
        serve
    }

    /// The next message serve sent on its notify socket after `READY=1` (`STOPPING=1`), or
    /// None when nothing came within `timeout`.
    pub fn notification(&self, timeout: Duration) -> Option<String> {
        self.notify.recv(timeout)
    }

    /// Everything serve has written to stderr so far; once serve has exited and been
    /// waited for, everything it wrote (the reader may still be copying the last lines).
    pub fn log(&self) -> String {
        let guard = lock(&self.log.text);
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if guard.1 || nix::sys::signal::kill(pid, None).is_ok() {
            return guard.0.clone();
        }
        // A child that serve started and that outlives it can hold the pipe open: bounded.
        self.log
            .grew
            .wait_timeout_while(guard, Duration::from_secs(5), |(_, closed)| !*closed)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
             .0
            .clone()
    }

    /// Waits until `done` holds for serve's stderr so far (checked at every new line), and
    /// returns the log; fails the test if serve exits or `timeout` passes first.
    pub fn wait_for_log(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.log.text);
        loop {
            if done(&guard.0) {
                return guard.0.clone();
            }
            let now = Instant::now();
            assert!(!guard.1, "psi serve exited before {what}: {}", guard.0);
            assert!(now < deadline, "no {what} within {timeout:?}: {}", guard.0);
            guard = self
                .log
                .grew
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap()
    }
}

/// Copies serve's stderr to `file` and `log` line by line, waking waiters at each line; at
/// the end, marks the log closed.
fn follow_stderr(stderr: std::process::ChildStderr, mut file: std::fs::File, log: &Log) {
    use std::io::{BufRead, Write};
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let _ = file.write_all(&line);
        lock(&log.text).0.push_str(&String::from_utf8_lossy(&line));
        log.grew.notify_all();
        line.clear();
    }
    lock(&log.text).1 = true;
    log.grew.notify_all();
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
