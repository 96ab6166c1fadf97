//! `psi setup` against a real Podman 5 (5.4.2 from Debian trixie, in a chroot; see
//! `support::podman5`): the fake Infisical, `psi serve` and `psi setup` on the host, Podman's
//! libpod API and shell driver in the chroot. Covers what Podman 4.3.1 cannot show: that the
//! libpod client and the driver commands work with 5.x, template workloads, whose secret
//! names contain `@` (4.3.1 rejects them), and replacing a secret in place, so its name
//! resolves all through a rotation.

use std::process::Output;

use psi::podman::{Podman, Replaced};
use serde_json::Value;

use crate::support::infisical::{FakeInfisical, Generation};
use crate::support::lookups::lookups_during;
use crate::support::podman5::Podman5Env;
use crate::support::{secret_ids, setup_actions};

const PROJECT: &str = "7c1e9a52-3f0b-4d8e-9a61-2b5c8d0e4f13";

/// The fake Infisical with one identity and project `web` (environment prod, folder /app).
fn infisical() -> FakeInfisical {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_project(PROJECT, "web-project");
    fake.set_secret(PROJECT, "prod", "/app", "DB_HOST", "db.internal");
    fake.set_secret(PROJECT, "prod", "/app", "DB_PASS", "s3cr3t with spaces");
    fake.set_secret(PROJECT, "prod", "/app", "API_KEY", "key-1");
    fake
}

/// psi's config: the fake as provider, then `workloads` (a YAML `workloads:` block).
fn env_with(fake: &FakeInfisical, workloads: &str) -> Option<Podman5Env> {
    Podman5Env::new(&format!(
        "providers:\n  infisical:\n    api_url: {}\n    auth:\n      method: universal-auth\n      client_id: client-1\n      client_secret: secret-1\n    projects:\n      web:\n        id: {PROJECT}\n        environment: prod\n{workloads}",
        fake.url()
    ))
}

/// `psi setup --json`: exit code and report.
fn setup(env: &Podman5Env) -> (i32, Value) {
    report_of(env, env.psi(&["setup", "--json"]).output().unwrap())
}

/// The exit code and report of a `psi setup --json` that printed `out`; it must succeed.
fn report_of(env: &Podman5Env, out: Output) -> (i32, Value) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "setup --json printed no JSON ({e}); stderr: {stderr}\nPodman 5 service: {}\npsi serve: {}",
            env.service_log(),
            env.serve_log()
        )
    });
    let code = out.status.code().unwrap();
    assert_eq!(
        code,
        0,
        "{report}\n{stderr}\nPodman 5 service: {}\npsi serve: {}",
        env.service_log(),
        env.serve_log()
    );
    (code, report)
}

