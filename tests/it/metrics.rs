//! Monitoring: `GET /metrics` on a real `psi serve` (token rules, HEAD, counts that move
//! with cache hits, misses and errors), setup's record and `--metrics-textfile` after a real
//! setup against Podman. Every exposition is checked line by line against the text format,
//! and never holds a secret value.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::http::{self, Reply};
use crate::support::infisical::{FakeInfisical, Generation};
use crate::support::podman::PodmanEnv;
use crate::support::{require, secret_ids, Sandbox, ServeProcess};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The samples of a Prometheus text exposition (`name{labels}` as written, to its value),
/// after checking every line: `# HELP` and `# TYPE` once per family and before its samples,
/// names and labels well formed, values numbers.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |name: &str| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut help = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP has a name and a text");
            assert!(name_ok(name) && !text.is_empty(), "{line}");
            assert!(!help.contains(&name.to_owned()), "HELP twice: {line}");
            help.push(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert_eq!(
                help.last().map(String::as_str),
                Some(name),
                "HELP before TYPE: {line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse::<f64>().unwrap_or_else(|_| panic!("{line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let mut rest = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{line}"));
            while !rest.is_empty() {
                let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(name_ok(label), "{line}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, '\\' | '"' | 'n') => escaped = false,
                        (true, _) => panic!("bad escape: {line}"),
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("{line}"));
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "a sample before its TYPE: {line}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "twice: {line}"
        );
    }
    assert_eq!(help.len(), types.len(), "every family has HELP and TYPE");
    samples
}

fn request(socket: &Path, method: &str, target: &str, token: Option<&str>, body: &[u8]) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(http::request(socket, method, target, &headers, body))
}

fn scrape(socket: &Path, token: Option<&str>) -> (String, BTreeMap<String, f64>) {
    let reply = request(socket, "GET", "/metrics", token, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some(CONTENT_TYPE));
    let text = reply.text();
    let samples = parse(&text);
    (text, samples)
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

#[test]
fn metrics_need_the_token_answer_head_and_count_lookups() {
    if !require("systemd-creds") {
        return;
    }
    const TOKEN: &str = "metrics-token-1";
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let mut cmd = sandbox.psi();
    cmd.args(["-c", config.to_str().unwrap(), "serve"])
        .env("PSI_SOCKET_TOKEN", TOKEN);
    let _serve = ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"));
    let socket = sandbox.socket();

    // Like /list, not like /healthz: no token, no metrics.
    let refused = request(&socket, "GET", "/metrics", None, b"");
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(!refused.text().contains("psi_"));
    let wrong = request(&socket, "GET", "/metrics", Some("wrong"), b"");
    assert_eq!(wrong.status, 401);
    let post = request(&socket, "POST", "/metrics", Some(TOKEN), b"");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    let (text, before) = scrape(&socket, Some(TOKEN));
    for family in [
        "psi_lookups_total",
        "psi_lookup_duration_seconds",
        "psi_cache_entries",
        "psi_cache_last_load_timestamp_seconds",
        "psi_cache_load_errors_total",
        "psi_provider_errors_total",
        "psi_provider_retries_total",
        "psi_provider_rate_limit_waits_total",
        "psi_provider_rate_limit_wait_seconds_total",
        "psi_setup_last_success_timestamp_seconds",
        "psi_setup_last_run_timestamp_seconds",
        "psi_setup_duration_seconds",
        "psi_setup_changes",
        "psi_setup_workload_failed",
        "psi_certificate_not_after_timestamp_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}: {text}"
        );
    }
    let success =
        r#"psi_lookups_total{provider="systemd-creds",outcome="success",source="provider"}"#;
    assert_eq!(value(&before, success), 0.0);
    // No cache configured: no entries.
    assert!(!before.contains_key("psi_cache_entries"));

    // HEAD: the head of the same answer, no body.
    let head = request(&socket, "HEAD", "/metrics", Some(TOKEN), b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some(CONTENT_TYPE));
    assert!(head.body.is_empty());
    assert!(
        head.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 1000
    );

    // A value sealed through the driver, looked up twice (the provider each time: no cache),
    // and an ID without a mapping.
    let id = "0123456789abcdef012345678";
    let value_bytes = b"metrics-secret-value-1";
    let stored = request(
        &socket,
        "POST",
        &format!("/store/{id}"),
        Some(TOKEN),
        value_bytes,
    );
    assert_eq!(stored.status, 200, "{}", stored.text());
    for _ in 0..2 {
        let found = request(&socket, "GET", &format!("/lookup/{id}"), Some(TOKEN), b"");
        assert_eq!(found.body, value_bytes);
    }
    let missing = request(&socket, "GET", "/lookup/nothing-here", Some(TOKEN), b"");
    assert_eq!(missing.status, 404, "{}", missing.text());

    let (text, after) = scrape(&socket, Some(TOKEN));
    assert_eq!(value(&after, success), 2.0);
    let count = r#"psi_lookup_duration_seconds_count{provider="systemd-creds",source="provider"}"#;
    assert_eq!(value(&after, count), 2.0);
    let inf = r#"psi_lookup_duration_seconds_bucket{provider="systemd-creds",source="provider",le="+Inf"}"#;
    assert_eq!(value(&after, inf), 2.0);
    let none = r#"psi_lookups_total{provider="none",outcome="error",source="provider"}"#;
    assert_eq!(value(&after, none), 1.0);
    assert_eq!(
        value(
            &after,
            r#"psi_provider_errors_total{provider="systemd-creds"}"#
        ),
        0.0
    );
    assert!(!text.contains("metrics-secret-value-1"));
}

