//! The Nitrokey HSM provider on a real SoftHSM2 2.6.1 token: round trips in-process and
//! through `psi serve`, which unwrap path the token takes, envelopes built from the format
//! description alone, tampering, session loss while serving, failures that say what to fix,
//! and parallel lookups queued on the one session.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use openssl::md::Md;
use openssl::pkey::PKey;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::symm::{encrypt_aead, Cipher};
use psi::crypto::envelope;
use psi::crypto::oaep::{OaepHash, PublicKey};
use psi::provider::nitrokeyhsm::{Mechanism, NitrokeyHsm};
use psi::secret::{Mapping, SecretId};
use psi::state::StateDir;

use crate::support::http::{get, request};
use crate::support::softhsm::{self, options, SoftHsm, PIN};
use crate::support::{Sandbox, ServeProcess};

fn id(s: &str) -> SecretId {
    SecretId::parse(s).unwrap()
}

/// Values every round trip covers: empty, one byte, 64 KiB of random bytes, UTF-8 text.
fn values() -> Vec<Vec<u8>> {
    let mut random = vec![0u8; 64 * 1024];
    openssl::rand::rand_bytes(&mut random).unwrap();
    vec![
        Vec::new(),
        b"x".to_vec(),
        random,
        "pässwörd\nzweite Zeile\r\n\n".as_bytes().to_vec(),
    ]
}

fn mapping(blob: &[u8]) -> Mapping {
    Mapping::new("nitrokeyhsm", &[("blob", &B64.encode(blob))])
}

