//! The libpod REST client against a real `podman system service`: secrets created through
//! the API reach `psi serve` through the shell driver and resolve in containers; listing,
//! replacing (4.3.1 has no in-place replace), removal and failures say what Podman said,
//! never the secret data.

use std::collections::BTreeMap;
use std::path::Path;

use psi::podman::{Podman, Replaced};

use crate::support::podman::PodmanEnv;
use crate::support::run_with_stdin;

fn check(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Shell-driver options for psi on `sock`, with a `list` command that differs from the
/// containers.conf one, so a listing shows whether these options were used.
fn explicit_opts(sock: &Path) -> BTreeMap<String, String> {
    let sock = sock.display();
    [
        (
            "store",
            format!("curl -s --fail-with-body --unix-socket {sock} -X POST --data-binary @- http://localhost/store/$SECRET_ID"),
        ),
        (
            "lookup",
            format!("curl -sf --unix-socket {sock} http://localhost/lookup/$SECRET_ID"),
        ),
        (
            "delete",
            format!("curl -sf --unix-socket {sock} -X DELETE http://localhost/delete/$SECRET_ID"),
        ),
        (
            "list",
            format!("curl -sf --unix-socket {sock} http://localhost/list # explicit"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A mapping sealed by `psi creds store NAME` (left in `state_dir/NAME`), as bytes.
fn sealed_mapping(env: &PodmanEnv, name: &str, value: &[u8]) -> Vec<u8> {
    check(
        &run_with_stdin(&mut env.psi(&["creds", "store", name]), value),
        "psi creds store",
    );
    std::fs::read(env.state_dir().join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn created_secret_is_stored_by_psi_listed_and_resolves_in_a_container() {
    let Some(mut env) = PodmanEnv::new("") else {
        return;
    };
    let podman = Podman::new(env.api_socket());
    let mapping = sealed_mapping(&env, "db-password", b"s3cr3t value\n");
    let opts = explicit_opts(&env.sandbox.socket());

    let id = podman
        .create_secret("myapp--DB_PASSWORD", "shell", &opts, &mapping)
        .await
        .unwrap();
    assert_eq!(id.len(), 25, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(env.secret_id("myapp--DB_PASSWORD"), id);
    // Podman ran the store command: psi filed exactly the bytes sent under Podman's ID.
    assert_eq!(std::fs::read(env.state_dir().join(&id)).unwrap(), mapping);

    let listed = podman.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let secret = &listed[0];
    assert_eq!(secret.id, id);
    assert_eq!(secret.name, "myapp--DB_PASSWORD");
    assert_eq!(secret.driver, "shell");
    assert_eq!(secret.driver_options, opts);

    let out = env.run(
        &["myapp--DB_PASSWORD,type=env,target=DB_PASSWORD"],
        r#"printf %s "$DB_PASSWORD""#,
    );
    check(&out, "podman run with the API-made secret");
    assert_eq!(out.stdout, b"s3cr3t value\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_options_podman_uses_containers_conf_and_remove_reports_existence() {
    let Some(mut env) = PodmanEnv::new("") else {
        return;
    };
    let podman = Podman::new(env.api_socket());
    let mapping = sealed_mapping(&env, "token", b"t0ken");

    let id = podman
        .create_secret("app--TOKEN", "shell", &BTreeMap::new(), &mapping)
        .await
        .unwrap();
    let listed = podman.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1);
    // containers.conf's options are psi install's: its list command has no marker.
    let expected = explicit_opts(&env.sandbox.socket())
        .into_iter()
        .map(|(k, v)| (k, v.replace(" # explicit", "")))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(listed[0].driver_options, expected);
    assert!(env.state_dir().join(&id).exists());

    assert!(podman.remove_secret("app--TOKEN").await.unwrap());
    // Podman ran the delete command: psi dropped the mapping.
    assert!(!env.state_dir().join(&id).exists());
    assert!(podman.list_secrets().await.unwrap().is_empty());
    assert!(!podman.remove_secret("app--TOKEN").await.unwrap());
    assert!(!podman.remove_secret(&id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_an_existing_name_fails_with_podmans_message_and_keeps_the_first() {
    let Some(mut env) = PodmanEnv::new("") else {
        return;
    };
    let podman = Podman::new(env.api_socket());
    let opts = explicit_opts(&env.sandbox.socket());
    let first = sealed_mapping(&env, "first", b"one");
    let id = podman
        .create_secret("dup", "shell", &opts, &first)
        .await
        .unwrap();

    let second = sealed_mapping(&env, "second", b"two");
    let err = podman
        .create_secret("dup", "shell", &opts, &second)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "create Podman secret 'dup': Podman answered 500 Internal Server Error: dup: secret name in use"
    );
    let listed = podman.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(std::fs::read(env.state_dir().join(&id)).unwrap(), first);
}

/// Podman 4.3.1 answers `replace=true` as a plain create of a name in use: the client
/// removes the old secret and creates it again, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn on_podman4_replace_removes_and_creates_again() {
    let Some(mut env) = PodmanEnv::new("") else {
        return;
    };
    let podman = Podman::new(env.api_socket());
    let opts = explicit_opts(&env.sandbox.socket());
    let first = sealed_mapping(&env, "first", b"one");
    let old = podman
        .create_secret("app--TOKEN", "shell", &opts, &first)
        .await
        .unwrap();

    let second = sealed_mapping(&env, "second", b"two");
    let (id, how) = podman
        .replace_secret("app--TOKEN", &old, "shell", &opts, &second)
        .await
        .unwrap();
    assert_eq!(how, Replaced::Recreated);
    assert_ne!(id, old);
    assert_eq!(env.secret_id("app--TOKEN"), id);
    // Podman ran delete for the old ID and store for the new one.
    assert!(!env.state_dir().join(&old).exists());
    assert_eq!(std::fs::read(env.state_dir().join(&id)).unwrap(), second);
    let out = env.run(&["app--TOKEN,type=env,target=T"], "printf %s \"$T\"");
    check(&out, "podman run");
    assert_eq!(out.stdout, b"two");

    // With psi serve down the old secret's delete fails: the error names the replace and
    // the removal, never the data, and the secret stays as it was.
    env.serve.stop();
    let err = podman
        .replace_secret("app--TOKEN", &id, "shell", &opts, b"never-shown")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("replace Podman secret 'app--TOKEN': remove Podman secret '{id}': Podman answered 500 Internal Server Error: deleting secret {id}: {id}: no secret data with ID")
    );
    assert_eq!(env.secret_id("app--TOKEN"), id);
    assert_eq!(std::fs::read(env.state_dir().join(&id)).unwrap(), second);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_store_fails_the_create_without_showing_the_data() {
    let Some(mut env) = PodmanEnv::new("store:\n  raw_values: reject\n") else {
        return;
    };
    let podman = Podman::new(env.api_socket());
    let opts = explicit_opts(&env.sandbox.socket());
    let data = b"plain-secret-value";
    let err = podman
        .create_secret("refused", "shell", &opts, data)
        .await
        .unwrap_err();
    let shown = format!("{err} / {err:?}");
    assert!(
        shown.starts_with(
            "create Podman secret 'refused': Podman answered 500 Internal Server Error: creating secret refused: exit status 22; the shell driver's store command failed: check that psi serve is running"
        ),
        "{shown}"
    );
    assert!(!shown.contains("plain-secret-value"), "{shown}");
    // Podman keeps the driver's output to itself: psi's reason is in the service's log.
    assert!(
        env.api_log().contains("store.raw_values is 'reject'"),
        "{}",
        env.api_log()
    );
    assert!(podman.list_secrets().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_socket_is_named_with_how_to_start_podman() {
    let dir = tempfile::tempdir().unwrap();
    let start = if nix::unistd::getuid().is_root() {
        "systemctl enable --now podman.socket"
    } else {
        "systemctl --user enable --now podman.socket"
    };

    let missing = dir.path().join("missing.sock");
    let err = Podman::new(missing.clone())
        .list_secrets()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "list Podman secrets: cannot connect to the Podman API socket {}: No such file or directory (os error 2); start the Podman API socket: {start} (or set CONTAINER_HOST=unix://<socket> to use another)",
            missing.display()
        )
    );

    // A socket file nobody listens on any more (a stopped service): connection refused.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let err = Podman::new(stale.clone())
        .create_secret("x", "shell", &BTreeMap::new(), b"never-shown")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "create Podman secret 'x': cannot connect to the Podman API socket {}: Connection refused (os error 111); start the Podman API socket: {start} (or set CONTAINER_HOST=unix://<socket> to use another)",
            stale.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_psi_serve_down_create_and_remove_fail_and_change_nothing() {
    let Some(mut env) = PodmanEnv::new("") else {
        return;
    };
    let podman = Podman::new(env.api_socket());
    let opts = explicit_opts(&env.sandbox.socket());
    let mapping = sealed_mapping(&env, "kept", b"kept-value");
    let id = podman
        .create_secret("kept", "shell", &opts, &mapping)
        .await
        .unwrap();
    env.serve.stop();

    // The delete command cannot reach psi: Podman keeps the secret and says so (500, not
    // the 404 that would read as "already gone").
    let err = podman.remove_secret("kept").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("remove Podman secret 'kept': Podman answered 500 Internal Server Error: deleting secret kept: {id}: no secret data with ID")
    );
    // The store command cannot reach psi: curl exits 7 and nothing is created.
    let err = podman
        .create_secret("new", "shell", &opts, &mapping)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "create Podman secret 'new': Podman answered 500 Internal Server Error: creating secret new: exit status 7; the shell driver's store command failed"
        ),
        "{err}"
    );
    let listed = podman.list_secrets().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );
    assert_eq!(std::fs::read(env.state_dir().join(&id)).unwrap(), mapping);
}