const PROJECT: &str = "3c1b2a4e-5f6d-4e7c-8a9b-0c1d2e3f4a5b";

#[test]
fn setup_leaves_its_record_and_textfile_and_serve_counts_cache_hits_and_misses() {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_project(PROJECT, "web");
    fake.set_secret(PROJECT, "prod", "/app", "DB_HOST", "db.internal");
    fake.set_secret(PROJECT, "prod", "/app", "DB_PASS", "pass-1");
    let creds = tempfile::Builder::new()
        .prefix("psi-creds.")
        .tempdir()
        .unwrap();
    std::fs::write(creds.path().join("psi-cache-key"), [3u8; 32]).unwrap();
    let config = format!(
        "providers:\n  infisical:\n    api_url: {}\n    retries: 0\n    timeout: 2s\n    auth: {{method: universal-auth, client_id: client-1, client_secret: secret-1}}\n    projects:\n      web: {{id: {PROJECT}, environment: prod}}\ncache:\n  enabled: true\n  backend: tpm\n  watch_interval: 100ms\nworkloads:\n  myapp:\n    secrets:\n      - project: web\n        path: /app\n",
        fake.url()
    );
    let Some(mut env) = PodmanEnv::with_env(
        &config,
        &[("CREDENTIALS_DIRECTORY", creds.path().as_os_str())],
    ) else {
        return;
    };
    env.for_setup();
    let socket = env.sandbox.socket();
    let (_, before) = scrape(&socket, None);
    assert!(!before.contains_key("psi_setup_duration_seconds"));

    // A real setup with a textfile in a directory of its own, as node_exporter reads one.
    let textdir = env.sandbox.path().join("textfile");
    std::fs::create_dir(&textdir).unwrap();
    let textfile = textdir.join("psi-setup.prom");
    let out = env
        .psi(&["setup", "--metrics-textfile", textfile.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // Written by rename: nothing else left in the directory.
    assert_eq!(std::fs::read_dir(&textdir).unwrap().count(), 1);
    let text = std::fs::read_to_string(&textfile).unwrap();
    let samples = parse(&text);
    assert_eq!(
        value(
            &samples,
            r#"psi_setup_changes{workload="myapp",action="created"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&samples, r#"psi_setup_workload_failed{workload="myapp"}"#),
        0.0
    );
    let success = value(&samples, "psi_setup_last_success_timestamp_seconds");
    assert_eq!(
        success,
        value(&samples, "psi_setup_last_run_timestamp_seconds")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(success <= now && success > now - 600.0, "{success}");
    assert!(
        samples.keys().all(|k| k.starts_with("psi_setup_")),
        "{text}"
    );
    let record = env.state_dir().join(".setup-status.json");
    let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Serve reads the same record when scraped.
    let (_, after_setup) = scrape(&socket, None);
    assert_eq!(
        value(
            &after_setup,
            r#"psi_setup_changes{workload="myapp",action="created"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&after_setup, "psi_setup_last_success_timestamp_seconds"),
        success
    );

    // The cache file setup wrote is loaded: two entries.
    env.serve.wait_for_log(
        "the cache load after setup",
        Duration::from_secs(30),
        |log| {
            log.lines().any(|line| {
                line.contains(r#""event":"cache.load","outcome":"success""#)
                    && line.contains(r#""entries":2"#)
            })
        },
    );
    let (_, loaded) = scrape(&socket, None);
    assert_eq!(value(&loaded, "psi_cache_entries"), 2.0);
    assert!(value(&loaded, "psi_cache_last_load_timestamp_seconds") > now - 600.0);
    let hits = r#"psi_lookups_total{provider="infisical",outcome="success",source="cache"}"#;
    let misses = r#"psi_lookups_total{provider="infisical",outcome="success",source="provider"}"#;
    let (hits_before, misses_before) = (value(&loaded, hits), value(&loaded, misses));

    // Two lookups of a cached value (the second answered in the accept loop), and one of a
    // value the cache does not hold (added upstream after setup: the provider answers).
    let ids = secret_ids(env.podman());
    for _ in 0..2 {
        let reply = request(
            &socket,
            "GET",
            &format!("/lookup/{}", ids["myapp--DB_PASS"]),
            None,
            b"",
        );
        assert_eq!(reply.body, b"pass-1");
    }
    fake.set_secret(PROJECT, "prod", "/app", "LATE", "late-value-1");
    let mapping = env.sandbox.path().join("late.json");
    std::fs::write(
        &mapping,
        br#"{"provider": "infisical", "project": "web", "path": "/app", "key": "LATE"}"#,
    )
    .unwrap();
    let made = env
        .podman()
        .args(["secret", "create", "--driver", "shell", "late"])
        .arg(&mapping)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let late = secret_ids(env.podman())["late"].clone();
    let reply = request(&socket, "GET", &format!("/lookup/{late}"), None, b"");
    assert_eq!(reply.body, b"late-value-1");

    let (text, after) = scrape(&socket, None);
    assert_eq!(value(&after, hits), hits_before + 2.0);
    assert_eq!(value(&after, misses), misses_before + 1.0);
    let hit_count = r#"psi_lookup_duration_seconds_count{provider="infisical",source="cache"}"#;
    assert_eq!(value(&after, hit_count), hits_before + 2.0);
    for secret in ["pass-1", "db.internal", "late-value-1", "secret-1"] {
        assert!(!text.contains(secret), "{secret} in /metrics");
        assert!(!std::fs::read_to_string(&textfile).unwrap().contains(secret));
        assert!(!std::fs::read_to_string(&record).unwrap().contains(secret));
    }
}
