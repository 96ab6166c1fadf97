//! Request handling: routing, authentication, rate limiting, validation, the handlers, error
//! bodies per generation and ETags.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Map, Value};

use super::auth;
use super::state::{iso, normalize, parse_query, stored_value, uuid, Folder, Secret, State};
use super::state::{Import, Version};
use super::{Generation, Recorded};

pub(super) struct Request {
    pub method: String,
    pub path: String,
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
        Request {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            target: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.to_string()),
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

    pub fn recorded(&self) -> Recorded {
        Recorded {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// The JSON body, or `null` (so validation reports every field as missing).
    fn json(&self) -> &Value {
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
fn require(body: &Value, fields: &[(&str, &str)]) -> Result<(), Fail> {
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
fn flags(req: &Request, names: &[&str]) -> Result<Vec<bool>, Fail> {
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
    List { v4: bool },
    Get { v4: bool, name: &'a str },
    Create(&'a str),
    Update(&'a str),
    Delete(&'a str),
    Batch,
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
        ("GET", ["api", "v4", "secrets", name]) if current => {
            (Route::Get { v4: true, name }, "/api/v4/secrets/:secretName")
        }
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
    if let Some((limit, remaining, reset, over)) = state.count(&format!("{} {pattern}", req.method))
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
    }
}

fn project_not_found() -> Fail {
    Fail::NotFound {
        legacy_error: "BadRequest",
        message: "Project not found during bot lookup.".into(),
    }
}

fn folder_not_found(error: &'static str) -> Fail {
    Fail::NotFound {
        legacy_error: error,
        message: "Folder not found for the given environment slug & secret path".into(),
    }
}

fn env_json(state: &State, project: usize, slug: &str) -> Value {
    state.env_of(project, slug).map_or(
        Value::Null,
        |e| json!({"name": e.name, "slug": e.slug, "id": e.id}),
    )
}

fn create_project(state: &mut State, body: &Value) -> Result<Value, Fail> {
    require_strings(body, &["projectName"])?;
    let name = str_field(body, "projectName").unwrap().to_owned();
    let slug = str_field(body, "slug")
        .map_or_else(|| name.to_lowercase().replace(' ', "-"), str::to_owned);
    let project = state.add_project(&uuid(), &name, &slug);
    let envs: Vec<Value> = project
        .envs
        .iter()
        .map(|e| json!({"name": e.name, "slug": e.slug, "id": e.id}))
        .collect();
    Ok(json!({"project": {
        "id": project.id, "name": project.name, "slug": project.slug, "autoCapitalization": true,
        "orgId": uuid(), "createdAt": project.created_at, "updatedAt": project.created_at,
        "version": 2, "upgradeStatus": null, "pitVersionLimit": 10, "kmsCertificateKeyId": null,
        "auditLogsRetentionDays": null, "kmsSecretManagerKeyId": null, "_id": project.id,
        "environments": envs,
    }}))
}

fn membership(
    state: &mut State,
    project: &str,
    identity: &str,
    body: &Value,
) -> Result<Value, Fail> {
    require_strings(body, &["role"])?;
    state
        .project_index(Some(project), None)
        .ok_or_else(project_not_found)?;
    state.set_role(identity, project, str_field(body, "role").unwrap());
    let now = iso(state.now);
    Ok(json!({"identityMembership": {
        "id": uuid(), "projectId": project, "identityId": identity, "createdAt": now, "updatedAt": now,
    }}))
}

fn folder_json(folder: &Folder, env_id: &str) -> Value {
    json!({
        "id": folder.id, "name": folder.name, "version": 1, "createdAt": folder.created_at,
        "updatedAt": folder.created_at, "envId": env_id, "parentId": folder.parent_id,
        "isReserved": false,
    })
}

/// The project addressed by `workspaceId` in a write body, checked for write permission.
fn writable_project(
    state: &State,
    identity: &str,
    id: Option<&str>,
    slug: Option<&str>,
    what: &str,
) -> Result<usize, Fail> {
    let project = state
        .project_index(id, slug)
        .ok_or_else(project_not_found)?;
    if !state.may_write(identity, &state.projects[project].id) {
        return Err(Fail::PermissionDenied(format!(
            "You are not allowed to {what}"
        )));
    }
    Ok(project)
}

fn create_folder(state: &mut State, identity: &str, body: &Value) -> Result<Value, Fail> {
    require_strings(body, &["workspaceId", "environment", "name"])?;
    let project = writable_project(
        state,
        identity,
        str_field(body, "workspaceId"),
        None,
        "create on secretFolders",
    )?;
    let now = iso(state.now);
    let env = state.projects[project]
        .envs
        .iter_mut()
        .find(|e| Some(e.slug.as_str()) == str_field(body, "environment"))
        .ok_or(Fail::BadRequest {
            error: "Create folder",
            message: "Environment not found".into(),
        })?;
    let mut path = super::state::segments(str_field(body, "path").unwrap_or("/"));
    path.push(str_field(body, "name").unwrap());
    let env_id = env.id.clone();
    let folder = env.root.ensure(&path, &now);
    Ok(json!({"folder": folder_json(folder, &env_id)}))
}

fn list_folders(state: &mut State, req: &Request) -> Result<Value, Fail> {
    let project = state
        .project_index(req.query("workspaceId"), None)
        .ok_or_else(project_not_found)?;
    let env = req.query("environment").unwrap_or_default();
    let env_id = state
        .env_of(project, env)
        .map(|e| e.id.clone())
        .unwrap_or_default();
    let folders: Vec<Value> = state
        .folder(project, env, req.query("path").unwrap_or("/"))
        .map(|f| f.children.iter().map(|c| folder_json(c, &env_id)).collect())
        .unwrap_or_default();
    Ok(json!({"folders": folders}))
}

fn import_json(state: &State, project: usize, import: &Import, folder_id: &str) -> Value {
    json!({
        "id": import.id, "version": 1, "importPath": import.path, "position": import.position,
        "createdAt": import.created_at, "updatedAt": import.created_at, "folderId": folder_id,
        "isReplication": false, "isReplicationSuccess": null, "replicationStatus": null,
        "lastReplicated": null, "isReserved": false,
        "importEnv": env_json(state, project, &import.env),
    })
}

fn create_import(state: &mut State, identity: &str, body: &Value) -> Result<Value, Fail> {
    require(
        body,
        &[
            ("workspaceId", "string"),
            ("environment", "string"),
            ("import", "object"),
        ],
    )?;
    require_strings(&body["import"], &["environment", "path"])?;
    let project = writable_project(
        state,
        identity,
        str_field(body, "workspaceId"),
        None,
        "create on secretImports",
    )?;
    let env = str_field(body, "environment").unwrap();
    let path = str_field(body, "path").unwrap_or("/");
    if state.folder(project, env, path).is_none() {
        return Err(folder_not_found("Create secret import"));
    }
    let project_id = state.projects[project].id.clone();
    let (from_env, from_path) = (
        str_field(&body["import"], "environment").unwrap(),
        str_field(&body["import"], "path").unwrap(),
    );
    state.add_import(&project_id, env, path, from_env, from_path);
    let folder = state.folder(project, env, path).unwrap();
    let import = folder.imports.last().unwrap();
    Ok(json!({
        "message": "Successfully created secret import",
        "secretImport": import_json(state, project, import, &folder.id),
    }))
}

fn list_imports(state: &mut State, req: &Request) -> Result<Value, Fail> {
    let project = state
        .project_index(req.query("workspaceId"), None)
        .ok_or_else(project_not_found)?;
    let env = req.query("environment").unwrap_or_default();
    let imports: Vec<Value> = state
        .folder(project, env, req.query("path").unwrap_or("/"))
        .map(|f| {
            f.imports
                .iter()
                .map(|i| import_json(state, project, i, &f.id))
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({"message": "Successfully fetched secret imports", "secretImports": imports}))
}

/// A secret as the routes show it; callers add `secretPath` or `tags` where the route does.
fn item(
    project_id: &str,
    env: &str,
    secret: &Secret,
    version: &Version,
    value: String,
) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "id": secret.id, "_id": secret.id, "workspace": project_id, "environment": env,
        "version": version.version, "type": "shared", "secretKey": secret.key,
        "secretValue": value, "secretComment": version.comment,
    }) else {
        unreachable!()
    };
    map
}

/// Reads' project (by id, or by slug on v3) and environment; `Err` when either is missing.
fn read_target<'r>(state: &State, req: &'r Request, v4: bool) -> Result<(usize, &'r str), Fail> {
    let (id, slug) = if v4 {
        (req.query("projectId"), None)
    } else {
        (req.query("workspaceId"), req.query("workspaceSlug"))
    };
    let env = req.query("environment");
    if (id.is_none() && slug.is_none()) || env.is_none() {
        let what = if v4 { "project" } else { "workspace" };
        return Err(Fail::BadRequest {
            error: "BadRequest",
            message: format!("Missing {what} id or environment"),
        });
    }
    let project = state
        .project_index(id, slug)
        .ok_or_else(project_not_found)?;
    Ok((project, env.unwrap()))
}

/// Replaces `${KEY}` (same folder, only when `local`), `${env.KEY}` (environment root) and
/// `${env.a.b.KEY}` (env + /a/b); unknown references stay as written.
fn expand(
    state: &State,
    project: usize,
    env: &str,
    path: &str,
    value: &str,
    local: bool,
    depth: u32,
) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let reference = &rest[start + 2..start + len];
        let parts: Vec<&str> = reference.split('.').collect();
        let target = match parts.as_slice() {
            [key] if local => Some((env.to_owned(), path.to_owned(), *key)),
            [env, folders @ .., key] => {
                Some((env.to_string(), format!("/{}", folders.join("/")), *key))
            }
            _ => None,
        };
        let resolved = target.and_then(|(env, path, key)| {
            let secret = state.folder(project, &env, &path)?.secret(key)?;
            let raw = &secret.current().value;
            // Nested references resolve in the referenced secret's own folder.
            Some(if depth < 5 {
                expand(
                    state,
                    project,
                    &env,
                    &normalize(&path),
                    raw,
                    true,
                    depth + 1,
                )
            } else {
                raw.clone()
            })
        });
        match resolved {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + len + 1]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// The value a read shows: expanded when asked, and then a multi-line value whose
/// `skipMultilineEncoding` is set comes back quoted with `\n` escapes (fixture 53).
fn shown_value(
    state: &State,
    project: usize,
    env: &str,
    path: &str,
    secret: &Secret,
    version: &Version,
    expansion: Option<bool>,
) -> String {
    let Some(local) = expansion else {
        return version.value.clone();
    };
    let value = expand(state, project, env, path, &version.value, local, 0);
    if secret.skip_multiline && value.contains('\n') {
        format!("\"{}\"", value.replace('\n', "\\n"))
    } else {
        value
    }
}

fn walk<'f>(
    folder: &'f Folder,
    path: String,
    recursive: bool,
    out: &mut Vec<(String, &'f Folder)>,
) {
    out.push((path.clone(), folder));
    if recursive {
        for child in &folder.children {
            walk(
                child,
                normalize(&format!("{path}/{}", child.name)),
                true,
                out,
            );
        }
    }
}

fn list(state: &mut State, req: &Request, v4: bool) -> Result<Value, Fail> {
    let [recursive, include_imports, expand_refs] = flags(
        req,
        &["recursive", "include_imports", "expandSecretReferences"],
    )?[..] else {
        unreachable!()
    };
    let (project, env) = read_target(state, req, v4)?;
    let project_id = state.projects[project].id.clone();
    let path = normalize(req.query("secretPath").unwrap_or("/"));
    let mut folders = Vec::new();
    if let Some(folder) = state.folder(project, env, &path) {
        walk(folder, path, recursive, &mut folders);
    }
    let mut secrets = Vec::new();
    let mut imports = Vec::new();
    for (path, folder) in &folders {
        for secret in &folder.secrets {
            let value = shown_value(
                state,
                project,
                env,
                path,
                secret,
                secret.current(),
                expand_refs.then_some(true),
            );
            let mut item = item(&project_id, env, secret, secret.current(), value);
            item.insert("secretPath".into(), json!(path));
            secrets.push(Value::Object(item));
        }
        if !include_imports {
            continue;
        }
        for import in &folder.imports {
            // Imported secrets are listed as stored: never expanded (fixture 42).
            let Some(source) = state.folder(project, &import.env, &import.path) else {
                continue;
            };
            let items: Vec<Value> = source
                .secrets
                .iter()
                .map(|s| {
                    Value::Object(item(
                        &project_id,
                        &import.env,
                        s,
                        s.current(),
                        s.current().value.clone(),
                    ))
                })
                .collect();
            imports.push(json!({
                "secretPath": import.path, "environment": import.env, "folderId": source.id,
                "secrets": items,
            }));
        }
    }
    Ok(json!({"secrets": secrets, "imports": imports}))
}

fn get(state: &mut State, req: &Request, v4: bool, name: &str) -> Result<Value, Fail> {
    let [include_imports, expand_refs] =
        flags(req, &["include_imports", "expandSecretReferences"])?[..]
    else {
        unreachable!()
    };
    let (project, env) = read_target(state, req, v4)?;
    let project_id = state.projects[project].id.clone();
    let path = normalize(req.query("secretPath").unwrap_or("/"));
    let folder = state
        .folder(project, env, &path)
        .ok_or_else(|| folder_not_found("Create secret"))?;
    if let Some(secret) = folder.secret(name) {
        // `version=` does not select a version on the 2024 server: any value gives the
        // oldest row (fixtures 67, 68).
        let version = if req.query("version").is_some() {
            &secret.history[0]
        } else {
            secret.current()
        };
        // The 2024 single-secret route leaves same-folder references alone (fixture 64).
        let local = state.generation == Generation::Current;
        let value = shown_value(
            state,
            project,
            env,
            &path,
            secret,
            version,
            expand_refs.then_some(local),
        );
        let mut item = item(&project_id, env, secret, version, value);
        if v4 {
            item.insert("secretPath".into(), json!(path));
        }
        // The version-row answer of the 2024 server has no tags (fixtures 67, 68).
        if req.query("version").is_none() {
            item.insert("tags".into(), json!([]));
        }
        return Ok(json!({"secret": item}));
    }
    if include_imports {
        for import in &folder.imports {
            if let Some(secret) = state
                .folder(project, &import.env, &import.path)
                .and_then(|f| f.secret(name))
            {
                let item = item(
                    &project_id,
                    &import.env,
                    secret,
                    secret.current(),
                    secret.current().value.clone(),
                );
                return Ok(json!({"secret": item}));
            }
        }
    }
    Err(Fail::NotFound {
        legacy_error: "BadRequest",
        message: "Secret not found".into(),
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Write {
    Create,
    Update,
    Delete,
}

fn write(
    state: &mut State,
    identity: &str,
    body: &Value,
    name: &str,
    kind: Write,
) -> Result<Value, Fail> {
    let mut required = vec!["workspaceId", "environment"];
    if kind == Write::Create {
        required.push("secretValue");
    }
    require_strings(body, &required)?;
    let action = match kind {
        Write::Create => "create",
        Write::Update => "edit",
        Write::Delete => "delete",
    };
    let project = writable_project(
        state,
        identity,
        str_field(body, "workspaceId"),
        None,
        &format!("{action} on secrets"),
    )?;
    let project_id = state.projects[project].id.clone();
    let env = str_field(body, "environment").unwrap().to_owned();
    let path = normalize(str_field(body, "secretPath").unwrap_or("/"));
    let folder = state.projects[project]
        .envs
        .iter_mut()
        .find(|e| e.slug == env)
        .and_then(|e| e.root.find_mut(&super::state::segments(&path)))
        .ok_or_else(|| folder_not_found("Create secret"))?;
    let position = folder.secrets.iter().position(|s| s.key == name);
    let not_found = || Fail::BadRequest {
        error: "BadRequest",
        message: format!("Secret not found: blind index {name}"),
    };
    let secret = match (kind, position) {
        (Write::Create, Some(_)) => {
            return Err(Fail::BadRequest {
                error: "BadRequest",
                message: "Secret already exist".into(),
            })
        }
        (Write::Create, None) => {
            folder.secrets.push(new_secret(name, body, 1));
            folder.secrets.last().unwrap()
        }
        (Write::Update, Some(i)) => {
            let secret = &mut folder.secrets[i];
            let mut next = secret.current().clone();
            next.version += 1;
            if let Some(value) = str_field(body, "secretValue") {
                next.value = stored_value(value);
            }
            if let Some(comment) = str_field(body, "secretComment") {
                next.comment = comment.to_owned();
            }
            if let Some(skip) = body.get("skipMultilineEncoding").and_then(Value::as_bool) {
                secret.skip_multiline = skip;
            }
            secret.history.push(next);
            &folder.secrets[i]
        }
        (Write::Delete, Some(i)) => {
            let secret = folder.secrets.remove(i);
            let value = secret.current().value.clone();
            return Ok(
                json!({"secret": item(&project_id, &env, &secret, secret.current(), value)}),
            );
        }
        (_, None) => return Err(not_found()),
    };
    let value = secret.current().value.clone();
    Ok(json!({"secret": item(&project_id, &env, secret, secret.current(), value)}))
}

fn new_secret(key: &str, fields: &Value, version: u64) -> Secret {
    Secret {
        id: uuid(),
        key: key.to_owned(),
        skip_multiline: fields
            .get("skipMultilineEncoding")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        history: vec![Version {
            version,
            value: stored_value(str_field(fields, "secretValue").unwrap_or_default()),
            comment: str_field(fields, "secretComment")
                .unwrap_or_default()
                .to_owned(),
        }],
    }
}

/// `POST /api/v3/secrets/batch/raw`: all or nothing; batch-created secrets report version 0.
fn batch_create(state: &mut State, identity: &str, body: &Value) -> Result<Value, Fail> {
    require(
        body,
        &[
            ("projectSlug", "string"),
            ("environment", "string"),
            ("secrets", "array"),
        ],
    )?;
    let entries = body["secrets"].as_array().unwrap();
    for entry in entries {
        require_strings(entry, &["secretKey", "secretValue"])?;
    }
    let project = writable_project(
        state,
        identity,
        None,
        str_field(body, "projectSlug"),
        "create on secrets",
    )?;
    let project_id = state.projects[project].id.clone();
    let env = str_field(body, "environment").unwrap().to_owned();
    let path = normalize(str_field(body, "secretPath").unwrap_or("/"));
    let folder = state.projects[project]
        .envs
        .iter_mut()
        .find(|e| e.slug == env)
        .and_then(|e| e.root.find_mut(&super::state::segments(&path)))
        .ok_or_else(|| folder_not_found("Create secret"))?;
    if entries
        .iter()
        .any(|e| folder.secret(str_field(e, "secretKey").unwrap()).is_some())
    {
        return Err(Fail::BadRequest {
            error: "BadRequest",
            message: "Secret already exist".into(),
        });
    }
    let mut created = Vec::new();
    for entry in entries {
        let secret = new_secret(str_field(entry, "secretKey").unwrap(), entry, 0);
        let value = secret.current().value.clone();
        created.push(Value::Object(item(
            &project_id,
            &env,
            &secret,
            secret.current(),
            value,
        )));
        folder.secrets.push(secret);
    }
    Ok(json!({"secrets": created}))
}
