//! The encrypted cache at work in `psi serve` and `psi setup`: setup fills `cache.enc` from
//! its listings, serve picks it up without a restart and answers from memory, containers
//! keep starting while Infisical is down, a reload under load never fails a lookup, and a
//! cache whose key is unavailable leaves serve on live lookups.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::http;
use crate::support::infisical::{FakeInfisical, Generation};
use crate::support::podman::PodmanEnv;
use crate::support::secret_ids;

const PROJECT: &str = "3c1b2a4e-5f6d-4e7c-8a9b-0c1d2e3f4a5b";

fn infisical() -> FakeInfisical {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_project(PROJECT, "web");
    fake.set_secret(PROJECT, "prod", "/app", "DB_HOST", "db.internal");
    fake.set_secret(PROJECT, "prod", "/app", "DB_PASS", "pass-1");
    fake
}

/// A Podman environment whose `psi serve` and `psi setup` get the cache key through a
/// credentials directory, as `LoadCredentialEncrypted=psi-cache-key` delivers it.
fn env_with_cache(
    fake: &FakeInfisical,
    key: Option<&[u8]>,
) -> Option<(PodmanEnv, tempfile::TempDir)> {
    let creds = tempfile::Builder::new()
        .prefix("psi-creds.")
        .tempdir()
        .unwrap();
    if let Some(key) = key {
        std::fs::write(creds.path().join("psi-cache-key"), key).unwrap();
    }
    let config = format!(
        "providers:\n  infisical:\n    api_url: {}\n    retries: 0\n    timeout: 2s\n    auth: {{method: universal-auth, client_id: client-1, client_secret: secret-1}}\n    projects:\n      web: {{id: {PROJECT}, environment: prod}}\ncache:\n  enabled: true\n  backend: tpm\nworkloads:\n  myapp:\n    secrets:\n      - project: web\n        path: /app\n",
        fake.url()
    );
    let mut env = PodmanEnv::with_env(
        &config,
        &[("CREDENTIALS_DIRECTORY", creds.path().as_os_str())],
    )?;
    env.for_setup();
    Some((env, creds))
}

fn get(socket: &Path, target: &str) -> http::Reply {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(http::get(socket, target))
}

fn cache_health(env: &PodmanEnv) -> (u16, Value) {
    let reply = get(&env.sandbox.socket(), "/healthz/cache");
    (reply.status, serde_json::from_slice(&reply.body).unwrap())
}

