//! `psi nitrokeyhsm preflight|init|test-pin|status|store` as a user runs them, on a real
//! SoftHSM2 token: their PASS/WARN/FAIL lines, exit codes and files, and `store --register`
//! end to end with real Podman.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::process::{Command, Output};

use crate::support::podman::PodmanEnv;
use crate::support::softhsm::{self, SoftHsm, PIN};
use crate::support::{run_with_stdin, Sandbox};

/// A sandbox with a keyed token, its config, and a listening socket standing in for pcscd's
/// (SoftHSM needs no pcscd; preflight checks that the socket is there).
struct World {
    sandbox: Sandbox,
    hsm: SoftHsm,
    config: std::path::PathBuf,
    _pcscd: UnixListener,
}

impl World {
    fn new(block_extra: &str) -> Option<World> {
        if !softhsm::available() {
            return None;
        }
        let sandbox = Sandbox::new();
        let hsm = SoftHsm::with_key(sandbox.path());
        let config = sandbox.config(&hsm.provider_yaml(block_extra));
        let pcscd = UnixListener::bind(sandbox.path().join("pcscd.comm")).unwrap();
        Some(World {
            sandbox,
            hsm,
            config,
            _pcscd: pcscd,
        })
    }

    fn psi(&self, args: &[&str]) -> Command {
        let mut cmd = self.sandbox.psi();
        cmd.env("SOFTHSM2_CONF", &self.hsm.conf)
            .env(
                "PCSCLITE_CSOCK_NAME",
                self.sandbox.path().join("pcscd.comm"),
            )
            .env("PSI_NITROKEYHSM_PIN", PIN)
            .args(["-c", self.config.to_str().unwrap()])
            .args(args);
        cmd
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn has_lines(out: &Output, lines: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in lines {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no line starting {line:?} in:\n{}",
            text(out)
        );
    }
}

#[test]
fn preflight_init_test_pin_and_status() {
    let Some(w) = World::new("") else {
        return;
    };
    let cache = w.sandbox.state_dir().join("nitrokeyhsm-pubkey.der");

    // Before init: everything passes but the public key cache, which is only a warning.
    let out = w.psi(&["nitrokeyhsm", "preflight"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    has_lines(
        &out,
        &[
            "Nitrokey HSM preflight",
            &format!("  PASS PKCS#11 module: {}", softhsm::MODULE),
            "  PASS pcscd socket: ",
            "  PASS PIN source: PSI_NITROKEYHSM_PIN env var",
            "  PASS HSM login: slot 0 (",
            "  PASS Key found: label=podman-secrets, id=02 (by id)",
            &format!("  WARN Public key cache not found: {}", cache.display()),
            "All checks passed.",
        ],
    );

    let out = w.psi(&["nitrokeyhsm", "init"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    has_lines(
        &out,
        &[&format!(
            "Public key cached: {} (294 bytes)",
            cache.display()
        )],
    );
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let out = w.psi(&["nitrokeyhsm", "preflight"]).output().unwrap();
    has_lines(
        &out,
        &[&format!("  PASS Public key cache: {}", cache.display())],
    );

    let out = w.psi(&["nitrokeyhsm", "test-pin"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    has_lines(
        &out,
        &[
            "  PIN source: PSI_NITROKEYHSM_PIN env var",
            "  PIN length: 4 characters",
            "  HSM login: OK",
        ],
    );
    // The credentials directory wins over the environment; a wrong PIN fails with exit 1.
    let creds = w.sandbox.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("hsm-pin"), "9999").unwrap();
    let out = w
        .psi(&["nitrokeyhsm", "test-pin"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    has_lines(
        &out,
        &[
            &format!(
                "  PIN source: systemd credential ({}/hsm-pin)",
                creds.display()
            ),
            "  HSM login failed: ",
        ],
    );
    assert!(text(&out).contains("PIN"), "{}", text(&out));
    assert!(
        !text(&out).contains("9999"),
        "the PIN leaked: {}",
        text(&out)
    );

    let out = w.psi(&["nitrokeyhsm", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    has_lines(
        &out,
        &[
            "Nitrokey HSM provider status",
            "  Slot: token label 'psi'",
            "  Key label: podman-secrets",
            "  Key ID: 02",
            "  pcscd volume: pcscd-socket",
            &format!("  Public key cache: {} (294 bytes)", cache.display()),
            "  HSM connection: OK (token 'psi', key found)",
        ],
    );
}

#[test]
fn preflight_and_status_name_what_is_missing() {
    let Some(w) = World::new("    key_id: \"77\"\n    key_label: nothing-here\n") else {
        return;
    };
    let out = w.psi(&["nitrokeyhsm", "preflight"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    has_lines(
        &out,
        &["  FAIL Key not found: label='nothing-here', id='77'"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("preflight failed"));
    let out = w.psi(&["nitrokeyhsm", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    has_lines(&out, &["  HSM connection: OK (token 'psi', key NOT found)"]);

    // No module, no pcscd socket, no PIN: three failures, and no login is tried.
    let config = w
        .sandbox
        .config("providers:\n  nitrokeyhsm:\n    pkcs11_module: /nonexistent/pkcs11.so\n");
    let out = w
        .sandbox
        .psi()
        .env("PCSCLITE_CSOCK_NAME", w.sandbox.path().join("nope.comm"))
        .args(["-c", config.to_str().unwrap(), "nitrokeyhsm", "preflight"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    has_lines(
        &out,
        &[
            "  FAIL PKCS#11 module not found: /nonexistent/pkcs11.so",
            "  FAIL pcscd socket not found: ",
            "  FAIL No HSM PIN source configured",
            "  SKIP HSM login and key (fix the failures above first)",
        ],
    );

    // Without a nitrokeyhsm block the commands are a configuration error (exit 2).
    let config = w.sandbox.config("");
    let out = w
        .sandbox
        .psi()
        .args(["-c", config.to_str().unwrap(), "nitrokeyhsm", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nitrokeyhsm is not configured"));
}

#[test]
fn store_writes_a_private_mapping_and_refuses_empty_input() {
    let Some(w) = World::new("") else {
        return;
    };
    let out = run_with_stdin(
        &mut w.psi(&["nitrokeyhsm", "store", "db-pass"]),
        b"hunter2\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let path = w.sandbox.state_dir().join("db-pass");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mapping: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(mapping["provider"], "nitrokeyhsm");
    assert_eq!(mapping.as_object().unwrap().len(), 2);
    crate::support::assert_not_on_disk(w.sandbox.path(), b"hunter2");
    // The driver's one-shot lookup decrypts it on the token.
    let out = w
        .psi(&["secret", "lookup"])
        .env("SECRET_ID", "db-pass")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hunter2\n", "{}", text(&out));

    let out = run_with_stdin(&mut w.psi(&["nitrokeyhsm", "store", "empty"]), b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no value on stdin"));
    assert!(!w.sandbox.state_dir().join("empty").exists());
}

#[test]
fn store_register_reaches_a_container() {
    if !softhsm::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::with_key(dir.path());
    let block = hsm.provider_yaml(&format!("    pin: \"{PIN}\"\n"));
    let Some(env) = PodmanEnv::with_env(
        &format!("{block}  systemd-creds: {{}}\n"),
        &[("SOFTHSM2_CONF", hsm.conf.as_os_str())],
    ) else {
        return;
    };
    let value = "line one\nline two: \u{00e9}\u{2603}";
    let out = run_with_stdin(
        &mut env.psi(&["nitrokeyhsm", "store", "hsm-secret", "--register"]),
        value.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    // Registered under Podman's ID only: no copy under the name.
    assert!(!env.state_dir().join("hsm-secret").exists());
    let id = env.secret_id("hsm-secret");
    let stored = std::fs::read(env.state_dir().join(&id)).unwrap();
    assert!(stored.starts_with(br#"{"provider": "nitrokeyhsm", "blob": ""#));

    let out = env.run(&["hsm-secret,type=env,target=V"], r#"printf %s "$V""#);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
    let out = env.run(
        &["hsm-secret,type=mount,target=/run/secrets/v"],
        "cat /run/secrets/v",
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
    crate::support::assert_not_on_disk(env.sandbox.path(), b"line two");
}
