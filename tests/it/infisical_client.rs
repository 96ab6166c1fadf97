//! The Infisical client against the fake Infisical server (`support::infisical`): auth and
//! the token cache, re-login, API generations, retries, ETags, imports, TLS, AWS login.
//!
//! The client runs on a test clock: backoff sleeps are recorded, not waited, and token
//! lifetimes move with `advance`, in step with the fake's virtual clock.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use psi::config::{AuthConfig, AuthMethod, InfisicalConfig, ProjectConfig};
use psi::error::Error;
use psi::provider::infisical::{self, Clock, Env, Infisical, Listed, Origin};
use psi::secret::SecretString;
use serde_json::json;

use crate::support::infisical::{FakeInfisical, Fault, Generation};

const PROJECT: &str = "6f1c2a4e-8b7d-4c3e-9a2b-1d0e5f6a7b8c";
const CLIENT_ID: &str = "0b6e3f4a-2c1d-4e5f-8a9b-7c6d5e4f3a2b";
const CLIENT_SECRET: &str = "client-secret-for-tests";

/// Starts at the fake's notion of now (whole seconds) and moves only when told to, or by
/// the sleeps it records.
struct TestClock {
    now: Mutex<SystemTime>,
    slept: Mutex<Vec<Duration>>,
}

impl TestClock {
    fn new() -> Arc<TestClock> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Arc::new(TestClock {
            now: Mutex::new(UNIX_EPOCH + Duration::from_secs(secs)),
            slept: Mutex::new(Vec::new()),
        })
    }

    fn advance(&self, secs: u64) {
        *self.now.lock().unwrap() += Duration::from_secs(secs);
    }

    fn slept(&self) -> Vec<Duration> {
        self.slept.lock().unwrap().clone()
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap()
    }

    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.slept.lock().unwrap().push(duration);
        *self.now.lock().unwrap() += duration;
        Box::pin(async {})
    }
}

