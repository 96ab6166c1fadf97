//! Handlers for projects, identity memberships, folders and secret imports (the setup side
//! of the recordings, fixtures 07-16 and 31-35).

use serde_json::{json, Value};

use super::routes::{require, require_strings, str_field, Fail, Request};
use super::state::{iso, uuid, Folder, Import, State};

pub(super) fn project_not_found() -> Fail {
    Fail::NotFound {
        legacy_error: "BadRequest",
        message: "Project not found during bot lookup.".into(),
    }
}

pub(super) fn folder_not_found(error: &'static str) -> Fail {
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

pub(super) fn create_project(state: &mut State, body: &Value) -> Result<Value, Fail> {
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

pub(super) fn membership(
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
pub(super) fn writable_project(
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

pub(super) fn create_folder(
    state: &mut State,
    identity: &str,
    body: &Value,
) -> Result<Value, Fail> {
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

pub(super) fn list_folders(state: &mut State, req: &Request) -> Result<Value, Fail> {
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

pub(super) fn create_import(
    state: &mut State,
    identity: &str,
    body: &Value,
) -> Result<Value, Fail> {
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

pub(super) fn list_imports(state: &mut State, req: &Request) -> Result<Value, Fail> {
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
