//! `psi infisical tls issue|renew|status` against the fake Infisical: the cert-manager API
//! (Current) and the 2024 CA route (Legacy2024). Certificates are real (minted by the fake
//! with openssl); status and renewal read their notAfter.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use openssl::x509::X509;
use serde_json::Value;

use crate::support::infisical::{FakeInfisical, Fault, Generation};
use crate::support::{child_env, Sandbox};

const PROJECT: &str = "0b6f6d0e-6a55-4d5e-8f5e-1f2a3b4c5d6e";
const PROFILE: &str = "fd1fc8d6-c538-44a1-889b-f17962b5c388";
const CA: &str = "b7d5f15e-7fa3-4b86-8af4-70117c1f8b9a";

fn fake(generation: Generation) -> FakeInfisical {
    let fake = FakeInfisical::start(generation);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_project(PROJECT, "web-project");
    fake.add_ca(CA);
    fake.add_cert_profile(PROFILE, CA);
    fake
}

struct Cert<'a> {
    name: &'a str,
    ttl: &'a str,
    renew_before: &'a str,
    hooks: Vec<String>,
    /// `output.mode`, written as given (quoted); absent: the default.
    mode: Option<&'a str>,
    /// Whether `output.fullchain` is configured.
    fullchain: bool,
}

impl Cert<'_> {
    fn new(name: &str) -> Cert<'_> {
        Cert {
            name,
            ttl: "90d",
            renew_before: "30d",
            hooks: Vec::new(),
            mode: None,
            fullchain: false,
        }
    }
}

fn out(sb: &Sandbox, name: &str, file: &str) -> PathBuf {
    sb.path().join("certs").join(name).join(file)
}

fn config(sb: &Sandbox, fake: &FakeInfisical, generation: Generation, certs: &[Cert]) -> PathBuf {
    let mut yaml = format!(
        "providers:\n  infisical:\n    api_url: {}\n    retries: 0\n    auth:\n      method: universal-auth\n      client_id: client-1\n      client_secret: secret-1\n    projects:\n      web:\n        id: {PROJECT}\n        environment: prod\n    tls:\n      certificates:\n",
        fake.url()
    );
    for c in certs {
        let ca_id = match generation {
            Generation::Legacy2024 => format!("          ca_id: {CA}\n"),
            Generation::Current => String::new(),
        };
        yaml.push_str(&format!(
            "        {name}:\n          project: web\n          profile_id: {PROFILE}\n{ca_id}          common_name: {name}.example.com\n          alt_names:\n            - {{type: dns_name, value: {name}.example.com}}\n            - {{type: dns_name, value: www.{name}.example.com}}\n          ttl: {ttl}\n          renew_before: {rb}\n          output:\n            cert: {cert}\n            key: {key}\n            chain: {chain}\n            ca: {ca}\n",
            name = c.name,
            ttl = c.ttl,
            rb = c.renew_before,
            cert = out(sb, c.name, "cert.pem").display(),
            key = out(sb, c.name, "key.pem").display(),
            chain = out(sb, c.name, "chain.pem").display(),
            ca = out(sb, c.name, "ca.pem").display(),
        ));
        if c.fullchain {
            yaml.push_str(&format!(
                "            fullchain: {}\n",
                out(sb, c.name, "fullchain.pem").display()
            ));
        }
        if let Some(mode) = c.mode {
            yaml.push_str(&format!(
                "            mode: {}\n",
                serde_json::to_string(mode).unwrap()
            ));
        }
        if !c.hooks.is_empty() {
            yaml.push_str("          hooks:\n");
            for h in &c.hooks {
                yaml.push_str(&format!(
                    "            - {}\n",
                    serde_json::to_string(h).unwrap()
                ));
            }
        }
    }
    sb.config(&yaml)
}

