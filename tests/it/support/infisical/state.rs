//! The fake's data: identities and tokens, projects with a folder tree per environment,
//! secrets with their version history, imports, rate-limit buckets, faults and the request log.

use std::collections::{BTreeMap, HashMap};

use super::auth::{AwsLogin, Token};
use super::{Fault, Generation, Recorded};

pub(super) struct FaultRule {
    pub method: String,
    pub path_prefix: String,
    pub fault: Fault,
    pub times: usize,
}

/// A login method's token lifetimes.
#[derive(Clone, Copy)]
pub(super) struct Ttls {
    pub ttl: u64,
    pub max_ttl: u64,
}

pub(super) struct UaClient {
    pub identity_id: String,
    pub secret: String,
    pub ttls: Ttls,
}

pub(super) struct State {
    pub generation: Generation,
    /// Virtual unix time in seconds.
    pub now: u64,
    pub jwt_key: Vec<u8>,
    pub ua_clients: HashMap<String, UaClient>,
    pub aws: HashMap<String, Ttls>,
    /// (method "gcp"/"azure", identity id) -> (accepted jwt, lifetimes).
    pub jwt_logins: HashMap<(String, String), (String, Ttls)>,
    /// Token id (the JWT's identityAccessTokenId) -> token row.
    pub tokens: HashMap<String, Token>,
    pub logins: usize,
    pub aws_logins: Vec<AwsLogin>,
    pub projects: Vec<Project>,
    /// (identity id, project id) -> role.
    pub roles: HashMap<(String, String), String>,
    pub rate_limit: Option<u32>,
    /// Route key -> (window start, requests in the window).
    pub buckets: HashMap<String, (u64, u32)>,
    /// Requests the rate limiter answered 429.
    pub throttled: usize,
    pub faults: Vec<FaultRule>,
    pub requests: Vec<Recorded>,
    pub pki: super::pki::Pki,
}

pub(super) struct Project {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub created_at: String,
    pub envs: Vec<Env>,
}

pub(super) struct Env {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub root: Folder,
}

pub(super) struct Folder {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub created_at: String,
    pub children: Vec<Folder>,
    pub secrets: Vec<Secret>,
    pub imports: Vec<Import>,
}

pub(super) struct Secret {
    pub id: String,
    pub key: String,
    pub skip_multiline: bool,
    /// Oldest first; the last one is current.
    pub history: Vec<Version>,
}

#[derive(Clone)]
pub(super) struct Version {
    pub version: u64,
    pub value: String,
    pub comment: String,
}

pub(super) struct Import {
    pub id: String,
    pub env: String,
    pub path: String,
    pub position: usize,
    pub created_at: String,
}

impl Secret {
    pub fn current(&self) -> &Version {
        self.history.last().unwrap()
    }
}

impl Folder {
    pub fn new(name: &str, parent_id: Option<String>, created_at: String) -> Folder {
        Folder {
            id: uuid(),
            name: name.to_owned(),
            parent_id,
            created_at,
            children: Vec::new(),
            secrets: Vec::new(),
            imports: Vec::new(),
        }
    }

    pub fn find(&self, segments: &[&str]) -> Option<&Folder> {
        match segments.split_first() {
            None => Some(self),
            Some((first, rest)) => self.children.iter().find(|c| c.name == *first)?.find(rest),
        }
    }

    pub fn find_mut(&mut self, segments: &[&str]) -> Option<&mut Folder> {
        match segments.split_first() {
            None => Some(self),
            Some((first, rest)) => self
                .children
                .iter_mut()
                .find(|c| c.name == *first)?
                .find_mut(rest),
        }
    }

    /// The folder at `segments`, created with its missing parents.
    pub fn ensure(&mut self, segments: &[&str], created_at: &str) -> &mut Folder {
        let Some((first, rest)) = segments.split_first() else {
            return self;
        };
        let index = match self.children.iter().position(|c| c.name == *first) {
            Some(i) => i,
            None => {
                let child = Folder::new(first, Some(self.id.clone()), created_at.to_owned());
                self.children.push(child);
                self.children.len() - 1
            }
        };
        self.children[index].ensure(rest, created_at)
    }

