//! Request handling: routing, authentication, rate limiting, validation, the handlers, error
//! bodies per generation and ETags.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Map, Value};

use super::auth;
use super::projects::{
    create_folder, create_import, create_project, list_folders, list_imports, membership,
};
use super::secrets::{batch_create, batch_update, get, list, write, Write};
use super::state::{parse_query, uuid, State};
use super::{Generation, Recorded};

pub(super) struct Request {
    pub method: String,
    pub path: String,
    /// The client address the rate limiter keys by (Infisical limits per client IP): the
    /// connection's, 127.0.0.1, unless the URL starts with `/from/ADDR`, which stands in
    /// for a client of its own address (the fleet bench's hosts) and is removed.
    client: String,
    /// Path and query exactly as sent (fastify echoes it in its 404 message).
    target: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Option<Value>,
}

impl Request {
    pub fn new(parts: &hyper::http::request::Parts, bytes: &[u8]) -> Request {
        let body = if bytes.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
            )
        };
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.to_string());
        let (client, prefix) = match parts.uri.path().strip_prefix("/from/") {
            Some(rest) => {
                let addr = rest.split('/').next().unwrap_or_default();
                (addr.to_owned(), "/from/".len() + addr.len())
            }
            None => ("127.0.0.1".to_owned(), 0),
        };
        Request {
            method: parts.method.to_string(),
            path: parts.uri.path()[prefix..].to_owned(),
            client,
            target: target[prefix..].to_owned(),
            query: parse_query(parts.uri.query().unwrap_or("")),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
        }
    }

    pub fn recorded(&self, at: u64) -> Recorded {
        Recorded {
            at,
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    pub(super) fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// The JSON body, or `null` (so validation reports every field as missing).
    pub(super) fn json(&self) -> &Value {
        self.body.as_ref().unwrap_or(&Value::Null)
    }
}

pub(super) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Reply {
    /// A JSON reply with the server's strong ETag: the quoted base64 SHA-1 of the body.
    pub fn json(status: u16, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).unwrap();
        let etag = format!("\"{}\"", STANDARD.encode(openssl::sha::sha1(&bytes)));
        Reply {
            status,
            headers: vec![
                (
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("etag".into(), etag),
            ],
            body: Some(bytes),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn into_response(self) -> hyper::Response<Full<Bytes>> {
        let mut response = hyper::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            response = response.header(name, value);
        }
        response
            .body(Full::new(Bytes::from(self.body.unwrap_or_default())))
            .unwrap()
    }
}

/// Why a request failed, independent of how each generation reports it.
pub(super) enum Fail {
    /// UnauthorizedError: bad credentials, unknown, revoked or expired token.
    Unauthorized(String),
    TokenMissing,
    /// A jsonwebtoken error: "jwt malformed", "invalid signature", "jwt expired".
    Jwt(&'static str),
    /// zod issues.
    Validation(Vec<Value>),
    BadRequest {
        error: &'static str,
        message: String,
    },
    /// 400 with `legacy_error` on the 2024 server, 404 NotFoundError on the newest.
    NotFound {
        legacy_error: &'static str,
        message: String,
    },
    PermissionDenied(String),
}

impl Fail {
    fn into_parts(self, generation: Generation) -> (u16, Value) {
        let legacy = generation == Generation::Legacy2024;
        let (status, error, message, error_first) = match self {
            Fail::Unauthorized(m) => (
                if legacy { 403 } else { 401 },
                "UnauthorizedError",
                json!(m),
                false,
            ),
            Fail::TokenMissing => (
                if legacy { 403 } else { 401 },
                "Unauthorized access",
                json!("Token missing"),
                false,
            ),
            Fail::Jwt(m) if legacy => (500, "Internal Server Error", json!(m), true),
            Fail::Jwt(m) => {
                let message = if m == "jwt expired" {
                    "Your token has expired. Please re-authenticate."
                } else {
                    "Invalid token"
                };
                (403, "TokenError", json!(message), false)
            }
            Fail::Validation(issues) => (
                if legacy { 403 } else { 422 },
                "ValidationFailure",
                Value::Array(issues),
                true,
            ),
            Fail::BadRequest { error, message } => (400, error, json!(message), false),
            Fail::NotFound {
                legacy_error,
                message,
            } if legacy => (400, legacy_error, json!(message), false),
            Fail::NotFound { message, .. } => (404, "NotFoundError", json!(message), false),
            Fail::PermissionDenied(m) => (
                if legacy { 401 } else { 403 },
                "PermissionDenied",
                json!(m),
                true,
            ),
        };
        (
            status,
            error_body(generation, status, error, message, error_first),
        )
    }
}

/// An error body; the key order follows the recordings (it decides the ETag).
fn error_body(
    generation: Generation,
    status: u16,
    error: &str,
    message: Value,
    error_first: bool,
) -> Value {
    let mut body = Map::new();
    if generation == Generation::Current {
        body.insert("reqId".into(), json!(format!("req-{}", &uuid()[..13])));
    }
    body.insert("statusCode".into(), json!(status));
    if error_first {
        body.insert("error".into(), json!(error));
        body.insert("message".into(), message);
    } else {
        body.insert("message".into(), message);
        body.insert("error".into(), json!(error));
    }
    Value::Object(body)
}

pub(super) fn str_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// zod-style `invalid_type` issues for fields of `body` that are missing or of the wrong type.
pub(super) fn require(body: &Value, fields: &[(&str, &str)]) -> Result<(), Fail> {
    let issues: Vec<Value> = fields
        .iter()
        .filter_map(|(name, expected)| {
            let received = body.get(*name).map_or("undefined", type_name);
            (received != *expected).then(|| {
                let message = if received == "undefined" {
                    "Required".to_owned()
                } else {
                    format!("Expected {expected}, received {received}")
                };
                json!({"code": "invalid_type", "expected": expected, "received": received,
                       "path": [name], "message": message})
            })
        })
        .collect();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Fail::Validation(issues))
    }
}

pub(super) fn require_strings(body: &Value, names: &[&str]) -> Result<(), Fail> {
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (*n, "string")).collect();
    require(body, &fields)
}

