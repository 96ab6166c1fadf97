//! A systemd notify socket of the test's own. psi serve and `podman system service` send
//! `READY=1` there once they answer, as they do to systemd, so tests wait for that message
//! instead of polling for a socket file.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds a datagram socket at `path`, for a child's `NOTIFY_SOCKET`.
    pub fn bind(path: PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { socket, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next message, or None when none comes within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                // With a receive timeout set, a signal (SIGCHLD from any test's child) ends
                // the call with EINTR whatever SA_RESTART says (signal(7)): wait on.
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits for a message with a `READY=1` line from `child` (`what`, for the failure
    /// message, with `log()`), failing the test when the child exits first or `timeout`
    /// passes. The exit is noticed within a second: the wait wakes that often to look.
    pub fn wait_ready(
        &self,
        child: &mut Child,
        what: &str,
        timeout: Duration,
        log: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.recv(Duration::from_secs(1)) {
                if message.lines().any(|line| line == "READY=1") {
                    return;
                }
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited with {status} before READY=1: {}", log());
            }
            assert!(
                Instant::now() < deadline,
                "{what} sent no READY=1 within {timeout:?}: {}",
                log()
            );
        }
    }
}
