//! The Infisical provider: secrets from an Infisical server over its HTTP API, read with a
//! machine identity (universal-auth, aws-iam, gcp or azure).
//!
//! - `mod.rs`: the client ([`Infisical`]), its construction from configuration, and the two
//!   things callers do: [`Infisical::lookup`] (serve) and [`Infisical::list`] (setup).
//! - `api.rs`: secrets API calls: generation probe (v4, else v3), re-login on a refused
//!   token, ETag revalidation, error mapping.
//! - `listing.rs`: list responses to [`Listed`] secrets; import precedence (pure).
//! - `auth.rs`: tokens per auth configuration and the logins; `aws.rs`: the aws-iam login;
//!   `sigv4.rs`: AWS request signing (pure).
//! - `access_token.rs`: the access-token record, its renew/login decision, and the cache file shared with
//!   the original psi.
//! - `pki.rs`: issuing and renewing TLS certificates; `cert.rs`: what a certificate file
//!   holds and whether it is due for renewal (pure but for reading the file).
//! - `http.rs`: the shared HTTP client, retries with backoff and `Retry-After`, and what
//!   Infisical's error statuses mean.
//!
//! Mapping: `{"provider": "infisical", "project": <config alias>, "path": <folder>,
//! "key": <secret name>}`, byte-identical to the original's (see [`mapping`]).
//!
//! Listing with imports: a folder's own secret wins over an imported one of the same name;
//! among imports, the one configured later (later in Infisical's `imports` array) wins. A
//! recursive listing reports every folder's imports without saying which folder imports
//! them, so when it has any, psi lists folders once more, non-recursively, to attribute
//! them exactly. Cost: without imports, 1 request; with imports, 1 + F (F = the folders
//! holding secrets and those between them and the root); and only when a folder has
//! imports but no secrets of its own (so the tree does not show it), also one folder-list
//! request per folder of the tree and one listing per folder not yet listed.

mod access_token;
mod api;
mod auth;
mod aws;
pub mod cert;
mod http;
mod listing;
mod pki;
mod sigv4;
pub mod writes;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use self::access_token::Tokens;
use self::api::Call;
use self::auth::Auth;
use self::http::{Class, Http};
use self::listing::ListBody;
pub use self::pki::{IssueRequest, Issued};
use crate::config::InfisicalConfig;
use crate::error::{Error, Result, ResultExt};
use crate::secret::{Mapping, SecretString, SecretValue};
/// A folder path as listings and lookups use it (leading `/`, no trailing one).
pub(crate) use listing::normalize as normalize_path;

pub const NAME: &str = "infisical";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;

/// Time as the client sees it. Injected so tests control token expiry and never really
/// wait for a backoff.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real clock and tokio's timer.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// The environment as the client reads it (AWS credentials and region, metadata endpoint
/// overrides): a function, so tests need not touch the process environment.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A secret found by [`Infisical::list`].
#[derive(Debug)]
pub struct Listed {
    pub key: String,
    /// The folder a lookup must ask: the secret's own folder, or for an imported secret the
    /// folder that imports it (lookups there include imports).
    pub path: String,
    pub value: SecretValue,
    pub origin: Origin,
}

/// Where a listed secret is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Own,
    /// Imported from `path` in `environment`.
    Import {
        environment: String,
        path: String,
    },
}

/// The mapping that makes psi look up `key` in folder `path` of project alias `project`.
pub fn mapping(project: &str, path: &str, key: &str) -> Mapping {
    Mapping::new(NAME, &[("project", project), ("path", path), ("key", key)])
}

/// The Infisical client. Cheap to clone: clones share one connection pool, the token
/// cache and the remembered API generation.
#[derive(Clone)]
pub struct Infisical {
    inner: Arc<Inner>,
}

struct Inner {
    api: Url,
    http: Http,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    env: Env,
    /// `token.ttl`: the longest psi uses one token (0 = as long as Infisical allows).
    token_cap: u64,
    tokens: Tokens,
    /// The global auth (`providers.infisical.auth`), if configured.
    global: Option<Arc<Auth>>,
    projects: BTreeMap<String, Project>,
    /// `api::UNKNOWN`, `api::V4` or `api::V3`.
    generation: AtomicU8,
    /// Per auth and listing URL: the last ETag and the listing it named.
    etags: Mutex<HashMap<String, (String, Arc<ListBody>)>>,
}

