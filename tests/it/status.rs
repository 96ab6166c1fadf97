//! `psi status [--json]` end to end: a real `psi serve` on the sandbox socket, real setup
//! runs against Podman and the fake Infisical, psi.conf from `psi install`. Healthy exits 0;
//! each kind of trouble exits 1 with its reason, on stdout and in `problems`.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::infisical::{FakeInfisical, Generation};
use crate::support::podman::PodmanEnv;
use crate::support::Sandbox;

const PROJECT: &str = "5d2c1b0a-9e8f-4a7b-8c6d-5e4f3a2b1c0d";

fn infisical() -> FakeInfisical {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_project(PROJECT, "web");
    fake.set_secret(PROJECT, "prod", "/app", "DB_HOST", "db.internal");
    fake.set_secret(PROJECT, "prod", "/app", "DB_PASS", "status-pass-1");
    fake
}

fn providers(fake: &FakeInfisical) -> String {
    format!(
        "providers:\n  infisical:\n    api_url: {}\n    retries: 0\n    timeout: 2s\n    auth: {{method: universal-auth, client_id: client-1, client_secret: secret-1}}\n    projects:\n      web: {{id: {PROJECT}, environment: prod}}\n",
        fake.url()
    )
}

/// Runs `psi status ARGS...` with psi.conf at `conf`.
fn status(env: &PodmanEnv, conf: &Path, args: &[&str]) -> Output {
    let mut all = vec!["status", "--driver-conf", conf.to_str().unwrap()];
    all.extend_from_slice(args);
    env.psi(&all).output().unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "psi status --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// psi.conf as `psi install` writes it for this environment's config, in the sandbox.
fn install(env: &PodmanEnv) -> PathBuf {
    let conf = env.sandbox.path().join("psi.conf");
    let out = env
        .psi(&["install", "--output", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

fn run_setup(env: &PodmanEnv) -> Output {
    env.psi(&["setup"]).output().unwrap()
}

#[test]
fn a_healthy_host_exits_0_then_a_stale_cache_and_serve_down_exit_1() {
    let fake = infisical();
    let creds = tempfile::Builder::new()
        .prefix("psi-creds.")
        .tempdir()
        .unwrap();
    std::fs::write(creds.path().join("psi-cache-key"), [7u8; 32]).unwrap();
    let config = format!(
        "{}cache:\n  enabled: true\n  backend: tpm\n  watch_interval: 100ms\nworkloads:\n  myapp:\n    secrets:\n      - project: web\n        path: /app\n",
        providers(&fake)
    );
    let Some(mut env) = PodmanEnv::with_env(
        &config,
        &[("CREDENTIALS_DIRECTORY", creds.path().as_os_str())],
    ) else {
        return;
    };
    env.for_setup();
    let conf = install(&env);

    // Before any setup: it never ran, and serve has no cache file to load.
    let before = status(&env, &conf, &["--json"]);
    assert_eq!(before.status.code(), Some(1));
    let problems = json(&before)["problems"].to_string();
    assert!(
        problems.contains("psi setup has never run (no record), and 1 workload(s) are configured"),
        "{problems}"
    );

    let setup = run_setup(&env);
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    env.serve.wait_for_log(
        "the cache load after setup",
        std::time::Duration::from_secs(30),
        |log| {
            log.lines().any(|line| {
                line.contains(r#""event":"cache.load","outcome":"success""#)
                    && line.contains(r#""entries":2"#)
            })
        },
    );

    // Healthy: exit 0, the screen says so part by part.
    let healthy = status(&env, &conf, &[]);
    let text = String::from_utf8_lossy(&healthy.stdout).into_owned();
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let socket = env.sandbox.socket();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "psi status: healthy");
    assert_eq!(
        lines[2],
        format!(
            "Serve         reachable on {}; cache loaded, 2 entries",
            socket.display()
        )
    );
    let cache_file = env.state_dir().join("cache.enc");
    assert!(
        lines[3].starts_with(&format!("Cache         {} written ", cache_file.display())),
        "{text}"
    );
    assert!(
        lines[3].ends_with("ago (refresh every 1h + up to 5m; stale after 2h 5m)"),
        "{text}"
    );
    assert!(lines[4].starts_with("Last setup    succeeded "), "{text}");
    assert_eq!(
        lines[5],
        "  myapp  ok: 2 created, 0 replaced, 0 removed, 0 kept"
    );
    assert!(lines[6].starts_with("Timers"), "{text}");
    assert!(
        lines[7].starts_with("  psi-infisical-refresh.timer  "),
        "{text}"
    );
    assert_eq!(lines[8], "Certificates  none configured");
    assert!(
        lines[9].starts_with(&format!("Driver        {}: ", conf.display()))
            && lines[9].ends_with(&format!(
                " on {} (as psi install writes it)",
                socket.display()
            )),
        "{text}"
    );
    assert_eq!(lines.len(), 10, "{text}");

    // The same as JSON: its shape.
    let report = json(&status(&env, &conf, &["--json"]));
    assert_eq!(report["healthy"], true);
    assert_eq!(report["problems"], serde_json::json!([]));
    let keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "healthy",
            "problems",
            "checked_at",
            "serve",
            "cache",
            "setup",
            "timers",
            "certificates",
            "driver"
        ]
    );
    assert_eq!(report["serve"]["reachable"], true);
    assert_eq!(report["serve"]["cache"]["cache"], "loaded");
    assert_eq!(report["serve"]["cache"]["entries"], 2);
    assert_eq!(report["cache"]["configured"], true);
    assert_eq!(report["cache"]["stale"], false);
    assert_eq!(report["cache"]["stale_after_seconds"], 7500.0);
    assert!(report["cache"]["age_seconds"].as_f64().unwrap() < 600.0);
    let run = &report["setup"]["last_run"];
    assert_eq!(run["success"], true);
    assert_eq!(run["workloads"][0]["workload"], "myapp");
    assert_eq!(run["workloads"][0]["created"], 2);
    assert_eq!(
        report["timers"]["units"][0]["unit"],
        "psi-infisical-refresh.timer"
    );
    assert_eq!(report["driver"]["present"], true);
    assert_eq!(report["driver"]["current"], true);
    assert_eq!(report["driver"]["socket"], socket.to_str().unwrap());

    // cache.enc last written three hours ago: more than twice the interval plus the delay.
    let touched = std::process::Command::new("touch")
        .args(["-d", "3 hours ago"])
        .arg(&cache_file)
        .status()
        .unwrap();
    assert!(touched.success());
    let stale = status(&env, &conf, &[]);
    let text = String::from_utf8_lossy(&stale.stdout).into_owned();
    assert_eq!(stale.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("psi status: 1 problem(s) need attention\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nNeeds attention:\n  - cache: {} was written 3h ago, more than twice cache.refresh_interval (1h) plus cache.refresh_randomized_delay (5m)", cache_file.display())),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&stale.stderr).contains("1 problem(s) need attention"));

    // Serve down: exit 1 with the reason.
    env.serve.stop();
    let down = status(&env, &conf, &["--json"]);
    assert_eq!(down.status.code(), Some(1));
    let report = json(&down);
    assert_eq!(report["healthy"], false);
    assert_eq!(report["serve"]["reachable"], false);
    assert_eq!(report["serve"]["cache"], Value::Null);
    let first = report["problems"][0].as_str().unwrap();
    assert!(
        first.starts_with(&format!(
            "psi serve does not answer on {}: ",
            socket.display()
        )),
        "{first}"
    );
    let everything = format!(
        "{}{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&healthy.stdout)
    );
    for secret in ["status-pass-1", "db.internal", "secret-1"] {
        assert!(!everything.contains(secret), "{secret} in psi status");
    }
}

#[test]
fn a_failed_setup_exits_1_naming_the_workload() {
    let fake = infisical();
    let config = format!(
        "{}workloads:\n  broken:\n    secrets:\n      - project: web\n        path: /app\n        env: {{X: NO_SUCH_KEY}}\n  good:\n    secrets:\n      - project: web\n        path: /app\n        env: {{HOST: DB_HOST}}\n",
        providers(&fake)
    );
    let Some(mut env) = PodmanEnv::new(&config) else {
        return;
    };
    env.for_setup();
    let conf = install(&env);
    assert_eq!(run_setup(&env).status.code(), Some(1));

    let out = status(&env, &conf, &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("\nLast setup    FAILED "), "{text}");
    assert!(text.contains("\n  broken  failed: 0 created"), "{text}");
    assert!(text.contains("\n  good    ok: 1 created"), "{text}");
    assert!(text.contains("Cache         not configured"), "{text}");
    let (_, attention) = text.split_once("\nNeeds attention:\n").unwrap();
    let problems: Vec<&str> = attention.lines().collect();
    assert_eq!(problems.len(), 1, "{text}");
    assert!(
        problems[0].starts_with("  - setup: the last run (")
            && problems[0].ends_with(") failed for workload(s) broken; psi setup shows why"),
        "{text}"
    );

    let report = json(&status(&env, &conf, &["--json"]));
    assert_eq!(report["healthy"], false);
    assert_eq!(report["setup"]["last_run"]["success"], false);
    assert_eq!(
        report["setup"]["last_run"]["workloads"][0]["status"],
        "failed"
    );
    assert_eq!(
        report["setup"]["workloads_configured"],
        serde_json::json!(["broken", "good"])
    );
}

#[test]
fn without_serve_or_psi_conf_each_reason_is_a_line_and_a_config_error_exits_2() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let conf = sandbox.path().join("psi.conf");
    let out = sandbox
        .psi()
        .args(["-c", config.to_str().unwrap(), "status", "--json"])
        .args(["--driver-conf", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{report}");
    assert!(problems[0]
        .as_str()
        .unwrap()
        .starts_with("psi serve does not answer on "));
    assert_eq!(
        problems[1],
        format!(
            "psi.conf: {} does not exist, so Podman's shell driver does not reach psi: run psi install",
            conf.display()
        )
    );
    // Nothing configured: no setup, cache, timer or certificate to judge.
    assert_eq!(report["setup"]["last_run"], Value::Null);
    assert_eq!(report["timers"]["units"], serde_json::json!([]));

    std::fs::write(&config, "cache:\n  refresh_interval: soon\n").unwrap();
    let bad = sandbox
        .psi()
        .args(["-c", config.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
}
