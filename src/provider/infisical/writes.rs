//! Writes for `psi infisical import`: folders, and secrets created or updated in one folder.
//!
//! - Folders: `POST /api/v1/folders` (`workspaceId`; served by the 2024 and the newest
//!   servers) for each path segment; an answer saying the folder exists counts as success.
//! - Newest servers (v4): `PATCH /api/v4/secrets/batch` with `mode: "upsert"`, which creates
//!   missing keys and updates existing ones, in chunks of [`CHUNK`].
//! - 2024 servers (no v4): the folder is listed first (the caller does that), then each key is
//!   created (`POST /api/v3/secrets/raw/{key}`) or updated (`PATCH ...`) on its own: the 2024
//!   batch routes need the project slug and have no upsert mode.
//!
//! Request bodies hold secret values: they are built in zeroizing buffers, and errors quote
//! the server's message, never a body psi sent.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use reqwest::{Method, Url};
use serde::Serialize;

use super::api::{Call, V4};
use super::http::{Class, Reply};
use super::{failed, listing, secret_json, Infisical, Project};
use crate::error::Result;

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

    /// The keys in the target folder (not its subfolders, not imports); empty when the folder
    /// does not exist. Also settles the API generation ([`Infisical::supports_v4`]).
    pub async fn existing_keys(&self, target: &Target<'_>) -> Result<BTreeSet<String>> {
        let project = self.write_project(target)?;
        let path = listing::normalize(target.path);
        let call = Call::List {
            path: &path,
            recursive: false,
            imports: false,
        };
        let (reply, _) = self.call(&project, &call).await?;
        match reply.class() {
            Class::Success => {}
            Class::NotFound => return Ok(BTreeSet::new()),
            _ => {
                let what = format!("list {}", project.describe(&path, None));
                return Err(self.failure(&reply, &what));
            }
        }
        let body: listing::ListBody = reply
            .json()
            .map_err(|why| failed(format!("list {}: {why}", project.describe(&path, None))))?;
        Ok(body.secrets.into_iter().map(|item| item.key).collect())
    }

    /// Whether the server has the v4 secrets API (known after the first secrets call).
    pub fn supports_v4(&self) -> bool {
        self.inner.generation.load(Ordering::Relaxed) == V4
    }

    /// Creates the target folder and those above it where missing.
    pub async fn ensure_folder(&self, target: &Target<'_>) -> Result<()> {
        let project = self.write_project(target)?;
        let path = listing::normalize(target.path);
        let mut parent = String::from("/");
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let body = FolderBody {
                workspace_id: &project.id,
                environment: &project.environment,
                name,
                path: &parent,
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
                let what = format!(
                    "create folder '{name}' in {}",
                    project.describe(&parent, None)
                );
                return Err(self.failure(&reply, &what));
            }
            parent = match parent.as_str() {
                "/" => format!("/{name}"),
                _ => format!("{parent}/{name}"),
            };
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
            let what = format!(
                "upsert {} secrets in {}",
                entries.len(),
                project.describe(&path, None)
            );
            return Err(self.failure(&reply, &what));
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
            let what = format!(
                "{} {}",
                if update { "update" } else { "create" },
                project.describe(&path, Some(entry.key))
            );
            return Err(self.failure(&reply, &what));
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