/// The envelope, written from the format description with OpenSSL directly (not psi).
fn envelope_by_hand(public_der: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let key = PKey::public_key_from_der(public_der).unwrap();
    let mut aes_key = [0u8; 32];
    let mut nonce = [0u8; 12];
    openssl::rand::rand_bytes(&mut aes_key).unwrap();
    openssl::rand::rand_bytes(&mut nonce).unwrap();
    let mut ctx = PkeyCtx::new(&key).unwrap();
    ctx.encrypt_init().unwrap();
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    ctx.set_rsa_oaep_md(Md::sha256()).unwrap();
    ctx.set_rsa_mgf1_md(Md::sha256()).unwrap();
    let mut wrapped = Vec::new();
    ctx.encrypt_to_vec(&aes_key, &mut wrapped).unwrap();
    let mut tag = [0u8; 16];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        &aes_key,
        Some(&nonce),
        &[],
        plaintext,
        &mut tag,
    )
    .unwrap();
    let mut out = (wrapped.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trips_in_process_on_the_fallback_path() {
    if !softhsm::available() {
        return;
    }
    let Some(hsm) = softhsm::in_child("nitrokeyhsm::round_trips_in_process_on_the_fallback_path")
    else {
        return;
    };
    hsm.init_token_with_key();
    let sandbox = Sandbox::new();
    let cache = sandbox.state_dir().join("nitrokeyhsm-pubkey.der");
    let provider = softhsm::provider(options(PIN, OaepHash::Sha256), cache.clone());
    assert_eq!(provider.mechanism(), None, "nothing touched the token yet");

    for value in values() {
        let mapping = provider.seal(&id("name"), &value).await.unwrap();
        let bytes = mapping.to_bytes();
        assert!(bytes.starts_with(br#"{"provider": "nitrokeyhsm", "blob": ""#));
        let back = provider
            .lookup(&Mapping::parse(&bytes).unwrap())
            .await
            .unwrap();
        assert!(back.expose() == value.as_slice(), "{} bytes", value.len());
    }
    // SoftHSM 2.6.1 rejects OAEP-SHA256: raw RSA on the token, OAEP decoding in software.
    assert_eq!(
        provider.mechanism(),
        Some(Mechanism::RawWithSoftwareUnpadding)
    );

    // Sealing cached the token's public key, 0644, and it is the token's key.
    let der = std::fs::read(&cache).unwrap();
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(der, provider.public_key_from_token().await.unwrap());
    let status = provider.status().await.unwrap();
    assert_eq!(status.token_label, "psi");
    let key = status.key.unwrap();
    assert_eq!((key.found_by, key.id_hex.as_str()), ("id", "02"));
    drop(provider);
}

#[tokio::test(flavor = "multi_thread")]
async fn sha1_oaep_takes_the_native_path() {
    if !softhsm::available() {
        return;
    }
    let Some(hsm) = softhsm::in_child("nitrokeyhsm::sha1_oaep_takes_the_native_path") else {
        return;
    };
    hsm.init_token_with_key();
    let sandbox = Sandbox::new();
    let provider = softhsm::provider(options(PIN, OaepHash::Sha1), sandbox.path().join("pub.der"));
    let public = PublicKey::from_der(&provider.public_key_from_token().await.unwrap()).unwrap();
    let blob = envelope::seal_with(&public, b"native", OaepHash::Sha1).unwrap();
    let value = provider.lookup(&mapping(&blob)).await.unwrap();
    assert_eq!(value.expose(), b"native");
    assert_eq!(provider.mechanism(), Some(Mechanism::Oaep));
    drop(provider);
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_built_envelopes_open_and_tampered_ones_fail_clearly() {
    if !softhsm::available() {
        return;
    }
    let Some(hsm) =
        softhsm::in_child("nitrokeyhsm::hand_built_envelopes_open_and_tampered_ones_fail_clearly")
    else {
        return;
    };
    hsm.init_token_with_key();
    let sandbox = Sandbox::new();
    let provider = softhsm::provider(
        options(PIN, OaepHash::Sha256),
        sandbox.path().join("pub.der"),
    );
    let der = provider.public_key_from_token().await.unwrap();
    let good = envelope_by_hand(&der, b"by hand\n");
    assert_eq!(
        provider.lookup(&mapping(&good)).await.unwrap().expose(),
        b"by hand\n"
    );

    let other_key = Rsa::generate(2048).unwrap().public_key_to_der().unwrap();
    let mut flipped_tag = good.clone();
    *flipped_tag.last_mut().unwrap() ^= 0x01;
    let mut wrong_prefix = good.clone();
    wrong_prefix[..2].copy_from_slice(&[0x00, 0xff]); // 255 bytes of wrapped key
    let mut short_prefix = good.clone();
    short_prefix[..2].copy_from_slice(&[0, 0]); // no wrapped key at all
                                                // A wrapped key above the modulus (all ones): no envelope for this key can hold it.
    let mut above_modulus = good.clone();
    above_modulus[2..258].fill(0xff);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("flipped tag", flipped_tag, "authentication failed"),
        ("truncated", good[..200].to_vec(), "envelope truncated"),
        ("one byte", vec![1], "envelope too short"),
        (
            "wrong length prefix",
            wrong_prefix,
            "wrapped key is 255 bytes, but this RSA key needs 256",
        ),
        ("zero length prefix", short_prefix, "wrapped key is 0 bytes"),
        (
            "another key's envelope",
            envelope_by_hand(&other_key, b"x"),
            "RSA-OAEP decoding failed",
        ),
        (
            "wrapped key above the modulus",
            above_modulus,
            "RSA-OAEP decoding failed",
        ),
    ];
    for (what, blob, expected) in cases {
        let err = provider.lookup(&mapping(&blob)).await.unwrap_err();
        assert_eq!(err.http_status(), (502, "provider_error"), "{what}: {err}");
        assert!(err.to_string().contains(expected), "{what}: {err}");
    }
    let not_base64 =
        Mapping::parse(br#"{"provider": "nitrokeyhsm", "blob": "not base64!"}"#).unwrap();
    let err = provider.lookup(&not_base64).await.unwrap_err();
    assert!(err.to_string().contains("not standard base64"), "{err}");
    // The token still works after all of that.
    assert!(provider.lookup(&mapping(&good)).await.is_ok());
    drop(provider);
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_say_what_to_fix() {
    if !softhsm::available() {
        return;
    }
    let Some(hsm) = softhsm::in_child("nitrokeyhsm::failures_say_what_to_fix") else {
        return;
    };
    let sandbox = Sandbox::new();
    let blob = {
        let key = Rsa::generate(2048).unwrap().public_key_to_der().unwrap();
        mapping(&envelope_by_hand(&key, b"v"))
    };
    let lookup_error = |provider: NitrokeyHsm| {
        let blob = blob.clone();
        async move {
            let err = provider.lookup(&blob).await.unwrap_err();
            (provider, err)
        }
    };

    // Empty slot list: a SoftHSM with no initialised token.
    let mut opts = options(PIN, OaepHash::Sha256);
    opts.token_label = None;
    let (provider, err) = lookup_error(softhsm::provider(opts, sandbox.path().join("a"))).await;
    assert_eq!(err.http_status(), (503, "provider_unavailable"), "{err}");
    assert!(err.to_string().contains("no token present"), "{err}");
    // Within the backoff the next request fails fast with the same reason.
    let started = Instant::now();
    let err = provider.lookup(&blob).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(err.to_string().contains("next attempt in"), "{err}");
    drop(provider);

    // Missing module.
    let mut opts = options(PIN, OaepHash::Sha256);
    opts.module = "/nonexistent/pkcs11.so".into();
    let (_, err) = lookup_error(softhsm::provider(opts, sandbox.path().join("b"))).await;
    assert!(
        err.to_string()
            .contains("PKCS#11 module not found: /nonexistent/pkcs11.so"),
        "{err}"
    );

    // A token without the key (the provider above finalised the library when dropped, so
    // the next one sees the new token).
    hsm.init_token();
    let (provider, err) = lookup_error(softhsm::provider(
        options(PIN, OaepHash::Sha256),
        sandbox.path().join("c"),
    ))
    .await;
    assert_eq!(err.http_status(), (502, "provider_error"), "{err}");
    assert!(
        err.to_string()
            .contains("private key not found on token 'psi': no object with id '02' or label 'podman-secrets'"),
        "{err}"
    );
    drop(provider);

    // Token selection: an index past the tokens present, a label no token has.
    let mut opts = options(PIN, OaepHash::Sha256);
    opts.token_label = None;
    opts.slot_index = 3;
    let (_, err) = lookup_error(softhsm::provider(opts, sandbox.path().join("e"))).await;
    assert!(
        err.to_string()
            .contains("slot 3 not found: 1 slot(s) with a token present"),
        "{err}"
    );
    let mut opts = options(PIN, OaepHash::Sha256);
    opts.token_label = Some("nope".into());
    let (_, err) = lookup_error(softhsm::provider(opts, sandbox.path().join("f"))).await;
    assert!(
        err.to_string()
            .contains("no token with label 'nope' is present; tokens present: 'psi' (serial "),
        "{err}"
    );

    // A wrong PIN: a clear error, and the same PIN is not tried again.
    let (provider, err) = lookup_error(softhsm::provider(
        options("9999", OaepHash::Sha256),
        sandbox.path().join("d"),
    ))
    .await;
    assert!(err.to_string().contains("rejected the PIN"), "{err}");
    assert!(err.to_string().contains("CKR_PIN_INCORRECT"), "{err}");
    assert!(err.to_string().contains("Check your PIN"), "{err}");
    let err = provider.lookup(&blob).await.unwrap_err();
    assert!(err.to_string().contains("already rejected"), "{err}");
    drop(provider);
    // Only one wrong attempt reached the token: the right PIN still logs in.
    let out = hsm.pkcs11_tool(&["--list-objects"]);
    assert!(out.status.success());
}

/// A `psi serve` child on `hsm` with `store.seal_with: nitrokeyhsm`.
fn serve(sandbox: &Sandbox, hsm: &SoftHsm) -> ServeProcess {
    let config = sandbox.config(&format!(
        "{}    pin: \"{PIN}\"\nstore:\n  seal_with: nitrokeyhsm\n",
        hsm.provider_yaml("")
    ));
    let mut cmd = sandbox.psi();
    cmd.env("SOFTHSM2_CONF", &hsm.conf)
        .env("PSI_LOG_LEVEL", "debug")
        .args(["-c", config.to_str().unwrap(), "serve"]);
    ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"))
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_round_trips_and_parallel_lookups() {
    if !softhsm::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let hsm = SoftHsm::with_key(sandbox.path());
    let serving = serve(&sandbox, &hsm);
    let socket = sandbox.socket();

    // Raw values stored through serve are sealed with the token's public key.
    let reply = request(&socket, "POST", "/store/stored01", &[], b"raw value\n").await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), serving.log());
    let stored = std::fs::read(sandbox.state_dir().join("stored01")).unwrap();
    assert!(stored.starts_with(br#"{"provider": "nitrokeyhsm", "blob": ""#));
    let reply = get(&socket, "/lookup/stored01").await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"raw value\n"[..])
    );

    // Mappings written to the state dir, sealed with the cached public key.
    let der = std::fs::read(sandbox.state_dir().join("nitrokeyhsm-pubkey.der")).unwrap();
    let public = PublicKey::from_der(&der).unwrap();
    let state = StateDir::new(sandbox.state_dir());
    let values = values();
    for (i, value) in values.iter().enumerate() {
        let blob = envelope::seal(&public, value).unwrap();
        state
            .write_mapping(&id(&format!("value{i}")), &mapping(&blob).to_bytes())
            .unwrap();
    }
    for (i, value) in values.iter().enumerate() {
        let reply = get(&socket, &format!("/lookup/value{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.body == *value, "value{i} differs");
    }

    // Many lookups at once: all queue on the one session and succeed.
    let lookups = (0..40).map(|n| {
        let socket = socket.clone();
        let i = n % values.len();
        tokio::spawn(async move { (i, get(&socket, &format!("/lookup/value{i}")).await) })
    });
    for lookup in futures_join(lookups).await {
        let (i, reply) = lookup;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.body == values[i]);
    }
    assert!(
        serving.log().contains("raw-rsa+software-oaep"),
        "{}",
        serving.log()
    );
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_recovers_when_the_token_is_replaced() {
    if !softhsm::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let hsm = SoftHsm::new(sandbox.path());
    hsm.init_token();
    let key = Rsa::generate(2048).unwrap();
    hsm.import(&key, sandbox.path());
    let serving = serve(&sandbox, &hsm);
    let socket = sandbox.socket();
    let public = PublicKey::from_der(&key.public_key_to_der().unwrap()).unwrap();
    let blob = envelope::seal(&public, b"survives").unwrap();
    StateDir::new(sandbox.state_dir())
        .write_mapping(&id("kept"), &mapping(&blob).to_bytes())
        .unwrap();
    let reply = get(&socket, "/lookup/kept").await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), serving.log());

    // The token goes away under the running session and comes back (new token, same key
    // material), as when a Nitrokey is re-plugged or pcscd restarts.
    hsm.delete_token();
    let reply = get(&socket, "/lookup/kept").await;
    assert_ne!(reply.status, 200, "the token is gone: {}", reply.text());
    assert_eq!(get(&socket, "/healthz").await.status, 200);
    hsm.init_token();
    hsm.import(&key, sandbox.path());

    // Attempts back off 1 s, 2 s, 4 s...: 20 s covers the re-initialisation above.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(&socket, "/lookup/kept").await;
        if reply.status == 200 {
            assert_eq!(reply.body, b"survives");
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(get(&socket, "/healthz").await.status, 200);
        assert!(
            Instant::now() < deadline,
            "no recovery: {}\n{}",
            reply.text(),
            serving.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = serving.log();
    // SoftHSM reports the deleted token as CKR_OBJECT_HANDLE_INVALID on the cached key.
    assert!(log.contains("PKCS#11 session lost"), "{log}");
    assert!(log.contains("CKR_OBJECT_HANDLE_INVALID"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sealing_with_a_cached_public_key_never_touches_the_token() {
    let sandbox = Sandbox::new();
    let key = Rsa::generate(2048).unwrap();
    let cache = sandbox.path().join("nitrokeyhsm-pubkey.der");
    let mut opts = options(PIN, OaepHash::Sha256);
    opts.module = "/nonexistent/pkcs11.so".into();
    let provider = softhsm::provider(opts, cache.clone());
    provider
        .write_public_key_cache(&key.public_key_to_der().unwrap())
        .unwrap();
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let mapping = provider.seal(&id("n"), b"offline").await.unwrap();
    // Open it with the private key in software, as the token would.
    let blob = B64.decode(mapping.str_field("blob").unwrap()).unwrap();
    let envelope = envelope::Envelope::parse(&blob).unwrap();
    let mut ctx = PkeyCtx::new(&PKey::from_rsa(key).unwrap()).unwrap();
    ctx.decrypt_init().unwrap();
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    ctx.set_rsa_oaep_md(Md::sha256()).unwrap();
    ctx.set_rsa_mgf1_md(Md::sha256()).unwrap();
    let mut aes_key = Vec::new();
    ctx.decrypt_to_vec(envelope.wrapped_key(), &mut aes_key)
        .unwrap();
    assert_eq!(envelope.open(&aes_key).unwrap().as_slice(), b"offline");
    // Not an RSA key: refused before it reaches the cache.
    assert!(provider.write_public_key_cache(b"junk").is_err());
}