/// Waits until serve reports `entries` cache entries (it polls the file every 2 s).
fn wait_for_entries(env: &PodmanEnv, entries: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = cache_health(env);
        if status == 200 && body["entries"] == entries {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cache never reached {entries} entries: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn setup(env: &PodmanEnv) -> Value {
    let out = env.psi(&["setup", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn containers_start_from_the_cache_while_infisical_is_down() {
    let mut fake = infisical();
    let Some((env, _creds)) = env_with_cache(&fake, Some(&[7u8; 32])) else {
        return;
    };
    // No file yet: loaded and empty.
    let (status, body) = cache_health(&env);
    assert_eq!(
        (status, &body["cache"]),
        (200, &Value::from("loaded")),
        "{body}"
    );
    assert_eq!(body["entries"], 0);

    let report = setup(&env);
    assert_eq!(report["cache"]["entries"], 2, "{report}");
    let cache_file = env.state_dir().join("cache.enc");
    assert_eq!(
        std::fs::metadata(&cache_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    crate::support::assert_not_on_disk(env.sandbox.path(), b"pass-1");
    wait_for_entries(&env, 2);
    let (_, body) = cache_health(&env);
    assert_eq!(body["version"], 2);

    // Infisical goes away: containers still get their values, from memory.
    fake.stop();
    let out = env.run(&["myapp--DB_PASS,type=env,target=P"], r#"printf %s "$P""#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"pass-1");

    // psi run for the workload goes through serve too (the drop-in names the secrets, Podman
    // their IDs), so it also works while Infisical is down.
    let out = env
        .psi(&[
            "run",
            "--workload",
            "myapp",
            "--",
            "sh",
            "-c",
            r#"printf %s "$DB_PASS""#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"pass-1");

    // A secret the cache does not hold gets a clear error instead of a hang.
    let body = env.sandbox.path().join("other.json");
    std::fs::write(
        &body,
        br#"{"provider": "infisical", "project": "web", "path": "/app", "key": "NOT_CACHED"}"#,
    )
    .unwrap();
    let made = env
        .podman()
        .args(["secret", "create", "--driver", "shell", "other"])
        .arg(&body)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let id = secret_ids(env.podman())["other"].clone();
    let reply = get(&env.sandbox.socket(), &format!("/lookup/{id}"));
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.text().contains("provider_unavailable"),
        "{}",
        reply.text()
    );
    let out = env.run(&["other,type=env,target=O"], "true");
    assert!(!out.status.success());
}

#[test]
fn setup_prunes_removed_secrets_and_serve_reloads_without_a_restart() {
    let fake = infisical();
    let Some((env, _creds)) = env_with_cache(&fake, Some(&[9u8; 32])) else {
        return;
    };
    setup(&env);
    wait_for_entries(&env, 2);
    fake.set_secret(PROJECT, "prod", "/app", "DB_PASS", "pass-2");
    fake.set_secret(PROJECT, "prod", "/app", "NEW_KEY", "new");
    fake.delete_secret(PROJECT, "prod", "/app", "DB_HOST");
    let report = setup(&env);
    // DB_HOST's entry is pruned even though its Podman secret stays (drift, no --prune).
    assert_eq!(report["cache"]["entries"], 2, "{report}");
    assert_eq!(report["cache"]["previous"], 2, "{report}");
    // Serve notices the new file by itself (it polls every 2 s) and swaps it in.
    let ids = secret_ids(env.podman());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = get(
            &env.sandbox.socket(),
            &format!("/lookup/{}", ids["myapp--DB_PASS"]),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.body == b"pass-2" {
            break;
        }
        assert_eq!(reply.body, b"pass-1");
        assert!(Instant::now() < deadline, "serve never reloaded the cache");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = cache_health(&env);
    assert_eq!(body["entries"], 2, "{body}");

    // Lookups while setup rewrites the cache again and again: every one answers, with the
    // old or the new value, never an error.
    let socket = env.sandbox.socket();
    let id = ids["myapp--DB_PASS"].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lookups: Vec<_> = (0..4)
        .map(|_| {
            let (socket, id, stop) = (socket.clone(), id.clone(), stop.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply = runtime.block_on(http::get(&socket, &format!("/lookup/{id}")));
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    assert!(
                        reply.body == b"pass-2" || reply.body == b"pass-3",
                        "{}",
                        reply.text()
                    );
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for round in 0..3 {
        fake.set_secret(
            PROJECT,
            "prod",
            "/app",
            "DB_PASS",
            if round % 2 == 0 { "pass-3" } else { "pass-2" },
        );
        setup(&env);
        std::thread::sleep(Duration::from_millis(2500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = lookups.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 100, "only {total} lookups ran");
}

#[test]
fn without_its_key_the_cache_is_unavailable_and_lookups_go_live() {
    let fake = infisical();
    let Some((env, _creds)) = env_with_cache(&fake, None) else {
        return;
    };
    let (status, body) = cache_health(&env);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["cache"], "unavailable");
    assert!(
        body["error"].as_str().unwrap().contains("psi-cache-key"),
        "{body}"
    );
    // /healthz itself stays up, and setup still works, reporting the cache it could not write.
    assert_eq!(get(&env.sandbox.socket(), "/healthz").status, 200);
    let report = setup(&env);
    assert!(
        report["cache"]["error"]
            .as_str()
            .unwrap()
            .contains("psi-cache-key"),
        "{report}"
    );
    let ids = secret_ids(env.podman());
    let reply = get(
        &env.sandbox.socket(),
        &format!("/lookup/{}", ids["myapp--DB_HOST"]),
    );
    assert_eq!(reply.body, b"db.internal");
}
