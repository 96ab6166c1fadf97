//! A software TPM (swtpm) on loopback ports for systemd-creds' `--with-key=tpm2`, and a
//! systemd-creds wrapper that talks to it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{real_systemd_creds, Sandbox};

/// swtpm on a loopback port, stopped on drop.
pub struct SoftTpm {
    child: std::process::Child,
    pub tcti: String,
    _state: tempfile::TempDir,
}

impl SoftTpm {
    pub fn start() -> SoftTpm {
        let state = tempfile::tempdir().unwrap();
        // Two consecutive free ports (server and control), found by binding and releasing.
        let port = loop {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            if port < 65535 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break port;
            }
        };
        let child = std::process::Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.path().display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .args(["--flags", "not-need-init,startup-clear"])
            .spawn()
            .unwrap();
        // swtpm tells no one when it listens (and its --server fd= takes a connection, not
        // a listening socket), so this is the one readiness wait that polls.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "swtpm did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        SoftTpm {
            child,
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
            _state: state,
        }
    }

    /// `<sandbox>/swtpm/systemd-creds`: the real systemd-creds on this TPM (and the
    /// sandbox's host key), in a directory of its own so it can also go first on a PATH.
    /// swtpm has no resource manager, so it flushes the TPM's sessions after every call, or
    /// the TPM runs out of session slots after a few calls.
    pub fn creds_wrapper(&self, sandbox: &Sandbox) -> PathBuf {
        let dir = sandbox.path().join("swtpm");
        std::fs::create_dir_all(&dir).unwrap();
        let wrapper = dir.join("systemd-creds");
        let script = format!(
            "#!/bin/sh\nexport SYSTEMD_TPM2_DEVICE={0} TPM2TOOLS_TCTI={0} SYSTEMD_CREDENTIAL_SECRET={1}\n\
             {2} \"$@\"; rc=$?\nfor f in -t -l -s; do tpm2_flushcontext $f >/dev/null 2>&1; done\nexit $rc\n",
            self.tcti,
            sandbox.credential_secret().display(),
            real_systemd_creds()
        );
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        wrapper
    }

    /// Extends PCR 7, as a changed Secure Boot state would.
    pub fn extend_pcr7(&self) {
        let extended = std::process::Command::new("tpm2_pcrextend")
            .arg("7:sha256=0000000000000000000000000000000000000000000000000000000000000001")
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .status()
            .unwrap();
        assert!(extended.success());
    }
}

impl Drop for SoftTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
