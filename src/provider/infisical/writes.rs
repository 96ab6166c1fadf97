//! Reads and writes for `psi infisical import`: what the target folder holds, folders, and
//! secrets created or updated in one folder.
//!
//! - Upstream state ([`Infisical::upstream`]): the folder's own secrets with their stored
//!   values (references not expanded, so they compare with what an import would write), and
//!   the folders on the way to it that do not exist yet. A listing of a missing folder is
//!   empty, not an error (fixture 43), so an empty folder's existence is settled by listing
//!   folders (`GET /api/v1/folders`, fixtures 15-16) from the root down.
//! - Folders: `POST /api/v1/folders` (`workspaceId`; served by the 2024 and the newest
//!   servers), one per missing folder, each under its parent.
//! - Newest servers (v4): `PATCH /api/v4/secrets/batch` with `mode: "upsert"`, which creates
//!   missing keys and updates existing ones, in chunks of [`CHUNK`].
//! - 2024 servers (no v4): each key is created (`POST /api/v3/secrets/raw/{key}`) or updated
//!   (`PATCH ...`) on its own: the 2024 batch routes need the project slug and have no upsert
//!   mode.
//!
//! Write errors carry the server's answer only: the caller names the write (which key, which
//! folder) once. Request bodies hold secret values: they are built in zeroizing buffers, and
//! errors quote the server's message, never a body psi sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use reqwest::{Method, Url};
use serde::Serialize;

use super::api::{Call, V4};
use super::http::{Class, Reply};
use super::{failed, listing, secret_json, Infisical, Project};
use crate::error::Result;
use crate::secret::SecretString;

/// Keys per `PATCH /api/v4/secrets/batch` request.
pub const CHUNK: usize = 100;

/// One key and its value to write.
pub struct Entry<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

/// Where writes go: a project alias's ID and environment (possibly overridden), a folder.
pub struct Target<'a> {
    pub project: &'a str,
    pub environment: Option<&'a str>,
    pub path: &'a str,
}

/// What the target folder holds before an import writes anything.
#[derive(Default)]
pub struct Upstream {
    /// The folder's own secrets (not its subfolders', not imported ones), values as stored.
    pub secrets: BTreeMap<String, SecretString>,
    /// The folders from the root down to the target that do not exist, shallowest first.
    pub missing: Vec<String>,
}

#[derive(Serialize)]
struct UpsertItem<'a> {
    #[serde(rename = "secretKey")]
    key: &'a str,
    #[serde(rename = "secretValue")]
    value: &'a str,
}

#[derive(Serialize)]
struct UpsertBody<'a> {
    #[serde(rename = "projectId")]
    project_id: &'a str,
    environment: &'a str,
    #[serde(rename = "secretPath")]
    path: &'a str,
    mode: &'static str,
    secrets: Vec<UpsertItem<'a>>,
}

#[derive(Serialize)]
struct SingleBody<'a> {
    #[serde(rename = "workspaceId")]
    workspace_id: &'a str,
    environment: &'a str,
    #[serde(rename = "secretPath")]
    path: &'a str,
    #[serde(rename = "secretValue")]
    value: &'a str,
    r#type: &'static str,
}

#[derive(Serialize)]
struct FolderBody<'a> {
    #[serde(rename = "workspaceId")]
    workspace_id: &'a str,
    environment: &'a str,
    name: &'a str,
    path: &'a str,
}

impl Infisical {
    /// The project of `target`, with its environment overridden when asked.
    fn write_project(&self, target: &Target<'_>) -> Result<Project> {
        let project = self.project(target.project)?;
        Ok(Project {
            alias: project.alias.clone(),
            id: project.id.clone(),
            environment: target
                .environment
                .unwrap_or(&project.environment)
                .to_owned(),
            auth: project.auth.clone(),
        })
    }

    /// The environment slug writes to `target` go to.
    pub fn environment(&self, target: &Target<'_>) -> Result<String> {
        Ok(self.write_project(target)?.environment)
    }

    /// The state of the target folder (see the module docs). Also settles the API
    /// generation ([`Infisical::supports_v4`]).
    pub async fn upstream(&self, target: &Target<'_>) -> Result<Upstream> {
        let project = self.write_project(target)?;
        let path = listing::normalize(target.path);
        let call = Call::List {
            path: &path,
            recursive: false,
            imports: false,
            expand: false,
        };
        let (reply, _) = self.call(&project, &call).await?;
        let what = || format!("list {}", project.describe(&path, None));
        let secrets: BTreeMap<String, SecretString> = match reply.class() {
            Class::Success => {
                let body: listing::ListBody = reply
                    .json()
                    .map_err(|why| failed(format!("{}: {why}", what())))?;
                body.secrets
                    .into_iter()
                    .map(|item| (item.key, item.value))
                    .collect()
            }
            Class::NotFound => BTreeMap::new(),
            _ => return Err(self.failure(&reply, &what())),
        };
        // A folder with secrets exists, and so do those above it.
        let missing = if secrets.is_empty() {
            self.missing_folders(&project, &path).await?
        } else {
            Vec::new()
        };
        Ok(Upstream { secrets, missing })
    }

    /// The folders on the way to `path` that do not exist, found by listing each existing
    /// folder's subfolders from the root down (only folders known to exist are listed).
    async fn missing_folders(&self, project: &Project, path: &str) -> Result<Vec<String>> {
        let names: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // The folder made of the first `n` names ("/" for none).
        let folder = |n: usize| format!("/{}", names[..n].join("/"));
        for (depth, name) in names.iter().enumerate() {
            if !self
                .subfolders(project, &folder(depth))
                .await?
                .contains(*name)
            {
                return Ok((depth + 1..=names.len()).map(folder).collect());
            }
        }
        Ok(Vec::new())
    }

