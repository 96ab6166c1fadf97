//! Handlers for the secret routes: list and get (v3 and v4) with imports and reference
//! expansion, the v3 writes and the v4 batch update (`mode` failOnNotFound|upsert|ignore).

use serde_json::{json, Map, Value};

use super::projects::{folder_not_found, project_not_found, writable_project};
use super::routes::{flags, require, require_strings, str_field, Fail, Request};
use super::state::{normalize, stored_value, uuid, Folder, Secret, State, Version};
use super::Generation;

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

pub(super) fn list(state: &mut State, req: &Request, v4: bool) -> Result<Value, Fail> {
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

pub(super) fn get(state: &mut State, req: &Request, v4: bool, name: &str) -> Result<Value, Fail> {
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
        // The later import wins, as the server's own import resolution walks them from the
        // last one back (and as psi's listing merges them).
        for import in folder.imports.iter().rev() {
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

/// The folder a write body names (`environment`, `secretPath`) in `project`, with the
/// project's ID and the environment slug. The server answers a missing folder as a failed
/// create, whatever the write was (fixture 19).
fn target_folder<'s>(
    state: &'s mut State,
    project: usize,
    body: &Value,
) -> Result<(String, String, &'s mut Folder), Fail> {
    let project_id = state.projects[project].id.clone();
    let env = str_field(body, "environment").unwrap().to_owned();
    let path = normalize(str_field(body, "secretPath").unwrap_or("/"));
    let folder = state.projects[project]
        .envs
        .iter_mut()
        .find(|e| e.slug == env)
        .and_then(|e| e.root.find_mut(&super::state::segments(&path)))
        .ok_or_else(|| folder_not_found("Create secret"))?;
    Ok((project_id, env, folder))
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Write {
    Create,
    Update,
    Delete,
}

pub(super) fn write(
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
    let (project_id, env, folder) = target_folder(state, project, body)?;
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
pub(super) fn batch_create(state: &mut State, identity: &str, body: &Value) -> Result<Value, Fail> {
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
    let (project_id, env, folder) = target_folder(state, project, body)?;
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

/// `PATCH /api/v4/secrets/batch`: `mode` `failOnNotFound` (default: a missing key fails the
/// whole batch), `upsert` (missing keys are created with version 1) or `ignore` (missing
/// keys are left out); all or nothing. The folder must exist.
pub(super) fn batch_update(state: &mut State, identity: &str, body: &Value) -> Result<Value, Fail> {
    require(
        body,
        &[
            ("projectId", "string"),
            ("environment", "string"),
            ("secrets", "array"),
        ],
    )?;
    let entries = body["secrets"].as_array().unwrap();
    for entry in entries {
        require_strings(entry, &["secretKey"])?;
    }
    let mode = str_field(body, "mode").unwrap_or("failOnNotFound");
    if !matches!(mode, "failOnNotFound" | "upsert" | "ignore") {
        return Err(Fail::Validation(vec![json!({
            "code": "invalid_enum_value",
            "path": ["mode"],
            "message": format!("Invalid enum value. Expected 'failOnNotFound' | 'upsert' | 'ignore', received '{mode}'"),
        })]));
    }
    let project = writable_project(
        state,
        identity,
        str_field(body, "projectId"),
        None,
        "edit on secrets",
    )?;
    let (project_id, env, folder) = target_folder(state, project, body)?;
    if mode == "failOnNotFound" {
        if let Some(missing) = entries
            .iter()
            .map(|e| str_field(e, "secretKey").unwrap())
            .find(|k| folder.secret(k).is_none())
        {
            return Err(Fail::NotFound {
                legacy_error: "BadRequest",
                message: format!("Secret not found: {missing}"),
            });
        }
    }
    let mut written = Vec::new();
    for entry in entries {
        let key = str_field(entry, "secretKey").unwrap();
        let secret = match folder.secrets.iter().position(|s| s.key == key) {
            Some(i) => {
                let secret = &mut folder.secrets[i];
                let mut next = secret.current().clone();
                next.version += 1;
                if let Some(value) = str_field(entry, "secretValue") {
                    next.value = stored_value(value);
                }
                if let Some(comment) = str_field(entry, "secretComment") {
                    next.comment = comment.to_owned();
                }
                secret.history.push(next);
                &folder.secrets[i]
            }
            None if mode == "upsert" => {
                folder.secrets.push(new_secret(key, entry, 1));
                folder.secrets.last().unwrap()
            }
            None => continue,
        };
        let value = secret.current().value.clone();
        written.push(Value::Object(item(
            &project_id,
            &env,
            secret,
            secret.current(),
            value,
        )));
    }
    Ok(json!({"secrets": written}))
}
