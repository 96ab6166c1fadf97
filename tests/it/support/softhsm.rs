//! A SoftHSM2 token per test, standing in for the Nitrokey HSM: its own `SOFTHSM2_CONF` and
//! token directory under the test's sandbox, set up with the real `softhsm2-util` and
//! `pkcs11-tool`.
//!
//! `SOFTHSM2_CONF` is read by the module at `C_Initialize` from the process environment, and
//! changing the environment while other test threads run is undefined behaviour. So tests
//! through `psi serve` set it on the child only, and tests that use the provider in-process
//! run themselves again in a child process of the test binary whose environment names their
//! token from the start ([`in_child`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use openssl::pkey::Private;
use openssl::rsa::Rsa;
use psi::config::CredentialSource;
use psi::crypto::oaep::OaepHash;
use psi::provider::nitrokeyhsm::{NitrokeyHsm, PinInfo, TokenOptions};
use psi::secret::SecretString;

use super::require;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const LABEL: &str = "psi";
pub const PIN: &str = "1234";
pub const SO_PIN: &str = "5678";
pub const KEY_LABEL: &str = "podman-secrets";
pub const KEY_ID: &str = "02";

/// Set on the child process of [`in_child`] to the name of the test it re-runs.
const CHILD: &str = "PSI_IT_SOFTHSM_CHILD";

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
        SoftHsm::at(dir.join("softhsm").join("softhsm2.conf"))
    }

    /// A configuration file at `conf` with its token directory beside it; no token yet.
    fn at(conf: PathBuf) -> SoftHsm {
        let tokens = conf.parent().unwrap().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
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
        hsm.init_token_with_key();
        hsm
    }

    /// Initialises the `psi` token (PIN 1234) and generates an RSA-2048 key pair on it.
    pub fn init_token_with_key(&self) {
        self.init_token();
        self.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            KEY_LABEL,
            "--id",
            KEY_ID,
        ]);
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

/// Runs the test `name` (its path in this binary, such as `cache::hsm_backend`) again, alone,
/// in a child process of the test binary whose environment names a fresh SoftHSM
/// configuration from the start. In that child this returns the configuration (no token
/// yet) for the test to go on with; in the parent it returns `None` once the child passed.
pub fn in_child(name: &str) -> Option<SoftHsm> {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        let conf = std::env::var_os("SOFTHSM2_CONF").expect("SOFTHSM2_CONF set by the parent");
        return Some(SoftHsm::at(PathBuf::from(conf)));
    }
    let dir = tempfile::Builder::new()
        .prefix("psi-softhsm.")
        .tempdir()
        .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, name)
        .env("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // "1 passed" also catches a misspelt name, which would run nothing and pass.
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in its child process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    None
}

/// An in-process provider on the token that `SOFTHSM2_CONF` names (in an [`in_child`] child).
pub fn provider(options: TokenOptions, cache: PathBuf) -> NitrokeyHsm {
    NitrokeyHsm::new(options, cache).unwrap()
}