    pub fn secret(&self, key: &str) -> Option<&Secret> {
        self.secrets.iter().find(|s| s.key == key)
    }
}

/// The non-empty segments of a secret path: "/app/db/" -> ["app", "db"].
pub(super) fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// A path in the server's spelling: leading slash, no trailing slash, "/" for the root.
pub(super) fn normalize(path: &str) -> String {
    format!("/{}", segments(path).join("/"))
}

pub(super) fn uuid() -> String {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).unwrap();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `secs` since the epoch as the server's ISO timestamp (`2026-11-22T05:06:25.000Z`).
pub(super) fn iso(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How the server stores a value: trimmed, but one trailing newline survives.
pub(super) fn stored_value(value: &str) -> String {
    if value.ends_with('\n') {
        format!("{}\n", value.trim())
    } else {
        value.trim().to_owned()
    }
}

impl State {
    pub fn new(generation: Generation) -> State {
        let mut jwt_key = vec![0u8; 32];
        openssl::rand::rand_bytes(&mut jwt_key).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        State {
            generation,
            now,
            jwt_key,
            ua_clients: HashMap::new(),
            aws: HashMap::new(),
            jwt_logins: HashMap::new(),
            tokens: HashMap::new(),
            logins: 0,
            aws_logins: Vec::new(),
            projects: Vec::new(),
            roles: HashMap::new(),
            rate_limit: None,
            buckets: HashMap::new(),
            throttled: 0,
            faults: Vec::new(),
            requests: Vec::new(),
            pki: Default::default(),
        }
    }

    pub fn add_universal_auth(
        &mut self,
        client_id: &str,
        secret: &str,
        ttl: u64,
        max_ttl: u64,
    ) -> String {
        let identity_id = uuid();
        self.ua_clients.insert(
            client_id.to_owned(),
            UaClient {
                identity_id: identity_id.clone(),
                secret: secret.to_owned(),
                ttls: Ttls { ttl, max_ttl },
            },
        );
        identity_id
    }

    pub fn add_aws_identity(&mut self, identity_id: &str, ttl: u64, max_ttl: u64) {
        self.aws
            .insert(identity_id.to_owned(), Ttls { ttl, max_ttl });
    }

    pub fn add_jwt_identity(
        &mut self,
        method: &str,
        identity_id: &str,
        jwt: &str,
        ttl: u64,
        max_ttl: u64,
    ) {
        self.jwt_logins.insert(
            (method.to_owned(), identity_id.to_owned()),
            (jwt.to_owned(), Ttls { ttl, max_ttl }),
        );
    }

    pub fn set_role(&mut self, identity_id: &str, project_id: &str, role: &str) {
        self.roles.insert(
            (identity_id.to_owned(), project_id.to_owned()),
            role.to_owned(),
        );
    }

    /// Whether `identity_id` may change secrets and folders of `project_id`.
    pub fn may_write(&self, identity_id: &str, project_id: &str) -> bool {
        self.roles
            .get(&(identity_id.to_owned(), project_id.to_owned()))
            .is_none_or(|role| role != "viewer")
    }

    pub fn add_project(&mut self, id: &str, name: &str, slug: &str) -> &Project {
        let created_at = iso(self.now);
        let envs = [
            ("Development", "dev"),
            ("Staging", "staging"),
            ("Production", "prod"),
        ]
        .into_iter()
        .map(|(name, slug)| Env {
            id: uuid(),
            name: name.to_owned(),
            slug: slug.to_owned(),
            root: Folder::new("root", None, created_at.clone()),
        })
        .collect();
        self.projects.push(Project {
            id: id.to_owned(),
            name: name.to_owned(),
            slug: slug.to_owned(),
            created_at,
            envs,
        });
        self.projects.last().unwrap()
    }

    /// The project with this id, or with this slug.
    pub fn project_index(&self, id: Option<&str>, slug: Option<&str>) -> Option<usize> {
        self.projects.iter().position(|p| {
            id.is_some_and(|id| p.id == id) || slug.is_some_and(|slug| p.slug == slug)
        })
    }

    fn env_mut(&mut self, project_id: &str, env: &str) -> &mut Env {
        self.projects
            .iter_mut()
            .find(|p| p.id == project_id)
            .unwrap_or_else(|| panic!("no project {project_id} in the fake"))
            .envs
            .iter_mut()
            .find(|e| e.slug == env)
            .unwrap_or_else(|| panic!("no environment {env} in project {project_id}"))
    }

    pub fn set_secret(&mut self, project_id: &str, env: &str, path: &str, key: &str, value: &str) {
        let now = iso(self.now);
        let folder = self
            .env_mut(project_id, env)
            .root
            .ensure(&segments(path), &now);
        let value = stored_value(value);
        match folder.secrets.iter_mut().find(|s| s.key == key) {
            Some(secret) => {
                let mut next = secret.current().clone();
                next.version += 1;
                next.value = value;
                secret.history.push(next);
            }
            None => folder.secrets.push(Secret {
                id: uuid(),
                key: key.to_owned(),
                skip_multiline: false,
                history: vec![Version {
                    version: 1,
                    value,
                    comment: String::new(),
                }],
            }),
        }
    }

    pub fn delete_secret(&mut self, project_id: &str, env: &str, path: &str, key: &str) {
        let folder = self
            .env_mut(project_id, env)
            .root
            .find_mut(&segments(path))
            .unwrap_or_else(|| panic!("no folder {env}:{path}"));
        let before = folder.secrets.len();
        folder.secrets.retain(|s| s.key != key);
        assert!(
            before > folder.secrets.len(),
            "no secret {env}:{path}:{key}"
        );
    }

    pub fn add_import(
        &mut self,
        project_id: &str,
        env: &str,
        path: &str,
        from_env: &str,
        from_path: &str,
    ) {
        let now = iso(self.now);
        let folder = self
            .env_mut(project_id, env)
            .root
            .ensure(&segments(path), &now);
        folder.imports.push(Import {
            id: uuid(),
            env: from_env.to_owned(),
            path: normalize(from_path),
            position: folder.imports.len() + 1,
            created_at: now,
        });
    }

    /// Removes and returns the fault for this request, if one is armed.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let index = self.faults.iter().position(|f| {
            (f.method == "*" || f.method.eq_ignore_ascii_case(method))
                && path.starts_with(&f.path_prefix)
                && f.times > 0
        })?;
        let rule = &mut self.faults[index];
        rule.times -= 1;
        let fault = rule.fault.clone();
        if rule.times == 0 {
            self.faults.remove(index);
        }
        Some(fault)
    }

    /// Counts a request against the bucket of `route` (client address, method and route
    /// pattern: Infisical's limits are per client IP and route). Returns (limit, remaining, seconds left in
    /// the window) and whether the request is over the limit; `None` when unlimited.
    pub fn count(&mut self, route: &str) -> Option<(u32, u32, u64, bool)> {
        let limit = self.rate_limit?;
        let now = self.now;
        let bucket = self.buckets.entry(route.to_owned()).or_insert((now, 0));
        if now >= bucket.0 + 60 {
            *bucket = (now, 0);
        }
        bucket.1 += 1;
        let reset = bucket.0 + 60 - now;
        let over = bucket.1 > limit;
        Some((limit, limit.saturating_sub(bucket.1), reset, over))
    }

    /// The folder at `env:path` of the project at index `project`.
    pub fn folder(&self, project: usize, env: &str, path: &str) -> Option<&Folder> {
        self.projects[project]
            .envs
            .iter()
            .find(|e| e.slug == env)?
            .root
            .find(&segments(path))
    }

    pub fn env_of(&self, project: usize, env: &str) -> Option<&Env> {
        self.projects[project].envs.iter().find(|e| e.slug == env)
    }
}

/// The request's query parameters, percent-decoded.
pub(super) fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
