//! The systemd-creds provider with a per-test host key: exact round trips of any bytes,
//! the envelope for values systemd-creds cannot take directly, and failures that say why.

use psi::provider::creds::DIRECT_LIMIT;
use psi::secret::{Mapping, SecretId};

use crate::support::swtpm::SoftTpm;
use crate::support::{child_env, require, require_all, run_with_stdin, Sandbox};

fn id(s: &str) -> SecretId {
    SecretId::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn any_bytes_round_trip_exactly() {
    if !require("systemd-creds") {
        return;
    }
    let sandbox = Sandbox::new();
    let provider = sandbox.creds_provider();
    let mut big = vec![0u8; 1024 * 1024];
    openssl::rand::rand_bytes(&mut big).unwrap();
    for value in [
        b"x".to_vec(),
        b"\0\0\n\r\n\xff\xfe trailing\n".to_vec(),
        vec![b'\n'; 1000],
        big,
    ] {
        let mapping = provider.seal(&id("value"), &value).await.unwrap();
        let bytes = mapping.to_bytes();
        assert!(bytes.starts_with(br#"{"provider": "systemd-creds", "name": "value", "blob": ""#));
        assert_eq!(
            bytes.windows(11).any(|w| w == b"\"payload\": "),
            value.len() > DIRECT_LIMIT
        );
        let back = provider
            .lookup(&Mapping::parse(&bytes).unwrap())
            .await
            .unwrap();
        assert!(
            back.expose() == value.as_slice(),
            "round trip of {} bytes differs",
            value.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_and_renaming_fail_with_a_reason() {
    if !require("systemd-creds") {
        return;
    }
    let sandbox = Sandbox::new();
    let provider = sandbox.creds_provider();
    let mapping = provider.seal(&id("alpha"), b"value").await.unwrap();
    let text = String::from_utf8(mapping.to_bytes()).unwrap();

    // The name is sealed into the credential: a mapping moved to another name fails.
    let renamed = Mapping::parse(text.replace("\"alpha\"", "\"beta\"").as_bytes()).unwrap();
    let err = provider.lookup(&renamed).await.unwrap_err();
    assert_eq!(err.http_status(), (502, "provider_error"));
    assert!(
        err.to_string().contains("systemd-creds: decrypt failed"),
        "{err}"
    );

    // Another host key cannot open it.
    let other = Sandbox::new().creds_provider();
    assert!(other
        .lookup(&Mapping::parse(text.as_bytes()).unwrap())
        .await
        .is_err());

    let missing = Mapping::parse(br#"{"provider": "systemd-creds", "name": "alpha"}"#).unwrap();
    let err = provider.lookup(&missing).await.unwrap_err();
    assert!(
        err.to_string().contains("missing the 'blob' field"),
        "{err}"
    );

    // Envelope payload flipped: authentication fails, nothing is returned.
    let big = vec![7u8; DIRECT_LIMIT + 1];
    let mapping = provider.seal(&id("big"), &big).await.unwrap();
    let text = String::from_utf8(mapping.to_bytes()).unwrap();
    let at = text.find("\"payload\": \"").unwrap() + 40;
    let mut tampered = text.into_bytes();
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let err = provider
        .lookup(&Mapping::parse(&tampered).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not authenticate"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_binary_is_unavailable_not_a_crash() {
    let provider = psi::provider::creds::SystemdCreds::new(
        "/nonexistent/systemd-creds".into(),
        psi::config::WithKey::Host,
        None,
    );
    let err = provider.seal(&id("x"), b"v").await.unwrap_err();
    assert_eq!(err.http_status(), (503, "provider_unavailable"));
    assert!(
        err.to_string().contains("install systemd 250 or newer"),
        "{err}"
    );
}

#[test]
fn systemd_creds_does_not_inherit_psi_secrets() {
    if !require("systemd-creds") {
        return;
    }
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    // A systemd-creds first on PATH that records its environment, then seals as usual.
    let bin = sandbox.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let dump = sandbox.path().join("creds env");
    let wrapper = bin.join("systemd-creds");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nenv -0 > '{}'\nexec '{}' \"$@\"\n",
            dump.display(),
            sandbox.creds_wrapper().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = run_with_stdin(
        child_env::caller_env(&mut sandbox.psi())
            .env("PATH", path)
            .args(["-c", config.to_str().unwrap(), "creds", "store", "api-key"]),
        b"sk-live-123\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    child_env::assert_helper(&child_env::parse(&std::fs::read(dump).unwrap()));
}

#[test]
fn creds_store_cli_writes_a_private_mapping_without_plaintext() {
    if !require("systemd-creds") {
        return;
    }
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let out = run_with_stdin(
        sandbox
            .psi()
            .args(["-c", config.to_str().unwrap(), "creds", "store", "api-key"]),
        b"sk-live-123\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = sandbox.state_dir().join("api-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    crate::support::assert_not_on_disk(sandbox.path(), b"sk-live-123");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("podman secret create --driver shell api-key"));

    // The one-shot driver resolves it (SECRET_ID from the environment), bytes exact.
    let out = sandbox
        .psi()
        .args(["-c", config.to_str().unwrap(), "secret", "lookup"])
        .env("SECRET_ID", "api-key")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"sk-live-123\n");

    for (args, stdin, needle) in [
        (
            vec!["creds", "store", "../x"],
            &b"v"[..],
            "NAME: secret ID must not contain path separators",
        ),
        (
            vec!["creds", "store", "ok", "--with-key", "tpm3"],
            b"v",
            "--with-key: unknown key type 'tpm3'",
        ),
        (vec!["creds", "store", "empty"], b"", "no value on stdin"),
    ] {
        let out = run_with_stdin(sandbox.psi().arg("-c").arg(&config).args(&args), stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tpm2_sealing_with_pcr_binding() {
    if !require_all(&[
        "systemd-creds",
        "swtpm",
        "tpm2_flushcontext",
        "tpm2_pcrextend",
    ]) {
        return;
    }
    let sandbox = Sandbox::new();
    let tpm = SoftTpm::start();
    let wrapper = tpm.creds_wrapper(&sandbox);
    let pcrs = psi::config::PcrList::parse("7").unwrap();
    let provider = psi::provider::creds::SystemdCreds::new(
        wrapper.into(),
        psi::config::WithKey::Tpm2,
        Some(pcrs),
    );

    let mapping = provider
        .seal(&id("tpm-bound"), b"sealed to the TPM")
        .await
        .unwrap();
    let value = provider.lookup(&mapping).await.unwrap();
    assert_eq!(value.expose(), b"sealed to the TPM");
    // No host key was involved.
    assert!(!sandbox.credential_secret().exists());

    // Changing PCR 7 (as a changed Secure Boot state would) makes the value unreadable.
    tpm.extend_pcr7();
    let err = provider.lookup(&mapping).await.unwrap_err();
    assert!(
        err.to_string().contains("systemd-creds: decrypt failed"),
        "{err}"
    );
}