fn psi(sb: &Sandbox, config: &Path, args: &[&str]) -> Output {
    sb.psi()
        .arg("--config")
        .arg(config)
        .args(["--log-level", "debug"])
        .args(args)
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn status_json(sb: &Sandbox, config: &Path) -> Vec<Value> {
    let o = psi(sb, config, &["infisical", "tls", "status", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })
        .as_array()
        .unwrap()
        .clone()
}

fn check_issue(generation: Generation) {
    let fake = fake(generation);
    let sb = Sandbox::new();
    let config = config(&sb, &fake, generation, &[Cert::new("web")]);

    let before = status_json(&sb, &config);
    assert_eq!(before[0]["status"], "not_issued");
    assert_eq!(before[0]["days_left"], Value::Null);

    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(o.stdout.is_empty(), "issue prints nothing on stdout");
    assert!(
        !stderr.contains("PRIVATE KEY"),
        "key leaked to the log: {stderr}"
    );

    let cert = std::fs::read(out(&sb, "web", "cert.pem")).unwrap();
    let x509 = X509::from_pem(&cert).unwrap();
    let san: Vec<String> = x509
        .subject_alt_names()
        .unwrap()
        .iter()
        .filter_map(|n| n.dnsname().map(str::to_owned))
        .collect();
    assert_eq!(san, ["web.example.com", "www.web.example.com"]);
    let key = std::fs::read_to_string(out(&sb, "web", "key.pem")).unwrap();
    assert!(key.contains("PRIVATE KEY"));
    let pkey = openssl::pkey::PKey::private_key_from_pem(key.as_bytes()).unwrap();
    assert!(
        x509.public_key().unwrap().public_eq(&pkey),
        "key matches cert"
    );
    assert_eq!(mode(&out(&sb, "web", "key.pem")), 0o600);
    for f in ["cert.pem", "chain.pem", "ca.pem"] {
        assert_eq!(mode(&out(&sb, "web", f)), 0o640, "{f}");
    }

    let state: Value =
        serde_json::from_slice(&std::fs::read(sb.state_dir().join("tls/web.json")).unwrap())
            .unwrap();
    assert_eq!(state["common_name"], "web.example.com");
    assert_eq!(state["profile_id"], PROFILE);
    let serial = x509
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_lowercase();
    assert_eq!(state["serial_number"].as_str().unwrap(), serial);
    let expires = state["expires_at"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (expires - (now + 90.0 * 86400.0)).abs() < 120.0,
        "expires_at is notAfter"
    );
    match generation {
        Generation::Current => assert!(!state["certificate_id"].as_str().unwrap().is_empty()),
        Generation::Legacy2024 => assert_eq!(state["certificate_id"], ""),
    }

    // Not a terminal: JSON without --json.
    let o = psi(&sb, &config, &["infisical", "tls", "status"]);
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["name"], "web");
    let after = status_json(&sb, &config);
    assert_eq!(after[0]["status"], "valid");
    assert_eq!(after[0]["days_left"], 89);

    // Not due: renew changes nothing.
    let o = psi(&sb, &config, &["infisical", "tls", "renew"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("web: valid, 89 days remaining"), "{stderr}");
    assert!(stderr.contains("No renewals needed."), "{stderr}");
    assert_eq!(std::fs::read(out(&sb, "web", "cert.pem")).unwrap(), cert);
    assert_eq!(fake.pki_counts(), (1, 0));
}

#[test]
fn issue_and_status_current() {
    check_issue(Generation::Current);
}

#[test]
fn issue_and_status_legacy_2024() {
    check_issue(Generation::Legacy2024);
}

fn check_renew_due(generation: Generation) {
    let fake = fake(generation);
    let sb = Sandbox::new();
    // Valid 10 days, renewed 30 days before: due at once.
    let mut c = Cert::new("api");
    c.ttl = "10d";
    c.hooks = vec![format!("touch {}", sb.path().join("hook ran").display())];
    let c = Cert {
        hooks: vec![
            shlex::try_join(["touch", sb.path().join("hook ran").to_str().unwrap()]).unwrap(),
        ],
        ..c
    };
    let config = config(&sb, &fake, generation, &[c]);
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(sb.path().join("hook ran").exists(), "hook ran after issue");
    std::fs::remove_file(sb.path().join("hook ran")).unwrap();
    let first = std::fs::read(out(&sb, "api", "cert.pem")).unwrap();
    let rows = status_json(&sb, &config);
    assert_eq!(rows[0]["status"], "needs_renewal");

    let textfile = sb.path().join("psi-tls.prom");
    let o = psi(
        &sb,
        &config,
        &[
            "infisical",
            "tls",
            "renew",
            "--metrics-textfile",
            textfile.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let second = std::fs::read(out(&sb, "api", "cert.pem")).unwrap();
    assert_ne!(first, second, "renewed");
    // The textfile has the renewed certificate's notAfter (the state file's) and the
    // provider's counters, world-readable for node_exporter.
    assert_eq!(mode(&textfile), 0o644);
    let state: Value =
        serde_json::from_slice(&std::fs::read(sb.state_dir().join("tls/api.json")).unwrap())
            .unwrap();
    let text = std::fs::read_to_string(&textfile).unwrap();
    let not_after = format!(
        "psi_certificate_not_after_timestamp_seconds{{certificate=\"api\"}} {}\n",
        state["expires_at"].as_f64().unwrap()
    );
    assert!(text.contains(&not_after), "{text}");
    assert!(
        text.contains("psi_provider_retries_total{provider=\"infisical\"} 0\n"),
        "{text}"
    );
    assert!(sb.path().join("hook ran").exists(), "hook ran after renew");
    match generation {
        Generation::Current => assert_eq!(fake.pki_counts(), (1, 1)),
        Generation::Legacy2024 => assert_eq!(fake.pki_counts(), (2, 0)),
    }
}

#[test]
fn renew_when_due_current() {
    check_renew_due(Generation::Current);
}

#[test]
fn renew_when_due_legacy_2024() {
    check_renew_due(Generation::Legacy2024);
}

#[test]
fn expired_certificate_status_and_renewal() {
    let generation = Generation::Current;
    let fake = fake(generation);
    let sb = Sandbox::new();
    let mut c = Cert::new("old");
    c.ttl = "1d";
    c.renew_before = "0s";
    let config = config(&sb, &fake, generation, &[c]);
    // Issued two days ago for one day: expired yesterday.
    fake.backdate_certificates(2 * 86_400);
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fake.backdate_certificates(0);
    let rows = status_json(&sb, &config);
    assert_eq!(rows[0]["status"], "expired");
    assert!(rows[0]["days_left"].as_i64().unwrap() < 0);
    let o = psi(&sb, &config, &["infisical", "tls", "renew"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fake.pki_counts(), (1, 1));
}

#[test]
fn hooks_do_not_inherit_psi_secrets() {
    let generation = Generation::Current;
    let fake = fake(generation);
    let sb = Sandbox::new();
    let dump = sb.path().join("hook env");
    let mut c = Cert::new("api");
    c.hooks =
        vec![shlex::try_join(["sh", "-c", "env -0 > \"$0\"", dump.to_str().unwrap()]).unwrap()];
    let config = config(&sb, &fake, generation, &[c]);
    let o = child_env::caller_env(&mut sb.psi())
        .arg("--config")
        .arg(&config)
        .args(["infisical", "tls", "issue"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    child_env::assert_helper(&child_env::parse(&std::fs::read(dump).unwrap()));
}

#[test]
fn pending_request_is_polled() {
    let generation = Generation::Current;
    let fake = fake(generation);
    fake.set_pki_pending(1);
    let sb = Sandbox::new();
    let config = config(&sb, &fake, generation, &[Cert::new("slow")]);
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = std::fs::read_to_string(out(&sb, "slow", "key.pem")).unwrap();
    let cert = X509::from_pem(&std::fs::read(out(&sb, "slow", "cert.pem")).unwrap()).unwrap();
    let pkey = openssl::pkey::PKey::private_key_from_pem(key.as_bytes()).unwrap();
    assert!(cert.public_key().unwrap().public_eq(&pkey));
}

#[test]
fn missing_hook_fails_after_processing_all() {
    let generation = Generation::Legacy2024;
    let fake = fake(generation);
    let sb = Sandbox::new();
    let marker = sb.path().join("second hook ran");
    let mut a = Cert::new("a");
    a.hooks = vec!["/nonexistent/psi-hook --reload".into()];
    let mut b = Cert::new("b");
    b.hooks = vec![
        shlex::try_join(["touch", marker.to_str().unwrap()]).unwrap(),
        "echo hook-said-hi".into(),
    ];
    let config = config(&sb, &fake, generation, &[a, b]);
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Hook FAILED: /nonexistent/psi-hook"),
        "{stderr}"
    );
    assert!(out(&sb, "a", "cert.pem").exists());
    assert!(
        out(&sb, "b", "cert.pem").exists(),
        "b processed after a's hook failed"
    );
    assert!(marker.exists());
    assert!(
        stderr.contains("hook-said-hi"),
        "hook output logged: {stderr}"
    );
    assert!(o.stdout.is_empty(), "hook output not on stdout");
    let rows = status_json(&sb, &config);
    assert!(rows.iter().all(|r| r["status"] == "valid"));
}

#[test]
fn no_tls_configuration() {
    let sb = Sandbox::new();
    let config = sb.config("");
    let o = psi(&sb, &config, &["infisical", "tls", "status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("No TLS configuration"));
}

#[test]
fn legacy_server_without_cert_manager_is_explained() {
    let generation = Generation::Legacy2024;
    let fake = fake(generation);
    let sb = Sandbox::new();
    // Profile only (no ca_id) against the 2024 server.
    let config = config(&sb, &fake, Generation::Current, &[Cert::new("web")]);
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no cert-manager API"), "{stderr}");
    assert!(!out(&sb, "web", "cert.pem").exists());
}

#[test]
fn status_table_on_a_terminal() {
    if !crate::support::require("script") {
        return;
    }
    let generation = Generation::Current;
    let fake = fake(generation);
    let sb = Sandbox::new();
    let config = config(
        &sb,
        &fake,
        generation,
        &[Cert::new("web"), Cert::new("later")],
    );
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(out(&sb, "later", "cert.pem")).unwrap();
    let command = format!(
        "{} --config {} infisical tls status --timer psi-test.timer",
        crate::support::psi_bin(),
        config.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("PSI_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("Timer: psi-test.timer"), "{text}");
    assert!(text.contains("TLS Certificates"), "{text}");
    let web = text.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(
        web.contains("web.example.com") && web.ends_with("valid"),
        "{web}"
    );
    let later = text.lines().find(|l| l.starts_with("later ")).unwrap();
    assert!(
        later.contains("—") && later.ends_with("not issued"),
        "{later}"
    );
}

#[test]
fn one_failed_certificate_does_not_stop_the_others() {
    let generation = Generation::Legacy2024;
    let fake = fake(generation);
    let sb = Sandbox::new();
    let config = config(&sb, &fake, generation, &[Cert::new("a"), Cert::new("b")]);
    // "a" comes first (config order is sorted by name): its request is refused.
    fake.inject(
        "POST",
        &format!("/api/v1/pki/ca/{CA}/issue-certificate"),
        Fault::Status {
            status: 400,
            body: serde_json::json!({"statusCode": 400, "message": "CA not found", "error": "BadRequest"}),
            retry_after: None,
        },
        1,
    );
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CA not found"), "{stderr}");
    assert!(!out(&sb, "a", "cert.pem").exists());
    assert!(out(&sb, "b", "cert.pem").exists());
    let rows = status_json(&sb, &config);
    assert_eq!(rows[0]["status"], "not_issued");
    assert_eq!(rows[1]["status"], "valid");
    // renew issues what is missing.
    let o = psi(&sb, &config, &["infisical", "tls", "renew"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out(&sb, "a", "cert.pem").exists());
}

#[test]
fn a_certificate_for_another_key_is_not_written() {
    let generation = Generation::Current;
    let fake = fake(generation);
    let sb = Sandbox::new();
    let mut c = Cert::new("web");
    c.ttl = "10d";
    let config = config(&sb, &fake, generation, &[c]);
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = std::fs::read(out(&sb, "web", "cert.pem")).unwrap();
    // A renewal answer without a private key, for a key psi does not have.
    let key = openssl::pkey::PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut b = X509::builder().unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(90).unwrap())
        .unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let pem = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
    fake.inject(
        "POST",
        "/api/v1/cert-manager/certificates/",
        Fault::Status {
            status: 200,
            body: serde_json::json!({"certificate": pem, "serialNumber": "01", "certificateId": "x"}),
            retry_after: None,
        },
        1,
    );
    let o = psi(&sb, &config, &["infisical", "tls", "renew"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not match the private key"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out(&sb, "web", "cert.pem")).unwrap(), before);
}

/// How many certificates OpenSSL finds in the PEM file `path`.
fn openssl_cert_count(path: &Path) -> usize {
    let o = std::process::Command::new("openssl")
        .args(["storeutl", "-noout", "-certs"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Total found: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "openssl storeutl: {text}{}",
                String::from_utf8_lossy(&o.stderr)
            )
        })
}

/// Checks every PEM output of certificate `name`: one final newline each, `fullchain` is the
/// certificate then the chain, and OpenSSL reads both certificates from `cat cert chain` and
/// from `fullchain` (Infisical sends PEMs without the final newline).
fn check_pem_outputs(sb: &Sandbox, name: &str) {
    for file in [
        "cert.pem",
        "key.pem",
        "chain.pem",
        "ca.pem",
        "fullchain.pem",
    ] {
        let text = std::fs::read_to_string(out(sb, name, file)).unwrap();
        assert!(
            text.ends_with("-----\n") && !text.ends_with("\n\n"),
            "{file} ends with exactly one newline: {:?}",
            &text[text.len().saturating_sub(30)..]
        );
    }
    assert_eq!(mode(&out(sb, name, "fullchain.pem")), 0o640);
    let cert = std::fs::read(out(sb, name, "cert.pem")).unwrap();
    let chain = std::fs::read(out(sb, name, "chain.pem")).unwrap();
    let fullchain = std::fs::read(out(sb, name, "fullchain.pem")).unwrap();
    assert_eq!(fullchain, [cert.as_slice(), chain.as_slice()].concat());
    if !crate::support::require("openssl") {
        return;
    }
    let concatenated = sb.path().join(format!("{name}-cat.pem"));
    std::fs::write(&concatenated, [cert, chain].concat()).unwrap();
    assert_eq!(
        openssl_cert_count(&concatenated),
        2,
        "cat cert.pem chain.pem"
    );
    assert_eq!(openssl_cert_count(&out(sb, name, "fullchain.pem")), 2);
}

#[test]
fn pem_outputs_end_with_a_newline_and_fullchain_is_cert_then_chain() {
    check_pem_files(Generation::Current);
    check_pem_files(Generation::Legacy2024);
}

fn check_pem_files(generation: Generation) {
    let fake = fake(generation);
    let sb = Sandbox::new();
    let mut c = Cert::new("web");
    // Due at once, so renew writes everything again.
    c.ttl = "10d";
    c.fullchain = true;
    let config = config(&sb, &fake, generation, &[c]);
    let o = psi(&sb, &config, &["infisical", "tls", "issue"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Wrote {}",
            out(&sb, "web", "fullchain.pem").display()
        )),
        "{stderr}"
    );
    check_pem_outputs(&sb, "web");
    let first = std::fs::read(out(&sb, "web", "fullchain.pem")).unwrap();

    let o = psi(&sb, &config, &["infisical", "tls", "renew"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Renewal is a new issuance on the 2024 generation, a renew call on the newest.
    match generation {
        Generation::Current => assert_eq!(fake.pki_counts(), (1, 1)),
        Generation::Legacy2024 => assert_eq!(fake.pki_counts(), (2, 0)),
    }
    check_pem_outputs(&sb, "web");
    assert_ne!(
        std::fs::read(out(&sb, "web", "fullchain.pem")).unwrap(),
        first
    );
}

#[test]
fn a_bad_output_mode_fails_before_any_request() {
    let generation = Generation::Current;
    let fake = fake(generation);
    let sb = Sandbox::new();
    let mut c = Cert::new("web");
    c.mode = Some("rw-r--r--");
    let config = config(&sb, &fake, generation, &[c]);
    let text = std::fs::read_to_string(&config).unwrap();
    // The position of the value.
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("mode: ").map(|c| (i + 1, c + "mode: ".len() + 1)))
        .unwrap();
    let expected = format!(
        "psi: error: {}: providers.infisical.tls.certificates.web.output.mode: 'rw-r--r--' is not a file mode; use octal digits, e.g. 0640 (line {line}, column {column})\n",
        config.display()
    );
    for args in [
        &["infisical", "tls", "renew"][..],
        &["infisical", "tls", "issue"],
        &["check"],
    ] {
        let o = sb
            .psi()
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&o.stderr), expected, "{args:?}");
        assert!(o.stdout.is_empty());
    }
    assert!(
        fake.requests().is_empty(),
        "no request, so no certificate issued and thrown away: {:?}",
        fake.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(fake.pki_counts(), (0, 0));
    assert!(!out(&sb, "web", "cert.pem").exists());
}
