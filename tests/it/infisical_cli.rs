//! `psi infisical login|env|write-file` and `psi run`, through the real binary against the
//! fake Infisical.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::support::infisical::{FakeInfisical, Fault, Generation};
use crate::support::{child_env, Sandbox};

const PROJECT: &str = "0b6f6d0e-6a55-4d5e-8f5e-1f2a3b4c5d6e";
const OTHER: &str = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f";

/// Values that shell quoting gets wrong if anything does.
const TRICKY: &[(&str, &str)] = &[
    ("QUOTE", "it's \"quoted\" ''"),
    ("NEWLINES", "line1\nline2\n\nline4\n"),
    ("DOLLAR", "$HOME ${PATH} $(echo pwned) `id`"),
    ("BACKSLASH", "a\\b\\\\c\\n\\'"),
    ("UNICODE", "héllo wörld ✓ 日本"),
    // The server trims values (the fake as Infisical), so spaces only inside.
    ("SPACES", "inner  spaces\tand a tab; \x01 control"),
];

fn fake() -> FakeInfisical {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_universal_auth("client-2", "secret-2", 3600, 86400);
    fake.add_project(PROJECT, "web-project");
    fake.add_project(OTHER, "other-project");
    fake.set_secret(PROJECT, "prod", "/app", "DB_HOST", "db.internal");
    fake.set_secret(PROJECT, "prod", "/app", "DB_PASS", "s3cr3t with spaces");
    fake.set_secret(PROJECT, "prod", "/app", "bad-name", "x");
    fake.set_secret(PROJECT, "staging", "/app", "DB_HOST", "db.staging");
    for (key, value) in TRICKY {
        fake.set_secret(PROJECT, "prod", "/tricky", key, value);
    }
    fake.set_secret(PROJECT, "prod", "/files", "CERT_B64", "aGVsbG8Kd29ybGQ=");
    fake.set_secret(PROJECT, "prod", "/files", "PLAIN", "plain-value");
    fake
}

/// Config: global auth client-1; project `web` on it, project `other` with its own auth
/// (client-2, or `other_secret`), and workload `app` taking DB_HOST as DATABASE.
fn sandbox(fake: &FakeInfisical, other_secret: &str) -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.config(&format!(
        "providers:\n  infisical:\n    api_url: {}\n    auth:\n      method: universal-auth\n      client_id: client-1\n      client_secret: secret-1\n    projects:\n      web:\n        id: {PROJECT}\n        environment: prod\n      other:\n        id: {OTHER}\n        environment: prod\n        auth:\n          method: universal-auth\n          client_id: client-2\n          client_secret: {other_secret}\nworkloads:\n  app:\n    secrets:\n      - project: web\n        path: /app\n        env:\n          DATABASE: DB_HOST\n",
        fake.url()
    ));
    sandbox
}

