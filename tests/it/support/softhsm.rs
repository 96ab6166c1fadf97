//! A SoftHSM2 token per test, standing in for the Nitrokey HSM: its own `SOFTHSM2_CONF` and
//! token directory under the test's sandbox, set up with the real `softhsm2-util` and
//! `pkcs11-tool`.
//!
//! `SOFTHSM2_CONF` is read by the module at `C_Initialize`, so it is process-wide: tests that
//! use the provider in-process hold [`in_process`] while the variable points at their token
//! (the provider finalises the library when dropped); tests through `psi serve` set it on
//! the child only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use openssl::pkey::Private;
use openssl::rsa::Rsa;
use psi::config::CredentialSource;
use psi::crypto::oaep::OaepHash;
use psi::provider::nitrokeyhsm::{NitrokeyHsm, PinInfo, TokenOptions};
use psi::secret::SecretString;
use tokio::sync::{Mutex, MutexGuard};

use super::require;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const LABEL: &str = "psi";
pub const PIN: &str = "1234";
pub const SO_PIN: &str = "5678";
pub const KEY_LABEL: &str = "podman-secrets";
pub const KEY_ID: &str = "02";

static IN_PROCESS: Mutex<()> = Mutex::const_new(());

/// Whether SoftHSM and pkcs11-tool are installed (a failure under `CI=true`).
pub fn available() -> bool {
    require("softhsm2-util") && require("pkcs11-tool") && {
        let found = Path::new(MODULE).exists();
        if !found {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{MODULE} is required under CI=true"
            );
            eprintln!("SKIP: {MODULE} missing");
        }
        found
    }
}

/// A SoftHSM configuration with its own (initially empty) token directory.
pub struct SoftHsm {
    pub conf: PathBuf,
}

impl SoftHsm {
    /// A configuration under `dir`; no token yet.
    pub fn new(dir: &Path) -> SoftHsm {
        let root = dir.join("softhsm");
        let tokens = root.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = root.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        SoftHsm { conf }
    }

    /// A token labelled `psi` (PIN 1234) with an RSA-2048 key pair generated on it.
    pub fn with_key(dir: &Path) -> SoftHsm {
        let hsm = SoftHsm::new(dir);
        hsm.init_token();
        hsm.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            KEY_LABEL,
            "--id",
            KEY_ID,
        ]);
        hsm
    }

    /// `softhsm2-util --init-token --free --label psi`.
    pub fn init_token(&self) {
        let out = self
            .command("softhsm2-util")
            .args(["--init-token", "--free", "--label", LABEL])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .output()
            .unwrap();
        check("softhsm2-util --init-token", &out);
    }

    /// Deletes the token (every object, every session's view of it).
    pub fn delete_token(&self) {
        let out = self
            .command("softhsm2-util")
            .args(["--delete-token", "--token", LABEL])
            .output()
            .unwrap();
        check("softhsm2-util --delete-token", &out);
    }

    /// Imports `key` (private and public halves, id 02, label podman-secrets).
    pub fn import(&self, key: &Rsa<Private>, dir: &Path) {
        let private = dir.join("import-private.der");
        let public = dir.join("import-public.der");
        std::fs::write(&private, key.private_key_to_der().unwrap()).unwrap();
        std::fs::write(&public, key.public_key_to_der().unwrap()).unwrap();
        for (file, kind) in [(&private, "privkey"), (&public, "pubkey")] {
            self.pkcs11_tool(&[
                "--write-object",
                file.to_str().unwrap(),
                "--type",
                kind,
                "--id",
                KEY_ID,
                "--label",
                KEY_LABEL,
            ]);
        }
        std::fs::remove_file(private).unwrap();
    }

    /// Runs pkcs11-tool logged in to the `psi` token.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        let out = self
            .command("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                LABEL,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args)
            .output()
            .unwrap();
        check("pkcs11-tool", &out);
        out
    }

    /// `program` with `SOFTHSM2_CONF` pointing here.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    /// The `providers.nitrokeyhsm` block for this token, plus `extra` lines in the block.
    pub fn provider_yaml(&self, extra: &str) -> String {
        format!(
            "providers:\n  nitrokeyhsm:\n    pkcs11_module: {MODULE}\n    token_label: {LABEL}\n{extra}"
        )
    }
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Provider options for the `psi` token, with a fixed PIN and the given OAEP hash.
pub fn options(pin: &str, hash: OaepHash) -> TokenOptions {
    let pin = SecretString::new(pin.to_owned());
    TokenOptions {
        module: MODULE.into(),
        slot_index: 0,
        token_label: Some(LABEL.into()),
        token_serial: None,
        key_id: vec![2],
        key_label: KEY_LABEL.into(),
        pin: Arc::new(move || {
            Ok(PinInfo {
                pin: pin.clone(),
                source: CredentialSource::ConfigFile,
            })
        }),
        oaep_hash: hash,
    }
}

/// The in-process lock, with `SOFTHSM2_CONF` pointing at `hsm` while it is held. Drop every
/// provider before the guard.
pub async fn in_process(hsm: &SoftHsm) -> MutexGuard<'static, ()> {
    let guard = IN_PROCESS.lock().await;
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    guard
}

/// An in-process provider on `hsm`'s token (call with the [`in_process`] guard held).
pub fn provider(options: TokenOptions, cache: PathBuf) -> NitrokeyHsm {
    NitrokeyHsm::new(options, cache).unwrap()
}