/// The mapping files in psi's state dir (one per secret Podman stored through psi).
fn state_files(env: &Podman5Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn setup_on_podman5_registers_secrets_that_containers_resolve_and_keeps_them() {
    let fake = infisical();
    let Some(env) = env_with(
        &fake,
        "workloads:\n  myapp:\n    secrets:\n      - project: web\n        path: /app\n",
    ) else {
        return;
    };
    // The point of this module: setup talks to a 5.x service, not the host's 4.3.1.
    let version = env.server_version();
    assert!(version.starts_with("5."), "Podman {version}");

    let (_, report) = setup(&env);
    assert_eq!(
        setup_actions(&report, "myapp"),
        [
            "create myapp--API_KEY",
            "create myapp--DB_HOST",
            "create myapp--DB_PASS"
        ]
    );
    let ids = secret_ids(env.podman());
    assert_eq!(
        ids.keys().collect::<Vec<_>>(),
        ["myapp--API_KEY", "myapp--DB_HOST", "myapp--DB_PASS"]
    );
    // Podman 5 ran the shell driver's store command (curl in the chroot) against the host's
    // psi serve: the mapping is on disk under Podman's own ID.
    let mapping = std::fs::read(env.state_dir().join(&ids["myapp--DB_HOST"])).unwrap();
    assert_eq!(
        mapping,
        br#"{"provider": "infisical", "project": "web", "path": "/app", "key": "DB_HOST"}"#
    );
    assert_eq!(
        std::fs::read_to_string(env.systemd_dir().join("myapp.container.d/50-secrets.conf"))
            .unwrap(),
        "[Unit]\nAfter=psi-secrets.service psi-infisical-setup.service\nWants=psi-secrets.service psi-infisical-setup.service\n\n[Container]\nSecret=myapp--API_KEY,type=env,target=API_KEY\nSecret=myapp--DB_HOST,type=env,target=DB_HOST\nSecret=myapp--DB_PASS,type=env,target=DB_PASS\n"
    );

    // A Podman 5 container gets the Infisical values through lookup.
    let out = env.run(
        &[
            "myapp--DB_HOST,type=env,target=DB_HOST",
            "myapp--DB_PASS,type=env,target=DB_PASS",
        ],
        "printf '%s|%s' \"$DB_HOST\" \"$DB_PASS\"",
    );
    assert!(
        out.status.success(),
        "podman run: {}\nservice: {}",
        String::from_utf8_lossy(&out.stderr),
        env.service_log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "db.internal|s3cr3t with spaces"
    );

    // A second setup with nothing changed keeps every secret: same Podman IDs, and no store
    // or delete reached psi (either would add or remove a mapping file).
    let files = state_files(&env);
    assert_eq!(files.len(), 3, "{files:?}");
    let (_, report) = setup(&env);
    assert_eq!(
        setup_actions(&report, "myapp"),
        [
            "keep myapp--API_KEY",
            "keep myapp--DB_HOST",
            "keep myapp--DB_PASS"
        ]
    );
    for workload in report["workloads"].as_array().unwrap() {
        for action in workload["actions"].as_array().unwrap() {
            assert_eq!(action["action"], "keep", "{report}");
        }
    }
    assert_eq!(secret_ids(env.podman()), ids);
    assert_eq!(state_files(&env), files);
    assert_eq!(
        report["workloads"][0]["dropin"]["changed"], false,
        "{report}"
    );
}

#[test]
fn template_workload_registers_at_sign_names_on_podman5() {
    let fake = infisical();
    let Some(env) = env_with(
        &fake,
        "workloads:\n  \"worker@\":\n    depends_on: [redis.service]\n    secrets:\n      - project: web\n        path: /app\n        env: {HOST: DB_HOST, PASSWORD: DB_PASS}\n",
    ) else {
        return;
    };

    let (_, report) = setup(&env);
    assert_eq!(
        setup_actions(&report, "worker@"),
        ["create worker@--DB_HOST", "create worker@--DB_PASS"]
    );
    let ids = secret_ids(env.podman());
    assert_eq!(
        ids.keys().collect::<Vec<_>>(),
        ["worker@--DB_HOST", "worker@--DB_PASS"]
    );
    assert_eq!(
        std::fs::read_to_string(env.systemd_dir().join("worker@.container.d/50-secrets.conf"))
            .unwrap(),
        "[Unit]\nAfter=psi-secrets.service psi-infisical-setup.service redis.service\nWants=psi-secrets.service psi-infisical-setup.service redis.service\n\n[Container]\nSecret=worker@--DB_HOST,type=env,target=HOST\nSecret=worker@--DB_PASS,type=env,target=PASSWORD\n"
    );

    // What a `worker@N.service` instance would get.
    let out = env.run(
        &[
            "worker@--DB_HOST,type=env,target=HOST",
            "worker@--DB_PASS,type=env,target=PASSWORD",
        ],
        "printf '%s|%s' \"$HOST\" \"$PASSWORD\"",
    );
    assert!(
        out.status.success(),
        "podman run: {}\nservice: {}",
        String::from_utf8_lossy(&out.stderr),
        env.service_log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "db.internal|s3cr3t with spaces"
    );

    // Setup recognises `worker@--*` as the template's own secrets on the next run.
    let (_, report) = setup(&env);
    assert_eq!(
        setup_actions(&report, "worker@"),
        ["keep worker@--DB_HOST", "keep worker@--DB_PASS"]
    );
    assert_eq!(secret_ids(env.podman()), ids);
}

/// The workload's three secrets, by name.
const MYAPP: [&str; 3] = ["myapp--API_KEY", "myapp--DB_HOST", "myapp--DB_PASS"];

/// A rotation that changes every mapping of a workload (its folder moved to `/app2`, with
/// other values): setup replaces each secret in place, and lookups by name that loop all
/// through the run never fail; each finds the old value, then the new one.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_on_podman5_replaces_in_place_and_every_lookup_by_name_succeeds() {
    let fake = infisical();
    for (key, value) in [
        ("API_KEY", "key-2"),
        ("DB_HOST", "db2.internal"),
        ("DB_PASS", "n3w s3cr3t"),
    ] {
        fake.set_secret(PROJECT, "prod", "/app2", key, value);
    }
    let Some(env) = env_with(
        &fake,
        "workloads:\n  myapp:\n    secrets:\n      - project: web\n        path: /app\n",
    ) else {
        return;
    };
    setup(&env);
    let old_ids = secret_ids(env.podman());
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, config.replace("path: /app\n", "path: /app2\n")).unwrap();

    let mut run = env.psi(&["setup", "--json"]);
    let (out, lookups) =
        lookups_during(env.api_socket(), &MYAPP, move || run.output().unwrap()).await;
    let (_, report) = report_of(&env, out);
    assert_eq!(
        setup_actions(&report, "myapp"),
        MYAPP.map(|name| format!("replace {name}"))
    );
    assert_eq!(
        report["changes"],
        serde_json::json!({"created": 0, "replaced": 3, "removed": 0, "dropins_written": 0})
    );

    // No lookup failed, and each name's lookups found the old value, then the new one.
    let failed = lookups.failed();
    assert!(
        failed.is_empty(),
        "{} of {} lookups failed: {failed:#?}",
        failed.len(),
        lookups.total()
    );
    let values = [
        ("key-1", "key-2"),
        ("db.internal", "db2.internal"),
        ("s3cr3t with spaces", "n3w s3cr3t"),
    ];
    for (name, (old, new)) in MYAPP.iter().zip(values) {
        let found: Vec<&str> = lookups.0[*name]
            .iter()
            .map(|l| l.found.as_ref().unwrap().as_deref().unwrap())
            .collect();
        let switch = found.iter().position(|v| *v != old).unwrap_or(found.len());
        assert!(
            switch > 0 && switch < found.len() && found[switch..].iter().all(|v| *v == new),
            "{name}: {found:?}"
        );
    }
    eprintln!(
        "podman 5 rotation: {} lookups by name during the run, none failed",
        lookups.total()
    );

    // Every secret has a new Podman ID; psi keeps the new IDs' mappings, and the old IDs'
    // are gone (Podman ran delete on each old ID and store under the new one).
    let new_ids = secret_ids(env.podman());
    assert_eq!(new_ids.keys().collect::<Vec<_>>(), MYAPP);
    for name in MYAPP {
        assert_ne!(new_ids[name], old_ids[name], "{name}");
    }
    let mut expected: Vec<String> = new_ids.values().cloned().collect();
    expected.sort();
    assert_eq!(state_files(&env), expected);
    assert_eq!(
        std::fs::read(env.state_dir().join(&new_ids["myapp--DB_HOST"])).unwrap(),
        br#"{"provider": "infisical", "project": "web", "path": "/app2", "key": "DB_HOST"}"#
    );
    let out = env.run(
        &[
            "myapp--DB_HOST,type=env,target=DB_HOST",
            "myapp--DB_PASS,type=env,target=DB_PASS",
        ],
        "printf '%s|%s' \"$DB_HOST\" \"$DB_PASS\"",
    );
    assert!(
        out.status.success(),
        "podman run: {}\nservice: {}",
        String::from_utf8_lossy(&out.stderr),
        env.service_log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "db2.internal|n3w s3cr3t"
    );

    // The client says how: in place.
    let podman = Podman::new(env.api_socket());
    let listed = podman.list_secrets().await.unwrap();
    let db_host = listed.iter().find(|s| s.name == "myapp--DB_HOST").unwrap();
    let mapping = std::fs::read(env.state_dir().join(&db_host.id)).unwrap();
    let (id, how) = podman
        .replace_secret(
            "myapp--DB_HOST",
            &db_host.id,
            "shell",
            &db_host.driver_options,
            &mapping,
        )
        .await
        .unwrap();
    assert_eq!(how, Replaced::InPlace);
    assert_eq!(secret_ids(env.podman())["myapp--DB_HOST"], id);
    assert!(!env.state_dir().join(&db_host.id).exists());
    assert_eq!(std::fs::read(env.state_dir().join(&id)).unwrap(), mapping);
}
