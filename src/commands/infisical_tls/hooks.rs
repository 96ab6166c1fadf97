//! The hooks of `psi infisical tls`, run after a certificate was written: each one split
//! like a shell word list when the config was loaded (no shell runs it), with a timeout,
//! its output logged, under psi's policy for helpers ([`crate::process`]: without psi's
//! secrets, credentials directory or AWS keys).

use std::process::Stdio;
use std::time::Duration;

use crate::config::Hook;
use crate::error::{Error, Result, ResultExt};

/// How long a hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `hooks` in order; returns how many failed (missing program, non-zero exit,
/// timeout). Their command lines were split when the config was loaded.
pub async fn run_hooks(hooks: &[Hook], timeout: Duration) -> usize {
    let mut failed = 0;
    for hook in hooks {
        match run_hook(hook, timeout).await {
            Ok(()) => eprintln!("  Hook OK: {}", hook.line()),
            Err(why) => {
                eprintln!("  Hook FAILED: {}\n    {why}", hook.line());
                failed += 1;
            }
        }
    }
    failed
}

/// A hook's command: no shell, no stdin, output captured, killed when it times out, and
/// under psi's policy for helpers ([`crate::process`]: without psi's secrets).
fn hook_command(program: &str, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::from(crate::process::command(program, args));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run_hook(hook: &Hook, timeout: Duration) -> Result<()> {
    let program = hook.program();
    let child = hook_command(program, hook.args())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| Error::Subprocess(format!("timed out after {} s", timeout.as_secs())))?
        .with_context(|| format!("waiting for {program}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    tracing::info!(hook = hook.line(), status = %output.status, stdout = %stdout.trim_end(), stderr = %stderr.trim_end(), "TLS hook finished");
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Subprocess(format!(
            "{}; stderr: {}",
            output.status,
            stderr.trim_end()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn hooks_are_argv_not_shell() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a b");
        let hook = Hook::parse(&format!("touch '{}'", file.display())).unwrap();
        assert_eq!(block(run_hooks(&[hook], HOOK_TIMEOUT)), 0);
        assert!(file.exists(), "quoted argument kept whole");
        // No shell: `;` and `>` are plain arguments to echo.
        let redirect = dir.path().join("redirected");
        let hook = Hook::parse(&format!("echo hi > {}", redirect.display())).unwrap();
        assert_eq!(block(run_hooks(&[hook], HOOK_TIMEOUT)), 0);
        assert!(!redirect.exists());
    }

    #[test]
    fn hook_failures_are_counted() {
        let hooks = ["false", "/nonexistent/hook", "true"].map(|h| Hook::parse(h).unwrap());
        assert_eq!(block(run_hooks(&hooks, HOOK_TIMEOUT)), 2);
    }

    #[test]
    fn hook_timeout() {
        let start = std::time::Instant::now();
        let failed = block(run_hooks(
            &[Hook::parse("sleep 30").unwrap()],
            Duration::from_millis(200),
        ));
        assert_eq!(failed, 1);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
