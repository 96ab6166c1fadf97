//! The secret cache: `cache.enc` files (the original's version 1, psi's version 2) through
//! the TPM backend with a fixed key, the HSM backend on SoftHSM, and the `psi cache`
//! commands with real systemd-creds (host key and a software TPM) and real Podman.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use openssl::symm::{encrypt_aead, Cipher};
use psi::cache::{self, Backend, Entries};
use psi::crypto::oaep::{OaepHash, PublicKey};
use psi::secret::{Mapping, SecretValue};
use zeroize::Zeroizing;

use crate::support::podman::PodmanEnv;
use crate::support::softhsm::{self, SoftHsm};
use crate::support::swtpm::SoftTpm;
use crate::support::{require, require_all, Sandbox};

const KEY: [u8; 32] = [0x42; 32];

fn tpm() -> Backend {
    Backend::Tpm(Zeroizing::new(KEY))
}

fn mapping(key: &str) -> Mapping {
    Mapping::new("systemd-creds", &[("name", key), ("blob", "Y2lwaGVy")])
}

fn value(bytes: &[u8]) -> SecretValue {
    SecretValue::new(bytes.to_vec())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The Appendix A payload with one entry under the Appendix A digest, built as the original
/// builds it (json.dumps, sort_keys, compact).
fn appendix_a_payload(value: &[u8]) -> String {
    format!(
        r#"{{"entries":{{"8391ce5d8c32d7eef4a4191614765ec4e301bae6042e6dad1c05fcf62ab22ba4":"{}"}},"hmac_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","version":2,"written_at":1700000000}}"#,
        B64.encode(value)
    )
}

fn appendix_a_mapping() -> Mapping {
    Mapping::parse(
        br#"{"provider": "infisical", "project": "myproject", "path": "/app", "key": "DB_HOST"}"#,
    )
    .unwrap()
}

/// A version 1 TPM file as the original writes it: header, nonce, AES-256-GCM without AAD.
fn original_tpm_file(payload: &[u8]) -> Vec<u8> {
    let nonce = [9u8; 12];
    let mut tag = [0u8; 16];
    let ciphertext = encrypt_aead(
        Cipher::aes_256_gcm(),
        &KEY,
        Some(&nonce),
        &[],
        payload,
        &mut tag,
    )
    .unwrap();
    [&b"PSIC\x01\x01"[..], &nonce, &ciphertext, &tag].concat()
}

async fn load_err(path: &Path, backend: &Backend) -> String {
    cache::load(path, backend).await.unwrap_err().to_string()
}

#[tokio::test]
async fn the_originals_version_1_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.enc");
    std::fs::write(
        &path,
        original_tpm_file(appendix_a_payload(b"db.internal").as_bytes()),
    )
    .unwrap();
    let loaded = cache::load(&path, &tpm()).await.unwrap().unwrap();
    assert_eq!(loaded.version, 1);
    let digest = loaded.entries.digest(&appendix_a_mapping());
    assert_eq!(
        loaded.entries.get(&digest).unwrap().expose(),
        b"db.internal"
    );
    let info = cache::inspect(&path).unwrap().unwrap();
    let header = info.header.unwrap();
    assert_eq!((header.version, header.tag), (1, 1));

    // A legacy (ID-keyed) payload: no entries, and a new HMAC key.
    let legacy = br#"{"entries":{"3f2a":"dg=="},"version":1,"written_at":1}"#;
    std::fs::write(&path, original_tpm_file(legacy)).unwrap();
    let loaded = cache::load(&path, &tpm()).await.unwrap().unwrap();
    assert!(loaded.entries.is_empty());
    assert_ne!(
        loaded.entries.digest(&appendix_a_mapping()),
        Entries::empty().digest(&appendix_a_mapping())
    );

    // Saving writes version 2, which keeps the key and entries.
    let mut entries = loaded.entries.with_same_key();
    let digest = entries.digest(&appendix_a_mapping());
    entries.insert(digest, value(b"v"));
    cache::save(&path, &tpm(), &entries).await.unwrap();
    let loaded = cache::load(&path, &tpm()).await.unwrap().unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.entries.get(&digest).unwrap().expose(), b"v");
}

