//! Real Podman end to end: Podman's shell driver (curl commands from `psi install`) talking
//! to a real `psi serve`, containers receiving values sealed with systemd-creds.

use crate::support::podman::PodmanEnv;
use crate::support::{assert_not_on_disk, run_with_stdin};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn creds_store_register_reaches_env_and_mount_secrets() {
    let Some(env) = PodmanEnv::new("") else {
        return;
    };
    let value = "p@ss w0rd\twith 'quotes' and \"more\"";
    let out = run_with_stdin(
        &mut env.psi(&["creds", "store", "db-password", "--register"]),
        value.as_bytes(),
    );
    check(&out, "psi creds store --register");

    // Podman filed the mapping under its own ID; no copy is left under the name.
    let id = env.secret_id("db-password");
    assert_eq!(id.len(), 25);
    let mapping = std::fs::read_to_string(env.state_dir().join(&id)).unwrap();
    assert!(
        mapping.starts_with(r#"{"provider": "systemd-creds", "name": "db-password", "blob": ""#),
        "{mapping}"
    );
    assert!(!env.state_dir().join("db-password").exists());

    let out = env.run(
        &["db-password,type=env,target=DB_PASSWORD"],
        r#"printf %s "$DB_PASSWORD""#,
    );
    check(&out, "podman run (env secret)");
    assert_eq!(stdout(&out), value);

    let out = env.run(
        &["db-password,type=mount,target=/run/secrets/db"],
        "cat /run/secrets/db",
    );
    check(&out, "podman run (mount secret)");
    assert_eq!(stdout(&out), value);

    assert_not_on_disk(env.sandbox.path(), value.as_bytes());
    assert!(env.serve.log().contains(r#""event":"secret.lookup""#));
    assert!(
        !env.serve.log().contains("p@ss"),
        "value leaked into the log"
    );
}

#[test]
fn raw_values_through_podman_are_sealed_and_rm_deletes_the_mapping() {
    let Some(env) = PodmanEnv::new("") else {
        return;
    };
    // Newlines, CR and a NUL: the store curl must carry the bytes unchanged.
    let value = b"line one\r\nline two\n\0tail";
    check(
        &env.secret_create("raw", value, &[]),
        "podman secret create (raw)",
    );
    let id = env.secret_id("raw");
    let mapping = std::fs::read(env.state_dir().join(&id)).unwrap();
    assert!(
        mapping.starts_with(b"{\"provider\": \"systemd-creds\""),
        "raw value was not sealed"
    );
    assert_not_on_disk(env.sandbox.path(), b"line one");

    let out = env.run(
        &["raw,type=mount,target=/run/secrets/raw"],
        "cat /run/secrets/raw",
    );
    check(&out, "podman run (raw mount secret)");
    assert_eq!(out.stdout, value);

    check(
        &env.podman().args(["secret", "rm", "raw"]).output().unwrap(),
        "podman secret rm",
    );
    assert!(
        !env.state_dir().join(&id).exists(),
        "delete did not remove the mapping"
    );
}

#[test]
fn reject_policy_fails_secret_create_with_psis_message() {
    let Some(env) = PodmanEnv::new("store:\n  raw_values: reject\n") else {
        return;
    };
    let out = env.secret_create("refused", b"plain value", &[]);
    assert!(!out.status.success());
    let shown = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        shown.contains("store.raw_values is 'reject'"),
        "psi's reason not shown: {shown}"
    );
    assert!(
        env.podman()
            .args(["secret", "inspect", "refused"])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );
    assert_not_on_disk(env.sandbox.path(), b"plain value");
}

#[test]
fn secret_created_with_the_originals_curl_options_resolves() {
    let Some(env) = PodmanEnv::new("") else {
        return;
    };
    // Seal a value into a mapping file first, as `psi creds store` (or the original's
    // `nitrokeyhsm store`) leaves it, then register that file with the original's exact
    // driver options, which replace containers.conf's (a secret made by the original psi).
    check(
        &run_with_stdin(
            &mut env.psi(&["creds", "store", "legacy"]),
            b"from-the-original",
        ),
        "psi creds store",
    );
    let mapping = env.state_dir().join("legacy");
    let sock = env.sandbox.socket();
    let sock = sock.display();
    let opts = [
        format!(
            "store=curl -sf --unix-socket {sock} -X POST -d @- http://localhost/store/$SECRET_ID"
        ),
        format!("lookup=curl -sf --unix-socket {sock} http://localhost/lookup/$SECRET_ID"),
        format!(
            "delete=curl -sf --unix-socket {sock} -X DELETE http://localhost/delete/$SECRET_ID"
        ),
        format!("list=curl -sf --unix-socket {sock} http://localhost/list"),
    ];
    let mut cmd = env.podman();
    cmd.args(["secret", "create", "--driver", "shell"]);
    for opt in &opts {
        cmd.args(["--driver-opts", opt]);
    }
    cmd.arg("legacy-secret").arg(&mapping);
    check(
        &cmd.output().unwrap(),
        "podman secret create with the original's options",
    );

    let out = env.run(&["legacy-secret,type=env,target=V"], r#"printf %s "$V""#);
    check(&out, "podman run (original options)");
    assert_eq!(stdout(&out), "from-the-original");
}

/// `ID=$(printf v | podman secret create x -)` must capture the ID alone: Podman copies the
/// store command's stdout to its own, so psi's answer to a store (and to a delete, for
/// `podman secret rm`) must have no body. Both driver clients, and the original's curl.
#[test]
fn secret_create_and_rm_print_only_the_id() {
    for client in ["curl", "psi"] {
        let Some(env) = PodmanEnv::with_client("", &[], client) else {
            return;
        };
        let out = env.secret_create("quiet", b"value", &[]);
        check(&out, &format!("podman secret create ({client})"));
        let id = env.secret_id("quiet");
        assert_eq!(stdout(&out), format!("{id}\n"), "create with {client}");
        let out = env
            .podman()
            .args(["secret", "rm", "quiet"])
            .output()
            .unwrap();
        check(&out, &format!("podman secret rm ({client})"));
        assert_eq!(stdout(&out), format!("{id}\n"), "rm with {client}");
    }
}