/// A configured project with its auth resolved (its own, else the global one).
pub(crate) struct Project {
    alias: String,
    id: String,
    environment: String,
    auth: Arc<Auth>,
}

/// The secret name [`Infisical::folder_exists`] asks for: any valid name works, since only
/// "no such folder" against "no such secret" matters.
const PROBE_KEY: &str = "PSI_FOLDER_PROBE";

/// Whether a not-found reply says the folder or the environment is missing rather than the
/// secret: "Folder not found for the given environment slug & secret path" on the 2024
/// generation (fixture 69), "Folder with path ... not found" and "Environment ... not found"
/// on newer ones.
fn folder_missing(reply: &http::Reply) -> bool {
    let message = reply.api_error().message.to_ascii_lowercase();
    (message.starts_with("folder") || message.starts_with("environment"))
        && message.contains("not found")
}

impl Project {
    /// The error for a folder (or environment) that does not exist, naming the source as
    /// the config does (`alias:path`).
    fn folder_missing(&self, path: &str, reply: &http::Reply) -> Error {
        Error::FolderNotFound {
            provider: NAME,
            detail: format!(
                "{}:{path} does not exist (no such folder in environment '{}', or no such environment; check the source's path and the project's environment): {}",
                self.alias,
                self.environment,
                reply.api_error()
            ),
        }
    }

    /// "project 'web' (environment prod), path '/app', key 'DB'" for messages.
    fn describe(&self, path: &str, key: Option<&str>) -> String {
        let mut text = format!(
            "project '{}' (environment {}), path '{path}'",
            self.alias, self.environment
        );
        if let Some(key) = key {
            text.push_str(&format!(", key '{key}'"));
        }
        text
    }
}

impl Infisical {
    /// A client for `config`, caching tokens in `state_dir`.
    pub fn new(config: &InfisicalConfig, state_dir: &Path) -> Result<Infisical> {
        Infisical::with_clock(config, state_dir, Arc::new(SystemClock))
    }

