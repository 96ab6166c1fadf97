//! The encrypted cache at work in `psi serve` and `psi setup`: setup fills `cache.enc` from
//! its listings, serve picks it up without a restart and answers from memory, containers
//! keep starting while Infisical is down, a reload under load never fails a lookup, and a
//! cache whose key is unavailable leaves serve on live lookups.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

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
        "providers:\n  infisical:\n    api_url: {}\n    retries: 0\n    timeout: 2s\n    auth: {{method: universal-auth, client_id: client-1, client_secret: secret-1}}\n    projects:\n      web: {{id: {PROJECT}, environment: prod}}\ncache:\n  enabled: true\n  backend: tpm\n  watch_interval: 100ms\nworkloads:\n  myapp:\n    secrets:\n      - project: web\n        path: /app\n",
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

/// Waits until serve has loaded the cache file `loads` times (the load at start counts; it
/// looks at the file every 100 ms here) and returns that load's log line.
fn wait_for_load(env: &PodmanEnv, loads: usize) -> String {
    const LOADED: &str = r#""event":"cache.load","outcome":"success""#;
    let log = env.serve.wait_for_log(
        &format!("cache load {loads}"),
        Duration::from_secs(30),
        |log| log.matches(LOADED).count() >= loads,
    );
    let line = log.lines().filter(|l| l.contains(LOADED)).nth(loads - 1);
    line.unwrap().to_owned()
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
    let loaded = wait_for_load(&env, 2);
    assert!(loaded.contains(r#""entries":2"#), "{loaded}");
    let (_, body) = cache_health(&env);
    assert_eq!((&body["entries"], &body["version"]), (&2.into(), &2.into()));

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
    wait_for_load(&env, 2);
    fake.set_secret(PROJECT, "prod", "/app", "DB_PASS", "pass-2");
    fake.set_secret(PROJECT, "prod", "/app", "NEW_KEY", "new");
    fake.delete_secret(PROJECT, "prod", "/app", "DB_HOST");
    let report = setup(&env);
    // DB_HOST's entry is pruned even though its Podman secret stays (drift, no --prune).
    assert_eq!(report["cache"]["entries"], 2, "{report}");
    assert_eq!(report["cache"]["previous"], 2, "{report}");
    // Serve notices the new file by itself and swaps it in.
    wait_for_load(&env, 3);
    let ids = secret_ids(env.podman());
    let reply = get(
        &env.sandbox.socket(),
        &format!("/lookup/{}", ids["myapp--DB_PASS"]),
    );
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"pass-2"[..]));
    let (_, body) = cache_health(&env);
    assert_eq!(body["entries"], 2, "{body}");

    // Lookups while setup rewrites the cache again and again: every one answers, with the
    // old or the new value, never an error.
    let socket = env.sandbox.socket();
    let id = ids["myapp--DB_PASS"].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The rounds start once every thread has had an answer, so all of them overlap the
    // reloads.
    let running = std::sync::Arc::new(std::sync::Barrier::new(5));
    let lookups: Vec<_> = (0..4)
        .map(|_| {
            let (socket, id, stop) = (socket.clone(), id.clone(), stop.clone());
            let running = running.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                let mut seen = 0;
                while seen == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply = runtime.block_on(http::get(&socket, &format!("/lookup/{id}")));
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    assert!(
                        reply.body == b"pass-2" || reply.body == b"pass-3",
                        "{}",
                        reply.text()
                    );
                    seen += 1;
                    if seen == 1 {
                        running.wait();
                    }
                }
                seen
            })
        })
        .collect();
    running.wait();
    for round in 0..3 {
        fake.set_secret(
            PROJECT,
            "prod",
            "/app",
            "DB_PASS",
            if round % 2 == 0 { "pass-3" } else { "pass-2" },
        );
        setup(&env);
        wait_for_load(&env, 4 + round);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for lookups in lookups {
        assert!(lookups.join().unwrap() > 0);
    }
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

/// The fast path (a cache hit answered at once, for a mapping file serve has read before)
/// gives the bytes hyper gives, and never an answer its mapping file or the cache file no
/// longer says: a file rewritten in place, a file replaced, a new cache file, a removed file.
#[test]
fn a_cached_answer_is_hypers_answer_and_follows_its_files() {
    let fake = infisical();
    let Some((env, _creds)) = env_with_cache(&fake, Some(&[5u8; 32])) else {
        return;
    };
    setup(&env);
    wait_for_load(&env, 2);
    let socket = env.sandbox.socket();
    let ids = secret_ids(env.podman());
    let (pass, host) = (&ids["myapp--DB_PASS"], &ids["myapp--DB_HOST"]);
    let lookup = |id: &str| get(&socket, &format!("/lookup/{id}"));
    assert_eq!(lookup(pass).body, b"pass-1");

    // Byte for byte what hyper answers (`Connection: close, x` is a form the fast path
    // leaves to hyper), for a lookup, for /healthz, and with and without `close`.
    for (fast, slow) in [
        (
            format!("GET /lookup/{pass} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            format!("GET /lookup/{pass} HTTP/1.1\r\nHost: x\r\nConnection: close, x\r\n\r\n"),
        ),
        (
            format!("GET /lookup/{pass} HTTP/1.1\r\nHost: x\r\n\r\n"),
            format!("GET /lookup/{pass} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x\r\n\r\n"),
        ),
        (
            "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
            "GET /healthz HTTP/1.1\r\nConnection: close, x\r\n\r\n".to_owned(),
        ),
        (
            "HEAD /healthz HTTP/1.1\r\n\r\n".to_owned(),
            "HEAD /healthz HTTP/1.1\r\nConnection: keep-alive, x\r\n\r\n".to_owned(),
        ),
        // Answered later (the state directory), and refusals.
        (
            "GET /lookup/nothing-here HTTP/1.1\r\n\r\n".to_owned(),
            "GET /lookup/nothing-here HTTP/1.1\r\nConnection: keep-alive, x\r\n\r\n".to_owned(),
        ),
        (
            "GET /list HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
            "GET /list HTTP/1.1\r\nConnection: close, x\r\n\r\n".to_owned(),
        ),
        (
            format!("HEAD /lookup/{pass} HTTP/1.1\r\n\r\n"),
            format!("HEAD /lookup/{pass} HTTP/1.1\r\nConnection: keep-alive, x\r\n\r\n"),
        ),
        (
            "GET /lookup/.hidden HTTP/1.1\r\n\r\n".to_owned(),
            "GET /lookup/.hidden HTTP/1.1\r\nConnection: keep-alive, x\r\n\r\n".to_owned(),
        ),
        (
            "GET /nowhere HTTP/1.1\r\n\r\n".to_owned(),
            "GET /nowhere HTTP/1.1\r\nConnection: keep-alive, x\r\n\r\n".to_owned(),
        ),
    ] {
        let (fast_reply, slow_reply) = http::both_ways(&socket, fast.as_bytes(), slow.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&fast_reply),
            String::from_utf8_lossy(&slow_reply),
            "{fast:?}"
        );
        assert!(fast_reply.starts_with(b"HTTP/1.1 "), "{fast:?}");
    }

    // Rewritten in place (same inode) to name the other secret.
    let (pass_file, host_file) = (env.state_dir().join(pass), env.state_dir().join(host));
    let pass_mapping = std::fs::read(&pass_file).unwrap();
    let host_mapping = std::fs::read(&host_file).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&pass_file)
        .and_then(|mut file| std::io::Write::write_all(&mut file, &host_mapping))
        .unwrap();
    assert_eq!(lookup(pass).body, b"db.internal");
    // Replaced by rename, as psi writes mappings.
    let staged = env.state_dir().join(".staged");
    std::fs::write(&staged, &pass_mapping).unwrap();
    std::fs::rename(&staged, &pass_file).unwrap();
    assert_eq!(lookup(pass).body, b"pass-1");
    assert_eq!(lookup(pass).body, b"pass-1");

    // A new cache file with a new value.
    fake.set_secret(PROJECT, "prod", "/app", "DB_PASS", "pass-2");
    setup(&env);
    wait_for_load(&env, 3);
    assert_eq!(lookup(pass).body, b"pass-2");

    // Removed.
    std::fs::remove_file(&pass_file).unwrap();
    assert_eq!(lookup(pass).status, 404);
}