#[tokio::test]
async fn version_2_round_trip_binary_and_large_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("cache.enc");
    assert!(cache::load(&path, &tpm()).await.unwrap().is_none());
    assert!(cache::inspect(&path).unwrap().is_none());

    let mut entries = Entries::empty();
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    let large: Vec<u8> = (0..128 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let (a, b, c) = (
        entries.digest(&mapping("a")),
        entries.digest(&mapping("b")),
        entries.digest(&mapping("c")),
    );
    entries.insert(a, value(&binary));
    entries.insert(b, value(&large));
    entries.insert(c, value(b""));
    cache::save(&path, &tpm(), &entries).await.unwrap();

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..6], b"PSIC\x02\x01");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = cache::load(&path, &tpm()).await.unwrap().unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.entries.len(), 3);
    assert_eq!(loaded.entries.get(&a).unwrap().expose(), binary.as_slice());
    assert_eq!(loaded.entries.get(&b).unwrap().expose(), large.as_slice());
    assert_eq!(loaded.entries.get(&c).unwrap().expose(), b"");
    // Same HMAC key after the round trip: digests still match.
    assert_eq!(loaded.entries.digest(&mapping("a")), a);
    let info = cache::inspect(&path).unwrap().unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.mtime, loaded.mtime);
}

#[tokio::test]
async fn damaged_tampered_and_foreign_files_fail_with_the_originals_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.enc");
    let p = path.display();
    cache::save(&path, &tpm(), &Entries::empty()).await.unwrap();
    let good = std::fs::read(&path).unwrap();
    let with = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();

    // The header is authenticated: making a version 2 file claim version 1 fails to decrypt.
    let mut downgraded = good.clone();
    downgraded[4] = 1;
    with(&downgraded);
    assert_eq!(
        load_err(&path, &tpm()).await,
        "TPM cache decrypt failed: ciphertext tampered or wrong key"
    );
    let mut retagged = good.clone();
    retagged[5] = 2;
    with(&retagged);
    assert_eq!(
        load_err(&path, &tpm()).await,
        format!("Cache file {p} was written by backend tag 0x2, but current backend is 0x1. Re-run 'psi cache init' with the correct backend or restore the key.")
    );
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    with(&flipped);
    assert_eq!(
        load_err(&path, &tpm()).await,
        "TPM cache decrypt failed: ciphertext tampered or wrong key"
    );
    with(&good);
    assert_eq!(
        load_err(&path, &Backend::Tpm(Zeroizing::new([1; 32]))).await,
        "TPM cache decrypt failed: ciphertext tampered or wrong key"
    );

    with(b"PSIC\x02");
    assert_eq!(
        load_err(&path, &tpm()).await,
        format!("Cache file {p} is too short to contain a header")
    );
    with(b"XSIC\x02\x01rest");
    assert_eq!(
        load_err(&path, &tpm()).await,
        format!("Cache file {p} has bad magic b'XSIC', expected b'PSIC'")
    );
    with(b"PSIC\x03\x01rest");
    assert_eq!(
        load_err(&path, &tpm()).await,
        format!("Cache file {p} uses unsupported version 3")
    );
    with(&good[..6 + 27]);
    assert_eq!(load_err(&path, &tpm()).await, "TPM cache payload truncated");
    with(&original_tpm_file(b"\xff"));
    assert!(load_err(&path, &tpm())
        .await
        .starts_with("Cache payload is not valid UTF-8 JSON: "));
    with(&original_tpm_file(b"[]"));
    assert_eq!(
        load_err(&path, &tpm()).await,
        "Cache payload must be a JSON object"
    );
    with(&original_tpm_file(br#"{"version":7}"#));
    assert_eq!(
        load_err(&path, &tpm()).await,
        "Cache payload version 7 is unsupported (expected 2)"
    );
    // status reads the header without a key; a bad magic is its report, not an error.
    with(b"XSIC\x02\x01");
    let info = cache::inspect(&path).unwrap().unwrap();
    assert_eq!(
        info.header.unwrap_err(),
        format!("Cache file {p} has bad magic b'XSIC', expected b'PSIC'")
    );
}

#[test]
fn concurrent_saves_leave_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.enc");
    std::thread::scope(|scope| {
        for thread in 0..5u8 {
            let path = &path;
            scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                for round in 0..20u8 {
                    let mut entries = Entries::empty();
                    let digest = entries.digest(&mapping("k"));
                    entries.insert(digest, value(&[thread, round]));
                    runtime
                        .block_on(cache::save(path, &tpm(), &entries))
                        .unwrap();
                }
            });
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let loaded = runtime
        .block_on(cache::load(&path, &tpm()))
        .unwrap()
        .unwrap();
    let digest = loaded.entries.digest(&mapping("k"));
    assert_eq!(loaded.entries.get(&digest).unwrap().expose()[1], 19);
    // Only the file itself: no temp file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn ten_thousand_entries_load_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.enc");
    let mut entries = Entries::empty();
    for i in 0..10_000 {
        let digest = entries.digest(&mapping(&format!("KEY_{i}")));
        entries.insert(
            digest,
            value(format!("value number {i} ........").as_bytes()),
        );
    }
    cache::save(&path, &tpm(), &entries).await.unwrap();
    let started = Instant::now();
    let loaded = cache::load(&path, &tpm()).await.unwrap().unwrap();
    let elapsed = started.elapsed();
    eprintln!("loaded 10,000 entries in {elapsed:?}");
    assert_eq!(loaded.entries.len(), 10_000);
    // A debug build; the release build is several times faster.
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

// ---------------------------------------------------------------------------------------------
// HSM backend on SoftHSM

#[tokio::test(flavor = "multi_thread")]
async fn hsm_backend_reads_the_originals_envelope_and_writes_version_2() {
    if !softhsm::available() {
        return;
    }
    let Some(hsm) =
        softhsm::in_child("cache::hsm_backend_reads_the_originals_envelope_and_writes_version_2")
    else {
        return;
    };
    hsm.init_token_with_key();
    let sandbox = Sandbox::new();
    let provider = std::sync::Arc::new(softhsm::provider(
        softhsm::options(softhsm::PIN, OaepHash::Sha256),
        sandbox.path().join("pubkey.der"),
    ));
    let backend = Backend::Hsm(provider.clone());
    let path = sandbox.path().join("cache.enc");

    // Version 1 as the original writes it: the envelope without AAD.
    let public = PublicKey::from_der(&provider.public_key_from_token().await.unwrap()).unwrap();
    let envelope =
        psi::crypto::envelope::seal(&public, appendix_a_payload(b"from python").as_bytes())
            .unwrap();
    std::fs::write(&path, [&b"PSIC\x01\x02"[..], &envelope].concat()).unwrap();
    let loaded = cache::load(&path, &backend).await.unwrap().unwrap();
    assert_eq!(loaded.version, 1);
    let digest = loaded.entries.digest(&appendix_a_mapping());
    assert_eq!(
        loaded.entries.get(&digest).unwrap().expose(),
        b"from python"
    );
    assert!(load_err(&path, &tpm()).await.contains("backend tag 0x2"));

    cache::save(&path, &backend, &loaded.entries).await.unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..6], b"PSIC\x02\x02");
    let loaded = cache::load(&path, &backend).await.unwrap().unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(
        loaded.entries.get(&digest).unwrap().expose(),
        b"from python"
    );
    bytes[4] = 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(&path, &backend).await;
    assert!(err.contains("authentication failed"), "{err}");
    drop((backend, provider));
}

