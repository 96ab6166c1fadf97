//! One value, whatever the path: every secret of a data set shaped like the recorded one
//! (same-folder, cross-folder, nested and unresolvable references, imports, padding,
//! Unicode, newlines) gives the same bytes through serve's lookup with the cache off and on
//! (the cache file's content), `psi secret lookup`, `psi infisical env`, `psi run` (by
//! workload and by folder) and `psi infisical write-file`, on both API generations. The
//! 2024 server's single-secret route expands only cross-folder references (fixture 64);
//! psi must not let that show.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::support::infisical::{FakeInfisical, Generation};
use crate::support::podman::PodmanEnv;
use crate::support::{http, secret_ids, ServeProcess};

const PROJECT: &str = "f92408c7-3951-442d-8e2d-6bb01204c4f2";

/// The listed (and so expected) value of the one secret whose expansion differs between
/// the routes of the 2024 server: same-folder and cross-folder references expanded, the
/// unresolvable one kept as the server keeps it.
const APP_URL: &str = "https://psi-demo.example.com:8443/db/orders?missing=${NOT_DEFINED}";

fn infisical(generation: Generation) -> FakeInfisical {
    let fake = FakeInfisical::start(generation);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_project(PROJECT, "psi-fixtures");
    let set =
        |path: &str, key: &str, value: &str| fake.set_secret(PROJECT, "dev", path, key, value);
    set("/", "ROOT_DOMAIN", "example.com");
    set("/app/db", "DB_NAME", "orders");
    set("/app", "APP_NAME", "psi-demo");
    set("/app", "APP_PORT", "8443");
    set(
        "/app",
        "APP_URL",
        "https://${APP_NAME}.example.com:${APP_PORT}/db/${dev.app.db.DB_NAME}?missing=${NOT_DEFINED}",
    );
    set("/app", "SITE", "www.${dev.ROOT_DOMAIN}");
    set("/app", "NESTED", "${APP_URL}#top");
    set("/app", "PADDED", "  padded value  \n\n");
    set("/app", "UNICODE", "Ünïcödé — 中文字符 🔐🚀 \u{200d}");
    set("/app", "MULTILINE", "line one\nline two\nline three");
    set("/common", "COMMON", "plain");
    set(
        "/common",
        "SHARED_URL",
        "https://${APP_NAME}.${dev.ROOT_DOMAIN}",
    );
    fake.add_import(PROJECT, "dev", "/app", "dev", "/common");
    fake
}

fn config(fake: &FakeInfisical) -> String {
    format!(
        "providers:\n  infisical:\n    api_url: {}\n    retries: 0\n    timeout: 5s\n    auth: {{method: universal-auth, client_id: client-1, client_secret: secret-1}}\n    projects:\n      web: {{id: {PROJECT}, environment: dev}}\ncache:\n  enabled: true\n  backend: tpm\nworkloads:\n  myapp:\n    secrets:\n      - project: web\n        path: /app\n",
        fake.url()
    )
}

fn ok(out: std::process::Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `env -0` output as a map.
fn env_map(out: &[u8]) -> BTreeMap<String, Vec<u8>> {
    out.split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let at = entry.iter().position(|b| *b == b'=')?;
            Some((
                String::from_utf8_lossy(&entry[..at]).into_owned(),
                entry[at + 1..].to_vec(),
            ))
        })
        .collect()
}

fn lookup(socket: &Path, id: &str) -> (u16, Vec<u8>) {
    let reply = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(http::get(socket, &format!("/lookup/{id}")));
    (reply.status, reply.body.clone())
}

#[test]
fn every_path_gives_the_same_bytes_on_both_generations() {
    for generation in [Generation::Current, Generation::Legacy2024] {
        let mut fake = infisical(generation);
        let creds = tempfile::Builder::new()
            .prefix("psi-creds.")
            .tempdir()
            .unwrap();
        std::fs::write(creds.path().join("psi-cache-key"), [5u8; 32]).unwrap();
        let Some(mut env) = PodmanEnv::with_env(
            &config(&fake),
            &[("CREDENTIALS_DIRECTORY", creds.path().as_os_str())],
        ) else {
            return;
        };
        env.for_setup();
        let psi = |args: &[&str]| {
            let mut cmd = env.psi(args);
            cmd.env("CREDENTIALS_DIRECTORY", creds.path());
            cmd
        };

        // What the list route gives: the reference every other path is held to.
        let listed: Value = serde_json::from_slice(&ok(
            psi(&[
                "infisical",
                "env",
                "--project",
                "web",
                "--path",
                "/app",
                "--format",
                "json",
            ])
            .output()
            .unwrap(),
            "infisical env",
        ))
        .unwrap();
        let expected: BTreeMap<String, Vec<u8>> = listed
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
            .collect();
        assert_eq!(expected.len(), 10, "{generation:?}: {listed}");
        assert_eq!(expected["APP_URL"], APP_URL.as_bytes(), "{generation:?}");
        assert_eq!(
            expected["NESTED"],
            format!("{APP_URL}#top").as_bytes(),
            "{generation:?}"
        );

        // psi setup registers every key and writes the cache from the same listing.
        let out = psi(&["setup", "--json"]).output().unwrap();
        ok(out, "setup");
        let ids = secret_ids(env.podman());

        // Live lookups: one-shot `psi secret lookup` (serve's resolver, no cache).
        for (key, value) in &expected {
            let id = &ids[&format!("myapp--{key}")];
            let mut cmd = psi(&["secret", "lookup"]);
            cmd.env("SECRET_ID", id);
            let got = ok(cmd.output().unwrap(), &format!("secret lookup {key}"));
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(value),
                "{generation:?}: psi secret lookup {key}"
            );
        }

        // write-file asks the single-secret route, like a lookup.
        let dir = tempfile::tempdir().unwrap();
        for (key, value) in &expected {
            let file = dir.path().join(key);
            ok(
                psi(&[
                    "infisical",
                    "write-file",
                    key,
                    file.to_str().unwrap(),
                    "--project",
                    "web",
                    "--secret-path",
                    "/app",
                ])
                .output()
                .unwrap(),
                "write-file",
            );
            assert_eq!(
                String::from_utf8_lossy(&std::fs::read(&file).unwrap()),
                String::from_utf8_lossy(value),
                "{generation:?}: write-file {key}"
            );
        }

        // psi run, by workload and by folder.
        for args in [
            &["run", "--workload", "myapp", "--", "env", "-0"][..],
            &[
                "run",
                "--project",
                "web",
                "--path",
                "/app",
                "--",
                "env",
                "-0",
            ][..],
        ] {
            let vars = env_map(&ok(psi(args).output().unwrap(), "psi run"));
            for (key, value) in &expected {
                assert_eq!(
                    vars.get(key)
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                    Some(String::from_utf8_lossy(value).into_owned()),
                    "{generation:?}: {args:?} {key}"
                );
            }
        }

        // With Infisical down, a serve started now loads the cache file setup wrote before
        // it takes requests, and answers every lookup from it.
        fake.stop();
        let socket = env.sandbox.path().join("cached.sock");
        let mut cached = psi(&["--socket", socket.to_str().unwrap(), "serve"]);
        cached.env_remove("PSI_SOCKET");
        let _serve = ServeProcess::start(cached, &socket, env.sandbox.path().join("cached.log"));
        for (key, value) in &expected {
            let (status, body) = lookup(&socket, &ids[&format!("myapp--{key}")]);
            assert_eq!(status, 200, "{generation:?}: cached {key}");
            assert_eq!(
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(value),
                "{generation:?}: cached lookup {key}"
            );
        }
    }
}
