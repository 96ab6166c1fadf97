//! Child processes (systemd-creds, podman) started without psi's own credentials and without
//! the systemd hand-over variables meant for psi alone. Values travel over pipes, never argv.

use std::ffi::OsStr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Variables a child must not inherit: credentials psi read, and fds/sockets systemd handed
/// to psi (a child seeing `LISTEN_FDS` could try to adopt psi's listening socket).
const WITHHELD: &[&str] = &[
    "PSI_SOCKET_TOKEN",
    "PSI_NITROKEYHSM_PIN",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
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
    let mut command = Command::from(command(program, args, Stdio::piped()));
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
    command(program, args, Stdio::null())
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

/// `program args...` with its output piped and without [`WITHHELD`] variables.
fn command<I, S>(program: &OsStr, args: I, stdin: Stdio) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in WITHHELD {
        command.env_remove(name);
    }
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