#[tokio::test(flavor = "multi_thread")]
async fn hsm_init_and_status_verify() {
    if !softhsm::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let hsm = SoftHsm::with_key(sandbox.path());
    let config = sandbox.config(&format!(
        "{}    pin: \"{}\"\ncache:\n  backend: hsm\n",
        hsm.provider_yaml(""),
        softhsm::PIN
    ));
    let psi = |args: &[&str]| {
        sandbox
            .psi()
            .env("SOFTHSM2_CONF", &hsm.conf)
            .arg("-c")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = psi(&["cache", "init", "--backend", "hsm"]);
    ok(&out, "cache init --backend hsm");
    let path = sandbox.state_dir().join("cache.enc");
    assert!(text(&out.stdout).contains(&format!("Empty cache → {}", path.display())));
    let out = psi(&["cache", "status", "--verify"]);
    ok(&out, "cache status --verify");
    let report = text(&out.stdout);
    assert!(report.contains("On-disk tag:   hsm (version 2"), "{report}");
    assert!(report.contains("Entries:       0\n"), "{report}");

    // Without a nitrokeyhsm provider: the original's message.
    let bare = sandbox.config("providers:\n  systemd-creds: {}\ncache:\n  backend: hsm\n");
    let out = sandbox
        .psi()
        .arg("-c")
        .arg(&bare)
        .args(["cache", "init", "--backend", "hsm", "--force"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr)
        .contains("HSM cache backend requires providers.nitrokeyhsm to be configured."));
}

// ---------------------------------------------------------------------------------------------
// psi cache init and status with systemd-creds

/// `systemd-creds decrypt --name=psi-cache-key KEY CREDS/psi-cache-key` with `program`.
fn decrypt_key(program: &Path, sandbox: &Sandbox, key: &Path, creds: &Path) -> Output {
    std::fs::create_dir_all(creds).unwrap();
    std::process::Command::new(program)
        .env("SYSTEMD_CREDENTIAL_SECRET", sandbox.credential_secret())
        .arg("decrypt")
        .arg("--name=psi-cache-key")
        .arg(key)
        .arg(creds.join("psi-cache-key"))
        .output()
        .unwrap()
}

#[test]
fn tpm_init_with_the_host_key_then_status() {
    if !require("systemd-creds") {
        return;
    }
    let sandbox = Sandbox::new();
    let config = sandbox.config("cache:\n  backend: tpm\n");
    let key = sandbox.path().join("etc").join("cache.key");
    let creds = sandbox.path().join("creds");
    let cache_file = sandbox.state_dir().join("cache.enc");
    let psi = |args: &[&str], creds_dir: Option<&Path>| {
        let mut cmd = sandbox.psi();
        if let Some(dir) = creds_dir {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        cmd.arg("-c").arg(&config).args(args).output().unwrap()
    };
    let init = [
        "cache",
        "init",
        "--backend",
        "tpm",
        "--with-key",
        "host",
        "--key-path",
        key.to_str().unwrap(),
    ];
    let out = psi(&init, None);
    ok(&out, "cache init");
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("Sealed TPM key → {}", key.display())),
        "{said}"
    );
    assert!(said.contains(&format!("Empty cache    → {}", cache_file.display())));
    assert!(said.contains(&format!(
        "  LoadCredentialEncrypted=psi-cache-key:{}",
        key.display()
    )));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(&std::fs::read(&cache_file).unwrap()[..6], b"PSIC\x02\x01");

    // Refuses to replace either file without --force, naming it.
    let out = psi(&init, None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&cache_file.display().to_string()) && err.contains("--force"),
        "{err}"
    );
    std::fs::remove_file(&cache_file).unwrap();
    let out = psi(&init, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&key.display().to_string()));

    // systemd unseals what init sealed, as LoadCredentialEncrypted= would.
    let first_key = std::fs::read(&key).unwrap();
    let mut forced = init.to_vec();
    forced.push("--force");
    ok(&psi(&forced, None), "cache init --force");
    assert_ne!(std::fs::read(&key).unwrap(), first_key);
    let systemd_creds = PathBuf::from("systemd-creds");
    ok(
        &decrypt_key(&systemd_creds, &sandbox, &key, &creds),
        "systemd-creds decrypt",
    );
    assert_eq!(
        std::fs::read(creds.join("psi-cache-key")).unwrap().len(),
        32
    );

    let out = psi(&["cache", "status"], None);
    ok(&out, "cache status");
    let report = text(&out.stdout);
    for line in [
        format!("Cache path:    {}\n", cache_file.display()),
        "Enabled:       True\n".into(),
        "Backend:       tpm\n".into(),
        "On-disk tag:   tpm (version 2: header authenticated)\n".into(),
        "Entries:       not counted (pass --verify to decrypt)\n".into(),
    ] {
        assert!(report.contains(&line), "{line:?} missing from\n{report}");
    }
    assert!(report.contains("+00:00\n"), "{report}");

    let out = psi(&["cache", "status", "--verify", "--json"], Some(&creds));
    ok(&out, "cache status --verify --json");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(json["tag"], 1);
    assert_eq!(json["present"], true);
    assert_eq!(json["verify"]["status"], "ok");
    assert_eq!(json["verify"]["entries"], 0);

    // Without the unsealed key, and no sealed key at the default path (<config dir>/cache.key)
    // either, --verify fails (exit 1) and says why.
    let default_key = sandbox.path().join("cache.key");
    let out = psi(&["cache", "status", "--verify"], None);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!(
            "Entries:       unreadable — no TPM cache key: {} does not exist",
            default_key.display()
        )),
        "{said}"
    );
    // With the sealed key there, psi unseals it itself (no LoadCredentialEncrypted=).
    std::fs::copy(&key, &default_key).unwrap();
    let out = psi(&["cache", "status", "--verify", "--json"], None);
    ok(&out, "cache status --verify, key unsealed by psi");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verify"]["status"], "ok");
    // A key sealed under another host key does not unseal: the reason, exit 1.
    let other = Sandbox::new();
    let out = other
        .psi()
        .arg("-c")
        .arg(&config)
        .args(["cache", "status", "--verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(
        said.contains("cannot unseal the TPM cache key") && said.contains("--force"),
        "{said}"
    );
    std::fs::remove_file(&default_key).unwrap();

    // An original (version 1) file is reported as such.
    std::fs::write(
        &cache_file,
        original_tpm_file(appendix_a_payload(b"x").as_bytes()),
    )
    .unwrap();
    let out = psi(&["cache", "status", "--json"], None);
    ok(&out, "cache status --json (v1)");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["verify"]["status"], "not_requested");
    let out = psi(&["cache", "status"], None);
    assert!(text(&out.stdout)
        .contains("On-disk tag:   tpm (version 1: original format, header not authenticated)"));

    std::fs::remove_file(&cache_file).unwrap();
    let out = psi(&["cache", "status"], None);
    ok(&out, "cache status (no file)");
    assert!(text(&out.stdout).ends_with("File:          not provisioned\n"));
}