    /// The names of the folders directly in `parent`.
    async fn subfolders(&self, project: &Project, parent: &str) -> Result<BTreeSet<String>> {
        #[derive(serde::Deserialize)]
        struct Folder {
            name: String,
        }
        #[derive(serde::Deserialize)]
        struct Body {
            folders: Vec<Folder>,
        }
        let mut url = self.endpoint("/api/v1/folders");
        url.query_pairs_mut()
            .append_pair("workspaceId", &project.id)
            .append_pair("environment", &project.environment)
            .append_pair("path", parent);
        let reply = self.authed(project, &url).await?;
        let what = || format!("list folders in {}", project.describe(parent, None));
        if reply.class() != Class::Success {
            return Err(self.failure(&reply, &what()));
        }
        let body: Body = reply
            .json()
            .map_err(|why| failed(format!("{}: {why}", what())))?;
        Ok(body.folders.into_iter().map(|f| f.name).collect())
    }

    /// Whether the server has the v4 secrets API (known after the first secrets call).
    pub fn supports_v4(&self) -> bool {
        self.inner.generation.load(Ordering::Relaxed) == V4
    }

    /// Creates the folder `path` of the target's project and environment; its parent must
    /// exist. An answer saying that the folder exists counts as success (the 2024 server
    /// answers 200 with the existing folder, fixture 11).
    pub async fn create_folder(&self, target: &Target<'_>, path: &str) -> Result<()> {
        let project = self.write_project(target)?;
        let path = listing::normalize(path);
        // Normalized, the path starts with "/": its parent is what precedes the last one.
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let parent = if parent.is_empty() { "/" } else { parent };
        let body = FolderBody {
            workspace_id: &project.id,
            environment: &project.environment,
            name,
            path: parent,
        };
        let url = self.endpoint("/api/v1/folders");
        let reply = self
            .send_json(&project, Method::POST, &url, &secret_json(&body))
            .await?;
        let exists = matches!(reply.status, 400 | 409)
            && reply
                .api_error()
                .message
                .to_ascii_lowercase()
                .contains("exist");
        if reply.class() != Class::Success && !exists {
            return Err(self.rejection(&reply));
        }
        Ok(())
    }

    /// v4: creates or updates `entries` in one request (the caller chunks by [`CHUNK`]).
    pub async fn upsert(&self, target: &Target<'_>, entries: &[Entry<'_>]) -> Result<()> {
        let project = self.write_project(target)?;
        let path = listing::normalize(target.path);
        let body = UpsertBody {
            project_id: &project.id,
            environment: &project.environment,
            path: &path,
            mode: "upsert",
            secrets: entries
                .iter()
                .map(|e| UpsertItem {
                    key: e.key,
                    value: e.value,
                })
                .collect(),
        };
        let url = self.endpoint("/api/v4/secrets/batch");
        let reply = self
            .send_json(&project, Method::PATCH, &url, &secret_json(&body))
            .await?;
        if reply.class() != Class::Success {
            return Err(self.rejection(&reply));
        }
        awaiting_approval(&reply)
    }

    /// v3: creates one secret (`update` false) or updates an existing one.
    pub async fn write_one(
        &self,
        target: &Target<'_>,
        entry: &Entry<'_>,
        update: bool,
    ) -> Result<()> {
        let project = self.write_project(target)?;
        let path = listing::normalize(target.path);
        let body = SingleBody {
            workspace_id: &project.id,
            environment: &project.environment,
            path: &path,
            value: entry.value,
            r#type: "shared",
        };
        let mut url = self.endpoint("/api/v3/secrets/raw");
        url.path_segments_mut()
            .expect("the API URL is a base URL (checked at construction)")
            .push(entry.key);
        let method = if update { Method::PATCH } else { Method::POST };
        let reply = self
            .send_json(&project, method, &url, &secret_json(&body))
            .await?;
        if reply.class() != Class::Success {
            return Err(self.rejection(&reply));
        }
        awaiting_approval(&reply)
    }

    /// Sends a JSON body with the project's token; logs in again once when refused.
    async fn send_json(
        &self,
        project: &Project,
        method: Method,
        url: &Url,
        body: &[u8],
    ) -> Result<Reply> {
        let token = self.token(&project.auth, None).await?;
        let reply = self.send_body(&method, url, token.expose(), body).await?;
        if reply.class() != Class::Expired {
            return Ok(reply);
        }
        let token = self.token(&project.auth, Some(&token)).await?;
        self.send_body(&method, url, token.expose(), body).await
    }

    async fn send_body(
        &self,
        method: &Method,
        url: &Url,
        token: &str,
        body: &[u8],
    ) -> Result<Reply> {
        let http = &self.inner.http;
        http.send(url.path(), || {
            http.client
                .request(method.clone(), url.clone())
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec())
        })
        .await
        .map_err(|attempt| self.unreachable(&format!("{method} {}", url.path()), attempt))
    }
}

/// A write that a change policy holds back answers 200 with `approval` instead of the
/// secrets: not applied (yet), so not a success.
fn awaiting_approval(reply: &Reply) -> Result<()> {
    // Only the field's presence is read: the secrets in the body are never copied out.
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        approval: Option<serde::de::IgnoredAny>,
    }
    let body: Option<Body> = reply.json().ok();
    if body.is_some_and(|b| b.approval.is_some()) {
        return Err(failed(
            "a change policy applies: the write awaits approval in Infisical and is not applied yet".into(),
        ));
    }
    Ok(())
}

/// A folder path as the server reports it (no trailing slash but the root).
pub fn normalize(path: &str) -> String {
    listing::normalize(path)
}
