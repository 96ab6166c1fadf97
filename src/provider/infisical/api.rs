//! Secrets API calls: choosing the API generation, authenticating (and logging in again once
//! when the server refuses the token), ETag revalidation of listings, and turning failures
//! into errors that say what failed.
//!
//! Generations: `/api/v4/secrets` (`projectId`) first; a fastify route-404 means an older
//! server, so `/api/v3/secrets/raw` (`workspaceId`) from then on, for the client's life.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use reqwest::header::IF_NONE_MATCH;
use reqwest::Url;

use super::http::{Class, Reply};
use super::listing::ListBody;
use super::{failed, Infisical, Project};
use crate::error::{Error, Result};

pub(crate) const UNKNOWN: u8 = 0;
pub(crate) const V3: u8 = 3;
pub(crate) const V4: u8 = 4;

/// One read of the secrets API.
pub(crate) enum Call<'a> {
    List {
        path: &'a str,
        recursive: bool,
        imports: bool,
        /// Substitute `${...}` references (what lookups want); import compares stored values.
        expand: bool,
    },
    Get {
        path: &'a str,
        key: &'a str,
    },
}

/// Why a reply is not a success, with the server's own words.
fn refusal(reply: &Reply) -> String {
    let why = match reply.class() {
        Class::Expired => "authentication failed, also after logging in again",
        Class::Denied => "permission denied",
        Class::NotFound => "not found",
        Class::RouteMissing => "the server has neither the v4 nor the v3 secrets API",
        Class::Rejected | Class::Transient | Class::Success => "request rejected",
    };
    format!("{why}: {}", reply.api_error())
}

fn flag(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

impl Infisical {
    /// The request URL of `call` for `project` in API generation `generation`.
    fn url(&self, project: &Project, call: &Call<'_>, generation: u8) -> Url {
        let (segments, project_param): (&[&str], &str) = match generation {
            V3 => (&["api", "v3", "secrets", "raw"], "workspaceId"),
            _ => (&["api", "v4", "secrets"], "projectId"),
        };
        let mut url = self.inner.api.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("the API URL is a base URL (checked at construction)");
            path.pop_if_empty().extend(segments);
            if let Call::Get { key, .. } = call {
                // Pushed as one segment: a key is percent-encoded, never a path.
                path.push(key);
            }
        }
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair(project_param, &project.id)
                .append_pair("environment", &project.environment);
            match call {
                Call::List {
                    path,
                    recursive,
                    imports,
                    expand,
                } => query
                    .append_pair("secretPath", path)
                    .append_pair("recursive", flag(*recursive))
                    .append_pair("include_imports", flag(*imports))
                    .append_pair("expandSecretReferences", flag(*expand)),
                Call::Get { path, .. } => query
                    .append_pair("secretPath", path)
                    .append_pair("include_imports", "true")
                    .append_pair("expandSecretReferences", "true"),
            };
        }
        url
    }

    /// Performs `call`, probing the API generation on first use.
    pub(crate) async fn call(&self, project: &Project, call: &Call<'_>) -> Result<(Reply, Url)> {
        let generation = &self.inner.generation;
        loop {
            let known = generation.load(Ordering::Relaxed);
            let url = self.url(project, call, known);
            let reply = self.authed(project, &url).await?;
            if known != V3 && reply.class() == Class::RouteMissing {
                tracing::info!(api = %self.inner.api, "no /api/v4 secrets API; using /api/v3");
                generation.store(V3, Ordering::Relaxed);
                continue;
            }
            if known == UNKNOWN {
                generation.store(V4, Ordering::Relaxed);
            }
            return Ok((reply, url));
        }
    }

    /// GET `url` with the project's token; when the server refuses the token, log in again
    /// and retry once. A second refusal is left for the caller to report.
    pub(crate) async fn authed(&self, project: &Project, url: &Url) -> Result<Reply> {
        let etag = self.etag(project, url);
        let token = self.token(&project.auth, None).await?;
        let reply = self.get(url, token.expose(), etag.as_deref()).await?;
        if reply.class() != Class::Expired {
            return Ok(reply);
        }
        tracing::info!(
            project = %project.alias,
            refusal = %reply.api_error(),
            "Infisical refused the access token; logging in again"
        );
        let token = self.token(&project.auth, Some(&token)).await?;
        self.get(url, token.expose(), etag.as_deref()).await
    }

    async fn get(&self, url: &Url, token: &str, etag: Option<&str>) -> Result<Reply> {
        let http = &self.inner.http;
        http.send(url.path(), || {
            let request = http.client.get(url.clone()).bearer_auth(token);
            match etag {
                Some(etag) => request.header(IF_NONE_MATCH, etag),
                None => request,
            }
        })
        .await
        .map_err(|attempt| self.unreachable(&format!("GET {}", url.path()), attempt))
    }

    /// Listings are remembered per auth and URL, so a repeated listing costs a 304.
    fn etag_key(project: &Project, url: &Url) -> String {
        format!("{} {url}", project.auth.key)
    }

    fn etag(&self, project: &Project, url: &Url) -> Option<String> {
        let etags = self.inner.etags.lock().unwrap_or_else(|e| e.into_inner());
        etags
            .get(&Self::etag_key(project, url))
            .map(|(etag, _)| etag.clone())
    }

    /// A listing: the parsed body, or the remembered one when the server answers 304.
    pub(crate) async fn fetch_list(
        &self,
        project: &Project,
        path: &str,
        recursive: bool,
        imports: bool,
    ) -> Result<Arc<ListBody>> {
        let call = Call::List {
            path,
            recursive,
            imports,
            expand: true,
        };
        let what = || format!("list {}", project.describe(path, None));
        let (reply, url) = self.call(project, &call).await?;
        if reply.class() != Class::Success {
            return Err(self.failure(&reply, &what()));
        }
        let key = Self::etag_key(project, &url);
        let mut etags = self.inner.etags.lock().unwrap_or_else(|e| e.into_inner());
        if reply.status == 304 {
            return etags
                .get(&key)
                .map(|(_, body)| body.clone())
                .ok_or_else(|| {
                    failed(format!(
                        "{}: HTTP 304 to a request psi did not make conditional",
                        what()
                    ))
                });
        }
        let body: Arc<ListBody> = Arc::new(
            reply
                .json()
                .map_err(|why| failed(format!("{}: {why}", what())))?,
        );
        match reply.etag {
            Some(etag) => etags.insert(key, (etag, body.clone())),
            None => etags.remove(&key),
        };
        Ok(body)
    }

    /// An error for a reply that is not a success; `what` says what was being done.
    pub(crate) fn failure(&self, reply: &Reply, what: &str) -> Error {
        failed(format!("{what}: {}", refusal(reply)))
    }

    /// An error for a reply that is not a success, for a caller that names what was being
    /// done itself.
    pub(crate) fn rejection(&self, reply: &Reply) -> Error {
        failed(refusal(reply))
    }

    /// Infisical did not answer usefully after every retry.
    pub(crate) fn unreachable(&self, what: &str, attempt: super::http::Attempt) -> Error {
        attempt.into_error(format_args!(
            "{what}: Infisical at {} failed",
            self.inner.api
        ))
    }
}