    pub fn with_clock(
        config: &InfisicalConfig,
        state_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Infisical> {
        let env: Env = Arc::new(|name| std::env::var(name).ok());
        Infisical::with_environment(config, state_dir, clock, env)
    }

    /// The full constructor: clock and environment injected.
    pub fn with_environment(
        config: &InfisicalConfig,
        state_dir: &Path,
        clock: Arc<dyn Clock>,
        env: Env,
    ) -> Result<Infisical> {
        let invalid =
            |key: &str, why: String| Error::Usage(format!("providers.infisical.{key}: {why}"));
        let timeout = config.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let api = config.api_url.url().clone();

        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("psi/", env!("CARGO_PKG_VERSION")));
        if !config.verify_ssl {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(path) = &config.ca_cert {
            for cert in read_ca(path).map_err(|why| invalid("ca_cert", why))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().context("cannot set up the HTTP client")?;

        let global = config.auth.clone().map(|a| Arc::new(Auth::new(a)));
        let mut projects = BTreeMap::new();
        for (alias, project) in &config.projects {
            let auth = match (&project.auth, &global) {
                (Some(own), _) => Arc::new(Auth::new(own.clone())),
                (None, Some(global)) => global.clone(),
                (None, None) => {
                    return Err(invalid(
                        &format!("projects.{alias}.auth"),
                        "no auth for this project and no global auth".into(),
                    ))
                }
            };
            projects.insert(
                alias.clone(),
                Project {
                    alias: alias.clone(),
                    id: project.id.clone(),
                    environment: project.environment.clone(),
                    auth,
                },
            );
        }
        let retries = config.retries.unwrap_or(DEFAULT_RETRIES);
        Ok(Infisical {
            inner: Arc::new(Inner {
                api,
                http: Http::new(client, retries, clock.clone()),
                timeout,
                clock,
                env,
                token_cap: config.token.ttl,
                tokens: Tokens::new(state_dir),
                global,
                projects,
                generation: AtomicU8::new(api::UNKNOWN),
                etags: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Resolves an infisical mapping to the secret's value (`psi serve`). A secret that does
    /// not exist is [`Error::SecretNotFound`]; a missing folder or environment
    /// [`Error::FolderNotFound`]; an unreachable or overloaded server
    /// [`Error::ProviderUnavailable`]; anything else [`Error::Provider`].
    pub async fn lookup(&self, mapping: &Mapping) -> Result<SecretValue> {
        let field = |name: &str| {
            mapping
                .str_field(name)
                .map_err(|why| failed(format!("invalid mapping: {why}")))
        };
        let (alias, path, key) = (field("project")?, field("path")?, field("key")?);
        let project = self.project(alias)?;
        let (reply, _) = self.call(project, &Call::Get { path, key }).await?;
        match reply.class() {
            Class::Success => {}
            Class::NotFound if folder_missing(&reply) => {
                return Err(project.folder_missing(path, &reply));
            }
            Class::NotFound => {
                return Err(Error::SecretNotFound {
                    provider: NAME,
                    detail: format!(
                        "{} ({})",
                        project.describe(path, Some(key)),
                        reply.api_error()
                    ),
                })
            }
            _ => {
                let what = format!("get {}", project.describe(path, Some(key)));
                return Err(self.failure(&reply, &what));
            }
        }
        #[derive(Deserialize)]
        struct Body {
            secret: Secret,
        }
        #[derive(Deserialize)]
        struct Secret {
            #[serde(rename = "secretValue")]
            value: SecretString,
        }
        let body: Body = reply
            .json()
            .map_err(|why| failed(format!("get {}: {why}", project.describe(path, Some(key)))))?;
        let value = body.secret.value.expose();
        // The 2024 generation's single-secret route expands only references to other
        // folders and leaves `${KEY}` of the same folder literal (fixture 64), while its list
        // route expands them all. A container must not see one value on a cache hit and
        // another on a miss, so such a value is taken from the listing, which setup, the
        // cache, `psi infisical env` and `psi run` use too. Costs a listing only for values
        // that still hold a reference, and only on that generation.
        if value.contains("${") && self.inner.generation.load(Ordering::Relaxed) == api::V3 {
            let listed = self.list(alias, path, false, true).await?;
            if let Some(found) = listed.into_iter().find(|l| l.key == key) {
                return Ok(found.value);
            }
        }
        Ok(SecretValue::new(value.as_bytes().to_vec()))
    }

    /// The secrets in folder `path` of project alias `project` (`psi setup`), sorted by
    /// folder and key; with `recursive`, those of its subfolders too; with
    /// `include_imports`, imported ones merged as the module documentation says.
    pub async fn list(
        &self,
        project: &str,
        path: &str,
        recursive: bool,
        include_imports: bool,
    ) -> Result<Vec<Listed>> {
        let project = self.project(project)?;
        let root = listing::normalize(path);
        let body = self
            .fetch_list(project, &root, recursive, include_imports)
            .await?;
        if body.secrets.is_empty() && body.imports.is_empty() {
            self.folder_exists(project, &root).await?;
        }
        let mut out = listing::own(&body, &root);
        if include_imports && !body.imports.is_empty() {
            if recursive {
                self.attribute_imports(project, &root, &body, &mut out)
                    .await?;
            } else {
                listing::merge_imports(&mut out, &root, &body.imports);
            }
        }
        out.sort_by(|a, b| (&a.path, &a.key).cmp(&(&b.path, &b.key)));
        Ok(out)
    }

    /// Checks that folder `path` (and the project's environment) exists, after a listing
    /// came back empty: Infisical lists a missing folder or environment as an empty one
    /// (fixtures 43, 44), and taking a typo for an empty folder would make setup drop the
    /// workload's secrets. The single-secret route does tell them apart (fixture 69), so
    /// one request for a name nobody uses answers it.
    async fn folder_exists(&self, project: &Project, path: &str) -> Result<()> {
        let (reply, _) = self
            .call(
                project,
                &Call::Get {
                    path,
                    key: PROBE_KEY,
                },
            )
            .await?;
        match reply.class() {
            Class::NotFound if folder_missing(&reply) => Err(project.folder_missing(path, &reply)),
            Class::Success | Class::NotFound => Ok(()),
            _ => Err(self.failure(
                &reply,
                &format!("check that {} exists", project.describe(path, None)),
            )),
        }
    }

    /// Assigns the imports of a recursive listing to the folders that import them, by
    /// listing folders non-recursively until every import in the recursive answer is
    /// accounted for: first the folders the tree shows, then (only if that is not enough:
    /// a folder with imports but no secrets of its own) every folder of the tree.
    async fn attribute_imports(
        &self,
        project: &Project,
        root: &str,
        body: &ListBody,
        out: &mut Vec<Listed>,
    ) -> Result<()> {
        let expected = listing::import_sources(body.imports.iter());
        let mut listed = BTreeMap::new();
        for folder in listing::folders(root, out) {
            let folder_body = self.fetch_list(project, &folder, false, true).await?;
            listed.insert(folder, folder_body);
        }
        let found = |listed: &BTreeMap<String, Arc<ListBody>>| {
            listing::import_sources(listed.values().flat_map(|b| b.imports.iter()))
        };
        if found(&listed) != expected {
            for folder in self.folder_tree(project, root).await? {
                if let Entry::Vacant(slot) = listed.entry(folder) {
                    let folder_body = self.fetch_list(project, slot.key(), false, true).await?;
                    slot.insert(folder_body);
                }
            }
        }
        if found(&listed) != expected {
            // Only if the tree changed between the requests: say so rather than guess.
            return Err(failed(format!(
                "list {} recursively: the imports of the recursive listing do not match those \
                 of its folders (did the project change meanwhile?); try again",
                project.describe(root, None)
            )));
        }
        for (folder, folder_body) in &listed {
            listing::merge_imports(out, folder, &folder_body.imports);
        }
        Ok(())
    }

    /// `root` and every folder below it, from `/api/v1/folders` (served by the 2024 and the
    /// newest servers alike), one request per folder.
    async fn folder_tree(&self, project: &Project, root: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Folders {
            folders: Vec<Folder>,
        }
        #[derive(Deserialize)]
        struct Folder {
            name: String,
        }
        let mut tree = Vec::new();
        let mut queue = vec![root.to_owned()];
        while let Some(folder) = queue.pop() {
            let mut url = self.endpoint("/api/v1/folders");
            url.query_pairs_mut()
                .append_pair("workspaceId", &project.id)
                .append_pair("environment", &project.environment)
                .append_pair("path", &folder);
            let what = || format!("list the folders of {}", project.describe(&folder, None));
            let reply = self.authed(project, &url).await?;
            if reply.class() != Class::Success {
                return Err(self.failure(&reply, &what()));
            }
            let children: Folders = reply
                .json()
                .map_err(|why| failed(format!("{}: {why}", what())))?;
            for child in children.folders {
                queue.push(match folder.as_str() {
                    "/" => format!("/{}", child.name),
                    parent => format!("{parent}/{}", child.name),
                });
            }
            tree.push(folder);
        }
        Ok(tree)
    }

    /// The configured project aliases, sorted.
    pub fn projects(&self) -> Vec<&str> {
        self.inner.projects.keys().map(String::as_str).collect()
    }

    fn project(&self, alias: &str) -> Result<&Project> {
        self.inner.projects.get(alias).ok_or_else(|| {
            let known = self.projects();
            failed(unknown_project(alias, known))
        })
    }

    /// An environment variable; empty counts as unset.
    fn env(&self, name: &str) -> Option<String> {
        (self.inner.env)(name).filter(|v| !v.is_empty())
    }

    /// `path` (absolute, `/`-separated) under the API URL, which may have a path itself.
    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.inner.api.clone();
        url.path_segments_mut()
            .expect("the API URL is a base URL (checked at construction)")
            .pop_if_empty()
            .extend(path.trim_start_matches('/').split('/'));
        url
    }
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = crate::fsutil::read_capped(path, crate::fsutil::PEM)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|err| format!("{} is not a PEM certificate bundle: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// What a project alias that is not configured gets: the ones that are.
pub(crate) fn unknown_project<S: AsRef<str>>(
    alias: &str,
    known: impl IntoIterator<Item = S>,
) -> String {
    format!(
        "unknown project '{alias}'; configured projects: {}",
        crate::error::list_or_none(known)
    )
}

fn failed(detail: String) -> Error {
    Error::Provider {
        provider: NAME,
        detail,
    }
}

/// Seconds since the epoch, as the token cache file stores them.
fn epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// JSON of `value` in a zeroizing buffer of exactly the right size (measured first), so no
/// reallocation leaves a copy of the secrets inside behind.
fn secret_json(value: &impl Serialize) -> Zeroizing<Vec<u8>> {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("serializing to memory cannot fail");
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *out, value).expect("serializing to memory cannot fail");
    out
}