fn psi(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox
        .psi()
        .arg("--config")
        .arg(sandbox.path().join("config.yaml"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn login_contacts_infisical_every_time_unless_cached() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let out = psi(&sandbox, &["infisical", "login"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "  OK global\n  OK project:other\nAll auth methods verified.\n"
    );
    assert_eq!(fake.logins(), 2);

    // Again: fresh logins, not the cached tokens.
    let out = psi(&sandbox, &["infisical", "login"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fake.logins(), 4);

    // --cached: the tokens cached by the last run are good enough.
    let out = psi(&sandbox, &["infisical", "login", "--cached"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fake.logins(), 4);
}

#[test]
fn login_reports_a_wrong_secret_and_exits_1() {
    let fake = fake();
    let sandbox = sandbox(&fake, "wrong-secret");
    let out = psi(&sandbox, &["infisical", "login"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("  OK global\n"), "{stdout}");
    assert!(stdout.contains("  FAIL project:other: "), "{stdout}");
    assert!(!stdout.contains("wrong-secret") && !text(&out.stderr).contains("wrong-secret"));
}

#[test]
fn env_export_round_trips_through_the_shell() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let out = psi(
        &sandbox,
        &["infisical", "env", "--project", "web", "--path", "/tricky"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = sandbox.path().join("exports.sh");
    std::fs::write(&file, &out.stdout).unwrap();
    for (key, value) in TRICKY {
        let got = Command::new("sh")
            .arg("-c")
            .arg(format!("eval \"$(cat \"$1\")\"; printf %s \"${key}\""))
            .arg("sh")
            .arg(&file)
            .env_remove(key)
            .output()
            .unwrap();
        assert!(got.status.success(), "{}", text(&got.stderr));
        assert_eq!(text(&got.stdout), *value, "{key}");
    }
}

#[test]
fn env_skips_keys_that_are_not_shell_names() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let out = psi(
        &sandbox,
        &["infisical", "env", "--project", "web", "--path", "/app"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        "export DB_HOST='db.internal'\nexport DB_PASS='s3cr3t with spaces'\n"
    );
    assert!(
        text(&out.stderr).contains("bad-name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn env_formats_and_environment_override() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let out = psi(
        &sandbox,
        &[
            "infisical",
            "env",
            "--project",
            "web",
            "--path",
            "/app",
            "--format",
            "env",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("DB_PASS=s3cr3t with spaces\n"));

    let out = psi(
        &sandbox,
        &[
            "infisical",
            "env",
            "--project",
            "web",
            "--path",
            "/tricky",
            "--format",
            "env",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("NEWLINES"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("line1"));

    let out = psi(
        &sandbox,
        &[
            "infisical",
            "env",
            "--project",
            "web",
            "--path",
            "/tricky",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (key, value) in TRICKY {
        assert_eq!(json[key], *value);
    }

    let out = psi(
        &sandbox,
        &[
            "infisical",
            "env",
            "--project",
            "web",
            "--path",
            "/app",
            "--environment",
            "staging",
            "--format",
            "env",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "DB_HOST=db.staging\n");
}

/// Infisical answers the listing with a 429 once; `Retry-After: 0`, so nothing waits.
fn rate_limited_once(fake: &FakeInfisical) {
    fake.inject(
        "GET",
        "/api/v4/secrets",
        Fault::Status {
            status: 429,
            body: serde_json::json!({"statusCode": 429, "error": "Too Many Requests", "message": "Rate limit exceeded, retry in 1 minute"}),
            retry_after: Some("0".into()),
        },
        1,
    );
}

const ENV_APP: &[&str] = &["infisical", "env", "--project", "web", "--path", "/app"];

#[test]
fn a_retry_is_a_warning_at_the_default_level() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    rate_limited_once(&fake);
    let out = psi(&sandbox, ENV_APP);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let warnings: Vec<serde_json::Value> = stderr
        .lines()
        // Log events are JSON lines; `env`'s own notes ("skipping 'bad-name'") are not.
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["level"] == "WARN" && event.get("route").is_some())
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let warning = &warnings[0];
    assert_eq!(warning["route"], "GET /api/v4/secrets");
    assert_eq!(warning["wait_ms"], 0);
    assert_eq!(
        warning["reason"],
        "HTTP 429 Too Many Requests: Rate limit exceeded, retry in 1 minute"
    );
    assert_eq!(
        warning["message"],
        "GET /api/v4/secrets was rate-limited (HTTP 429); waiting 0 s (Retry-After) before retry 1 of 3"
    );
    // The route is the path: the query (project, environment, folder) stays out of the log.
    assert!(!stderr.contains("secretPath"), "{stderr}");
}

/// `command` run with a terminal as its stdin, stdout and stderr (util-linux `script`);
/// what the terminal showed, `\r\n` line ends and all.
fn on_terminal(command: &Command) -> Output {
    assert!(crate::support::require("script"));
    let line: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| {
            shlex::try_quote(arg.to_str().unwrap())
                .unwrap()
                .into_owned()
        })
        .collect();
    let mut script = Command::new("script");
    script
        .args(["--quiet", "--return", "--flush", "--command"])
        .arg(line.join(" "))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => script.env(name, value),
            None => script.env_remove(name),
        };
    }
    script.output().unwrap()
}

#[test]
fn on_a_terminal_a_retry_is_one_plain_line() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    rate_limited_once(&fake);
    let mut command = sandbox.psi();
    command
        .arg("--config")
        .arg(sandbox.path().join("config.yaml"))
        .args(ENV_APP);
    let out = on_terminal(&command);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let lines: Vec<&str> = shown
        .lines()
        .filter(|line| line.contains("rate-limited"))
        .collect();
    assert_eq!(lines.len(), 1, "{shown}");
    assert!(lines[0].contains("WARN"), "{shown}");
    assert!(
        lines[0].contains(
            "GET /api/v4/secrets was rate-limited (HTTP 429); waiting 0 s (Retry-After) before retry 1 of 3"
        ),
        "{shown}"
    );
    assert!(!lines[0].contains('{'), "not JSON on a terminal: {shown}");
    assert!(shown.contains("export DB_HOST='db.internal'"), "{shown}");
}

#[test]
fn env_unknown_project_lists_the_aliases() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let out = psi(&sandbox, &["infisical", "env", "--project", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("nope") && stderr.contains("other, web"),
        "{stderr}"
    );
}

#[test]
fn write_file_plain_and_base64_with_mode() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let target = sandbox.path().join("out/sub/cert.pem");
    let out = psi(
        &sandbox,
        &[
            "infisical",
            "write-file",
            "CERT_B64",
            target.to_str().unwrap(),
            "--project",
            "web",
            "--secret-path",
            "/files",
            "--base64",
            "--mode",
            "0640",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("Wrote {}", target.display())));
    assert_eq!(std::fs::read(&target).unwrap(), b"hello\nworld");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);

    let plain = sandbox.path().join("plain");
    let out = psi(
        &sandbox,
        &[
            "infisical",
            "write-file",
            "PLAIN",
            plain.to_str().unwrap(),
            "--project",
            "web",
            "--secret-path",
            "/files",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&plain).unwrap(), b"plain-value");
    let mode = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);

    let out = psi(
        &sandbox,
        &[
            "infisical",
            "write-file",
            "PLAIN",
            "x",
            "--project",
            "web",
            "--mode",
            "rw-r--r--",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// `psi run --project web --path /app [EXTRA...] -- sh -c SCRIPT` on a fresh fake.
fn run_app_folder(extra: &[&str], script: &str) -> std::process::Output {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let mut args = vec!["run", "--project", "web", "--path", "/app"];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", script]);
    psi(&sandbox, &args)
}

#[test]
fn run_puts_a_folder_in_the_environment() {
    let out = run_app_folder(&[], "printf %s \"$DB_HOST|$DB_PASS\"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "db.internal|s3cr3t with spaces");
}

#[test]
fn run_propagates_the_exit_code() {
    let out = run_app_folder(&[], "exit 7");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
}

#[test]
fn run_env_selects_and_renames() {
    let out = run_app_folder(
        &["--env", "X=DB_HOST"],
        "printf %s \"$X|${DB_HOST-unset}|${DB_PASS-unset}\"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "db.internal|unset|unset");
}

#[test]
fn run_withholds_psi_secrets_and_keeps_the_callers_environment() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let out = child_env::caller_env(&mut sandbox.psi())
        .arg("--config")
        .arg(sandbox.path().join("config.yaml"))
        .args(["run", "--project", "web", "--path", "/app"])
        .args(["--env", "X=DB_HOST", "--", "env", "-0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let env = child_env::parse(&out.stdout);
    for (name, _) in child_env::SECRETS {
        assert!(
            !env.contains_key(name),
            "psi run's command inherited {name}"
        );
    }
    // It takes psi's place and acts for the caller: the rest of the caller's environment stays.
    for (name, value) in child_env::PSI_ONLY.iter().chain([&child_env::CALLER]) {
        assert_eq!(env.get(*name).map(String::as_str), Some(*value), "{name}");
    }
    assert_eq!(env.get("X").map(String::as_str), Some("db.internal"));
    assert!(!env.contains_key("DB_HOST") && !env.contains_key("DB_PASS"));
}

#[test]
fn run_a_workload() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    let out = psi(
        &sandbox,
        &[
            "run",
            "--workload",
            "app",
            "--",
            "sh",
            "-c",
            "printf %s \"$DATABASE|${DB_HOST-unset}\"",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "db.internal|unset");
    assert!(!sandbox.path().join("state").join("app--DB_HOST").exists());
}

#[test]
fn run_usage_errors_exit_2() {
    let fake = fake();
    let sandbox = sandbox(&fake, "secret-2");
    for args in [
        &["run", "--", "true"][..],
        &["run", "--workload", "app", "--path", "/app", "--", "true"],
        &["run", "--project", "web"],
        &["run", "--project", "nope", "--", "true"],
        &[
            "run",
            "--project",
            "web",
            "--env",
            "1X=DB_HOST",
            "--",
            "true",
        ],
    ] {
        let out = psi(&sandbox, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A key the folder does not have: a failure naming it, the command never runs.
    let out = psi(
        &sandbox,
        &[
            "run",
            "--project",
            "web",
            "--path",
            "/app",
            "--env",
            "X=NOPE",
            "--",
            "sh",
            "-c",
            "echo ran",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("NOPE"));
    assert!(out.stdout.is_empty());
}
