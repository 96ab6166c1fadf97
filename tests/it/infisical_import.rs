//! `psi infisical import` through the real binary against the fake Infisical, both API
//! generations: what ends up in the fake, and which requests wrote it (v4 batch upsert in
//! chunks of 100; v3 single creates and updates). Plus the fake's own v4 batch update.

use std::process::Output;

use serde_json::{json, Value};

use crate::support::infisical::{FakeInfisical, Fault, Generation, Recorded};
use crate::support::podman::PodmanEnv;
use crate::support::{run_with_stdin, Sandbox};

const PROJECT: &str = "7c1e3a52-2b7d-4f1e-9a0c-5d6e7f8a9b0c";

fn fake(generation: Generation) -> FakeInfisical {
    let fake = FakeInfisical::start(generation);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_project(PROJECT, "import-project");
    fake
}

fn config(sandbox: &Sandbox, fake: &FakeInfisical) -> std::path::PathBuf {
    sandbox.config(&format!(
        "providers:\n  infisical:\n    api_url: {}\n    retries: 0\n    auth:\n      method: universal-auth\n      client_id: client-1\n      client_secret: secret-1\n    projects:\n      app:\n        id: {PROJECT}\n        environment: prod\n",
        fake.url()
    ))
}

/// Runs `psi infisical import ARGS --project app`, `stdin` on stdin.
fn run_import(sandbox: &Sandbox, fake: &FakeInfisical, args: &[&str], stdin: &[u8]) -> Output {
    let config = config(sandbox, fake);
    let mut cmd = sandbox.psi();
    cmd.arg("-c").arg(&config).args(["infisical", "import"]);
    cmd.args(args).args(["--project", "app"]);
    run_with_stdin(&mut cmd, stdin)
}

