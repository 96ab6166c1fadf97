//! A fleet that does not stampede Infisical: one setup run shares what the server says about
//! its rate limits across all its workloads (a spent budget or a 429's `Retry-After` makes
//! every later request to that route wait), on a virtual clock moving the fake's in step.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use crate::support::fleet::{Host, CLIENT_ID, CLIENT_SECRET};
use crate::support::infisical::{FakeInfisical, Fault, Generation};
use crate::support::virtual_clock::VirtualClock;

const PROJECT: &str = "5b2f9c1e-7a4d-4e8b-9c3f-2d1e0a9b8c7d";

/// A fake with `workloads` folders `/wNN` of two secrets each, and a virtual clock at the
/// fake's now that moves it along.
fn world(workloads: usize) -> (FakeInfisical, Arc<VirtualClock>) {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth(CLIENT_ID, CLIENT_SECRET, 86_400, 86_400);
    fake.add_project(PROJECT, "fleet");
    for w in 0..workloads {
        for key in ["A", "B"] {
            fake.set_secret(PROJECT, "prod", &format!("/w{w:02}"), key, "v");
        }
    }
    let start = UNIX_EPOCH + Duration::from_secs(fake.now());
    let clock = VirtualClock::new(start, fake.clock_driver());
    (fake, clock)
}

/// The fake's secrets-list requests as seconds after `start`.
fn listings(fake: &FakeInfisical, start: u64) -> Vec<u64> {
    fake.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v4/secrets")
        .map(|r| r.at - start)
        .collect()
}

/// A 429 as the recorded server sends it, with `Retry-After: secs`.
fn limited(secs: u32) -> Fault {
    Fault::Status {
        status: 429,
        body: json!({"statusCode": 429, "error": "Too Many Requests", "message": "Rate limit exceeded, retry in 1 minute"}),
        retry_after: Some(secs.to_string()),
    }
}

#[tokio::test]
async fn a_setup_run_waits_out_a_spent_budget_instead_of_collecting_429s() {
    let (fake, clock) = world(8);
    let host = Host::new(&fake.url(), PROJECT, 8, "");
    let start = fake.now();
    // Three list requests per 60 s window: the third says `x-ratelimit-remaining: 0`.
    fake.set_rate_limit(Some(3));
    let _running = clock.enter();
    let failed = host.discover(clock.clone()).await;
    assert_eq!(failed, Vec::<(String, String)>::new());
    assert_eq!(
        fake.throttled(),
        0,
        "no request was sent into a spent budget"
    );
    assert_eq!(listings(&fake, start), [0, 0, 0, 60, 60, 60, 120, 120]);
    assert_eq!(clock.slept(), [Duration::from_secs(60); 2]);
}

#[tokio::test]
async fn a_429_makes_the_other_workloads_wait_too() {
    let (fake, clock) = world(2);
    let host = Host::new(&fake.url(), PROJECT, 2, "    retries: 1\n");
    // Log in first, so the requests below are the listings alone.
    let client = host.client(clock.clone());
    let _running = clock.enter();
    client
        .lookup(&psi::provider::infisical::mapping("p", "/w00", "A"))
        .await
        .unwrap();
    fake.clear_requests();
    let start = fake.now();
    // app00's listing is refused twice, more than its one retry allows.
    fake.inject("GET", "/api/v4/secrets", limited(30), 2);
    let failed = host.discover(clock.clone()).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "app00");
    assert!(
        failed[0].1.contains("gave up after 2 attempts"),
        "{failed:?}"
    );
    // app01 waited out the second Retry-After rather than sending at once into the limit.
    assert_eq!(listings(&fake, start), [0, 30, 60]);
    assert_eq!(clock.slept(), [Duration::from_secs(30); 2]);
    assert_eq!(fake.throttled(), 0);
}

#[tokio::test]
async fn a_limited_route_leaves_the_others_alone() {
    let (fake, clock) = world(1);
    let host = Host::new(&fake.url(), PROJECT, 1, "    retries: 0\n");
    let client = host.client(clock.clone());
    let _running = clock.enter();
    let secret = psi::provider::infisical::mapping("p", "/w00", "A");
    client.lookup(&secret).await.unwrap();
    fake.inject("GET", "/api/v4/secrets", limited(45), 1);
    client.list("p", "/w00", false, false).await.unwrap_err();
    // Fixture 92: the single-secret route has its own budget.
    client.lookup(&secret).await.unwrap();
    assert_eq!(clock.elapsed(), Duration::ZERO);
    // The listing route waits out the 45 s.
    client.list("p", "/w00", false, false).await.unwrap();
    assert_eq!(clock.slept(), [Duration::from_secs(45)]);
}

/// Loads `text` as a system-scope config.
fn load(text: &str) -> Result<psi::config::Settings, psi::error::Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let overrides = psi::config::Overrides {
        config: Some(path),
        socket: None,
    };
    psi::config::Settings::load(&overrides, &|_: &str| None, 0)
}

const TLS: &str = "providers:
  infisical:
    auth: {method: universal-auth, client_id: id, client_secret: secret}
    projects: {app: {id: p1}}
    tls:
      renew_randomized_delay: 3h
      certificates:
        web:
          project: app
          profile_id: prof
          common_name: web.example.com
          output: {cert: /etc/pki/web/cert.pem, key: /etc/pki/web/key.pem, chain: /etc/pki/web/chain.pem}
";

#[test]
fn both_timers_spread_a_fleet_with_fixed_configurable_delays() {
    use psi::unitgen::units::{self, ApplianceSpec, Mode};
    let settings = load(&format!(
        "{TLS}cache:\n  backend: tpm\n  refresh_interval: 2h\n  refresh_randomized_delay: 90m\n"
    ))
    .unwrap();
    let spec = ApplianceSpec::from_settings(
        &settings,
        Mode::Native,
        None,
        std::path::Path::new("/usr/bin/psi"),
    )
    .unwrap();
    let files = units::appliance(&spec);
    let timer = |name: &str| {
        let file = files.iter().find(|f| f.name == name).unwrap();
        let at = file.text.find("[Timer]\n").unwrap();
        file.text[at..].split("\n\n").next().unwrap().to_owned()
    };
    assert_eq!(
        timer("psi-infisical-refresh.timer"),
        "[Timer]\nUnit=psi-infisical-refresh.service\nOnBootSec=2h\nOnUnitActiveSec=2h\nRandomizedDelaySec=90m\nFixedRandomDelay=yes"
    );
    assert_eq!(
        timer("psi-tls-renew.timer"),
        "[Timer]\nOnCalendar=daily\nRandomizedDelaySec=3h\nFixedRandomDelay=yes\nPersistent=true"
    );
}

#[test]
fn a_delay_longer_than_its_interval_is_a_config_error() {
    let err =
        load("cache:\n  refresh_interval: 30m\n  refresh_randomized_delay: 31m\n").unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(
        err.to_string().contains(
            "cache.refresh_randomized_delay: 31m is longer than cache.refresh_interval (30m); set it to at most the interval"
        ),
        "{err}"
    );
    // As long as the interval is allowed, and so is no spread at all.
    load("cache:\n  refresh_interval: 30m\n  refresh_randomized_delay: 30m\n").unwrap();
    load("cache:\n  refresh_randomized_delay: 0\n").unwrap();

    let err = load(&TLS.replace("3h", "25h")).unwrap_err();
    assert!(
        err.to_string().contains(
            "providers.infisical.tls.renew_randomized_delay: 25h is longer than the renewal timer's interval (1d)"
        ),
        "{err}"
    );
    load(&TLS.replace("3h", "1d")).unwrap();
}
