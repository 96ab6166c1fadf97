//! The fake Infisical server (`support::infisical`) checked against the real exchanges
//! recorded in `tests/fixtures/infisical/` (a copy of the shared fixture set), plus the parts
//! the recordings do not cover: the Current generation, TLS, faults and outages, and the
//! logins other than universal auth.
//!
//! The replay runs the fixtures in their recorded order against one fake, because later
//! fixtures read what earlier ones wrote; writes the recorder made without recording them
//! (README "Data set") are made over HTTP at the same points.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::support::infisical::{jwt, send, FakeInfisical, Fault, Generation, Reply};

const ADMIN_CLIENT: &str = "3f6135db-f237-421d-af66-a8f4e80d443b";
const ADMIN_SECRET: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const VIEWER_CLIENT: &str = "e77367ea-792b-46e2-9708-167703f896c0";
const VIEWER_SECRET: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// The rust-tool identity's id in the recording (fixture 08's path).
const RECORDED_VIEWER_ID: &str = "8f6c074a-c7b3-471c-9603-4d50858d6fa3";

/// Values that do not depend on ids, timestamps or tokens, compared exactly.
const DETERMINISTIC: [&str; 18] = [
    "secretKey",
    "secretValue",
    "secretPath",
    "secretComment",
    "message",
    "error",
    "statusCode",
    "expiresIn",
    "accessTokenMaxTTL",
    "tokenType",
    "environment",
    "version",
    "type",
    "name",
    "slug",
    "importPath",
    "position",
    "isReserved",
];

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/infisical")
}

/// Every fixture file, by number.
fn fixtures() -> BTreeMap<u32, Value> {
    std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let number = name.get(..2)?.parse().ok()?;
            let text = std::fs::read_to_string(fixture_dir().join(&name)).unwrap();
            Some((number, serde_json::from_str(&text).unwrap()))
        })
        .collect()
}

/// Per-fixture replacements for the redacted parts of a request.
#[derive(Default)]
struct Subst<'a> {
    /// The token behind `Bearer <redacted>` (default: the admin's).
    bearer: Option<&'a str>,
    /// The token behind `"accessToken": "<access-token>"`.
    access_token: Option<&'a str>,
    /// The secret behind `"clientSecret": "<client-secret>"` (default: the client's own).
    client_secret: Option<&'a str>,
}

struct Replay {
    fake: FakeInfisical,
    fixtures: BTreeMap<u32, Value>,
    /// Recorded value -> ours: ids the fake generated, and ETags.
    map: Vec<(String, String)>,
    admin: String,
    checked: Vec<u32>,
}

impl Replay {
    fn new() -> Replay {
        let fake = FakeInfisical::start(Generation::Legacy2024);
        // Production mode, like the recording.
        fake.set_rate_limit(Some(60));
        fake.add_universal_auth(ADMIN_CLIENT, ADMIN_SECRET, 2_592_000, 2_592_000);
        let viewer = fake.add_universal_auth(VIEWER_CLIENT, VIEWER_SECRET, 5, 60);
        let admin = login(&fake, ADMIN_CLIENT, ADMIN_SECRET);
        Replay {
            fake,
            fixtures: fixtures(),
            map: vec![(RECORDED_VIEWER_ID.to_owned(), viewer)],
            admin,
            checked: Vec::new(),
        }
    }

    /// Recorded ids and ETags in `text` replaced by ours.
    fn mapped(&self, text: &str) -> String {
        self.map
            .iter()
            .fold(text.to_owned(), |t, (recorded, ours)| {
                t.replace(recorded, ours)
            })
    }