/// The string booleans of the query: only "true" and "false" pass (a zod enum).
pub(super) fn flags(req: &Request, names: &[&str]) -> Result<Vec<bool>, Fail> {
    let mut issues = Vec::new();
    let values = names
        .iter()
        .map(|name| match req.query(name) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                issues.push(json!({
                    "received": other, "code": "invalid_enum_value", "options": ["true", "false"],
                    "path": [name],
                    "message": format!("Invalid enum value. Expected 'true' | 'false', received '{other}'"),
                }));
                false
            }
        })
        .collect();
    if issues.is_empty() {
        Ok(values)
    } else {
        Err(Fail::Validation(issues))
    }
}

#[derive(Clone, Copy)]
enum Route<'a> {
    UaLogin,
    AwsLogin,
    GcpLogin,
    AzureLogin,
    Renew,
    Revoke,
    CreateProject,
    Membership(&'a str, &'a str),
    CreateFolder,
    ListFolders,
    CreateImport,
    ListImports,
    List {
        v4: bool,
    },
    Get {
        v4: bool,
        name: &'a str,
    },
    Create(&'a str),
    Update(&'a str),
    Delete(&'a str),
    Batch,
    /// `PATCH /api/v4/secrets/batch` (newest servers only).
    BatchUpdateV4,
    PkiIssueFromCa(&'a str),
    PkiCreateCa,
    PkiCaCertificate(&'a str),
    PkiLeaf(&'a str),
    PkiRevoke(&'a str),
    CertCreate,
    CertRequest(&'a str),
    CertBundle(&'a str),
    CertRenew(&'a str),
}

/// The route and its pattern (the rate-limit bucket), or `None` for fastify's 404.
fn route<'a>(
    generation: Generation,
    method: &str,
    path: &'a str,
) -> Option<(Route<'a>, &'static str)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let current = generation == Generation::Current;
    let found = match (method, segments.as_slice()) {
        ("POST", ["api", "v1", "auth", "universal-auth", "login"]) => {
            (Route::UaLogin, "/api/v1/auth/universal-auth/login")
        }
        ("POST", ["api", "v1", "auth", "aws-auth", "login"]) => {
            (Route::AwsLogin, "/api/v1/auth/aws-auth/login")
        }
        ("POST", ["api", "v1", "auth", "gcp-auth", "login"]) => {
            (Route::GcpLogin, "/api/v1/auth/gcp-auth/login")
        }
        ("POST", ["api", "v1", "auth", "azure-auth", "login"]) => {
            (Route::AzureLogin, "/api/v1/auth/azure-auth/login")
        }
        ("POST", ["api", "v1", "auth", "token", "renew"]) => {
            (Route::Renew, "/api/v1/auth/token/renew")
        }
        ("POST", ["api", "v1", "auth", "token", "revoke"]) => {
            (Route::Revoke, "/api/v1/auth/token/revoke")
        }
        ("POST", ["api", "v2", "workspace"]) => (Route::CreateProject, "/api/v2/workspace"),
        ("POST", ["api", "v2", "workspace", project, "identity-memberships", identity]) => (
            Route::Membership(project, identity),
            "/api/v2/workspace/:projectId/identity-memberships/:identityId",
        ),
        ("POST", ["api", "v1", "folders"]) => (Route::CreateFolder, "/api/v1/folders"),
        ("GET", ["api", "v1", "folders"]) => (Route::ListFolders, "/api/v1/folders"),
        ("POST", ["api", "v1", "secret-imports"]) => {
            (Route::CreateImport, "/api/v1/secret-imports")
        }
        ("GET", ["api", "v1", "secret-imports"]) => (Route::ListImports, "/api/v1/secret-imports"),
        ("GET", ["api", "v3", "secrets", "raw"]) => {
            (Route::List { v4: false }, "/api/v3/secrets/raw")
        }
        ("GET", ["api", "v3", "secrets", "raw", name]) => (
            Route::Get { v4: false, name },
            "/api/v3/secrets/raw/:secretName",
        ),
        ("POST", ["api", "v3", "secrets", "raw", name]) => {
            (Route::Create(name), "/api/v3/secrets/raw/:secretName")
        }
        ("PATCH", ["api", "v3", "secrets", "raw", name]) => {
            (Route::Update(name), "/api/v3/secrets/raw/:secretName")
        }
        ("DELETE", ["api", "v3", "secrets", "raw", name]) => {
            (Route::Delete(name), "/api/v3/secrets/raw/:secretName")
        }
        ("POST", ["api", "v3", "secrets", "batch", "raw"]) => {
            (Route::Batch, "/api/v3/secrets/batch/raw")
        }
        ("GET", ["api", "v4", "secrets"]) if current => {
            (Route::List { v4: true }, "/api/v4/secrets")
        }
        ("PATCH", ["api", "v4", "secrets", "batch"]) if current => {
            (Route::BatchUpdateV4, "/api/v4/secrets/batch")
        }
        ("GET", ["api", "v4", "secrets", name]) if current => {
            (Route::Get { v4: true, name }, "/api/v4/secrets/:secretName")
        }
        ("POST", ["api", "v1", "pki", "ca", ca, "issue-certificate"]) if !current => (
            Route::PkiIssueFromCa(ca),
            "/api/v1/pki/ca/:caId/issue-certificate",
        ),
        ("POST", ["api", "v1", "pki", "ca"]) if !current => (Route::PkiCreateCa, "/api/v1/pki/ca"),
        ("GET", ["api", "v1", "pki", "ca", ca, "certificate"]) if !current => (
            Route::PkiCaCertificate(ca),
            "/api/v1/pki/ca/:caId/certificate",
        ),
        ("GET", ["api", "v1", "pki", "certificates", serial]) if !current => (
            Route::PkiLeaf(serial),
            "/api/v1/pki/certificates/:serialNumber",
        ),
        ("POST", ["api", "v1", "pki", "certificates", serial, "revoke"]) if !current => (
            Route::PkiRevoke(serial),
            "/api/v1/pki/certificates/:serialNumber/revoke",
        ),
        ("POST", ["api", "v1", "cert-manager", "certificates"]) if current => {
            (Route::CertCreate, "/api/v1/cert-manager/certificates")
        }
        ("GET", ["api", "v1", "cert-manager", "certificates", "certificate-requests", id])
            if current =>
        {
            (
                Route::CertRequest(id),
                "/api/v1/cert-manager/certificates/certificate-requests/:id",
            )
        }
        ("GET", ["api", "v1", "cert-manager", "certificates", id, "bundle"]) if current => (
            Route::CertBundle(id),
            "/api/v1/cert-manager/certificates/:id/bundle",
        ),
        ("POST", ["api", "v1", "cert-manager", "certificates", id, "renew"]) if current => (
            Route::CertRenew(id),
            "/api/v1/cert-manager/certificates/:id/renew",
        ),
        _ => return None,
    };
    Some(found)
}

impl Route<'_> {
    fn needs_token(self) -> bool {
        !matches!(
            self,
            Route::UaLogin
                | Route::AwsLogin
                | Route::GcpLogin
                | Route::AzureLogin
                | Route::Renew
                | Route::Revoke
        )
    }
}

pub(super) fn handle(state: &mut State, req: &Request) -> Reply {
    let generation = state.generation;
    let Some((route, pattern)) = route(generation, &req.method, &req.path) else {
        // Route lookup comes before authentication: no token needed for this 404.
        let body = json!({
            "message": format!("Route {}:{} not found", req.method, req.target),
            "error": "Not Found",
            "statusCode": 404,
        });
        return Reply::json(404, &body);
    };
    let identity = if route.needs_token() {
        match auth::authenticate(state, req.headers.get("authorization").map(String::as_str)) {
            Ok(identity) => identity,
            // Rejected before the rate limiter: no x-ratelimit-* headers.
            Err(fail) => {
                let (status, body) = fail.into_parts(generation);
                return Reply::json(status, &body);
            }
        }
    } else {
        String::new()
    };
    let mut limit_headers = Vec::new();
    if let Some((limit, remaining, reset, over)) =
        state.count(&format!("{} {} {pattern}", req.client, req.method))
    {
        limit_headers = vec![
            ("x-ratelimit-limit".to_owned(), limit.to_string()),
            ("x-ratelimit-remaining".to_owned(), remaining.to_string()),
            ("x-ratelimit-reset".to_owned(), reset.to_string()),
        ];
        if over {
            let body = match generation {
                Generation::Legacy2024 => json!({
                    "statusCode": 429, "error": "Too Many Requests",
                    "message": "Rate limit exceeded, retry in 1 minute",
                }),
                Generation::Current => error_body(
                    generation,
                    429,
                    "Too Many Requests",
                    json!(format!(
                        "Rate limit exceeded. Please try again in {reset} seconds"
                    )),
                    false,
                ),
            };
            state.throttled += 1;
            let mut reply = Reply::json(429, &body);
            reply
                .headers
                .push(("retry-after".into(), reset.to_string()));
            reply.headers.extend(limit_headers);
            return reply;
        }
    }
    let (status, body) = match dispatch(state, route, &identity, req) {
        Ok(body) => (200, body),
        Err(fail) => fail.into_parts(generation),
    };
    let mut reply = Reply::json(status, &body);
    reply.headers.extend(limit_headers);
    // Byte-for-byte comparison: weak validators and lists never match (fixtures 87, 88).
    if req.headers.get("if-none-match").map(String::as_str) == reply.header("etag") {
        reply.status = 304;
        reply.body = None;
    }
    reply
}

fn dispatch(state: &mut State, route: Route, identity: &str, req: &Request) -> Result<Value, Fail> {
    let body = req.json();
    match route {
        Route::UaLogin => auth::universal_auth(state, body),
        Route::AwsLogin => auth::aws_login(state, body),
        Route::GcpLogin => auth::jwt_login(state, "gcp", body),
        Route::AzureLogin => auth::jwt_login(state, "azure", body),
        Route::Renew => auth::renew(state, body),
        Route::Revoke => auth::revoke(state, body),
        Route::CreateProject => create_project(state, body),
        Route::Membership(project, identity) => membership(state, project, identity, body),
        Route::CreateFolder => create_folder(state, identity, body),
        Route::ListFolders => list_folders(state, req),
        Route::CreateImport => create_import(state, identity, body),
        Route::ListImports => list_imports(state, req),
        Route::List { v4 } => list(state, req, v4),
        Route::Get { v4, name } => get(state, req, v4, name),
        Route::Create(name) => write(state, identity, body, name, Write::Create),
        Route::Update(name) => write(state, identity, body, name, Write::Update),
        Route::Delete(name) => write(state, identity, body, name, Write::Delete),
        Route::Batch => batch_create(state, identity, body),
        Route::BatchUpdateV4 => batch_update(state, identity, body),
        Route::PkiIssueFromCa(ca) => super::pki::issue_from_ca(state, ca, body),
        Route::PkiCreateCa => super::pki::create_ca(state, body),
        Route::PkiCaCertificate(ca) => super::pki::ca_certificate(state, ca),
        Route::PkiLeaf(serial) => super::pki::leaf(state, serial),
        Route::PkiRevoke(serial) => super::pki::revoke(state, serial),
        Route::CertCreate => super::pki::create(state, body),
        Route::CertRequest(id) => super::pki::request(state, id),
        Route::CertBundle(id) => super::pki::bundle(state, id),
        Route::CertRenew(id) => super::pki::renew(state, id),
    }
}