#[test]
fn tpm_init_with_a_software_tpm_bound_to_pcr_7() {
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
    let path = format!(
        "{}:{}",
        wrapper.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = sandbox.config("cache:\n  backend: tpm\n");
    let key = sandbox.path().join("cache.key");
    let out = sandbox
        .psi()
        .env("PATH", &path)
        .arg("-c")
        .arg(&config)
        .args(["cache", "init", "--backend", "tpm", "--with-key", "tpm2"])
        .args(["--tpm2-pcrs", "7", "--key-path", key.to_str().unwrap()])
        .output()
        .unwrap();
    ok(&out, "cache init --with-key tpm2 --tpm2-pcrs 7");
    // Sealed by the TPM alone: no host key was created.
    assert!(!sandbox.credential_secret().exists());

    let creds = sandbox.path().join("creds");
    ok(
        &decrypt_key(&wrapper, &sandbox, &key, &creds),
        "decrypt with the TPM",
    );
    let out = sandbox
        .psi()
        .env("CREDENTIALS_DIRECTORY", &creds)
        .arg("-c")
        .arg(&config)
        .args(["cache", "status", "--verify"])
        .output()
        .unwrap();
    ok(&out, "cache status --verify");
    assert!(text(&out.stdout).contains("Entries:       0\n"));

    tpm.extend_pcr7();
    let out = decrypt_key(&wrapper, &sandbox, &key, &sandbox.path().join("creds2"));
    assert!(
        !out.status.success(),
        "decrypt succeeded after PCR 7 changed"
    );
}

// ---------------------------------------------------------------------------------------------
// psi cache invalidate and prune

/// A file without a readable header cannot be decrypted: `--verify` says why and exits 1,
/// before any backend is asked (no TPM or key needed); plain status still reports it.
#[test]
fn status_verify_fails_on_a_truncated_or_foreign_file() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("cache:\n  backend: tpm\n");
    let cache_file = sandbox.state_dir().join("cache.enc");
    std::fs::create_dir_all(sandbox.state_dir()).unwrap();
    let status = |args: &[&str]| {
        sandbox
            .psi()
            .arg("-c")
            .arg(&config)
            .args(["cache", "status"])
            .args(args)
            .output()
            .unwrap()
    };
    let mut files: Vec<(&[u8], &str)> = vec![(b"PSIX\x02\x01sealed", "has bad magic b'PSIX'")];
    let truncated = b"PSIC\x02";
    for len in 0..=truncated.len() {
        files.push((&truncated[..len], "is too short to contain a header"));
    }
    for (bytes, reason) in files {
        std::fs::write(&cache_file, bytes).unwrap();
        let out = status(&["--verify"]);
        assert_eq!(out.status.code(), Some(1), "{bytes:?}: {out:?}");
        assert!(
            text(&out.stderr).contains(reason),
            "{bytes:?}: {}",
            text(&out.stderr)
        );
        let out = status(&["--verify", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{bytes:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["verify"]["status"], "unreadable", "{json}");
        ok(&status(&[]), "cache status without --verify");
    }
}

/// A TPM-backed cache config whose key is delivered in `creds` (as systemd would).
fn tpm_key_credential(sandbox: &Sandbox) -> PathBuf {
    let creds = sandbox.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("psi-cache-key"), KEY).unwrap();
    creds
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidate_by_name_id_and_mapping_file_then_prune() {
    let Some(mut env) = PodmanEnv::new("cache:\n  backend: tpm\n") else {
        return;
    };
    let creds = tpm_key_credential(&env.sandbox);
    let api = env.api_socket();
    let state = env.state_dir();
    // Three Podman secrets whose mappings psi filed under Podman's IDs.
    let mut ids = Vec::new();
    for name in ["by-name", "by-id", "by-file", "uncached"] {
        let out = env.secret_create(name, &mapping(name).to_bytes(), &[]);
        ok(&out, "podman secret create");
        ids.push(env.secret_id(name));
    }
    let file = env.sandbox.path().join("by-file.json");
    std::fs::write(&file, mapping("by-file").to_bytes()).unwrap();

    let path = state.join("cache.enc");
    let mut entries = Entries::empty();
    for name in ["by-name", "by-id", "by-file", "gone"] {
        let digest = entries.digest(&mapping(name));
        entries.insert(digest, value(name.as_bytes()));
    }
    cache::save(&path, &tpm(), &entries).await.unwrap();

    let psi = |args: &[&str]| {
        let mut cmd = env.psi(args);
        cmd.env("CREDENTIALS_DIRECTORY", &creds)
            .env("CONTAINER_HOST", format!("unix://{}", api.display()));
        cmd.output().unwrap()
    };
    let out = psi(&[
        "cache",
        "invalidate",
        "by-name",
        &ids[1],
        file.to_str().unwrap(),
        "uncached",
        "no-such-secret",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "Dropped by-name from cache.\nDropped {} from cache.\nDropped {} from cache.\nNo cache entry for uncached.\n",
            ids[1],
            file.display()
        )
    );
    let err = text(&out.stderr);
    assert!(err.contains("no-such-secret: not a mapping file"), "{err}");
    // The others were still dropped and saved.
    let loaded = cache::load(&path, &tpm()).await.unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 1);
    assert!(loaded
        .entries
        .get(&loaded.entries.digest(&mapping("gone")))
        .is_some());

    // prune: "gone" has no mapping in the state directory.
    let digest = loaded.entries.digest(&mapping("by-name"));
    let mut entries = loaded.entries;
    entries.insert(digest, value(b"again"));
    cache::save(&path, &tpm(), &entries).await.unwrap();
    let out = psi(&["cache", "prune"]);
    ok(&out, "cache prune");
    assert_eq!(text(&out.stdout), "Pruned 1 of 2 cache entries; 1 kept.\n");
    let loaded = cache::load(&path, &tpm()).await.unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 1);
    assert!(loaded.entries.get(&digest).is_some());

    // Without a backend configured, the original's message.
    let bare = env.sandbox.config("");
    let out = env
        .sandbox
        .psi()
        .arg("-c")
        .arg(&bare)
        .args(["cache", "prune"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Cache is not enabled or has no backend configured."));
}