    fn mapped_json(&self, value: &Value, subst: &Subst) -> Value {
        match value {
            Value::String(s) => match s.as_str() {
                "<client-secret>" => json!(subst.client_secret.unwrap()),
                "<access-token>" => json!(subst.access_token.expect("an access token")),
                s => json!(self.mapped(s)),
            },
            Value::Array(items) => items.iter().map(|v| self.mapped_json(v, subst)).collect(),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.mapped_json(v, subst)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The fixture's request as this fake needs it.
    fn request(
        &self,
        request: &Value,
        subst: &Subst,
    ) -> (String, String, Vec<(String, String)>, Option<Value>) {
        let method = request["method"].as_str().unwrap().to_owned();
        let mut target = self.mapped(request["path"].as_str().unwrap());
        let query: Vec<String> = request["query"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    encode(k),
                    encode(&self.mapped(v.as_str().unwrap()))
                )
            })
            .collect();
        if !query.is_empty() {
            target = format!("{target}?{}", query.join("&"));
        }
        let headers = request["headers"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| *name != "Content-Type")
            .map(|(name, value)| {
                let value = match value.as_str().unwrap() {
                    "Bearer <redacted>" => {
                        format!("Bearer {}", subst.bearer.unwrap_or(&self.admin))
                    }
                    "Bearer <jwt signed with a wrong key>" => format!("Bearer {}", wrong_key_jwt()),
                    other => self.mapped(other),
                };
                (name.clone(), value)
            })
            .collect();
        let client_secret = match request["body"]["clientId"].as_str() {
            Some(VIEWER_CLIENT) => VIEWER_SECRET,
            _ => ADMIN_SECRET,
        };
        let subst = Subst {
            client_secret: Some(subst.client_secret.unwrap_or(client_secret)),
            ..*subst
        };
        let body = (!request["body"].is_null()).then(|| self.mapped_json(&request["body"], &subst));
        (method, target, headers, body)
    }

    fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Reply {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.fake.send(method, target, &headers, body)
    }

    fn check(&mut self, number: u32) -> Reply {
        self.check_with(number, Subst::default())
    }

    /// Replays fixture `number` and compares our answer with the recorded one.
    /// Replays `number` with `token` as its bearer token.
    fn check_bearer(&mut self, number: u32, token: &str) -> Reply {
        self.check_with(
            number,
            Subst {
                bearer: Some(token),
                ..Subst::default()
            },
        )
    }

    /// Replays `number` with `token` as the `accessToken` of its body (renew, revoke).
    fn check_access_token(&mut self, number: u32, token: &str) -> Reply {
        self.check_with(
            number,
            Subst {
                access_token: Some(token),
                ..Subst::default()
            },
        )
    }

    fn check_with(&mut self, number: u32, subst: Subst) -> Reply {
        let fixture = self.fixtures[&number].clone();
        let (method, target, headers, body) = self.request(&fixture["request"], &subst);
        let ours = self.send(&method, &target, &headers, body.as_ref());
        let recorded = &fixture["response"];
        let what = format!("fixture {number} ({})", fixture["description"]);
        assert_eq!(
            ours.status, recorded["status"],
            "status of {what}: {:?}",
            ours.body
        );
        for name in [
            "etag",
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert_eq!(
                ours.header(name).is_some(),
                recorded["headers"].get(name).is_some(),
                "presence of header {name} in {what}: {:?}",
                ours.headers
            );
        }
        // Recorded ids (echoed in 404 messages) become ours before comparing.
        let expected = self.mapped_json(
            &recorded["body"],
            &Subst {
                access_token: Some("<access-token>"),
                ..Subst::default()
            },
        );
        match (&ours.body, &expected) {
            (None, Value::Null) => {}
            (Some(body), expected) if !expected.is_null() => {
                if let Err(e) = same_shape(body, expected, "") {
                    panic!("shape of {what}: {e}");
                }
                assert_eq!(
                    facts(body),
                    facts(expected),
                    "deterministic values of {what}"
                );
                // An identical body must get the identical ETag (SHA-1 of the same bytes).
                // Bytes, not `Value` equality: key order is part of what the SHA-1 covers.
                let bytes = |v: &Value| serde_json::to_vec(v).unwrap();
                if bytes(body) == bytes(&recorded["body"]) {
                    assert_eq!(
                        ours.header("etag"),
                        recorded["headers"]["etag"].as_str(),
                        "etag of {what}"
                    );
                }
            }
            (body, _) => panic!("body of {what}: ours {body:?}, recorded {expected}"),
        }
        if let (Some(recorded), Some(ours)) =
            (recorded["headers"]["etag"].as_str(), ours.header("etag"))
        {
            self.learn(recorded, ours);
        }
        if method == "POST" {
            if let Some(body) = &ours.body {
                self.learn_ids(body, &recorded["body"]);
            }
        }
        self.checked.push(number);
        ours
    }

    fn learn(&mut self, recorded: &str, ours: &str) {
        self.map.retain(|(r, _)| r != recorded);
        if recorded != ours {
            self.map.push((recorded.to_owned(), ours.to_owned()));
        }
    }