/// Runs `psi infisical import ARGS --project app --json`, `stdin` on stdin.
fn import(sandbox: &Sandbox, fake: &FakeInfisical, args: &[&str], stdin: &[u8]) -> (Output, Value) {
    let mut args = args.to_vec();
    args.push("--json");
    let out = run_import(sandbox, fake, &args, stdin);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The requests that change something (everything but GETs and logins).
fn writes(requests: &[Recorded]) -> Vec<&Recorded> {
    requests
        .iter()
        .filter(|r| r.method != "GET" && !r.path.starts_with("/api/v1/auth/"))
        .collect()
}

fn value(fake: &FakeInfisical, path: &str, key: &str) -> Option<String> {
    fake.secret(PROJECT, "prod", path, key).map(|(v, _)| v)
}

/// The method and path of each request that changes something.
fn write_shape(fake: &FakeInfisical) -> Vec<(String, String)> {
    writes(&fake.requests())
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The folder exists (it holds KEY_000), so no folder is created.
#[test]
fn v4_upserts_in_chunks_of_100() {
    let fake = fake(Generation::Current);
    fake.set_secret(PROJECT, "prod", "/imp/sub", "KEY_000", "old");
    let sandbox = Sandbox::new();
    let mut env = String::from("# generated\n");
    for i in 0..150 {
        env.push_str(&format!("export KEY_{i:03}=\"value {i}\\n\" # comment\n"));
    }
    let file = sandbox.path().join("big.env");
    std::fs::write(&file, env).unwrap();
    fake.clear_requests();
    let (out, report) = import(
        &sandbox,
        &fake,
        &[
            "env-file",
            file.to_str().unwrap(),
            "--path",
            "/imp/sub/",
            "--conflict",
            "overwrite",
        ],
        b"",
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(
        report["summary"],
        json!({"total": 150, "created": 149, "updated": 1, "unchanged": 0, "skipped": 0,
               "conflicts": 0, "failed": 0})
    );
    assert_eq!(report["folders"], json!([]));
    assert_eq!(value(&fake, "/imp/sub", "KEY_000").unwrap(), "value 0\n");
    assert_eq!(
        fake.secret(PROJECT, "prod", "/imp/sub", "KEY_000")
            .unwrap()
            .1,
        2
    );
    assert_eq!(value(&fake, "/imp/sub", "KEY_149").unwrap(), "value 149\n");
    assert_eq!(fake.keys(PROJECT, "prod", "/imp/sub").len(), 150);

    let requests = fake.requests();
    let writes = writes(&requests);
    assert_eq!(
        write_shape(&fake),
        owned(&[
            ("PATCH", "/api/v4/secrets/batch"),
            ("PATCH", "/api/v4/secrets/batch"),
        ])
    );
    for (batch, size) in writes.iter().zip([100, 50]) {
        let body = batch.body.as_ref().unwrap();
        assert_eq!(body["mode"], "upsert");
        assert_eq!(body["projectId"], PROJECT);
        assert_eq!(body["environment"], "prod");
        assert_eq!(body["secretPath"], "/imp/sub");
        assert_eq!(body["secrets"].as_array().unwrap().len(), size);
    }
    // No value on stderr.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("value 1"));
}

#[test]
fn v3_servers_get_creates_and_updates_one_by_one() {
    let fake = fake(Generation::Legacy2024);
    fake.set_secret(PROJECT, "prod", "/", "EXISTING", "old");
    let sandbox = Sandbox::new();
    fake.clear_requests();
    let (out, report) = import(
        &sandbox,
        &fake,
        &["env-file", "--conflict", "overwrite"],
        b"EXISTING='new $value'\nNEW_ONE=plain # c\nNEW_TWO=\"multi\nline\"\n",
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(
        outcomes(&report),
        [
            ("EXISTING", "updated"),
            ("NEW_ONE", "created"),
            ("NEW_TWO", "created")
        ]
        .map(|(k, o)| (k.to_owned(), o.to_owned()))
    );
    assert_eq!(value(&fake, "/", "EXISTING").unwrap(), "new $value");
    assert_eq!(value(&fake, "/", "NEW_ONE").unwrap(), "plain");
    assert_eq!(value(&fake, "/", "NEW_TWO").unwrap(), "multi\nline");
    let requests = fake.requests();
    let mut shape: Vec<(String, String)> = writes(&requests)
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    shape.sort();
    assert_eq!(
        shape,
        [
            ("PATCH", "/api/v3/secrets/raw/EXISTING"),
            ("POST", "/api/v3/secrets/raw/NEW_ONE"),
            ("POST", "/api/v3/secrets/raw/NEW_TWO"),
        ]
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
    );
    assert!(requests.iter().all(|r| !r.path.contains("/batch")));
}

#[test]
fn conflict_fail_writes_nothing_and_skip_keeps_existing() {
    for generation in [Generation::Current, Generation::Legacy2024] {
        let fake = fake(generation);
        fake.set_secret(PROJECT, "prod", "/app", "A", "old");
        let sandbox = Sandbox::new();
        fake.clear_requests();
        let (out, report) = import(
            &sandbox,
            &fake,
            &["env-file", "--path", "/app"],
            b"A=1\nB=2\n",
        );
        assert_eq!(out.status.code(), Some(1), "{report}");
        assert_eq!(
            outcomes(&report),
            owned(&[("A", "conflict"), ("B", "skipped")])
        );
        assert_eq!(report["summary"]["conflicts"], 1);
        assert_eq!(report["summary"]["failed"], 0);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("nothing was written"), "{stderr}");
        assert!(writes(&fake.requests()).is_empty());
        assert_eq!(fake.keys(PROJECT, "prod", "/app"), ["A"]);

        let (out, report) = import(
            &sandbox,
            &fake,
            &["env-file", "--path", "/app", "--conflict", "skip"],
            b"A=1\nB=2\n",
        );
        assert!(out.status.success(), "{report}");
        assert_eq!(
            outcomes(&report),
            [("A", "skipped"), ("B", "created")].map(|(k, o)| (k.to_owned(), o.to_owned()))
        );
        assert_eq!(value(&fake, "/app", "A").unwrap(), "old");
        assert_eq!(value(&fake, "/app", "B").unwrap(), "2");

        // A key that already holds the imported value is no conflict: running an import
        // again after it stopped half-way carries on.
        fake.clear_requests();
        let (out, report) = import(
            &sandbox,
            &fake,
            &["env-file", "--path", "/app"],
            b"A=old\nB=2\nC=3\n",
        );
        assert!(out.status.success(), "{report}");
        assert_eq!(
            outcomes(&report),
            owned(&[("A", "unchanged"), ("B", "unchanged"), ("C", "created")])
        );
        let created = match generation {
            Generation::Current => ("PATCH", "/api/v4/secrets/batch"),
            Generation::Legacy2024 => ("POST", "/api/v3/secrets/raw/C"),
        };
        assert_eq!(write_shape(&fake), owned(&[created]));
    }
}

#[test]
fn quadlet_environment_lines_are_imported_and_secret_refs_need_resolve() {
    let fake = fake(Generation::Current);
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("web.container");
    std::fs::write(
        &file,
        "[Container]\nImage=x\nEnvironment=A=1 \"B=two words\" C='3'\nEnvironment=D=x\\\n  E=y\nSecret=db-pass,type=env,target=DB_PASS\n",
    )
    .unwrap();
    let (out, report) = import(&sandbox, &fake, &["quadlet", file.to_str().unwrap()], b"");
    assert!(out.status.success(), "{report}");
    let keys: Vec<String> = outcomes(&report).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["A", "B", "C", "D", "E"]);
    assert_eq!(value(&fake, "/", "B").unwrap(), "two words");
    assert_eq!(value(&fake, "/", "C").unwrap(), "3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Secret=db-pass"), "{stderr}");
}

#[test]
fn fake_v4_batch_update_modes() {
    let fake = fake(Generation::Current);
    fake.set_secret(PROJECT, "prod", "/", "OLD", "1");
    let token = {
        let reply = fake.send(
            "POST",
            "/api/v1/auth/universal-auth/login",
            &[],
            Some(&json!({"clientId": "client-1", "clientSecret": "secret-1"})),
        );
        reply.body.unwrap()["accessToken"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let auth = format!("Bearer {token}");
    let body = |mode: &str| {
        json!({"projectId": PROJECT, "environment": "prod", "secretPath": "/", "mode": mode,
               "secrets": [{"secretKey": "OLD", "secretValue": "2"}, {"secretKey": "NEW", "secretValue": "n"}]})
    };
    let reply = fake.send(
        "PATCH",
        "/api/v4/secrets/batch",
        &[("Authorization", &auth)],
        Some(&body("failOnNotFound")),
    );
    assert_eq!(reply.status, 404);
    assert_eq!(value(&fake, "/", "OLD").unwrap(), "1");
    let reply = fake.send(
        "PATCH",
        "/api/v4/secrets/batch",
        &[("Authorization", &auth)],
        Some(&body("ignore")),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(value(&fake, "/", "OLD").unwrap(), "2");
    assert!(value(&fake, "/", "NEW").is_none());
    let reply = fake.send(
        "PATCH",
        "/api/v4/secrets/batch",
        &[("Authorization", &auth)],
        Some(&body("upsert")),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        fake.secret(PROJECT, "prod", "/", "NEW").unwrap(),
        ("n".to_owned(), 1)
    );
    assert_eq!(
        fake.secret(PROJECT, "prod", "/", "OLD").unwrap(),
        ("2".to_owned(), 3)
    );
    // The 2024 server has no v4 route.
    let old = self::fake(Generation::Legacy2024);
    let reply = old.send(
        "PATCH",
        "/api/v4/secrets/batch",
        &[("Authorization", &auth)],
        Some(&body("upsert")),
    );
    assert_eq!(reply.status, 404);
}

/// Podman secrets: a psi shell-driver one resolves through psi's mapping (Podman 4 reveals
/// no values); a file-driver one can be read only where Podman reveals values (Podman 5).
#[test]
fn podman_secrets_through_psi_mappings_or_showsecret() {
    let fake = fake(Generation::Current);
    let providers = format!(
        "providers:\n  systemd-creds: {{}}\n  infisical:\n    api_url: {}\n    retries: 0\n    auth:\n      method: universal-auth\n      client_id: client-1\n      client_secret: secret-1\n    projects:\n      app:\n        id: {PROJECT}\n        environment: prod\n",
        fake.url()
    );
    let Some(mut env) = PodmanEnv::new(&providers) else {
        return;
    };
    env.for_setup();
    let out = env.secret_create("shell-one", b"shell value", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.secret_create("file-one", b"file value", &["--driver", "file"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = env.podman().arg("--version").output().unwrap();
    let podman5 = !String::from_utf8_lossy(&version.stdout).contains("version 4.");

    let out = env
        .psi(&[
            "infisical",
            "import",
            "podman-secret",
            "--all",
            "--project",
            "app",
            "--path",
            "/pod",
            "--json",
        ])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(value(&fake, "/pod", "shell-one").unwrap(), "shell value");
    if podman5 {
        assert!(out.status.success(), "{report}");
        assert_eq!(value(&fake, "/pod", "file-one").unwrap(), "file value");
    } else {
        assert_eq!(out.status.code(), Some(1), "{report}");
        assert_eq!(
            outcomes(&report),
            [("file-one", "failed"), ("shell-one", "created")]
                .map(|(k, o)| (k.to_owned(), o.to_owned()))
        );
        let detail = report["results"][0]["detail"].as_str().unwrap();
        assert!(detail.contains("does not reveal"), "{detail}");
        assert!(value(&fake, "/pod", "file-one").is_none());
    }
    assert!(!String::from_utf8_lossy(&out.stderr).contains("value"));

    // A quadlet's Secret= reference, imported under its target= name.
    let quadlet = env.sandbox.path().join("web.container");
    std::fs::write(
        &quadlet,
        "[Container]\nEnvironment=PLAIN=1\nSecret=shell-one,type=env,target=FROM_QUADLET\n",
    )
    .unwrap();
    let out = env
        .psi(&[
            "infisical",
            "import",
            "quadlet",
            quadlet.to_str().unwrap(),
            "--resolve-secrets",
            "--project",
            "app",
            "--path",
            "/q",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(value(&fake, "/q", "FROM_QUADLET").unwrap(), "shell value");
    assert_eq!(value(&fake, "/q", "PLAIN").unwrap(), "1");
}

/// A failed chunk fails its keys only; the others are written; exit status 1; the table
/// (no --json) names outcomes, never values.
#[test]
fn a_failed_chunk_fails_its_keys_and_the_table_shows_it() {
    let fake = fake(Generation::Current);
    fake.inject(
        "PATCH",
        "/api/v4/secrets/batch",
        Fault::Status {
            status: 400,
            body: json!({"statusCode": 400, "error": "BadRequest", "message": "nope"}),
            retry_after: None,
        },
        1,
    );
    let sandbox = Sandbox::new();
    let mut env = String::new();
    for i in 0..101 {
        env.push_str(&format!("K{i:03}=secret-{i}\n"));
    }
    let config = config(&sandbox, &fake);
    let mut cmd = sandbox.psi();
    cmd.arg("-c").arg(&config);
    cmd.args(["infisical", "import", "env-file", "--project", "app"]);
    let out = run_with_stdin(&mut cmd, env.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "Total: 101 Created: 1 Updated: 0 Unchanged: 0 Skipped: 0 Conflicts: 0 Failed: 100"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("K000  failed"), "{stdout}");
    assert!(stdout.contains("nope"), "{stdout}");
    assert!(!stdout.contains("secret-"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("secret-"));
    assert_eq!(fake.keys(PROJECT, "prod", "/"), ["K100"]);
}

/// Folders are created only where missing: an import into an existing folder (with or
/// without secrets of its own) posts no folder; one below an existing folder creates just
/// the missing ones, each under its parent, and the report lists them.
#[test]
fn only_missing_folders_are_created() {
    for generation in [Generation::Current, Generation::Legacy2024] {
        let fake = fake(generation);
        fake.set_secret(PROJECT, "prod", "/app", "KEEP", "k");
        // /app/empty exists but holds no secret of its own.
        fake.set_secret(PROJECT, "prod", "/app/empty/below", "X", "x");
        let sandbox = Sandbox::new();
        for path in ["/app", "/app/empty", "/"] {
            fake.clear_requests();
            let (out, report) = import(&sandbox, &fake, &["env-file", "--path", path], b"A=1\n");
            assert!(out.status.success(), "{path}: {report}");
            let folder_posts = writes(&fake.requests())
                .iter()
                .filter(|r| r.path == "/api/v1/folders")
                .count();
            assert_eq!(folder_posts, 0, "{path}: {:?}", write_shape(&fake));
            assert_eq!(report["folders"], json!([]), "{path}");
            assert_eq!(value(&fake, path, "A").unwrap(), "1");
        }

        fake.clear_requests();
        let (out, report) = import(
            &sandbox,
            &fake,
            &["env-file", "--path", "/app/new/leaf"],
            b"A=1\n",
        );
        assert!(out.status.success(), "{report}");
        assert_eq!(
            report["folders"],
            json!([
                {"path": "/app/new", "outcome": "created", "detail": "missing"},
                {"path": "/app/new/leaf", "outcome": "created", "detail": "missing"},
            ])
        );
        let requests = fake.requests();
        let folders: Vec<(&str, &str)> = writes(&requests)
            .iter()
            .filter(|r| r.path == "/api/v1/folders")
            .map(|r| {
                let b = r.body.as_ref().unwrap();
                (b["path"].as_str().unwrap(), b["name"].as_str().unwrap())
            })
            .collect();
        assert_eq!(folders, [("/app", "new"), ("/app/new", "leaf")]);
        assert_eq!(value(&fake, "/app/new/leaf", "A").unwrap(), "1");
    }
}

/// `--conflict overwrite` sends no write for a key whose stored value equals the imported
/// one (compared unexpanded: a stored reference is not its expansion) and reports it
/// `unchanged`; a second identical run writes nothing at all.
#[test]
fn overwrite_leaves_equal_values_alone() {
    for generation in [Generation::Current, Generation::Legacy2024] {
        let fake = fake(generation);
        fake.set_secret(PROJECT, "prod", "/app", "SAME", "same");
        fake.set_secret(PROJECT, "prod", "/app", "REF", "${SAME}-x");
        fake.set_secret(PROJECT, "prod", "/app", "DIFF", "old");
        let sandbox = Sandbox::new();
        let input = b"SAME=same\nREF='${SAME}-x'\nDIFF=new\nNEW=n\n";
        let args = ["env-file", "--path", "/app", "--conflict", "overwrite"];
        fake.clear_requests();
        let (out, report) = import(&sandbox, &fake, &args, input);
        assert!(out.status.success(), "{report}");
        assert_eq!(
            outcomes(&report),
            owned(&[
                ("DIFF", "updated"),
                ("NEW", "created"),
                ("REF", "unchanged"),
                ("SAME", "unchanged"),
            ])
        );
        assert_eq!(report["summary"]["unchanged"], 2);
        match generation {
            Generation::Current => {
                assert_eq!(
                    write_shape(&fake),
                    owned(&[("PATCH", "/api/v4/secrets/batch")])
                );
                let requests = fake.requests();
                let keys: Vec<&str> = writes(&requests)[0].body.as_ref().unwrap()["secrets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["secretKey"].as_str().unwrap())
                    .collect();
                assert_eq!(keys, ["DIFF", "NEW"]);
            }
            Generation::Legacy2024 => {
                let mut shape = write_shape(&fake);
                shape.sort();
                assert_eq!(
                    shape,
                    owned(&[
                        ("PATCH", "/api/v3/secrets/raw/DIFF"),
                        ("POST", "/api/v3/secrets/raw/NEW"),
                    ])
                );
            }
        }
        for key in ["SAME", "REF"] {
            assert_eq!(
                fake.secret(PROJECT, "prod", "/app", key).unwrap().1,
                1,
                "{key}"
            );
        }

        // Again, as a table: everything is unchanged now, and nothing is sent.
        fake.clear_requests();
        let out = run_import(&sandbox, &fake, &args, input);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("SAME  unchanged"), "{stdout}");
        assert!(
            stdout.contains("Total: 4 Created: 0 Updated: 0 Unchanged: 4 Skipped: 0"),
            "{stdout}"
        );
        assert!(write_shape(&fake).is_empty());
    }
}

/// A dry run's report is the real run's, but for `dry_run` (JSON) or the "Dry run" marker
/// (table), and the dry run sends no write. Each case runs against two fakes in the same
/// state: one for the dry run, one for the real run.
#[test]
fn a_dry_run_reports_what_the_real_run_does() {
    type Setup = fn(&FakeInfisical);
    fn populated(fake: &FakeInfisical) {
        fake.set_secret(PROJECT, "prod", "/app", "SAME", "same");
        fake.set_secret(PROJECT, "prod", "/app", "DIFF", "old");
    }
    fn empty(_: &FakeInfisical) {}
    let input: &[u8] = b"SAME=same\nDIFF=new\nNEW=n\n";
    let cases: [(Setup, &[&str], Option<i32>); 5] = [
        (
            populated,
            &["--path", "/app", "--conflict", "overwrite"],
            Some(0),
        ),
        (
            populated,
            &["--path", "/app", "--conflict", "skip"],
            Some(0),
        ),
        (populated, &["--path", "/app"], Some(1)),
        (populated, &["--path", "/app/new/sub"], Some(0)),
        (empty, &["--path", "/fresh"], Some(0)),
    ];
    for generation in [Generation::Current, Generation::Legacy2024] {
        for (setup, options, code) in cases {
            let args: Vec<&str> = ["env-file"].iter().chain(options).copied().collect();
            let mut dry_args = args.clone();
            dry_args.push("--dry-run");
            let context = format!("{generation:?} {args:?}");

            // JSON.
            let (dry_fake, real_fake) = (fake(generation), fake(generation));
            setup(&dry_fake);
            setup(&real_fake);
            let sandbox = Sandbox::new();
            dry_fake.clear_requests();
            let (dry_out, mut dry) = import(&sandbox, &dry_fake, &dry_args, input);
            assert!(write_shape(&dry_fake).is_empty(), "{context}");
            let (real_out, mut real) = import(&sandbox, &real_fake, &args, input);
            assert_eq!(dry_out.status.code(), code, "{context}: {dry}");
            assert_eq!(real_out.status.code(), code, "{context}: {real}");
            assert_eq!(dry["dry_run"], true, "{context}");
            assert_eq!(real["dry_run"], false, "{context}");
            dry.as_object_mut().unwrap().remove("dry_run");
            real.as_object_mut().unwrap().remove("dry_run");
            assert_eq!(dry, real, "{context}");

            // The table.
            let (dry_fake, real_fake) = (fake(generation), fake(generation));
            setup(&dry_fake);
            setup(&real_fake);
            dry_fake.clear_requests();
            let dry_out = run_import(&sandbox, &dry_fake, &dry_args, input);
            assert!(write_shape(&dry_fake).is_empty(), "{context}");
            let real_out = run_import(&sandbox, &real_fake, &args, input);
            let dry_text = String::from_utf8_lossy(&dry_out.stdout);
            let real_text = String::from_utf8_lossy(&real_out.stdout);
            assert!(
                dry_text.contains("Dry run (nothing written). "),
                "{dry_text}"
            );
            assert_eq!(
                dry_text.replace("Dry run (nothing written). ", ""),
                real_text,
                "{context}"
            );
        }
    }
}

/// A write that fails is named on stderr and in its keys' rows: what (create, update,
/// upsert, create folder), which key and which folder, and the server's answer, never a
/// value.
#[test]
fn failed_writes_name_the_write() {
    let rejected = |message: &str| Fault::Status {
        status: 400,
        body: json!({"statusCode": 400, "error": "BadRequest", "message": message}),
        retry_after: None,
    };
    let check = |fake: &FakeInfisical, args: &[&str], expected: &str, message: &str| {
        let sandbox = Sandbox::new();
        let (out, report) = import(&sandbox, fake, args, b"DB_PASS=hunter2\nOK=fine-value\n");
        assert_eq!(out.status.code(), Some(1), "{report}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = format!("import failed at {expected}: ");
        assert!(stderr.contains(&line), "{line} not in {stderr}");
        assert!(stderr.contains(message), "{stderr}");
        let row = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == "DB_PASS")
            .unwrap()
            .clone();
        assert_eq!(row["outcome"], "failed", "{report}");
        let detail = row["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{detail}");
        for text in [&stderr, &String::from_utf8_lossy(&out.stdout)] {
            assert!(
                !text.contains("hunter2") && !text.contains("fine-value"),
                "{text}"
            );
        }
        report
    };

    // 2024 server: the single create and update routes.
    let old = fake(Generation::Legacy2024);
    old.set_secret(PROJECT, "prod", "/app", "KEEP", "k");
    old.inject(
        "POST",
        "/api/v3/secrets/raw/DB_PASS",
        rejected("Secret already exist"),
        1,
    );
    let report = check(
        &old,
        &["env-file", "--path", "/app"],
        "create DB_PASS in prod:/app",
        "Secret already exist",
    );
    assert_eq!(
        outcomes(&report),
        owned(&[("DB_PASS", "failed"), ("OK", "created")])
    );
    old.set_secret(PROJECT, "prod", "/app", "DB_PASS", "old");
    old.inject("PATCH", "/api/v3/secrets/raw/DB_PASS", Fault::Close, 1);
    check(
        &old,
        &["env-file", "--path", "/app", "--conflict", "overwrite"],
        "update DB_PASS in prod:/app",
        "PATCH /api/v3/secrets/raw/DB_PASS",
    );

    // Newest server: the batch names its keys.
    let fake = fake(Generation::Current);
    fake.set_secret(PROJECT, "prod", "/app", "KEEP", "k");
    fake.inject("PATCH", "/api/v4/secrets/batch", rejected("nope"), 1);
    check(
        &fake,
        &["env-file", "--path", "/app"],
        "upsert 2 keys DB_PASS..OK in prod:/app",
        "nope",
    );

    // A folder that cannot be created: no key is written.
    fake.inject("POST", "/api/v1/folders", rejected("Folder trouble"), 1);
    let report = check(
        &fake,
        &["env-file", "--path", "/new/sub"],
        "create folder prod:/new",
        "Folder trouble",
    );
    assert_eq!(report["folders"][0]["outcome"], "failed");
    assert_eq!(report["folders"][1]["outcome"], "skipped");
    assert_eq!(report["summary"]["failed"], 2);
    assert!(fake.keys(PROJECT, "prod", "/new/sub").is_empty());
}
