//! Every process psi starts is built here, under one environment policy. Values travel over
//! pipes, never argv.
//!
//! Two kinds of child:
//! - **helpers** psi starts and waits for ([`command`]: `systemd-creds`, `podman`,
//!   `systemctl`, `getsebool`, TLS hooks) inherit psi's environment minus [`SECRETS`] and
//!   [`PSI_ONLY`];
//! - **`psi run`'s command** ([`replacement`]) takes psi's place in the same process and
//!   inherits the caller's environment minus [`SECRETS`], plus the values it asked for.
//!
//! [`SECRETS`] are psi's own credentials, or where to read them: no child needs them, and a
//! hook or a workload command that could read them could talk to `psi serve` as psi, unlock
//! the HSM, or read the cache key. [`PSI_ONLY`] are meant for psi as the process systemd
//! started, or are the caller's cloud identity that psi borrows for its Infisical login:
//! helpers have no use for them, but `psi run`'s command keeps them, because it becomes that
//! process (same PID, so `LISTEN_PID` and `NOTIFY_SOCKET` are now its own) and acts for the
//! caller (an `aws` or `terraform` command needs the caller's AWS keys).

use std::ffi::OsStr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Withheld from every child: psi's socket token and HSM PIN, and `CREDENTIALS_DIRECTORY`,
/// which points at the files systemd decrypted for psi (`psi-socket-token`, `hsm-pin`,
/// `psi-cache-key`, Infisical credentials).
const SECRETS: &[&str] = &[
    "PSI_SOCKET_TOKEN",
    "PSI_NITROKEYHSM_PIN",
    "CREDENTIALS_DIRECTORY",
];

/// Also withheld from helpers: the fds and notification socket systemd handed to psi (a
/// helper seeing `LISTEN_FDS` could try to adopt psi's listening socket, one seeing
/// `NOTIFY_SOCKET` could report psi ready or stopping), and the static AWS keys psi may log
/// in to Infisical with (`auth.method: aws-iam`).
const PSI_ONLY: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// What a finished child produced. `stdout` may hold a secret, so it zeroizes.
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: Zeroizing<Vec<u8>>,
    pub stderr: String,
}

/// Runs `program args...`, feeding `stdin` through a pipe, and collects its output.
pub async fn run<I, S>(program: &OsStr, args: I, stdin: &[u8]) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::from(piped(program, args, Stdio::piped()));
    command.kill_on_drop(true);
    let shown = program.to_string_lossy().into_owned();
    let mut child = command.spawn().map_err(|err| Error::Io {
        context: format!("cannot run {shown}"),
        source: err,
    })?;
    let mut pipe = child.stdin.take().expect("stdin was piped");
    // Write stdin while the child's output is drained, so a large value cannot deadlock
    // against a full stdout pipe.
    let feed = async move {
        let result = pipe.write_all(stdin).await;
        drop(pipe);
        result
    };
    let (fed, output) = tokio::join!(feed, child.wait_with_output());
    let output = output.map_err(|err| Error::Io {
        context: format!("waiting for {shown}"),
        source: err,
    })?;
    // A child that exits without reading all of stdin is reported by its status, not as EPIPE.
    if let Err(err) = fed {
        if err.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Error::Io {
                context: format!("writing to {shown}"),
                source: err,
            });
        }
    }
    Ok(Output::from(output))
}

/// [`run`] for a synchronous caller that gives the child no input (psi unsealing its cache
/// key while it loads its settings, before anything else runs).
pub fn run_blocking<I, S>(program: &OsStr, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    piped(program, args, Stdio::null())
        .output()
        .map(Output::from)
        .map_err(|err| Error::Io {
            context: format!("cannot run {}", program.to_string_lossy()),
            source: err,
        })
}

/// Whether `program` is an executable file in one of `PATH`'s directories.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// A helper: `program args...` without [`SECRETS`] and [`PSI_ONLY`]; stdio is the
/// caller's choice.
pub fn command<I, S>(program: impl AsRef<OsStr>, args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = std::process::Command::new(program);
    command.args(args);
    for name in SECRETS.iter().chain(PSI_ONLY) {
        command.env_remove(name);
    }
    command
}

/// The command `psi run` replaces itself with: the caller's environment without
/// [`SECRETS`].
pub fn replacement(program: impl AsRef<OsStr>) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for name in SECRETS {
        command.env_remove(name);
    }
    command
}

/// A helper with its output piped.
fn piped<I, S>(program: &OsStr, args: I, stdin: Stdio) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = command(program, args);
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

impl From<std::process::Output> for Output {
    fn from(output: std::process::Output) -> Output {
        Output {
            success: output.status.success(),
            code: output.status.code(),
            stdout: Zeroizing::new(output.stdout),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }
    }
}