    /// Maps the ids of created objects, walking both bodies in parallel.
    fn learn_ids(&mut self, ours: &Value, recorded: &Value) {
        match (ours, recorded) {
            (Value::Object(a), Value::Object(b)) => {
                for (key, value) in a {
                    match (value, b.get(key)) {
                        (Value::String(o), Some(Value::String(r))) if key == "id" => {
                            self.learn(r, o)
                        }
                        (o, Some(r)) => self.learn_ids(o, r),
                        _ => {}
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for (o, r) in a.iter().zip(b) {
                    self.learn_ids(o, r);
                }
            }
            _ => {}
        }
    }

    /// A write the recorder made without recording it, sent as the admin.
    fn prep(&self, method: &str, path: &str, body: Value) {
        let project = self.mapped("f92408c7-3951-442d-8e2d-6bb01204c4f2");
        let mut body = body;
        if body.get("workspaceId").is_some() {
            body["workspaceId"] = json!(project);
        }
        let auth = format!("Bearer {}", self.admin);
        let reply = self
            .fake
            .send(method, path, &[("Authorization", &auth)], Some(&body));
        assert_eq!(reply.status, 200, "{method} {path}: {:?}", reply.body);
    }

    fn viewer_login(&self) -> String {
        login(&self.fake, VIEWER_CLIENT, VIEWER_SECRET)
    }
}

fn login(fake: &FakeInfisical, client_id: &str, secret: &str) -> String {
    let body = json!({"clientId": client_id, "clientSecret": secret});
    let reply = fake.send(
        "POST",
        "/api/v1/auth/universal-auth/login",
        &[],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "login: {:?}", reply.body);
    reply.body.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Query encoding as the recorder did it: everything but unreserved characters escaped.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn wrong_key_jwt() -> String {
    let claims = json!({
        "identityId": RECORDED_VIEWER_ID, "clientSecretId": "c", "identityAccessTokenId": "t",
        "authTokenType": "identityAccessToken", "iat": 1, "exp": 4_000_000_000u64,
    });
    jwt(b"not the server's key", &claims)
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Same keys in every object, same JSON types, arrays of the same length whose elements each
/// have the shape of one of the recorded elements (recursive listings have no stable order).
fn same_shape(ours: &Value, recorded: &Value, at: &str) -> Result<(), String> {
    if type_of(ours) != type_of(recorded) {
        return Err(format!("{at}: ours {ours}, recorded {recorded}"));
    }
    match (ours, recorded) {
        (Value::Object(a), Value::Object(b)) => {
            let mut ka: Vec<_> = a.keys().collect();
            let mut kb: Vec<_> = b.keys().collect();
            ka.sort();
            kb.sort();
            if ka != kb {
                return Err(format!("{at}: keys {ka:?}, recorded {kb:?}"));
            }
            a.iter()
                .try_for_each(|(key, value)| same_shape(value, &b[key], &format!("{at}.{key}")))
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Err(format!("{at}: {} items, recorded {}", a.len(), b.len()));
            }
            a.iter().enumerate().try_for_each(|(i, value)| {
                let at = format!("{at}[{i}]");
                let results: Vec<_> = b.iter().map(|r| same_shape(value, r, &at)).collect();
                match results.iter().any(Result::is_ok) {
                    true => Ok(()),
                    false => results.into_iter().find(Result::is_err).unwrap_or(Ok(())),
                }
            })
        }
        _ => Ok(()),
    }
}

/// The deterministic values of a body as sorted `path=value` lines (array order ignored: the
/// server's recursive listing order is not stable).
fn facts(body: &Value) -> Vec<String> {
    fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    if DETERMINISTIC.contains(&key.as_str()) {
                        out.push(format!("{at}.{key}={value}"));
                    } else {
                        walk(value, &format!("{at}.{key}"), out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, &format!("{at}[]"), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(body, "", &mut out);
    out.sort();
    out
}

#[test]
fn replays_the_recorded_exchanges() {
    let mut r = Replay::new();

    // 1 auth. The wrong secret of 02 was redacted too; any wrong one does.
    r.check(1);
    r.check_with(
        2,
        Subst {
            client_secret: Some(&"0".repeat(64)),
            ..Subst::default()
        },
    );
    for n in 3..=6 {
        r.check(n);
    }
    // Setup, then folders.
    for n in 7..=14 {
        r.check(n);
    }
    r.prep(
        "POST",
        "/api/v1/folders",
        json!({"workspaceId": "", "environment": "dev", "name": "common", "path": "/"}),
    );
    r.prep(
        "POST",
        "/api/v1/folders",
        json!({"workspaceId": "", "environment": "dev", "name": "blob", "path": "/"}),
    );
    r.prep(
        "POST",
        "/api/v1/folders",
        json!({"workspaceId": "", "environment": "staging", "name": "shared", "path": "/"}),
    );
    for n in 15..=25 {
        r.check(n);
    }
    r.prep(
        "POST",
        "/api/v3/secrets/raw/TEMP_TO_DELETE",
        json!({"workspaceId": "", "environment": "dev", "secretPath": "/", "secretValue": "bye", "type": "shared"}),
    );
    for n in 26..=30 {
        r.check(n);
    }
    let secrets = json!([
        {"secretKey": "SHARED_URL", "secretValue": "https://${SHARED_TOKEN}.internal"},
        {"secretKey": "SHARED_TOKEN", "secretValue": "from-staging-shared"},
        {"secretKey": "APP_PORT", "secretValue": "9090"},
    ]);
    r.prep(
        "POST",
        "/api/v3/secrets/batch/raw",
        json!({"projectSlug": "psi-fixtures", "environment": "staging", "secretPath": "/shared", "secrets": secrets}),
    );
    r.prep(
        "POST",
        "/api/v3/secrets/batch/raw",
        json!({"projectSlug": "psi-fixtures", "environment": "dev", "secretPath": "/common",
               "secrets": [{"secretKey": "COMMON_FLAG", "secretValue": "on"}]}),
    );
    r.check(31);
    r.check(32);
    r.prep(
        "POST",
        "/api/v1/secret-imports",
        json!({"workspaceId": "", "environment": "dev", "path": "/blob", "import": {"environment": "dev", "path": "/common"}}),
    );
    // Imports, then listing.
    for n in 33..=53 {
        r.check(n);
    }

    // Token expiry with the viewer identity (TTL 5 s, max 60 s).
    let t1 = r.viewer_login();
    r.check_bearer(54, &t1);
    r.check_bearer(55, &t1);
    let t2 = r.viewer_login();
    r.check_access_token(56, &t2);
    r.fake.advance(7);
    r.check_bearer(57, &t1);
    r.check_bearer(58, &t1);
    r.check_access_token(59, &t2);
    let t3 = r.viewer_login();
    r.check_access_token(60, &t3);
    r.check_bearer(61, &t3);

    // Single secrets and the API-generation probe.
    for n in 62..=72 {
        r.check(n);
    }
    // PKI (2024 server): a root CA (its id learned from 73), a leaf certificate (its serial
    // learned from 75, used in the paths of 78, 79 and 83), the absent newer routes.
    for n in 73..=83 {
        let ours = r.check(n);
        if n == 75 {
            let recorded = r.fixtures[&75]["response"]["body"]["serialNumber"]
                .as_str()
                .unwrap()
                .to_owned();
            let body = ours.body.expect("fixture 75 body");
            r.learn(&recorded, body["serialNumber"].as_str().unwrap());
        }
    }

    let t4 = r.viewer_login();
    r.fake.advance(63);
    r.check_bearer(84, &t4);

    // ETags.
    for n in 85..=88 {
        r.check(n);
    }
    let project = r.mapped("f92408c7-3951-442d-8e2d-6bb01204c4f2");
    r.fake
        .set_secret(&project, "dev", "/app", "APP_NAME", "psi-demo-2");
    r.check(89);

    // Rate limit: a fresh window, 59 requests, then the 60th (90) and the 61st (91).
    r.fake.advance(60);
    let (method, target, headers, _) =
        r.request(&r.fixtures[&90]["request"].clone(), &Subst::default());
    for _ in 0..59 {
        assert_eq!(r.send(&method, &target, &headers, None).status, 200);
    }
    let last = r.check(90);
    assert_eq!(last.header("x-ratelimit-remaining"), Some("0"));
    let limited = r.check(91);
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    r.check(92);
    r.fake.advance(retry_after);
    let after = r.check(93);
    assert_eq!(after.header("x-ratelimit-remaining"), Some("59"));

    // Nothing skipped.
    let expected: Vec<u32> = r.fixtures.keys().copied().collect();
    assert_eq!(r.checked, expected);
}

/// A Current-generation fake with one project, an admin and a few secrets.
fn current() -> (FakeInfisical, String) {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth("client", "secret", 60, 3600);
    fake.add_project("p1", "proj");
    fake.set_secret("p1", "dev", "/app", "A", "1");
    fake.set_secret("p1", "dev", "/app", "B", "${A}-b");
    fake.set_secret("p1", "dev", "/app/db", "C", "c");
    fake.set_secret("p1", "staging", "/", "S", "from-staging");
    fake.add_import("p1", "dev", "/app", "staging", "/");
    let token = login(&fake, "client", "secret");
    (fake, token)
}

fn get(fake: &FakeInfisical, token: &str, target: &str) -> Reply {
    let auth = format!("Bearer {token}");
    fake.send("GET", target, &[("Authorization", &auth)], None)
}

#[test]
fn current_serves_v4_routes() {
    let (fake, token) = current();
    let reply = get(&fake, &token, "/api/v4/secrets?projectId=p1&environment=dev&secretPath=%2Fapp%2F&recursive=true&include_imports=true&expandSecretReferences=true");
    assert_eq!(reply.status, 200);
    let body = reply.body.unwrap();
    let mut listed: Vec<(String, String, String)> = body["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["secretPath"].as_str().unwrap().into(),
                s["secretKey"].as_str().unwrap().into(),
                s["secretValue"].as_str().unwrap().into(),
            )
        })
        .collect();
    listed.sort();
    let want = [
        ("/app", "A", "1"),
        ("/app", "B", "1-b"),
        ("/app/db", "C", "c"),
    ];
    assert_eq!(
        listed,
        want.map(|(p, k, v)| (p.to_owned(), k.to_owned(), v.to_owned()))
    );
    assert_eq!(body["imports"][0]["environment"], "staging");
    assert_eq!(
        body["imports"][0]["secrets"][0]["secretValue"],
        "from-staging"
    );

    let reply = get(&fake, &token, "/api/v4/secrets/B?projectId=p1&environment=dev&secretPath=/app&expandSecretReferences=true");
    assert_eq!(reply.status, 200);
    let secret = &reply.body.unwrap()["secret"];
    assert_eq!(
        (
            secret["secretValue"].as_str(),
            secret["secretPath"].as_str()
        ),
        (Some("1-b"), Some("/app"))
    );
    // v3 stays available on the newest server.
    let reply = get(
        &fake,
        &token,
        "/api/v3/secrets/raw?workspaceId=p1&environment=dev&secretPath=/app",
    );
    assert_eq!(reply.body.unwrap()["secrets"].as_array().unwrap().len(), 2);
    fake.delete_secret("p1", "dev", "/app", "A");
    let reply = get(
        &fake,
        &token,
        "/api/v3/secrets/raw?workspaceId=p1&environment=dev&secretPath=/app",
    );
    assert_eq!(reply.body.unwrap()["secrets"][0]["secretKey"], "B");
}

#[test]
fn current_reports_errors_with_its_own_statuses() {
    let (fake, token) = current();
    let error = |reply: Reply| {
        let body = reply.body.unwrap();
        assert!(body["reqId"].is_string(), "{body}");
        (
            reply.status,
            body["error"].as_str().unwrap().to_owned(),
            body["message"].clone(),
        )
    };
    let (status, kind, _) = error(get(
        &fake,
        &token,
        "/api/v4/secrets/NOPE?projectId=p1&environment=dev&secretPath=/app",
    ));
    assert_eq!((status, kind.as_str()), (404, "NotFoundError"));
    let (status, kind, message) = error(get(
        &fake,
        &token,
        "/api/v4/secrets?projectId=p1&environment=dev&recursive=yes",
    ));
    assert_eq!((status, kind.as_str()), (422, "ValidationFailure"));
    assert_eq!(message[0]["path"], json!(["recursive"]));
    let (status, kind, _) = error(get(
        &fake,
        "not-a-jwt",
        "/api/v4/secrets?projectId=p1&environment=dev",
    ));
    assert_eq!((status, kind.as_str()), (403, "TokenError"));
    let bad_login = fake.send(
        "POST",
        "/api/v1/auth/universal-auth/login",
        &[],
        Some(&json!({"clientId": "client", "clientSecret": "wrong"})),
    );
    assert_eq!(error(bad_login).0, 401);

    // A revoked token is a 401 UnauthorizedError, which tells a client to log in again.
    let revoke = fake.send(
        "POST",
        "/api/v1/auth/token/revoke",
        &[],
        Some(&json!({"accessToken": token})),
    );
    assert_eq!(revoke.status, 200);
    let (status, kind, _) = error(get(
        &fake,
        &token,
        "/api/v4/secrets?projectId=p1&environment=dev",
    ));
    assert_eq!((status, kind.as_str()), (401, "UnauthorizedError"));

    // A viewer's write is a 403 PermissionDenied.
    let id = fake.add_universal_auth("viewer", "v", 60, 3600);
    fake.set_project_role(&id, "p1", "viewer");
    let viewer = format!("Bearer {}", login(&fake, "viewer", "v"));
    let write = json!({"workspaceId": "p1", "environment": "dev", "secretPath": "/app", "secretValue": "x"});
    let (status, kind, _) = error(fake.send(
        "POST",
        "/api/v3/secrets/raw/X",
        &[("Authorization", &viewer)],
        Some(&write),
    ));
    assert_eq!((status, kind.as_str()), (403, "PermissionDenied"));
}

#[test]
fn legacy_has_no_v4_routes() {
    let fake = FakeInfisical::start(Generation::Legacy2024);
    let reply = fake.send("GET", "/api/v4/secrets/X?projectId=p", &[], None);
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.body.unwrap()["message"],
        "Route GET:/api/v4/secrets/X?projectId=p not found"
    );
}

#[test]
fn tls_needs_the_fakes_ca() {
    let (fake, token) = {
        let fake = FakeInfisical::start_tls(Generation::Current);
        fake.add_universal_auth("client", "secret", 60, 3600);
        let token = login(&fake, "client", "secret");
        (fake, token)
    };
    assert!(
        fake.url().starts_with("https://127.0.0.1:"),
        "{}",
        fake.url()
    );
    fake.add_project("p1", "proj");
    fake.set_secret("p1", "dev", "/", "K", "v");
    let auth = format!("Bearer {token}");
    let target = "/api/v4/secrets/K?projectId=p1&environment=dev";
    let reply = send(
        &fake.url(),
        Some(&fake.ca_pem()),
        "GET",
        target,
        &[("Authorization", &auth)],
        None,
    )
    .unwrap();
    assert_eq!(reply.body.unwrap()["secret"]["secretValue"], "v");

    let error = send(&fake.url(), None, "GET", target, &[], None).unwrap_err();
    assert!(error.contains("certificate verify failed"), "{error}");

    // curl checks the IP SAN its own way.
    if crate::support::require("curl") {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                fake.ca_pem().to_str().unwrap(),
                &format!("{}/api/v1/nothing", fake.url()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Route GET:/api/v1/nothing not found")
        );
    }
}

#[test]
fn injected_faults_hit_only_the_matching_requests() {
    let (fake, token) = current();
    let list = "/api/v3/secrets/raw?workspaceId=p1&environment=dev";
    let body = json!({"statusCode": 429, "message": "slow down"});
    let fault = Fault::Status {
        status: 429,
        body: body.clone(),
        retry_after: Some("2".into()),
    };
    fake.inject("GET", "/api/v3/secrets", fault, 2);
    fake.inject(
        "POST",
        "/api/v1/auth",
        Fault::Status {
            status: 503,
            body: json!({}),
            retry_after: None,
        },
        1,
    );
    for _ in 0..2 {
        let reply = get(&fake, &token, list);
        assert_eq!(
            (
                reply.status,
                reply.header("retry-after"),
                reply.body.as_ref()
            ),
            (429, Some("2"), Some(&body))
        );
    }
    assert_eq!(get(&fake, &token, list).status, 200);
    let login = json!({"clientId": "client", "clientSecret": "secret"});
    assert_eq!(
        fake.send(
            "POST",
            "/api/v1/auth/universal-auth/login",
            &[],
            Some(&login)
        )
        .status,
        503
    );
    assert_eq!(
        fake.send(
            "POST",
            "/api/v1/auth/universal-auth/login",
            &[],
            Some(&login)
        )
        .status,
        200
    );

    fake.inject("*", "/api/v3", Fault::Close, 1);
    let error = send(&fake.url(), None, "GET", list, &[], None).unwrap_err();
    assert!(error.contains("no complete response"), "{error}");

    fake.inject(
        "GET",
        "/api/v3",
        Fault::Delay(Duration::from_millis(300)),
        1,
    );
    let started = Instant::now();
    assert_eq!(get(&fake, &token, list).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Every request is recorded, faulted ones included, with decoded query and body.
    let requests = fake.requests();
    let logins: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/api/v1/auth/universal-auth/login")
        .collect();
    assert_eq!(logins.len(), 3);
    assert!(logins.iter().all(|r| r.method == "POST"));
    assert_eq!(logins[1].body.as_ref(), Some(&login));
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.query.get("workspaceId").map(String::as_str) == Some("p1"))
            .count(),
        5
    );
    assert!(requests
        .iter()
        .all(|r| !r.headers.contains_key("Authorization")));
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[test]
fn stop_refuses_connections_and_restart_serves_the_same_state() {
    let (mut fake, token) = current();
    let target = "/api/v3/secrets/raw/A?workspaceId=p1&environment=dev&secretPath=/app";
    assert_eq!(get(&fake, &token, target).status, 200);
    fake.stop();
    let error = send(&fake.url(), None, "GET", target, &[], None).unwrap_err();
    assert!(error.contains("refused"), "{error}");
    fake.restart();
    assert_eq!(
        get(&fake, &token, target).body.unwrap()["secret"]["secretValue"],
        "1"
    );
}

fn aws_body(identity: &str, region: &str, body: &str) -> Value {
    let headers = json!({
        "Authorization": format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/{region}/sts/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-date, Signature={}", "ab".repeat(32)),
        "X-Amz-Date": "20261122T050625Z",
        "Host": format!("sts.{region}.amazonaws.com"),
    });
    json!({
        "identityId": identity, "iamHttpRequestMethod": "POST",
        "iamRequestBody": STANDARD.encode(body),
        "iamRequestHeaders": STANDARD.encode(headers.to_string()),
    })
}

#[test]
fn cloud_logins_check_what_they_can() {
    let fake = FakeInfisical::start(Generation::Legacy2024);
    fake.add_aws_identity("aws-id", 100, 200);
    fake.add_gcp_identity("gcp-id", "gcp.jwt.token", 10, 20);
    fake.add_azure_identity("az-id", "az.jwt.token", 10, 20);
    let sts = "Action=GetCallerIdentity&Version=2011-06-15";
    let post = |route: &str, body: Value| {
        fake.send(
            "POST",
            &format!("/api/v1/auth/{route}/login"),
            &[],
            Some(&body),
        )
    };

    let ok = post("aws-auth", aws_body("aws-id", "eu-west-1", sts));
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(
        (
            ok.body.as_ref().unwrap()["expiresIn"].as_u64(),
            ok.body.unwrap()["accessTokenMaxTTL"].as_u64()
        ),
        (Some(100), Some(200))
    );
    let bad_region = post("aws-auth", aws_body("aws-id", "EU_WEST", sts));
    assert_eq!(
        (bad_region.status, &bad_region.body.unwrap()["message"]),
        (400, &json!("Invalid AWS region"))
    );
    assert_eq!(
        post("aws-auth", aws_body("aws-id", "eu-west-1", "Action=Other")).status,
        403
    );
    assert_eq!(
        post("aws-auth", aws_body("other-id", "eu-west-1", sts)).status,
        403
    );
    let seen = fake.aws_logins();
    assert_eq!(seen.len(), 4);
    assert!(seen[0].accepted && !seen[2].accepted);
    assert_eq!(
        (
            seen[0].region.as_str(),
            seen[0].access_key_id.as_str(),
            seen[0].date.as_str()
        ),
        ("eu-west-1", "AKIDEXAMPLE", "20261122")
    );
    assert_eq!(seen[0].headers["X-Amz-Date"], "20261122T050625Z");
    assert_eq!(
        (
            seen[0].identity_id.as_str(),
            seen[0].method.as_str(),
            seen[0].body.as_str()
        ),
        ("aws-id", "POST", sts)
    );

    assert_eq!(
        post(
            "gcp-auth",
            json!({"identityId": "gcp-id", "jwt": "gcp.jwt.token"})
        )
        .status,
        200
    );
    assert_eq!(
        post(
            "gcp-auth",
            json!({"identityId": "gcp-id", "jwt": "az.jwt.token"})
        )
        .status,
        403
    );
    assert_eq!(
        post(
            "azure-auth",
            json!({"identityId": "az-id", "jwt": "az.jwt.token"})
        )
        .status,
        200
    );
    assert_eq!(
        post(
            "azure-auth",
            json!({"identityId": "gcp-id", "jwt": "gcp.jwt.token"})
        )
        .status,
        403
    );
    assert_eq!(fake.logins(), 3);
}

#[test]
fn renew_stops_at_the_max_ttl() {
    let fake = FakeInfisical::start(Generation::Legacy2024);
    fake.add_universal_auth("short", "s", 10, 25);
    fake.add_universal_auth("flat", "f", 30, 30);
    let renew = |token: &str| {
        fake.send(
            "POST",
            "/api/v1/auth/token/renew",
            &[],
            Some(&json!({"accessToken": token})),
        )
    };

    let token = login(&fake, "short", "s");
    fake.advance(8);
    assert_eq!(renew(&token).status, 200);
    fake.advance(8);
    // Renewed at 8 with TTL 10: still valid at 16, but 16 + 10 passes the max TTL of 25.
    let past_max = renew(&token);
    assert_eq!(
        (past_max.status, &past_max.body.unwrap()["message"]),
        (
            403,
            &json!("Failed to renew MI access token past its Max TTL expiration")
        )
    );
    // ... and the token is gone.
    assert_eq!(
        renew(&token).body.unwrap()["message"],
        "You are not allowed to access this resource"
    );

    // TTL == max TTL (the server defaults): renewing never works, as on the live server.
    let token = login(&fake, "flat", "f");
    assert_eq!(renew(&token).status, 403);
    assert_eq!(fake.logins(), 2);
}

/// The rate limiter answers like fixtures 90-93, header values and 429 body included: 60
/// requests per route per 60 s window, the 60th saying `x-ratelimit-remaining: 0`, the 61st
/// a 429 whose `retry-after` is the rest of the window; another route unaffected; the window
/// over, allowed again.
#[test]
fn the_rate_limiter_answers_like_fixtures_90_to_93() {
    let recorded = fixtures();
    let fake = FakeInfisical::start(Generation::Legacy2024);
    fake.set_rate_limit(Some(60));
    fake.add_universal_auth(ADMIN_CLIENT, ADMIN_SECRET, 2_592_000, 2_592_000);
    fake.add_project("proj", "proj");
    fake.set_secret("proj", "dev", "/app", "APP_PORT", "8443");
    let token = login(&fake, ADMIN_CLIENT, ADMIN_SECRET);
    let list = "/api/v3/secrets/raw?workspaceId=proj&environment=dev&secretPath=%2Fapp";
    for _ in 0..59 {
        assert_eq!(get(&fake, &token, list).status, 200);
    }
    // The recording's 60th request came a second into its window.
    fake.advance(1);
    let headers = |n: u32, reply: &Reply, names: &[&str]| {
        let response = &recorded[&n]["response"];
        assert_eq!(reply.status, response["status"], "fixture {n}");
        for name in names {
            assert_eq!(
                reply.header(name),
                response["headers"][*name].as_str(),
                "{name} of fixture {n}"
            );
        }
    };
    let limits = [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ];
    headers(90, &get(&fake, &token, list), &limits);
    let limited = get(&fake, &token, list);
    headers(91, &limited, &[&limits[..], &["retry-after"]].concat());
    assert_eq!(
        limited.body.as_ref(),
        Some(&recorded[&91]["response"]["body"])
    );
    let other = get(
        &fake,
        &token,
        "/api/v3/secrets/raw/APP_PORT?workspaceId=proj&environment=dev&secretPath=%2Fapp",
    );
    headers(92, &other, &["x-ratelimit-limit"]);
    assert_eq!(other.header("x-ratelimit-remaining"), Some("59"));
    fake.advance(59);
    headers(93, &get(&fake, &token, list), &limits);
}