/// A fake with one project and one universal-auth identity, a state dir and a clock.
struct World {
    fake: FakeInfisical,
    clock: Arc<TestClock>,
    state: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl World {
    fn new(generation: Generation, ttl: u64, max_ttl: u64) -> World {
        World::with_fake(FakeInfisical::start(generation), ttl, max_ttl)
    }

    fn with_fake(fake: FakeInfisical, ttl: u64, max_ttl: u64) -> World {
        fake.add_project(PROJECT, "web-project");
        fake.add_universal_auth(CLIENT_ID, CLIENT_SECRET, ttl, max_ttl);
        fake.set_secret(PROJECT, "prod", "/app", "DB_HOST", "db.internal");
        World {
            fake,
            clock: TestClock::new(),
            state: tempfile::tempdir().unwrap(),
            env: HashMap::new(),
        }
    }

    fn config(&self) -> InfisicalConfig {
        let mut config = InfisicalConfig {
            api_url: psi::config::ApiUrl::parse(&self.fake.url()).unwrap(),
            auth: Some(universal_auth()),
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        config.projects.insert(
            "web".into(),
            ProjectConfig {
                id: PROJECT.into(),
                environment: "prod".into(),
                auth: None,
            },
        );
        config
    }

    fn client(&self) -> Infisical {
        self.client_with(&self.config())
    }

    fn client_with(&self, config: &InfisicalConfig) -> Infisical {
        let env = self.env.clone();
        let env: Env = Arc::new(move |name| env.get(name).cloned());
        Infisical::with_environment(config, self.state.path(), self.clock.clone(), env).unwrap()
    }

    /// Moves both clocks.
    fn advance(&self, secs: u64) {
        self.clock.advance(secs);
        self.fake.advance(secs);
    }

    /// Requests as "METHOD path", in order.
    fn requests(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn count(&self, request: &str) -> usize {
        self.requests().iter().filter(|r| *r == request).count()
    }
}

fn universal_auth() -> AuthConfig {
    AuthConfig {
        method: AuthMethod::UniversalAuth,
        identity_id: None,
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(SecretString::new(CLIENT_SECRET.into())),
        region: None,
    }
}

async fn lookup(client: &Infisical, path: &str, key: &str) -> Result<String, Error> {
    let value = client.lookup(&infisical::mapping("web", path, key)).await?;
    Ok(String::from_utf8(value.expose().to_vec()).unwrap())
}

fn token_file(state: &Path) -> std::path::PathBuf {
    // sha256("universal-auth::<client id>")[:12], the original's name.
    let files: Vec<_> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(".token.") && name.ends_with(".json")
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn server_error(status: u16, error: &str, message: &str) -> Fault {
    Fault::Status {
        status,
        body: json!({"statusCode": status, "message": message, "error": error}),
        retry_after: None,
    }
}

#[tokio::test]
async fn token_cache_is_shared_between_clients_and_replaced_after_expiry() {
    let world = World::new(Generation::Legacy2024, 60, 600);
    let first = world.client();
    assert_eq!(
        lookup(&first, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );
    assert_eq!(world.fake.logins(), 1);
    let file = token_file(world.state.path());
    let cached: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(cached["access_token"].is_string() && cached["expires_at"].is_f64());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A second client (a new process) uses the cached token.
    let second = world.client();
    assert_eq!(
        lookup(&second, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );
    assert_eq!(world.fake.logins(), 1);

    // Past the server-side TTL a renewal would fail: log in again.
    world.advance(100);
    assert_eq!(
        lookup(&second, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );
    assert_eq!(world.fake.logins(), 2);
    assert_eq!(world.count("POST /api/v1/auth/token/renew"), 0);
}

#[tokio::test]
async fn renews_while_the_max_ttl_allows_then_logs_in() {
    let world = World::new(Generation::Current, 60, 150);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    // 56 s in: within the refresh margin, and 56 + 60 <= 150: renew.
    world.advance(56);
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    assert_eq!(world.fake.logins(), 1);
    assert_eq!(world.count("POST /api/v1/auth/token/renew"), 1);
    // 112 s in: a renewal would end at 172 > 150: log in instead.
    world.advance(56);
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    assert_eq!(world.fake.logins(), 2);
    assert_eq!(world.count("POST /api/v1/auth/token/renew"), 1);
}

#[tokio::test]
async fn a_failed_renewal_falls_back_to_login() {
    let world = World::new(Generation::Current, 60, 600);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    world.fake.inject(
        "POST",
        "/api/v1/auth/token/renew",
        server_error(401, "UnauthorizedError", "Failed to renew MI access token"),
        1,
    );
    world.advance(56);
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    assert_eq!(world.fake.logins(), 2);
}

#[tokio::test]
async fn a_refused_token_means_one_new_login_on_both_generations() {
    for generation in [Generation::Legacy2024, Generation::Current] {
        let world = World::new(generation, 60, 600);
        let client = world.client();
        lookup(&client, "/app", "DB_HOST").await.unwrap();
        // The server's clock passes the TTL, psi's does not: the server refuses the token
        // (403 on the 2024 server, 401 on the newest) and psi logs in again.
        world.fake.advance(100);
        assert_eq!(
            lookup(&client, "/app", "DB_HOST").await.unwrap(),
            "db.internal",
            "{generation:?}"
        );
        assert_eq!(world.fake.logins(), 2, "{generation:?}");
    }
}

#[tokio::test]
async fn a_second_refusal_is_an_auth_error_without_a_loop() {
    let world = World::new(Generation::Current, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    world.fake.clear_requests();
    world.fake.inject(
        "GET",
        "/api/v4/secrets",
        server_error(401, "UnauthorizedError", "Token expired"),
        5,
    );
    let err = lookup(&client, "/app", "DB_HOST").await.unwrap_err();
    assert!(matches!(err.root(), Error::Provider { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(
        text.contains("project 'web'") && text.contains("key 'DB_HOST'"),
        "{text}"
    );
    assert_eq!(world.fake.logins(), 2);
    assert_eq!(world.count("GET /api/v4/secrets/DB_HOST"), 2);
    assert!(world.clock.slept().is_empty());
}

#[tokio::test]
async fn jwt_errors_as_500_mean_login_again() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    world.fake.inject(
        "GET",
        "/api/v3/secrets/raw",
        server_error(500, "Internal Server Error", "jwt expired"),
        1,
    );
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    assert_eq!(world.fake.logins(), 2);
    assert!(world.clock.slept().is_empty(), "a JWT 500 is not retried");
}

#[tokio::test]
async fn permission_denied_is_not_a_reason_to_log_in_again() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let client = world.client();
    world.fake.inject(
        "GET",
        "/api/v3/secrets/raw",
        server_error(
            401,
            "PermissionDenied",
            "You are not allowed to read on secrets",
        ),
        1,
    );
    let err = lookup(&client, "/app", "DB_HOST").await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert_eq!(err.http_status().0, 502);
    assert_eq!(world.fake.logins(), 1);
}

#[tokio::test]
async fn v4_falls_back_to_v3_once_and_remembers() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    client.list("web", "/app", false, false).await.unwrap();
    assert_eq!(
        world.requests(),
        [
            "POST /api/v1/auth/universal-auth/login",
            "GET /api/v4/secrets/DB_HOST",
            "GET /api/v3/secrets/raw/DB_HOST",
            "GET /api/v3/secrets/raw/DB_HOST",
            "GET /api/v3/secrets/raw",
        ]
    );
    let last = world.fake.requests().pop().unwrap();
    assert_eq!(last.query["workspaceId"], PROJECT);
    assert_eq!(last.query["environment"], "prod");
    assert_eq!(last.query["secretPath"], "/app");
    assert_eq!(last.query["recursive"], "false");
    assert_eq!(last.query["expandSecretReferences"], "true");

    let world = World::new(Generation::Current, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    client.list("web", "/app", false, false).await.unwrap();
    assert_eq!(
        world.requests(),
        [
            "POST /api/v1/auth/universal-auth/login",
            "GET /api/v4/secrets/DB_HOST",
            "GET /api/v4/secrets",
        ]
    );
    assert_eq!(world.fake.requests()[2].query["projectId"], PROJECT);
}

#[tokio::test]
async fn missing_secrets_are_not_found_on_both_generations() {
    for generation in [Generation::Legacy2024, Generation::Current] {
        let world = World::new(generation, 600, 6000);
        let client = world.client();
        let err = lookup(&client, "/app", "NOPE").await.unwrap_err();
        assert!(
            matches!(err.root(), Error::SecretNotFound { .. }),
            "{generation:?}: {err}"
        );
        assert_eq!(err.http_status().0, 404);
        let text = err.to_string();
        assert!(
            text.contains("key 'NOPE'") && text.contains("path '/app'"),
            "{text}"
        );
        assert!(world.clock.slept().is_empty(), "not found is never retried");
    }
}

#[tokio::test]
async fn keys_are_url_encoded_and_unknown_projects_named() {
    let world = World::new(Generation::Current, 600, 6000);
    let client = world.client();
    // One path segment, percent-encoded (the fake does not decode it back, so the answer
    // itself is not asserted here).
    let _ = lookup(&client, "/app", "A KEY/WITH?ODD#CHARS").await;
    assert!(
        world
            .requests()
            .contains(&"GET /api/v4/secrets/A%20KEY%2FWITH%3FODD%23CHARS".to_owned()),
        "{:?}",
        world.requests()
    );
    let err = client
        .lookup(&infisical::mapping("nope", "/", "K"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown project 'nope'; configured projects: web"),
        "{err}"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    world.fake.inject(
        "GET",
        "/api/v3/secrets/raw",
        server_error(503, "Service Unavailable", "busy"),
        2,
    );
    assert_eq!(
        lookup(&client, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );
    let slept = world.clock.slept();
    assert_eq!(slept.len(), 2, "{slept:?}");
    let secs: Vec<f64> = slept.iter().map(Duration::as_secs_f64).collect();
    assert!((0.8..=1.2).contains(&secs[0]), "{secs:?}");
    assert!((1.6..=2.4).contains(&secs[1]), "{secs:?}");

    // Retries exhausted (3 by default, so 4 attempts): unavailable, HTTP 503 to Podman.
    world.fake.clear_requests();
    world.fake.inject(
        "GET",
        "/api/v3/secrets/raw",
        server_error(502, "Bad Gateway", "upstream"),
        4,
    );
    let err = lookup(&client, "/app", "DB_HOST").await.unwrap_err();
    assert!(
        matches!(err.root(), Error::ProviderUnavailable { .. }),
        "{err}"
    );
    assert_eq!(err.http_status().0, 503);
    assert!(err.to_string().contains("HTTP 502"), "{err}");
    assert_eq!(world.count("GET /api/v3/secrets/raw/DB_HOST"), 4);
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let world = World::new(Generation::Current, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    world.fake.clear_requests();
    for (status, error) in [(422, "ValidationFailure"), (400, "BadRequest")] {
        world.fake.inject(
            "GET",
            "/api/v4/secrets",
            server_error(status, error, "no"),
            1,
        );
        let err = lookup(&client, "/app", "DB_HOST").await.unwrap_err();
        assert!(matches!(err.root(), Error::Provider { .. }), "{err}");
        assert!(err.to_string().contains(&format!("HTTP {status}")), "{err}");
    }
    assert_eq!(world.count("GET /api/v4/secrets/DB_HOST"), 2);
    assert!(world.clock.slept().is_empty());
    assert_eq!(world.fake.logins(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_in_both_forms() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    let limited = |retry_after: String| Fault::Status {
        status: 429,
        body: json!({"statusCode": 429, "error": "Too Many Requests", "message": "Rate limit exceeded, retry in 1 minute"}),
        retry_after: Some(retry_after),
    };
    world
        .fake
        .inject("GET", "/api/v3/secrets/raw", limited("7".into()), 1);
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    assert_eq!(world.clock.slept(), [Duration::from_secs(7)]);

    let date = httpdate::fmt_http_date(world.clock.now() + Duration::from_secs(12));
    world
        .fake
        .inject("GET", "/api/v3/secrets/raw", limited(date), 1);
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    assert_eq!(
        world.clock.slept(),
        [Duration::from_secs(7), Duration::from_secs(12)]
    );

    // The fake's real rate limiter: the 429 carries the seconds left in its window.
    world.fake.set_rate_limit(Some(1));
    client.list("web", "/app", false, false).await.unwrap();
    world.fake.advance(30);
    let before = world.clock.slept().len();
    // The recorded sleep does not move the fake's window, so this ends unavailable; what
    // matters is that each wait was the server's, not the backoff's: first the spent
    // budget's `x-ratelimit-reset` (60 s when the first listing used it), then `Retry-After`.
    let _ = client.list("web", "/app", false, false).await;
    let waits = &world.clock.slept()[before..];
    let secs = Duration::from_secs;
    assert_eq!(waits, [secs(60), secs(30), secs(30), secs(30)]);
}

/// A 429 waits what its `Retry-After` says, then a 503 backs off, on the injected clock.
/// What the user sees of each wait (a warning naming the route, the reason and the wait) is
/// checked on the real binary's stderr (`infisical_cli::a_retry_is_a_warning_at_the_default_level`):
/// a subscriber scoped to one test thread misses events when other threads register the
/// same callsites concurrently, so it cannot be asserted here without flaking.
#[tokio::test]
async fn retry_after_and_backoff_decide_the_waits() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    world.fake.inject(
        "GET",
        "/api/v3/secrets/raw",
        Fault::Status {
            status: 429,
            body: json!({"statusCode": 429, "error": "Too Many Requests", "message": "Rate limit exceeded, retry in 1 minute"}),
            retry_after: Some("51".into()),
        },
        1,
    );
    world.fake.inject(
        "GET",
        "/api/v3/secrets/raw",
        server_error(503, "Service Unavailable", "busy"),
        1,
    );
    assert_eq!(
        lookup(&client, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );
    let slept = world.clock.slept();
    assert_eq!(slept[0], Duration::from_secs(51));
    assert_eq!(slept.len(), 2, "{slept:?}");
    // The second retry's backoff: 2 s within its ±20 % jitter.
    assert!(
        slept[1] >= Duration::from_millis(1600) && slept[1] <= Duration::from_millis(2400),
        "{slept:?}"
    );
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let mut config = world.config();
    config.timeout = Some(Duration::from_secs(1));
    config.retries = Some(1);
    let client = world.client_with(&config);
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    world.fake.inject(
        "GET",
        "/api/v3/secrets/raw",
        Fault::Delay(Duration::from_millis(2500)),
        1,
    );
    assert_eq!(
        lookup(&client, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );
    assert_eq!(world.clock.slept().len(), 1);

    world.fake.inject(
        "GET",
        "/api/v3/secrets/raw",
        Fault::Delay(Duration::from_millis(2500)),
        2,
    );
    let err = lookup(&client, "/app", "DB_HOST").await.unwrap_err();
    assert!(
        matches!(err.root(), Error::ProviderUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn dropped_connections_and_outages_are_unavailable() {
    let mut world = World::new(Generation::Legacy2024, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    world
        .fake
        .inject("GET", "/api/v3/secrets/raw", Fault::Close, 1);
    assert_eq!(
        lookup(&client, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );
    world.fake.stop();
    let err = lookup(&client, "/app", "DB_HOST").await.unwrap_err();
    assert!(
        matches!(err.root(), Error::ProviderUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&world.fake.url()), "{err}");
}

#[tokio::test]
async fn listings_are_revalidated_with_their_etag() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let client = world.client();
    let values = |listed: &[Listed]| -> Vec<(String, String)> {
        listed
            .iter()
            .map(|l| {
                (
                    l.key.clone(),
                    String::from_utf8(l.value.expose().to_vec()).unwrap(),
                )
            })
            .collect()
    };
    let first = client.list("web", "/app", false, false).await.unwrap();
    world.fake.clear_requests();
    let second = client.list("web", "/app", false, false).await.unwrap();
    assert_eq!(values(&first), values(&second));
    let sent = world.fake.requests();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].headers.contains_key("if-none-match"),
        "{:?}",
        sent[0].headers
    );

    world
        .fake
        .set_secret(PROJECT, "prod", "/app", "DB_HOST", "db2.internal");
    let third = client.list("web", "/app", false, false).await.unwrap();
    assert_eq!(
        values(&third),
        [("DB_HOST".to_owned(), "db2.internal".to_owned())]
    );
}

fn summary(listed: &[Listed]) -> Vec<String> {
    listed
        .iter()
        .map(|l| {
            let origin = match &l.origin {
                Origin::Own => "own".to_owned(),
                Origin::Import { environment, path } => format!("{environment}:{path}"),
            };
            format!(
                "{} {}={} ({origin})",
                l.path,
                l.key,
                String::from_utf8(l.value.expose().to_vec()).unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn imports_merge_own_first_then_later_imports() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let fake = &world.fake;
    fake.set_secret(PROJECT, "prod", "/app", "APP_PORT", "8443");
    fake.set_secret(PROJECT, "staging", "/shared", "APP_PORT", "9090");
    fake.set_secret(PROJECT, "staging", "/shared", "TOKEN", "first");
    fake.set_secret(PROJECT, "staging", "/shared", "ONLY_FIRST", "1");
    fake.set_secret(PROJECT, "prod", "/common", "TOKEN", "second");
    fake.add_import(PROJECT, "prod", "/app", "staging", "/shared");
    fake.add_import(PROJECT, "prod", "/app", "prod", "/common");
    fake.set_secret(PROJECT, "prod", "/app/db", "DB_USER", "own-user");
    fake.set_secret(PROJECT, "dev", "/dbshared", "DB_USER", "imported-user");
    fake.set_secret(PROJECT, "dev", "/dbshared", "DB_PASS", "imported-pass");
    fake.add_import(PROJECT, "prod", "/app/db", "dev", "/dbshared");
    let client = world.client();

    let flat = client.list("web", "/app", false, true).await.unwrap();
    assert_eq!(
        summary(&flat),
        [
            "/app APP_PORT=8443 (own)",
            "/app DB_HOST=db.internal (own)",
            "/app ONLY_FIRST=1 (staging:/shared)",
            "/app TOKEN=second (prod:/common)",
        ]
    );
    let without = client.list("web", "/app", false, false).await.unwrap();
    assert_eq!(without.len(), 2);

    world.fake.clear_requests();
    let tree = client.list("web", "/app/", true, true).await.unwrap();
    assert_eq!(
        summary(&tree),
        [
            "/app APP_PORT=8443 (own)",
            "/app DB_HOST=db.internal (own)",
            "/app ONLY_FIRST=1 (staging:/shared)",
            "/app TOKEN=second (prod:/common)",
            "/app/db DB_PASS=imported-pass (dev:/dbshared)",
            "/app/db DB_USER=own-user (own)",
        ]
    );
    // One recursive listing, then one per folder to attribute the imports.
    let paths: Vec<_> = world
        .fake
        .requests()
        .iter()
        .map(|r| (r.query["secretPath"].clone(), r.query["recursive"].clone()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/app".to_owned(), "true".to_owned()),
            ("/app".to_owned(), "false".to_owned()),
            ("/app/db".to_owned(), "false".to_owned()),
        ]
    );
}

#[tokio::test]
async fn imports_of_folders_without_secrets_are_found_by_walking_the_tree() {
    let world = World::new(Generation::Current, 600, 6000);
    world
        .fake
        .set_secret(PROJECT, "staging", "/shared", "TOKEN", "t");
    // /app/a/only-imports has no secret of its own, so the recursive tree does not show it.
    world
        .fake
        .add_import(PROJECT, "prod", "/app/a/only-imports", "staging", "/shared");
    world.fake.set_secret(PROJECT, "prod", "/app/b", "B", "b");
    let client = world.client();
    world.fake.clear_requests();
    let tree = client.list("web", "/app", true, true).await.unwrap();
    assert_eq!(
        summary(&tree),
        [
            "/app DB_HOST=db.internal (own)",
            "/app/a/only-imports TOKEN=t (staging:/shared)",
            "/app/b B=b (own)",
        ]
    );
    let folder_lists = world.count("GET /api/v1/folders");
    assert_eq!(folder_lists, 4, "{:?}", world.requests());
}

#[tokio::test]
async fn concurrent_callers_share_one_login() {
    let world = World::new(Generation::Current, 600, 6000);
    let client = world.client();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { lookup(&client, "/app", "DB_HOST").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "db.internal");
    }
    assert_eq!(world.fake.logins(), 1);
}

#[tokio::test]
async fn a_malformed_token_file_is_replaced() {
    let world = World::new(Generation::Current, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    let file = token_file(world.state.path());
    std::fs::write(&file, "{not json").unwrap();
    let fresh = world.client();
    lookup(&fresh, "/app", "DB_HOST").await.unwrap();
    assert_eq!(world.fake.logins(), 2);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(r#"{"access_token":""#), "{text}");
}

#[tokio::test]
async fn reads_a_token_file_written_by_the_original() {
    let world = World::new(Generation::Current, 600, 6000);
    let client = world.client();
    lookup(&client, "/app", "DB_HOST").await.unwrap();
    let file = token_file(world.state.path());
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // Only the original's two fields, as pydantic writes them.
    let expires = epoch_now(&world) + 100.5;
    let original = format!(
        r#"{{"access_token":{},"expires_at":{expires}}}"#,
        written["access_token"]
    );
    std::fs::write(&file, original).unwrap();
    let fresh = world.client();
    lookup(&fresh, "/app", "DB_HOST").await.unwrap();
    assert_eq!(world.fake.logins(), 1);
}

fn epoch_now(world: &World) -> f64 {
    world
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn ca_cert_is_trusted_and_required() {
    let world = World::with_fake(FakeInfisical::start_tls(Generation::Current), 600, 6000);
    let mut config = world.config();

    let err = lookup(&world.client_with(&config), "/app", "DB_HOST")
        .await
        .unwrap_err();
    // Not retried (retries are on): an untrusted certificate is a configuration problem.
    assert!(matches!(err.root(), Error::Provider { .. }), "{err}");
    assert!(
        err.to_string().contains("certificate verify failed"),
        "{err}"
    );
    assert!(
        err.to_string().contains("providers.infisical.ca_cert"),
        "{err}"
    );
    assert!(
        world.clock.slept().is_empty(),
        "retried: {:?}",
        world.clock.slept()
    );

    config.ca_cert = Some(world.fake.ca_pem());
    let trusted = world.client_with(&config);
    assert_eq!(
        lookup(&trusted, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );

    config.ca_cert = None;
    config.verify_ssl = false;
    let unverified = world.client_with(&config);
    assert_eq!(
        lookup(&unverified, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );

    config.ca_cert = Some(world.state.path().join("missing.pem"));
    let err = Infisical::new(&config, world.state.path()).err().unwrap();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    std::fs::write(world.state.path().join("junk.pem"), "not a certificate").unwrap();
    config.ca_cert = Some(world.state.path().join("junk.pem"));
    let err = Infisical::new(&config, world.state.path()).err().unwrap();
    assert!(err.to_string().contains("junk.pem"), "{err}");
}

#[tokio::test]
async fn aws_login_sends_a_signed_sts_request() {
    let mut world = World::new(Generation::Current, 600, 6000);
    world.fake.add_aws_identity("aws-identity-1", 600, 6000);
    world.env.extend([
        ("AWS_ACCESS_KEY_ID".to_owned(), "AKIDEXAMPLE".to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "wJalrXUtnFEMI".to_owned(),
        ),
        ("AWS_SESSION_TOKEN".to_owned(), "session-token".to_owned()),
    ]);
    let mut config = world.config();
    config.auth = Some(AuthConfig {
        method: AuthMethod::AwsIam,
        identity_id: Some("aws-identity-1".into()),
        client_id: None,
        client_secret: None,
        region: Some("eu-west-1".into()),
    });
    let client = world.client_with(&config);
    assert_eq!(
        lookup(&client, "/app", "DB_HOST").await.unwrap(),
        "db.internal"
    );

    let logins = world.fake.aws_logins();
    assert_eq!(logins.len(), 1);
    let login = &logins[0];
    assert!(login.accepted);
    assert_eq!(login.identity_id, "aws-identity-1");
    assert_eq!(login.method, "POST");
    assert_eq!(login.body, "Action=GetCallerIdentity&Version=2011-06-15");
    assert_eq!(login.region, "eu-west-1");
    assert_eq!(login.access_key_id, "AKIDEXAMPLE");
    let h = &login.headers;
    assert_eq!(h["Host"], "sts.eu-west-1.amazonaws.com");
    assert_eq!(
        h["Content-Type"],
        "application/x-www-form-urlencoded; charset=utf-8"
    );
    assert_eq!(h["Content-Length"], "43");
    assert_eq!(h["X-Amz-Security-Token"], "session-token");
    let date = &h["X-Amz-Date"];
    assert!(
        date.len() == 16 && date.starts_with(&login.date) && date.ends_with('Z'),
        "{date}"
    );
    assert!(h["Authorization"].contains(
        "/eu-west-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
    ));
    // The token cache file is the original's name for aws-iam with this identity.
    let name = token_file(world.state.path());
    assert!(name.to_string_lossy().contains(".token."));
}

#[tokio::test]
async fn aws_without_credentials_says_what_it_tried() {
    let mut world = World::new(Generation::Current, 600, 6000);
    world.fake.add_aws_identity("aws-identity-1", 600, 6000);
    // IMDS is "at" the fake, which has no such route.
    world.env.extend([
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_owned(),
            world.fake.url(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
            "/nonexistent/credentials".to_owned(),
        ),
    ]);
    let mut config = world.config();
    config.auth = Some(AuthConfig {
        method: AuthMethod::AwsIam,
        identity_id: Some("aws-identity-1".into()),
        client_id: None,
        client_secret: None,
        region: Some("eu-west-1".into()),
    });
    let err = lookup(&world.client_with(&config), "/app", "DB_HOST")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no AWS credentials"), "{text}");
    assert!(
        text.contains("/nonexistent/credentials (profile default)"),
        "{text}"
    );
    assert!(text.contains("metadata server"), "{text}");
    assert!(!matches!(err.root(), Error::SecretNotFound { .. }));
}

#[tokio::test]
async fn metadata_failures_are_reported_as_metadata_failures() {
    let mut world = World::new(Generation::Current, 600, 6000);
    // The "metadata server" is the fake, which answers 404 to the metadata path: the error
    // must say so, not claim the secret is missing (the original's bug).
    let host = world.fake.url().trim_start_matches("http://").to_owned();
    world.env.insert("GCE_METADATA_HOST".into(), host);
    world
        .env
        .insert("AZURE_POD_IDENTITY_AUTHORITY_HOST".into(), world.fake.url());
    for (method, what) in [
        (
            AuthMethod::Gcp,
            "cannot get a GCP identity token from the metadata server at",
        ),
        (
            AuthMethod::Azure,
            "cannot get an Azure managed-identity token from the metadata server at",
        ),
    ] {
        let mut config = world.config();
        config.auth = Some(AuthConfig {
            method,
            identity_id: Some("cloud-identity".into()),
            client_id: None,
            client_secret: None,
            region: None,
        });
        let err = lookup(&world.client_with(&config), "/app", "DB_HOST")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(what), "{text}");
        assert!(text.contains("HTTP 404"), "{text}");
        assert!(matches!(err.root(), Error::Provider { .. }), "{text}");
    }
    let gets: Vec<_> = world.requests();
    assert!(gets
        .iter()
        .any(|r| r == "GET /computeMetadata/v1/instance/service-accounts/default/identity"));
    let gcp = world
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/computeMetadata"))
        .unwrap();
    assert_eq!(gcp.query["audience"], "cloud-identity");
    assert_eq!(gcp.query["format"], "full");
    assert_eq!(gcp.headers["metadata-flavor"], "Google");
}

#[tokio::test]
async fn bad_credentials_are_an_auth_error_naming_the_client() {
    let world = World::new(Generation::Legacy2024, 600, 6000);
    let mut config = world.config();
    config.auth = Some(AuthConfig {
        client_secret: Some(SecretString::new("wrong-secret".into())),
        ..universal_auth()
    });
    let err = lookup(&world.client_with(&config), "/app", "DB_HOST")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err.root(), Error::Provider { .. }), "{text}");
    assert!(
        text.contains(&format!(
            "login with universal-auth (client ID {CLIENT_ID}) failed: HTTP 403"
        )),
        "{text}"
    );
    assert!(!text.contains("wrong-secret"), "{text}");
    assert!(world.clock.slept().is_empty());
}
